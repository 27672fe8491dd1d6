// FUSE passthrough (Linux >= 6.9) over libfuse 3.14, which predates it.
//
// With passthrough the kernel serves READs and mmap faults of an open file straight from a local
// "backing" file, at the speed of a local file (its page cache, large folios, the disk's own
// readahead), with no request to the daemon. hubfs uses it for files whose verified whole copy is
// on the disk tier (cache/disk_store.h).
//
// libfuse 3.14 can neither ask for it in FUSE_INIT nor say it in an OPEN reply, so this sits
// between libfuse and /dev/fuse (fuse_session_custom_io): it reads the kernel's INIT request to see
// whether passthrough is offered, sets FUSE_PASSTHROUGH and max_stack_depth in the INIT reply,
// and sets FOPEN_PASSTHROUGH and the backing id in the OPEN replies it was told about. Backing ids
// come from the FUSE_DEV_IOC_BACKING_OPEN ioctl on the session's device (CAP_SYS_ADMIN).
//
// The kernel refuses (EIO to the opener) a passthrough open of an inode that has files open
// through the page cache, and a cached open of one with passthrough files: Acquire() keeps both
// counts per inode and gives a new open the mode its inode's open files already have. The counts
// drop on RELEASE, which the kernel sends after its own counts dropped, so they never undercount.
//
// The same hooks ask for FUSE_DIRECT_IO_ALLOW_MMAP (Linux >= 6.6) when the kernel offers it, so
// that a file opened with FOPEN_DIRECT_IO can still be mmapped (through the page cache). hubfs
// opens large files it does not hold whole that way ("direct" opens, filesystem.h OpenOut): a cold
// read goes from the daemon's block buffers straight into the reader's buffer, with no page-cache
// copy in between. Which opens may be direct is the filesystem's choice (Filesystem::MayOpenDirect:
// other processes join the direct readers of a file only while those are near its start); here an
// open is direct only while its inode has no page-cache opens (those share one page cache, and a
// direct open among them would be one more reader the daemon serves every byte).
//
// While an inode is open in passthrough mode, BackingPrefetcher (backing_prefetch.h) keeps the
// disk read ahead of a sequential reader of its backing file.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "fs/backing_prefetch.h"

namespace hubfs::fs {

class Passthrough {
 public:
  // `allowed`: the user did not turn it off; `prefetch_ahead`: bytes of a backing file read ahead
  // of a sequential reader (0: the kernel's readahead only). The device fd is set once the session
  // is mounted.
  Passthrough(bool allowed, uint64_t prefetch_ahead) : allowed_(allowed), prefetch_(prefetch_ahead) {}
  void SetDevice(int fd) { dev_fd_ = fd; }

  // The custom-io hooks (read and writev on the device, errno semantics).
  ssize_t Read(int fd, void* buf, size_t len);
  ssize_t Writev(int fd, iovec* iov, int count);

  // Whether the kernel offered passthrough in FUSE_INIT (known before libfuse's init callback).
  bool offered() const { return offered_; }
  // Called from the init callback: whether the INIT reply asks for passthrough.
  void Request(bool on) { requested_ = on && offered_ && allowed_; }
  bool active() const { return requested_ && !refused_; }

  // Called from the init callback: whether the INIT reply asks for FUSE_DIRECT_IO_ALLOW_MMAP (if
  // offered). Without it no open is direct: a direct file could not be mapped shared.
  void RequestDirect(bool on) { direct_ = on && direct_offered_; }
  bool direct() const { return direct_; }

  struct Mode {
    int backing_id = -1;  // > 0: a passthrough open with this backing id
    bool direct = false;  // FOPEN_DIRECT_IO
  };
  // An open (handle fh) of inode `ino` whose whole local copy is `backing` ("" if none), which may
  // be direct or not: how to open it. Counts the open.
  Mode Acquire(uint64_t ino, uint64_t fh, const std::string& backing, bool may_direct);
  // The open counted by Acquire is gone (RELEASE, or its reply could not be sent).
  void Release(uint64_t ino, uint64_t fh);
  // True once a backing open failed for good (not permitted, a stacked cache filesystem): the
  // caller turns whole files off.
  bool refused() const { return refused_; }

  // The backing id the OPEN reply about to be sent on this thread carries (-1: none).
  static void SetReplyBacking(int id);

 private:
  struct InodeIo {
    int passthrough = 0;  // open files in passthrough mode
    int cached = 0;       // open files through the page cache
    int direct = 0;       // open files with FOPEN_DIRECT_IO
    int backing_id = -1;
  };
  int OpenBacking(const std::string& path, int* fd);
  void CloseBacking(int id);

  const bool allowed_;
  int dev_fd_ = -1;
  std::atomic<bool> offered_{false};
  std::atomic<bool> direct_offered_{false};
  std::atomic<bool> direct_{false};
  std::atomic<bool> requested_{false};
  std::atomic<bool> refused_{false};
  std::atomic<uint64_t> init_unique_{0};
  std::mutex mu_;
  std::unordered_map<uint64_t, InodeIo> inodes_;
  std::unordered_set<uint64_t> direct_fhs_;  // the handles of direct opens
  BackingPrefetcher prefetch_;  // its lock is taken under mu_ (Stop), never the other way
};

}  // namespace hubfs::fs
