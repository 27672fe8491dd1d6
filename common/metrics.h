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

// A latency histogram with power-of-two microsecond buckets (1 us .. ~33 s), lock-free.
class Histogram {
 public:
  static constexpr int kBuckets = 26;
  void Observe(uint64_t us) {
    int b = 0;
    while (b < kBuckets - 1 && (1ULL << b) < us) ++b;
    buckets_[b].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(us, std::memory_order_relaxed);
  }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  uint64_t sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t bucket(int i) const { return buckets_[i].load(std::memory_order_relaxed); }
  // Upper bound of the bucket holding quantile q (0..1); 0 when empty.
  uint64_t Quantile(double q) const;

 private:
  std::atomic<uint64_t> buckets_[kBuckets]{};
  std::atomic<uint64_t> count_{0}, sum_{0};
};

// Scoped timer: observes the elapsed microseconds into a histogram when destroyed.
class LatencyTimer {
 public:
  explicit LatencyTimer(Histogram& h);
  ~LatencyTimer();

 private:
  Histogram& h_;
  uint64_t start_ns_;
};

Histogram& GetHistogram(const std::string& name);

// Returns the counter registered under `name`, creating it once. The reference stays valid for the
// life of the process; callers keep it in a static.
Counter& Get(const std::string& name);

std::map<std::string, uint64_t> Snapshot();
std::string RenderText();        // "name value\n" lines, sorted; histograms as count/sum/p50/p90/p99
std::string RenderPrometheus();  // hubfs_name_with_underscores value

}  // namespace hubfs::metrics
