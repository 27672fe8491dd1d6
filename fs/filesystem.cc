// The filesystem core (see filesystem.h).
#include "fs/filesystem.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>

#include "common/log.h"
#include "common/metrics.h"
#include "fetch/url.h"
#include "fs/names.h"

namespace hubfs::fs {
namespace {
constexpr uint64_t kDatasetsIno = 2;
constexpr uint64_t kSpacesIno = 3;
constexpr uint64_t kStatsIno = 4;
constexpr size_t kMaxSnapshots = 256;
// Small files prefetched after the one being opened: enough to hide one round trip per file
// behind the reader, few enough that a reader of a single file wastes little. A reader that still
// catches up with them gets more (Filesystem::SiblingStream), up to twice the loader threads, so
// the loaders never run dry while the reader waits on a distant origin.
constexpr uint32_t kSiblingPrefetch = 8;
constexpr uint32_t kMaxSiblingPrefetch = 32;
constexpr size_t kMaxSiblingStreams = 256;
// A safetensors checkpoint (shard) by its name: "<something>.safetensors".
bool IsSafetensorsName(std::string_view name) { return name.size() > 12 && name.ends_with(".safetensors"); }

std::string TypeKey(fetch::RepoType t) { return fetch::ApiCollection(t); }

// The Hub could not be reached (transport, timeout, 5xx after the retries, or --offline), as
// opposed to an answer: only then may the cache's records stand in for it.
bool Unreachable(const Error& e) { return e.kind == ErrorKind::kIo || e.kind == ErrorKind::kTimeout; }

// A revision, tree or org listing was served from the records because the Hub was unreachable.
void CountServedOffline() {
  static auto& m = metrics::Get("fs.served_offline");
  m.Add();
}

bool IsShortCommitOf(const std::string& rev, const std::string& sha) {
  if (rev.size() < 7 || rev.size() > 40) return false;
  for (size_t i = 0; i < rev.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(rev[i])) != std::tolower(static_cast<unsigned char>(sha[i])))
      return false;
  return true;
}
}  // namespace

std::string RevisionRecordKey(fetch::RepoType type, const std::string& id, const std::string& rev) {
  return "rev|" + TypeKey(type) + "|" + id + "|" + rev;
}

std::string OrgRecordKey(fetch::RepoType type, const std::string& org) { return "org|" + TypeKey(type) + "|" + org; }

std::string OrgListingRecordKey(fetch::RepoType type, const std::string& org) {
  return "list|" + TypeKey(type) + "|" + org;
}

std::string TreeRecordKey(fetch::RepoType type, const std::string& id, const std::string& commit) {
  return "tree|" + TypeKey(type) + "|" + id + "|" + commit;
}

Filesystem::Filesystem(FsOptions options, std::shared_ptr<fetch::HubClient> hub,
                       std::shared_ptr<cache::BlockCache> cache, std::shared_ptr<cache::MetaStore> meta,
                       std::shared_ptr<cache::HfHubCache> hf)
    : options_(std::move(options)),
      hub_(std::move(hub)),
      cache_(std::move(cache)),
      meta_(std::move(meta)),
      hf_(std::move(hf)),
      mount_time_(static_cast<int64_t>(std::time(nullptr))),
      background_(std::make_unique<cache::WorkerPool>(1, cache::WorkerPool::Priority::kNormal, "hubfs-shards")) {
  auto root = std::make_shared<Inode>();
  root->ino = kRootIno;
  root->kind = Kind::kRoot;
  auto datasets = std::make_shared<Inode>();
  datasets->ino = kDatasetsIno;
  datasets->kind = Kind::kTypeDir;
  datasets->type = fetch::RepoType::kDataset;
  datasets->parent = kRootIno;
  datasets->name = "datasets";
  auto spaces = std::make_shared<Inode>(*datasets);
  spaces->ino = kSpacesIno;
  spaces->type = fetch::RepoType::kSpace;
  spaces->name = "spaces";
  auto stats = std::make_shared<Inode>();
  stats->ino = kStatsIno;
  stats->kind = Kind::kStats;
  stats->parent = kRootIno;
  stats->name = kStatsFileName;
  inodes_[kStatsIno] = stats;
  inodes_[kRootIno] = root;
  inodes_[kDatasetsIno] = datasets;
  inodes_[kSpacesIno] = spaces;
}

Filesystem::~Filesystem() = default;

std::shared_ptr<Filesystem::Inode> Filesystem::Get(uint64_t ino) const {
  std::lock_guard lock(mu_);
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : it->second;
}

Attr Filesystem::AttrOf(const Inode& in) const {
  Attr a;
  a.ino = in.ino;
  a.uid = options_.uid;
  a.gid = options_.gid;
  a.mtime = mount_time_;
  switch (in.kind) {
    case Kind::kRoot:
    case Kind::kTypeDir:
    case Kind::kOrgDir:
      a.mode = S_IFDIR | 0555;
      a.nlink = 2;
      break;
    case Kind::kSymlink:
      a.mode = S_IFLNK | 0777;
      a.size = in.target.size();
      break;
    case Kind::kStats:
      a.mode = S_IFREG | 0444;
      a.mtime = static_cast<int64_t>(std::time(nullptr));
      break;
    case Kind::kRepo: {
      const SnapshotNode& n = in.snap->node(in.node);
      a.mtime = in.snap->mtime() > 0 ? in.snap->mtime() : mount_time_;
      if (n.is_dir) {
        a.mode = S_IFDIR | 0555;
        a.nlink = 2;
      } else {
        a.mode = S_IFREG | 0444;
        a.size = n.size;
      }
      break;
    }
  }
  return a;
}

EntryOut Filesystem::Publish(const std::shared_ptr<Inode>& parent, const std::string& name,
                             std::shared_ptr<Inode> child) {
  std::lock_guard lock(mu_);
  const auto key = std::make_pair(parent->ino, name);
  std::shared_ptr<Inode> use;
  if (auto it = children_.find(key); it != children_.end()) {
    auto existing = inodes_.find(it->second);
    if (existing != inodes_.end()) {
      const Inode& e = *existing->second;
      const bool same = e.kind == child->kind && e.type == child->type && e.org == child->org &&
                        e.snap == child->snap && e.node == child->node && e.target == child->target;
      if (same) use = existing->second;
    }
  }
  if (!use) {
    child->ino = next_ino_++;
    child->parent = parent->ino;
    child->name = name;
    inodes_[child->ino] = child;
    children_[key] = child->ino;
    use = std::move(child);
  }
  ++use->nlookup;
  EntryOut out;
  out.ino = use->ino;
  out.attr = AttrOf(*use);
  out.entry_timeout = use->entry_timeout;
  out.attr_timeout = options_.pinned_timeout_s;
  return out;
}

