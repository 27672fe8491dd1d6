// Block cache micro-benchmarks (Google Benchmark): memory-tier hits and disk-tier hits, with the
// machine's raw figures beside them: memcpy of a block, and a plain read() of a block-sized file
// from the page cache. Run: build/tools/hubfs_cache_bench [--benchmark_min_time=0.5]
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "cache/block_cache.h"
#include "cache/disk_store.h"

namespace {

using namespace hubfs;
using namespace hubfs::cache;

constexpr size_t kBlock = 4u << 20;

BlockKey Key(uint64_t i) {
  BlockKey k;
  k.content.kind = IdKind::kSha256;
  k.content.bytes[0] = 0x42;
  k.index = i;
  return k;
}

std::vector<char> RandomBytes(size_t n) {
  std::vector<char> v(n);
  std::mt19937_64 rng(1);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t x = rng();
    std::memcpy(v.data() + i, &x, 8);
  }
  return v;
}

std::string TempDir() {
  char tmpl[] = "/var/tmp/hubfs-cache-bench-XXXXXX";
  return mkdtemp(tmpl);
}

void BM_RawMemcpy(benchmark::State& state) {
  auto src = RandomBytes(kBlock);
  std::vector<char> dst(kBlock);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), kBlock);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
}
BENCHMARK(BM_RawMemcpy);

// A memory hit, plus the copy a READ reply makes out of the block (as the kernel does).
void BM_MemoryHit(benchmark::State& state) {
  BlockCache cache(CacheOptions{.block_size = kBlock, .memory_bytes = 64u * kBlock, .loader_threads = 1});
  auto bytes = RandomBytes(kBlock);
  FetchFn fetch = [&](char* buf, size_t n, const CancelToken*) -> Result<size_t> {
    std::memcpy(buf, bytes.data(), n);
    return n;
  };
  (void)cache.Get(Key(0), kBlock, fetch, nullptr);
  std::vector<char> dst(kBlock);
  for (auto _ : state) {
    auto r = cache.Get(Key(0), kBlock, fetch, nullptr);
    std::memcpy(dst.data(), r.value()->data.get(), kBlock);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
}
BENCHMARK(BM_MemoryHit)->UseRealTime();
BENCHMARK(BM_MemoryHit)->Threads(2)->UseRealTime();

void BM_RawFileRead(benchmark::State& state) {
  const std::string dir = TempDir();
  const std::string path = dir + "/block";
  auto bytes = RandomBytes(kBlock);
  {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0600);
    if (::write(fd, bytes.data(), kBlock) != static_cast<ssize_t>(kBlock)) std::abort();
    ::close(fd);
  }
  std::vector<char> dst(kBlock);
  for (auto _ : state) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (::pread(fd, dst.data(), kBlock, 0) != static_cast<ssize_t>(kBlock)) std::abort();
    ::close(fd);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_RawFileRead)->UseRealTime();

// A disk-tier hit (page cache warm): open, header, read into the block, xxh3 check.
void BM_DiskHit(benchmark::State& state) {
  const std::string dir = TempDir();
  auto store = DiskStore::Open(DiskOptions{dir, 1ULL << 30, 0, kBlock});
  auto bytes = RandomBytes(kBlock);
  if (!store.ok() || !store.value()->Write(Key(1), bytes.data(), kBlock).ok()) std::abort();
  for (auto _ : state) {
    auto r = store.value()->Read(Key(1), kBlock);
    if (!r.ok()) std::abort();
    benchmark::DoNotOptimize(r.value()->data.get());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_DiskHit)->UseRealTime();

// Compressible blocks (JSON-like text): LZ4 on the write, decompression on the hit.
void BM_DiskHitCompressed(benchmark::State& state) {
  const std::string dir = TempDir();
  auto store = DiskStore::Open(DiskOptions{dir, 1ULL << 30, 0, kBlock});
  std::string text;
  while (text.size() < kBlock) text += "{\"id\": 12345, \"text\": \"the quick brown fox jumps over the lazy dog\"},\n";
  text.resize(kBlock);
  if (!store.ok() || !store.value()->Write(Key(2), text.data(), kBlock).ok()) std::abort();
  for (auto _ : state) {
    auto r = store.value()->Read(Key(2), kBlock);
    if (!r.ok()) std::abort();
    benchmark::DoNotOptimize(r.value()->data.get());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_DiskHitCompressed)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
