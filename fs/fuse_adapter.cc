// The FUSE adapter (see fuse_adapter.h).
#include "fs/fuse_adapter.h"

#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "common/log.h"
#include "common/metrics.h"
#include "fs/errno_map.h"
#include "fs/passthrough.h"

namespace hubfs::fs {
namespace {

struct Context {
  Context(bool passthrough, uint64_t prefetch_ahead) : pt(passthrough, prefetch_ahead) {}
  std::unique_ptr<Filesystem> fs;
  Passthrough pt;
  std::atomic<bool> initialized{false};  // FUSE_INIT answered
  std::atomic<bool> done{false};         // the session loop has ended
  std::atomic<bool> passthrough_off{false};  // the kernel refused it: the filesystem was told once
  bool direct_allowed = false;               // MountOptions::direct_min_mib > 0
  // False while the mount's readahead is being raised (RaiseReadahead): the kernel sizes a file's
  // readahead window from the mount's BDI when the file is opened, for as long as it stays open,
  // so opens wait for the raise (once, a few ms after FUSE_INIT) instead of keeping the
  // 128 KiB window of a mount not yet tuned (measured: 128 KiB READs for the whole file, 8x the
  // requests of 1 MiB ones).
  std::atomic<bool> readahead_settled{true};
  std::mutex readahead_mu;
  std::condition_variable readahead_cv;

  void SettleReadahead() {
    {
      std::lock_guard lock(readahead_mu);
      readahead_settled = true;
    }
    readahead_cv.notify_all();
  }
  void WaitReadahead() {
    if (readahead_settled.load()) return;
    std::unique_lock lock(readahead_mu);
    readahead_cv.wait_for(lock, kMaxReadaheadWait, [this] { return readahead_settled.load(); });
  }
  static constexpr std::chrono::seconds kMaxReadaheadWait{2};
};

Context* CtxOf(fuse_req_t req) { return static_cast<Context*>(fuse_req_userdata(req)); }
Filesystem* FsOf(fuse_req_t req) { return CtxOf(req)->fs.get(); }

void ReplyError(fuse_req_t req, const Error& e, const char* op) {
  static auto& m_errors = metrics::Get("fuse.errors");
  m_errors.Add();
  LOG_DEBUG("%s from pid %d -> %s", op, static_cast<int>(fuse_req_ctx(req)->pid), e.ToString().c_str());
  fuse_reply_err(req, ErrnoFor(e.kind));
}

struct stat ToStat(const Attr& a) {
  struct stat st {};
  st.st_ino = a.ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_size = static_cast<off_t>(a.size);
  st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  st.st_blksize = 1 << 20;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_mtim.tv_sec = a.mtime;
  st.st_ctim.tv_sec = a.mtime;
  st.st_atim.tv_sec = a.mtime;
  return st;
}

void OnInterrupt(fuse_req_t, void* data) { static_cast<CancelToken*>(data)->Cancel(); }

void Init(void* userdata, fuse_conn_info* conn) {
  auto* ctx = static_cast<Context*>(userdata);
  ctx->initialized = true;
  ctx->pt.Request(true);       // if offered and allowed (root)
  ctx->pt.RequestDirect(ctx->direct_allowed);  // if offered: direct files stay mappable
  if (ctx->pt.active()) {
    ctx->fs->SetPassthrough(true);
    LOG_INFO("FUSE passthrough on: cached files are read by the kernel from their local copies");
  }
  conn->max_write = 1u << 20;      // libfuse derives max_pages from it: 1 MiB READs
  conn->max_readahead = 1u << 20;  // the kernel can only lower the BDI readahead with this
  conn->max_background = 64;       // readahead READs are background requests
  conn->congestion_threshold = 48;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_AUTO_INVAL_DATA);  // content is immutable per inode
  // READDIRPLUS for every chunk of a listing, not only the first (the kernel's adaptive mode
  // switches to plain READDIR unless lookups arrive while it lists: `find` then `cat` gets
  // attributes for the first ~200 entries only).
  if (conn->capable & FUSE_CAP_READDIRPLUS) {
    conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~static_cast<unsigned>(FUSE_CAP_READDIRPLUS_AUTO);
  }
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  static auto& m_lookups = metrics::Get("fuse.lookups");
  m_lookups.Add();
  auto r = FsOf(req)->Lookup(parent, name);
  if (!r.ok()) return ReplyError(req, r.error(), "lookup");
  fuse_entry_param e{};
  e.ino = r->ino;
  e.attr = ToStat(r->attr);
  e.entry_timeout = r->entry_timeout;
  e.attr_timeout = r->attr_timeout;
  e.generation = 1;
  if (e.ino == 0 && e.entry_timeout == 0) return (void)fuse_reply_err(req, ENOENT);
  fuse_reply_entry(req, &e);
}

void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  FsOf(req)->Forget(ino, nlookup);
  fuse_reply_none(req);
}

void ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) FsOf(req)->Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  double timeout = 0;
  auto r = FsOf(req)->GetAttr(ino, &timeout);
  if (!r.ok()) return ReplyError(req, r.error(), "getattr");
  struct stat st = ToStat(r.value());
  fuse_reply_attr(req, &st, timeout);
}

void ReadLink(fuse_req_t req, fuse_ino_t ino) {
  auto r = FsOf(req)->ReadLink(ino);
  if (!r.ok()) return ReplyError(req, r.error(), "readlink");
  fuse_reply_readlink(req, r->c_str());
}

// The process a thread belongs to (FUSE requests carry the thread's id); the id itself if it is
// gone already.
int TgidOf(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(tid));
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("Tgid:", 0) == 0) return std::atoi(line.c_str() + 5);
  return static_cast<int>(tid);
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  CtxOf(req)->WaitReadahead();
  auto r = FsOf(req)->Open(ino, fi->flags);
  if (!r.ok()) return ReplyError(req, r.error(), "open");
  fi->fh = r->fh;
  fi->direct_io = r->direct_io ? 1 : 0;
  // Every inode's content is immutable: keep its page cache (also what mmaps of direct files read).
  fi->keep_cache = r->direct_io ? 0 : 1;
  fi->noflush = 1;
  Context* ctx = CtxOf(req);
  Passthrough::Mode mode;
  if (!r->direct_io) {
    const int tgid = r->may_direct && ctx->pt.direct() ? TgidOf(fuse_req_ctx(req)->pid) : 0;
    mode = ctx->pt.Acquire(ino, r->fh, r->backing, tgid > 0 && ctx->fs->MayOpenDirect(r->fh, tgid));
    if (mode.direct) {
      fi->direct_io = 1;
      ctx->fs->MarkDirect(r->fh, tgid);
    }
  }
  if (ctx->pt.refused() && !ctx->passthrough_off.exchange(true)) ctx->fs->SetPassthrough(false);
  Passthrough::SetReplyBacking(mode.backing_id);
  const int sent = fuse_reply_open(req, fi);
  Passthrough::SetReplyBacking(-1);
  if (sent == -ENOENT) {  // interrupted open
    if (!r->direct_io) ctx->pt.Release(ino, r->fh);
    FsOf(req)->Release(fi->fh);
  }
}

void Read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  static auto& h_latency = metrics::GetHistogram("fuse.read.latency_us");
  static auto& h_size = metrics::GetHistogram("fuse.read.size_kib");
  metrics::LatencyTimer timer(h_latency);
  h_size.Observe((size + 1023) / 1024);
  Filesystem* fs = FsOf(req);
  CancelToken cancel(fs->Deadline());
  fuse_req_interrupt_func(req, OnInterrupt, &cancel);
  auto r = fs->Read(fi->fh, static_cast<uint64_t>(off), size, &cancel);
  fuse_req_interrupt_func(req, nullptr, nullptr);
  if (!r.ok()) return ReplyError(req, r.error(), "read");
  iovec iov[8];
  std::vector<iovec> big;
  iovec* v = iov;
  if (r->size() > 8) {
    big.resize(r->size());
    v = big.data();
  }
  for (size_t i = 0; i < r->size(); ++i) {
    const ReadSlice& s = (*r)[i];
    v[i].iov_base = const_cast<char*>(s.block->data.get() + s.offset);
    v[i].iov_len = s.len;
  }
  fuse_reply_iov(req, v, static_cast<int>(r->size()));  // blocks stay alive until this returns
}

