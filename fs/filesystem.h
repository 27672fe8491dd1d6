// The FUSE-free core of hubfs: the namespace (/, datasets/, spaces/, orgs, repos at revisions), the
// inode table, and the read path. The FUSE adapter decodes a request, calls one method here, and
// replies; every method returns a Result whose Error the adapter maps to errno (errno_map.h).
//
// Namespace:  /{org}/{name}[@{rev}]/...            models
//             /datasets/{org}/{name}[@{rev}]/...   datasets
//             /spaces/{org}/{name}[@{rev}]/...     spaces
//             /{legacy}  -> symlink to {org}/{name} (e.g. gpt2 -> openai-community/gpt2)
// A repo directory is resolved on lookup to a commit and served from that commit's Snapshot; the
// default branch (no '@') is re-resolved after revision_ttl, and a new commit becomes a new inode,
// so open files keep reading the commit they were opened at. Snapshot content never changes, so its
// entries and attributes get long kernel timeouts and its files keep their page cache across opens.
//
// Read path: a READ maps to the cache blocks it covers; each comes from the BlockCache (memory,
// disk, or one fetch shared by every reader of that block). Readahead (readahead.h) runs per handle
// and issues background prefetches before the demand blocks are awaited. No lock is held across a
// network wait: handles have a small mutex for readahead state only.
#pragma once

#include <sys/types.h>
#include <tbb/concurrent_hash_map.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/block_cache.h"
#include "cache/hf_hub_cache.h"
#include "cache/meta_store.h"
#include "cache/worker_pool.h"
#include "common/cancel.h"
#include "common/status.h"
#include "fetch/hub_client.h"
#include "fs/readahead.h"
#include "fs/safetensors_plan.h"
#include "fs/snapshot.h"

namespace hubfs::fs {

struct OpenOut {
  uint64_t fh = 0;
  bool direct_io = false;  // generated content (the stats file): no page cache
  // The file's verified whole copy on the local disk, when there is one and passthrough is on:
  // the FUSE layer may let the kernel read it directly. `backing_hold` keeps what `backing` names
  // open (a local copy's descriptor) until the FUSE layer has opened it.
  std::string backing;
  std::shared_ptr<const void> backing_hold;
  // A large file not all in the cache yet: the FUSE layer may open it with FOPEN_DIRECT_IO (its
  // reads then go straight into the reader's buffer, not through the page cache; passthrough.h).
  bool may_direct = false;
};

// The hidden live-statistics file at the root of the mount.
inline constexpr const char* kStatsFileName = ".hubfs-stats";

struct FsOptions {
  std::chrono::seconds revision_ttl{60};
  std::chrono::seconds request_timeout{50};  // every FUSE request ends within this
  double pinned_timeout_s = 86400.0;         // kernel entry/attr timeout of immutable content
  uid_t uid = 0;
  gid_t gid = 0;
  ReadaheadConfig readahead;
  std::string status_header;  // first lines of the stats file (endpoint, cache dir, version)
  uint64_t capacity_bytes = 0;  // what statfs reports as the size: the cache's cap
  // Files at least this large that are not all in the cache may be opened direct (OpenOut); 0: none.
  uint64_t direct_min_bytes = uint64_t{64} << 20;
};

struct Attr {
  uint64_t ino = 0;
  mode_t mode = 0;
  uint64_t size = 0;
  uint32_t nlink = 1;
  int64_t mtime = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

struct EntryOut {
  uint64_t ino = 0;  // 0: a negative entry (ENOENT the kernel may cache for entry_timeout)
  Attr attr;
  double entry_timeout = 0;
  double attr_timeout = 0;
};

struct DirEntryOut {
  std::string name;
  uint64_t ino = 0;
  mode_t type = 0;  // S_IFDIR, S_IFREG, S_IFLNK
};

struct ReadSlice {
  cache::BlockRef block;  // keeps the bytes alive until the reply is sent
  size_t offset = 0;
  size_t len = 0;
};

struct StatFsOut {
  uint64_t block_size, blocks, blocks_free, files, files_free, name_max;
};

// Names of the records a cache's MetaStore keeps for offline use (also written by `hubfs warm`):
// what `rev` of a repo resolved to ("" is the default branch), a commit's file tree, and that a
// top-level name is an org (not a legacy repo id), and the org's last listing (repo ids, one per
// line).
std::string OrgRecordKey(fetch::RepoType type, const std::string& org);
std::string OrgListingRecordKey(fetch::RepoType type, const std::string& org);
std::string RevisionRecordKey(fetch::RepoType type, const std::string& id, const std::string& rev);
std::string TreeRecordKey(fetch::RepoType type, const std::string& id, const std::string& commit);

class Filesystem {
 public:
  static constexpr uint64_t kRootIno = 1;