void Filesystem::Forget(uint64_t ino, uint64_t nlookup) {
  if (ino <= kStatsIno) return;
  std::shared_ptr<Inode> dead;  // freed outside the lock
  std::lock_guard lock(mu_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  Inode& in = *it->second;
  in.nlookup = in.nlookup > nlookup ? in.nlookup - nlookup : 0;
  if (in.nlookup > 0) return;
  auto c = children_.find({in.parent, in.name});
  if (c != children_.end() && c->second == ino) children_.erase(c);
  dead = std::move(it->second);
  inodes_.erase(it);
}

Result<Attr> Filesystem::GetAttr(uint64_t ino, double* attr_timeout) {
  auto in = Get(ino);
  if (!in) return MakeError(ErrorKind::kNotFound, "stale inode");
  *attr_timeout = options_.pinned_timeout_s;
  return AttrOf(*in);
}

Result<fetch::RepoInfo> Filesystem::ResolveRevision(fetch::RepoType type, const std::string& id,
                                                    const std::string& rev) {
  const std::string key = TypeKey(type) + "|" + id + "|" + rev;
  const auto now = CancelToken::Clock::now();
  std::optional<fetch::RepoInfo> stale;
  {
    std::lock_guard lock(rev_mu_);
    auto it = revisions_.find(key);
    if (it != revisions_.end()) {
      const bool immutable = IsShortCommitOf(rev, it->second.info.sha);
      if (immutable || now - it->second.fetched < options_.revision_ttl) return it->second.info;
      stale = it->second.info;
    }
  }
  auto token = Token();
  auto info = hub_->GetRepoInfo(type, id, rev, &token);
  const std::string record = RevisionRecordKey(type, id, rev);
  if (!info.ok()) {
    // Offline operation: the Hub is unreachable (or --offline). Keep serving what was resolved
    // before: in this mount's memory, else in the cache's records (a mount started offline).
    if (!Unreachable(info.error())) return info.error();
    const char* from = "resolved before";
    if (!stale && meta_) {
      if (auto rec = meta_->Get(record)) {
        if (auto kept = fetch::ParseRepoInfo(*rec); kept.ok()) stale = kept.value();
        from = "kept in the cache";
      }
    }
    // Else huggingface_hub's cache: the commit its refs/ name (a repo downloaded with it, never
    // through this cache).
    if (!stale && hf_ && id.find('/') != std::string::npos) {
      if (const std::string commit = hf_->Commit(HfFolder(type, id), rev); !commit.empty()) {
        stale = fetch::RepoInfo{id, commit, mount_time_, false, false};
        from = "named in huggingface_hub's cache";
      }
    }
    if (!stale) return info.error();
    CountServedOffline();
    LOG_WARN("revision %s of %s: %s; serving commit %.8s, %s", rev.empty() ? "(default)" : rev.c_str(), id.c_str(),
             info.error().ToString().c_str(), stale->sha.c_str(), from);
    std::lock_guard lock(rev_mu_);
    revisions_[key] = RevEntry{*stale, now};  // asked again after --revision-ttl, not at every lookup
    return *stale;
  }
  bool changed = true;
  {
    std::lock_guard lock(rev_mu_);
    auto it = revisions_.find(key);
    changed = it == revisions_.end() || it->second.info.sha != info->sha || it->second.info.id != info->id;
    revisions_[key] = RevEntry{info.value(), now};
  }
  // Written when it changes (the first lookup in a mount, or a new commit), not at every re-resolve.
  if (changed && meta_) {
    if (auto st = meta_->Put(record, fetch::RepoInfoJson(info.value())); !st.ok())
      LOG_DEBUG("keeping revision %s of %s: %s", rev.c_str(), id.c_str(), st.error().ToString().c_str());
  }
  return info;
}

Result<std::shared_ptr<const Snapshot>> Filesystem::GetSnapshot(fetch::RepoType type, const fetch::RepoInfo& info) {
  const std::string key = TypeKey(type) + "|" + info.id + "|" + info.sha;
  std::shared_future<Result<std::shared_ptr<const Snapshot>>> fut;
  std::promise<Result<std::shared_ptr<const Snapshot>>> promise;
  bool owner = false;
  {
    std::lock_guard lock(snap_mu_);
    auto it = snapshots_.find(key);
    if (it != snapshots_.end()) {
      fut = it->second;
    } else {
      if (snapshots_.size() >= kMaxSnapshots) {
        for (auto s = snapshots_.begin(); s != snapshots_.end();) {
          const bool ready = s->second.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
          if (ready && (!s->second.get().ok() || s->second.get().value().use_count() == 1)) s = snapshots_.erase(s);
          else ++s;
        }
      }
      fut = promise.get_future().share();
      snapshots_.emplace(key, fut);
      owner = true;
    }
  }
  if (owner) {
    static auto& m_listings = metrics::Get("fs.tree_listings");
    m_listings.Add();
    auto token = Token();
    auto entries = hub_->ListTree(type, info.id, info.sha, &token);
    // A commit's tree never changes: the one kept in the cache serves while the Hub is unreachable,
    // and is written once per commit (then only marked as used).
    const std::string record = TreeRecordKey(type, info.id, info.sha);
    bool kept = false;
    if (!entries.ok() && meta_ && Unreachable(entries.error())) {
      if (auto rec = meta_->Get(record)) {
        if (auto parsed = fetch::ParseTreePage(*rec); parsed.ok()) {
          LOG_WARN("tree of %s at %.8s: %s; serving the listing kept in the cache", info.id.c_str(), info.sha.c_str(),
                   entries.error().ToString().c_str());
          entries = std::move(parsed);
          kept = true;
          CountServedOffline();
        }
      }
    }
    // Else the files huggingface_hub downloaded at that commit: the listing shows those only, so
    // it is neither kept as the commit's tree nor kept in this mount beyond its lookups.
    bool partial = false;
    if (!entries.ok() && hf_ && Unreachable(entries.error())) {
      if (auto files = hf_->Files(HfFolder(type, info.id), info.sha)) {
        LOG_WARN("tree of %s at %.8s: %s; listing the %zu files huggingface_hub's cache holds", info.id.c_str(),
                 info.sha.c_str(), entries.error().ToString().c_str(), files->size());
        std::vector<fetch::TreeEntry> list;
        for (const auto& f : *files) {
          fetch::TreeEntry e;
          e.path = f.path;
          e.size = f.size;
          (f.id.kind == cache::IdKind::kSha256 ? e.lfs_sha256 : e.oid) = f.id.Hex();
          list.push_back(std::move(e));
        }
        entries = std::move(list);
        kept = partial = true;
        CountServedOffline();
      }
    }
    if (entries.ok() && !kept && meta_ && !meta_->Touch(record)) {
      if (auto st = meta_->Put(record, fetch::TreeJson(entries.value())); !st.ok())
        LOG_DEBUG("keeping the tree of %s: %s", info.id.c_str(), st.error().ToString().c_str());
    }
    if (!entries.ok() || partial) {
      std::lock_guard lock(snap_mu_);
      snapshots_.erase(key);  // not cached: the next lookup tries again
    }
    if (!entries.ok()) promise.set_value(entries.error());
    else promise.set_value(Snapshot::Build(type, info.id, info.sha, info.last_modified, entries.value()));
  }
  return fut.get();
}

Result<EntryOut> Filesystem::Lookup(uint64_t parent_ino, const std::string& name) {
  auto parent = Get(parent_ino);
  if (!parent) return MakeError(ErrorKind::kNotFound, "stale parent inode");
  switch (parent->kind) {
    case Kind::kRoot:
    case Kind::kTypeDir:
      return LookupTop(parent, name);
    case Kind::kOrgDir:
      return LookupRepo(parent, name);
    case Kind::kSymlink:
    case Kind::kStats:
      return MakeError(ErrorKind::kNotDirectory, name);
    case Kind::kRepo:
      break;
  }
  const Snapshot& snap = *parent->snap;
  if (!snap.node(parent->node).is_dir) return MakeError(ErrorKind::kNotDirectory, name);
  auto child = snap.Child(parent->node, name);
  if (!child) {
    EntryOut negative;  // immutable absence: the kernel may remember it
    negative.entry_timeout = options_.pinned_timeout_s;
    return negative;
  }
  auto in = std::make_shared<Inode>();
  in->kind = Kind::kRepo;
  in->type = parent->type;
  in->snap = parent->snap;
  in->node = *child;
  in->entry_timeout = options_.pinned_timeout_s;
  return Publish(parent, name, std::move(in));
}

Result<EntryOut> Filesystem::LookupTop(const std::shared_ptr<Inode>& parent, const std::string& name) {
  if (parent->kind == Kind::kRoot && (name == "datasets" || name == "spaces" || name == kStatsFileName)) {
    auto in = Get(name == "datasets" ? kDatasetsIno : name == "spaces" ? kSpacesIno : kStatsIno);
    EntryOut out;
    out.ino = in->ino;
    out.attr = AttrOf(*in);
    out.entry_timeout = out.attr_timeout = in->kind == Kind::kStats ? 0 : options_.pinned_timeout_s;
    return out;
  }
  const fetch::RepoType type = parent->kind == Kind::kRoot ? fetch::RepoType::kModel : parent->type;
  if (!IsValidIdPart(name)) return MakeError(ErrorKind::kNotFound, "not a valid org or repo name");
  auto in = std::make_shared<Inode>();
  in->type = type;
  bool known_org;
  {
    std::lock_guard lock(mu_);
    known_org = known_orgs_.count({parent->ino, name}) != 0;
  }
  if (known_org) {
    // An org directory, once known, stays: the kernel may forget its inode, but a second lookup
    // needs no network (and works offline).
    in->kind = Kind::kOrgDir;
    in->org = name;
    in->entry_timeout = options_.pinned_timeout_s;
    return Publish(parent, name, std::move(in));
  }
  // A legacy id (no org) resolves to a repo whose canonical id has one: show it as a symlink.
  auto info = ResolveRevision(type, name, "");
  if (info.ok() && info->id != name && info->id.find('/') != std::string::npos) {
    in->kind = Kind::kSymlink;
    in->target = info->id;
    in->entry_timeout = static_cast<double>(options_.revision_ttl.count());
  } else if (!info.ok() && info.error().kind != ErrorKind::kNotFound &&
             !(Unreachable(info.error()) && ((meta_ && meta_->Touch(OrgRecordKey(type, name))) ||
                                             (hf_ && !hf_->Repos(fetch::ApiCollection(type), name).empty())))) {
    // (unless the Hub is unreachable and this cache, or huggingface_hub's, has seen the org)
    return info.error();
  } else {
    in->kind = Kind::kOrgDir;
    in->org = name;
    in->entry_timeout = options_.pinned_timeout_s;
    if (info.ok() || info.error().kind == ErrorKind::kNotFound) {
      const std::string record = OrgRecordKey(type, name);
      if (meta_ && !meta_->Touch(record)) (void)meta_->Put(record, "");  // a miss only costs offline lookups
    }
  }
  {
    std::lock_guard lock(mu_);
    seen_[parent->ino].insert(name);
    if (in->kind == Kind::kOrgDir) known_orgs_.insert({parent->ino, name});
  }
  return Publish(parent, name, std::move(in));
}

Result<EntryOut> Filesystem::LookupRepo(const std::shared_ptr<Inode>& org, const std::string& name) {
  auto parsed = ParseRepoDirName(name);
  if (!parsed) return MakeError(ErrorKind::kNotFound, "not a valid repo name");
  const std::string id = org->org + "/" + parsed->name;
  auto info = ResolveRevision(org->type, id, parsed->revision);
  if (!info.ok()) return info.error();
  auto in = std::make_shared<Inode>();
  in->type = org->type;
  if (info->id != id) {
    // Renamed (or differently cased) repo: point at its canonical directory.
    in->kind = Kind::kSymlink;
    in->target = "../" + info->id +
                 (parsed->revision.empty() ? "" : "@" + fetch::PercentEncode(parsed->revision, false));
    in->entry_timeout = static_cast<double>(options_.revision_ttl.count());
    return Publish(org, name, std::move(in));
  }
  auto snap = GetSnapshot(org->type, info.value());
  if (!snap.ok()) return snap.error();
  in->kind = Kind::kRepo;
  in->snap = snap.value();
  in->node = 0;
  in->pinned = IsShortCommitOf(parsed->revision, info->sha);
  in->entry_timeout =
      in->pinned ? options_.pinned_timeout_s : static_cast<double>(options_.revision_ttl.count());
  return Publish(org, name, std::move(in));
}

Result<std::vector<DirEntryOut>> Filesystem::ReadDir(uint64_t ino) {
  auto in = Get(ino);
  if (!in) return MakeError(ErrorKind::kNotFound, "stale inode");
  std::vector<DirEntryOut> out;
  out.push_back({".", in->ino, S_IFDIR});
  out.push_back({"..", in->parent != 0 ? in->parent : in->ino, S_IFDIR});
  auto add_seen = [&](uint64_t dir) {
    std::lock_guard lock(mu_);
    for (const auto& n : seen_[dir]) {
      mode_t type = S_IFDIR;
      uint64_t child_ino = 0;
      if (auto c = children_.find({dir, n}); c != children_.end()) {
        child_ino = c->second;
        if (auto i = inodes_.find(c->second); i != inodes_.end() && i->second->kind == Kind::kSymlink)
          type = S_IFLNK;
      }
      out.push_back({n, child_ino, type});
    }
  };
  switch (in->kind) {
    case Kind::kRoot:
      out.push_back({"datasets", kDatasetsIno, S_IFDIR});
      out.push_back({"spaces", kSpacesIno, S_IFDIR});
      add_seen(kRootIno);
      return out;
    case Kind::kTypeDir:
      add_seen(in->ino);
      return out;
    case Kind::kSymlink:
    case Kind::kStats:
      return MakeError(ErrorKind::kNotDirectory, "not a directory");
    case Kind::kOrgDir: {
      auto token = Token();
      auto ids = hub_->ListRepos(in->type, in->org, &token);
      // The org's last listing is kept (when it changed): served while the Hub is unreachable.
      const std::string record = OrgListingRecordKey(in->type, in->org);
      if (ids.ok() && meta_) {
        std::string joined;
        for (const auto& id : ids.value()) joined += id + "\n";
        if (meta_->Get(record) != joined) (void)meta_->Put(record, joined);  // a miss only costs offline listings
      } else if (!ids.ok() && meta_ && Unreachable(ids.error())) {
        if (auto rec = meta_->Get(record)) {
          LOG_WARN("repos of %s: %s; listing those kept in the cache", in->org.c_str(), ids.error().ToString().c_str());
          CountServedOffline();
          std::vector<std::string> kept;
          for (size_t b = 0, e; (e = rec->find('\n', b)) != std::string::npos; b = e + 1) kept.push_back(rec->substr(b, e - b));
          ids = std::move(kept);
        }
      }
      if (!ids.ok() && hf_ && Unreachable(ids.error())) {
        std::vector<std::string> found;
        for (const auto& repo : hf_->Repos(fetch::ApiCollection(in->type), in->org)) found.push_back(in->org + "/" + repo);
        if (!found.empty()) {
          LOG_WARN("repos of %s: %s; listing those in huggingface_hub's cache", in->org.c_str(),
                   ids.error().ToString().c_str());
          CountServedOffline();
          ids = std::move(found);
        }
      }
      if (!ids.ok()) return ids.error();
      std::set<std::string> names;
      for (const auto& id : ids.value()) {
        const size_t slash = id.find('/');
        if (slash == std::string::npos || id.compare(0, slash, in->org) != 0) continue;
        const std::string n = id.substr(slash + 1);
        if (IsValidIdPart(n)) names.insert(n);
      }
      for (const auto& n : names) out.push_back({n, 0, S_IFDIR});
      return out;
    }
    case Kind::kRepo:
      break;
  }
  const SnapshotNode& dir = in->snap->node(in->node);
  if (!dir.is_dir) return MakeError(ErrorKind::kNotDirectory, "not a directory");
  out.reserve(out.size() + dir.children.size());
  for (uint32_t c : dir.children) {
    const SnapshotNode& n = in->snap->node(c);
    out.push_back({n.name, 0, static_cast<mode_t>(n.is_dir ? S_IFDIR : S_IFREG)});
  }
  return out;
}

bool Filesystem::ListsWithAttrs(uint64_t ino) {
  auto in = Get(ino);
  return in && in->kind == Kind::kRepo && in->snap->node(in->node).is_dir;
}

Result<std::string> Filesystem::ReadLink(uint64_t ino) {
  auto in = Get(ino);
  if (!in) return MakeError(ErrorKind::kNotFound, "stale inode");
  if (in->kind != Kind::kSymlink) return MakeError(ErrorKind::kInvalidArgument, "not a symlink");
  return in->target;
}

static fetch::FileLocation LocationOf(const Snapshot& snap, const SnapshotNode& n) {
  return fetch::FileLocation{snap.type(), snap.repo_id(), snap.commit(), n.path, n.size,
                             n.content && n.content->kind == cache::IdKind::kGitSha1};
}

void Filesystem::FillSource(FileSource& f, const Snapshot& snap, const SnapshotNode& n) {
  f.loc = LocationOf(snap, n);
  f.content = *n.content;
  f.size = n.size;
}

std::string Filesystem::HfFolder(fetch::RepoType type, const std::string& id) {
  return cache::HfHubCache::RepoFolder(fetch::ApiCollection(type), id);
}

bool Filesystem::UseHfCopy(const FileSource& f, const Snapshot& snap, const CancelToken* cancel, bool wait) {
  if (!hf_ || f.size == 0) return false;
  const std::string folder = HfFolder(snap.type(), snap.repo_id());
  bool pending = false;
  FileIdentity verified;
  const std::string path =
      hf_->Find(folder, snap.commit(), f.loc.path, f.content, f.size, cancel, wait, &pending, &verified);
  if (!path.empty()) {
    if (!cache_->AddLocalCopy(f.content, f.size, path, &verified))
      LOG_WARN("cannot open %s, or it was replaced after it was hashed: fetching instead", path.c_str());
    return false;
  }
  // A copy of this repo's that is gone or changed is not read again (a copy another repo's folder
  // holds of the same bytes stays).
  const std::string had = cache_->LocalCopyPath(f.content);
  if (!had.empty() && had.rfind(hf_->root() + "/" + folder + "/", 0) == 0 && !pending) cache_->DropLocalCopy(f.content);
  return pending;
}

void Filesystem::HashShardCopyFrom(const Snapshot& snap, const SnapshotNode& n, uint32_t from) {
  const SnapshotNode& dir = snap.node(n.parent);
  for (uint32_t i = from; i < dir.children.size(); ++i) {
    const SnapshotNode& sib = snap.node(dir.children[i]);
    if (sib.is_dir || !sib.content || !IsSafetensorsName(sib.name)) continue;
    FileSource shard;
    FillSource(shard, snap, sib);
    UseHfCopy(shard, snap, nullptr, /*wait=*/false);
    return;
  }
}

Result<OpenOut> Filesystem::Open(uint64_t ino, int flags) {
  auto in = Get(ino);
  if (!in) return MakeError(ErrorKind::kNotFound, "stale inode");
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) return MakeError(ErrorKind::kReadOnly, "read-only");
  if (in->kind == Kind::kStats) {
    const std::string text = options_.status_header + metrics::RenderText();
    auto f = std::make_shared<OpenFile>();
    f->inode = in;
    auto block = std::make_shared<cache::Block>(text.size());
    std::memcpy(block->data.get(), text.data(), text.size());
    f->generated = std::move(block);
    f->size = text.size();
    const uint64_t fh = next_fh_++;
    handles_.insert({fh, f});
    return OpenOut{fh, true};
  }
  if (in->kind != Kind::kRepo || in->snap->node(in->node).is_dir) return MakeError(ErrorKind::kIsDirectory, "dir");
  const SnapshotNode& n = in->snap->node(in->node);
  auto f = std::make_shared<OpenFile>();
  f->inode = in;
  FillSource(*f, *in->snap, n);
  f->safetensors = IsSafetensorsName(n.name);
  f->ra = HandleReadahead(options_.readahead, f->safetensors);
  {
    std::lock_guard lock(mu_);
    if (!in->cached) in->cached = std::make_shared<KernelCached>();
  }
  const uint64_t fh = next_fh_++;
  handles_.insert({fh, f});
  ++in->cached->page_cache_opens;
  const CancelToken token = Token();
  UseHfCopy(*f, *in->snap, &token, /*wait=*/true);
  if (hf_) {
    // A checkpoint huggingface_hub downloaded: have the next shard's copy hashed while this one is
    // read, so that its open need not wait for it; and the first one's as soon as a loader reads
    // the config or the index (transformers then builds the model before it opens a shard).
    const bool starting = n.name == "config.json" || n.name.ends_with(".safetensors.index.json");
    if (f->safetensors && !cache_->LocalCopyPath(f->content).empty()) HashShardCopyFrom(*in->snap, n, n.position + 1);
    else if (starting) HashShardCopyFrom(*in->snap, n, 0);
  }
  cache_->TrackFile(f->content, f->size);
  OpenOut out{fh, false};
  if (passthrough_) {
    cache::BlockCache::Backing b = cache_->WholeBacking(f->content);
    out.backing = std::move(b.path);
    out.backing_hold = std::move(b.hold);
  }
  if (!out.backing.empty()) return out;  // the kernel reads the local copy: nothing to fetch
  out.may_direct = options_.direct_min_bytes > 0 && f->size >= options_.direct_min_bytes && !AllCached(*f);
  // Most readers start at the beginning (a safetensors header, a config): start fetching it now.
  // (Not when the kernel already holds it: a reopened file is read from the page cache.)
  if (f->size > 0 && !KernelHas(*f, 0))
    cache_->Prefetch(cache::BlockKey{f->content, 0}, BlockLen(*f, 0), Fetcher(*f, 0));
  // Small files are read one after another (`find | xargs cat`, a dataset loader): each costs a
  // round trip, so fetch the next small siblings (in listing order) while this one is read.
  if (f->size > 0 && f->size <= cache_->block_size()) PrefetchSiblings(*in, n);
  return out;
}

