// An immutable block of file content, shared by reference between the cache tiers and the readers
// that hold it. A reader holding a BlockRef keeps the bytes alive; eviction skips held blocks.
//
// Block buffers are page-aligned (the disk tier writes them with O_DIRECT) and recycled through a
// bounded process-wide pool: a cold read streams gigabytes through the cache, and fresh buffers
// cost a page fault per 4 KiB (measured at ~28% of the daemon's CPU on a cold read) where a
// recycled one costs nothing.
//
// Pooled buffers whose size is a multiple of 2 MiB are backed by transparent huge pages (each on
// its own mapping, MADV_HUGEPAGE) unless configured off. The reason is the disk tier: an O_DIRECT
// read or write becomes one device request per at most max_segments (254 on this virtio disk)
// physically discontiguous pieces, so a 4 MiB block in 4 KiB pages reaches the disk as several
// requests. Measured on a warm read of a 1.24 GB shard (every block from the disk tier): ~2300
// device requests averaging ~520 KiB and 1.2-1.5 GB/s in 4 KiB pages; 686 averaging 1.8 MiB
// (the 4 KiB block headers included) and 1.9-2.3 GB/s in huge pages, against 1.3-2.0 GB/s for
// reading a local copy of the file. A fresh buffer also takes 2 page faults instead of 1024.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace hubfs::cache {

constexpr size_t kPageSize = 4096;
constexpr size_t kHugePageSize = 2u << 20;
inline size_t RoundUpToPage(size_t n) { return (n + kPageSize - 1) / kPageSize * kPageSize; }

class BufferPool {
 public:
  // Buffers of `buffer_size` bytes are pooled, at most `max_free` kept when unused; with
  // `huge_pages`, fresh ones are mapped with transparent huge pages when buffer_size allows.
  static void Configure(size_t buffer_size, size_t max_free, bool huge_pages);
  // Whether `p` (from Acquire, not yet released) is on a huge-page mapping of its own.
  static bool IsHuge(const char* p);
  // A page-aligned buffer with room for RoundUpToPage(n) bytes; *charged (if given): the bytes it
  // counts for in LiveBytes() until released (the pooled size, or RoundUpToPage(n)).
  static char* Acquire(size_t n, size_t* charged = nullptr);
  // `charged` as Acquire said (0: worked out from n and the pool's size now).
  static void Release(char* p, size_t n, size_t charged = 0);
  // Bytes of the buffers handed out by Acquire and not released yet, every size (the pooled size
  // for a pooled buffer, RoundUpToPage(n) for another), plus those Precharge counted ahead.
  static uint64_t LiveBytes();
  // Buffers kept for reuse only while they and LiveBytes() stay within `bytes` (0: no limit):
  // under memory pressure a released buffer is freed, not kept.
  static void SetFootprintLimit(uint64_t bytes);
  // Admission to a memory budget, without a window between the check and the allocation: counts
  // the buffer this thread's next Acquire(n) will take in LiveBytes() now, if that stays within
  // `limit` (false: over it, nothing counted). That Acquire then counts nothing more.
  static bool Precharge(size_t n, uint64_t limit);
  // Takes back this thread's charge if no Acquire used it (a load that ended before its buffer).
  static void DropPrecharge();
  // Waits until a buffer is released, at most `max`.
  static void AwaitRelease(std::chrono::milliseconds max);
  // A page-aligned buffer for n bytes outside any budget: not counted in LiveBytes(), so it never
  // waits for room nor takes any, and never pooled. For a reader's copy of part of a block it lets
  // go (fs's Read), which it must be able to take while every budgeted buffer is held; such
  // copies are bounded by the READs in progress (FUSE worker threads x 1 MiB), not by the budget.
  static char* AcquireOutside(size_t n);
  static void ReleaseOutside(char* p, size_t n);
  // Bytes of buffers from AcquireOutside not released yet.
  static uint64_t OutsideBytes();
};

struct BufferDeleter {
  size_t n = 0;
  size_t charged = 0;
  bool outside = false;  // from AcquireOutside
  void operator()(char* p) const {
    if (outside) BufferPool::ReleaseOutside(p, n);
    else BufferPool::Release(p, n, charged);
  }
};

struct Block {
  explicit Block(size_t n) : data(nullptr, BufferDeleter{n}), size(n) {
    size_t charged = 0;
    char* p = BufferPool::Acquire(n, &charged);
    data = std::unique_ptr<char[], BufferDeleter>(p, BufferDeleter{n, charged});
  }
  // A block whose buffer is outside the budget (BufferPool::AcquireOutside).
  struct OutsideBudget {};
  Block(size_t n, OutsideBudget)
      : data(BufferPool::AcquireOutside(n), BufferDeleter{n, 0, /*outside=*/true}), size(n) {}
  std::unique_ptr<char[], BufferDeleter> data;
  size_t size;
  // Where the cache holds it (BlockCache's accounting): kWritePending, queued for the disk tier
  // (the write queue holds one reference of its own); kResident, in the memory tier. Each bit is
  // set and cleared atomically, so the one transition that makes a block both or stops it being
  // both is seen by exactly one thread.
  static constexpr uint8_t kWritePending = 1, kResident = 2;
  mutable std::atomic<uint8_t> held_by{0};
  bool write_pending() const { return (held_by.load() & kWritePending) != 0; }
};
using BlockRef = std::shared_ptr<const Block>;

}  // namespace hubfs::cache
