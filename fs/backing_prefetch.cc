// Disk readahead for passthrough files (see backing_prefetch.h).
#include "fs/backing_prefetch.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <string>

#include "common/log.h"
#include "common/metrics.h"

namespace hubfs::fs {
namespace {

// cachestat(2), Linux >= 6.5 (every kernel with FUSE passthrough has it); Debian 12's headers
// predate it.
constexpr long kSysCachestat = 451;
struct CachestatRange {
  uint64_t off, len;
};
struct Cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

// Pages of [off, off + len) in the page cache (len 0: to the end), or -1 with errno.
int64_t CachedPages(int fd, uint64_t off, uint64_t len) {
  CachestatRange r{off, len};
  Cachestat cs{};
  if (::syscall(kSysCachestat, fd, &r, &cs, 0) != 0) return -1;
  return static_cast<int64_t>(cs.nr_cache);
}

constexpr uint64_t kWillneedStep = 2 << 20;
constexpr uint64_t kHugeStep = 2 << 20;  // one PMD-sized folio
constexpr uint64_t kOvertakenWindow = 8 << 20;  // how far below a step to look for the reader's readahead
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif

// Reads [begin, end) of fd into the page cache in 2 MiB folios, no byte outside it: a read-only
// mapping marked MADV_HUGEPAGE and MADV_RANDOM, faulted in by MADV_POPULATE_READ one 2 MiB step
// at a time. A fault in such a mapping reads exactly the aligned 2 MiB folio around it (the page
// cache's huge-page path, which ignores the file's readahead window), where POSIX_FADV_WILLNEED
// makes 4 KiB folios, ~500 times as many for the reader's copies (and the hot re-reads) to walk.
// Steps go from `end` down, toward the reader, and stop where pages are cached in the step or
// within kOvertakenWindow below it (not below `floor`): the reader's readahead has come that far.
// Why backward: the reader's readahead fills what it finds missing in its window in 4 KiB folios
// whenever the window starts on a folio already cached (the kernel gives up on large folios
// there), so a chunk read forward and caught up with by the reader halfway (4 workers read 4
// chunks at a quarter of the disk's speed each; the reader reads at all of it) left 2-6 MiB of
// 4 KiB folios behind the worker's front. Read backward, what is missing lies below everything
// cached, and the reader's readahead reads it in large folios up to the first cached one.
// `begin` and `end` must be 2 MiB aligned. Returns where it stopped: [result, end) is read;
// *overtaken tells the reader's readahead from a refusal (no huge pages, no MADV_POPULATE_READ, a
// read error) or `stopped`.
uint64_t PopulateHuge(int fd, uint64_t begin, uint64_t end, uint64_t floor, const std::atomic<bool>& stopped,
                      metrics::Counter& bytes, bool* overtaken) {
  *overtaken = false;
  if (begin >= end || begin % kHugeStep != 0 || end % kHugeStep != 0) return end;
  const size_t len = static_cast<size_t>(end - begin);
  void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(begin));
  if (m == MAP_FAILED) return end;
  uint64_t low = end;  // [low, end) is read
  if (::madvise(m, len, MADV_HUGEPAGE) == 0 && ::madvise(m, len, MADV_RANDOM) == 0) {
    auto* base = static_cast<char*>(m);
    while (low > begin && !stopped) {
      const uint64_t step = low - kHugeStep;
      const uint64_t from = step > floor + kOvertakenWindow ? step - kOvertakenWindow : floor;
      if (CachedPages(fd, from, low - from) != 0) {
        *overtaken = true;
        break;
      }
      if (::madvise(base + (step - begin), kHugeStep, MADV_POPULATE_READ) != 0) break;
      low = step;
      bytes.Add(kHugeStep);
    }
  }
  ::munmap(m, len);
  return low;
}

}  // namespace

SentinelStream::SentinelStream(uint64_t size, uint64_t chunk, uint64_t page, uint64_t max_ahead)
    : size_(size),
      chunk_(chunk),
      page_(page),
      chunks_((size + chunk - 1) / chunk),
      max_chunks_(std::max<uint64_t>(1, max_ahead / chunk)),
      // chunk 0 and the first sentinel's chunk are the kernel's readahead: a reader that stops
      // within them (a header, a probe) costs nothing more
      issued_(std::min<uint64_t>(2, chunks_)) {}