void Filesystem::PrefetchSiblings(const Inode& in, const SnapshotNode& n) {
  const Snapshot& snap = *in.snap;
  const SnapshotNode& dir = snap.node(n.parent);
  const uint64_t bs = cache_->block_size();
  auto small = [&](uint32_t i) {
    const SnapshotNode& sib = snap.node(dir.children[i]);
    return !sib.is_dir && sib.size > 0 && sib.size <= bs;
  };
  // Whether the reader found this file fetched already (before its own open asked for it).
  const bool found = cache_->Contains(cache::BlockKey{*n.content, 0});
  uint32_t from, until;
  {
    std::lock_guard lock(siblings_mu_);
    if (siblings_.size() >= kMaxSiblingStreams) siblings_.clear();
    SiblingStream& st = siblings_[{&snap, n.parent}];
    if (st.snap.lock() != in.snap) st = SiblingStream{in.snap, 0, 0, 0};
    // Forward: within what was asked for, and not far behind the furthest open (several workers
    // of one loader open the files of a directory a little out of order).
    const bool again = st.window > 0 && n.position == st.last;  // the same file opened again
    const bool forward = st.window > 0 && n.position + kMaxSiblingPrefetch > st.last && !again &&
                         n.position < st.issued_until;
    if (!forward && !again) {
      st.window = kSiblingPrefetch;
      st.issued_until = n.position + 1;
    } else if (forward && !found) {
      st.window = std::min(st.window * 2, kMaxSiblingPrefetch);
      static auto& m_grown = metrics::Get("fs.siblings.window_grown");
      m_grown.Add();
    }
    st.last = forward ? std::max(st.last, n.position) : n.position;
    uint32_t end = n.position + 1, counted = 0;
    const auto count = static_cast<uint32_t>(dir.children.size());
    for (; end < count && counted < st.window; ++end)
      if (small(end)) ++counted;
    from = std::max(n.position + 1, st.issued_until);
    until = end;
    st.issued_until = std::max(st.issued_until, until);
  }
  for (uint32_t i = from; i < until; ++i) {
    if (!small(i)) continue;
    const SnapshotNode& sib = snap.node(dir.children[i]);
    if (!cache_->PrefetchRoom(sib.size)) {  // the prefetch budget is full: ask again next open
      std::lock_guard lock(siblings_mu_);
      if (auto it = siblings_.find({&snap, n.parent}); it != siblings_.end())
        it->second.issued_until = std::min(it->second.issued_until, i);
      return;
    }
    FileSource peer;
    FillSource(peer, snap, sib);
    if (UseHfCopy(peer, snap, nullptr, /*wait=*/false)) continue;  // its open waits for the hash
    cache_->Prefetch(cache::BlockKey{peer.content, 0}, BlockLen(peer, 0), Fetcher(peer, 0));
  }
}

