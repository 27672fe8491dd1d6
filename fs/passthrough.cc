// FUSE passthrough over libfuse 3.14 (see passthrough.h).
#include "fs/passthrough.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/metrics.h"
#include "fs/fuse_abi.h"

namespace hubfs::fs {
namespace {

using namespace abi;

constexpr uint32_t kMaxStackDepth = 1;  // backing files on a plain (unstacked) filesystem
constexpr unsigned long kIocBackingOpen = _IOW(229, 1, BackingMap);
constexpr unsigned long kIocBackingClose = _IOW(229, 2, uint32_t);

thread_local int t_reply_backing = -1;

}  // namespace

void Passthrough::SetReplyBacking(int id) { t_reply_backing = id; }

ssize_t Passthrough::Read(int fd, void* buf, size_t len) {
  const ssize_t r = ::read(fd, buf, len);
  uint64_t unique = 0;
  uint32_t flags2 = 0;
  if (r > 0 && ParseInit(buf, static_cast<size_t>(r), &unique, &flags2)) {
    offered_ = (flags2 & kPassthrough) != 0;
    direct_offered_ = (flags2 & kDirectIoAllowMmap) != 0;
    init_unique_ = unique;
  }
  return r;  // errno as read(2) left it
}

ssize_t Passthrough::Writev(int fd, iovec* iov, int count) {
  const uint64_t unique = ReplyUnique(iov, count);
  const uint64_t init = init_unique_.load();
  if (unique != 0 && unique == init) {
    init_unique_ = 0;
    const bool pt = requested_, dio = direct_;
    const bool edited = (pt || dio) && EditInitReply(iov, [&](InitOut& o) {
      if (pt) {
        o.flags2 |= kPassthrough;
        o.max_stack_depth = kMaxStackDepth;
      }
      if (dio) o.flags2 |= kDirectIoAllowMmap;
    });
    if (!edited) {
      requested_ = false;
      direct_ = false;
    }
  } else if (unique != 0 && t_reply_backing > 0 && iov[1].iov_len == sizeof(OpenOut)) {
    OpenOut o;
    std::memcpy(&o, iov[1].iov_base, sizeof o);
    o.open_flags = (o.open_flags & ~kOpenKeepCache) | kOpenPassthrough;
    o.backing_id = t_reply_backing;
    std::memcpy(iov[1].iov_base, &o, sizeof o);
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

Passthrough::Mode Passthrough::Acquire(uint64_t ino, uint64_t fh, const std::string& backing, bool may_direct) {
  static auto& m_pt = metrics::Get("fuse.open.passthrough");
  static auto& m_direct = metrics::Get("fuse.open.direct");
  int fd = -1;
  int id = -1;
  {
    std::lock_guard lock(mu_);
    InodeIo& io = inodes_[ino];
    if (io.passthrough > 0) {
      ++io.passthrough;
      m_pt.Add();
      return Mode{io.backing_id, false};
    }
    // Not while direct files are open: the kernel would refuse their mmap (ENODEV).
    if (io.cached == 0 && io.direct == 0 && active() && !backing.empty() && dev_fd_ >= 0)
      id = OpenBacking(backing, &fd);
    if (id <= 0) {
      if (may_direct && direct_ && io.cached == 0) {
        ++io.direct;
        direct_fhs_.insert(fh);
        m_direct.Add();
        return Mode{-1, true};
      }
      ++io.cached;
      return Mode{};
    }
    io.backing_id = id;
    io.passthrough = 1;
    m_pt.Add();
  }
  // Outside the lock (it asks the kernel how much of the file is cached); before the OPEN reply,
  // so before the RELEASE that stops it.
  prefetch_.Start(ino, fd);
  return Mode{id, false};
}

void Passthrough::Release(uint64_t ino, uint64_t fh) {
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
  } else if (direct_fhs_.erase(fh) != 0) {
    --io.direct;
  } else if (io.cached > 0) {
    --io.cached;
  }
  if (io.passthrough == 0 && io.cached == 0 && io.direct == 0) inodes_.erase(it);
}

}  // namespace hubfs::fs