std::vector<SentinelStream::Range> SentinelStream::Poll(const std::function<bool(uint64_t)>& cached) {
  bool moved = false;
  while (seen_ + 1 < chunks_ && cached(seen_ + 1)) {
    ++seen_;
    window_ = std::min(max_chunks_, window_ == 0 ? 2 : window_ * 2);
    moved = true;
  }
  std::vector<Range> out;
  if (!moved) return out;
  issued_ = std::max(issued_, seen_ + 1);
  const uint64_t target = std::min(chunks_, seen_ + 1 + window_);
  for (uint64_t k = issued_; k < target; ++k) {
    const uint64_t begin = k * chunk_ + page_;  // the sentinel stays out
    const uint64_t end = std::min(size_, (k + 1) * chunk_);
    if (begin < end) out.push_back({begin, end - begin});
  }
  issued_ = std::max(issued_, target);
  return out;
}

struct BackingPrefetcher::File {
  File(int f, SentinelStream s) : fd(f), stream(s) {}
  ~File() { ::close(fd); }
  const int fd;
  SentinelStream stream;  // the prefetch thread's alone
  std::chrono::steady_clock::time_point last_move = std::chrono::steady_clock::now();
  std::atomic<bool> stopped{false};
};

BackingPrefetcher::BackingPrefetcher(uint64_t max_ahead) : max_ahead_(max_ahead) {
  const long p = ::sysconf(_SC_PAGESIZE);
  if (p > 0) page_ = static_cast<uint64_t>(p);
  chunk_ = std::max<uint64_t>(1 << 20, max_ahead / kChunksAhead / page_ * page_);
}

BackingPrefetcher::~BackingPrefetcher() {
  {
    std::lock_guard lock(mu_);
    quit_ = true;
    for (auto& [k, f] : files_) f->stopped = true;
  }
  cv_.notify_all();
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& w : workers_) w.join();
}

void BackingPrefetcher::Start(uint64_t key, int fd) {
  static auto& m_files = metrics::Get("passthrough.prefetch.files");
  struct stat st {};
  bool follow = max_ahead_ > 0 && ::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) >= 4 * chunk_;
  if (follow) {
    std::lock_guard lock(mu_);
    follow = usable_ && !quit_;
  }
  if (follow) {
    const int64_t cached = CachedPages(fd, 0, 0);
    if (cached < 0) {
      const int err = errno;
      std::lock_guard lock(mu_);
      if (usable_) LOG_INFO("no cachestat(2) (%s): passthrough files get the kernel's readahead only", std::strerror(err));
      usable_ = false;
      follow = false;
    } else if (static_cast<uint64_t>(cached) * page_ >= static_cast<uint64_t>(st.st_size) / 10 * 9) {
      follow = false;  // already in the page cache
    }
  }
  if (!follow) {
    ::close(fd);
    return;
  }
  auto f = std::make_shared<File>(fd, SentinelStream(static_cast<uint64_t>(st.st_size), chunk_, page_, max_ahead_));
  {
    std::lock_guard lock(mu_);
    auto& slot = files_[key];
    if (slot) slot->stopped = true;
    slot = std::move(f);
    if (!thread_.joinable()) {
      thread_ = std::thread([this] { Run(); });
      for (int i = 0; i < kWorkers; ++i) workers_.emplace_back([this] { Work(); });
    }
  }
  m_files.Add();
  cv_.notify_all();
}

void BackingPrefetcher::Stop(uint64_t key) {
  std::shared_ptr<File> gone;  // both released after the lock: the last one closes the descriptor
  std::deque<Task> dropped;
  std::lock_guard lock(mu_);
  auto it = files_.find(key);
  if (it == files_.end()) return;
  it->second->stopped = true;
  gone = std::move(it->second);
  files_.erase(it);
  const auto keep_end = std::stable_partition(queue_.begin(), queue_.end(), [key](const Task& t) { return t.key != key; });
  std::move(keep_end, queue_.end(), std::back_inserter(dropped));
  queue_.erase(keep_end, queue_.end());
}

