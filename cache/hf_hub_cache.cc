// Copies in huggingface_hub's cache, verified before use (see hf_hub_cache.h).
#include "cache/hf_hub_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <climits>
#include <cstdio>
#include <vector>

#include "common/file_util.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/metrics.h"

namespace hubfs::cache {
namespace {

constexpr size_t kHashChunk = 8u << 20;
constexpr const char* kRecordPrefix = "hf-blob|";
constexpr size_t kMaxSnapshotFiles = 1u << 20;
constexpr int kMaxSnapshotDepth = 64;

// A relative path of plain names (a ref like "v1.0" or "refs/pr/1"): no "", "." or ".." part.
bool PlainRelative(std::string_view p) {
  if (p.empty() || p.front() == '/') return false;
  size_t b = 0;
  for (;;) {
    const size_t e = p.find('/', b);
    const std::string_view part = p.substr(b, e == std::string_view::npos ? std::string_view::npos : e - b);
    if (part.empty() || part == "." || part == "..") return false;
    if (e == std::string_view::npos) return true;
    b = e + 1;
  }
}

void WalkSnapshot(const std::string& dir, const std::string& rel, int depth, std::vector<HfHubCache::File>* out) {
  if (depth > kMaxSnapshotDepth) return;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == ".." || out->size() >= kMaxSnapshotFiles) continue;
    const std::string full = dir + "/" + name, path = rel.empty() ? name : rel + "/" + name;
    struct stat st {};
    if (::lstat(full.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      WalkSnapshot(full, path, depth + 1, out);
      continue;
    }
    if (!S_ISLNK(st.st_mode)) continue;  // stored without a link: its id is unknown
    char target[PATH_MAX];
    const ssize_t n = ::readlink(full.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    const std::string_view t(target, static_cast<size_t>(n));
    const std::string_view blob = t.substr(t.rfind('/') == std::string_view::npos ? 0 : t.rfind('/') + 1);
    std::optional<ContentId> id = ContentId::FromHex(IdKind::kSha256, blob);
    if (!id) id = ContentId::FromHex(IdKind::kGitSha1, blob);
    struct stat target_st {};
    if (!id || ::stat(full.c_str(), &target_st) != 0 || !S_ISREG(target_st.st_mode)) continue;
    out->push_back(HfHubCache::File{path, static_cast<uint64_t>(target_st.st_size), *id});
  }
  ::closedir(d);
}

// A verdict's record names the copy as it was hashed.
std::string IdentityText(const FileIdentity& i) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%llu %llu %llu %lld %lld", i.dev, i.ino, i.size, i.mtime_ns, i.ctime_ns);
  return buf;
}

}  // namespace

HfHubCache::HfHubCache(std::string root, std::shared_ptr<MetaStore> meta, int threads)
    : root_(std::move(root)),
      meta_(std::move(meta)),
      pool_(std::make_unique<WorkerPool>(threads, WorkerPool::Priority::kNormal, "hubfs-hfverify")) {}

HfHubCache::~HfHubCache() {
  stopping_ = true;  // a hash in progress stops at its next chunk; its verdict is not kept
  pool_.reset();
}

std::string HfHubCache::RepoFolder(std::string_view type_plural, std::string_view repo_id) {
  std::string out(type_plural);
  out += "--";
  for (char c : repo_id) {
    if (c == '/') out += "--";
    else out.push_back(c);
  }
  return out;
}

std::string HfHubCache::Commit(const std::string& folder, const std::string& rev) const {
  if (root_.empty() || folder.empty()) return "";
  const std::string repo = root_ + "/" + folder;
  struct stat st {};
  if (IsHexDigits(rev, 40))
    return ::stat((repo + "/snapshots/" + rev).c_str(), &st) == 0 && S_ISDIR(st.st_mode) ? rev : "";
  const std::string name = rev.empty() ? "main" : rev;
  std::string text;
  if (!PlainRelative(name) || ReadFileUpTo(repo + "/refs/" + name, 256, &text) != 0) return "";
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  return IsHexDigits(text, 40) ? text : "";
}

