// Disk readahead for passthrough files, ahead of a sequential reader the daemon cannot see.
//
// With FUSE passthrough (passthrough.h) the kernel reads a cached file's local copy without asking
// the daemon, and so with the disk's own readahead: a window of the device's read_ahead_kb, one or
// two requests in flight, which on a virtual disk reads a large file at half of what the same disk
// gives a deeper queue (measured 0.6-1.9 GB/s for one buffered reader, 2.0-2.1 GB/s with four
// chunks read at once ahead of it). hubfs keeps a deeper window ahead of the reader itself: a few
// worker threads read chunks ahead into the page cache, in 2 MiB folios (a read-only mapping
// marked MADV_HUGEPAGE and MADV_RANDOM, faulted in with MADV_POPULATE_READ: no copy, nothing read
// outside the chunk), so the reader's copies and later re-reads walk few folios.
//
// The daemon sees none of the reads, so it finds the reader through "sentinel" pages: the first
// page of every chunk (an eighth of the window: 32 MiB by default) is left out of what hubfs
// reads, so the page only enters the page cache when the reader (or the kernel's readahead just
// ahead of it) gets there; cachestat(2) tells the daemon when. Each sentinel reached in order
// moves the window on and doubles it (2 chunks first, up to max_ahead); a reader that never
// reaches a sentinel in order (a header read, random reads) costs no disk read beyond its own, and
// a file already in the page cache is left alone. The 2 MiB holding a sentinel is left to the
// reader's own readahead, which brings it in with the sentinel in large folios (WILLNEED would make
// 511 folios of 4 KiB there). A worker reads its chunk from the end back toward the reader and
// stops where it meets the reader's readahead (pages cached within 8 MiB below its next step):
// read forward, a chunk the reader caught up with halfway left 2-6 MiB in 4 KiB folios (the
// kernel's readahead falls back to them for what is missing in a window that starts on a cached
// folio), ~55 thousand folios per 1.2 GB warm read where a plain read leaves ~1.5 thousand; the
// first hot re-read walks every one.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace hubfs::fs {

// The policy, pure (unit tested): one sequential reader of one file.
class SentinelStream {
 public:
  struct Range {
    uint64_t offset = 0, length = 0;
    bool operator==(const Range&) const = default;
  };
  // `chunk` and `page` in bytes (chunk a multiple of page); `max_ahead` bytes kept ahead at most.
  SentinelStream(uint64_t size, uint64_t chunk, uint64_t page, uint64_t max_ahead);

  // `cached(k)`: whether the sentinel page of chunk k (k >= 1, at k * chunk) is in the page cache.
  // Returns what to ask the kernel to read now (never a sentinel page), in file order.
  std::vector<Range> Poll(const std::function<bool(uint64_t)>& cached);

  uint64_t reader_chunk() const { return seen_; }  // the last sentinel reached in order
  bool finished() const { return seen_ + 1 >= chunks_; }

 private:
  uint64_t size_, chunk_, page_, chunks_, max_chunks_;
  uint64_t seen_ = 0;    // chunk 0's reader is assumed; sentinels 1..seen_ were reached in order
  uint64_t issued_ = 0;  // chunks below this were asked for (or read by the kernel's readahead)
  uint64_t window_ = 0;  // chunks kept ahead of seen_
};

class BackingPrefetcher {
 public:
  static constexpr uint64_t kChunksAhead = 8;  // the window at its widest, in sentinel chunks

  explicit BackingPrefetcher(uint64_t max_ahead);  // 0: off
  ~BackingPrefetcher();
  BackingPrefetcher(const BackingPrefetcher&) = delete;
  BackingPrefetcher& operator=(const BackingPrefetcher&) = delete;

  // Follows readers of the backing file `fd` (owned from now on, closed by Stop or the destructor)
  // under `key`, unless prefetching is off, the file is small (under four chunks: the kernel's
  // readahead does as well) or mostly in the page cache already, or the kernel has no cachestat(2).
  void Start(uint64_t key, int fd);
  void Stop(uint64_t key);

 private:
  struct File;
  struct Task {
    uint64_t key;
    std::shared_ptr<File> file;
    uint64_t offset, length;
  };
  static constexpr int kWorkers = 4;
  void Run();   // the policy: polls sentinels, queues chunks
  void Work();  // reads queued chunks

  const uint64_t max_ahead_;
  uint64_t page_ = 4096;
  uint64_t chunk_ = 32ull << 20;  // sentinel spacing
  std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false;
  bool usable_ = true;  // cachestat(2) answered (turned off for good where it does not)
  std::unordered_map<uint64_t, std::shared_ptr<File>> files_;
  std::deque<Task> queue_;  // chunks to read, in the order asked
  std::condition_variable work_cv_;
  std::thread thread_;
  std::vector<std::thread> workers_;
};

}  // namespace hubfs::fs
