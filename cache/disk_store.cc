// The disk tier (see disk_store.h).
#include "cache/disk_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <lz4.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xxh_x86dispatch.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <optional>
#include <random>
#include <vector>

#include "cache/meta_store.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/metrics.h"

namespace hubfs::cache {
namespace {

// xxh3 of block data, with the widest vector unit this CPU has (AVX-512/AVX2 on x86, chosen at
// run time by libxxhash's dispatcher; the hash value is the same whichever unit computes it).
// Every cached byte is hashed once on write and once per disk read: SSE2 cost ~7% of the
// daemon's CPU on a cold read.
uint64_t DataHash(const void* data, size_t len) {
#if defined(__x86_64__) || defined(__i386__)
  return XXH3_64bits_dispatch(data, len);
#else
  return XXH3_64bits(data, len);
#endif
}

constexpr char kMagic[8] = {'H', 'U', 'B', 'F', 'S', 'B', 'L', 'K'};
constexpr uint32_t kFlagLz4 = 1;
constexpr size_t kSampleBytes = 64 * 1024;
constexpr size_t kMinCompressBytes = 32 * 1024;
constexpr double kSampleRatioLimit = 0.85;  // sample must shrink by 15% to try the whole block
constexpr double kKeepRatioLimit = 0.90;    // whole block must shrink by 10% to be stored compressed
constexpr double kLowWater = 0.90;          // eviction goes down to 90% of the cap

struct DiskHeader {
  char magic[8];
  uint32_t version;
  uint32_t flags;
  uint8_t content[32];
  uint8_t kind;
  uint8_t pad[7];
  uint64_t index;
  uint32_t raw_len;
  uint32_t stored_len;
  uint64_t data_xxh3;
  uint64_t header_xxh3;  // of every byte above
};
static_assert(sizeof(DiskHeader) == 88, "on-disk header layout");

uint64_t HeaderHash(const DiskHeader& h) { return XXH3_64bits(&h, offsetof(DiskHeader, header_xxh3)); }

// writev until every byte is written (advancing past partial writes); 0 or an errno.
int WritevAll(int fd, iovec* iov, int n) {
  while (n > 0) {
    const ssize_t r = ::writev(fd, iov, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    size_t done = static_cast<size_t>(r);
    while (n > 0 && done >= iov->iov_len) {
      done -= iov->iov_len;
      ++iov;
      --n;
    }
    if (n > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + done;
      iov->iov_len -= done;
    }
  }
  return 0;
}

bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}

// Reads and validates one block file. expected_key null: offline check (any key, any length).
Result<BlockRef> ReadBlockFile(const std::string& path, const BlockKey* expected_key, size_t expected_len) {
  // O_DIRECT: one large read straight into the (page-aligned) block buffer, measured faster than
  // buffered reads here, and no second copy of the block left in the page cache.
  // Small blocks are read through the page cache (where their buffered write left them).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return MakeError(errno == ENOENT ? ErrorKind::kNotFound : ErrorKind::kCorrupt, std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  DiskHeader h{};
  alignas(kPageSize) char page[kHeaderBytes];
  if (::fstat(fd, &st) != 0) return MakeError(ErrorKind::kCorrupt, "stat");
  if (static_cast<uint64_t>(st.st_size) >= kHeaderBytes + kDirectMinBytes) {
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_DIRECT);  // where unsupported: buffered reads
  }
  if (!PreadAll(fd, page, kHeaderBytes, 0)) return MakeError(ErrorKind::kCorrupt, "short file");
  std::memcpy(&h, page, sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) return MakeError(ErrorKind::kCorrupt, "bad magic");
  if (h.version != kDiskFormatVersion) return MakeError(ErrorKind::kCorrupt, "format version");
  if (HeaderHash(h) != h.header_xxh3) return MakeError(ErrorKind::kCorrupt, "header checksum");
  if (!AllZero(page + sizeof h, kHeaderBytes - sizeof h)) return MakeError(ErrorKind::kCorrupt, "header padding");
  if (static_cast<uint64_t>(st.st_size) != kHeaderBytes + RoundUpToPage(h.stored_len))
    return MakeError(ErrorKind::kCorrupt, "length");
  if (expected_key != nullptr) {
    if (h.index != expected_key->index || h.kind != static_cast<uint8_t>(expected_key->content.kind) ||
        std::memcmp(h.content, expected_key->content.bytes.data(), 32) != 0)
      return MakeError(ErrorKind::kCorrupt, "key mismatch");
    if (expected_len != SIZE_MAX && h.raw_len != expected_len) return MakeError(ErrorKind::kCorrupt, "raw length mismatch");
  }
  // Every byte of the file is checked: the data by its xxh3, the page padding for zeros.
  const size_t padded = RoundUpToPage(h.stored_len);
  auto block = std::make_shared<Block>(h.raw_len);
  if (h.flags & kFlagLz4) {
    struct AlignedFree {
      void operator()(char* p) const { std::free(p); }
    };
    std::unique_ptr<char, AlignedFree> stored(static_cast<char*>(std::aligned_alloc(kPageSize, std::max(padded, kPageSize))));
    if (!stored || !PreadAll(fd, stored.get(), padded, kHeaderBytes)) return MakeError(ErrorKind::kCorrupt, "short read");
    if (DataHash(stored.get(), h.stored_len) != h.data_xxh3) return MakeError(ErrorKind::kCorrupt, "data checksum");
    if (!AllZero(stored.get() + h.stored_len, padded - h.stored_len)) return MakeError(ErrorKind::kCorrupt, "padding");
    const int n = LZ4_decompress_safe(stored.get(), block->data.get(), static_cast<int>(h.stored_len),
                                      static_cast<int>(h.raw_len));
    if (n != static_cast<int>(h.raw_len)) return MakeError(ErrorKind::kCorrupt, "lz4 decode");
  } else {
    if (h.stored_len != h.raw_len) return MakeError(ErrorKind::kCorrupt, "raw length");
    // Block buffers have room for whole pages (block.h), so the padding lands in the same read.
    if (!PreadAll(fd, block->data.get(), padded, kHeaderBytes)) return MakeError(ErrorKind::kCorrupt, "short read");
    if (DataHash(block->data.get(), h.raw_len) != h.data_xxh3) return MakeError(ErrorKind::kCorrupt, "data checksum");
    if (!AllZero(block->data.get() + h.raw_len, padded - h.raw_len)) return MakeError(ErrorKind::kCorrupt, "padding");
  }
  return BlockRef(std::move(block));
}

template <typename F>
void ForEachFile(const std::string& dir, F&& f) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') f(dir + "/" + e->d_name, std::string(e->d_name));
  ::closedir(d);
}

