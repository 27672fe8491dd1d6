// The parts of the kernel's FUSE ABI (include/uapi/linux/fuse.h, protocol 7.40) that libfuse 3.14
// (Debian 12) predates: what hubfs sets itself in the INIT and OPEN replies on their way to
// /dev/fuse (passthrough.h). Header-only: the benchmark's stub filesystem negotiates the same.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <cstring>

namespace hubfs::fs::abi {

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
constexpr uint32_t kInitExt = 1u << 30;  // FUSE_INIT_EXT: flags2 is meaningful
// flags2 bits (the 64-bit flag's bit minus 32).
constexpr uint32_t kDirectIoAllowMmap = 1u << 4;  // FUSE_DIRECT_IO_ALLOW_MMAP (bit 36, Linux >= 6.6)
constexpr uint32_t kPassthrough = 1u << 5;        // FUSE_PASSTHROUGH (bit 37, Linux >= 6.9)
// OPEN reply flags.
constexpr uint32_t kOpenKeepCache = 1u << 1;   // FOPEN_KEEP_CACHE (not allowed with passthrough)
constexpr uint32_t kOpenPassthrough = 1u << 7;  // FOPEN_PASSTHROUGH

// The INIT request in a buffer read from /dev/fuse: its unique id and the flags2 the kernel
// offers (0 without FUSE_INIT_EXT). False if the buffer holds another request.
inline bool ParseInit(const void* buf, size_t len, uint64_t* unique, uint32_t* flags2) {
  if (len < sizeof(InHeader) + sizeof(InitIn)) return false;
  InHeader h;
  std::memcpy(&h, buf, sizeof h);
  if (h.opcode != kOpInit) return false;
  InitIn in;
  std::memcpy(&in, static_cast<const char*>(buf) + sizeof h, sizeof in);
  *unique = h.unique;
  *flags2 = (in.flags & kInitExt) ? in.flags2 : 0;
  return true;
}

// The unique id of the reply in iov (0 if it is not a header plus a body).
inline uint64_t ReplyUnique(const iovec* iov, int count) {
  if (count < 2 || iov[0].iov_len != sizeof(OutHeader)) return 0;
  OutHeader out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  return out.error == 0 ? out.unique : 0;
}

// Edits the INIT reply in iov[1] in place; false (nothing changed) when it is too short or libfuse
// did not answer with FUSE_INIT_EXT, which flags2 needs.
template <typename Edit>
bool EditInitReply(iovec* iov, Edit edit) {
  InitOut o;
  if (iov[1].iov_len < sizeof o) return false;
  std::memcpy(&o, iov[1].iov_base, sizeof o);
  if (!(o.flags & kInitExt)) return false;
  edit(o);
  std::memcpy(iov[1].iov_base, &o, sizeof o);
  return true;
}

}  // namespace hubfs::fs::abi
