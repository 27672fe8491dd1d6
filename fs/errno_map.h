// The one table from Error kinds to errno, used only at the FUSE edge. A test covers every row.
#pragma once

#include <cerrno>

#include "common/status.h"

namespace hubfs::fs {

inline int ErrnoFor(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNotFound: return ENOENT;
    case ErrorKind::kAccessDenied: return EACCES;
    case ErrorKind::kIo: return EIO;
    case ErrorKind::kTimeout: return EIO;
    case ErrorKind::kCancelled: return EINTR;
    case ErrorKind::kInvalidArgument: return EINVAL;
    case ErrorKind::kNoSpace: return EIO;  // the cache's problem, never the reader's
    case ErrorKind::kCorrupt: return EIO;
    case ErrorKind::kReadOnly: return EROFS;
    case ErrorKind::kNotDirectory: return ENOTDIR;
    case ErrorKind::kIsDirectory: return EISDIR;
    case ErrorKind::kNoAttribute: return ENODATA;
  }
  return EIO;
}

}  // namespace hubfs::fs