// Block files sit one directory level down (blocks/<prefix>/<name>).
template <typename F>
void ForEachBlockFile(const std::string& blocks_dir, F&& f) {
  ForEachFile(blocks_dir, [&](const std::string& sub, const std::string&) { ForEachFile(sub, f); });
}

// "1" (SHA-256) or "2" (git SHA-1): the kind field of block and whole file names.
std::optional<ContentId> ParseIdAndKind(const std::string& hex, const std::string& kind) {
  if (kind == "1") return ContentId::FromHex(IdKind::kSha256, hex);
  if (kind == "2") return ContentId::FromHex(IdKind::kGitSha1, hex);
  return std::nullopt;
}

// "<hex>-<kind>": the name of a whole file.
std::optional<ContentId> ParseWholeFileName(const std::string& name) {
  const size_t a = name.find('-');
  if (a == std::string::npos) return std::nullopt;
  return ParseIdAndKind(name.substr(0, a), name.substr(a + 1));
}

}  // namespace

std::optional<BlockKey> ParseBlockFileName(const std::string& name) {
  const size_t a = name.find('-');
  if (a == std::string::npos) return std::nullopt;
  const size_t b = name.find('-', a + 1);
  if (b == std::string::npos || b + 1 >= name.size()) return std::nullopt;
  auto id = ParseIdAndKind(name.substr(0, a), name.substr(a + 1, b - a - 1));
  if (!id) return std::nullopt;
  uint64_t index = 0;
  for (size_t i = b + 1; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || i - b > 15) return std::nullopt;
    index = index * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return BlockKey{*id, index};
}

DiskStore::DiskStore(DiskOptions options)
    : options_(std::move(options)), root_(options_.dir + "/" + kDiskFormatDir) {}

DiskStore::~DiskStore() {
  std::lock_guard lock(mu_);
  lru_.clear();
}

