// The thin FUSE adapter: libfuse low-level callbacks that decode a request, call the Filesystem
// core, and reply. No policy, caching or HTTP here. State travels through fuse_req_userdata; no
// exception crosses into libfuse's C code; a FUSE interrupt cancels the request's CancelToken.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "fs/filesystem.h"

namespace hubfs::fs {

struct MountOptions {
  std::string mountpoint;
  std::vector<std::string> fuse_options;  // "-o" values, e.g. "allow_other"
  bool foreground = false;
  bool debug = false;
  unsigned max_threads = 64;
  unsigned read_ahead_kb = 16384;  // raised on the mount's BDI when running as root
  // Let the kernel read cached files from their local copies (FUSE passthrough, Linux >= 6.9,
  // root): see passthrough.h.
  bool passthrough = true;
  // Read this much of a passthrough file from the disk ahead of a sequential reader
  // (backing_prefetch.h); 0: the kernel's readahead only.
  unsigned passthrough_prefetch_mib = 256;
  // Open files of at least this many MiB that are not all in the cache with FOPEN_DIRECT_IO
  // (Linux >= 6.6; see passthrough.h); 0: never. The filesystem's FsOptions::direct_min_bytes.
  unsigned direct_min_mib = 64;
};

// Mounts, daemonizes once the mount is ready (unless foreground), then calls make_fs (after the
// fork, so that worker threads are created in the daemon) and serves requests until unmounted or
// signalled. Returns the process exit code.
int RunMount(const MountOptions& options, const std::function<std::unique_ptr<Filesystem>()>& make_fs);

}  // namespace hubfs::fs
