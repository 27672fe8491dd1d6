// Small file helpers shared by the disk tier, the metadata store, the token source and
// huggingface_hub's cache.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace hubfs {

// write(2) until all n bytes are written; 0 or an errno.
int WriteAll(int fd, const char* buf, size_t n);
// mkdir -p with mode 0700 for every directory it creates.
Status MakeDirs(const std::string& path);
// The whole regular file at `path` into *out: 0, or an errno (EFBIG past `limit` bytes, EISDIR for
// a directory, EINVAL for anything else that is not a regular file; ELOOP for a symlink when
// !follow_links). Never reads more than limit + 1 bytes.
int ReadFileUpTo(const std::string& path, uint64_t limit, std::string* out, bool follow_links = true);
// pread(2) until all n bytes at `off` are read; false on an error or end of file first (errno set
// by the failing read, 0 at end of file).
bool PreadAll(int fd, char* buf, size_t n, off_t off);

// What tells one version of a file from another without reading it: any write, replacement or
// rename changes its device, inode, size, mtime or ctime.
struct FileIdentity {
  bool exists = false;  // false: no such file (or it cannot be stat'ed); the rest is zero
  bool regular = false;
  unsigned long long dev = 0, ino = 0, size = 0;
  long long mtime_ns = 0, ctime_ns = 0;
  bool operator==(const FileIdentity&) const = default;
};
// The identity of the file at `path` (links followed).
FileIdentity StatIdentity(const std::string& path);
// The identity of the file open at `fd`.
FileIdentity FdIdentity(int fd);

}  // namespace hubfs