Result<std::unique_ptr<DiskStore>> DiskStore::Open(const DiskOptions& options) {
  std::unique_ptr<DiskStore> store(new DiskStore(options));
  if (auto st = MakeDirs(store->root_ + "/blocks"); !st.ok()) return st.error();
  if (auto st = MakeDirs(store->root_ + "/tmp"); !st.ok()) return st.error();
  if (auto st = MakeDirs(store->root_ + "/files"); !st.ok()) return st.error();
  if (options.block_size != 0) {
    const std::string path = store->root_ + "/block_size";
    const std::string want = std::to_string(options.block_size);
    char buf[32] = {};
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      const ssize_t n = ::read(fd, buf, sizeof buf - 1);
      ::close(fd);
      std::string have(buf, n > 0 ? static_cast<size_t>(n) : 0);
      while (!have.empty() && (have.back() == '\n' || have.back() == ' ')) have.pop_back();
      if (have != want)
        return MakeError(ErrorKind::kInvalidArgument,
                         "cache directory holds blocks of " + have + " bytes, not " + want + " (use another --cache-dir)");
    } else {
      const int w = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (w < 0 || WriteAll(w, (want + "\n").data(), want.size() + 1) != 0) {
        if (w >= 0) ::close(w);
        return MakeError(ErrorKind::kIo, "cannot write " + path);
      }
      ::close(w);
    }
  }
  ::chmod(options.dir.c_str(), 0700);
  // Leftover temp files are from a daemon that died mid-write: they never became blocks.
  ForEachFile(store->root_ + "/tmp", [](const std::string& path, const std::string&) { ::unlink(path.c_str()); });
  auto index_or_drop = [&](const std::string& path, std::optional<BlockKey> key) {
    struct stat st {};
    if (!key || ::stat(path.c_str(), &st) != 0) {
      ::unlink(path.c_str());
      return;
    }
    store->Index(*key, static_cast<uint64_t>(st.st_size));
  };
  ForEachBlockFile(store->root_ + "/blocks", [&](const std::string& path, const std::string& name) {
    index_or_drop(path, ParseBlockFileName(name));
  });
  ForEachFile(store->root_ + "/files", [&](const std::string& path, const std::string& name) {
    const auto id = ParseWholeFileName(name);
    index_or_drop(path, id ? std::optional<BlockKey>(BlockKey{*id, kWholeIndex}) : std::nullopt);
  });
  store->EvictIfNeeded();  // the cap may have been lowered since the last mount
  metrics::Get("cache.disk.bytes").Set(store->used_bytes());
  return store;
}

std::string DiskStore::PathFor(const BlockKey& key) const {
  const std::string hex = key.content.Hex();
  if (key.index == kWholeIndex) return root_ + "/files/" + hex + "-" + std::to_string(static_cast<int>(key.content.kind));
  return root_ + "/blocks/" + hex.substr(0, 2) + "/" + hex + "-" +
         std::to_string(static_cast<int>(key.content.kind)) + "-" + std::to_string(key.index);
}

void DiskStore::Index(const BlockKey& key, uint64_t bytes) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = index_.try_emplace(key);
  if (inserted) {
    it->second = std::make_unique<Entry>();
    it->second->key = key;
  } else {
    used_ -= it->second->disk_bytes;
    lru_.erase(lru_.iterator_to(*it->second));
  }
  it->second->disk_bytes = bytes;
  used_ += bytes;
  lru_.push_back(*it->second);
}

bool DiskStore::Contains(const BlockKey& key) const {
  std::lock_guard lock(mu_);
  return index_.count(key) != 0 || (options_.block_size != 0 && index_.count(BlockKey{key.content, kWholeIndex}) != 0);
}

std::string DiskStore::WholePath(const ContentId& id) {
  const BlockKey key{id, kWholeIndex};
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) return "";
    lru_.erase(lru_.iterator_to(*it->second));
    lru_.push_back(*it->second);
  }
  return PathFor(key);
}

bool DiskStore::RoomFor(uint64_t bytes) {
  if (options_.min_free_bytes == 0) return true;
  for (int attempt = 0; attempt < 2; ++attempt) {
    struct statvfs vfs {};
    if (::statvfs(root_.c_str(), &vfs) != 0) return false;
    if (static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize >= options_.min_free_bytes + bytes) return true;
    if (attempt == 0) EvictIfNeeded(bytes);
  }
  return false;
}