void Filesystem::SetPassthrough(bool on) {
  passthrough_ = on;
  cache_->EnableWholeFiles(on);
}

bool Filesystem::MayOpenDirect(uint64_t fh, int tgid) {
  decltype(handles_)::const_accessor a;
  if (!handles_.find(a, fh) || a->second->generated) return false;
  KernelCached& kc = *a->second->inode->cached;
  std::lock_guard lock(kc.mu);
  if (kc.direct_tgids.empty() || kc.direct_tgids.count(tgid) != 0) return true;
  return !kc.blocks || kc.blocks->furthest() <= cache_->served_retain_bytes();
}

void Filesystem::MarkDirect(uint64_t fh, int tgid) {
  decltype(handles_)::const_accessor a;
  if (!handles_.find(a, fh) || a->second->generated || a->second->direct.load()) return;
  OpenFile& f = *a->second;
  KernelCached& kc = *f.inode->cached;
  {
    std::lock_guard lock(kc.mu);
    f.tgid = tgid;
    ++kc.direct_tgids[tgid];
    kc.direct_processes = static_cast<int>(kc.direct_tgids.size());
  }
  f.direct = true;
  --kc.page_cache_opens;
  ++kc.direct_opens;
}

void Filesystem::Release(uint64_t fh) {
  std::shared_ptr<OpenFile> f;  // destroyed outside the accessor
  {
    decltype(handles_)::accessor a;
    if (!handles_.find(a, fh)) return;
    f = std::move(a->second);
    handles_.erase(a);
  }
  if (f->generated) return;
  KernelCached& kc = *f->inode->cached;
  if (!f->direct) {
    --kc.page_cache_opens;
    return;
  }
  --kc.direct_opens;
  std::lock_guard lock(kc.mu);
  if (auto it = kc.direct_tgids.find(f->tgid); it != kc.direct_tgids.end() && --it->second == 0)
    kc.direct_tgids.erase(it);
  kc.direct_processes = static_cast<int>(kc.direct_tgids.size());
}

