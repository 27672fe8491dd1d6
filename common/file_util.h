// Small file helpers shared by the disk tier, the metadata store and the token source.
#pragma once

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

}  // namespace hubfs