std::unique_ptr<WholeFileWriter> DiskStore::BeginWhole(const ContentId& id, uint64_t size) {
  // The block files stay until the whole file replaces them: for a moment the file is there twice.
  if (options_.block_size == 0 || !RoomFor(size)) return nullptr;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string tmp = root_ + "/tmp/" + std::to_string(rng());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return nullptr;
  return std::unique_ptr<WholeFileWriter>(new WholeFileWriter(this, id, size, std::move(tmp), fd));
}

WholeFileWriter::~WholeFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

bool WholeFileWriter::Append(const char* data, size_t len) {
  // Buffered: the bytes were just read, and a reader handed this file next finds them in the page
  // cache rather than on the disk.
  if (failed_ || fd_ < 0 || written_ + len > size_ || WriteAll(fd_, data, len) != 0) {
    failed_ = true;
    return false;
  }
  written_ += len;
  return true;
}

Status WholeFileWriter::Commit(uint64_t nblocks) {
  if (failed_ || fd_ < 0 || written_ != size_) return MakeError(ErrorKind::kIo, "whole file incomplete");
  // Durable before it is visible: after a crash the name never points at unwritten bytes.
  int err = ::fdatasync(fd_) != 0 ? errno : 0;
  if (::close(fd_) != 0 && err == 0) err = errno;
  fd_ = -1;
  const BlockKey key{id_, kWholeIndex};
  if (err == 0 && ::rename(tmp_.c_str(), store_->PathFor(key).c_str()) != 0) err = errno;
  if (err != 0) return MakeError(err == ENOSPC ? ErrorKind::kNoSpace : ErrorKind::kIo, std::strerror(err));
  tmp_.clear();
  store_->Index(key, RoundUpToPage(size_));
  for (uint64_t i = 0; i < nblocks; ++i) store_->Remove(BlockKey{id_, i});
  metrics::Get("cache.disk.whole_files").Add();
  metrics::Get("cache.disk.bytes").Set(store_->used_bytes());
  store_->EvictIfNeeded();
  return OkStatus();
}

Result<BlockRef> DiskStore::ReadFromWhole(const BlockKey& key, size_t expected_len) {
  const BlockKey whole{key.content, kWholeIndex};
  const int fd = ::open(PathFor(whole).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    Remove(whole);  // deleted behind our back (cache clear): a plain miss
    return MakeError(ErrorKind::kNotFound, "whole file gone");
  }
  auto block = std::make_shared<Block>(expected_len);
  const bool ok = PreadAll(fd, block->data.get(), expected_len, static_cast<off_t>(key.index * options_.block_size));
  ::close(fd);
  if (!ok) {
    metrics::Get("cache.disk.corrupt").Add();
    LOG_WARN("whole cache file of %s is short: dropped, will refetch", key.content.Hex().c_str());
    Remove(whole);
    return MakeError(ErrorKind::kCorrupt, "whole file short");
  }
  return BlockRef(std::move(block));
}

uint64_t DiskStore::used_bytes() const {
  std::lock_guard lock(mu_);
  return used_;
}

uint64_t DiskStore::block_count() const {
  std::lock_guard lock(mu_);
  return index_.size();
}

void DiskStore::Remove(const BlockKey& key) {
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) return;
    used_ -= it->second->disk_bytes;
    lru_.erase(lru_.iterator_to(*it->second));
    index_.erase(it);
  }
  ::unlink(PathFor(key).c_str());
}

Result<BlockRef> DiskStore::Read(const BlockKey& key, size_t expected_len) {
  static auto& m_corrupt = metrics::Get("cache.disk.corrupt");
  bool whole = false;
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end() && options_.block_size != 0 && key.index != kWholeIndex) {
      it = index_.find(BlockKey{key.content, kWholeIndex});
      whole = it != index_.end();
    }
    if (it == index_.end()) return MakeError(ErrorKind::kNotFound, "not on disk");
    lru_.erase(lru_.iterator_to(*it->second));
    lru_.push_back(*it->second);
  }
  if (whole) return ReadFromWhole(key, expected_len);
  // The hit path reads an uncompressed block straight into its final buffer: one copy, no temp.
  auto block = ReadBlockFile(PathFor(key), &key, expected_len);
  if (!block.ok()) {
    if (block.error().kind == ErrorKind::kNotFound) {
      Remove(key);  // deleted behind our back (cache clear): a plain miss
      return block.error();
    }
    m_corrupt.Add();
    LOG_WARN("cache block %s-%llu failed validation (%s): dropped, will refetch", key.content.Hex().c_str(),
             static_cast<unsigned long long>(key.index), block.error().message.c_str());
    Remove(key);
    return MakeError(ErrorKind::kCorrupt, block.error().message);
  }
  return block;
}