void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  CtxOf(req)->pt.Release(ino, fi->fh);
  FsOf(req)->Release(fi->fh);
  fuse_reply_err(req, 0);
}

struct DirHandle {
  std::vector<DirEntryOut> entries;
  bool with_attrs = false;  // READDIRPLUS looks its entries up (Filesystem::ListsWithAttrs)
};

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto r = FsOf(req)->ReadDir(ino);
  if (!r.ok()) return ReplyError(req, r.error(), "opendir");
  auto* h = new DirHandle{std::move(r.value()), FsOf(req)->ListsWithAttrs(ino)};
  fi->fh = reinterpret_cast<uint64_t>(h);
  fi->cache_readdir = 0;
  if (fuse_reply_open(req, fi) == -ENOENT) delete h;
}

// What a listing says of an entry without looking it up: its inode (when known) and type.
struct stat EntryStat(const DirEntryOut& e) {
  struct stat st {};
  st.st_ino = e.ino != 0 ? e.ino : static_cast<ino_t>(-1);
  st.st_mode = e.type;
  return st;
}

void ReadDir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  auto* h = reinterpret_cast<DirHandle*>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < h->entries.size(); ++i) {
    const DirEntryOut& e = h->entries[i];
    const struct stat st = EntryStat(e);
    const size_t n = fuse_add_direntry(req, buf.data() + used, size - used, e.name.c_str(), &st,
                                       static_cast<off_t>(i + 1));
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

// READDIRPLUS: each entry of a repo's directory comes with its inode and attributes, as a LOOKUP
// would return them, so `ls -l`, `find -size` or a loader opening every file it listed sends no
// LOOKUP per file (2000 small files: 2000 fewer round trips). Entries of the directories above a
// repo (orgs, repos) would need the network to look up: they go without (inode 0: a plain entry).
// Every entry sent with an inode counts one lookup, as the kernel counts it; "." and ".." never do.
void ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  static auto& m_entries = metrics::Get("fuse.readdirplus.entries");
  auto* h = reinterpret_cast<DirHandle*>(fi->fh);
  Filesystem* fs = FsOf(req);
  std::vector<char> buf(size);
  std::vector<uint64_t> counted;  // inodes whose lookup this reply carries
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < h->entries.size(); ++i) {
    const DirEntryOut& e = h->entries[i];
    const off_t next = static_cast<off_t>(i + 1);
    // Sized first: an entry that does not fit must not count a lookup.
    if (fuse_add_direntry_plus(req, nullptr, 0, e.name.c_str(), nullptr, next) > size - used) break;
    fuse_entry_param p{};
    p.attr = EntryStat(e);
    if (h->with_attrs && e.name != "." && e.name != "..") {
      auto r = fs->Lookup(ino, e.name);
      if (r.ok() && r->ino != 0) {
        p.ino = r->ino;
        p.generation = 1;
        p.attr = ToStat(r->attr);
        p.entry_timeout = r->entry_timeout;
        p.attr_timeout = r->attr_timeout;
        m_entries.Add();
        counted.push_back(r->ino);
      }
    }
    used += fuse_add_direntry_plus(req, buf.data() + used, size - used, e.name.c_str(), &p, next);
  }
  // A reply the kernel no longer waits for (the lister was killed) links nothing: undo its lookups.
  if (fuse_reply_buf(req, buf.data(), used) != 0)
    for (uint64_t child : counted) fs->Forget(child, 1);
}

void ReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void StatFs(fuse_req_t req, fuse_ino_t) {
  const StatFsOut s = FsOf(req)->StatFs();
  struct statvfs v {};
  v.f_bsize = s.block_size;
  v.f_frsize = s.block_size;
  v.f_blocks = s.blocks;
  v.f_bfree = s.blocks_free;
  v.f_bavail = s.blocks_free;
  v.f_files = s.files;
  v.f_ffree = s.files_free;
  v.f_favail = s.files_free;
  v.f_namemax = s.name_max;
  v.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &v);
}

void Access(fuse_req_t req, fuse_ino_t, int mask) { fuse_reply_err(req, (mask & W_OK) ? EROFS : 0); }

