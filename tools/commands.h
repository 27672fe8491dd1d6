// The hubfs subcommands that are more than option plumbing: `status` and `warm`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hubfs::tools {

// Lists every hubfs mount with its endpoint, cache use, hit ratio, bytes fetched, throughput and
// errors (read from each mount's hidden stats file). Returns the exit code.
int RunStatus();

struct WarmOptions {
  std::string endpoint;
  std::string token;
  std::string cache_dir;
  uint64_t cache_bytes = 0;
  uint64_t min_free_bytes = 0;
  size_t block_size = 4u << 20;
  int threads = 16;
  std::string repo;                 // "org/name[@rev]", "datasets/org/name[@rev]", "spaces/..."
  std::vector<std::string> globs;   // paths or fnmatch globs; empty = every file
  std::string hf_cache;             // huggingface_hub's cache: files it holds are verified, not fetched; "" or "none": not used
};

// Fetches the selected files of a repo into the block cache, in parallel, with progress; already
// cached blocks are skipped (idempotent); SIGINT/SIGTERM stop cleanly. Returns the exit code.
int RunWarm(const WarmOptions& options);

// The same, through the live mount at `mountpoint` that holds the cache directory (a second
// process cannot fill a directory a mount uses, and the mount would never see blocks written
// beside it): every selected file is read through the mount, whose daemon fetches and caches it.
// The mount's endpoint and token apply. Returns the exit code.
int RunWarmThroughMount(const WarmOptions& options, const std::string& mountpoint);

}  // namespace hubfs::tools
