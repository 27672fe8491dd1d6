// The metadata records kept beside the block cache: what is written is read back, anything damaged
// is a miss (never a wrong value), the store stays within its limits, and its files are private.
#include "cache/meta_store.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "cache/disk_store.h"
#include "tests/unit/test_util.h"

namespace hubfs::cache {
namespace {

using hubfs::testing::ModeOf;
using hubfs::testing::ReadFileBytes;
using hubfs::testing::TempDir;
using hubfs::testing::WriteFileBytes;

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') out.push_back(dir + "/" + e->d_name);
    ::closedir(d);
  }
  return out;
}

std::string MetaDir(const TempDir& d) { return d.path() + "/" + kDiskFormatDir + "/meta"; }

TEST(MetaStore, PutGetReplaceAndMiss) {
  TempDir d;
  auto s = MetaStore::Open(d.path());
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  auto& m = *s.value();
  EXPECT_FALSE(m.Get("rev|models|a/b|").has_value());
  EXPECT_FALSE(m.Touch("rev|models|a/b|"));
  ASSERT_TRUE(m.Put("rev|models|a/b|", R"({"sha":"1"})").ok());
  ASSERT_TRUE(m.Put("rev|models|a/b|main", "").ok());  // an empty value is a value
  EXPECT_EQ(m.Get("rev|models|a/b|").value_or("?"), R"({"sha":"1"})");
  EXPECT_EQ(m.Get("rev|models|a/b|main").value_or("?"), "");
  EXPECT_TRUE(m.Touch("rev|models|a/b|"));
  ASSERT_TRUE(m.Put("rev|models|a/b|", "second, longer value\nwith a newline").ok());
  EXPECT_EQ(m.Get("rev|models|a/b|").value_or("?"), "second, longer value\nwith a newline");
  EXPECT_EQ(m.records(), 2u);
  EXPECT_FALSE(m.Put("bad\nkey", "x").ok());

  // A new process (a remount) reads what the last one wrote.
  auto again = MetaStore::Open(d.path());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value()->Get("rev|models|a/b|").value_or("?"), "second, longer value\nwith a newline");
  EXPECT_EQ(again.value()->records(), 2u);
}

TEST(MetaStore, FilesArePrivate) {
  TempDir d;
  auto s = MetaStore::Open(d.path());
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(s.value()->Put("k", "v").ok());
  EXPECT_EQ(ModeOf(MetaDir(d)), 0700u);
  auto files = Files(MetaDir(d));
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(ModeOf(files[0]), 0600u);
}

TEST(MetaStore, DamagedRecordsAreMissesAndRemoved) {
  TempDir d;
  auto s = MetaStore::Open(d.path());
  ASSERT_TRUE(s.ok());
  auto& m = *s.value();
  const std::string value = R"([{"type":"file","path":"config.json"}])";
  ASSERT_TRUE(m.Put("tree|k", value).ok());
  auto files = Files(MetaDir(d));
  ASSERT_EQ(files.size(), 1u);
  const std::string good = ReadFileBytes(files[0]);

  // One flipped byte in the value, in the key, in the length, in the hash; cut short; empty (a
  // crash mid-write); another format.
  std::vector<std::string> bad;
  for (size_t pos : {good.size() - 3, size_t{12}, good.find('\n', 12) + 1, good.size() - value.size() - 5}) {
    std::string b = good;
    b[pos] = static_cast<char>(b[pos] ^ 0x01);
    bad.push_back(b);
  }
  bad.push_back(good.substr(0, good.size() - 1));
  bad.push_back("");
  bad.push_back("HUBFSMETA2\n" + good.substr(11));
  for (size_t i = 0; i < bad.size(); ++i) {
    WriteFileBytes(files[0], bad[i]);
    EXPECT_FALSE(m.Get("tree|k").has_value()) << "case " << i;
    EXPECT_EQ(::access(files[0].c_str(), F_OK), -1) << "case " << i << ": a damaged record is removed";
  }
  WriteFileBytes(files[0], good);
  EXPECT_EQ(m.Get("tree|k").value_or("?"), value);
}

TEST(MetaStore, LeftoverTempFilesAreRemovedAtOpen) {
  TempDir d;
  {
    auto s = MetaStore::Open(d.path());
    ASSERT_TRUE(s.ok());
  }
  WriteFileBytes(MetaDir(d) + "/tmp-12345", "half a record");
  auto s = MetaStore::Open(d.path());
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(Files(MetaDir(d)).empty());
  EXPECT_EQ(s.value()->records(), 0u);
}

