// `hubfs warm`: fetch a repo's files into the block cache ahead of use (see commands.h). It builds
// the same fetch client and block cache the daemon uses, on the same cache directory; block files
// are written atomically, so warming beside a live mount is safe.
#include <fnmatch.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <thread>
#include <vector>

#include "cache/block_cache.h"
#include "fetch/hub_client.h"
#include "fetch/url.h"
#include "fs/names.h"
#include "tools/commands.h"

namespace hubfs::tools {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

struct Job {
  size_t file;
  uint64_t block;
};

}  // namespace

int RunWarm(const WarmOptions& o) {
  // Parse [datasets/|spaces/]org/name[@rev].
  std::string spec = o.repo;
  fetch::RepoType type = fetch::RepoType::kModel;
  for (auto [prefix, t] : {std::pair{"datasets/", fetch::RepoType::kDataset}, std::pair{"spaces/", fetch::RepoType::kSpace},
                           std::pair{"models/", fetch::RepoType::kModel}}) {
    if (spec.rfind(prefix, 0) == 0) {
      spec = spec.substr(std::string(prefix).size());
      type = t;
    }
  }
  const size_t slash = spec.find('/');
  auto parsed = slash == std::string::npos ? std::nullopt : fs::ParseRepoDirName(spec.substr(slash + 1));
  if (!parsed || !fs::IsValidIdPart(spec.substr(0, slash))) {
    std::fprintf(stderr, "hubfs warm: not a repo: %s (expected org/name[@revision])\n", o.repo.c_str());
    return 2;
  }
  const std::string id = spec.substr(0, slash) + "/" + parsed->name;

  auto http = std::make_shared<fetch::HttpClient>(fetch::HttpOptions{});
  fetch::HubClient hub(fetch::HubOptions{o.endpoint, o.token, {}}, http);
  CancelToken meta_cancel(CancelToken::Clock::now() + std::chrono::seconds(120));
  auto info = hub.GetRepoInfo(type, id, parsed->revision, &meta_cancel);
  if (!info.ok()) {
    std::fprintf(stderr, "hubfs warm: %s: %s\n", o.repo.c_str(), info.error().ToString().c_str());
    return 1;
  }
  auto tree = hub.ListTree(type, info->id, info->sha, &meta_cancel);
  if (!tree.ok()) {
    std::fprintf(stderr, "hubfs warm: %s: %s\n", o.repo.c_str(), tree.error().ToString().c_str());
    return 1;
  }
  struct File {
    fetch::FileLocation loc;
    cache::ContentId id;
  };
  std::vector<File> files;
  uint64_t total = 0;
  for (const auto& e : tree.value()) {
    if (e.is_dir || !fs::IsValidRepoPath(e.path)) continue;
    bool match = o.globs.empty();
    for (const auto& g : o.globs) match = match || fnmatch(g.c_str(), e.path.c_str(), 0) == 0;
    if (!match) continue;
    auto cid = e.lfs_sha256.empty() ? cache::ContentId::FromHex(cache::IdKind::kGitSha1, e.oid)
                                    : cache::ContentId::FromHex(cache::IdKind::kSha256, e.lfs_sha256);
    if (!cid) continue;
    const bool git_blob = cid->kind == cache::IdKind::kGitSha1;
    files.push_back({fetch::FileLocation{type, info->id, info->sha, e.path, e.size, git_blob}, *cid});
    total += e.size;
  }
  if (files.empty()) {
    std::fprintf(stderr, "hubfs warm: nothing in %s@%.8s matches\n", info->id.c_str(), info->sha.c_str());
    return 1;
  }

  cache::CacheOptions co;
  co.block_size = o.block_size;
  co.memory_bytes = 256u << 20;
  co.disk_dir = o.cache_dir;
  co.disk_bytes = o.cache_bytes;
  co.min_free_bytes = o.min_free_bytes;
  co.loader_threads = 1;
  cache::BlockCache cache(co);
  if (cache.disk() == nullptr) {
    std::fprintf(stderr, "hubfs warm: cache directory %s is not usable\n", o.cache_dir.c_str());
    return 1;
  }
  std::vector<Job> jobs;
  for (size_t i = 0; i < files.size(); ++i) {
    cache.TrackFile(files[i].id, files[i].loc.size);
    for (uint64_t b = 0; b * o.block_size < files[i].loc.size; ++b) jobs.push_back({i, b});
  }

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done_bytes{0}, fetched_bytes{0};
  std::atomic<int> errors{0};
  std::atomic<int> running{std::max(1, o.threads)};
  CancelToken cancel;
  auto worker = [&] {
    for (size_t j; !g_stop && (j = next++) < jobs.size();) {
      const File& f = files[jobs[j].file];
      const uint64_t off = jobs[j].block * o.block_size;
      const size_t len = static_cast<size_t>(std::min<uint64_t>(o.block_size, f.loc.size - off));
      const cache::BlockKey key{f.id, jobs[j].block};
      if (!cache.Contains(key)) {
        auto r = cache.Get(key, len, [&](char* buf, size_t n, const CancelToken* c) {
          return hub.ReadRange(f.loc, off, buf, n, c);
        }, &cancel);
        if (!r.ok()) {
          if (!g_stop) std::fprintf(stderr, "\nhubfs warm: %s: %s\n", f.loc.path.c_str(), r.error().ToString().c_str());
          ++errors;
          continue;
        }
        fetched_bytes += len;
      }
      done_bytes += len;
    }
    --running;
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < std::max(1, o.threads); ++i) threads.emplace_back(worker);

  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto start = std::chrono::steady_clock::now();
  auto report = [&](bool final) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double d = static_cast<double>(done_bytes.load()), t = static_cast<double>(total);
    const double rate = secs > 0 ? static_cast<double>(fetched_bytes.load()) / secs : 0;
    const double eta = rate > 0 ? (t - d) / rate : 0;
    if (tty) {
      const int width = 30, filled = t > 0 ? static_cast<int>(width * d / t) : width;
      std::fprintf(stderr, "\r[%-*s] %6.1f/%.1f MiB  %6.1f MiB/s  ETA %4.0fs ", width,
                   std::string(static_cast<size_t>(filled), '#').c_str(), d / 1048576, t / 1048576, rate / 1048576,
                   eta);
      if (final) std::fputc('\n', stderr);
    } else {
      std::fprintf(stderr, "warm: %.1f/%.1f MiB, %.1f MiB/s, ETA %.0f s\n", d / 1048576, t / 1048576,
                   rate / 1048576, eta);
    }
  };
  for (int tick = 0; running.load() > 0; ++tick) {
    if (g_stop) cancel.Cancel();
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    if (tty || tick % 8 == 7) report(false);
  }
  for (auto& t : threads) t.join();
  cache.Flush();
  report(true);
  if (g_stop) {
    std::fprintf(stderr, "hubfs warm: interrupted; what was fetched stays cached\n");
    return 130;
  }
  std::printf("warmed %zu files (%.1f MiB) of %s@%.8s: %.1f MiB fetched, %s\n", files.size(),
              static_cast<double>(total) / 1048576, info->id.c_str(), info->sha.c_str(),
              static_cast<double>(fetched_bytes.load()) / 1048576, errors ? "with errors" : "all cached");
  return errors ? 1 : 0;
}

}  // namespace hubfs::tools
