// The hubfs command line: mount, unmount, and the cache tools. Thin: it parses options, builds the
// fetch client, the block cache and the filesystem core, and hands them to the FUSE adapter.
#include <pwd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>

#include "cache/block_cache.h"
#include "cache/disk_store.h"
#include "cache/meta_store.h"
#include "common/log.h"
#include "common/metrics.h"
#include "fetch/hub_client.h"
#include "fs/filesystem.h"
#include "fs/fuse_adapter.h"
#include "tools/commands.h"

namespace {

using namespace hubfs;

std::string HomeDir() {
  if (const char* h = std::getenv("HOME"); h && *h) return h;
  if (const passwd* pw = getpwuid(getuid())) return pw->pw_dir;
  return "/";
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// The token's source, in huggingface_hub's order (fetch/token_source.h). An explicit --token-file
// that is missing is said at once (one that cannot be read, by the token source's own warning): a
// mount that silently went without its token answers ENOENT for every private repo, far from the
// typo that caused it.
std::shared_ptr<fetch::TokenSource> FindToken(const std::string& token_file, const char* who) {
  auto source = fetch::TokenSource::Discover(token_file, Env, HomeDir());
  if (!token_file.empty() && ::access(token_file.c_str(), F_OK) != 0)
    std::fprintf(stderr, "hubfs%s: --token-file %s: %s; going on without a token until it can be read\n", who,
                 token_file.c_str(), std::strerror(errno));
  return source;
}

std::string DefaultCacheDir() {
  const std::string xdg = Env("XDG_CACHE_HOME");
  return (xdg.empty() ? HomeDir() + "/.cache" : xdg) + "/hubfs";
}

// "20G", "512M", "64K", "1T", plain bytes; binary units.
bool ParseSize(const std::string& s, uint64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str() || v < 0) return false;
  std::string unit(end);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  if (unit.size() == 2 && unit[1] == 'I') unit.pop_back();
  const std::map<std::string, double> mult = {{"", 1}, {"K", 1024.0}, {"M", 1048576.0},
                                              {"G", 1073741824.0}, {"T", 1099511627776.0}};
  auto it = mult.find(unit);
  if (it == mult.end()) return false;
  *out = static_cast<uint64_t>(v * it->second);
  return true;
}

CLI::Validator SizeValidator() {
  return CLI::Validator(
      [](std::string& s) {
        uint64_t v;
        return ParseSize(s, &v) ? std::string() : "not a size (e.g. 20G, 512M): " + s;
      },
      "SIZE");
}

// A mount point left behind by a daemon that died answers ENOTCONN: unmount it lazily first. A
// live hubfs mount there is an error. (stat() may still succeed on a dead mount from cached
// attributes; statfs always asks the daemon.)
bool RecoverDeadMount(const std::string& mp) {
  bool mounted = false;
  {
    std::ifstream m("/proc/self/mounts");
    std::string dev, point, type, rest;
    while (m >> dev >> point >> type && std::getline(m, rest))
      if (point == mp && type.rfind("fuse", 0) == 0) mounted = true;
  }
  if (!mounted) return true;
  struct statvfs sv {};
  if (::statvfs(mp.c_str(), &sv) == 0) {
    std::fprintf(stderr, "hubfs: %s is already mounted (hubfs unmount %s first)\n", mp.c_str(), mp.c_str());
    return false;
  }
  if (errno != ENOTCONN) return true;
  LOG_WARN("%s is a dead FUSE mount (ENOTCONN): unmounting it first", mp.c_str());
  const pid_t pid = fork();
  if (pid == 0) {
    execlp("fusermount3", "fusermount3", "-u", "-z", mp.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  if (pid > 0) waitpid(pid, &status, 0);
  return true;
}

struct StatsWriter {
  // Dumps the metrics registry every second: as text to <cache>/stats (for `hubfs cache stats`),
  // and in Prometheus text format to --metrics FILE (for node exporters' textfile collector).
  StatsWriter(std::string path, std::string prom_path)
      : path_(std::move(path)), prom_path_(std::move(prom_path)), thread_([this] { Run(); }) {}
  ~StatsWriter() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Run() {
    std::unique_lock lock(mu_);
    do {
      lock.unlock();
      if (!path_.empty()) WriteAtomically(path_, metrics::RenderText(), 0600);
      if (!prom_path_.empty()) WriteAtomically(prom_path_, metrics::RenderPrometheus(), 0644);
      lock.lock();
    } while (!cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_; }));
  }
  static void WriteAtomically(const std::string& path, const std::string& text, mode_t mode) {
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << text;
    }
    ::chmod(tmp.c_str(), mode);
    std::rename(tmp.c_str(), path.c_str());
  }
  std::string path_, prom_path_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

int CacheStats(const std::string& dir) {
  std::map<std::string, uint64_t> m;
  {
    std::ifstream f(dir + "/stats");
    std::string k;
    uint64_t v;
    while (f >> k >> v) m[k] = v;
  }
  // Sizes only: stats answers at once however large the cache (verify reads and hashes it all).
  const auto survey = cache::DiskStore::Survey(dir);
  auto ratio = [&](const char* hit, uint64_t total) {
    return total == 0 ? 0.0 : 100.0 * static_cast<double>(m[hit]) / static_cast<double>(total);
  };
  const uint64_t lookups = m["cache.mem.hit"] + m["cache.disk.hit"] + m["cache.miss"];
  std::printf("cache dir:        %s\n", dir.c_str());
  std::printf("disk blocks:      %llu (%.1f MiB)\n", static_cast<unsigned long long>(survey.blocks),
              static_cast<double>(survey.block_bytes) / 1048576.0);
  std::printf("whole files:      %llu (%.1f MiB)\n", static_cast<unsigned long long>(survey.files),
              static_cast<double>(survey.file_bytes) / 1048576.0);
  std::printf("repo records:     %llu (%.1f KiB; revisions and trees, for use without the Hub)\n",
              static_cast<unsigned long long>(survey.records), static_cast<double>(survey.record_bytes) / 1024.0);
  std::printf("hf copy verdicts: %llu (huggingface_hub's copies hashed, not hashed again)\n",
              static_cast<unsigned long long>(survey.verdicts));
  std::printf("memory blocks:    %llu (%.1f MiB)\n", static_cast<unsigned long long>(m["cache.mem.blocks"]),
              static_cast<double>(m["cache.mem.bytes"]) / 1048576.0);
  std::printf("hit ratio:        memory %.1f%%, disk %.1f%% (of %llu block lookups)\n", ratio("cache.mem.hit", lookups),
              ratio("cache.disk.hit", lookups), static_cast<unsigned long long>(lookups));
  std::printf("origin bytes:     %llu\n", static_cast<unsigned long long>(m["cache.origin_bytes"]));
  std::printf("corrupt dropped:  %llu\n", static_cast<unsigned long long>(m["cache.disk.corrupt"]));
  return 0;
}

// A mount labels the lock it holds "mount <mount point>" (see main).
const std::string kMountLabel = "mount ";

// The mount point of the mount holding `lock` (cache::DirLock), or "" if it is held by no mount.
std::string HolderMount(const cache::DirLock& lock) {
  const size_t at = lock.holder.find(": " + kMountLabel);
  return lock.fd >= 0 || at == std::string::npos ? "" : lock.holder.substr(at + 2 + kMountLabel.size());
}

// Takes the cache directory's lock for `what` (cache::DirLock); false, with a message that says
// who holds it and what to do (`advice` when a mount holds it; else, wait for the warm or clear
// that does), when another process does. A directory that cannot be locked at all (unwritable)
// is no reason to stop: a mount then runs without a disk tier, as before.
bool LockCacheDir(const std::string& dir, const std::string& what, const char* advice, cache::DirLock* out) {
  *out = cache::DiskStore::LockDir(dir, what);
  if (out->fd >= 0 || out->holder.empty()) return true;
  std::fprintf(stderr, "hubfs: cache directory %s is in use (%s); %s\n", dir.c_str(), out->holder.c_str(),
               HolderMount(*out).empty() ? "try again once it is done" : advice);
  return false;
}

std::string Absolute(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) != nullptr ? std::string(buf) : path;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hubfs: the Hugging Face Hub as a read-only filesystem.\n"
               "Every repo appears under the mount point: /{org}/{name}[@rev]/, /datasets/{org}/{name}/,\n"
               "/spaces/{org}/{name}/; file bytes are fetched on demand into a local block cache."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "hubfs 0.1.0");
  // Options may also come from a config file: [mount] section, same names as the flags; flags on
  // the command line win. Default: $HUBFS_CONFIG, else /etc/hubfs/hubfs.conf when it exists.
  app.set_config("--config", Env("HUBFS_CONFIG").empty() ? "/etc/hubfs/hubfs.conf" : Env("HUBFS_CONFIG"),
                 "Config file (TOML-style [mount] section; default /etc/hubfs/hubfs.conf if present)");

  std::string endpoint = Env("HF_ENDPOINT").empty() ? "https://huggingface.co" : Env("HF_ENDPOINT");
  std::string token_file, cache_dir = DefaultCacheDir(), cache_size = "20G", memory_cache = "256M", min_free = "1G";
  std::string log_level = "info";
  int revision_ttl = 60, request_timeout = 50, stall_timeout = 15;
  unsigned block_mib = 4;
  int loader_threads = 16;
  bool no_huge_pages = false;
  bool no_passthrough = false;
  bool offline = fetch::HubEnvTrue(Env("HF_HUB_OFFLINE"));
  std::string hf_cache = fetch::HfHubCacheDir(Env, HomeDir());
  fs::MountOptions mo;
  std::vector<std::string> fuse_opts;

  auto* mount = app.add_subcommand("mount", "Mount the Hub at MOUNTPOINT (daemonizes once the mount is ready)");
  mount->add_option("mountpoint", mo.mountpoint, "Directory to mount on")->required();
  mount->add_option("--endpoint", endpoint, "Hub endpoint (default $HF_ENDPOINT, else https://huggingface.co)");
  mount->add_option("--token-file", token_file,
                    "File holding the Hub token, re-read when it changes (default $HF_TOKEN, "
                    "else $HUGGING_FACE_HUB_TOKEN, else the file $HF_TOKEN_PATH, else $HF_HOME/token, "
                    "i.e. ~/.cache/huggingface/token)");
  mount->add_option("--cache-dir", cache_dir, "Block cache directory (default ~/.cache/hubfs)");
  mount->add_option("--cache-size", cache_size, "Disk cache cap, e.g. 20G (default 20G)")->check(SizeValidator());
  mount->add_option("--memory-cache", memory_cache, "Memory cache cap, e.g. 1G (default 256M)")->check(SizeValidator());
  mount->add_option("--min-free", min_free, "Free space to leave on the cache filesystem (default 1G)")
      ->check(SizeValidator());
  mount->add_option("--revision-ttl", revision_ttl, "Seconds before a branch is re-resolved (default 60)")
      ->check(CLI::Range(0, 86400));
  mount->add_option("--request-timeout", request_timeout,
                    "Seconds after which any FUSE request fails with EIO (default 50)")
      ->check(CLI::Range(1, 600));
  mount->add_option("--stall-timeout", stall_timeout,
                    "Seconds without a byte before a connection is replaced (default 15)")
      ->check(CLI::Range(1, 300));
  mount->add_option("--read-ahead-kb", mo.read_ahead_kb,
                    "Kernel readahead of the mount, set on its BDI when root (default 16384)")
      ->check(CLI::Range(0, 1 << 20));
  mount->add_option("--block-size-mib", block_mib, "Cache block size in MiB (default 4)")->check(CLI::Range(1, 64));
  mount->add_option("--fetch-threads", loader_threads, "Parallel background range fetches (default 16)")
      ->check(CLI::Range(1, 64));
  mount->add_flag("--no-huge-pages", no_huge_pages,
                  "Keep cache block buffers in 4 KiB pages (default: transparent huge pages, which "
                  "make disk cache reads and writes fewer, larger requests)");
  mount->add_flag("--no-passthrough", no_passthrough,
                  "Serve cached files through the daemon (default, as root on Linux >= 6.9: the kernel "
                  "reads a cached file's verified local copy directly, at local-disk speed)");
  mount->add_flag("--offline", offline,
                  "Never contact the Hub: serve the repos and files this cache holds, EIO for anything "
                  "else (default: on when $HF_HUB_OFFLINE is true). Without it, a mount that cannot "
                  "reach the Hub also serves what the cache holds, after bounded retries");
  mount->add_option("--hf-cache", hf_cache,
                    "huggingface_hub's download cache: files it already holds are read from there, "
                    "once their bytes are verified, instead of fetched again; never written to "
                    "(default $HF_HUB_CACHE, else $HF_HOME/hub, i.e. ~/.cache/huggingface/hub; "
                    "none: do not look)");
  mount->add_option("--passthrough-prefetch-mib", mo.passthrough_prefetch_mib,
                    "MiB of a passthrough file read from the disk ahead of a sequential reader, "
                    "beyond the kernel's readahead (default 256; 0: the kernel's readahead only)")
      ->check(CLI::Range(0, 1 << 16));
  mount->add_option("--direct-min-mib", mo.direct_min_mib,
                    "Files of at least this many MiB not yet all in the cache are read around the "
                    "kernel's page cache (FOPEN_DIRECT_IO, Linux >= 6.6): a cold read is copied once, "
                    "from the daemon's buffers into the reader's; mmap still works (default 64; "
                    "0: always through the page cache)")
      ->check(CLI::Range(0, 1 << 20));
  mount->add_option("-o", fuse_opts, "FUSE mount options, e.g. allow_other")->allow_extra_args(false);
  std::string metrics_file;
  mount->add_option("--metrics", metrics_file, "Write Prometheus text metrics to FILE every second");
  mount->add_flag("-f,--foreground", mo.foreground, "Stay in the foreground");
  mount->add_flag("-d,--debug", mo.debug, "FUSE debug output (implies --foreground)");
  mount->add_option("--log-level", log_level, "error, warn, info or debug (default info)")
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));

  app.add_subcommand("status", "Show every hubfs mount: endpoint, cache use, hit ratio, throughput, errors");

  tools::WarmOptions wo;
  auto* warm = app.add_subcommand(
      "warm", "Fetch a repo's files into the cache ahead of use (idempotent; a mounted cache through its mount)");
  warm->add_option("repo", wo.repo, "org/name[@revision], datasets/org/name[@revision] or spaces/...")->required();
  warm->add_option("paths", wo.globs, "Paths or globs inside the repo (default: every file)");
  std::string warm_cache_dir = DefaultCacheDir(), warm_token_file, warm_cache_size = "20G";
  warm->add_option("--endpoint", endpoint, "Hub endpoint (default $HF_ENDPOINT, else https://huggingface.co)");
  warm->add_option("--token-file", warm_token_file, "File holding the Hub token (default as for mount)");
  warm->add_option("--cache-dir", warm_cache_dir, "Block cache directory (default ~/.cache/hubfs)");
  warm->add_option("--cache-size", warm_cache_size, "Disk cache cap (default 20G)")->check(SizeValidator());
  warm->add_option("--block-size-mib", block_mib, "Cache block size in MiB; must match the mount's (default 4)")
      ->check(CLI::Range(1, 64));
  warm->add_option("-j,--jobs", wo.threads, "Parallel range fetches (default 16)")->check(CLI::Range(1, 64));
  warm->add_option("--hf-cache", hf_cache,
                   "huggingface_hub's download cache: files it already holds are verified (hashed once, the "
                   "verdict kept for the mount) instead of fetched (default as for mount; none: do not look)");

  std::string unmount_point;
  auto* unmount = app.add_subcommand("unmount", "Unmount a hubfs mount");
  unmount->add_option("mountpoint", unmount_point)->required();

  auto* cache_cmd = app.add_subcommand("cache", "Inspect or clear the block cache");
  cache_cmd->require_subcommand(1);
  std::string cdir = DefaultCacheDir();
  auto* stats = cache_cmd->add_subcommand("stats", "Size, blocks, per-tier hit ratio, bytes from the origin");
  auto* verify = cache_cmd->add_subcommand("verify", "Check every block offline; exit 1 if any is bad");
  bool remove_bad = false;
  verify->add_flag("--remove-bad", remove_bad, "Delete blocks that fail the check");
  auto* clear = cache_cmd->add_subcommand("clear", "Delete every cached block");
  for (auto* c : {stats, verify, clear}) c->add_option("--cache-dir", cdir, "Cache directory (default ~/.cache/hubfs)");

  CLI11_PARSE(app, argc, argv);

  if (*unmount) {
    execlp("fusermount3", "fusermount3", "-u", unmount_point.c_str(), static_cast<char*>(nullptr));
    std::perror("fusermount3");
    return 1;
  }
  // A directory no mount has used (a mistyped --cache-dir) is said so, not reported as an empty,
  // sound cache.
  if ((*stats || *verify) && !cache::DiskStore::HasCache(cdir)) {
    std::fprintf(stderr, "hubfs: no hubfs cache in %s (--cache-dir: the directory a mount used)\n", cdir.c_str());
    return 1;
  }
  if (*stats) return CacheStats(cdir);
  if (app.got_subcommand("status")) return tools::RunStatus();
  if (*warm) {
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    wo.endpoint = endpoint;
    wo.token = FindToken(warm_token_file, " warm")->Get();
    wo.cache_dir = warm_cache_dir;
    wo.hf_cache = hf_cache;
    // A mount holding the directory fills it alone (and would not see blocks written beside it):
    // warm through that mount instead.
    const auto lock = cache::DiskStore::LockDir(warm_cache_dir, "warm " + wo.repo);
    if (const std::string mp = HolderMount(lock); !mp.empty()) return tools::RunWarmThroughMount(wo, mp);
    if (lock.fd < 0 && !lock.holder.empty()) {
      std::fprintf(stderr, "hubfs: cache directory %s is in use (%s); try again once it is done\n",
                   warm_cache_dir.c_str(), lock.holder.c_str());
      return 1;
    }
    ParseSize(warm_cache_size, &wo.cache_bytes);
    wo.min_free_bytes = 1ULL << 30;
    wo.block_size = static_cast<size_t>(block_mib) << 20;
    ::umask(077);
    return tools::RunWarm(wo);
  }
  const bool had_cache = cache::DiskStore::HasCache(cdir);
  cache::DirLock cache_lock;  // clear and verify --remove-bad change what a mount would be using
  if ((*clear && had_cache) || (*verify && remove_bad)) {
    if (!LockCacheDir(cdir, *clear ? "cache clear" : "cache verify --remove-bad", "unmount it first", &cache_lock))
      return 1;
  }
  if (*verify) {
    const auto r = cache::DiskStore::VerifyAll(cdir, remove_bad);
    const auto m = cache::MetaStore::VerifyAll(cdir, remove_bad);
    const auto v = cache::MetaStore::VerifyAll(cdir, remove_bad, cache::MetaStore::kVerdictStore);
    std::printf("%llu blocks checked, %llu bad, %.1f MiB sound\n", static_cast<unsigned long long>(r.blocks),
                static_cast<unsigned long long>(r.bad), static_cast<double>(r.bytes) / 1048576.0);
    std::printf("%llu repo records checked, %llu bad\n", static_cast<unsigned long long>(m.records),
                static_cast<unsigned long long>(m.bad));
    std::printf("%llu verdicts on huggingface_hub's copies checked, %llu bad\n",
                static_cast<unsigned long long>(v.records), static_cast<unsigned long long>(v.bad));
    return r.bad == 0 && m.bad == 0 && v.bad == 0 ? 0 : 1;
  }
  if (*clear) {
    auto st = cache::DiskStore::Clear(cdir);  // (also what older formats left)
    if (!st.ok()) {
      std::fprintf(stderr, "hubfs: %s\n", st.error().ToString().c_str());
      return 1;
    }
    std::printf(had_cache ? "cache cleared: %s\n" : "no hubfs cache in %s: nothing to clear\n", cdir.c_str());
    return 0;
  }

  // mount
  const std::map<std::string, log::Level> levels = {
      {"error", log::Level::kError}, {"warn", log::Level::kWarn}, {"info", log::Level::kInfo}, {"debug", log::Level::kDebug}};
  log::SetLevel(levels.at(log_level));
  if (mo.debug) mo.foreground = true;
  mo.fuse_options = fuse_opts;
  mo.passthrough = !no_passthrough;
  uint64_t cache_bytes = 0, mem_bytes = 0, free_bytes = 0;
  ParseSize(cache_size, &cache_bytes);
  ParseSize(memory_cache, &mem_bytes);
  ParseSize(min_free, &free_bytes);
  // A plain number is bytes: "--memory-cache 1024" meant as MiB is a 1 KiB cache that makes every
  // load wait for a buffer (a cold shard then read at ~60 MB/s). Below a few blocks neither tier
  // can work, so such a size is refused rather than silently slow.
  const uint64_t min_tier = 4 * (static_cast<uint64_t>(block_mib) << 20);
  for (const auto& [opt, text, bytes] : {std::tuple{"--memory-cache", memory_cache, mem_bytes},
                                         std::tuple{"--cache-size", cache_size, cache_bytes}}) {
    if (bytes < min_tier) {
      std::fprintf(stderr, "hubfs: %s %s is %llu bytes, less than 4 blocks (%lluM); sizes take a unit, e.g. 512M or 20G\n",
                   opt, text.c_str(), static_cast<unsigned long long>(bytes),
                   static_cast<unsigned long long>(min_tier >> 20));
      return 2;
    }
  }
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  auto token = FindToken(token_file, "");
  struct stat st {};
  if (!RecoverDeadMount(mo.mountpoint)) return 1;
  if (::stat(mo.mountpoint.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::fprintf(stderr, "hubfs: mount point %s is not a directory\n", mo.mountpoint.c_str());
    return 1;
  }
  // The daemon changes its directory to /: relative paths are made absolute while they still mean
  // what the user meant.
  for (std::string* p : {&cache_dir, &hf_cache}) {
    char cwd[PATH_MAX];
    if (!p->empty() && (*p)[0] != '/' && *p != "none" && ::getcwd(cwd, sizeof cwd) != nullptr)
      *p = std::string(cwd) + "/" + *p;
  }
  ::umask(077);  // cache files and directories are private to the mounting user
  // Refused here, before anything is mounted; the lock's descriptor stays open for the daemon's
  // life (daemonizing forks, and the daemon keeps it).
  cache::DirLock mount_lock;
  const std::string lock_label = kMountLabel + Absolute(mo.mountpoint);
  if (!LockCacheDir(cache_dir, lock_label, "give this mount its own --cache-dir", &mount_lock)) return 1;
  std::unique_ptr<StatsWriter> stats_writer;
  const int rc = fs::RunMount(mo, [&]() -> std::unique_ptr<fs::Filesystem> {
    cache::DiskStore::LabelLock(mount_lock, lock_label);  // the daemon's own pid, now it has forked
    fetch::HttpOptions http;
    http.user_agent = "hubfs/0.1.0; fs/fuse";
    http.stall_timeout_s = stall_timeout;
    http.total_timeout_ms = static_cast<long>(request_timeout) * 1000;
    auto client = std::make_shared<fetch::HttpClient>(http);
    fetch::HubOptions ho;
    ho.endpoint = endpoint;
    ho.token = token;
    ho.offline = offline;
    auto hub = std::make_shared<fetch::HubClient>(ho, client);
    cache::CacheOptions co;
    co.block_size = static_cast<size_t>(block_mib) << 20;
    co.memory_bytes = mem_bytes;
    co.disk_dir = cache_dir;
    co.disk_bytes = cache_bytes;
    co.min_free_bytes = free_bytes;
    co.loader_threads = loader_threads;
    co.huge_pages = !no_huge_pages;
    auto block_cache = std::make_shared<cache::BlockCache>(co);
    fs::FsOptions fo;
    fo.revision_ttl = std::chrono::seconds(revision_ttl);
    fo.request_timeout = std::chrono::seconds(request_timeout);
    fo.uid = getuid();
    fo.gid = getgid();
    fo.capacity_bytes = cache_bytes;
    fo.direct_min_bytes = uint64_t{mo.direct_min_mib} << 20;
    // Two kernel readahead batches (read_ahead_kb each) arrive in any order: one stream.
    fo.readahead.forward_tolerance = fo.readahead.backward_tolerance =
        std::clamp<uint64_t>(uint64_t{mo.read_ahead_kb} << 11, 16u << 20, 64u << 20);
    // One sequential stream can keep every fetch thread busy (against a distant CDN, where each
    // connection is slow, more threads only help if a stream may have that many blocks in flight);
    // the prefetch budget (half the memory cache) still bounds all streams together.
    fo.readahead.max_window =
        std::max<uint64_t>(fo.readahead.max_window, static_cast<uint64_t>(loader_threads) * co.block_size);
    fo.status_header = "endpoint: " + endpoint + "\ncache: " + cache_dir + " (cap " + cache_size + ", memory " +
                       memory_cache + ")\nversion: 0.1.0\n";
    if (block_cache->disk() || !metrics_file.empty())
      stats_writer = std::make_unique<StatsWriter>(block_cache->disk() ? cache_dir + "/stats" : "", metrics_file);
    LOG_INFO("endpoint %s, cache %s (%s disk, %s memory), token from %s: %s%s", endpoint.c_str(),
             cache_dir.c_str(), cache_size.c_str(), memory_cache.c_str(), token->origin().c_str(),
             token->Get().empty() ? "none" : "set", token->watched() ? " (re-read when the file changes)" : "");
    std::shared_ptr<cache::MetaStore> meta;
    if (block_cache->disk()) {
      auto m = cache::MetaStore::Open(cache_dir);
      if (m.ok()) meta = std::move(m.value());
      else LOG_WARN("no revision records in %s: %s", cache_dir.c_str(), m.error().ToString().c_str());
    }
    if (offline) LOG_INFO("offline: the Hub is never asked; serving what %s holds", cache_dir.c_str());
    std::shared_ptr<cache::HfHubCache> hf;
    if (!hf_cache.empty() && hf_cache != "none") {
      std::shared_ptr<cache::MetaStore> verdicts;
      if (block_cache->disk()) {
        auto v = cache::HfHubCache::OpenVerdicts(cache_dir);
        if (v.ok()) verdicts = std::move(v.value());
        else LOG_WARN("huggingface_hub's copies will be hashed at every mount: %s", v.error().ToString().c_str());
      }
      hf = std::make_shared<cache::HfHubCache>(hf_cache, verdicts);
      LOG_INFO("files huggingface_hub downloaded to %s are read from there (verified first)", hf_cache.c_str());
    }
    return std::make_unique<fs::Filesystem>(fo, hub, block_cache, meta, hf);
  });
  stats_writer.reset();
  return rc;
}
