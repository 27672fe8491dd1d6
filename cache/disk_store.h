// The disk tier: one self-validating file per block under a versioned directory.
//
// Layout: <dir>/v2/blocks/<2 hex>/<content hex>-<kind>-<index>, written to <dir>/v2/tmp/ first
// and renamed into place, so a reader (or a daemon restarted after kill -9) sees either a whole
// block file or none. Each file starts with a header (magic, format version, key, raw and stored
// lengths, flags, xxh3 of the data, xxh3 of the header); any mismatch on read is a miss: the file
// is removed, counted, and the caller refetches. A new format lives under a new vN/, leaving the old
// tree as an orphan that `hubfs cache clear` removes.
//
// Blocks that compress (JSON, text) are stored LZ4-compressed; a 64 KiB sample decides cheaply, so
// weights (which do not compress) cost no compression time. Size is bounded by max_bytes and by a
// minimum free space on the filesystem; eviction is LRU down to a low-water mark. Files are 0600
// in 0700 directories. No I/O happens under the index mutex.
//
// Whole files: once a file has been verified against its content id, its bytes can be joined into
// one plain file, <dir>/v2/files/<content hex>-<kind>, which then replaces its block files (and is
// evicted as one entry). The FUSE layer hands such a file to the kernel (passthrough), which then
// reads and maps it like a local file; Read() serves the blocks of a whole file from it.
#pragma once

#include <boost/intrusive/list.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/block.h"
#include "cache/block_key.h"
#include "common/status.h"

namespace hubfs::cache {

constexpr uint32_t kDiskFormatVersion = 2;
constexpr const char* kDiskFormatDir = "v2";
// v2 block files: a 4096-byte header page, then the stored bytes padded to whole pages, so that
// blocks are written with O_DIRECT from their (page-aligned) buffers, without a copy into the page
// cache. (v1 had an 88-byte header and buffered writes; its tree is an orphan `cache clear` removes.)
constexpr size_t kHeaderBytes = 4096;
// Blocks whose stored data is at least this large are written and read with O_DIRECT.
constexpr size_t kDirectMinBytes = 256 * 1024;

struct DiskOptions {
  std::string dir;
  uint64_t max_bytes = 20ULL << 30;
  uint64_t min_free_bytes = 1ULL << 30;
  // Block keys are (content, index): the index only means something for one block size, so a
  // cache directory is bound to the block size that first used it. 0 = do not check (tools).
  uint64_t block_size = 0;
};

// Key index of a whole file's entry: content plus this index.
constexpr uint64_t kWholeIndex = UINT64_MAX;

class DiskStore;

// Writes a whole file to a temp path; Commit() moves it into place. Dropped uncommitted, the temp
// file is removed.
class WholeFileWriter {
 public:
  ~WholeFileWriter();
  WholeFileWriter(const WholeFileWriter&) = delete;
  WholeFileWriter& operator=(const WholeFileWriter&) = delete;
  // Appends the next bytes; false once any write failed (the writer is then useless).
  bool Append(const char* data, size_t len);
  // Makes the bytes durable (fdatasync), renames the file into place and drops the content's
  // `nblocks` block files. The caller has checked the bytes against the content id.
  Status Commit(uint64_t nblocks);

