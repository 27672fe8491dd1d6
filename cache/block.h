// An immutable block of file content, shared by reference between the cache tiers and the readers
// that hold it. A reader holding a BlockRef keeps the bytes alive; eviction skips held blocks.
//
// Block buffers are page-aligned (the disk tier writes them with O_DIRECT) and recycled through a
// bounded process-wide pool: a cold read streams gigabytes through the cache, and fresh buffers
// cost a page fault per 4 KiB (measured at ~28% of the daemon's CPU on a cold read) where a
// recycled one costs nothing.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>

namespace hubfs::cache {

constexpr size_t kPageSize = 4096;
inline size_t RoundUpToPage(size_t n) { return (n + kPageSize - 1) / kPageSize * kPageSize; }

class BufferPool {
 public:
  // Buffers of `buffer_size` bytes are pooled, at most `max_free` kept when unused.
  static void Configure(size_t buffer_size, size_t max_free);
  // A page-aligned buffer with room for RoundUpToPage(n) bytes.
  static char* Acquire(size_t n);
  static void Release(char* p, size_t n);
};

struct BufferDeleter {
  size_t n = 0;
  void operator()(char* p) const { BufferPool::Release(p, n); }
};

struct Block {
  explicit Block(size_t n) : data(BufferPool::Acquire(n), BufferDeleter{n}), size(n) {}
  std::unique_ptr<char[], BufferDeleter> data;
  size_t size;
  // Queued for the disk tier: the write queue holds one reference of its own.
  mutable std::atomic<bool> write_pending{false};
};
using BlockRef = std::shared_ptr<const Block>;

}  // namespace hubfs::cache