// Every write-side operation: EROFS, nothing changes.
void Rofs(fuse_req_t req) { fuse_reply_err(req, EROFS); }
void SetAttr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) { Rofs(req); }
void MkNod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { Rofs(req); }
void MkDir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { Rofs(req); }
void Unlink(fuse_req_t req, fuse_ino_t, const char*) { Rofs(req); }
void RmDir(fuse_req_t req, fuse_ino_t, const char*) { Rofs(req); }
void SymLink(fuse_req_t req, const char*, fuse_ino_t, const char*) { Rofs(req); }
void Rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) { Rofs(req); }
void Link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { Rofs(req); }
void Write(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) { Rofs(req); }
void Create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { Rofs(req); }
void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto r = FsOf(req)->GetXattr(ino, name);
  if (!r.ok()) return ReplyError(req, r.error(), "getxattr");
  if (size == 0) return (void)fuse_reply_xattr(req, r->size());
  if (size < r->size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, r->data(), r->size());
}

void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto r = FsOf(req)->ListXattr(ino);
  if (!r.ok()) return ReplyError(req, r.error(), "listxattr");
  std::string buf;
  for (const auto& n : r.value()) buf.append(n).push_back('\0');
  if (size == 0) return (void)fuse_reply_xattr(req, buf.size());
  if (size < buf.size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, buf.data(), buf.size());
}

void SetXattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) { Rofs(req); }
void RemoveXattr(fuse_req_t req, fuse_ino_t, const char*) { Rofs(req); }
void Fallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) { Rofs(req); }

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = Init;
  ops.lookup = Lookup;
  ops.forget = Forget;
  ops.forget_multi = ForgetMulti;
  ops.getattr = GetAttr;
  ops.readlink = ReadLink;
  ops.open = Open;
  ops.read = Read;
  ops.release = Release;
  ops.opendir = OpenDir;
  ops.readdir = ReadDir;
  ops.readdirplus = ReadDirPlus;
  ops.releasedir = ReleaseDir;
  ops.statfs = StatFs;
  ops.access = Access;
  ops.setattr = SetAttr;
  ops.mknod = MkNod;
  ops.mkdir = MkDir;
  ops.unlink = Unlink;
  ops.rmdir = RmDir;
  ops.symlink = SymLink;
  ops.rename = Rename;
  ops.link = Link;
  ops.write = Write;
  ops.create = Create;
  ops.setxattr = SetXattr;
  ops.getxattr = GetXattr;
  ops.listxattr = ListXattr;
  ops.removexattr = RemoveXattr;
  ops.fallocate = Fallocate;
  return ops;
}

