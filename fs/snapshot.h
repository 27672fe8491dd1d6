// A Snapshot is one repo at one commit: its whole tree, built from one recursive tree listing and
// immutable afterwards. Everything under /hf/{org}/{name}@{rev}/ is served from a Snapshot, which is
// why an open file never mixes two commits: the inode holds the Snapshot it was looked up in.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache/block_key.h"
#include "common/status.h"
#include "fetch/hub_client.h"

namespace hubfs::fs {

struct SnapshotNode {
  std::string name;
  std::string path;  // from the repo root; "" for the root
  bool is_dir = false;
  uint64_t size = 0;
  std::optional<cache::ContentId> content;  // files only
  bool lfs = false;
  std::string oid;  // git blob sha1
  std::string lfs_sha256;
  std::vector<uint32_t> children;  // directories: indices into nodes, sorted by name
  uint32_t parent = 0;             // index of the containing directory (the root is its own)
  uint32_t position = 0;           // index among the parent's sorted children
};

class Snapshot {
 public:
  // Builds the tree; entries with invalid paths or without content identity are skipped (logged).
  static std::shared_ptr<const Snapshot> Build(fetch::RepoType type, std::string repo_id, std::string commit,
                                               int64_t mtime, const std::vector<fetch::TreeEntry>& entries);

  fetch::RepoType type() const { return type_; }
  const std::string& repo_id() const { return repo_id_; }
  const std::string& commit() const { return commit_; }
  int64_t mtime() const { return mtime_; }
  const SnapshotNode& node(uint32_t i) const { return nodes_[i]; }
  size_t node_count() const { return nodes_.size(); }
  // The child of directory `dir` named `name`, if any.
  std::optional<uint32_t> Child(uint32_t dir, std::string_view name) const;
  std::optional<uint32_t> Find(std::string_view path) const;

 private:
  fetch::RepoType type_ = fetch::RepoType::kModel;
  std::string repo_id_, commit_;
  int64_t mtime_ = 0;
  std::vector<SnapshotNode> nodes_;  // nodes_[0] is the root
  std::unordered_map<std::string, uint32_t> by_path_;
};

}  // namespace hubfs::fs
