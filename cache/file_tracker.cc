// Whole-file verification bookkeeping (see file_tracker.h).
#include "cache/file_tracker.h"

#include <unistd.h>

namespace hubfs::cache {

std::string FileTracker::MarkerPath(const std::string& verified_dir, const ContentId& id) {
  return verified_dir + "/" + id.Hex() + "-" + std::to_string(static_cast<int>(id.kind));
}

void FileTracker::Track(const ContentId& id, uint64_t size, uint64_t block_size, const std::string& verified_dir) {
  if (size == 0 || block_size == 0) return;
  {
    std::lock_guard lock(mu_);
    if (files_.count(id)) return;
  }
  if (!verified_dir.empty() && ::access(MarkerPath(verified_dir, id).c_str(), F_OK) == 0) return;
  std::lock_guard lock(mu_);
  if (files_.size() >= kMaxTracked) files_.erase(files_.begin());
  File f;
  f.size = size;
  f.seen.assign((size + block_size - 1) / block_size, false);
  files_.emplace(id, std::move(f));
}

std::optional<uint64_t> FileTracker::NotePresent(const BlockKey& key) {
  std::lock_guard lock(mu_);
  auto it = files_.find(key.content);
  if (it == files_.end()) return std::nullopt;
  File& f = it->second;
  if (f.done || key.index >= f.seen.size() || f.seen[key.index]) return std::nullopt;
  f.seen[key.index] = true;
  if (++f.count < f.seen.size()) return std::nullopt;
  f.done = true;
  return f.size;
}

void FileTracker::Forget(const ContentId& id) {
  std::lock_guard lock(mu_);
  files_.erase(id);
}

}  // namespace hubfs::cache
