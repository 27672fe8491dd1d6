// The disk tier: bytes come back identical or not at all, files are private, eviction is LRU.
#include "cache/disk_store.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "../test_util.h"

namespace hubfs::cache {
namespace {

namespace fsys = std::filesystem;
using hubfs::testing::ModeOf;
using hubfs::testing::ReadFileBytes;
using hubfs::testing::WriteFileBytes;

constexpr size_t kMiB = 1u << 20;

BlockKey Key(int n, uint64_t index = 0, IdKind kind = IdKind::kSha256) {
  char buf[65];
  std::snprintf(buf, sizeof buf, "%02x%062x", n & 0xff, n);
  std::string hex(buf);
  if (kind == IdKind::kGitSha1) hex.resize(40);
  auto id = ContentId::FromHex(kind, hex);
  EXPECT_TRUE(id.has_value());
  return BlockKey{*id, index};
}

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

std::string TextBytes(size_t n) {
  std::string s;
  s.reserve(n + 100);
  for (int i = 0; s.size() < n; ++i)
    s += "{\"token\": " + std::to_string(i) + ", \"text\": \"the quick brown fox jumps over\"},\n";
  s.resize(n);
  return s;
}

std::string AsString(const BlockRef& b) { return std::string(b->data.get(), b->size); }

// The block's bytes, or a description of the error (never equal to real block contents here).
std::string ReadStr(DiskStore& store, const BlockKey& k, size_t len) {
  auto r = store.Read(k, len);
  return r.ok() ? AsString(r.value()) : "<error: " + r.error().ToString() + ">";
}

class DiskStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = tmp_.path() + "/cache"; }  // Open must create it

  std::unique_ptr<DiskStore> Open(uint64_t max_bytes = 1ULL << 30) {
    auto r = DiskStore::Open(DiskOptions{dir_, max_bytes, /*min_free_bytes=*/0});
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().ToString());
    return r.ok() ? std::move(r.value()) : nullptr;
  }
  // The documented layout: <dir>/v2/blocks/<2 hex>/<content hex>-<kind>-<index>.
  std::string PathOf(const BlockKey& k) const {
    const std::string hex = k.content.Hex();
    return dir_ + "/v2/blocks/" + hex.substr(0, 2) + "/" + hex + "-" +
           std::to_string(static_cast<int>(k.content.kind)) + "-" + std::to_string(k.index);
  }
  size_t FilesUnder(const std::string& d) const {
    size_t n = 0;
    std::error_code ec;
    for (auto it = fsys::recursive_directory_iterator(d, ec); it != fsys::recursive_directory_iterator(); ++it)
      if (it->is_regular_file()) ++n;
    return n;
  }

  hubfs::testing::TempDir tmp_;
  std::string dir_;
};

TEST_F(DiskStoreTest, RandomBlockRoundTrips) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const BlockKey k = Key(1, 3);
  const std::string data = RandomBytes(rng, 4 * kMiB);
  ASSERT_TRUE(store->Write(k, data.data(), data.size()).ok());
  EXPECT_TRUE(store->Contains(k));
  EXPECT_EQ(store->block_count(), 1u);
  auto r = store->Read(k, data.size());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ((*r)->size, data.size());
  EXPECT_TRUE(AsString(*r) == data);
  // Incompressible data is stored raw (plus a small header).
  const auto on_disk = fsys::file_size(PathOf(k));
  EXPECT_GE(on_disk, data.size());
  EXPECT_LE(on_disk, RoundUpToPage(data.size()) + kHeaderBytes);  // a header page, page padding
  EXPECT_EQ(store->used_bytes(), on_disk);
}

TEST_F(DiskStoreTest, CompressibleBlockIsSmallerOnDiskAndRoundTrips) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const BlockKey k = Key(2, 0, IdKind::kGitSha1);
  const std::string data = TextBytes(4 * kMiB);
  ASSERT_TRUE(store->Write(k, data.data(), data.size()).ok());
  const auto on_disk = fsys::file_size(PathOf(k));
  EXPECT_LT(on_disk, data.size() / 2) << "text block not compressed";
  auto r = store->Read(k, data.size());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_TRUE(AsString(*r) == data);
}

