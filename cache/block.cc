// The block buffer pool (see block.h).
#include "cache/block.h"

#include <sys/mman.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "common/metrics.h"

namespace hubfs::cache {
namespace {

struct Pool {
  std::mutex mu;
  size_t buffer_size = 0;  // 0: pooling off until Configure
  size_t max_free = 0;
  bool huge_pages = false;
  std::vector<char*> free;
  struct Mapping {
    size_t len;
    bool huge;  // marked MADV_HUGEPAGE (MapHuge)
  };
  std::unordered_map<char*, Mapping> mapped;  // buffers on mappings of their own (mmap)
  uint64_t footprint_limit = 0;  // 0: none
  std::atomic<uint64_t> live{0};  // bytes handed out (Acquire) and not released, or precharged
  uint64_t precharged = 0;        // of which counted by Precharge for an Acquire still to come
  std::atomic<uint64_t> outside{0};  // bytes handed out by AcquireOutside and not released
  int release_waiters = 0;        // threads in AwaitRelease
  std::condition_variable released;
};

// Gauges in the stats file: the bytes of block buffers handed out now, and the most that block
// buffers (handed out and kept for reuse) have taken at once. Requires p.mu.
void NoteFootprint(const Pool& p) {
  static auto& m_live = metrics::Get("cache.buffers.live_bytes");
  static auto& m_peak = metrics::Get("cache.buffers.peak_bytes");
  static auto& m_outside = metrics::Get("cache.buffers.outside_budget_bytes");
  const uint64_t live = p.live.load(std::memory_order_relaxed) - p.precharged;  // buffers that exist
  const uint64_t outside = p.outside.load(std::memory_order_relaxed);
  m_live.Set(live);
  m_outside.Set(outside);
  const uint64_t all = live + outside + static_cast<uint64_t>(p.free.size()) * p.buffer_size;
  if (all > m_peak.Get()) m_peak.Set(all);
}

Pool& P() {
  static Pool* p = new Pool();  // never destroyed: blocks may outlive static destructors
  return *p;
}

// A buffer outside the pool at least this large is mapped on its own (see Acquire).
constexpr size_t kMapMinBytes = 256 << 10;

bool Pooled(const Pool& p, size_t n) { return p.buffer_size != 0 && n > p.buffer_size / 2 && n <= p.buffer_size; }

// A buffer of `len` bytes (a multiple of kHugePageSize) on its own mapping, aligned to
// kHugePageSize and marked MADV_HUGEPAGE; null if the mapping fails.
char* MapHuge(size_t len) {
  const size_t over = len + kHugePageSize;
  void* m = ::mmap(nullptr, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  const auto base = reinterpret_cast<uintptr_t>(m);
  const uintptr_t start = (base + kHugePageSize - 1) / kHugePageSize * kHugePageSize;
  if (start > base) ::munmap(m, start - base);
  if (base + over > start + len) ::munmap(reinterpret_cast<void*>(start + len), base + over - (start + len));
  // Where transparent huge pages are off (or unknown to the kernel) this fails: 4 KiB pages.
  ::madvise(reinterpret_cast<void*>(start), len, MADV_HUGEPAGE);
  return reinterpret_cast<char*>(start);
}

// Frees a buffer taken out of the pool (its lock not held): `mapped_len` from Unregister.
void FreeBuffer(char* b, size_t mapped_len) {
  if (mapped_len != 0) ::munmap(b, mapped_len);
  else std::free(b);
}

// A buffer of `cap` bytes (a multiple of the page size) that is not pooled, already counted in
// `counted` (Pool::live or Pool::outside), which is given back if it cannot be had (bad_alloc).
// Large ones (a file's last block, a reader's copy of a block's part) get a mapping of their own,
// given back to the system when released: from malloc, freed ones of this size stay in its
// per-thread arenas (40-50 MiB more peak RSS with 64 readers).
char* AllocPlain(Pool& p, size_t cap, std::atomic<uint64_t>& counted) {
  if (cap >= kMapMinBytes) {
    void* m = ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED) {
      std::lock_guard lock(p.mu);
      p.mapped.emplace(static_cast<char*>(m), Pool::Mapping{cap, false});
      return static_cast<char*>(m);
    }
  }
  void* mem = std::aligned_alloc(kPageSize, cap);
  if (mem == nullptr) {
    std::lock_guard lock(p.mu);
    counted -= cap;
    NoteFootprint(p);
    throw std::bad_alloc();
  }
  return static_cast<char*>(mem);
}

// Takes `b` out of the registry of mapped buffers; its mapped length, 0 for a malloc'd one.
size_t Unregister(Pool& p, char* b) {
  const auto it = p.mapped.find(b);
  if (it == p.mapped.end()) return 0;
  const size_t len = it->second.len;
  p.mapped.erase(it);
  return len;
}

}  // namespace

void BufferPool::Configure(size_t buffer_size, size_t max_free, bool huge_pages) {
  Pool& p = P();
  std::vector<std::pair<char*, size_t>> drop;
  {
    std::lock_guard lock(p.mu);
    if (p.buffer_size != RoundUpToPage(buffer_size) || p.huge_pages != huge_pages) {
      for (char* b : p.free) drop.emplace_back(b, Unregister(p, b));
      p.free.clear();
    }
    p.buffer_size = RoundUpToPage(buffer_size);
    p.max_free = max_free;
    p.huge_pages = huge_pages;
  }
  for (const auto& [b, mapped_len] : drop) FreeBuffer(b, mapped_len);
}

bool BufferPool::IsHuge(const char* b) {
  Pool& p = P();
  std::lock_guard lock(p.mu);
  const auto it = p.mapped.find(const_cast<char*>(b));
  return it != p.mapped.end() && it->second.huge;
}

namespace {
thread_local size_t t_precharged = 0;  // bytes Precharge counted for this thread's next Acquire
// What a buffer for n bytes counts in LiveBytes(). Requires p.mu.
size_t ChargeFor(const Pool& p, size_t n) { return Pooled(p, n) ? p.buffer_size : RoundUpToPage(n == 0 ? 1 : n); }
}  // namespace

bool BufferPool::Precharge(size_t n, uint64_t limit) {
  Pool& p = P();
  std::lock_guard lock(p.mu);
  if (t_precharged != 0) {  // an earlier charge no Acquire used: replaced
    p.live -= t_precharged;
    p.precharged -= t_precharged;
    t_precharged = 0;
  }
  const size_t cap = ChargeFor(p, n);
  if (p.live.load(std::memory_order_relaxed) + cap > limit) {
    NoteFootprint(p);
    return false;
  }
  p.live += cap;
  p.precharged += cap;
  t_precharged = cap;
  NoteFootprint(p);
  return true;
}

void BufferPool::DropPrecharge() {
  if (t_precharged == 0) return;
  Pool& p = P();
  std::lock_guard lock(p.mu);
  p.live -= t_precharged;
  p.precharged -= t_precharged;
  t_precharged = 0;
  NoteFootprint(p);
}

void BufferPool::AwaitRelease(std::chrono::milliseconds max) {
  Pool& p = P();
  std::unique_lock lock(p.mu);
  ++p.release_waiters;
  p.released.wait_for(lock, max);
  --p.release_waiters;
}

uint64_t BufferPool::LiveBytes() { return P().live.load(std::memory_order_relaxed); }

void BufferPool::SetFootprintLimit(uint64_t bytes) {
  Pool& p = P();
  std::lock_guard lock(p.mu);
  p.footprint_limit = bytes;
}

char* BufferPool::Acquire(size_t n, size_t* charged) {
  static auto& m_reused = metrics::Get("cache.buffers.reused");
  static auto& m_alloc = metrics::Get("cache.buffers.allocated");
  Pool& p = P();
  size_t cap = 0;
  bool huge = false;
  {
    std::lock_guard lock(p.mu);
    cap = ChargeFor(p, n);
    // Counted already by this thread's Precharge: nothing more to count.
    if (t_precharged == cap) {
      p.precharged -= cap;
      t_precharged = 0;
    } else {
      p.live += cap;
    }
    if (charged != nullptr) *charged = cap;
    if (Pooled(p, n)) {
      huge = p.huge_pages && cap % kHugePageSize == 0;
      if (!p.free.empty()) {
        char* b = p.free.back();
        p.free.pop_back();
        NoteFootprint(p);
        m_reused.Add();
        return b;
      }
    }
    NoteFootprint(p);
  }
  m_alloc.Add();
  if (huge) {
    if (char* b = MapHuge(cap)) {
      std::lock_guard lock(p.mu);
      p.mapped.emplace(b, Pool::Mapping{cap, true});
      return b;
    }
  }
  return AllocPlain(p, cap, p.live);
}

void BufferPool::Release(char* b, size_t n, size_t charged) {
  if (b == nullptr) return;
  Pool& p = P();
  size_t mapped_len = 0;
  {
    std::lock_guard lock(p.mu);
    if (charged == 0) charged = ChargeFor(p, n);
    p.live -= charged;
    if (p.release_waiters > 0) p.released.notify_all();
    // Only a buffer of the pool's size now is kept (the size changes with a new cache).
    const bool pooled = Pooled(p, n) && charged == p.buffer_size;
    const uint64_t kept = static_cast<uint64_t>(p.free.size() + 1) * p.buffer_size;
    if (pooled && p.free.size() < p.max_free && (p.footprint_limit == 0 || p.live + kept <= p.footprint_limit)) {
      p.free.push_back(b);
      NoteFootprint(p);
      return;
    }
    NoteFootprint(p);
    mapped_len = Unregister(p, b);
  }
  FreeBuffer(b, mapped_len);  // outside the lock
}

char* BufferPool::AcquireOutside(size_t n) {
  Pool& p = P();
  const size_t cap = RoundUpToPage(n == 0 ? 1 : n);
  {
    std::lock_guard lock(p.mu);
    p.outside += cap;
    NoteFootprint(p);
  }
  return AllocPlain(p, cap, p.outside);
}

void BufferPool::ReleaseOutside(char* b, size_t n) {
  if (b == nullptr) return;
  Pool& p = P();
  size_t mapped_len = 0;
  {
    std::lock_guard lock(p.mu);
    p.outside -= RoundUpToPage(n == 0 ? 1 : n);
    NoteFootprint(p);
    mapped_len = Unregister(p, b);
  }
  FreeBuffer(b, mapped_len);  // outside the lock
}

uint64_t BufferPool::OutsideBytes() { return P().outside.load(std::memory_order_relaxed); }

}  // namespace hubfs::cache
