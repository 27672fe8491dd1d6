// The block cache: a memory tier over a disk tier, with one downloader per block.
//
// Why blocks: the kernel asks for at most 1 MiB per READ, the origin is fastest with multi-MiB
// ranges, and a cache must account, validate and evict in units. A block is `block_size` bytes of
// one file's content (4 MiB by default: large enough that one HTTP request per block costs little
// against its transfer time over loopback or a cloud NIC, small enough that a random 4 KiB read
// of a huge file does not pull tens of MiB), keyed by content identity + index (block_key.h).
//
// Algorithm. Get(key) looks in the memory tier's shard (a hash map plus an intrusive LRU list under
// one mutex per shard). On a miss it joins or creates the key's Flight: exactly one thread runs the
// load (disk tier, else the caller's fetch function) while every other reader of the key waits on
// the same Flight and gets the same bytes or the same error. Prefetch() creates a queued Flight
// that a loader thread runs later; a demand reader that finds a queued Flight claims it and runs it
// itself, so demand reads never wait behind prefetch. A completed block reaches its waiters first,
// then is queued for the disk (WorkerPool writers), so no reader waits for compression or a disk
// write. The write queue is bounded (a quarter of the memory cap, or what the memory tier leaves of
// 1.25 x the cap, a block in both counted once): a fetch that would overflow it
// waits *before* it starts (backpressure paces the origin to the disk, it never holds back bytes
// already fetched). A queued block stays findable in the queue until written, so the memory tier
// may evict it meanwhile without a later read refetching it.
//
// Entry states: absent -> loading (Flight) -> resident (memory LRU) -> evicted; a resident block
// held by a reader (BlockRef use_count > 1, not counting the write queue's reference) is skipped
// by eviction. Eviction order: blocks already returned to readers whole (they are in the kernel's
// page cache now), then the least recently used, then (only if the prefetch budget is exceeded)
// prefetched blocks nobody has read yet. Disk residency is independent.
//
// Locks: shard mutexes are leaves; no I/O, fetch, compression or free happens under them (evicted
// blocks are released after the lock is dropped). Flight::mu is taken only without a shard lock.
// write_mu_ may be held while the writer pool's own mutex is taken (SetSurge: while fetches wait
// for room, surge writers join the two regular ones), never the reverse.
#pragma once

#include <atomic>
#include <boost/intrusive/list.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cache/block.h"
#include "cache/block_key.h"
#include "cache/disk_store.h"
#include "cache/file_tracker.h"
#include "cache/worker_pool.h"
#include "common/cancel.h"
#include "common/file_util.h"
#include "common/status.h"