TEST_F(DiskStoreTest, SmallAndEmptyBlocks) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  for (size_t n : {size_t{0}, size_t{1}, size_t{100}, size_t{65537}}) {
    const BlockKey k = Key(3, n);
    const std::string data = TextBytes(n);
    ASSERT_TRUE(store->Write(k, data.data(), data.size()).ok()) << n;
    auto r = store->Read(k, n);
    ASSERT_TRUE(r.ok()) << n << ": " << r.error().ToString();
    EXPECT_TRUE(AsString(*r) == data) << n;
  }
}

TEST_F(DiskStoreTest, AbsentIsNotFound) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  auto r = store->Read(Key(9), 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kNotFound);
  EXPECT_FALSE(store->Contains(Key(9)));
}

TEST_F(DiskStoreTest, KeysAreDistinctByIndexAndKind) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const BlockKey a = Key(4, 0), b = Key(4, 1), c = Key(4, 0, IdKind::kGitSha1);
  ASSERT_TRUE(store->Write(a, "aaaa", 4).ok());
  ASSERT_TRUE(store->Write(b, "bbbb", 4).ok());
  ASSERT_TRUE(store->Write(c, "cccc", 4).ok());
  EXPECT_EQ(ReadStr(*store, a, 4), "aaaa");
  EXPECT_EQ(ReadStr(*store, b, 4), "bbbb");
  EXPECT_EQ(ReadStr(*store, c, 4), "cccc");
  // Overwriting a key replaces it and keeps the accounting exact.
  ASSERT_TRUE(store->Write(a, "AAAAAAAA", 8).ok());
  EXPECT_EQ(ReadStr(*store, a, 8), "AAAAAAAA");
  EXPECT_EQ(store->block_count(), 3u);
  EXPECT_EQ(store->used_bytes(), fsys::file_size(PathOf(a)) + fsys::file_size(PathOf(b)) + fsys::file_size(PathOf(c)));
}

TEST_F(DiskStoreTest, FilesArePrivate) {
  const mode_t old = ::umask(0);  // even with a permissive umask
  auto store = Open();
  const bool wrote = store != nullptr && store->Write(Key(5), "secret", 6).ok();
  ::umask(old);
  ASSERT_TRUE(wrote);
  const BlockKey k = Key(5);
  EXPECT_EQ(ModeOf(dir_), 0700u);
  EXPECT_EQ(ModeOf(dir_ + "/v2"), 0700u);
  EXPECT_EQ(ModeOf(dir_ + "/v2/blocks"), 0700u);
  EXPECT_EQ(ModeOf(dir_ + "/v2/tmp"), 0700u);
  EXPECT_EQ(ModeOf(fsys::path(PathOf(k)).parent_path().string()), 0700u);
  EXPECT_EQ(ModeOf(PathOf(k)), 0600u);
}

TEST_F(DiskStoreTest, ExistingDirectoryIsMadePrivate) {
  fsys::create_directories(dir_);
  fsys::permissions(dir_, fsys::perms::all);  // 0777
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(ModeOf(dir_), 0700u);
}

class DiskCorruption : public DiskStoreTest, public ::testing::WithParamInterface<size_t> {};

TEST_P(DiskCorruption, FlippedByteIsCorruptAndRemoved) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const BlockKey k = Key(6, 2);
  const std::string data = RandomBytes(rng, 256 * 1024);
  ASSERT_TRUE(store->Write(k, data.data(), data.size()).ok());
  const std::string path = PathOf(k);
  std::string bytes = ReadFileBytes(path);
  const size_t at = std::min(GetParam(), bytes.size() - 1);
  bytes[at] = static_cast<char>(bytes[at] ^ 0x01);
  WriteFileBytes(path, bytes);

  auto& corrupt = metrics::Get("cache.disk.corrupt");
  const uint64_t before = corrupt.Get();
  auto r = store->Read(k, data.size());
  ASSERT_FALSE(r.ok()) << "flipped byte " << at << " went unnoticed";
  EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt);
  EXPECT_EQ(corrupt.Get(), before + 1);
  EXPECT_FALSE(fsys::exists(path)) << "corrupt file left on disk";
  EXPECT_FALSE(store->Contains(k));
  EXPECT_EQ(store->used_bytes(), 0u);
  // A second read is a plain miss (the caller refetches), not another corruption.
  auto again = store->Read(k, data.size());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(corrupt.Get(), before + 1);
}