Status DiskStore::Write(const BlockKey& key, const char* data, size_t len) {
  if (options_.min_free_bytes > 0) {
    struct statvfs vfs {};
    if (::statvfs(root_.c_str(), &vfs) == 0 &&
        static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize < options_.min_free_bytes + len) {
      EvictIfNeeded(len);
      if (::statvfs(root_.c_str(), &vfs) == 0 &&
          static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize < options_.min_free_bytes + len)
        return MakeError(ErrorKind::kNoSpace, "free space below the floor");
    }
  }
  // Compression: a sample decides, the whole block confirms.
  std::unique_ptr<char[]> packed;
  const char* stored = data;
  uint32_t stored_len = static_cast<uint32_t>(len);
  uint32_t flags = 0;
  // A block of a few pages cannot save enough pages to pay for compressing and decompressing it.
  const size_t sample = len < kMinCompressBytes ? 0 : std::min(len, kSampleBytes);
  if (sample > 0) {
    std::unique_ptr<char[]> tmp(new char[static_cast<size_t>(LZ4_compressBound(static_cast<int>(sample)))]);
    const int s = LZ4_compress_default(data, tmp.get(), static_cast<int>(sample),
                                       LZ4_compressBound(static_cast<int>(sample)));
    if (s > 0 && static_cast<double>(s) < kSampleRatioLimit * static_cast<double>(sample)) {
      const int bound = LZ4_compressBound(static_cast<int>(len));
      packed.reset(new char[static_cast<size_t>(bound)]);
      const int n = LZ4_compress_default(data, packed.get(), static_cast<int>(len), bound);
      if (n > 0 && static_cast<double>(n) < kKeepRatioLimit * static_cast<double>(len)) {
        stored = packed.get();
        stored_len = static_cast<uint32_t>(n);
        flags |= kFlagLz4;
        metrics::Get("cache.disk.compressed_blocks").Add();
      }
    }
  }
  DiskHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kDiskFormatVersion;
  h.flags = flags;
  std::memcpy(h.content, key.content.bytes.data(), 32);
  h.kind = static_cast<uint8_t>(key.content.kind);
  h.index = key.index;
  h.raw_len = static_cast<uint32_t>(len);
  h.stored_len = stored_len;
  h.data_xxh3 = DataHash(stored, stored_len);
  h.header_xxh3 = HeaderHash(h);

  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string tmp = root_ + "/tmp/" + std::to_string(rng());
  const std::string final_path = PathFor(key);
  // Large page-aligned blocks go to the disk with O_DIRECT, straight from their buffer, without a
  // second copy in the page cache (which would double the memory a cold read uses). Small or
  // unaligned ones (a config, a compressed text block) are written through the page cache: on a
  // VM every direct I/O is a synchronous exit to the host, which costs more than the copy.
  // Either way: one writev of header page, data and zero padding.
  const bool aligned = reinterpret_cast<uintptr_t>(stored) % kPageSize == 0;
  const bool direct = aligned && stored_len >= kDirectMinBytes;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (direct ? O_DIRECT : 0), 0600);
  if (fd < 0 && direct && errno == EINVAL) fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return MakeError(errno == ENOSPC || errno == EDQUOT ? ErrorKind::kNoSpace : ErrorKind::kIo,
                     std::string("create block file: ") + std::strerror(errno));
  }
  struct AlignedFree {
    void operator()(char* p) const { std::free(p); }
  };
  // The header page, then (direct) a bounce page for the data's last partial page.
  std::unique_ptr<char, AlignedFree> pages(static_cast<char*>(std::aligned_alloc(kPageSize, 2 * kPageSize)));
  if (!pages) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return MakeError(ErrorKind::kIo, "out of memory");
  }
  std::memset(pages.get(), 0, 2 * kPageSize);
  std::memcpy(pages.get(), &h, sizeof h);
  static const char kZeros[kPageSize] = {};
  const size_t whole = direct ? stored_len / kPageSize * kPageSize : stored_len;
  const size_t tail = stored_len - whole;
  iovec iov[3];
  int n = 0;
  iov[n++] = {pages.get(), kHeaderBytes};
  if (whole > 0) iov[n++] = {const_cast<char*>(stored), whole};
  if (tail > 0) {
    std::memcpy(pages.get() + kPageSize, stored + whole, tail);
    iov[n++] = {pages.get() + kPageSize, kPageSize};
  } else if (!direct && RoundUpToPage(stored_len) > stored_len) {
    iov[n++] = {const_cast<char*>(kZeros), RoundUpToPage(stored_len) - stored_len};
  }
  int err = WritevAll(fd, iov, n);
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0) {
    const std::string dir = final_path.substr(0, final_path.rfind('/'));
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) err = errno;
    if (err == 0 && ::rename(tmp.c_str(), final_path.c_str()) != 0) err = errno;
  }
  if (err != 0) {
    ::unlink(tmp.c_str());
    return MakeError(err == ENOSPC || err == EDQUOT ? ErrorKind::kNoSpace : ErrorKind::kIo,
                     std::string("write block file: ") + std::strerror(err));
  }
  Index(key, kHeaderBytes + RoundUpToPage(stored_len));
  metrics::Get("cache.disk.bytes").Set(used_bytes());
  EvictIfNeeded();
  return OkStatus();
}