namespace hubfs::cache {

struct CacheOptions {
  size_t block_size = 4u << 20;
  uint64_t memory_bytes = 256ULL << 20;
  std::string disk_dir;  // empty: memory tier only
  uint64_t disk_bytes = 20ULL << 30;
  uint64_t min_free_bytes = 1ULL << 30;
  int loader_threads = 16;             // background (prefetch) fetches in parallel
  // Beyond this (or beyond what the memory tier leaves of 1.25 x memory_bytes, at most
  // memory_bytes, whichever is larger), fetches wait for the disk writers (0: memory/4).
  uint64_t max_pending_write_bytes = 0;
  std::chrono::milliseconds write_stall_limit{10000};  // ...at most this long, then the write is skipped
  // Parallel disk writes, plus `surge_disk_writers` more while a fetch waits for room in the write
  // queue. Under a cold read a 4 MiB O_DIRECT write takes 8-16 ms here (2-3 ms idle), so two
  // writers drain ~0.5-1 GB/s: a single stream's queue absorbs the lag, but 16 parallel readers,
  // whose half-read blocks leave the queue little room, spent 3-14 s of fetch time per shard held
  // back. Four writers all the time cost the sequential read instead (its disk work then competes
  // with the read for the CPUs rather than trailing it): extra writers only when they are needed.
  int disk_writers = 2;
  int surge_disk_writers = 2;
  // Whole-file verification waits until no block has been asked for during this long.
  int verify_quiet_ms = 500;
  // Blocks returned whole to readers (the kernel's page cache has them) kept in memory beyond
  // this are freed for reuse at once (0: memory_bytes / 8).
  uint64_t served_retain_bytes = 0;
  // Write-behind for small blocks (< kDirectMinBytes: configs, dataset files): each is a file
  // created on the disk tier, which costs more CPU than fetching it, so they are written once no
  // block has been asked for during this long, or once this many bytes wait.
  int small_write_quiet_ms = 200;
  uint64_t max_deferred_write_bytes = 16ULL << 20;
  std::chrono::seconds prefetch_timeout{60};
  // All block buffers together (resident, queued for the disk, being loaded, held by readers,
  // kept for reuse): a load waits (bounded) for room beyond this, evicting blocks nobody holds,
  // however many files and handles are open (0: memory_bytes + memory_bytes / 2).
  uint64_t buffer_bytes = 0;
  std::chrono::milliseconds buffer_wait_limit{1000};  // ...at most this long, then it goes on
  // Block buffers on transparent huge pages (block.h: fewer, larger disk requests).
  bool huge_pages = true;
  // Unit tests only: runs on the writer thread before each disk write (a disk that is behind).
  std::function<void()> before_disk_write;
};

// Fills buf[0, len) with the block's bytes; returns the byte count (must equal len).
using FetchFn = std::function<Result<size_t>(char* buf, size_t len, const CancelToken* cancel)>;

struct CacheStats {
  uint64_t mem_hits, disk_hits, misses, origin_bytes, mem_bytes, mem_blocks, disk_bytes, disk_blocks;
};

class BlockCache {
 public:
  explicit BlockCache(CacheOptions options);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // The block, from memory, disk, or fetch. len is the block's exact length (the last block of a
  // file is shorter). Waits at most until cancel's deadline.
  // before_wait, if given, runs (perhaps more than once) right before the Get would wait for
  // another thread: for a load in flight, or for buffer room under the budget. A caller that holds
  // other blocks (a READ across a block boundary holds the block before it) lets them go there:
  // when every buffer is held by readers waiting for room for their next block, none is ever let
  // go, and each waits out its bounded wait.
  Result<BlockRef> Get(const BlockKey& key, size_t len, const FetchFn& fetch, const CancelToken* cancel,
                       const std::function<void()>& before_wait = nullptr);
  // Starts loading in the background unless resident or in flight; never blocks on I/O. Returns
  // false when the block was skipped (already present, or the in-flight budget is spent).
  bool Prefetch(const BlockKey& key, size_t len, FetchFn fetch);
  // Whether the prefetch budget (queued, loading and loaded-but-unread, half the memory cap) has room.
  bool PrefetchRoom(size_t len) const;
  // True if the block is in memory or on disk (no I/O).
  bool Contains(const BlockKey& key) const;
  // `bytes` of this block were returned to a reader. Once all of it has been (the kernel's page
  // cache now holds it or, for a direct read, the reader has it and will not ask again; the caller
  // does not call this while other readers of the file will want the block too), it becomes the
  // first candidate for eviction, ahead of blocks still being read: 16 parallel streams do not
  // evict each other's half-read blocks. A re-read comes from the disk tier.
  void Served(const BlockKey& key, size_t bytes);
  // True if the block is in the memory tier: a Get would not wait.
  bool InMemory(const BlockKey& key) const;
  // Drops a block from both tiers.
  void Purge(const BlockKey& key);
  // Asks for whole-file verification of `id` (size bytes) once all its blocks have been cached.
  void TrackFile(const ContentId& id, uint64_t size);
  // From now on a verified file of at least kWholeMinBytes is also joined into one whole file on
  // the disk tier (disk_store.h), which replaces its blocks; for FUSE passthrough.
  void EnableWholeFiles(bool on) { whole_files_ = on; }
  // What to open to hand `id`'s whole file to the kernel (FUSE passthrough): the disk tier's file,
  // or the local copy's own open descriptor (/proc/self/fd/N, so the file that was verified, even
  // if its path has been replaced since), kept open by `hold` until the caller has opened it. ""
  // when there is none, or whole files are off.
  struct Backing {
    std::string path;  // "" if none
    std::shared_ptr<const void> hold;
  };
  Backing WholeBacking(const ContentId& id);
  // `id` (size bytes) has a verified copy outside the cache at `path` (hf_hub_cache.h): its blocks
  // are read from there, never fetched nor written to the disk tier, and WholeBacking hands it
  // out (the kernel may read it directly). False if it cannot be opened, or if what opens at `path` is not
  // the file `verified` (optional) says was hashed (replaced since). A copy that fails a read later
  // (cut short, removed from under an open descriptor's name is fine) is dropped, and the block
  // comes from the tiers or the origin as before. The copy stays open: it is read, and handed to
  // the kernel (WholeBacking), as the file that was verified whatever its path names later.
  bool AddLocalCopy(const ContentId& id, uint64_t size, const std::string& path,
                    const FileIdentity* verified = nullptr);
  void DropLocalCopy(const ContentId& id);
  // The path of `id`'s local copy, or "".
  std::string LocalCopyPath(const ContentId& id) const;
  static constexpr uint64_t kWholeMinBytes = 1 << 20;