// Offsets: magic, version, flags, key, index, lengths, header checksum, header padding, first data
// byte, middle, last byte (page padding).
INSTANTIATE_TEST_SUITE_P(Offsets, DiskCorruption,
                         ::testing::Values(size_t{0}, size_t{8}, size_t{12}, size_t{20}, size_t{56}, size_t{64},
                                           size_t{80}, size_t{88}, size_t{4096}, size_t{100000},
                                           size_t{1} << 40),
                         [](const ::testing::TestParamInfo<size_t>& p) {
                           return p.param >= (size_t{1} << 40) ? std::string("LastByte")
                                                                  : "Byte" + std::to_string(p.param);
                         });

TEST_F(DiskStoreTest, CorruptCompressedBlockDetected) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const BlockKey k = Key(7);
  const std::string data = TextBytes(1 * kMiB);
  ASSERT_TRUE(store->Write(k, data.data(), data.size()).ok());
  std::string bytes = ReadFileBytes(PathOf(k));
  bytes[bytes.size() / 2] ^= 0x40;
  WriteFileBytes(PathOf(k), bytes);
  auto r = store->Read(k, data.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt);
}

TEST_F(DiskStoreTest, TruncatedFileIsCorrupt) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  auto store = Open();
  ASSERT_NE(store, nullptr);
  for (size_t keep : {size_t{0}, size_t{10}, size_t{88}, size_t{5000}}) {
    const BlockKey k = Key(8, keep);
    const std::string data = RandomBytes(rng, 10000);
    ASSERT_TRUE(store->Write(k, data.data(), data.size()).ok());
    fsys::resize_file(PathOf(k), keep);
    const uint64_t before = metrics::Get("cache.disk.corrupt").Get();
    auto r = store->Read(k, data.size());
    ASSERT_FALSE(r.ok()) << "kept " << keep;
    EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt) << "kept " << keep;
    EXPECT_EQ(metrics::Get("cache.disk.corrupt").Get(), before + 1);
    EXPECT_FALSE(fsys::exists(PathOf(k)));
  }
  EXPECT_EQ(store->used_bytes(), 0u);
}

TEST_F(DiskStoreTest, AppendedBytesAreCorrupt) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const BlockKey k = Key(10);
  ASSERT_TRUE(store->Write(k, "0123456789", 10).ok());
  WriteFileBytes(PathOf(k), ReadFileBytes(PathOf(k)) + "x");
  auto r = store->Read(k, 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt);
}

TEST_F(DiskStoreTest, WrongExpectedLengthIsCorrupt) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const BlockKey k = Key(11);
  ASSERT_TRUE(store->Write(k, "0123456789", 10).ok());
  auto r = store->Read(k, 11);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt);
  EXPECT_FALSE(store->Contains(k));
}

TEST_F(DiskStoreTest, FileUnderAnotherKeysNameIsCorrupt) {
  // A block file renamed (or copied) to another key's name must not serve that key's bytes.
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const BlockKey a = Key(12, 0), b = Key(12, 1);
  ASSERT_TRUE(store->Write(a, "AAAA", 4).ok());
  ASSERT_TRUE(store->Write(b, "BBBB", 4).ok());
  fsys::copy_file(PathOf(a), PathOf(b), fsys::copy_options::overwrite_existing);
  auto r = store->Read(b, 4);
  ASSERT_FALSE(r.ok()) << "served " << AsString(*r) << " for the wrong key";
  EXPECT_EQ(r.error().kind, ErrorKind::kCorrupt);
}