void DiskStore::EvictIfNeeded(uint64_t incoming) {
  static auto& m_evicted = metrics::Get("cache.disk.evictions");
  uint64_t free_bytes = UINT64_MAX;
  struct statvfs vfs {};
  if (options_.min_free_bytes > 0 && ::statvfs(root_.c_str(), &vfs) == 0)
    free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  std::vector<BlockKey> victims;
  {
    std::lock_guard lock(mu_);
    const bool over_cap = used_ > options_.max_bytes;
    const uint64_t floor = options_.min_free_bytes + incoming;
    const bool under_floor = options_.min_free_bytes > 0 && free_bytes < floor;
    if (!over_cap && !under_floor) return;
    const uint64_t target = static_cast<uint64_t>(static_cast<double>(options_.max_bytes) * kLowWater);
    uint64_t need_free = under_floor ? floor - free_bytes : 0;
    uint64_t used = used_;
    for (auto it = lru_.begin(); it != lru_.end() && (used > target || need_free > 0); ++it) {
      victims.push_back(it->key);
      used -= it->disk_bytes;
      need_free = need_free > it->disk_bytes ? need_free - it->disk_bytes : 0;
    }
  }
  for (const auto& k : victims) Remove(k);  // unlinks outside the lock
  m_evicted.Add(victims.size());
  metrics::Get("cache.disk.bytes").Set(used_bytes());
}

DirLock DiskStore::LockDir(const std::string& dir, const std::string& what) {
  DirLock lock;
  if (!MakeDirs(dir).ok()) return lock;
  const std::string path = dir + "/lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return lock;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[256] = {};
    const ssize_t n = err == EWOULDBLOCK ? ::pread(fd, buf, sizeof buf - 1, 0) : -1;
    ::close(fd);
    if (err != EWOULDBLOCK) return lock;
    lock.holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "another process";
    while (!lock.holder.empty() && lock.holder.back() == '\n') lock.holder.pop_back();
    return lock;
  }
  lock.fd = fd;
  LabelLock(lock, what);
  return lock;
}

void DiskStore::LabelLock(const DirLock& lock, const std::string& what) {
  if (lock.fd < 0) return;
  const std::string text = "pid " + std::to_string(::getpid()) + ": " + what + "\n";
  // For messages only: a failed write leaves the lock held, with a stale or empty label.
  if (::ftruncate(lock.fd, 0) == 0) (void)::pwrite(lock.fd, text.data(), text.size(), 0);
}

