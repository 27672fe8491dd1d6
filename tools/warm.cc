// `hubfs warm`: fetch a repo's files into the block cache ahead of use (see commands.h). With no
// mount on the cache directory it builds the same fetch client and block cache the daemon uses;
// with one, it reads the files through that mount (its daemon alone fills the directory).
#include <fcntl.h>
#include <fnmatch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>
#include <vector>

#include "cache/block_cache.h"
#include "cache/hf_hub_cache.h"
#include "cache/meta_store.h"
#include "fetch/hub_client.h"
#include "fetch/url.h"
#include "fs/filesystem.h"
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

// A repo as `hubfs warm` names it: [datasets/|spaces/|models/]org/name[@rev].
struct Spec {
  fetch::RepoType type = fetch::RepoType::kModel;
  std::string id;        // org/name
  std::string revision;  // decoded; empty = default branch
  std::string mount_dir; // its directory under a mount point: [datasets/|spaces/]org/name[@rev]
};

std::optional<Spec> ParseSpec(const std::string& repo) {
  Spec out;
  std::string spec = repo, prefix;
  for (auto [p, t] : {std::pair{"datasets/", fetch::RepoType::kDataset}, std::pair{"spaces/", fetch::RepoType::kSpace},
                      std::pair{"models/", fetch::RepoType::kModel}}) {
    if (spec.rfind(p, 0) == 0) {
      spec = spec.substr(std::string(p).size());
      out.type = t;
      prefix = t == fetch::RepoType::kModel ? "" : p;
    }
  }
  const size_t slash = spec.find('/');
  auto parsed = slash == std::string::npos ? std::nullopt : fs::ParseRepoDirName(spec.substr(slash + 1));
  if (!parsed || !fs::IsValidIdPart(spec.substr(0, slash))) {
    std::fprintf(stderr, "hubfs warm: not a repo: %s (expected org/name[@revision])\n", repo.c_str());
    return std::nullopt;
  }
  out.id = spec.substr(0, slash) + "/" + parsed->name;
  out.revision = parsed->revision;
  out.mount_dir = prefix + spec;
  return out;
}

bool Selected(const WarmOptions& o, const std::string& path) {
  bool match = o.globs.empty();
  for (const auto& g : o.globs) match = match || fnmatch(g.c_str(), path.c_str(), 0) == 0;
  return match;
}

// Progress on stderr while `running` says workers are at it (a bar on a terminal, a line every
// 2 s otherwise); stops the workers on SIGINT/SIGTERM through `cancel`.
void ShowProgress(const std::function<bool()>& running, const std::function<void()>& cancel,
                  const std::atomic<uint64_t>& done_bytes, const std::function<uint64_t()>& fetched_bytes,
                  uint64_t total) {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto start = std::chrono::steady_clock::now();
  auto report = [&](bool final) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double d = static_cast<double>(done_bytes.load()), t = static_cast<double>(total);
    const double rate = secs > 0 ? static_cast<double>(fetched_bytes()) / secs : 0;
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
  for (int tick = 0; running(); ++tick) {
    if (g_stop) cancel();
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    if (tty || tick % 8 == 7) report(false);
  }
  report(true);
}

// The mount's count of bytes fetched from the origin (its live stats file); 0 if unreadable.
uint64_t MountOriginBytes(const std::string& mountpoint) {
  std::ifstream f(mountpoint + "/.hubfs-stats");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("cache.origin_bytes ", 0) == 0) return std::strtoull(line.c_str() + 19, nullptr, 10);
  return 0;
}

}  // namespace