size_t Filesystem::BlockLen(const FileSource& f, uint64_t block) const {
  const uint64_t bs = cache_->block_size();
  return static_cast<size_t>(std::min<uint64_t>(bs, f.size - block * bs));
}

cache::FetchFn Filesystem::Fetcher(const FileSource& f, uint64_t block) const {
  const uint64_t off = block * cache_->block_size();
  if (off == 0 && f.size <= cache_->block_size()) {
    // A file that fits in one block is checked against its content identity before anyone sees
    // it: wrong bytes with the right length (a corrupting CDN or proxy) are refetched, never served.
    return [hub = hub_, loc = f.loc, id = f.content](char* buf, size_t n, const CancelToken* c) -> Result<size_t> {
      static auto& m_mismatch = metrics::Get("fetch.content_mismatch");
      for (int attempt = 0;; ++attempt) {
        auto r = hub->ReadRange(loc, 0, buf, n, c);
        if (!r.ok() || cache::MatchesContentId(id, buf, *r)) return r;
        m_mismatch.Add();
        LOG_WARN("%s: bytes from the origin do not match %s; refetching", loc.path.c_str(), id.Hex().c_str());
        if (attempt >= 2) return MakeError(ErrorKind::kIo, "origin keeps serving bytes that fail their hash");
      }
    };
  }
  return [hub = hub_, loc = f.loc, off](char* buf, size_t n, const CancelToken* c) {
    return hub->ReadRange(loc, off, buf, n, c);
  };
}