void BackingPrefetcher::Run() {
  using namespace std::chrono;
  using namespace std::chrono_literals;
  ::pthread_setname_np(::pthread_self(), "hubfs-prefetch");
  std::vector<std::pair<uint64_t, std::shared_ptr<File>>> snap;
  std::unique_lock lock(mu_);
  while (!quit_) {
    snap.clear();
    for (auto& [k, f] : files_)
      if (!f->stream.finished()) snap.emplace_back(k, f);
    if (snap.empty()) {
      cv_.wait(lock);  // until a file is started, or the end
      continue;
    }
    lock.unlock();
    // Poll often while a reader moves (a 32 MiB chunk, the default, is ~20 ms of a fast disk), rarely once idle.
    auto wait = 500ms;
    const auto now = steady_clock::now();
    std::vector<Task> tasks;
    for (auto& entry : snap) {
      const uint64_t key = entry.first;
      File* f = entry.second.get();  // not a structured binding: clang cannot capture those
      if (f->stopped) continue;
      const auto ranges = f->stream.Poll([&](uint64_t k) { return CachedPages(f->fd, k * chunk_, page_) > 0; });
      if (!ranges.empty()) f->last_move = now;
      for (const auto& r : ranges) tasks.push_back({key, entry.second, r.offset, r.length});
      const auto idle = steady_clock::now() - f->last_move;
      wait = std::min<milliseconds>(wait, idle < 1s ? 2ms : idle < 30s ? 50ms : 500ms);
    }
    snap.clear();  // descriptors of stopped files close here, outside the lock
    lock.lock();
    if (!tasks.empty()) {
      for (auto& t : tasks)
        if (!t.file->stopped) queue_.push_back(std::move(t));
      tasks.clear();
      work_cv_.notify_all();
    }
    if (!quit_) cv_.wait_for(lock, wait);
  }
}

// Reads queued chunks into the page cache, kWorkers chunks at once (a deep disk queue). Each
// chunk's 2 MiB-aligned body in 2 MiB folios, from its end back toward the reader (PopulateHuge:
// one folio per 2 MiB, where the kernel's readahead of a fresh descriptor ramps up from 4 KiB
// folios and POSIX_FADV_WILLNEED makes only 4 KiB ones), until it meets the reader's readahead;
// the 2 MiB after a chunk's sentinel page is the reader's readahead's (backing_prefetch.h); a
// chunk's unaligned end (the file's) and all of the body where the kernel refuses huge pages, by
// WILLNEED, which reads exactly what it is given, at most the file's readahead window per call:
// 2 MiB steps. Neither reads a byte outside the chunk, so no sentinel is ever read by the prefetch.
void BackingPrefetcher::Work() {
  ::pthread_setname_np(::pthread_self(), "hubfs-prefetch");
  static auto& m_bytes = metrics::Get("passthrough.prefetch.bytes");
  std::unique_lock lock(mu_);
  while (!quit_) {
    if (queue_.empty()) {
      work_cv_.wait(lock);
      continue;
    }
    Task t = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    auto willneed = [&](uint64_t from, uint64_t to) {
      for (uint64_t o = from; o < to && !t.file->stopped; o += kWillneedStep) {
        const uint64_t n = std::min<uint64_t>(kWillneedStep, to - o);
        ::posix_fadvise(t.file->fd, static_cast<off_t>(o), static_cast<off_t>(n), POSIX_FADV_WILLNEED);
        m_bytes.Add(n);
      }
    };
    const uint64_t end = t.offset + t.length;
    const uint64_t lo = (t.offset + kHugeStep - 1) / kHugeStep * kHugeStep, hi = end / kHugeStep * kHugeStep;
    if (lo < hi) {
      // The unaligned head (after a sentinel page) is left to the reader's readahead, which
      // brings it in with the sentinel in large folios, where WILLNEED makes 4 KiB ones.
      bool overtaken = false;
      willneed(hi, end);
      const uint64_t low = t.file->stopped ? hi
                                           : PopulateHuge(t.file->fd, lo, hi, t.offset / chunk_ * chunk_,
                                                          t.file->stopped, m_bytes, &overtaken);
      if (!overtaken) willneed(lo, low);
    } else {
      willneed(t.offset, end);
    }
    t.file.reset();  // outside the lock: may close the file's descriptor
    lock.lock();
  }
}

}  // namespace hubfs::fs
