// Small metadata records kept beside the block cache, so that a mount started while the Hub is
// unreachable (a reboot during an outage, an air-gapped VM after `hubfs warm`) still finds the
// repos it has seen: which commit a revision resolved to, and that commit's file tree.
//
// One file per record under <dir>/v2/meta/<xxh3-128 of the key>, written to a temp name there and
// renamed into place. Each file holds its key, its value's length and an xxh3 of both; a file that
// fails any check is a miss (and removed), never a wrong answer. The records are bounded (count
// and bytes, oldest written dropped first) and private to the user like the blocks. Knows nothing
// of what the values mean: fs/ stores them in the Hub's own JSON shapes.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace hubfs::cache {

struct MetaLimits {
  uint64_t max_records = 4096;
  uint64_t max_bytes = 256ULL << 20;
};

struct MetaVerifyReport {
  uint64_t records = 0;
  uint64_t bad = 0;
};

class MetaStore {
 public:
  // Creates <dir>/v2/<name> (0700) and removes temp files left by a daemon that died mid-write.
  // "meta" holds the repo records; other names are stores of their own, with their own limits
  // (huggingface_hub copies' verdicts, kVerdictStore), so that one kind never prunes the other.
  static Result<std::unique_ptr<MetaStore>> Open(const std::string& dir, MetaLimits limits = {},
                                                 std::string_view name = kRepoStore);
  static constexpr std::string_view kRepoStore = "meta";
  static constexpr std::string_view kVerdictStore = "verdicts";

  // The value stored under `key`; nullopt when absent or when the record fails its checks.
  std::optional<std::string> Get(const std::string& key) const;
  // True if a record is stored under `key`; marks it as recently used (pruning drops the oldest).
  bool Touch(const std::string& key);
  // Stores (or replaces) `key`'s value (temp file + rename: a reader sees the old record or the new).
  Status Put(const std::string& key, std::string_view value);

  // Offline check of every record under `dir` (the daemon need not run): its format, checksum, and
  // that its name is the hash of its key. Bad ones are removed when remove_bad.
  static MetaVerifyReport VerifyAll(const std::string& dir, bool remove_bad, std::string_view name = kRepoStore);

  uint64_t records() const;
  uint64_t bytes() const;

 private:
  MetaStore(std::string root, MetaLimits limits) : root_(std::move(root)), limits_(limits) {}
  std::string PathFor(const std::string& key) const;
  void Rescan();          // mu_ held: counts from the directory
  void PruneIfNeeded();   // mu_ held: drops the oldest records while over a limit

  const std::string root_;  // <dir>/v2/meta
  const MetaLimits limits_;
  mutable std::mutex mu_;  // serializes writers and the counters; readers need no lock
  uint64_t records_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace hubfs::cache
