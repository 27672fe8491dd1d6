// Snapshot construction (see snapshot.h).
#include "fs/snapshot.h"

#include <algorithm>

#include "common/log.h"
#include "fs/names.h"

namespace hubfs::fs {

std::shared_ptr<const Snapshot> Snapshot::Build(fetch::RepoType type, std::string repo_id, std::string commit,
                                                int64_t mtime, const std::vector<fetch::TreeEntry>& entries) {
  auto s = std::make_shared<Snapshot>();
  s->type_ = type;
  s->repo_id_ = std::move(repo_id);
  s->commit_ = std::move(commit);
  s->mtime_ = mtime;
  s->nodes_.push_back(SnapshotNode{.name = "", .path = "", .is_dir = true});
  s->by_path_[""] = 0;

  // Directories are created for every prefix, whether or not the listing named them.
  auto ensure_dir = [&](const std::string& path) -> std::optional<uint32_t> {
    uint32_t cur = 0;
    size_t start = 0;
    while (start < path.size()) {
      size_t slash = path.find('/', start);
      if (slash == std::string::npos) slash = path.size();
      const std::string prefix = path.substr(0, slash);
      auto it = s->by_path_.find(prefix);
      if (it == s->by_path_.end()) {
        const auto idx = static_cast<uint32_t>(s->nodes_.size());
        s->nodes_.push_back(SnapshotNode{.name = path.substr(start, slash - start), .path = prefix, .is_dir = true});
        s->nodes_[cur].children.push_back(idx);
        s->by_path_.emplace(prefix, idx);
        cur = idx;
      } else {
        if (!s->nodes_[it->second].is_dir) return std::nullopt;  // a file where a dir should be
        cur = it->second;
      }
      start = slash + 1;
    }
    return cur;
  };

  size_t skipped = 0;
  for (const auto& e : entries) {
    if (!IsValidRepoPath(e.path)) {
      ++skipped;
      continue;
    }
    if (e.is_dir) {
      if (!ensure_dir(e.path)) ++skipped;
      continue;
    }
    if (s->by_path_.count(e.path)) {
      ++skipped;  // duplicate
      continue;
    }
    const size_t slash = e.path.rfind('/');
    auto parent = slash == std::string::npos ? std::optional<uint32_t>(0) : ensure_dir(e.path.substr(0, slash));
    if (!parent) {
      ++skipped;
      continue;
    }
    SnapshotNode n;
    n.name = slash == std::string::npos ? e.path : e.path.substr(slash + 1);
    n.path = e.path;
    n.size = e.size;
    n.oid = e.oid;
    n.lfs_sha256 = e.lfs_sha256;
    n.lfs = !e.lfs_sha256.empty();
    n.content = n.lfs ? cache::ContentId::FromHex(cache::IdKind::kSha256, e.lfs_sha256)
                      : cache::ContentId::FromHex(cache::IdKind::kGitSha1, e.oid);
    if (!n.content) {
      ++skipped;
      continue;
    }
    const auto idx = static_cast<uint32_t>(s->nodes_.size());
    s->nodes_.push_back(std::move(n));
    s->nodes_[*parent].children.push_back(idx);
    s->by_path_.emplace(e.path, idx);
  }
  for (uint32_t d = 0; d < s->nodes_.size(); ++d) {
    auto& kids = s->nodes_[d].children;
    std::sort(kids.begin(), kids.end(), [&](uint32_t a, uint32_t b) { return s->nodes_[a].name < s->nodes_[b].name; });
    for (uint32_t i = 0; i < kids.size(); ++i) {
      s->nodes_[kids[i]].parent = d;
      s->nodes_[kids[i]].position = i;
    }
  }
  if (skipped > 0)
    LOG_WARN("%s@%.8s: skipped %zu tree entries the Hub should never produce", s->repo_id_.c_str(),
             s->commit_.c_str(), skipped);
  return s;
}

std::optional<uint32_t> Snapshot::Child(uint32_t dir, std::string_view name) const {
  if (dir >= nodes_.size() || !nodes_[dir].is_dir) return std::nullopt;
  const auto& kids = nodes_[dir].children;
  auto it = std::lower_bound(kids.begin(), kids.end(), name,
                             [&](uint32_t a, std::string_view n) { return nodes_[a].name < n; });
  if (it == kids.end() || nodes_[*it].name != name) return std::nullopt;
  return *it;
}

std::optional<uint32_t> Snapshot::Find(std::string_view path) const {
  auto it = by_path_.find(std::string(path));
  if (it == by_path_.end()) return std::nullopt;
  return it->second;
}

}  // namespace hubfs::fs