  size_t block_size() const { return options_.block_size; }
  // Bytes of blocks returned whole to readers that stay in memory (CacheOptions).
  uint64_t served_retain_bytes() const { return options_.served_retain_bytes; }
  CacheStats Stats() const;
  DiskStore* disk() const { return disk_.get(); }
  // Waits for background disk writes (tests, clean shutdown).
  void Flush();

 private:
  struct Flight {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Result<BlockRef> result{MakeError(ErrorKind::kIo, "pending")};
    std::atomic<bool> claimed{false};
    size_t len = 0;
    FetchFn fetch;  // for queued prefetches
  };
  struct LocalCopy {
    std::string path;
    uint64_t size = 0;
    int fd = -1;
    FileIdentity identity;  // of the file open at fd
    ~LocalCopy();
  };
  struct ContentIdHash {
    size_t operator()(const ContentId& id) const { return BlockKeyHash{}(BlockKey{id, 0}); }
  };
  std::shared_ptr<const LocalCopy> LocalCopyOf(const ContentId& id) const;
  // key's bytes from its local copy, or an error (the copy is then dropped).
  Result<BlockRef> ReadLocal(const LocalCopy& copy, const BlockKey& key, size_t len);
  struct Entry : boost::intrusive::list_base_hook<> {
    BlockKey key;
    BlockRef block;
    bool unused_prefetch = false;  // loaded by prefetch, not read yet
    uint64_t served = 0;           // bytes of it returned to readers
    bool fully_served = false;     // served >= size: counted in served_bytes_
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<BlockKey, std::unique_ptr<Entry>, BlockKeyHash> resident;
    boost::intrusive::list<Entry> lru;  // front = least recently used
    std::unordered_map<BlockKey, std::shared_ptr<Flight>, BlockKeyHash> flights;
    uint64_t bytes = 0;
  };
  static constexpr size_t kShards = 16;

  Shard& ShardFor(const BlockKey& key) const { return shards_[BlockKeyHash{}(key) % nshards_]; }
  // The block from the write queue, the disk tier or the origin; *write_to_disk: it came from the
  // origin and the write queue has room for it (ScheduleWrite it once its waiters have it).
  // `prefetch`: a loader's, not a reader's: it gives up (kCancelled) rather than go beyond the
  // buffer budget, and its waiters load the block themselves.
  Result<BlockRef> Load(const BlockKey& key, size_t len, const FetchFn& fetch, const CancelToken* cancel,
                        bool prefetch, bool* write_to_disk, const std::function<void()>& before_wait = nullptr);
  // Before a load takes a buffer: waits while the block buffers are at buffer_bytes, evicting
  // blocks nobody holds to make room. A reader's load waits at most buffer_wait_limit (or until
  // cancel's deadline), then goes on regardless; a prefetch leaves the last eighth to readers and
  // waits a tenth of that, then gives up (false). The room found is this thread's until its next
  // buffer is taken (BufferPool::Precharge). before_wait: Get's, run once there is no room.
  bool WaitForBufferRoom(size_t len, const CancelToken* cancel, bool prefetch,
                         const std::function<void()>& before_wait = nullptr);
  // Drops resident blocks nobody holds, least recently used first (unread prefetched ones last),
  // until `want` bytes of buffers are freed or none is left.
  void EvictForBuffers(uint64_t want);
  // `prefetched`: loaded ahead of any reader; protected from eviction until first used (bounded by
  // the prefetch budget), so parallel streams do not evict each other's unread blocks.
  void Complete(const BlockKey& key, const std::shared_ptr<Flight>& flight, Result<BlockRef> result,
                bool prefetched = false);
  void Insert(Shard& shard, const BlockKey& key, BlockRef block, bool prefetched, std::vector<BlockRef>* freed);
  void MarkUsed(Shard& shard, const BlockKey& key);  // takes shard.mu
  BlockRef Drop(Shard& shard, Entry& e);             // removes e (shard.mu held); returns its block
  // Before a fetch: waits (bounded) while the disk write queue is full; false: do not write it.
  bool WaitForWriteRoom(uint64_t n, const CancelToken* cancel);
  // Queues a fetched block for the disk tier (after the block reached its waiters).
  void ScheduleWrite(const BlockKey& key, BlockRef block);
  void WriteQueued(const BlockKey& key, uint64_t n);  // hands a pending_writes_ entry to a writer
  void SubmitDeferred();                              // hands every deferred small block to the writers
  void FlusherMain();
  // Ends a surge of disk writers once no fetch has waited for room for a second. Requires write_mu_.
  void EndSurgeIfCaughtUp();
  void LoaderMain();
  void NotePresent(const BlockKey& key);
  // Sets or clears one of b.held_by's bits, keeping resident_and_pending_bytes_ in step.
  void SetHeld(const Block& b, uint8_t bit, bool on);
  void VerifyFile(const ContentId& id, uint64_t size);
  void NoteActivity();
  bool WaitQuiet();  // until no Get() for verify_quiet_ms (true) or shutdown (false)
  std::chrono::steady_clock::duration SinceActivity() const;  // since the last Get()

