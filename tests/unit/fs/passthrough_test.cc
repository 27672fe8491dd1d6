// The kernel io mode of each open (fs/passthrough.h): what the INIT reply asks for, and which
// opens are direct. The device is a pipe: the hooks read the kernel's INIT request from it and
// write the replies into another, where the test reads back the bytes the kernel would get.
#include "fs/passthrough.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "fs/fuse_abi.h"

namespace hubfs::fs {
namespace {

using namespace abi;

class Pipe {
 public:
  Pipe() { EXPECT_EQ(::pipe(fds_), 0); }
  ~Pipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  int r() const { return fds_[0]; }
  int w() const { return fds_[1]; }

 private:
  int fds_[2] = {-1, -1};
};

// The kernel's INIT request, offering `flags2`, through the hook.
void KernelInit(Passthrough& pt, uint32_t flags2, uint64_t unique = 7) {
  InHeader h{};
  h.len = sizeof(InHeader) + sizeof(InitIn);
  h.opcode = kOpInit;
  h.unique = unique;
  InitIn in{7, 40, 1u << 20, kInitExt, flags2};
  std::vector<char> buf(h.len);
  std::memcpy(buf.data(), &h, sizeof h);
  std::memcpy(buf.data() + sizeof h, &in, sizeof in);
  Pipe dev;
  ASSERT_EQ(::write(dev.w(), buf.data(), buf.size()), static_cast<ssize_t>(buf.size()));
  std::vector<char> got(4096);
  ASSERT_EQ(pt.Read(dev.r(), got.data(), got.size()), static_cast<ssize_t>(buf.size()));
}

// libfuse's INIT reply through the hook: the flags2 the kernel receives.
uint32_t InitReplyFlags2(Passthrough& pt, uint64_t unique = 7) {
  OutHeader h{sizeof(OutHeader) + sizeof(InitOut), 0, unique};
  InitOut o{};
  o.flags = kInitExt;
  iovec iov[2] = {{&h, sizeof h}, {&o, sizeof o}};
  Pipe dev;
  EXPECT_EQ(pt.Writev(dev.w(), iov, 2), static_cast<ssize_t>(h.len));
  std::vector<char> got(h.len);
  EXPECT_EQ(::read(dev.r(), got.data(), got.size()), static_cast<ssize_t>(h.len));
  InitOut sent;
  std::memcpy(&sent, got.data() + sizeof h, sizeof sent);
  return sent.flags2;
}

TEST(PassthroughTest, AsksForDirectMmapOnlyWhenOfferedAndWanted) {
  {
    Passthrough pt(false, 0);
    KernelInit(pt, kDirectIoAllowMmap);
    pt.RequestDirect(true);
    EXPECT_TRUE(pt.direct());
    EXPECT_EQ(InitReplyFlags2(pt), kDirectIoAllowMmap);
  }
  {
    Passthrough pt(false, 0);
    KernelInit(pt, kDirectIoAllowMmap);
    pt.RequestDirect(false);  // --direct-min-mib 0
    EXPECT_FALSE(pt.direct());
    EXPECT_EQ(InitReplyFlags2(pt), 0u);
  }
  {
    Passthrough pt(false, 0);
    KernelInit(pt, 0);  // a kernel before 6.6
    pt.RequestDirect(true);
    EXPECT_FALSE(pt.direct());
    EXPECT_EQ(InitReplyFlags2(pt), 0u);
    EXPECT_FALSE(pt.Acquire(1, 10, "", true).direct);  // and no open is direct
  }
}

TEST(PassthroughTest, DirectOpensOnlyWhileTheInodeHasNoPageCacheOpens) {
  Passthrough pt(false, 0);
  KernelInit(pt, kDirectIoAllowMmap);
  pt.RequestDirect(true);
  ASSERT_TRUE(pt.direct());

  EXPECT_TRUE(pt.Acquire(1, 10, "", true).direct);
  EXPECT_TRUE(pt.Acquire(1, 11, "", true).direct);    // a second reader (the filesystem let it)
  EXPECT_FALSE(pt.Acquire(1, 12, "", false).direct);  // one the filesystem did not: page cache
  EXPECT_TRUE(pt.Acquire(2, 13, "", true).direct);    // another inode is its own

  pt.Release(1, 10);
  pt.Release(1, 11);
  // A page-cache handle of inode 1 is still open: a new open joins it, even if it may be direct.
  EXPECT_FALSE(pt.Acquire(1, 14, "", true).direct);
  pt.Release(1, 12);
  pt.Release(1, 14);
  // All closed: the next reader of inode 1 may read it direct again.
  EXPECT_TRUE(pt.Acquire(1, 15, "", true).direct);
  pt.Release(1, 15);
  pt.Release(2, 13);
}

}  // namespace
}  // namespace hubfs::fs