TEST_F(DiskStoreTest, FileDeletedBehindOurBackIsAMiss) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const BlockKey k = Key(13);
  ASSERT_TRUE(store->Write(k, "data", 4).ok());
  fsys::remove(PathOf(k));
  const uint64_t before = metrics::Get("cache.disk.corrupt").Get();
  auto r = store->Read(k, 4);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(metrics::Get("cache.disk.corrupt").Get(), before);
  EXPECT_FALSE(store->Contains(k));
}

TEST_F(DiskStoreTest, ReopenFindsExistingBlocks) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  std::vector<std::string> data;
  uint64_t used = 0;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 5; ++i) {
      data.push_back(i % 2 ? TextBytes(100000 + i) : RandomBytes(rng, 100000 + i));
      ASSERT_TRUE(store->Write(Key(20 + i, i), data.back().data(), data.back().size()).ok());
    }
    used = store->used_bytes();
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->block_count(), 5u);
  EXPECT_EQ(store->used_bytes(), used);
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(store->Contains(Key(20 + i, i)));
    auto r = store->Read(Key(20 + i, i), data[i].size());
    ASSERT_TRUE(r.ok()) << i << ": " << r.error().ToString();
    EXPECT_TRUE(AsString(*r) == data[i]) << i;
  }
}

TEST_F(DiskStoreTest, OpenRemovesLeftoverTempFilesAndJunk) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Write(Key(30), "keep", 4).ok());
  }
  WriteFileBytes(dir_ + "/v2/tmp/1234567890", std::string(1000, 'x'));
  WriteFileBytes(dir_ + "/v2/tmp/.hidden-partial", "x");
  fsys::create_directories(dir_ + "/v2/blocks/zz");
  WriteFileBytes(dir_ + "/v2/blocks/zz/not-a-block", "junk");
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_FALSE(fsys::exists(dir_ + "/v2/tmp/1234567890"));
  EXPECT_FALSE(fsys::exists(dir_ + "/v2/blocks/zz/not-a-block"));
  EXPECT_EQ(store->block_count(), 1u);
  EXPECT_TRUE(store->Contains(Key(30)));
  EXPECT_EQ(ReadStr(*store, Key(30), 4), "keep");
}

TEST_F(DiskStoreTest, LruEvictionEvictsLeastRecentlyReadFirst) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  const size_t n = 64 * 1024;  // random: stored raw, so every file has the same size
  std::vector<std::string> data;
  for (int i = 0; i < 8; ++i) data.push_back(RandomBytes(rng, n));

  // Probe the per-file size, then cap the store at exactly five files.
  uint64_t file_bytes = 0;
  {
    auto probe = Open();
    ASSERT_NE(probe, nullptr);
    ASSERT_TRUE(probe->Write(Key(99), data[0].data(), n).ok());
    file_bytes = probe->used_bytes();
    probe->Remove(Key(99));
  }
  const uint64_t cap = 5 * file_bytes;
  auto store = Open(cap);
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store->Write(Key(40 + i), data[i].data(), n).ok());
  EXPECT_EQ(store->block_count(), 5u);
  EXPECT_EQ(store->used_bytes(), cap);
  // Block 0 is the oldest write, but reading it makes it the most recently used.
  ASSERT_TRUE(store->Read(Key(40), n).ok());
  ASSERT_TRUE(store->Write(Key(45), data[5].data(), n).ok());  // over the cap: evict
  EXPECT_LE(store->used_bytes(), cap);
  EXPECT_TRUE(store->Contains(Key(40))) << "the recently read block was evicted";
  EXPECT_TRUE(store->Contains(Key(45))) << "the block just written was evicted";
  EXPECT_FALSE(store->Contains(Key(41))) << "the least recently used block survived";
  EXPECT_FALSE(fsys::exists(PathOf(Key(41))));
  auto r = store->Read(Key(41), n);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kNotFound);
  // Evicted in LRU order: whatever survived among 41..44 is a suffix of the write order.
  bool seen_survivor = false;
  for (int i = 41; i < 45; ++i) {
    if (store->Contains(Key(i))) {
      seen_survivor = true;
    } else {
      EXPECT_FALSE(seen_survivor) << "block " << i << " evicted after a younger one survived";
    }
  }
  // Keep writing: the total never exceeds the cap, and the disk agrees with the accounting.
  for (int i = 46; i < 60; ++i) {
    ASSERT_TRUE(store->Write(Key(i), data[static_cast<size_t>(i) % data.size()].data(), n).ok());
    EXPECT_LE(store->used_bytes(), cap);
  }
  uint64_t on_disk = 0;
  for (auto& e : fsys::recursive_directory_iterator(dir_ + "/v2/blocks"))
    if (e.is_regular_file()) on_disk += e.file_size();
  EXPECT_EQ(on_disk, store->used_bytes());
  EXPECT_EQ(FilesUnder(dir_ + "/v2/blocks"), store->block_count());
}