TEST(MetaStore, StaysWithinItsLimitsDroppingTheOldestFirst) {
  TempDir d;
  auto s = MetaStore::Open(d.path(), MetaLimits{8, 1 << 20});
  ASSERT_TRUE(s.ok());
  auto& m = *s.value();
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(m.Put("k" + std::to_string(i), "v").ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // distinct mtimes
  }
  EXPECT_EQ(m.records(), 8u);
  EXPECT_TRUE(m.Touch("k0"));  // used: no longer the oldest
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(m.Put("k8", "v").ok());  // 9 > 8: pruned to 6
  EXPECT_EQ(m.records(), 6u);
  EXPECT_EQ(Files(MetaDir(d)).size(), 6u);
  EXPECT_TRUE(m.Get("k0").has_value());
  EXPECT_TRUE(m.Get("k8").has_value());
  for (int i = 1; i <= 3; ++i) EXPECT_FALSE(m.Get("k" + std::to_string(i)).has_value()) << i;

  // Bytes as well as records.
  TempDir d2;
  auto s2 = MetaStore::Open(d2.path(), MetaLimits{1000, 4096});
  ASSERT_TRUE(s2.ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(s2.value()->Put("b" + std::to_string(i), std::string(1000, 'x')).ok());
  EXPECT_LE(s2.value()->bytes(), 4096u);
  EXPECT_TRUE(s2.value()->Get("b9").has_value());
}

TEST(MetaStore, ClearRemovesTheRecords) {
  TempDir d;
  auto s = MetaStore::Open(d.path());
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(s.value()->Put("k", "v").ok());
  ASSERT_TRUE(DiskStore::Clear(d.path()).ok());
  EXPECT_TRUE(Files(MetaDir(d)).empty());
}

// FUSE threads resolve repos at once: writers of the same and of different keys, with readers,
// never see a torn record or lose count (run under TSan too).
TEST(MetaStore, ConcurrentWritersAndReaders) {
  TempDir d;
  auto s = MetaStore::Open(d.path());
  ASSERT_TRUE(s.ok());
  auto& m = *s.value();
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const std::string shared_value = "value-" + std::to_string(i % 3);
        if (!m.Put("shared", shared_value).ok()) bad.fetch_add(1);
        if (!m.Put("own" + std::to_string(t), "x").ok()) bad.fetch_add(1);
        auto v = m.Get("shared");
        if (!v || v->rfind("value-", 0) != 0) bad.fetch_add(1);
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(m.records(), 5u);
  EXPECT_EQ(Files(MetaDir(d)).size(), 5u);
}

TEST(MetaStore, VerifyAllChecksEveryRecordOffline) {
  TempDir d;
  {
    auto s = MetaStore::Open(d.path());
    ASSERT_TRUE(s.ok());
    for (const char* k : {"a", "b", "c"}) ASSERT_TRUE(s.value()->Put(k, std::string("value of ") + k).ok());
  }
  auto r = MetaStore::VerifyAll(d.path(), false);
  EXPECT_EQ(r.records, 3u);
  EXPECT_EQ(r.bad, 0u);
  auto files = Files(MetaDir(d));
  ASSERT_EQ(files.size(), 3u);
  std::sort(files.begin(), files.end());
  // A sound record under a name that is not its key's hash (moved, or written by something else),
  // and a record with a flipped byte.
  ASSERT_EQ(::rename(files[0].c_str(), (MetaDir(d) + "/00000000000000000000000000000000").c_str()), 0);
  std::string b = ReadFileBytes(files[1]);
  b.back() = static_cast<char>(b.back() ^ 1);
  WriteFileBytes(files[1], b);
  r = MetaStore::VerifyAll(d.path(), false);
  EXPECT_EQ(r.records, 3u);
  EXPECT_EQ(r.bad, 2u);
  EXPECT_EQ(Files(MetaDir(d)).size(), 3u);  // reported, not removed
  r = MetaStore::VerifyAll(d.path(), true);
  EXPECT_EQ(r.bad, 2u);
  EXPECT_EQ(Files(MetaDir(d)).size(), 1u);
  r = MetaStore::VerifyAll(d.path(), false);
  EXPECT_EQ(r.records, 1u);
  EXPECT_EQ(r.bad, 0u);
}

}  // namespace
}  // namespace hubfs::cache