int RunWarm(const WarmOptions& o) {
  const auto spec = ParseSpec(o.repo);
  if (!spec) return 2;
  const fetch::RepoType type = spec->type;
  const std::string& id = spec->id;

  auto http = std::make_shared<fetch::HttpClient>(fetch::HttpOptions{});
  fetch::HubClient hub(fetch::HubOptions{o.endpoint, fetch::TokenSource::Fixed(o.token, "warm"), {}}, http);
  CancelToken meta_cancel(CancelToken::Clock::now() + std::chrono::seconds(120));
  auto info = hub.GetRepoInfo(type, id, spec->revision, &meta_cancel);
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
    if (e.is_dir || !fs::IsValidRepoPath(e.path) || !Selected(o, e.path)) continue;
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
  // The repo's revision and tree, kept beside the blocks: a mount started without the Hub (an
  // air-gapped machine, or during an outage) finds the repo, as it finds its blocks.
  // (A failure is said, and not fatal: the blocks still serve a mount that can reach the Hub.)
  std::shared_ptr<cache::MetaStore> meta_store;
  if (auto meta = cache::MetaStore::Open(o.cache_dir); !meta.ok()) {
    std::fprintf(stderr, "hubfs warm: no repo records in %s (a mount without the Hub will not find %s): %s\n",
                 o.cache_dir.c_str(), o.repo.c_str(), meta.error().ToString().c_str());
  } else {
    meta_store = std::move(meta.value());
    auto& m = *meta_store;
    std::vector<std::pair<std::string, std::string>> records = {
        {fs::RevisionRecordKey(type, id, spec->revision), fetch::RepoInfoJson(info.value())},
        {fs::TreeRecordKey(type, info->id, info->sha), fetch::TreeJson(tree.value())}};
    for (const std::string& rid : {id, info->id})
      if (const size_t slash = rid.find('/'); slash != std::string::npos)
        records.emplace_back(fs::OrgRecordKey(type, rid.substr(0, slash)), "");
    // The org's listing, if a mount never listed it: at least this repo (a mount's listing, from
    // the Hub, replaces it).
    if (const size_t slash = info->id.find('/'); slash != std::string::npos) {
      const std::string key = fs::OrgListingRecordKey(type, info->id.substr(0, slash));
      std::string listing = m.Get(key).value_or("");
      if (("\n" + listing).find("\n" + info->id + "\n") == std::string::npos)
        records.emplace_back(key, listing + info->id + "\n");
    }
    for (const auto& [key, value] : records) {
      if (auto st = m.Put(key, value); !st.ok())
        std::fprintf(stderr, "hubfs warm: keeping %s's metadata: %s\n", o.repo.c_str(), st.error().ToString().c_str());
    }
  }
  // Files huggingface_hub already downloaded are not fetched: a mount reads them from its cache.
  // Their copies are hashed here (on the hash pool's threads, all queued at once), and the verdicts
  // kept in the cache directory, so that the mount's first open of them does not hash them again.
  // A copy that does not match (cut short, edited) is fetched like a file with none.
  std::vector<bool> held(files.size(), false);
  uint64_t held_bytes = 0;
  size_t held_files = 0;
  if (!o.hf_cache.empty() && o.hf_cache != "none") {
    std::shared_ptr<cache::MetaStore> verdicts;
    if (auto v = cache::HfHubCache::OpenVerdicts(o.cache_dir); v.ok()) {
      verdicts = std::move(v.value());
    } else {
      std::fprintf(stderr, "hubfs warm: the verdicts will not be kept (a mount hashes the copies again): %s\n",
                   v.error().ToString().c_str());
    }
    cache::HfHubCache hf(o.hf_cache, verdicts);
    const std::string folder = cache::HfHubCache::RepoFolder(fetch::ApiCollection(type), info->id);
    std::vector<bool> pending(files.size(), false);
    size_t npending = 0;
    uint64_t pending_bytes = 0;
    for (size_t i = 0; i < files.size(); ++i) {
      if (files[i].loc.size == 0) continue;
      bool p = false;
      held[i] = !hf.Find(folder, info->sha, files[i].loc.path, files[i].id, files[i].loc.size, nullptr,
                         /*wait=*/false, &p).empty();
      pending[i] = p;
      if (p) ++npending, pending_bytes += files[i].loc.size;
    }
    if (npending > 0)
      std::fprintf(stderr, "hubfs warm: checking %zu files (%.1f MiB) huggingface_hub downloaded to %s\n", npending,
                   static_cast<double>(pending_bytes) / 1048576, o.hf_cache.c_str());
    for (size_t i = 0; i < files.size(); ++i) {  // (SIGINT here ends the process: nothing to keep)
      if (pending[i])
        held[i] = !hf.Find(folder, info->sha, files[i].loc.path, files[i].id, files[i].loc.size, nullptr).empty();
      if (held[i]) ++held_files, held_bytes += files[i].loc.size;
    }
    if (held_files > 0)
      std::fprintf(stderr, "hubfs warm: %zu files (%.1f MiB) are in huggingface_hub's cache, verified: a mount "
                   "reads them from there (not with --hf-cache none)\n", held_files,
                   static_cast<double>(held_bytes) / 1048576);
  }
  std::vector<Job> jobs;
  for (size_t i = 0; i < files.size(); ++i) {
    if (held[i]) continue;
    cache.TrackFile(files[i].id, files[i].loc.size);
    for (uint64_t b = 0; b * o.block_size < files[i].loc.size; ++b) jobs.push_back({i, b});
  }

  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done_bytes{held_bytes}, fetched_bytes{0};
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
  ShowProgress([&] { return running.load() > 0; }, [&] { cancel.Cancel(); }, done_bytes,
               [&] { return fetched_bytes.load(); }, total);
  for (auto& t : threads) t.join();
  cache.Flush();
  if (g_stop) {
    std::fprintf(stderr, "hubfs warm: interrupted; what was fetched stays cached\n");
    return 130;
  }
  std::string in_hf;
  if (held_files > 0) in_hf = ", " + std::to_string(held_files) + " of them in huggingface_hub's cache";
  std::printf("warmed %zu files (%.1f MiB) of %s@%.8s%s: %.1f MiB fetched, %s\n", files.size(),
              static_cast<double>(total) / 1048576, info->id.c_str(), info->sha.c_str(), in_hf.c_str(),
              static_cast<double>(fetched_bytes.load()) / 1048576, errors ? "with errors" : "all cached");
  return errors ? 1 : 0;
}