TEST_F(DiskStoreTest, FreeSpaceFloorEvictsOldBlocksToMakeRoom) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  const size_t n = 16 * kMiB;
  const std::string a = RandomBytes(rng, n), b = RandomBytes(rng, n);
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Write(Key(90), a.data(), n).ok());
  }
  struct statvfs vfs {};
  ASSERT_EQ(::statvfs(dir_.c_str(), &vfs), 0);
  const uint64_t free_now = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  if (free_now < 256 * kMiB) GTEST_SKIP() << "not enough free space to run this test";
  // The floor sits half a block below the current free space: the next block only fits if the
  // store evicts (the old block frees a whole block's worth).
  const uint64_t floor = free_now - n / 2;
  auto r = DiskStore::Open(DiskOptions{dir_, /*max_bytes=*/1ULL << 40, floor});
  ASSERT_TRUE(r.ok());
  auto store = std::move(r.value());
  ASSERT_EQ(store->block_count(), 1u);
  const Status st = store->Write(Key(91), b.data(), n);
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_TRUE(store->Contains(Key(91)));
  EXPECT_FALSE(store->Contains(Key(90))) << "the least recently used block should have made room";
  EXPECT_TRUE(ReadStr(*store, Key(91), n) == b);
}

TEST_F(DiskStoreTest, VerifyAllCountsAndRemovesBadBlocks) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  std::vector<BlockKey> keys;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 6; ++i) {
      keys.push_back(Key(60 + i, static_cast<uint64_t>(i)));
      const std::string d = i % 2 ? TextBytes(50000) : RandomBytes(rng, 50000);
      ASSERT_TRUE(store->Write(keys.back(), d.data(), d.size()).ok());
    }
  }
  // Three bad files: a flipped data byte, a truncation, and a block under a foreign name.
  std::string b0 = ReadFileBytes(PathOf(keys[0]));
  b0[b0.size() - 1] ^= 1;
  WriteFileBytes(PathOf(keys[0]), b0);
  fsys::resize_file(PathOf(keys[1]), 40);
  fsys::copy_file(PathOf(keys[3]), PathOf(keys[2]), fsys::copy_options::overwrite_existing);
  uint64_t good_bytes = 0;
  for (int i = 3; i < 6; ++i) good_bytes += fsys::file_size(PathOf(keys[static_cast<size_t>(i)]));

  VerifyReport r = DiskStore::VerifyAll(dir_, /*remove_bad=*/false);
  EXPECT_EQ(r.blocks, 6u);
  EXPECT_EQ(r.bad, 3u);
  EXPECT_EQ(r.bytes, good_bytes);
  for (const auto& k : keys) EXPECT_TRUE(fsys::exists(PathOf(k))) << "removed without remove_bad";

  r = DiskStore::VerifyAll(dir_, /*remove_bad=*/true);
  EXPECT_EQ(r.blocks, 6u);
  EXPECT_EQ(r.bad, 3u);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(fsys::exists(PathOf(keys[static_cast<size_t>(i)])));
  for (int i = 3; i < 6; ++i) EXPECT_TRUE(fsys::exists(PathOf(keys[static_cast<size_t>(i)])));

  r = DiskStore::VerifyAll(dir_, false);
  EXPECT_EQ(r.blocks, 3u);
  EXPECT_EQ(r.bad, 0u);
  EXPECT_EQ(r.bytes, good_bytes);
}