std::shared_ptr<const SafetensorsPlan> Filesystem::LoadPlan(const FileSource& f, const CancelToken* cancel) {
  static auto& m_plans = metrics::Get("fs.safetensors_plans");
  const std::string key = f.content.Hex();
  {
    std::lock_guard lock(plans_mu_);
    if (auto it = plans_.find(key); it != plans_.end()) return it->second;
  }
  // Read the 8-byte length and the header through the cache (usually block 0 alone).
  const uint64_t bs = cache_->block_size();
  auto read = [&](uint64_t off, uint64_t len, std::string* out) -> bool {
    for (uint64_t b = off / bs; b * bs < off + len; ++b) {
      auto block = cache_->Get(cache::BlockKey{f.content, b}, BlockLen(f, b), Fetcher(f, b), cancel);
      if (!block.ok()) return false;
      const uint64_t s = std::max(off, b * bs), e = std::min(off + len, b * bs + block.value()->size);
      out->append(block.value()->data.get() + (s - b * bs), e - s);
    }
    return true;
  };
  std::shared_ptr<const SafetensorsPlan> plan;
  std::string prefix, header;
  if (f.size >= 8 && read(0, 8, &prefix)) {
    auto n = SafetensorsPlan::HeaderLength(prefix, f.size);
    if (n.ok() && read(8, *n, &header)) {
      auto p = SafetensorsPlan::Parse(header, f.size);
      if (p.ok()) {
        plan = std::make_shared<const SafetensorsPlan>(std::move(p.value()));
        m_plans.Add();
      } else {
        LOG_INFO("%s: safetensors header not usable for prefetch (%s)", f.loc.path.c_str(), p.error().message.c_str());
      }
    }
  }
  std::lock_guard lock(plans_mu_);
  if (plans_.size() >= 1024) plans_.clear();
  plans_[key] = plan;
  return plan;
}

