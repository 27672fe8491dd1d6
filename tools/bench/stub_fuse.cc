// hubfs_stub_fuse: the FUSE-path ceiling for tools/bench.
//
//   hubfs_stub_fuse MOUNTPOINT SIZE_BYTES [NAME] [--direct] [--trace FILE]   (foreground; fusermount3 -u)
//
// A minimal libfuse low-level filesystem with one regular file, NAME (default "shard.bin"), of
// SIZE_BYTES bytes whose READs are answered from memory: byte i of the file is
// PatternByte(i % 1 MiB), a 1 MiB repeating pattern, so a READ is one or two iovecs into a static buffer and costs no copy
// in the daemon. Everything the kernel sees is what hubfs negotiates (fs/fuse_adapter.cc):
// ro,default_permissions; max_write 1 MiB (so max_pages 256: 1 MiB READs); max_readahead 1 MiB;
// max_background 64 (congestion 48); async reads; keep_cache on open; the multithreaded loop; and,
// as root, /sys/class/bdi/<maj:min>/read_ahead_kb raised to 16384 after the mount. The benchmark
// reads it with the same access patterns as hubfs, so (stub time) is what the kernel FUSE path
// alone costs on this machine. With --direct the file is opened as hubfs opens a large file it
// does not hold yet: FOPEN_DIRECT_IO, with FUSE_DIRECT_IO_ALLOW_MMAP asked for in FUSE_INIT
// (fs/passthrough.h); if the kernel does not offer that, the stub, like hubfs, uses the page cache.
// With --trace every READ the kernel sends is written to FILE as one line "HANDLE OFFSET SIZE", in
// the order the daemon's threads take them (each open gets its own HANDLE, from 1): the recorded
// offset traces the readahead policy's unit tests replay (tools/bench/record_traces.py).
#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fs/fuse_abi.h"

namespace {

constexpr uint64_t kPatternSize = 1u << 20;
constexpr fuse_ino_t kFileIno = 2;

std::vector<char> g_pattern;  // 2 x kPatternSize so any window < 1 MiB is contiguous
uint64_t g_size = 0;
std::string g_name = "shard.bin";
std::string g_mountpoint;
bool g_direct_wanted = false;       // --direct
std::atomic<bool> g_direct{false};  // ... and FUSE_DIRECT_IO_ALLOW_MMAP was negotiated
std::atomic<uint64_t> g_init_unique{0};
std::atomic<uint64_t> g_next_fh{1};
std::FILE* g_trace = nullptr;  // --trace
std::mutex g_trace_mu;

// The custom-io hooks: FUSE_DIRECT_IO_ALLOW_MMAP in the INIT reply, as hubfs asks for it.
ssize_t HookRead(int fd, void* buf, size_t len, void*) {
  const ssize_t r = ::read(fd, buf, len);
  uint64_t unique = 0;
  uint32_t flags2 = 0;
  if (r > 0 && hubfs::fs::abi::ParseInit(buf, static_cast<size_t>(r), &unique, &flags2) &&
      (flags2 & hubfs::fs::abi::kDirectIoAllowMmap))
    g_init_unique = unique;
  return r;
}

ssize_t HookWritev(int fd, iovec* iov, int count, void*) {
  const uint64_t unique = hubfs::fs::abi::ReplyUnique(iov, count);
  // A plain load first: an exchange on every reply would put a shared write in the ceiling's path.
  if (unique != 0 && unique == g_init_unique.load(std::memory_order_relaxed) && g_init_unique.exchange(0) == unique)
    g_direct = hubfs::fs::abi::EditInitReply(iov, [](hubfs::fs::abi::InitOut& o) {
      o.flags2 |= hubfs::fs::abi::kDirectIoAllowMmap;
    });
  return ::writev(fd, iov, count);
}

inline char PatternByte(uint64_t i) {  // i < kPatternSize
  const uint64_t x = i * 2654435761u;
  return static_cast<char>((x >> 13) ^ (x >> 5) ^ i % 251);
}

struct stat FileStat() {
  struct stat st {};
  st.st_ino = kFileIno;
  st.st_mode = S_IFREG | 0444;
  st.st_nlink = 1;
  st.st_size = static_cast<off_t>(g_size);
  st.st_blocks = static_cast<blkcnt_t>((g_size + 511) / 512);
  st.st_blksize = 1 << 20;
  return st;
}

struct stat RootStat() {
  struct stat st {};
  st.st_ino = FUSE_ROOT_ID;
  st.st_mode = S_IFDIR | 0555;
  st.st_nlink = 2;
  return st;
}

void Init(void*, fuse_conn_info* conn) {
  // Same negotiation as hubfs (fs/fuse_adapter.cc Init).
  conn->max_write = 1u << 20;
  conn->max_readahead = 1u << 20;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_AUTO_INVAL_DATA);
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != FUSE_ROOT_ID || g_name != name) return (void)fuse_reply_err(req, ENOENT);
  fuse_entry_param e{};
  e.ino = kFileIno;
  e.attr = FileStat();
  e.attr_timeout = 3600;
  e.entry_timeout = 3600;
  e.generation = 1;
  fuse_reply_entry(req, &e);
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino != FUSE_ROOT_ID && ino != kFileIno) return (void)fuse_reply_err(req, ENOENT);
  struct stat st = ino == FUSE_ROOT_ID ? RootStat() : FileStat();
  fuse_reply_attr(req, &st, 3600);
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kFileIno) return (void)fuse_reply_err(req, EISDIR);
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return (void)fuse_reply_err(req, EROFS);
  fi->fh = g_next_fh++;
  fi->keep_cache = 1;
  fi->noflush = 1;
  fi->direct_io = g_direct ? 1 : 0;
  // What the kernel granted, for the bench's header (it names the ceiling's open mode).
  static std::once_flag said;
  std::call_once(said, [] {
    std::fprintf(stderr, "hubfs_stub_fuse %s: files open %s\n", g_mountpoint.c_str(),
                 g_direct ? "direct" : "through the page cache");
    std::fflush(stderr);
  });
  fuse_reply_open(req, fi);
}