TEST_F(DiskStoreTest, VerifyAllOnMissingDirectory) {
  VerifyReport r = DiskStore::VerifyAll(dir_ + "/nope", true);
  EXPECT_EQ(r.blocks, 0u);
  EXPECT_EQ(r.bad, 0u);
}

TEST_F(DiskStoreTest, ClearEmptiesEveryGeneration) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(store->Write(Key(70 + i), "block", 5).ok());
  }
  // An orphaned older generation and a leftover temp file.
  fsys::create_directories(dir_ + "/v0/blocks/ab");
  WriteFileBytes(dir_ + "/v0/blocks/ab/old-block", "old");
  WriteFileBytes(dir_ + "/v2/tmp/999", "partial");
  ASSERT_GT(FilesUnder(dir_), 0u);
  ASSERT_TRUE(DiskStore::Clear(dir_).ok());
  EXPECT_EQ(FilesUnder(dir_ + "/v2"), 0u);
  EXPECT_EQ(FilesUnder(dir_ + "/v0"), 0u);
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->block_count(), 0u);
  EXPECT_EQ(store->used_bytes(), 0u);
  EXPECT_FALSE(store->Contains(Key(70)));
  // A cleared cache is usable again.
  ASSERT_TRUE(store->Write(Key(70), "again", 5).ok());
  EXPECT_EQ(ReadStr(*store, Key(70), 5), "again");
}

TEST_F(DiskStoreTest, ClearLeavesUnrelatedFilesAlone) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Write(Key(80), "block", 5).ok());
  }
  WriteFileBytes(dir_ + "/stats", "mem 1\n");  // the daemon's stats file lives beside v2/
  ASSERT_TRUE(DiskStore::Clear(dir_).ok());
  EXPECT_TRUE(fsys::exists(dir_ + "/stats"));
  EXPECT_TRUE(DiskStore::Clear(dir_ + "/does-not-exist").ok());
}

// Whole files (passthrough): a verified file's bytes joined into one plain file that replaces its
// blocks, serves them, persists, is evicted as one entry and is checked by VerifyAll.
class WholeFileTest : public DiskStoreTest {
 protected:
  static constexpr uint64_t kBs = 64 * 1024;
  std::unique_ptr<DiskStore> OpenBs(uint64_t max_bytes = 1ULL << 30) {
    auto r = DiskStore::Open(DiskOptions{dir_, max_bytes, /*min_free_bytes=*/0, kBs});
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().ToString());
    return r.ok() ? std::move(r.value()) : nullptr;
  }
  // Writes `data` as blocks of `id`, then as its whole file; returns the commit status.
  Status Join(DiskStore& store, const ContentId& id, const std::string& data, bool commit = true) {
    const uint64_t n = (data.size() + kBs - 1) / kBs;
    for (uint64_t i = 0; i < n; ++i) {
      const size_t len = std::min<size_t>(kBs, data.size() - i * kBs);
      EXPECT_TRUE(store.Write(BlockKey{id, i}, data.data() + i * kBs, len).ok());
    }
    auto w = store.BeginWhole(id, data.size());
    if (!w) return MakeError(ErrorKind::kIo, "no writer");
    for (uint64_t i = 0; i < n; ++i)
      EXPECT_TRUE(w->Append(data.data() + i * kBs, std::min<size_t>(kBs, data.size() - i * kBs)));
    return commit ? w->Commit(n) : OkStatus();
  }
  // A store with file `n` of `bytes` random bytes (returned in *data) written as blocks and joined.
  std::unique_ptr<DiskStore> StoreWithWhole(int n, size_t bytes, std::string* data) {
    std::mt19937_64 rng(hubfs::testing::TestSeed());
    auto store = OpenBs();
    if (store == nullptr) return nullptr;
    *data = RandomBytes(rng, bytes);
    EXPECT_TRUE(Join(*store, Key(n).content, *data).ok());
    return store;
  }
  std::string WholePathOf(const ContentId& id) const {
    return dir_ + "/v2/files/" + id.Hex() + "-" + std::to_string(static_cast<int>(id.kind));
  }
};

