// Small file helpers (see file_util.h).
#include "cache/file_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace hubfs::cache {

int WriteAll(int fd, const char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::write(fd, buf + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    done += static_cast<size_t>(r);
  }
  return 0;
}

Status MakeDirs(const std::string& path) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty() && ::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST)
        return MakeError(errno == ENOSPC ? ErrorKind::kNoSpace : ErrorKind::kIo,
                         "mkdir " + cur + ": " + std::strerror(errno));
    }
    if (i < path.size()) cur.push_back(path[i]);
  }
  return OkStatus();
}

}  // namespace hubfs::cache
