// FUSE passthrough over libfuse 3.14 (see passthrough.h).
#include "fs/passthrough.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/metrics.h"

namespace hubfs::fs {
namespace {

// The kernel ABI (include/uapi/linux/fuse.h, protocol 7.40), which Debian 12's headers predate.
struct InHeader {
  uint32_t len, opcode;
  uint64_t unique, nodeid;
  uint32_t uid, gid, pid;
  uint16_t total_extlen, padding;
};
struct OutHeader {
  uint32_t len;
  int32_t error;
  uint64_t unique;
};
struct InitIn {
  uint32_t major, minor, max_readahead, flags, flags2;
};
struct InitOut {  // the prefix up to max_stack_depth
  uint32_t major, minor, max_readahead, flags;
  uint16_t max_background, congestion_threshold;
  uint32_t max_write, time_gran;
  uint16_t max_pages, map_alignment;
  uint32_t flags2, max_stack_depth;
};
struct OpenOut {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};
struct BackingMap {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
static_assert(sizeof(InHeader) == 40 && sizeof(OutHeader) == 16 && sizeof(InitIn) == 20);
static_assert(sizeof(InitOut) == 40 && sizeof(OpenOut) == 16 && sizeof(BackingMap) == 16);

constexpr uint32_t kOpInit = 26;
constexpr uint32_t kInitExt = 1u << 30;             // FUSE_INIT_EXT: flags2 is meaningful
constexpr uint32_t kPassthroughFlags2 = 1u << 5;    // FUSE_PASSTHROUGH (bit 37) in flags2
constexpr uint32_t kOpenKeepCache = 1u << 1;        // FOPEN_KEEP_CACHE (not allowed with passthrough)
constexpr uint32_t kOpenPassthrough = 1u << 7;      // FOPEN_PASSTHROUGH
constexpr uint32_t kMaxStackDepth = 1;              // backing files on a plain (unstacked) filesystem
constexpr unsigned long kIocBackingOpen = _IOW(229, 1, BackingMap);
constexpr unsigned long kIocBackingClose = _IOW(229, 2, uint32_t);

thread_local int t_reply_backing = -1;

}  // namespace

void Passthrough::SetReplyBacking(int id) { t_reply_backing = id; }

ssize_t Passthrough::Read(int fd, void* buf, size_t len) {
  const ssize_t r = ::read(fd, buf, len);
  if (r >= static_cast<ssize_t>(sizeof(InHeader) + sizeof(InitIn))) {
    InHeader h;
    std::memcpy(&h, buf, sizeof h);
    if (h.opcode == kOpInit) {
      InitIn in;
      std::memcpy(&in, static_cast<char*>(buf) + sizeof h, sizeof in);
      offered_ = (in.flags & kInitExt) && (in.flags2 & kPassthroughFlags2);
      init_unique_ = h.unique;
    }
  }
  return r;  // errno as read(2) left it
}

ssize_t Passthrough::Writev(int fd, iovec* iov, int count) {
  if (count >= 2 && iov[0].iov_len == sizeof(OutHeader)) {
    OutHeader out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    const uint64_t init = init_unique_.load();
    if (init != 0 && out.unique == init) {
      init_unique_ = 0;
      InitOut o;
      if (requested_ && out.error == 0 && iov[1].iov_len >= sizeof o) {
        std::memcpy(&o, iov[1].iov_base, sizeof o);
        if (o.flags & kInitExt) {
          o.flags2 |= kPassthroughFlags2;
          o.max_stack_depth = kMaxStackDepth;
          std::memcpy(iov[1].iov_base, &o, sizeof o);
        } else {
          requested_ = false;
        }
      }
    } else if (t_reply_backing > 0 && out.error == 0 && iov[1].iov_len == sizeof(OpenOut)) {
      OpenOut o;
      std::memcpy(&o, iov[1].iov_base, sizeof o);
      o.open_flags = (o.open_flags & ~kOpenKeepCache) | kOpenPassthrough;
      o.backing_id = t_reply_backing;
      std::memcpy(iov[1].iov_base, &o, sizeof o);
    }
  }
  return ::writev(fd, iov, count);
}

// The backing id, and in *fd the descriptor the id was made from (the caller's to close).
int Passthrough::OpenBacking(const std::string& path, int* fd) {
  *fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (*fd < 0) return -1;  // evicted meanwhile: a page-cache open
  BackingMap map{*fd, 0, 0};
  const int id = ::ioctl(dev_fd_, kIocBackingOpen, &map);
  const int err = errno;
  if (id > 0) return id;
  ::close(*fd);
  *fd = -1;
  // Not permitted (no CAP_SYS_ADMIN), or the cache sits on a stacked filesystem (ELOOP): every
  // later open would fail the same way.
  if (!refused_.exchange(true))
    LOG_WARN("FUSE passthrough refused by the kernel (%s): cached files are served by the daemon",
             std::strerror(err));
  return -1;
}

void Passthrough::CloseBacking(int id) {
  uint32_t v = static_cast<uint32_t>(id);
  ::ioctl(dev_fd_, kIocBackingClose, &v);
}

int Passthrough::Acquire(uint64_t ino, const std::string& backing) {
  static auto& m_pt = metrics::Get("fuse.open.passthrough");
  int fd = -1;
  int id = -1;
  {
    std::lock_guard lock(mu_);
    InodeIo& io = inodes_[ino];
    if (io.passthrough > 0) {
      ++io.passthrough;
      m_pt.Add();
      return io.backing_id;
    }
    if (io.cached == 0 && active() && !backing.empty() && dev_fd_ >= 0) id = OpenBacking(backing, &fd);
    if (id <= 0) {
      ++io.cached;
      return -1;
    }
    io.backing_id = id;
    io.passthrough = 1;
    m_pt.Add();
  }
  // Outside the lock (it asks the kernel how much of the file is cached); before the OPEN reply,
  // so before the RELEASE that stops it.
  prefetch_.Start(ino, fd);
  return id;
}

void Passthrough::Release(uint64_t ino) {
  std::lock_guard lock(mu_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  InodeIo& io = it->second;
  if (io.passthrough > 0) {
    if (--io.passthrough == 0) {
      CloseBacking(io.backing_id);
      prefetch_.Stop(ino);
      io.backing_id = -1;
    }
  } else if (io.cached > 0) {
    --io.cached;
  }
  if (io.passthrough == 0 && io.cached == 0) inodes_.erase(it);
}

}  // namespace hubfs::fs