  CacheOptions options_;
  std::unique_ptr<DiskStore> disk_;
  size_t nshards_ = kShards;  // fewer when the cap holds fewer than kShards blocks
  mutable std::unique_ptr<Shard[]> shards_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  // Weak: a queued flight lives in its shard's `flights` until it completes; one a demand reader
  // claimed and completed must not stay alive here (its result would pin the block in memory).
  std::deque<std::pair<BlockKey, std::weak_ptr<Flight>>> queue_;
  std::atomic<uint64_t> queued_bytes_{0};  // prefetches queued or being loaded by a loader
  std::atomic<uint64_t> unused_prefetch_bytes_{0};  // resident, prefetched, not read yet
  std::atomic<uint64_t> served_bytes_{0};           // resident, returned whole to readers
  std::atomic<uint64_t> resident_bytes_{0};         // the memory tier, all shards
  std::atomic<uint64_t> resident_and_pending_bytes_{0};  // blocks in the memory tier and the write queue
  std::atomic<int64_t> last_activity_ns_{0};        // steady_clock of the last Get()
  bool stopping_ = false;
  std::vector<std::thread> loaders_;

  mutable std::mutex write_mu_;
  std::condition_variable write_cv_;
  uint64_t pending_write_bytes_ = 0;  // guarded by write_mu_
  int write_room_waiters_ = 0;        // fetches waiting for room; guarded by write_mu_
  std::chrono::steady_clock::time_point last_room_wait_;  // when a wait for room ended; write_mu_
  // Blocks queued for the disk, findable until written: the memory tier may evict them meanwhile
  // (a block already read is the best candidate) without a later read refetching them.
  std::unordered_map<BlockKey, BlockRef, BlockKeyHash> pending_writes_;  // guarded by write_mu_
  // Small blocks waiting for a quiet moment (write-behind), in arrival order; guarded by write_mu_.
  std::deque<std::pair<BlockKey, uint64_t>> deferred_;
  uint64_t deferred_bytes_ = 0;
  bool flusher_stop_ = false;
  bool flush_now_ = false;  // a fetch waits for room in the write queue
  std::condition_variable flush_cv_;
  std::thread flusher_;
  std::unique_ptr<WorkerPool> writers_;    // disk writes
  std::unique_ptr<WorkerPool> verifier_;   // whole-file verification, at idle priority
  std::atomic<bool> logged_disk_error_{false};
  std::atomic<bool> whole_files_{false};
  mutable std::mutex local_mu_;  // a leaf
  std::unordered_map<ContentId, std::shared_ptr<const LocalCopy>, ContentIdHash> local_;
  std::atomic<size_t> local_count_{0};  // local_.size(): most lookups need no lock
  FileTracker tracker_;
  std::string verified_dir_;  // markers of files verified in this cache directory
};

}  // namespace hubfs::cache