  // meta (optional): where resolved revisions and tree listings are kept, so that a mount started
  // while the Hub is unreachable still serves the repos this cache has seen.
  // hf (optional): huggingface_hub's cache, whose verified copies of a file are read instead of
  // fetching it.
  Filesystem(FsOptions options, std::shared_ptr<fetch::HubClient> hub, std::shared_ptr<cache::BlockCache> cache,
             std::shared_ptr<cache::MetaStore> meta = nullptr, std::shared_ptr<cache::HfHubCache> hf = nullptr);
  ~Filesystem();

  Result<EntryOut> Lookup(uint64_t parent, const std::string& name);
  void Forget(uint64_t ino, uint64_t nlookup);
  Result<Attr> GetAttr(uint64_t ino, double* attr_timeout);
  Result<std::vector<DirEntryOut>> ReadDir(uint64_t ino);
  // Whether the entries ReadDir(ino) lists can be looked up without the network (a directory of a
  // repo snapshot), so a listing may carry their attributes (READDIRPLUS).
  bool ListsWithAttrs(uint64_t ino);
  Result<std::string> ReadLink(uint64_t ino);
  Result<OpenOut> Open(uint64_t ino, int flags);
  // Whether handle fh (OpenOut::may_direct), opened by process `tgid`, may be opened with
  // FOPEN_DIRECT_IO: yes if no other process reads its inode direct, or if those that do have not
  // read past the blocks the cache keeps after returning them (8 ranks started together each
  // reading a whole shard are all served from the daemon's memory, in step: measured faster and
  // steadier than one direct reader plus seven through the page cache, which the daemon serves a
  // second time). A process opening later shares the page cache: however far behind it falls, it
  // does not need blocks the daemon let go of.
  bool MayOpenDirect(uint64_t fh, int tgid);
  // The FUSE layer opened handle fh, of process `tgid`, with FOPEN_DIRECT_IO.
  void MarkDirect(uint64_t fh, int tgid);
  // The kernel can read cached files directly (FUSE passthrough): keep verified files whole on the
  // disk tier and name them in OpenOut::backing. Off again if the kernel refuses them.
  void SetPassthrough(bool on);
  // Hub metadata as extended attributes: user.hf.{commit,etag,sha256,size,lfs,repo}.
  Result<std::string> GetXattr(uint64_t ino, const std::string& name);
  Result<std::vector<std::string>> ListXattr(uint64_t ino);
  Result<std::vector<ReadSlice>> Read(uint64_t fh, uint64_t offset, size_t len, const CancelToken* cancel);
  void Release(uint64_t fh);
  StatFsOut StatFs() const;

  const FsOptions& options() const { return options_; }
  CancelToken::Clock::time_point Deadline() const {
    return CancelToken::Clock::now() + options_.request_timeout;
  }