void Read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  const uint64_t o = static_cast<uint64_t>(off);
  if (g_trace != nullptr) {
    std::lock_guard lock(g_trace_mu);
    std::fprintf(g_trace, "%llu %llu %zu\n", static_cast<unsigned long long>(fi->fh),
                 static_cast<unsigned long long>(o), size);
  }
  if (o >= g_size) return (void)fuse_reply_buf(req, nullptr, 0);
  if (size > g_size - o) size = static_cast<size_t>(g_size - o);
  // size <= 1 MiB (max_pages 256), so one window into the doubled pattern covers it; larger
  // requests (never negotiated) are split into 1 MiB iovecs.
  std::vector<iovec> iov;
  uint64_t done = 0;
  while (done < size) {
    const uint64_t p = (o + done) % kPatternSize;
    const uint64_t n = std::min<uint64_t>(size - done, kPatternSize);
    iov.push_back({g_pattern.data() + p, static_cast<size_t>(n)});
    done += n;
  }
  fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
}

void Release(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != FUSE_ROOT_ID) return (void)fuse_reply_err(req, ENOTDIR);
  fuse_reply_open(req, fi);
}

void ReadDir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  std::vector<char> buf(size);
  size_t used = 0;
  struct Ent {
    const char* name;
    struct stat st;
  };
  const Ent ents[] = {{".", RootStat()}, {"..", RootStat()}, {g_name.c_str(), FileStat()}};
  for (off_t i = off; i < 3; ++i) {
    const size_t n = fuse_add_direntry(req, buf.data() + used, size - used, ents[i].name, &ents[i].st, i + 1);
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void RaiseReadahead(const char* mountpoint, unsigned kb) {
  struct stat st {};
  if (::stat(mountpoint, &st) != 0) return;
  const std::string path = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                           std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
  std::ofstream f(path);
  if (f) f << kb << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--direct") == 0) {
      g_direct_wanted = true;
    } else if (std::strcmp(argv[i], "--trace") == 0 && i + 1 < argc) {
      g_trace = std::fopen(argv[++i], "w");
      if (g_trace == nullptr) {
        std::perror(argv[i]);
        return 2;
      }
    } else {
      pos.emplace_back(argv[i]);
    }
  }
  if (pos.size() < 2 || pos.size() > 3) {
    std::fprintf(stderr, "usage: %s MOUNTPOINT SIZE_BYTES [NAME] [--direct] [--trace FILE]\n", argv[0]);
    return 2;
  }
  const char* mountpoint = pos[0].c_str();
  g_mountpoint = pos[0];
  g_size = std::strtoull(pos[1].c_str(), nullptr, 10);
  if (pos.size() > 2) g_name = pos[2];
  g_pattern.resize(2 * kPatternSize);
  for (uint64_t i = 0; i < 2 * kPatternSize; ++i) g_pattern[i] = PatternByte(i % kPatternSize);

  fuse_lowlevel_ops ops{};
  ops.init = Init;
  ops.lookup = Lookup;
  ops.getattr = GetAttr;
  ops.open = Open;
  ops.read = Read;
  ops.release = Release;
  ops.opendir = OpenDir;
  ops.readdir = ReadDir;

  std::vector<std::string> argv_s = {"hubfs_stub_fuse", "-o", "ro,default_permissions,fsname=hubfs-stub,subtype=hubfs-stub"};
  std::vector<char*> fargv;
  for (auto& s : argv_s) fargv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(fargv.size()), fargv.data());
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, nullptr);
  fuse_opt_free_args(&args);
  if (se == nullptr) return 2;
  if (fuse_set_signal_handlers(se) != 0) {
    fuse_session_destroy(se);
    return 1;
  }
  if (fuse_session_mount(se, mountpoint) != 0) {
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return 1;
  }
  if (g_direct_wanted) {
    static const fuse_custom_io io = [] {
      fuse_custom_io v{};
      v.read = HookRead;
      v.writev = HookWritev;
      return v;
    }();
    if (fuse_session_custom_io(se, &io, fuse_session_fd(se)) != 0) std::fprintf(stderr, "custom io refused\n");
  }
  std::thread tune;
  if (::geteuid() == 0) tune = std::thread([&] { RaiseReadahead(mountpoint, 16384); });
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, 64);
  fuse_loop_cfg_set_idle_threads(cfg, 16);
  const int rc = fuse_session_loop_mt(se, cfg) == 0 ? 0 : 1;
  fuse_loop_cfg_destroy(cfg);
  if (tune.joinable()) tune.join();
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  if (g_trace != nullptr && std::fclose(g_trace) != 0) {
    std::perror("--trace");
    return 1;
  }
  return rc;
}
