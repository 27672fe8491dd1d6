// The metrics registry (see metrics.h).
#include "common/metrics.h"

#include <memory>
#include <mutex>

namespace hubfs::metrics {
namespace {
struct Registry {
  std::mutex mu;
  std::map<std::string, std::unique_ptr<Counter>> counters;
};
Registry& Reg() {
  static Registry* r = new Registry();  // never destroyed: counters outlive static destructors
  return *r;
}
}  // namespace

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
  return out;
}

std::string RenderText() {
  std::string s;
  for (auto& [k, v] : Snapshot()) s += k + " " + std::to_string(v) + "\n";
  return s;
}

std::string RenderPrometheus() {
  std::string s;
  for (auto& [k, v] : Snapshot()) {
    std::string name = "hubfs_" + k;
    for (char& c : name)
      if (c == '.' || c == '-') c = '_';
    s += name + " " + std::to_string(v) + "\n";
  }
  return s;
}

}  // namespace hubfs::metrics
