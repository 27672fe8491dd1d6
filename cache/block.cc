// The block buffer pool (see block.h).
#include "cache/block.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#include "common/metrics.h"

namespace hubfs::cache {
namespace {

struct Pool {
  std::mutex mu;
  size_t buffer_size = 0;  // 0: pooling off until Configure
  size_t max_free = 0;
  std::vector<char*> free;
};

Pool& P() {
  static Pool* p = new Pool();  // never destroyed: blocks may outlive static destructors
  return *p;
}

bool Pooled(const Pool& p, size_t n) { return p.buffer_size != 0 && n > p.buffer_size / 2 && n <= p.buffer_size; }

}  // namespace

void BufferPool::Configure(size_t buffer_size, size_t max_free) {
  Pool& p = P();
  std::vector<char*> drop;
  {
    std::lock_guard lock(p.mu);
    if (p.buffer_size != RoundUpToPage(buffer_size)) drop.swap(p.free);
    p.buffer_size = RoundUpToPage(buffer_size);
    p.max_free = max_free;
  }
  for (char* b : drop) std::free(b);
}

char* BufferPool::Acquire(size_t n) {
  static auto& m_reused = metrics::Get("cache.buffers.reused");
  Pool& p = P();
  size_t cap = RoundUpToPage(n == 0 ? 1 : n);
  {
    std::lock_guard lock(p.mu);
    if (Pooled(p, n)) {
      cap = p.buffer_size;
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
  void* mem = std::aligned_alloc(kPageSize, cap);
  if (mem == nullptr) throw std::bad_alloc();
  return static_cast<char*>(mem);
}

void BufferPool::Release(char* b, size_t n) {
  if (b == nullptr) return;
  Pool& p = P();
  {
    std::lock_guard lock(p.mu);
    if (Pooled(p, n) && p.free.size() < p.max_free) {
      p.free.push_back(b);
      return;
    }
  }
  std::free(b);  // outside the lock
}

}  // namespace hubfs::cache