TEST_F(WholeFileTest, ReplacesBlocksAndServesThem) {
  std::string data;
  auto store = StoreWithWhole(40, 5 * kBs + 123, &data);
  ASSERT_NE(store, nullptr);
  const ContentId id = Key(40).content;
  EXPECT_EQ(FilesUnder(dir_ + "/v2/blocks"), 0u);  // the block files are gone
  EXPECT_EQ(store->WholePath(id), WholePathOf(id));
  EXPECT_TRUE(ReadFileBytes(WholePathOf(id)) == data);  // a plain copy of the file
  EXPECT_EQ(ModeOf(WholePathOf(id)) & 0777, 0600u);
  EXPECT_EQ(store->block_count(), 1u);
  EXPECT_EQ(store->used_bytes(), RoundUpToPage(data.size()));
  for (uint64_t i = 0; i < 6; ++i) {
    const size_t len = std::min<size_t>(kBs, data.size() - i * kBs);
    EXPECT_TRUE(store->Contains(BlockKey{id, i}));
    EXPECT_TRUE(ReadStr(*store, BlockKey{id, i}, len) == data.substr(i * kBs, len)) << i;
  }
  EXPECT_EQ(store->WholePath(Key(41).content), "");
}

TEST_F(WholeFileTest, UncommittedWriterLeavesNothingBehind) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  auto store = OpenBs();
  ASSERT_NE(store, nullptr);
  const ContentId id = Key(42).content;
  const std::string data = RandomBytes(rng, 3 * kBs);
  ASSERT_TRUE(Join(*store, id, data, /*commit=*/false).ok());
  EXPECT_EQ(FilesUnder(dir_ + "/v2/tmp"), 0u);
  EXPECT_EQ(FilesUnder(dir_ + "/v2/files"), 0u);
  EXPECT_EQ(FilesUnder(dir_ + "/v2/blocks"), 3u);  // the blocks stay
  EXPECT_EQ(store->WholePath(id), "");
  // A writer that got fewer bytes than the file has cannot commit.
  auto w = store->BeginWhole(id, data.size());
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->Append(data.data(), kBs));
  EXPECT_FALSE(w->Commit(3).ok());
  EXPECT_FALSE(w->Append(data.data(), 4 * kBs));  // more than the file has
  w.reset();
  EXPECT_EQ(FilesUnder(dir_ + "/v2/tmp"), 0u);
  EXPECT_EQ(FilesUnder(dir_ + "/v2/blocks"), 3u);
}

TEST_F(WholeFileTest, PersistsAcrossReopenAndIsEvictedAsOne) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  const ContentId a = Key(43).content, b = Key(44).content;
  const std::string da = RandomBytes(rng, 4 * kBs), db = RandomBytes(rng, 4 * kBs);
  {
    auto store = OpenBs();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(Join(*store, a, da).ok());
  }
  // Reopened with a cap that holds one file: the next one evicts the older whole file.
  auto store = OpenBs(6 * kBs);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->WholePath(a), WholePathOf(a));
  EXPECT_TRUE(ReadStr(*store, BlockKey{a, 2}, kBs) == da.substr(2 * kBs, kBs));
  ASSERT_TRUE(Join(*store, b, db).ok());
  EXPECT_EQ(store->WholePath(a), "");
  EXPECT_FALSE(fsys::exists(WholePathOf(a)));
  EXPECT_FALSE(store->Contains(BlockKey{a, 0}));
  EXPECT_EQ(store->WholePath(b), WholePathOf(b));
  EXPECT_LE(store->used_bytes(), 6 * kBs);
}