 private:
  enum class Kind { kRoot, kTypeDir, kOrgDir, kRepo, kSymlink, kStats };
  // The blocks of one inode the kernel holds in its page cache (see ReturnedBlocks).
  struct KernelCached {
    std::mutex mu;
    std::optional<ReturnedBlocks> blocks;  // created by the first READ
    std::atomic<int> page_cache_opens{0};  // open handles that are not direct (MarkDirect)
    std::atomic<int> direct_opens{0};      // open handles that are
    std::unordered_map<int, int> direct_tgids;  // their processes, handles each; guarded by mu
    std::atomic<int> direct_processes{0};       // direct_tgids.size()
  };
  struct Inode {
    uint64_t ino = 0;
    Kind kind = Kind::kRoot;
    fetch::RepoType type = fetch::RepoType::kModel;
    std::string org;                        // kOrgDir
    std::shared_ptr<const Snapshot> snap;   // kRepo
    uint32_t node = 0;                      // kRepo: index in snap
    std::string target;                     // kSymlink
    bool pinned = true;                     // content and name can never change
    double entry_timeout = 0;               // for the dentry that named it
    uint64_t nlookup = 0;
    uint64_t parent = 0;
    std::string name;
    // kRepo files: made by the file's first Open (under mu_), never replaced. Not before: a
    // listing makes an inode per entry (READDIRPLUS), and most are never opened.
    std::shared_ptr<KernelCached> cached;
  };
  // What fetching a file's blocks needs: where it is at the Hub, its content identity, its size.
  // Prefetches of files nobody has opened (siblings, the next shard, the index) use it alone.
  struct FileSource {
    fetch::FileLocation loc;
    cache::ContentId content;
    uint64_t size = 0;
  };
  struct OpenFile : FileSource {
    std::shared_ptr<Inode> inode;  // holds the Snapshot: the commit this handle reads
    bool safetensors = false;
    std::atomic<bool> direct{false};  // opened with FOPEN_DIRECT_IO: its READs fill no page cache
    int tgid = 0;                     // the process of a direct handle (set before `direct`)
    cache::BlockRef generated;  // the stats file's content, frozen at open
    std::mutex mu;  // guards the fields below; never held across a wait
    HandleReadahead ra;  // streams, the tensor plan once the reader seeks, the next shard
  };
  struct RevEntry {
    fetch::RepoInfo info;
    CancelToken::Clock::time_point fetched;
  };

  // f's location, content and size from n, a file with content in snap.
  static void FillSource(FileSource& f, const Snapshot& snap, const SnapshotNode& n);
  std::shared_ptr<Inode> Get(uint64_t ino) const;
  Attr AttrOf(const Inode& in) const;
  // Registers a child under (parent, name), reusing the existing inode when `same` says so.
  EntryOut Publish(const std::shared_ptr<Inode>& parent, const std::string& name, std::shared_ptr<Inode> child);
  Result<EntryOut> LookupTop(const std::shared_ptr<Inode>& parent, const std::string& name);
  Result<EntryOut> LookupRepo(const std::shared_ptr<Inode>& org, const std::string& name);
  Result<fetch::RepoInfo> ResolveRevision(fetch::RepoType type, const std::string& id, const std::string& rev);
  Result<std::shared_ptr<const Snapshot>> GetSnapshot(fetch::RepoType type, const fetch::RepoInfo& info);
  CancelToken Token() const { return CancelToken(Deadline()); }
  // The tensor plan of a .safetensors file (header parsed once per content), or null.
  std::shared_ptr<const SafetensorsPlan> LoadPlan(const FileSource& f, const CancelToken* cancel);
  cache::FetchFn Fetcher(const FileSource& f, uint64_t block) const;
  // Looks for a verified copy of f in huggingface_hub's cache (snap: its repo and commit) and has
  // the block cache read it from there; `wait`: for the copy's first hash (until cancel's
  // deadline), else only a copy hashed already is taken. Forgets a copy of this repo that is gone.
  // True when a copy is there but still being hashed: the caller should not fetch f ahead.
  bool UseHfCopy(const FileSource& f, const Snapshot& snap, const CancelToken* cancel, bool wait);
  // Has the copy of the first *.safetensors file at or after position `from` of n's directory
  // hashed in the background (UseHfCopy without waiting).
  void HashShardCopyFrom(const Snapshot& snap, const SnapshotNode& n, uint32_t from);
  // huggingface_hub's folder of a repo ("models--org--name").
  static std::string HfFolder(fetch::RepoType type, const std::string& id);
  // A reader is finishing one shard of a checkpoint with a *.safetensors.index.json beside it:
  // fetch the header and first tensors (key order) of the shard loaders read next. Background.
  void PrefetchNextShard(const std::shared_ptr<Inode>& shard);
  // A small file (one block) `n` of in's snapshot is being opened: fetch the small files after it
  // in its directory (listing order), as many as its directory's reader needs (SiblingStream).
  void PrefetchSiblings(const Inode& in, const SnapshotNode& n);
  size_t BlockLen(const FileSource& f, uint64_t block) const;
  // READ [begin, end) of f is being answered (see ReturnedBlocks).
  void NoteReturned(const OpenFile& f, uint64_t begin, uint64_t end);
  bool KernelHas(const OpenFile& f, uint64_t block) const;
  // Every block of f is in the memory or disk tier: re-reads are best served by the page cache.
  bool AllCached(const OpenFile& f) const;
  // ReturnedBlocks::AccountsFor for f's inode, within the readahead tolerances.
  bool KernelAccountsFor(const OpenFile& f, uint64_t begin, uint64_t end) const;

