// Whole-file verification: when every block of a file has passed through the cache, the file's
// bytes are hashed once and compared with its content identity, which is itself a hash: the LFS
// sha256 (sha256 of the bytes) or the git blob id (sha1 of "blob <n>\0" + bytes). A mismatch means
// the origin served wrong bytes that still had the right length; the file's blocks are purged from
// both tiers and the event is logged and counted, so the next read refetches.
//
// The tracker only does bookkeeping (which blocks of which open files have been seen); BlockCache
// runs the verification in its background arena. A successful verification leaves a marker file so
// that a file is verified once per cache, not once per mount.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/block_key.h"

namespace hubfs::cache {

struct ContentIdHash {
  size_t operator()(const ContentId& id) const { return BlockKeyHash{}(BlockKey{id, 0}); }
};

class FileTracker {
 public:
  static constexpr size_t kMaxTracked = 4096;

  // Starts tracking a file (idempotent). Files already verified (verified_dir marker) are ignored.
  void Track(const ContentId& id, uint64_t size, uint64_t block_size, const std::string& verified_dir);
  // Records that block `key.index` is cached; returns the file's size when this completed the file.
  std::optional<uint64_t> NotePresent(const BlockKey& key);
  void Forget(const ContentId& id);

  static std::string MarkerPath(const std::string& verified_dir, const ContentId& id);

 private:
  struct File {
    uint64_t size = 0;
    std::vector<bool> seen;
    uint64_t count = 0;
    bool done = false;
  };
  std::mutex mu_;
  std::unordered_map<ContentId, File, ContentIdHash> files_;
};

}  // namespace hubfs::cache
