// Files huggingface_hub already downloaded, read in place instead of fetched again.
//
// A machine that has run `hf download`, `snapshot_download` or a transformers load holds those
// files in huggingface_hub's cache ($HF_HUB_CACHE, normally ~/.cache/huggingface/hub): one folder
// per repo ("models--org--name"), each file's bytes once under blobs/<etag>, where the etag is the
// LFS sha256 or, for a small file, its git blob sha1, the same content identities hubfs keys its
// blocks by. When `hf download` was told not to use symlinks, the bytes sit under
// snapshots/<commit>/<path> instead. Find() names such a copy, so that the block cache reads it
// (and FUSE passthrough lets the kernel read it) rather than fetching the file a second time.
//
// Never trusted on its name alone: a copy is used only once its bytes have been hashed and found to
// match the content identity (a blob cut short by a full disk, or edited, is never served). The
// hash runs once per copy: the verdict is kept, in memory and in the MetaStore across mounts, with
// the copy's identity (device, inode, size, mtime, ctime), and any change to the file makes it a
// new copy, hashed again. Hashing runs on this class's threads: a caller waits for it at most until
// its deadline, and the hash goes on after a caller gave up, so a later open finds it done.
//
// Read-only: nothing is ever written into huggingface_hub's cache.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache/block_key.h"
#include "cache/meta_store.h"
#include "cache/worker_pool.h"
#include "common/cancel.h"
#include "common/file_util.h"

namespace hubfs::cache {

class HfHubCache {
 public:
  // root: huggingface_hub's cache directory; meta (optional): where verdicts outlive the mount
  // (OpenVerdicts).
  HfHubCache(std::string root, std::shared_ptr<MetaStore> meta, int threads = 2);
  // The verdicts' store in hubfs cache directory `cache_dir`: a store of their own, apart from the
  // repo records (a dataset of many thousand files would otherwise prune the records a mount
  // without the Hub needs), and large enough to remember that many copies (a forgotten verdict
  // costs hashing the copy again).
  static Result<std::unique_ptr<MetaStore>> OpenVerdicts(const std::string& cache_dir);
  static constexpr MetaLimits kVerdictLimits{65536, 64ULL << 20};
  ~HfHubCache();
  HfHubCache(const HfHubCache&) = delete;
  HfHubCache& operator=(const HfHubCache&) = delete;

  // huggingface_hub's folder of a repo: "models--org--name" (`type_plural`: models, datasets...).
  static std::string RepoFolder(std::string_view type_plural, std::string_view repo_id);

  // The path of a verified copy of `id` (`size` bytes) in repo folder `folder`, at `commit`/`path`
  // in the repo, or "" when there is none (not downloaded, the wrong size, bytes that do not match,
  // or still being hashed when `cancel`'s deadline came; no `cancel`: no deadline). Without `wait`, a copy not hashed yet is
  // queued for hashing and "" returned at once (prefetches: they must not wait on the disk).
  // *pending (optional): set when "" was returned for a copy whose hash is still running.
  // *verified (optional): the identity of the copy whose bytes were hashed, for the caller to check
  // that what it opens at the path returned is still that file (BlockCache::AddLocalCopy).
  std::string Find(const std::string& folder, const std::string& commit, const std::string& path,
                   const ContentId& id, uint64_t size, const CancelToken* cancel, bool wait = true,
                   bool* pending = nullptr, FileIdentity* verified = nullptr);

  // For a mount that cannot ask the Hub (offline, or unreachable), what huggingface_hub's cache
  // knows of a repo:
  // the commit `rev` points to (refs/<rev>; "" is main; a full commit with a snapshot folder is
  // itself), or "";
  std::string Commit(const std::string& folder, const std::string& rev) const;
  struct File {
    std::string path;  // in the repo
    uint64_t size = 0;
    ContentId id;
  };
  // the files downloaded at `commit`: the snapshot folder's links to blobs (a blob's name is the
  // file's id; files stored without a link have no id and are left out); nullopt if there is no
  // snapshot folder;
  std::optional<std::vector<File>> Files(const std::string& folder, const std::string& commit) const;
  // the names of org `org`'s repos of `type_plural` with a snapshot folder, sorted.
  std::vector<std::string> Repos(std::string_view type_plural, const std::string& org) const;

  const std::string& root() const { return root_; }

 private:
  struct Verdict {
    FileIdentity identity;
    std::shared_future<bool> good;  // ready once hashed
  };
  // The verdict on `path` as it is now (identity `idn`), starting its hash if there is none.
  std::shared_future<bool> VerdictFor(const std::string& path, const FileIdentity& idn, const ContentId& id);
  // Hashes `path` (run on pool_): true if its bytes match `id` and it is still `idn` afterwards.
  // A copy that could not be read whole, or changed meanwhile, is false and forgotten (looked at
  // afresh by the next Find).
  bool Hash(const std::string& path, const FileIdentity& idn, const ContentId& id);
  void Forget(const std::string& path, const FileIdentity& idn);

  const std::string root_;
  const std::shared_ptr<MetaStore> meta_;
  std::mutex mu_;  // a leaf
  std::unordered_map<std::string, Verdict> verdicts_;  // by path
  std::atomic<bool> stopping_{false};
  std::unique_ptr<WorkerPool> pool_;  // last: joined first
};

}  // namespace hubfs::cache