bool DiskStore::HasCache(const std::string& dir) {
  struct stat st {};
  return ::stat((dir + "/" + kDiskFormatDir).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

CacheSurvey DiskStore::Survey(const std::string& dir) {
  CacheSurvey s;
  const std::string gen = dir + "/" + kDiskFormatDir;
  struct stat st {};
  ForEachBlockFile(gen + "/blocks", [&](const std::string& path, const std::string&) {
    if (::stat(path.c_str(), &st) != 0) return;  // removed meanwhile (a live mount evicts)
    ++s.blocks;
    s.block_bytes += static_cast<uint64_t>(st.st_size);
  });
  ForEachFile(gen + "/files", [&](const std::string& path, const std::string&) {
    if (::stat(path.c_str(), &st) != 0) return;
    ++s.files;
    s.file_bytes += static_cast<uint64_t>(st.st_size);
  });
  ForEachFile(gen + "/" + std::string(MetaStore::kRepoStore), [&](const std::string& path, const std::string& name) {
    if (name.rfind("tmp-", 0) == 0 || ::stat(path.c_str(), &st) != 0) return;
    ++s.records;
    s.record_bytes += static_cast<uint64_t>(st.st_size);
  });
  ForEachFile(gen + "/" + std::string(MetaStore::kVerdictStore), [&](const std::string&, const std::string& name) {
    if (name.rfind("tmp-", 0) != 0) ++s.verdicts;
  });
  return s;
}

VerifyReport DiskStore::VerifyAll(const std::string& dir, bool remove_bad) {
  VerifyReport report;
  ForEachBlockFile(dir + "/" + kDiskFormatDir + "/blocks", [&](const std::string& path, const std::string& name) {
    ++report.blocks;
    auto key = ParseBlockFileName(name);
    const bool ok = key.has_value() && ReadBlockFile(path, &*key, SIZE_MAX).ok();
    struct stat st {};
    if (ok && ::stat(path.c_str(), &st) == 0) {
      report.bytes += static_cast<uint64_t>(st.st_size);
    } else if (!ok) {
      ++report.bad;
      if (remove_bad) ::unlink(path.c_str());
    }
  });
  ForEachFile(dir + "/" + kDiskFormatDir + "/files", [&](const std::string& path, const std::string& name) {
    ++report.blocks;
    auto id = ParseWholeFileName(name);
    bool ok = false;
    struct stat st {};
    const int fd = id ? ::open(path.c_str(), O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0 && ::fstat(fd, &st) == 0) {
      ContentHasher hasher(*id, static_cast<uint64_t>(st.st_size));
      std::vector<char> buf(8 << 20);
      uint64_t off = 0;
      ok = true;
      while (ok && off < static_cast<uint64_t>(st.st_size)) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), static_cast<uint64_t>(st.st_size) - off));
        ok = PreadAll(fd, buf.data(), n, static_cast<off_t>(off));
        if (ok) hasher.Update(buf.data(), n);
        off += n;
      }
      ok = ok && hasher.Matches();
    }
    if (fd >= 0) ::close(fd);
    if (ok) {
      report.bytes += static_cast<uint64_t>(st.st_size);
    } else {
      ++report.bad;
      if (remove_bad) ::unlink(path.c_str());
    }
  });
  return report;
}

Status DiskStore::Clear(const std::string& dir) {
  // Remove every format generation we know of, plus anything orphaned by older ones.
  DIR* top = ::opendir(dir.c_str());
  if (top == nullptr) return errno == ENOENT ? OkStatus() : MakeError(ErrorKind::kIo, std::strerror(errno));
  std::vector<std::string> gens;
  while (dirent* d = ::readdir(top))
    if (d->d_name[0] == 'v' && std::strspn(d->d_name + 1, "0123456789") == std::strlen(d->d_name + 1))
      gens.emplace_back(d->d_name);
  ::closedir(top);
  for (const auto& g : gens) {
    const std::string gen = dir + "/" + g;
    ForEachBlockFile(gen + "/blocks", [](const std::string& path, const std::string&) { ::unlink(path.c_str()); });
    if (DIR* b = ::opendir((gen + "/blocks").c_str())) {
      while (dirent* d = ::readdir(b))
        if (d->d_name[0] != '.') ::rmdir((gen + "/blocks/" + d->d_name).c_str());
      ::closedir(b);
    }
    for (const std::string_view sub : {std::string_view("files"), std::string_view("tmp"), MetaStore::kRepoStore,
                                       MetaStore::kVerdictStore})
      ForEachFile(gen + "/" + std::string(sub), [](const std::string& path, const std::string&) { ::unlink(path.c_str()); });
  }
  return OkStatus();
}

}  // namespace hubfs::cache