void Filesystem::PrefetchNextShard(const std::shared_ptr<Inode>& shard) {
  static auto& m_next = metrics::Get("fs.next_shard_prefetches");
  constexpr uint64_t kMaxIndexBytes = 64u << 20;
  const Snapshot& snap = *shard->snap;
  const SnapshotNode& me = snap.node(shard->node);
  const SnapshotNode& dir = snap.node(me.parent);
  // A hint, not a reader: bounded well below a request's deadline so an unmount never waits long.
  const CancelToken token(std::min(Deadline(), CancelToken::Clock::now() + std::chrono::seconds(10)));
  static constexpr std::string_view kIndexSuffix = ".safetensors.index.json";
  for (uint32_t c : dir.children) {
    const SnapshotNode& idx = snap.node(c);
    if (idx.is_dir || !idx.content || idx.size == 0 || idx.size > kMaxIndexBytes ||
        idx.name.size() <= kIndexSuffix.size() ||
        idx.name.compare(idx.name.size() - kIndexSuffix.size(), kIndexSuffix.size(), kIndexSuffix) != 0)
      continue;
    FileSource index;
    FillSource(index, snap, idx);
    UseHfCopy(index, snap, &token, /*wait=*/true);
    std::string text;
    const uint64_t bs = cache_->block_size();
    for (uint64_t b = 0; b * bs < index.size; ++b) {
      auto block = cache_->Get(cache::BlockKey{index.content, b}, BlockLen(index, b), Fetcher(index, b), &token);
      if (!block.ok()) return;  // the reader's own reads report errors; this is only a hint
      text.append(block.value()->data.get(), block.value()->size);
    }
    const auto next = NextShardFromIndex(text, me.name);
    if (!next) continue;
    const auto d = snap.Child(me.parent, *next);
    if (!d) return;
    const SnapshotNode& n = snap.node(*d);
    if (n.is_dir || !n.content || n.size == 0) return;
    FileSource peer;
    FillSource(peer, snap, n);
    // huggingface_hub has it (hashed just now, so in the page cache too): nothing to fetch.
    if (UseHfCopy(peer, snap, &token, /*wait=*/true) || !cache_->LocalCopyPath(peer.content).empty()) return;
    m_next.Add();
    LOG_DEBUG("prefetching the next shard %s", n.path.c_str());
    auto plan = LoadPlan(peer, &token);  // fetches the header (block 0) and parses it once
    if (!plan) return;
    for (const ByteRange& r : plan->First(options_.readahead.max_window / 2))
      for (uint64_t b = r.begin / bs; b * bs < r.end; ++b)
        cache_->Prefetch(cache::BlockKey{peer.content, b}, BlockLen(peer, b), Fetcher(peer, b));
    return;
  }
}

Result<std::vector<ReadSlice>> Filesystem::Read(uint64_t fh, uint64_t offset, size_t len, const CancelToken* cancel) {
  static auto& m_reads = metrics::Get("fs.reads");
  static auto& m_bytes = metrics::Get("fs.read_bytes");
  std::shared_ptr<OpenFile> f;
  {
    decltype(handles_)::const_accessor a;
    if (!handles_.find(a, fh)) return MakeError(ErrorKind::kInvalidArgument, "bad file handle");
    f = a->second;
  }
  m_reads.Add();
  std::vector<ReadSlice> out;
  if (offset >= f->size || len == 0) return out;
  if (f->generated) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(len, f->size - offset));
    out.push_back(ReadSlice{f->generated, static_cast<size_t>(offset), n});
    return out;
  }
  const uint64_t end = std::min<uint64_t>(offset + len, f->size);
  const uint64_t bs = cache_->block_size();
  const uint64_t first = offset / bs, last = (end - 1) / bs;

  // Readahead first, so prefetches overlap the wait for the demand blocks.
  bool waited = false;
  for (uint64_t b = first; b <= last && !waited; ++b) waited = !cache_->InMemory(cache::BlockKey{f->content, b});
  if (waited) {
    static auto& m_waited = metrics::Get("fs.reads_waited");  // a block was not in memory yet
    m_waited.Add();
  }
  HandleReadahead::Step step;
  {
    std::lock_guard lock(f->mu);
    // (f->mu, then the inode's KernelCached::mu: never taken the other way round.)
    step = f->ra.OnRead(offset, end - offset, f->size, waited,
                        [this, &f](uint64_t a, uint64_t b) { return KernelAccountsFor(*f, a, b); });
  }
  if (step.entered_plan) {
    static auto& m_plan_mode = metrics::Get("fs.readahead.plan_mode_handles");
    m_plan_mode.Add();
  }
  if (step.load_plan) {
    step.plan = LoadPlan(*f, cancel);
    std::lock_guard lock(f->mu);
    f->ra.SetPlan(step.plan);
  }
  NoteReturned(*f, offset, end);
  // Returns where issuing stopped: `to`, or the first block the prefetch budget had no room for.
  auto prefetch = [&](uint64_t from, uint64_t to) -> uint64_t {
    static auto& m_kernel_held = metrics::Get("fs.readahead.kernel_held");
    for (uint64_t b = from / bs; b * bs < to; ++b) {
      if (b >= first && b <= last) continue;
      if (KernelHas(*f, b)) {
        m_kernel_held.Add();
        continue;
      }
      if (!cache_->PrefetchRoom(BlockLen(*f, b))) return std::max(from, b * bs);
      cache_->Prefetch(cache::BlockKey{f->content, b}, BlockLen(*f, b), Fetcher(*f, b));
    }
    return to;
  };
  const PrefetchRange& ra = step.stream;
  if (!ra.empty()) {
    // Many streams share the budget (16 workers, one fd each): what did not fit is offered again
    // by the stream's next read rather than left for a demand fetch.
    if (const uint64_t until = prefetch(ra.begin, ra.end); until < ra.end) {
      static auto& m_deferred = metrics::Get("fs.readahead.deferred");
      m_deferred.Add();
      std::lock_guard lock(f->mu);
      f->ra.Unissued(ra, until);
    }
  }
  // A loader walking tensors in key order: fetch what it will read next, wherever it lies.
  const HandleReadahead::Ahead ahead = f->ra.Next(step, end, f->size);
  for (const ByteRange& r : ahead.tensors) prefetch(r.begin, r.end);
  if (ahead.near_end) {
    bool issue = false;
    {
      std::lock_guard lock(f->mu);
      issue = f->ra.TakeNearEnd();
    }
    if (issue) {
      // Once per shard content, however many handles (ranks, workers) reach its end.
      std::lock_guard lock(plans_mu_);
      if (next_shard_done_.size() >= 4096) next_shard_done_.clear();
      issue = next_shard_done_.insert(f->content.Hex()).second;
    }
    if (issue) background_->Run([this, in = f->inode] { PrefetchNextShard(in); });
  }

  // Blocks some other reader of the file will want too stay in memory (no release once returned):
  // while handles of both kinds are open (a direct READ leaves nothing in the page cache), or
  // while several processes read the file direct (each reads every block itself).
  const KernelCached& kc = *f->inode->cached;
  const bool shared =
      (kc.direct_opens.load() > 0 && kc.page_cache_opens.load() > 0) || kc.direct_processes.load() > 1;
  for (uint64_t b = first; b <= last; ++b) {
    // A READ across a block boundary holds the block before it while it gets this one. Should the
    // Get have to wait (for a load in flight or for buffer room), the part of the block before it
    // is copied out and the block let go first: with every buffer held by readers waiting for room
    // for their next block, none would ever be let go (16 workers under a 32 MiB --memory-cache,
    // 128 under the default one: each waited out its bounded wait on every boundary, 20 x and 2 x
    // slower). A whole block is not copied: that frees nothing. The copy's buffer is outside the
    // budget: it must not wait for the room it is there to free (each reader holding a copy and
    // waiting for room was the same deadlock one step on), and copies are bounded by the READs in
    // progress.
    const auto let_go = [&out] {
      static auto& m_detached = metrics::Get("fs.read.boundary_copies");
      for (ReadSlice& sl : out) {
        if (sl.len == sl.block->size) continue;
        auto copy = std::make_shared<cache::Block>(sl.len, cache::Block::OutsideBudget{});
        std::memcpy(copy->data.get(), sl.block->data.get() + sl.offset, sl.len);
        sl = ReadSlice{std::move(copy), 0, sl.len};
        m_detached.Add();
      }
    };
    auto block = cache_->Get(cache::BlockKey{f->content, b}, BlockLen(*f, b), Fetcher(*f, b), cancel,
                             out.empty() ? std::function<void()>() : std::function<void()>(let_go));
    if (!block.ok()) return block.error();
    const uint64_t bstart = b * bs;
    const uint64_t s = std::max(offset, bstart), e = std::min(end, bstart + block.value()->size);
    out.push_back(ReadSlice{block.value(), static_cast<size_t>(s - bstart), static_cast<size_t>(e - s)});
    if (!shared) cache_->Served(cache::BlockKey{f->content, b}, e - s);
  }
  m_bytes.Add(end - offset);
  return out;
}