 private:
  friend class DiskStore;
  WholeFileWriter(DiskStore* store, ContentId id, uint64_t size, std::string tmp, int fd)
      : store_(store), id_(id), size_(size), tmp_(std::move(tmp)), fd_(fd) {}
  DiskStore* store_;
  ContentId id_;
  uint64_t size_;
  uint64_t written_ = 0;
  std::string tmp_;
  int fd_;
  bool failed_ = false;
};

struct VerifyReport {
  uint64_t blocks = 0;
  uint64_t bad = 0;
  uint64_t bytes = 0;
};

// What a cache directory holds, from file sizes alone (nothing read).
struct CacheSurvey {
  uint64_t blocks = 0, block_bytes = 0;
  uint64_t files = 0, file_bytes = 0;  // whole files (verified, for passthrough)
  uint64_t records = 0, record_bytes = 0;  // revision and tree records (meta_store.h)
  uint64_t verdicts = 0;                    // verdicts on huggingface_hub's copies (hf_hub_cache.h)
};

// A cache directory's lock: one process at a time fills a cache directory. Two daemons on one
// directory would each take the other's blocks in flight for leftovers (removed at start), evict
// by their own count only (the cap overrun), and never see the blocks the other wrote. An
// flock(2) on <dir>/lock, let go when its holder exits however it ends (kill -9 included).
struct DirLock {
  int fd = -1;         // >= 0: held, for as long as this descriptor stays open
  std::string holder;  // fd < 0 and set: what the process holding it wrote ("pid 42: mount /hf")
  // fd < 0 and holder empty: no lock could be made (the directory cannot be created or written,
  // or its filesystem has no flock); the caller goes on without one.
};

class DiskStore {
 public:
  // Takes `dir`'s lock (creating the directory, 0700, if need be) and writes `what` (with this
  // process's pid) into it for the message another process shows.
  static DirLock LockDir(const std::string& dir, const std::string& what);
  // Writes `what` with this process's pid into a held lock again (a daemon, once it has forked).
  static void LabelLock(const DirLock& lock, const std::string& what);

  // Creates the directory tree (0700) and indexes existing blocks; removes leftover temp files.
  static Result<std::unique_ptr<DiskStore>> Open(const DiskOptions& options);
  ~DiskStore();

  // kNotFound when absent; kCorrupt when a file failed validation (it is removed).
  Result<BlockRef> Read(const BlockKey& key, size_t expected_len);
  // Writes a block; kNoSpace when the filesystem is full or the floor would be crossed.
  Status Write(const BlockKey& key, const char* data, size_t len);
  // True for a block file, or a whole file that holds the block.
  bool Contains(const BlockKey& key) const;
  void Remove(const BlockKey& key);
  // Starts writing `id`'s whole file (size bytes); null when the disk has no room for it.
  std::unique_ptr<WholeFileWriter> BeginWhole(const ContentId& id, uint64_t size);
  // The path of `id`'s whole file (and marks it used), or "" when there is none.
  std::string WholePath(const ContentId& id);
  uint64_t used_bytes() const;
  uint64_t block_count() const;

  // Offline tools over a cache directory (the daemon need not run).
  // True if `dir` holds this format's tree (a mount has used it): one stat.
  static bool HasCache(const std::string& dir);
  static CacheSurvey Survey(const std::string& dir);
  static VerifyReport VerifyAll(const std::string& dir, bool remove_bad);
  static Status Clear(const std::string& dir);

 private:
  struct Entry : boost::intrusive::list_base_hook<> {
    BlockKey key;
    uint64_t disk_bytes = 0;
  };
  using Lru = boost::intrusive::list<Entry>;

  friend class WholeFileWriter;
  explicit DiskStore(DiskOptions options);
  std::string PathFor(const BlockKey& key) const;
  Result<BlockRef> ReadFromWhole(const BlockKey& key, size_t expected_len);
  // Whether `bytes` more fit above the free-space floor (evicting to make room).
  bool RoomFor(uint64_t bytes);
  void Index(const BlockKey& key, uint64_t bytes);
  // Evicts LRU blocks down to the low-water mark, and until `incoming` more bytes fit above the floor.
  void EvictIfNeeded(uint64_t incoming = 0);

  DiskOptions options_;
  std::string root_;  // <dir>/v2
  // Lock order: mu_ is a leaf lock; nothing else is taken while holding it.
  mutable std::mutex mu_;
  std::unordered_map<BlockKey, std::unique_ptr<Entry>, BlockKeyHash> index_;
  Lru lru_;  // front = least recently used
  uint64_t used_ = 0;
};

// Parses a block file name "<hex>-<kind>-<index>"; exposed for tests and the offline tools.
std::optional<BlockKey> ParseBlockFileName(const std::string& name);

}  // namespace hubfs::cache
