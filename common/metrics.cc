// The metrics registry (see metrics.h).
#include "common/metrics.h"

#include <ctime>
#include <memory>
#include <mutex>

namespace hubfs::metrics {
namespace {
struct Registry {
  std::mutex mu;
  std::map<std::string, std::unique_ptr<Counter>> counters;
  std::map<std::string, std::unique_ptr<Histogram>> histograms;
};
uint64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}
std::string PromName(const std::string& k) {
  std::string name = "hubfs_" + k;
  for (char& c : name)
    if (c == '.' || c == '-') c = '_';
  return name;
}
Registry& Reg() {
  static Registry* r = new Registry();  // never destroyed: counters outlive static destructors
  return *r;
}
}  // namespace

uint64_t Histogram::Quantile(double q) const {
  const uint64_t n = count();
  if (n == 0) return 0;
  const auto target = static_cast<uint64_t>(q * static_cast<double>(n - 1)) + 1;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += bucket(i);
    if (seen >= target) return 1ULL << i;
  }
  return 1ULL << (kBuckets - 1);
}

LatencyTimer::LatencyTimer(Histogram& h) : h_(h), start_ns_(NowNs()) {}
LatencyTimer::~LatencyTimer() { h_.Observe((NowNs() - start_ns_) / 1000); }

Histogram& GetHistogram(const std::string& name) {
  Registry& r = Reg();
  std::lock_guard lock(r.mu);
  auto& slot = r.histograms[name];
  if (!slot) slot = std::make_unique<Histogram>();
  return *slot;
}

Counter& Get(const std::string& name) {
  Registry& r = Reg();
  std::lock_guard lock(r.mu);
  auto& slot = r.counters[name];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

std::map<std::string, uint64_t> Snapshot() {
  Registry& r = Reg();
  std::lock_guard lock(r.mu);
  std::map<std::string, uint64_t> out;
  for (auto& [k, v] : r.counters) out[k] = v->Get();
  for (auto& [k, h] : r.histograms) {
    out[k + ".count"] = h->count();
    out[k + ".sum"] = h->sum();
    out[k + ".p50"] = h->Quantile(0.50);
    out[k + ".p90"] = h->Quantile(0.90);
    out[k + ".p99"] = h->Quantile(0.99);
  }
  return out;
}

std::string RenderText() {
  std::string s;
  for (auto& [k, v] : Snapshot()) s += k + " " + std::to_string(v) + "\n";
  return s;
}

std::string RenderPrometheus() {
  Registry& r = Reg();
  std::lock_guard lock(r.mu);
  std::string s;
  for (auto& [k, v] : r.counters) s += "# TYPE " + PromName(k) + " gauge\n" + PromName(k) + " " + std::to_string(v->Get()) + "\n";
  for (auto& [k, h] : r.histograms) {
    const std::string n = PromName(k);
    s += "# TYPE " + n + " histogram\n";
    uint64_t cum = 0;
    for (int i = 0; i < Histogram::kBuckets; ++i) {
      cum += h->bucket(i);
      s += n + "_bucket{le=\"" + std::to_string(1ULL << i) + "\"} " + std::to_string(cum) + "\n";
    }
    s += n + "_bucket{le=\"+Inf\"} " + std::to_string(h->count()) + "\n";
    s += n + "_sum " + std::to_string(h->sum()) + "\n" + n + "_count " + std::to_string(h->count()) + "\n";
  }
  return s;
}

}  // namespace hubfs::metrics