// mountinfo escapes space, tab, newline and backslash in paths as \ooo.
std::string UnescapeMountPath(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isdigit(static_cast<unsigned char>(s[i + 2])) && std::isdigit(static_cast<unsigned char>(s[i + 3]))) {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Raises the kernel readahead of the mount (root only), as gcsfuse does: FUSE_INIT can only lower it.
// The mount's device number comes from /proc/self/mountinfo, never from a stat() of the mount
// point: that would be a request to this very daemon, and one in flight when the daemon is killed
// can never be answered, leaving a thread (and so the whole mount) stuck for good. The kernel sets
// the readahead from max_readahead when it processes the INIT reply, so this waits for INIT and
// then holds the value for a moment in case it raced the reply.
void RaiseReadahead(const std::string& canonical_mountpoint, unsigned kb, Context& ctx) {
  using std::chrono::milliseconds;
  struct Settle {
    Context& c;
    ~Settle() { c.SettleReadahead(); }  // on every way out: opens never wait past this
  } settle{ctx};
  for (int i = 0; i < 10000 && !ctx.initialized && !ctx.done; ++i) std::this_thread::sleep_for(milliseconds(1));
  if (!ctx.initialized) return;
  std::string dev;
  for (int attempt = 0; attempt < 50 && dev.empty() && !ctx.done; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(milliseconds(20));
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
      // id parent major:minor root mount-point options ... - fstype source super-options
      std::istringstream fields(line);
      std::string id, parent, majmin, root, point;
      if (!(fields >> id >> parent >> majmin >> root >> point)) continue;
      if (UnescapeMountPath(point) == canonical_mountpoint && line.find(" - fuse") != std::string::npos)
        dev = majmin;  // the last match is the topmost mount
    }
  }
  if (dev.empty()) return;
  const std::string path = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  const std::string want = std::to_string(kb);
  // Opens wait for this loop (Context::WaitReadahead): a few ms, not a visible pause.
  int stable = 0;
  for (int i = 0; i < 200 && stable < 3 && !ctx.done; ++i) {
    std::string now;
    if (std::ifstream cur(path); !(cur >> now)) return;
    if (now == want) {
      ++stable;
    } else {
      stable = 0;
      std::ofstream f(path);
      if (!(f << kb << "\n")) return;
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  if (stable > 0) LOG_INFO("read_ahead_kb of the mount set to %u", kb);
}

}  // namespace

int RunMount(const MountOptions& options, const std::function<std::unique_ptr<Filesystem>()>& make_fs) {
  std::vector<std::string> argv_s = {"hubfs", "-o", "ro,default_permissions,fsname=hubfs,subtype=hubfs"};
  for (const auto& o : options.fuse_options) {
    argv_s.push_back("-o");
    argv_s.push_back(o);
  }
  if (options.debug) argv_s.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

  static const fuse_lowlevel_ops ops = MakeOps();
  // The Filesystem is created after daemonizing (its threads must live in the daemon); requests
  // are only read by the session loop, after it is set.
  // Backing files need CAP_SYS_ADMIN.
  Context ctx(options.passthrough && ::geteuid() == 0, uint64_t{options.passthrough_prefetch_mib} << 20);
  ctx.direct_allowed = options.direct_min_mib > 0;
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &ctx);
  fuse_opt_free_args(&args);
  if (se == nullptr) {
    LOG_ERROR("invalid FUSE options");
    return 2;
  }
  if (fuse_set_signal_handlers(se) != 0) {
    fuse_session_destroy(se);
    return 1;
  }
  // Resolved before mounting: afterwards resolving the mount point would ask this daemon.
  char resolved[PATH_MAX];
  const std::string canonical =
      ::realpath(options.mountpoint.c_str(), resolved) != nullptr ? std::string(resolved) : options.mountpoint;
  if (fuse_session_mount(se, options.mountpoint.c_str()) != 0) {
    LOG_ERROR("cannot mount on %s", options.mountpoint.c_str());
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return 1;
  }
  // Between libfuse and the device, for passthrough and direct opens (passthrough.h). Nothing has
  // been read yet.
  static const fuse_custom_io io = [] {
    fuse_custom_io v{};
    v.read = [](int fd, void* buf, size_t len, void* ud) { return static_cast<Context*>(ud)->pt.Read(fd, buf, len); };
    v.writev = [](int fd, iovec* iov, int count, void* ud) { return static_cast<Context*>(ud)->pt.Writev(fd, iov, count); };
    return v;
  }();
  {
    const int dev = fuse_session_fd(se);
    if (fuse_session_custom_io(se, &io, dev) == 0) ctx.pt.SetDevice(dev);
  }
  // Mounted: the parent exits now, with the mount ready; the daemon carries on.
  if (fuse_daemonize(options.foreground ? 1 : 0) != 0) return 1;
  if (!options.foreground) log::UseSyslog("hubfs");

  int rc = 1;
  ctx.fs = make_fs();
  if (ctx.fs) {
    std::thread tune;
    if (::geteuid() == 0 && options.read_ahead_kb > 0) {
      ctx.readahead_settled = false;
      tune = std::thread([&] { RaiseReadahead(canonical, options.read_ahead_kb, ctx); });
    }
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, options.max_threads);
    fuse_loop_cfg_set_idle_threads(cfg, 16);
    LOG_INFO("serving %s", options.mountpoint.c_str());
    // A signal (SIGTERM, SIGINT, SIGHUP) ends the loop with the signal number: a clean exit.
    const int loop = fuse_session_loop_mt(se, cfg);
    rc = (loop == 0 || loop == SIGTERM || loop == SIGINT || loop == SIGHUP) ? 0 : 1;
    fuse_loop_cfg_destroy(cfg);
    ctx.done = true;
    if (tune.joinable()) tune.join();
    LOG_INFO("unmounting %s", options.mountpoint.c_str());
  }
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  ctx.fs.reset();
  return rc;
}

}  // namespace hubfs::fs