void Filesystem::NoteReturned(const OpenFile& f, uint64_t begin, uint64_t end) {
  KernelCached& kc = *f.inode->cached;
  std::lock_guard lock(kc.mu);
  if (!kc.blocks) kc.blocks.emplace(cache_->block_size(), f.size);
  kc.blocks->Note(begin, end);
}

bool Filesystem::KernelAccountsFor(const OpenFile& f, uint64_t begin, uint64_t end) const {
  KernelCached& kc = *f.inode->cached;
  std::lock_guard lock(kc.mu);
  return kc.blocks && kc.blocks->AccountsFor(begin, end, options_.readahead.backward_tolerance,
                                             options_.readahead.forward_tolerance);
}

bool Filesystem::AllCached(const OpenFile& f) const {
  const uint64_t bs = cache_->block_size();
  for (uint64_t b = 0; b * bs < f.size; ++b)
    if (!cache_->Contains(cache::BlockKey{f.content, b})) return false;
  return true;
}

bool Filesystem::KernelHas(const OpenFile& f, uint64_t block) const {
  KernelCached& kc = *f.inode->cached;
  std::lock_guard lock(kc.mu);
  return kc.blocks && kc.blocks->Has(block);
}

Result<std::string> Filesystem::GetXattr(uint64_t ino, const std::string& name) {
  auto in = Get(ino);
  if (!in) return MakeError(ErrorKind::kNotFound, "stale inode");
  if (in->kind != Kind::kRepo) return MakeError(ErrorKind::kNoAttribute, name);
  const SnapshotNode& n = in->snap->node(in->node);
  if (name == "user.hf.commit") return in->snap->commit();
  if (name == "user.hf.repo")
    return std::string(fetch::ApiCollection(in->snap->type())) + "/" + in->snap->repo_id();
  if (n.is_dir) return MakeError(ErrorKind::kNoAttribute, name);
  if (name == "user.hf.etag") return n.lfs ? n.lfs_sha256 : n.oid;
  if (name == "user.hf.size") return std::to_string(n.size);
  if (name == "user.hf.lfs") return std::string(n.lfs ? "1" : "0");
  if (name == "user.hf.sha256" && n.lfs) return n.lfs_sha256;
  if (name == "user.hf.oid") return n.oid;
  if (name == "user.hf.cached") {
    // Bytes of the file this cache holds (memory or disk): "is it all here before I go offline?"
    uint64_t cached = 0;
    const uint64_t bs = cache_->block_size();
    if (n.content)
      for (uint64_t b = 0; b * bs < n.size; ++b)
        if (cache_->Contains(cache::BlockKey{*n.content, b})) cached += std::min(bs, n.size - b * bs);
    return std::to_string(cached);
  }
  return MakeError(ErrorKind::kNoAttribute, name);
}

Result<std::vector<std::string>> Filesystem::ListXattr(uint64_t ino) {
  auto in = Get(ino);
  if (!in) return MakeError(ErrorKind::kNotFound, "stale inode");
  std::vector<std::string> names;
  if (in->kind != Kind::kRepo) return names;
  names = {"user.hf.commit", "user.hf.repo"};
  const SnapshotNode& n = in->snap->node(in->node);
  if (n.is_dir) return names;
  for (const char* x : {"user.hf.etag", "user.hf.size", "user.hf.lfs", "user.hf.oid", "user.hf.cached"})
    names.emplace_back(x);
  if (n.lfs) names.emplace_back("user.hf.sha256");
  return names;
}

StatFsOut Filesystem::StatFs() const {
  StatFsOut s{};
  s.block_size = 4096;
  // Size: the local cache's cap (the Hub has no meaningful total); free: nothing can be written.
  const uint64_t cap = std::max<uint64_t>(options_.capacity_bytes, cache_->Stats().disk_bytes);
  s.blocks = cap / s.block_size;
  s.blocks_free = 0;
  {
    std::lock_guard lock(mu_);
    s.files = inodes_.size();
  }
  s.files_free = 0;
  s.name_max = 255;
  return s;
}

}  // namespace hubfs::fs