  FsOptions options_;
  std::shared_ptr<fetch::HubClient> hub_;
  std::shared_ptr<cache::BlockCache> cache_;
  std::shared_ptr<cache::MetaStore> meta_;
  std::shared_ptr<cache::HfHubCache> hf_;
  int64_t mount_time_ = 0;

  // Lock order: mu_ before nothing (leaf); rev_mu_, snap_mu_, plans_mu_ are leaves too.
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Inode>> inodes_;
  std::map<std::pair<uint64_t, std::string>, uint64_t> children_;
  std::map<uint64_t, std::set<std::string>> seen_;  // names looked up under /, datasets/, spaces/
  std::set<std::pair<uint64_t, std::string>> known_orgs_;  // (parent, name) resolved as org dirs
  uint64_t next_ino_ = 16;

  std::mutex rev_mu_;
  std::unordered_map<std::string, RevEntry> revisions_;

  std::mutex snap_mu_;
  std::unordered_map<std::string, std::shared_future<Result<std::shared_ptr<const Snapshot>>>> snapshots_;

  // Small files read one after another in listing order, per directory: how far ahead the next
  // ones are fetched. The window starts at kSiblingPrefetch and doubles (to kMaxSiblingPrefetch)
  // each time the reader, going forward, opens a file that is not fetched yet (the origin's round
  // trip is longer than the reader's time per file); a jump back (further than the largest window)
  // or past the fetched range starts over. Bounded: the table is emptied when it holds
  // kMaxSiblingStreams directories.
  struct SiblingStream {
    std::weak_ptr<const Snapshot> snap;  // the key's snapshot (a freed one's address may be reused)
    uint32_t last = 0;          // position of the furthest open
    uint32_t issued_until = 0;  // positions below this were asked for
    uint32_t window = 0;        // small files fetched ahead of the latest open
  };
  std::mutex siblings_mu_;  // a leaf
  std::map<std::pair<const Snapshot*, uint32_t>, SiblingStream> siblings_;

  std::mutex plans_mu_;
  std::unordered_map<std::string, std::shared_ptr<const SafetensorsPlan>> plans_;
  std::unordered_set<std::string> next_shard_done_;  // contents whose next shard was prefetched

  // Looked up on every READ: a oneTBB concurrent map, so readers of different files never share a
  // lock. Accessors are held only to copy the shared_ptr out.
  tbb::concurrent_hash_map<uint64_t, std::shared_ptr<OpenFile>> handles_;
  std::atomic<uint64_t> next_fh_{1};
  std::atomic<bool> passthrough_{false};

  // Background work of the read path (next-shard prefetch). Last member: destroyed (joined) first.
  std::unique_ptr<cache::WorkerPool> background_;
};

}  // namespace hubfs::fs