std::optional<std::vector<HfHubCache::File>> HfHubCache::Files(const std::string& folder,
                                                                const std::string& commit) const {
  if (root_.empty() || folder.empty() || !IsHexDigits(commit, 40)) return std::nullopt;
  const std::string base = root_ + "/" + folder + "/snapshots/" + commit;
  struct stat st {};
  if (::stat(base.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return std::nullopt;
  std::vector<File> out;
  WalkSnapshot(base, "", 0, &out);
  return out;
}

std::vector<std::string> HfHubCache::Repos(std::string_view type_plural, const std::string& org) const {
  std::vector<std::string> out;
  if (root_.empty() || org.empty()) return out;
  const std::string prefix = std::string(type_plural) + "--" + org + "--";
  DIR* d = ::opendir(root_.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string repo = name.substr(prefix.size());
    struct stat st {};
    if (repo.find("--") == std::string::npos && ::stat((root_ + "/" + name + "/snapshots").c_str(), &st) == 0 &&
        S_ISDIR(st.st_mode))
      out.push_back(repo);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string HfHubCache::Find(const std::string& folder, const std::string& commit, const std::string& path,
                             const ContentId& id, uint64_t size, const CancelToken* cancel, bool wait,
                             bool* pending, FileIdentity* verified) {
  static auto& m_used = metrics::Get("hf_cache.copies_used");
  if (pending != nullptr) *pending = false;
  if (root_.empty() || folder.empty()) return "";
  const std::string repo = root_ + "/" + folder;
  // The blob, else (downloads made without symlinks) the file itself in the commit's snapshot.
  const std::string candidates[] = {repo + "/blobs/" + id.Hex(),
                                    commit.empty() || path.empty() ? "" : repo + "/snapshots/" + commit + "/" + path};
  FileIdentity first;
  for (const std::string& c : candidates) {
    if (c.empty()) continue;
    const FileIdentity idn = StatIdentity(c);
    if (!idn.regular || idn.size != size) continue;
    if (idn.dev == first.dev && idn.ino == first.ino) continue;  // the snapshot's link to the blob
    first = idn;
    std::shared_future<bool> good = VerdictFor(c, idn, id);
    if (good.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      if (pending != nullptr) *pending = true;
      if (!wait) return "";
      const auto deadline = cancel != nullptr ? cancel->deadline() : CancelToken::Clock::time_point::max();
      // Polled, so that an interrupted reader stops waiting at once.
      while (good.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
        if ((cancel != nullptr && cancel->ShouldStop()) || CancelToken::Clock::now() >= deadline) {
          LOG_INFO("still hashing %s (huggingface_hub's copy): fetching meanwhile", c.c_str());
          return "";
        }
      }
    }
    if (pending != nullptr) *pending = false;
    if (good.get()) {
      m_used.Add();
      if (verified != nullptr) *verified = idn;
      return c;
    }
  }
  return "";
}

Result<std::unique_ptr<MetaStore>> HfHubCache::OpenVerdicts(const std::string& cache_dir) {
  return MetaStore::Open(cache_dir, kVerdictLimits, MetaStore::kVerdictStore);
}

std::shared_future<bool> HfHubCache::VerdictFor(const std::string& path, const FileIdentity& idn,
                                                const ContentId& id) {
  std::lock_guard lock(mu_);
  auto it = verdicts_.find(path);
  if (it != verdicts_.end() && it->second.identity == idn) return it->second.good;
  // Another mount (or this one, before a restart) may have hashed it already.
  if (meta_) {
    const std::string as_hashed = IdentityText(idn) + " ";
    if (auto v = meta_->Get(kRecordPrefix + path); v && v->rfind(as_hashed, 0) == 0) {
      std::promise<bool> p;
      p.set_value(v->substr(as_hashed.size()) == "good");
      Verdict& slot = verdicts_[path];
      slot = Verdict{idn, p.get_future().share()};
      return slot.good;
    }
  }
  auto p = std::make_shared<std::promise<bool>>();
  Verdict& slot = verdicts_[path];
  slot = Verdict{idn, p->get_future().share()};
  pool_->Run([this, p, path, idn, id] { p->set_value(Hash(path, idn, id)); });
  return slot.good;
}

void HfHubCache::Forget(const std::string& path, const FileIdentity& idn) {
  std::lock_guard lock(mu_);
  if (auto it = verdicts_.find(path); it != verdicts_.end() && it->second.identity == idn) verdicts_.erase(it);
}

bool HfHubCache::Hash(const std::string& path, const FileIdentity& idn, const ContentId& id) {
  static auto& m_hashed = metrics::Get("hf_cache.bytes_hashed");
  static auto& m_bad = metrics::Get("hf_cache.copies_mismatched");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || FdIdentity(fd) != idn) {
    // Out of descriptors, say, or replaced since it was looked at: no verdict on the copy (the next
    // Find looks at what is there then).
    if (fd >= 0) ::close(fd);
    Forget(path, idn);
    return false;
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  ContentHasher hasher(id, idn.size);
  // Two buffers: the next chunk is read (by a helper thread) while this one is hashed. One after
  // the other, the read and the hash took as long as both (1.25 GB/s here, the disk and SHA-256
  // each being near 2).
  std::vector<char> bufs[2] = {std::vector<char>(kHashChunk), std::vector<char>(kHashChunk)};
  auto read_at = [fd, size = idn.size](char* buf, uint64_t at) -> ssize_t {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kHashChunk, size - at));
    return PreadAll(fd, buf, want, static_cast<off_t>(at)) ? static_cast<ssize_t>(want) : -1;
  };
  uint64_t off = 0;
  bool read_ok = true;
  std::future<ssize_t> next;
  if (idn.size > 0) next = std::async(std::launch::async, read_at, bufs[0].data(), uint64_t{0});
  for (int cur = 0; off < idn.size; cur ^= 1) {
    const ssize_t n = next.get();
    if (n <= 0 || stopping_) {
      read_ok = false;  // cut short, unreadable or unmounting: not used, and not remembered
      break;
    }
    const uint64_t after = off + static_cast<uint64_t>(n);
    if (after < idn.size) next = std::async(std::launch::async, read_at, bufs[cur ^ 1].data(), after);
    hasher.Update(bufs[cur].data(), static_cast<size_t>(n));
    off = after;
    m_hashed.Add(static_cast<uint64_t>(n));
  }
  if (next.valid()) next.wait();  // (its buffer and descriptor are still in use)
  ::close(fd);
  if (!read_ok || !(StatIdentity(path) == idn)) {  // cut short, or changed while hashed
    Forget(path, idn);
    return false;
  }
  const bool good = hasher.Matches();
  if (!good) {
    m_bad.Add();
    LOG_WARN("%s does not hash to its name (huggingface_hub's cache is damaged there): not used", path.c_str());
  } else {
    LOG_INFO("using huggingface_hub's copy %s (verified, %llu bytes)", path.c_str(), idn.size);
  }
  if (meta_) {
    if (auto st = meta_->Put(kRecordPrefix + path, IdentityText(idn) + (good ? " good" : " bad")); !st.ok())
      LOG_DEBUG("verdict on %s not kept: %s", path.c_str(), st.error().ToString().c_str());
  }
  return good;
}

}  // namespace hubfs::cache
