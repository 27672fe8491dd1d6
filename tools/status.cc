// `hubfs status`: every hubfs mount on this machine and what it is doing (see commands.h).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fs/filesystem.h"
#include "tools/commands.h"

namespace hubfs::tools {
namespace {

struct StatsFile {
  std::map<std::string, std::string> header;  // "key: value" lines
  std::map<std::string, uint64_t> counters;
  bool ok = false;
};

StatsFile ReadStats(const std::string& mountpoint) {
  StatsFile s;
  std::ifstream f(mountpoint + "/" + fs::kStatsFileName);
  if (!f) return s;
  std::string line;
  while (std::getline(f, line)) {
    const size_t colon = line.find(": ");
    if (colon != std::string::npos && line.find(' ') > colon) {
      s.header[line.substr(0, colon)] = line.substr(colon + 2);
      continue;
    }
    std::istringstream ls(line);
    std::string k;
    uint64_t v;
    if (ls >> k >> v) s.counters[k] = v;
  }
  s.ok = true;
  return s;
}

std::string Human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", bytes, units[u]);
  return buf;
}

}  // namespace

int RunStatus() {
  std::vector<std::string> mounts;
  std::ifstream m("/proc/self/mounts");
  std::string dev, mp, type, rest;
  while (m >> dev >> mp >> type && std::getline(m, rest)) {
    if (type == "fuse.hubfs") mounts.push_back(mp);
  }
  if (mounts.empty()) {
    std::printf("no hubfs mounts\n");
    return 0;
  }
  std::vector<StatsFile> before;
  for (const auto& p : mounts) before.push_back(ReadStats(p));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  int rc = 0;
  for (size_t i = 0; i < mounts.size(); ++i) {
    StatsFile now = ReadStats(mounts[i]);
    std::printf("%s\n", mounts[i].c_str());
    if (!now.ok) {
      std::printf("  not responding (a dead mount? `fusermount3 -u %s`, then mount again)\n", mounts[i].c_str());
      rc = 1;
      continue;
    }
    auto c = [&](const char* k) { return static_cast<double>(now.counters[k]); };
    auto d = [&](const char* k) { return static_cast<double>(now.counters[k] - before[i].counters[k]); };
    const double lookups = c("cache.mem.hit") + c("cache.disk.hit") + c("cache.miss");
    const double hits = c("cache.mem.hit") + c("cache.disk.hit");
    std::printf("  endpoint:     %s\n", now.header["endpoint"].c_str());
    std::printf("  cache:        %s on disk (%s), %s in memory\n", Human(c("cache.disk.bytes")).c_str(),
                now.header["cache"].c_str(), Human(c("cache.mem.bytes")).c_str());
    std::printf("  hit ratio:    %.1f%% of %.0f block lookups (memory %.0f, disk %.0f)\n",
                lookups > 0 ? 100.0 * hits / lookups : 0.0, lookups, c("cache.mem.hit"), c("cache.disk.hit"));
    std::printf("  fetched:      %s from the origin in %.0f requests\n", Human(c("fetch.bytes")).c_str(),
                c("fetch.requests"));
    std::printf("  throughput:   reads %s/s, origin %s/s\n", Human(d("fs.read_bytes")).c_str(),
                Human(d("fetch.bytes")).c_str());
    std::printf("  errors:       %.0f to readers, %.0f transport, %.0f retries, %.0f bad responses\n",
                c("fuse.errors"), c("fetch.transport_errors"), c("fetch.retries"), c("fetch.bad_responses"));
    if (c("hf_cache.copies_used") > 0 || c("hf_cache.copies_mismatched") > 0)
      std::printf("  hf cache:     huggingface_hub's copies found %.0f times (%s read by the daemon, the rest by the "
                  "kernel; %s hashed), %.0f damaged copies refused\n",
                  c("hf_cache.copies_used"), Human(c("cache.local.bytes")).c_str(),
                  Human(c("hf_cache.bytes_hashed")).c_str(), c("hf_cache.copies_mismatched"));
    if (c("fs.served_offline") > 0)
      std::printf("  offline:      %.0f revisions, trees and listings served from the cache, the Hub unreachable\n",
                  c("fs.served_offline"));
    std::printf("  read latency: p50 %.0f us, p99 %.0f us\n", c("fuse.read.latency_us.p50"), c("fuse.read.latency_us.p99"));
  }
  return rc;
}

}  // namespace hubfs::tools
