// One process-wide metrics registry with dotted names ("fetch.bytes", "cache.mem.hit"). Counters
// are relaxed atomics, cheap enough for the read path. Snapshot() renders all of them for the stats
// file on the mount and for `hubfs cache stats`.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

namespace hubfs::metrics {

class Counter {
 public:
  void Add(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
  void Sub(uint64_t n = 1) { v_.fetch_sub(n, std::memory_order_relaxed); }
  void Set(uint64_t n) { v_.store(n, std::memory_order_relaxed); }
  uint64_t Get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// Returns the counter registered under `name`, creating it once. The reference stays valid for the
// life of the process; callers keep it in a static.
Counter& Get(const std::string& name);

std::map<std::string, uint64_t> Snapshot();
std::string RenderText();        // "name value\n" lines, sorted
std::string RenderPrometheus();  // hubfs_name_with_underscores value

}  // namespace hubfs::metrics