int RunWarmThroughMount(const WarmOptions& o, const std::string& mountpoint) {
  const auto spec = ParseSpec(o.repo);
  if (!spec) return 2;
  namespace sfs = std::filesystem;
  const sfs::path root = sfs::path(mountpoint) / spec->mount_dir;
  std::error_code ec;
  if (!sfs::is_directory(root, ec)) {
    std::fprintf(stderr, "hubfs warm: %s: %s\n", root.c_str(), ec ? ec.message().c_str() : "not a repo directory");
    return 1;
  }
  struct File {
    std::string rel;
    uint64_t size;
  };
  std::vector<File> files;
  uint64_t total = 0;
  for (sfs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string rel = sfs::relative(it->path(), root, ec).string();
    if (ec || !Selected(o, rel)) continue;
    files.push_back({rel, it->file_size(ec)});
    total += files.back().size;
  }
  if (ec) {
    std::fprintf(stderr, "hubfs warm: listing %s: %s\n", root.c_str(), ec.message().c_str());
    return 1;
  }
  if (files.empty()) {
    std::fprintf(stderr, "hubfs warm: nothing in %s matches\n", root.c_str());
    return 1;
  }
  std::fprintf(stderr, "hubfs warm: the cache directory is in use by the mount at %s: warming through it\n",
               mountpoint.c_str());
  const uint64_t origin_before = MountOriginBytes(mountpoint);
  // Whole files to each reader, largest first: the daemon fetches a large file's ranges in
  // parallel for one sequential reader, and the small ones fill in beside it.
  std::sort(files.begin(), files.end(), [](const File& a, const File& b) { return a.size > b.size; });
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done_bytes{0};
  std::atomic<int> errors{0};
  const int nthreads = std::clamp(o.threads, 1, static_cast<int>(files.size()));
  std::atomic<int> running{nthreads};
  auto worker = [&] {
    std::vector<char> buf(1 << 20);
    for (size_t j; !g_stop && (j = next++) < files.size();) {
      const std::string path = (root / files[j].rel).string();
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      ssize_t n = fd < 0 ? -1 : 0;
      for (uint64_t off = 0; fd >= 0 && !g_stop; off += static_cast<uint64_t>(n)) {
        n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) {
          n = 0;
          continue;
        }
        if (n <= 0) break;
        done_bytes += static_cast<uint64_t>(n);
      }
      if (n < 0 && !g_stop) {
        std::fprintf(stderr, "\nhubfs warm: %s: %s\n", files[j].rel.c_str(), std::strerror(errno));
        ++errors;
      }
      if (fd >= 0) ::close(fd);
    }
    --running;
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < nthreads; ++i) threads.emplace_back(worker);
  // A reader in a FUSE read sees EINTR only if the signal reaches its thread: g_stop ends each
  // after its current read, which the mount bounds in time.
  auto fetched_since = [&] {
    const uint64_t now = MountOriginBytes(mountpoint);
    return now > origin_before ? now - origin_before : 0;
  };
  ShowProgress([&] { return running.load() > 0; }, [] {}, done_bytes, fetched_since, total);
  for (auto& t : threads) t.join();
  if (g_stop) {
    std::fprintf(stderr, "hubfs warm: interrupted; what was read stays cached\n");
    return 130;
  }
  const uint64_t fetched = fetched_since();
  std::printf("warmed %zu files (%.1f MiB) of %s through the mount at %s: %.1f MiB fetched, %s\n", files.size(),
              static_cast<double>(total) / 1048576, spec->mount_dir.c_str(), mountpoint.c_str(),
              static_cast<double>(fetched) / 1048576, errors ? "with errors" : "all cached");
  return errors ? 1 : 0;
}

}  // namespace hubfs::tools
