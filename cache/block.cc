// The block buffer pool (see block.h).
#include "cache/block.h"

#include <sys/mman.h>

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
  std::unordered_map<char*, size_t> mapped;  // huge-page buffers (mmap) and their length
};

Pool& P() {
  static Pool* p = new Pool();  // never destroyed: blocks may outlive static destructors
  return *p;
}

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

// Takes `b` out of the registry of mapped buffers; its mapped length, 0 for a malloc'd one.
size_t Unregister(Pool& p, char* b) {
  const auto it = p.mapped.find(b);
  if (it == p.mapped.end()) return 0;
  const size_t len = it->second;
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
  return p.mapped.count(const_cast<char*>(b)) != 0;
}

char* BufferPool::Acquire(size_t n) {
  static auto& m_reused = metrics::Get("cache.buffers.reused");
  Pool& p = P();
  size_t cap = RoundUpToPage(n == 0 ? 1 : n);
  bool huge = false;
  {
    std::lock_guard lock(p.mu);
    if (Pooled(p, n)) {
      cap = p.buffer_size;
      huge = p.huge_pages && cap % kHugePageSize == 0;
      if (!p.free.empty()) {
        char* b = p.free.back();
        p.free.pop_back();
        m_reused.Add();
        return b;
      }
    }
  }
  static auto& m_alloc = metrics::Get("cache.buffers.allocated");
  m_alloc.Add();
  if (huge) {
    if (char* b = MapHuge(cap)) {
      std::lock_guard lock(p.mu);
      p.mapped.emplace(b, cap);
      return b;
    }
  }
  void* mem = std::aligned_alloc(kPageSize, cap);
  if (mem == nullptr) throw std::bad_alloc();
  return static_cast<char*>(mem);
}

void BufferPool::Release(char* b, size_t n) {
  if (b == nullptr) return;
  Pool& p = P();
  size_t mapped_len = 0;
  {
    std::lock_guard lock(p.mu);
    if (Pooled(p, n) && p.free.size() < p.max_free) {
      p.free.push_back(b);
      return;
    }
    mapped_len = Unregister(p, b);
  }
  FreeBuffer(b, mapped_len);  // outside the lock
}

}  // namespace hubfs::cache