TEST_F(WholeFileTest, ShortOrMissingWholeFileIsAMissNotWrongBytes) {
  std::string data;
  auto store = StoreWithWhole(45, 4 * kBs, &data);
  ASSERT_NE(store, nullptr);
  const ContentId id = Key(45).content;
  fsys::resize_file(WholePathOf(id), 2 * kBs);
  EXPECT_FALSE(store->Read(BlockKey{id, 3}, kBs).ok());
  EXPECT_EQ(store->WholePath(id), "");  // dropped: the blocks are refetched
  EXPECT_FALSE(store->Contains(BlockKey{id, 0}));
}

TEST_F(WholeFileTest, VerifyAllHashesWholeFilesAndClearRemovesThem) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  const std::string good = RandomBytes(rng, 3 * kBs), bad = RandomBytes(rng, 3 * kBs);
  // Whole files are named by the sha256 of their bytes.
  auto sha = [](const std::string& d) {
    unsigned char md[32];
    unsigned int n = 0;
    EXPECT_EQ(EVP_Digest(d.data(), d.size(), md, &n, EVP_sha256(), nullptr), 1);
    std::string hex;
    char h[3];
    for (unsigned char c : md) {
      std::snprintf(h, sizeof h, "%02x", c);
      hex += h;
    }
    return *ContentId::FromHex(IdKind::kSha256, hex);
  };
  const ContentId g = sha(good), b = sha(bad);
  {
    auto store = OpenBs();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(Join(*store, g, good).ok());
    ASSERT_TRUE(Join(*store, b, bad).ok());
  }
  auto rep = DiskStore::VerifyAll(dir_, false);
  EXPECT_EQ(rep.blocks, 2u);
  EXPECT_EQ(rep.bad, 0u);
  {
    std::string flipped = ReadFileBytes(WholePathOf(b));
    flipped[kBs + 7] ^= 0x40;
    WriteFileBytes(WholePathOf(b), flipped);
  }
  rep = DiskStore::VerifyAll(dir_, /*remove_bad=*/true);
  EXPECT_EQ(rep.bad, 1u);
  EXPECT_FALSE(fsys::exists(WholePathOf(b)));
  EXPECT_TRUE(fsys::exists(WholePathOf(g)));
  ASSERT_TRUE(DiskStore::Clear(dir_).ok());
  EXPECT_FALSE(fsys::exists(WholePathOf(g)));
}

TEST(ParseBlockFileName, RoundTrip) {
  for (IdKind kind : {IdKind::kSha256, IdKind::kGitSha1}) {
    for (uint64_t index : {uint64_t{0}, uint64_t{1}, uint64_t{4095}, uint64_t{123456789012345}}) {
      const BlockKey k = Key(0xab, index, kind);
      const std::string name = k.content.Hex() + "-" + std::to_string(static_cast<int>(kind)) + "-" + std::to_string(index);
      auto parsed = ParseBlockFileName(name);
      ASSERT_TRUE(parsed.has_value()) << name;
      EXPECT_TRUE(*parsed == k) << name;
    }
  }
}

TEST(ParseBlockFileName, RejectsJunk) {
  const std::string sha256 = Key(1).content.Hex();
  const std::string sha1 = Key(1, 0, IdKind::kGitSha1).content.Hex();
  for (const std::string& name : std::vector<std::string>{
           "", "-", "--", "junk", "not-a-block", sha256, sha256 + "-1", sha256 + "-1-", sha256 + "-3-0",
           sha256 + "-0-0", sha256 + "-2-0",       // a sha256 is not a git sha1
           sha1 + "-1-0",                            // nor the other way round
           sha256 + "-1-12a", sha256 + "-1--5", sha256 + "-1-0-0", sha256 + "-1- 1", sha256 + "-1-+1",
           sha256.substr(1) + "-1-0", "g" + sha256.substr(1) + "-1-0", sha256 + "0-1-0",
           sha256 + "-1-99999999999999999999999",  // overflow
           "tmp.123", ".hidden"}) {
    EXPECT_FALSE(ParseBlockFileName(name).has_value()) << '"' << name << '"';
  }
}

}  // namespace
}  // namespace hubfs::cache
