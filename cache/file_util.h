// Small file helpers shared by the disk tier and the metadata store.
#pragma once

#include <cstddef>
#include <string>

#include "common/status.h"

namespace hubfs::cache {

// write(2) until all n bytes are written; 0 or an errno.
int WriteAll(int fd, const char* buf, size_t n);
// mkdir -p with mode 0700 for every directory it creates.
Status MakeDirs(const std::string& path);

}  // namespace hubfs::cache
