// The block cache: one fetch per block however many readers, errors shared, memory bounded, deadlines
// honoured, and blocks that survive a restart through the disk tier.
#include "cache/block_cache.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <latch>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "../test_util.h"

namespace hubfs::cache {
namespace {

namespace fsys = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kBlock = 64 * 1024;

BlockKey Key(uint64_t index, int content = 1) {
  char buf[65];
  std::snprintf(buf, sizeof buf, "%02x%062x", content & 0xff, content);
  return BlockKey{*ContentId::FromHex(IdKind::kSha256, buf), index};
}

// The bytes the "origin" holds for a block: a function of the key, different for every block.
std::string Expected(const BlockKey& k, size_t len) {
  std::string s(len, '\0');
  uint64_t x = k.index * 0x9E3779B97F4A7C15ULL + k.content.bytes[0] + 1;
  for (size_t i = 0; i < len; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x);
  }
  return s;
}

std::string AsString(const BlockRef& b) { return std::string(b->data.get(), b->size); }

// A fetch function that serves Expected() bytes and counts its calls.
struct Origin {
  std::atomic<int> calls{0};
  milliseconds delay{0};
  FetchFn For(const BlockKey& k) {
    return [this, k](char* buf, size_t len, const CancelToken*) -> Result<size_t> {
      calls.fetch_add(1);
      if (delay.count() > 0) std::this_thread::sleep_for(delay);
      const std::string d = Expected(k, len);
      std::memcpy(buf, d.data(), len);
      return len;
    };
  }
};

FetchFn MustNotFetch(std::atomic<int>* calls) {
  return [calls](char*, size_t, const CancelToken*) -> Result<size_t> {
    calls->fetch_add(1);
    return MakeError(ErrorKind::kIo, "this fetch must not be called");
  };
}

CacheOptions MemOptions(uint64_t memory_bytes = 64ULL << 20) {
  CacheOptions o;
  o.block_size = kBlock;
  o.memory_bytes = memory_bytes;
  o.disk_dir = "";
  o.loader_threads = 2;
  return o;
}

uint64_t MemBytesNow() { return metrics::Get("cache.mem.bytes").Get(); }

TEST(BlockCache, GetFetchesOnceThenHitsMemory) {
  BlockCache cache(MemOptions());
  EXPECT_EQ(cache.disk(), nullptr);
  Origin origin;
  const BlockKey k = Key(0);
  EXPECT_FALSE(cache.Contains(k));
  auto r = cache.Get(k, kBlock, origin.For(k), nullptr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(origin.calls.load(), 1);
  EXPECT_EQ((*r)->size, kBlock);
  EXPECT_TRUE(AsString(*r) == Expected(k, kBlock));
  EXPECT_TRUE(cache.Contains(k));

  const uint64_t hits = cache.Stats().mem_hits;
  std::atomic<int> unexpected{0};
  auto again = cache.Get(k, kBlock, MustNotFetch(&unexpected), nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_EQ(again->get(), r->get());  // the very same block, no copy
  EXPECT_EQ(cache.Stats().mem_hits, hits + 1);
}

TEST(BlockCache, ShortLastBlock) {
  BlockCache cache(MemOptions());
  Origin origin;
  const BlockKey k = Key(7);
  auto r = cache.Get(k, 1234, origin.For(k), nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->size, 1234u);
  EXPECT_TRUE(AsString(*r) == Expected(k, 1234));
}

TEST(BlockCache, ShortFetchIsAnErrorAndNotCached) {
  BlockCache cache(MemOptions());
  const BlockKey k = Key(1);
  std::atomic<int> calls{0};
  FetchFn short_fetch = [&](char* buf, size_t len, const CancelToken*) -> Result<size_t> {
    calls.fetch_add(1);
    std::memset(buf, 'x', len - 1);
    return len - 1;
  };
  auto r = cache.Get(k, kBlock, short_fetch, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kIo);
  EXPECT_FALSE(cache.Contains(k));
  Origin origin;
  auto ok = cache.Get(k, kBlock, origin.For(k), nullptr);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(origin.calls.load(), 1);
  EXPECT_TRUE(AsString(*ok) == Expected(k, kBlock));
}

TEST(BlockCache, SingleFlightUnderConcurrency) {
  BlockCache cache(MemOptions());
  Origin origin;
  origin.delay = milliseconds(50);
  const BlockKey k = Key(2);
  constexpr int kThreads = 32;
  std::latch start(kThreads);
  std::vector<BlockRef> got(kThreads);
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      auto r = cache.Get(k, kBlock, origin.For(k), nullptr);
      if (r.ok()) got[static_cast<size_t>(i)] = *r;
      else errors[static_cast<size_t>(i)] = r.error().ToString();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(origin.calls.load(), 1) << "the block was fetched more than once";
  const std::string want = Expected(k, kBlock);
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_NE(got[static_cast<size_t>(i)], nullptr) << "thread " << i << ": " << errors[static_cast<size_t>(i)];
    EXPECT_TRUE(AsString(got[static_cast<size_t>(i)]) == want) << "thread " << i;
  }
}

TEST(BlockCache, ErrorReachesEveryWaiterAndALaterGetRetries) {
  BlockCache cache(MemOptions());
  const BlockKey k = Key(3);
  std::atomic<int> calls{0};
  FetchFn failing = [&](char*, size_t, const CancelToken*) -> Result<size_t> {
    calls.fetch_add(1);
    std::this_thread::sleep_for(milliseconds(300));
    return MakeError(ErrorKind::kAccessDenied, "gated", 403);
  };
  constexpr int kThreads = 8;
  std::latch start(kThreads);
  std::vector<std::optional<Error>> errs(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      auto r = cache.Get(k, kBlock, failing, nullptr);
      if (!r.ok()) errs[static_cast<size_t>(i)] = r.error();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls.load(), 1) << "waiters fetched on their own instead of sharing the error";
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_TRUE(errs[static_cast<size_t>(i)].has_value()) << "thread " << i << " got bytes from a failed fetch";
    EXPECT_EQ(errs[static_cast<size_t>(i)]->kind, ErrorKind::kAccessDenied);
    EXPECT_EQ(errs[static_cast<size_t>(i)]->http_status, 403);
  }
  EXPECT_FALSE(cache.Contains(k));  // errors are not cached
  Origin origin;
  auto r = cache.Get(k, kBlock, origin.For(k), nullptr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(origin.calls.load(), 1);
  EXPECT_TRUE(AsString(*r) == Expected(k, kBlock));
}

TEST(BlockCache, LoaderCancelledWaiterLoadsItself) {
  // The reader that owned the fetch was interrupted: a waiter with time left must not inherit that.
  BlockCache cache(MemOptions());
  const BlockKey k = Key(4);
  std::atomic<bool> started{false};
  FetchFn interrupted = [&](char*, size_t, const CancelToken*) -> Result<size_t> {
    started = true;
    std::this_thread::sleep_for(milliseconds(150));
    return MakeError(ErrorKind::kCancelled, "interrupted");
  };
  std::thread owner([&] {
    auto r = cache.Get(k, kBlock, interrupted, nullptr);
    EXPECT_FALSE(r.ok());
  });
  while (!started) std::this_thread::sleep_for(milliseconds(1));
  Origin origin;
  auto r = cache.Get(k, kBlock, origin.For(k), nullptr);
  owner.join();
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_TRUE(AsString(*r) == Expected(k, kBlock));
  EXPECT_EQ(origin.calls.load(), 1);
}

TEST(BlockCache, PrefetchThenGetFetchesOnce) {
  BlockCache cache(MemOptions());
  Origin origin;
  const BlockKey k = Key(5);
  EXPECT_TRUE(cache.Prefetch(k, kBlock, origin.For(k)));
  auto r = cache.Get(k, kBlock, origin.For(k), nullptr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_TRUE(AsString(*r) == Expected(k, kBlock));
  EXPECT_EQ(origin.calls.load(), 1);
  EXPECT_FALSE(cache.Prefetch(k, kBlock, origin.For(k)));  // resident: skipped
  EXPECT_EQ(origin.calls.load(), 1);
}

TEST(BlockCache, PrefetchLoadsInTheBackground) {
  BlockCache cache(MemOptions());
  Origin origin;
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < 8; ++i) {
    keys.push_back(Key(100 + i));
    EXPECT_TRUE(cache.Prefetch(keys.back(), kBlock, origin.For(keys.back())));
  }
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  for (const auto& k : keys)
    while (!cache.Contains(k) && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(2));
  EXPECT_EQ(origin.calls.load(), 8);
  std::atomic<int> unexpected{0};
  for (const auto& k : keys) {
    auto r = cache.Get(k, kBlock, MustNotFetch(&unexpected), nullptr);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(AsString(*r) == Expected(k, kBlock));
  }
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_EQ(origin.calls.load(), 8);
}

// The prefetch budget (half the memory cap) counts blocks while loaders fetch them, not only while
// they wait in the queue: 16 loaders would otherwise hold 64 MiB of buffers outside it.
TEST(BlockCache, PrefetchBudgetCountsBlocksBeingLoaded) {
  std::atomic<int> inside{0};
  std::atomic<bool> release{false};  // (declared before the cache: its loaders use them)
  CacheOptions o = MemOptions(8 * kBlock);  // budget: 4 blocks
  o.loader_threads = 4;
  BlockCache cache(o);
  auto gated = [&](const BlockKey& k) -> FetchFn {
    return [&, k](char* buf, size_t len, const CancelToken*) -> Result<size_t> {
      inside.fetch_add(1);
      while (!release.load()) std::this_thread::sleep_for(milliseconds(1));
      const std::string d = Expected(k, len);
      std::memcpy(buf, d.data(), len);
      return len;
    };
  };
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(cache.Prefetch(Key(300 + i), kBlock, gated(Key(300 + i))));
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (inside.load() < 4 && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(1));
  ASSERT_EQ(inside.load(), 4) << "every loader should be fetching";
  EXPECT_FALSE(cache.PrefetchRoom(kBlock)) << "four blocks being loaded fill a four-block budget";
  EXPECT_FALSE(cache.Prefetch(Key(310), kBlock, gated(Key(310))));
  release = true;
  for (uint64_t i = 0; i < 4; ++i)
    while (!cache.InMemory(Key(300 + i)) && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(1));
  EXPECT_FALSE(cache.PrefetchRoom(kBlock)) << "loaded but unread: still counted";
  std::atomic<int> unexpected{0};
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(cache.Get(Key(300 + i), kBlock, MustNotFetch(&unexpected), nullptr).ok());
  // (A loader leaves the budget just after its block lands: wait for the last one, bounded.)
  while (!cache.PrefetchRoom(kBlock) && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(1));
  EXPECT_TRUE(cache.PrefetchRoom(kBlock)) << "read blocks leave the budget";
  EXPECT_EQ(unexpected.load(), 0);
}

TEST(BlockCache, DestroyWithQueuedPrefetchesDoesNotHang) {
  const auto t0 = Clock::now();
  {
    CacheOptions o = MemOptions();
    o.loader_threads = 1;
    BlockCache cache(o);
    Origin origin;
    origin.delay = milliseconds(100);
    for (uint64_t i = 0; i < 4; ++i) cache.Prefetch(Key(200 + i), kBlock, origin.For(Key(200 + i)));
  }
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
}

TEST(BlockCache, MemoryCapHoldsUnderThreeTimesTheWorkingSet) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  const uint64_t cap = 32 * kBlock;
  const uint64_t base = MemBytesNow();  // the gauge is process-wide
  BlockCache cache(MemOptions(cap));
  Origin origin;
  const uint64_t working_set = 3 * cap / kBlock;  // 96 blocks
  uint64_t peak = 0;
  for (int i = 0; i < 400; ++i) {
    const BlockKey k = Key(i < static_cast<int>(working_set) ? static_cast<uint64_t>(i) : rng() % working_set);
    auto r = cache.Get(k, kBlock, origin.For(k), nullptr);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE(AsString(*r) == Expected(k, kBlock)) << "wrong bytes for block " << k.index;
    const uint64_t resident = cache.Stats().mem_bytes - base;
    peak = std::max(peak, resident);
    ASSERT_LE(resident, cap + kBlock) << "after " << i + 1 << " reads";
  }
  EXPECT_GT(peak, cap / 2);  // the cache is used, not just empty
  EXPECT_GT(origin.calls.load(), static_cast<int>(working_set));  // evictions forced refetches
}

TEST(BlockCache, MemoryCapHoldsWhenSmallerThanSixteenBlocks) {
  // --memory-cache 256M with --block-size-mib 64 is such a configuration: 4 blocks of cap.
  const uint64_t cap = 4 * kBlock;
  const uint64_t base = MemBytesNow();
  uint64_t peak = 0;
  {
    BlockCache cache(MemOptions(cap));
    Origin origin;
    for (uint64_t i = 0; i < 3 * cap / kBlock; ++i) {
      auto r = cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr);
      ASSERT_TRUE(r.ok());
      peak = std::max(peak, cache.Stats().mem_bytes - base);
    }
  }
  EXPECT_LE(peak, cap + kBlock);
}

TEST(BlockCache, HeldBlockIsNotEvicted) {
  const uint64_t cap = 16 * kBlock;
  BlockCache cache(MemOptions(cap));
  Origin origin;
  const BlockKey held_key = Key(0);
  auto held = cache.Get(held_key, kBlock, origin.For(held_key), nullptr);
  ASSERT_TRUE(held.ok());
  const BlockRef ref = *held;
  for (uint64_t i = 1; i < 8 * cap / kBlock; ++i) {
    auto r = cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr);
    ASSERT_TRUE(r.ok());
  }
  EXPECT_TRUE(AsString(ref) == Expected(held_key, kBlock)) << "a held block's bytes changed";
  std::atomic<int> unexpected{0};
  auto again = cache.Get(held_key, kBlock, MustNotFetch(&unexpected), nullptr);
  ASSERT_TRUE(again.ok()) << "the held block was evicted";
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_EQ(again->get(), ref.get());
  // Eviction did happen to blocks nobody held.
  const int before = origin.calls.load();
  ASSERT_TRUE(cache.Get(Key(1), kBlock, origin.For(Key(1)), nullptr).ok());
  EXPECT_EQ(origin.calls.load(), before + 1);
}

TEST(BlockCache, WaiterDeadlineIsHonouredWhileAnotherThreadFetches) {
  BlockCache cache(MemOptions());
  const BlockKey k = Key(6);
  std::atomic<bool> started{false}, release{false};
  FetchFn slow = [&](char* buf, size_t len, const CancelToken*) -> Result<size_t> {
    started = true;
    const auto until = Clock::now() + std::chrono::seconds(2);
    while (!release && Clock::now() < until) std::this_thread::sleep_for(milliseconds(5));
    std::memcpy(buf, Expected(k, len).data(), len);
    return len;
  };
  std::atomic<bool> owner_ok{false};
  std::thread owner([&] { owner_ok = cache.Get(k, kBlock, slow, nullptr).ok(); });
  while (!started) std::this_thread::sleep_for(milliseconds(1));

  std::atomic<int> unexpected{0};
  CancelToken token(Clock::now() + milliseconds(100));
  const auto t0 = Clock::now();
  auto r = cache.Get(k, kBlock, MustNotFetch(&unexpected), &token);
  const auto waited = Clock::now() - t0;
  ASSERT_FALSE(r.ok()) << "got a block while its fetch was still running";
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  EXPECT_LT(waited, milliseconds(500));
  EXPECT_GE(waited, milliseconds(90));
  EXPECT_EQ(unexpected.load(), 0);

  // An explicit cancel (FUSE interrupt) is reported as such.
  CancelToken cancel_token;
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(100));
    cancel_token.Cancel();
  });
  const auto t1 = Clock::now();
  auto c = cache.Get(k, kBlock, MustNotFetch(&unexpected), &cancel_token);
  canceller.join();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().kind, ErrorKind::kCancelled);
  EXPECT_LT(Clock::now() - t1, milliseconds(500));

  release = true;
  owner.join();
  EXPECT_TRUE(owner_ok.load());
  // The owner's fetch still completed and is cached for everyone.
  auto later = cache.Get(k, kBlock, MustNotFetch(&unexpected), nullptr);
  ASSERT_TRUE(later.ok());
  EXPECT_TRUE(AsString(*later) == Expected(k, kBlock));
  EXPECT_EQ(unexpected.load(), 0);
}

// A block readers have read whole is in the kernel's page cache: it is evicted before blocks
// still being read, however recently it was touched.
TEST(BlockCache, ConsumedBlocksAreEvictedFirst) {
  BlockCache cache(MemOptions(16 * kBlock));  // one shard of 16 blocks
  Origin origin;
  for (uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr).ok());
  cache.Served(Key(15), kBlock / 2);
  cache.Served(Key(14), kBlock / 2);
  cache.Served(Key(15), kBlock / 2);  // the most recently used, but read whole
  ASSERT_TRUE(cache.Get(Key(16), kBlock, origin.For(Key(16)), nullptr).ok());
  EXPECT_FALSE(cache.InMemory(Key(15)));
  EXPECT_TRUE(cache.InMemory(Key(14)));  // half read: kept
  EXPECT_TRUE(cache.InMemory(Key(0)));   // the least recently used, still being read
  // Without the hint, plain LRU order.
  ASSERT_TRUE(cache.Get(Key(17), kBlock, origin.For(Key(17)), nullptr).ok());
  EXPECT_FALSE(cache.InMemory(Key(0)));
  EXPECT_TRUE(cache.InMemory(Key(1)));
}

// Blocks returned whole (the kernel's page cache has them) are kept only up to
// served_retain_bytes: a streaming read recycles a few buffers instead of filling the memory cap.
// Blocks still being read, or still held by a reader, stay.
TEST(BlockCache, BlocksServedWholeBeyondTheReserveAreFreedAtOnce) {
  CacheOptions o = MemOptions(64 * kBlock);
  o.served_retain_bytes = 4 * kBlock;
  BlockCache cache(o);
  Origin origin;
  auto& reused = metrics::Get("cache.buffers.reused");
  ASSERT_TRUE(cache.Get(Key(100), kBlock, origin.For(Key(100)), nullptr).ok());
  cache.Served(Key(100), kBlock / 2);  // half read
  const uint64_t reused_before = reused.Get();
  for (uint64_t i = 0; i < 32; ++i) {
    auto r = cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr);
    ASSERT_TRUE(r.ok());
    cache.Served(Key(i), kBlock);  // held by this reader while served: not freed yet
    EXPECT_TRUE(cache.InMemory(Key(i)));
  }
  EXPECT_LE(cache.Stats().mem_blocks, 4u + 1u + 1u) << "served blocks past the reserve were kept";
  EXPECT_TRUE(cache.InMemory(Key(100))) << "a half-read block was freed";
  EXPECT_TRUE(cache.InMemory(Key(31)));
  EXPECT_GE(reused.Get() - reused_before, 20u) << "freed buffers were not recycled";
  EXPECT_EQ(origin.calls.load(), 33);
}

uint64_t Metric(const char* name) { return metrics::Get(name).Get(); }

// Loads blocks first .. first + n - 1 and keeps them held (no eviction can free their buffers).
std::vector<BlockRef> HoldBlocks(BlockCache& cache, Origin& origin, uint64_t first, uint64_t n) {
  std::vector<BlockRef> held;
  for (uint64_t i = first; i < first + n; ++i) {
    auto r = cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr);
    EXPECT_TRUE(r.ok());
    if (r.ok()) held.push_back(r.value());
  }
  return held;
}

TEST(BlockCache, BufferBudgetHoldsHoweverManyReadersLoadAtOnce) {
  CacheOptions o = MemOptions(8 * kBlock);  // buffer budget: 12 blocks (1.5 x memory)
  o.buffer_wait_limit = std::chrono::seconds(30);  // readers wait for room rather than go beyond it
  const uint64_t base = BufferPool::LiveBytes();
  const uint64_t exceeded = Metric("cache.buffers.budget_exceeded");
  BlockCache cache(o);
  Origin origin;
  origin.delay = milliseconds(20);
  std::atomic<bool> done{false};
  std::atomic<uint64_t> peak{0};
  std::thread sampler([&] {
    while (!done.load()) {
      const uint64_t live = BufferPool::LiveBytes() - base;
      if (live > peak.load()) peak = live;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  constexpr int kReaders = 48;  // each loads its own block at once, then holds it a moment
  std::atomic<int> wrong{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < kReaders; ++t)
    readers.emplace_back([&, t] {
      for (uint64_t i = 0; i < 3; ++i) {
        const BlockKey k = Key(1000 + static_cast<uint64_t>(t) * 3 + i);
        auto r = cache.Get(k, kBlock, origin.For(k), nullptr);
        if (!r.ok() || AsString(*r) != Expected(k, kBlock)) wrong.fetch_add(1);
        std::this_thread::sleep_for(milliseconds(5));
      }
    });
  for (auto& t : readers) t.join();
  done = true;
  sampler.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(origin.calls.load(), kReaders * 3);
  // Without the budget, 48 loads at once take 48 buffers.
  EXPECT_LE(peak.load(), 12 * kBlock) << "block buffers beyond the budget: " << peak.load() / kBlock << " blocks";
  EXPECT_GE(peak.load(), 4 * kBlock);  // (the sampler saw the loads)
  EXPECT_EQ(Metric("cache.buffers.budget_exceeded"), exceeded);
}

// A memory tier of 8 blocks, a buffer budget of 4, and 4 blocks held from `first` on: the budget
// is full. A reader's load waits for room at most `wait`.
struct FullBudget {
  explicit FullBudget(uint64_t first, milliseconds wait = std::chrono::seconds(30)) : cache(Options(wait)) {
    held = HoldBlocks(cache, origin, first, 4);
  }
  static CacheOptions Options(milliseconds wait) {
    CacheOptions o = MemOptions(8 * kBlock);
    o.buffer_bytes = 4 * kBlock;
    o.buffer_wait_limit = wait;
    return o;
  }
  const uint64_t exceeded = Metric("cache.buffers.budget_exceeded");  // before
  Origin origin;
  BlockCache cache;
  std::vector<BlockRef> held;
};

TEST(BlockCache, AReaderWaitingForBufferRoomGetsItWhenABlockIsLetGo) {
  FullBudget f(2000);
  ASSERT_EQ(f.held.size(), 4u);
  auto& [exceeded, origin, cache, held] = f;
  std::atomic<bool> got{false};
  const auto t0 = Clock::now();
  std::thread reader([&] {
    auto r = cache.Get(Key(2010), kBlock, origin.For(Key(2010)), nullptr);
    got = r.ok() && AsString(*r) == Expected(Key(2010), kBlock);
  });
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_FALSE(got.load()) << "four held blocks fill a four-block budget: the load waits";
  held.pop_back();  // no reader holds it now: it can be evicted to make room
  reader.join();
  EXPECT_TRUE(got.load());
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(Metric("cache.buffers.budget_exceeded"), exceeded);
}

TEST(BlockCache, AReaderHoldingTheLastRoomLetsItGoBeforeItWaitsForMore) {
  // A READ across a block boundary: the reader holds one block while it gets the next. With every
  // buffer held that way, it is the one to let go; Get runs before_wait before it waits for room.
  FullBudget f(4000);
  ASSERT_EQ(f.held.size(), 4u);
  auto& [exceeded, origin, cache, held] = f;
  int calls = 0;
  const auto t0 = Clock::now();
  auto r = cache.Get(Key(4010), kBlock, origin.For(Key(4010)), nullptr, [&] {
    ++calls;
    held.pop_back();
  });
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(AsString(*r) == Expected(Key(4010), kBlock));
  EXPECT_EQ(calls, 1);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(Metric("cache.buffers.budget_exceeded"), exceeded);
  // For a block in memory it does not run.
  ASSERT_TRUE(cache.Get(Key(4010), kBlock, origin.For(Key(4010)), nullptr, [&] { ++calls; }).ok());
  EXPECT_EQ(calls, 1);
}

TEST(BlockCache, AReaderWaitingForAnotherThreadsLoadRunsBeforeWaitFirst) {
  // Its owner may be waiting for the room this reader holds.
  CacheOptions o = MemOptions(8 * kBlock);
  BlockCache cache(o);
  Origin origin;
  origin.delay = milliseconds(200);
  const BlockKey k = Key(4100);
  std::thread owner([&] { EXPECT_TRUE(cache.Get(k, kBlock, origin.For(k), nullptr).ok()); });
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (origin.calls.load() == 0 && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(1));
  ASSERT_EQ(origin.calls.load(), 1);
  std::atomic<int> calls{0};
  auto r = cache.Get(k, kBlock, origin.For(k), nullptr, [&] { calls.fetch_add(1); });
  owner.join();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(AsString(*r) == Expected(k, kBlock));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(origin.calls.load(), 1);
}

TEST(BlockCache, WithEveryBufferHeldAPrefetchGivesUpAndAReaderGoesOnAfterItsWait) {
  const uint64_t dropped = Metric("cache.buffers.prefetch_dropped");
  FullBudget f(3000, milliseconds(200));
  ASSERT_EQ(f.held.size(), 4u);
  auto& [exceeded, origin, cache, held] = f;
  const int before = origin.calls.load();
  ASSERT_TRUE(cache.Prefetch(Key(3010), kBlock, origin.For(Key(3010))));
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Metric("cache.buffers.prefetch_dropped") == dropped && Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(1));
  EXPECT_EQ(Metric("cache.buffers.prefetch_dropped"), dropped + 1) << "a prefetch does not go beyond the budget";
  EXPECT_EQ(origin.calls.load(), before) << "the dropped prefetch fetched nothing";
  EXPECT_FALSE(cache.InMemory(Key(3010)));
  // A reader is never refused: after its bounded wait it loads the block beyond the budget.
  const auto t0 = Clock::now();
  auto r = cache.Get(Key(3010), kBlock, origin.For(Key(3010)), nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(AsString(*r) == Expected(Key(3010), kBlock));
  EXPECT_GE(Clock::now() - t0, milliseconds(150));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  EXPECT_EQ(Metric("cache.buffers.budget_exceeded"), exceeded + 1);
}

TEST(BlockCache, PurgeDropsTheBlock) {
  BlockCache cache(MemOptions());
  Origin origin;
  const BlockKey k = Key(8);
  ASSERT_TRUE(cache.Get(k, kBlock, origin.For(k), nullptr).ok());
  cache.Purge(k);
  EXPECT_FALSE(cache.Contains(k));
  ASSERT_TRUE(cache.Get(k, kBlock, origin.For(k), nullptr).ok());
  EXPECT_EQ(origin.calls.load(), 2);
}

TEST(BlockCache, MemoryGaugeReturnsToZeroWhenTheCacheIsDestroyed) {
  const uint64_t base = MemBytesNow();
  {
    BlockCache cache(MemOptions());
    Origin origin;
    for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr).ok());
    EXPECT_EQ(cache.Stats().mem_bytes - base, 3 * kBlock);
  }
  BlockCache fresh(MemOptions());
  const uint64_t reported = fresh.Stats().mem_bytes;
  EXPECT_EQ(reported, base);
}

class BlockCacheDiskTest : public ::testing::Test {
 protected:
  CacheOptions DiskOptions() const {
    CacheOptions o = MemOptions();
    o.disk_dir = tmp_.path() + "/cache";
    o.disk_bytes = 64ULL << 20;
    o.min_free_bytes = 0;
    return o;
  }
  std::string BlockPath(const BlockKey& k) const {
    const std::string hex = k.content.Hex();
    return tmp_.path() + "/cache/v2/blocks/" + hex.substr(0, 2) + "/" + hex + "-" +
           std::to_string(static_cast<int>(k.content.kind)) + "-" + std::to_string(k.index);
  }
  hubfs::testing::TempDir tmp_;
};

TEST_F(BlockCacheDiskTest, BlockSurvivesARestart) {
  const BlockKey k = Key(9);
  Origin origin;
  {
    BlockCache cache(DiskOptions());
    ASSERT_NE(cache.disk(), nullptr);
    auto r = cache.Get(k, kBlock, origin.For(k), nullptr);
    ASSERT_TRUE(r.ok());
    cache.Flush();
    EXPECT_TRUE(cache.disk()->Contains(k));
    EXPECT_TRUE(fsys::exists(BlockPath(k)));
  }
  EXPECT_EQ(origin.calls.load(), 1);
  BlockCache cache(DiskOptions());
  ASSERT_NE(cache.disk(), nullptr);
  EXPECT_TRUE(cache.Contains(k));
  const uint64_t disk_hits = cache.Stats().disk_hits;
  std::atomic<int> unexpected{0};
  auto r = cache.Get(k, kBlock, MustNotFetch(&unexpected), nullptr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_TRUE(AsString(*r) == Expected(k, kBlock));
  EXPECT_EQ(cache.Stats().disk_hits, disk_hits + 1);
  EXPECT_EQ(cache.Stats().disk_blocks, 1u);
}

TEST_F(BlockCacheDiskTest, CorruptDiskBlockIsRefetched) {
  const BlockKey k = Key(10);
  {
    Origin origin;
    BlockCache cache(DiskOptions());
    ASSERT_TRUE(cache.Get(k, kBlock, origin.For(k), nullptr).ok());
    cache.Flush();
  }
  std::string bytes = hubfs::testing::ReadFileBytes(BlockPath(k));
  ASSERT_FALSE(bytes.empty());
  bytes[bytes.size() - 10] ^= 0x20;
  hubfs::testing::WriteFileBytes(BlockPath(k), bytes);

  Origin origin;
  {
    BlockCache cache(DiskOptions());
    auto r = cache.Get(k, kBlock, origin.For(k), nullptr);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(origin.calls.load(), 1) << "corrupt disk bytes were served";
    EXPECT_TRUE(AsString(*r) == Expected(k, kBlock));
    cache.Flush();
  }
  // The refetched block replaced the bad file.
  BlockCache cache(DiskOptions());
  std::atomic<int> unexpected{0};
  auto r = cache.Get(k, kBlock, MustNotFetch(&unexpected), nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_TRUE(AsString(*r) == Expected(k, kBlock));
}

// Whole-file verification (SHA-256 of every byte) waits until the cache has been quiet, so it never
// takes CPU or disk from a load in progress; then bytes that fail their content id are purged.
TEST_F(BlockCacheDiskTest, WholeFileVerificationWaitsForQuietThenPurgesWrongBytes) {
  auto& mismatches = metrics::Get("cache.verify.mismatch");
  CacheOptions o = DiskOptions();
  o.verify_quiet_ms = 300;
  BlockCache cache(o);
  ASSERT_NE(cache.disk(), nullptr);
  const ContentId id = Key(0, 7).content;  // the origin's bytes do not hash to this id
  cache.TrackFile(id, 3 * kBlock);
  Origin origin;
  const uint64_t before = mismatches.Get();
  for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(cache.Get(BlockKey{id, i}, kBlock, origin.For(BlockKey{id, i}), nullptr).ok());
  // A reader keeps the cache busy: no verification yet, the blocks stay.
  const BlockKey other = Key(0, 8);
  for (auto end = Clock::now() + milliseconds(900); Clock::now() < end;) {
    ASSERT_TRUE(cache.Get(other, kBlock, origin.For(other), nullptr).ok());
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_EQ(mismatches.Get(), before) << "verification ran while a reader was active";
  EXPECT_TRUE(cache.Contains(BlockKey{id, 0}));
  // Quiet: it runs, fails, and purges every block of the file.
  for (auto end = Clock::now() + std::chrono::seconds(10); mismatches.Get() == before && Clock::now() < end;)
    std::this_thread::sleep_for(milliseconds(20));
  cache.Flush();
  EXPECT_EQ(mismatches.Get(), before + 1);
  for (uint64_t i = 0; i < 3; ++i) EXPECT_FALSE(cache.Contains(BlockKey{id, i})) << "block " << i;
  EXPECT_TRUE(cache.Contains(other));
}

// With whole files on (FUSE passthrough), a file that verifies is joined into one local file that
// replaces its blocks and still serves them; with them off, the blocks stay.
TEST_F(BlockCacheDiskTest, VerifiedFileBecomesOneWholeFileWhenEnabled) {
  for (const bool on : {true, false}) {
    hubfs::testing::TempDir dir;
    CacheOptions o = DiskOptions();
    o.disk_dir = dir.path() + "/cache";
    o.verify_quiet_ms = 50;
    BlockCache cache(o);
    ASSERT_NE(cache.disk(), nullptr);
    cache.EnableWholeFiles(on);
    const size_t blocks = 20;  // 1.25 MiB: above the floor for whole files
    std::string data(blocks * kBlock - 1000, '\0');
    std::mt19937_64 rng(hubfs::testing::TestSeed());
    for (auto& c : data) c = static_cast<char>(rng());
    unsigned char md[32];
    unsigned int mdlen = 0;
    ASSERT_EQ(EVP_Digest(data.data(), data.size(), md, &mdlen, EVP_sha256(), nullptr), 1);
    std::string hex;
    for (unsigned char c : md) {
      char h[3];
      std::snprintf(h, sizeof h, "%02x", c);
      hex += h;
    }
    const ContentId id = *ContentId::FromHex(IdKind::kSha256, hex);
    cache.TrackFile(id, data.size());
    auto fetch = [&](uint64_t i) -> FetchFn {
      return [&data, i](char* buf, size_t len, const CancelToken*) -> Result<size_t> {
        std::memcpy(buf, data.data() + i * kBlock, len);
        return len;
      };
    };
    auto len_of = [&](uint64_t i) { return std::min<size_t>(kBlock, data.size() - i * kBlock); };
    for (uint64_t i = 0; i < blocks; ++i) ASSERT_TRUE(cache.Get(BlockKey{id, i}, len_of(i), fetch(i), nullptr).ok());
    auto& ok = metrics::Get("cache.verify.ok");
    const uint64_t before = ok.Get();
    for (auto end = Clock::now() + std::chrono::seconds(10); ok.Get() == before && Clock::now() < end;)
      std::this_thread::sleep_for(milliseconds(20));
    cache.Flush();
    ASSERT_GT(ok.Get(), before);
    const std::string whole = cache.WholeBacking(id).path;
    auto block_file = [&](uint64_t i) {
      return o.disk_dir + "/v2/blocks/" + hex.substr(0, 2) + "/" + hex + "-1-" + std::to_string(i);
    };
    if (!on) {
      EXPECT_EQ(whole, "");
      for (uint64_t i = 0; i < blocks; ++i) EXPECT_TRUE(fsys::exists(block_file(i))) << i;
      continue;
    }
    ASSERT_NE(whole, "");
    EXPECT_TRUE(hubfs::testing::ReadFileBytes(whole) == data);
    for (uint64_t i = 0; i < blocks; ++i) EXPECT_FALSE(fsys::exists(block_file(i))) << i;
    // After a restart its blocks come from the disk, now from the whole file.
    std::atomic<int> unexpected{0};
    BlockCache reopened(o);
    reopened.EnableWholeFiles(true);
    for (uint64_t i = 0; i < blocks; ++i) {
      auto r = reopened.Get(BlockKey{id, i}, len_of(i), MustNotFetch(&unexpected), nullptr);
      ASSERT_TRUE(r.ok()) << i << ": " << r.error().ToString();
      EXPECT_TRUE(AsString(*r) == data.substr(i * kBlock, len_of(i))) << i;
    }
    EXPECT_EQ(unexpected.load(), 0);
  }
}

// A verified copy outside the cache (huggingface_hub's): its blocks are read from it, never
// fetched nor written to the disk tier, it is what passthrough opens, and a copy that can no longer
// be read is dropped for the origin.
TEST_F(BlockCacheDiskTest, LocalCopiesAreReadInPlaceAndDroppedWhenTheyFail) {
  CacheOptions o = DiskOptions();
  BlockCache cache(o);
  ASSERT_NE(cache.disk(), nullptr);
  const uint64_t origin_before = cache.Stats().origin_bytes;  // (a counter of the process)
  const BlockKey k0 = Key(21, 21);
  const size_t size = 20 * kBlock + 5;  // above the 1 MiB floor for passthrough files
  std::string data;
  for (uint64_t i = 0; i * kBlock < size; ++i)
    data += Expected(BlockKey{k0.content, i}, std::min<size_t>(kBlock, size - i * kBlock));
  const std::string path = tmp_.path() + "/copy";
  hubfs::testing::WriteFileBytes(path, data);
  EXPECT_FALSE(cache.AddLocalCopy(k0.content, size, tmp_.path() + "/missing"));
  ASSERT_TRUE(cache.AddLocalCopy(k0.content, size, path));
  EXPECT_EQ(cache.LocalCopyPath(k0.content), path);
  EXPECT_TRUE(cache.Contains(BlockKey{k0.content, 20}));
  EXPECT_FALSE(cache.Contains(BlockKey{k0.content, 21}));  // past its end
  EXPECT_EQ(cache.WholeBacking(k0.content).path, "");        // whole files (passthrough) are off
  cache.EnableWholeFiles(true);
  EXPECT_EQ(StatIdentity(cache.WholeBacking(k0.content).path), StatIdentity(path));  // the copy itself
  std::atomic<int> unexpected{0};
  for (uint64_t i = 0; i < 21; ++i) {
    const size_t len = std::min<size_t>(kBlock, size - i * kBlock);
    auto r = cache.Get(BlockKey{k0.content, i}, len, MustNotFetch(&unexpected), nullptr);
    ASSERT_TRUE(r.ok()) << i << ": " << r.error().ToString();
    EXPECT_TRUE(AsString(*r) == data.substr(i * kBlock, len)) << i;
  }
  EXPECT_EQ(unexpected.load(), 0);
  cache.Flush();
  EXPECT_EQ(cache.Stats().disk_blocks, 0u);  // nothing copied into the cache
  EXPECT_EQ(cache.Stats().origin_bytes, origin_before);

  // Cut short under the open descriptor: the block past the new end comes from the origin, and the
  // copy is no longer used.
  ASSERT_EQ(::truncate(path.c_str(), 3 * kBlock), 0);
  cache.Purge(BlockKey{k0.content, 10});
  Origin origin;
  auto r = cache.Get(BlockKey{k0.content, 10}, kBlock, origin.For(BlockKey{k0.content, 10}), nullptr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_TRUE(AsString(*r) == Expected(BlockKey{k0.content, 10}, kBlock));
  EXPECT_EQ(origin.calls.load(), 1);
  EXPECT_EQ(cache.LocalCopyPath(k0.content), "");
  EXPECT_EQ(cache.WholeBacking(k0.content).path, "");
  cache.Purge(BlockKey{k0.content, 11});  // (read before, it stays in memory until then)
  EXPECT_FALSE(cache.Contains(BlockKey{k0.content, 11}));
}

// A copy is used only as the file that was hashed: one replaced at its path between the hash and
// the open is refused, and what passthrough is handed is the open copy itself, whatever the path
// names later (a file renamed over it: never its bytes).
TEST_F(BlockCacheDiskTest, ALocalCopyIsTheFileThatWasVerifiedNotWhateverItsPathNamesLater) {
  CacheOptions o = DiskOptions();
  BlockCache cache(o);
  cache.EnableWholeFiles(true);
  const BlockKey k0 = Key(22, 22);
  const uint64_t n = BlockCache::kWholeMinBytes / kBlock + 1;  // above the floor for passthrough files
  const size_t size = n * kBlock;
  std::string data;
  for (uint64_t i = 0; i < n; ++i) data += Expected(BlockKey{k0.content, i}, kBlock);
  const std::string path = tmp_.path() + "/copy", other = tmp_.path() + "/other";
  hubfs::testing::WriteFileBytes(path, data);
  const FileIdentity hashed = StatIdentity(path);
  // Replaced between the hash and the open: refused.
  hubfs::testing::WriteFileBytes(other, std::string(size, 'x'));
  ASSERT_EQ(::rename(other.c_str(), path.c_str()), 0);
  EXPECT_FALSE(cache.AddLocalCopy(k0.content, size, path, &hashed));
  EXPECT_EQ(cache.LocalCopyPath(k0.content), "");
  EXPECT_EQ(cache.WholeBacking(k0.content).path, "");
  // The verified file, then replaced at its path after the open: passthrough still gets it.
  hubfs::testing::WriteFileBytes(path, data);
  const FileIdentity good = StatIdentity(path);
  ASSERT_TRUE(cache.AddLocalCopy(k0.content, size, path, &good));
  hubfs::testing::WriteFileBytes(other, std::string(size, 'y'));
  ASSERT_EQ(::rename(other.c_str(), path.c_str()), 0);
  const BlockCache::Backing b = cache.WholeBacking(k0.content);
  ASSERT_FALSE(b.path.empty());
  EXPECT_NE(b.path, path);
  ASSERT_NE(b.hold, nullptr);
  EXPECT_EQ(FdIdentity(-1).exists, false);
  const int fd = ::open(b.path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << b.path;
  const FileIdentity opened = FdIdentity(fd);
  EXPECT_EQ(opened.ino, good.ino);
  EXPECT_EQ(opened.dev, good.dev);
  std::string got(size, '\0');
  EXPECT_EQ(::pread(fd, got.data(), size, 0), static_cast<ssize_t>(size));
  ::close(fd);
  EXPECT_TRUE(got == data) << "passthrough would have read the file renamed over the copy";
  // The blocks come from the verified file too.
  std::atomic<int> unexpected{0};
  auto r = cache.Get(BlockKey{k0.content, n - 1}, kBlock, MustNotFetch(&unexpected), nullptr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_TRUE(AsString(*r) == data.substr((n - 1) * kBlock));
  // The disk tier's own whole files are named by their path, with nothing to hold.
  EXPECT_EQ(cache.WholeBacking(Key(23, 23).content).path, "");
}

// Blocks queued for the disk may leave the memory tier before they are written: none is lost,
// none is fetched twice, and memory stays within its cap meanwhile.
TEST_F(BlockCacheDiskTest, BlocksEvictedWhileQueuedForTheDiskAreNeitherLostNorRefetched) {
  CacheOptions o = DiskOptions();
  o.memory_bytes = 16 * kBlock;
  o.max_pending_write_bytes = 64 * kBlock;
  Origin origin;
  {
    BlockCache cache(o);
    for (uint64_t i = 0; i < 48; ++i) {
      ASSERT_TRUE(cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr).ok());
      EXPECT_LE(cache.Stats().mem_bytes, 16 * kBlock + kBlock);
    }
    // Re-read while writes may still be queued: from memory, the queue or the disk, never the origin.
    std::atomic<int> unexpected{0};
    for (uint64_t i = 0; i < 48; ++i) {
      auto r = cache.Get(Key(i), kBlock, MustNotFetch(&unexpected), nullptr);
      ASSERT_TRUE(r.ok()) << r.error().ToString();
      EXPECT_TRUE(AsString(*r) == Expected(Key(i), kBlock));
    }
    EXPECT_EQ(unexpected.load(), 0);
    cache.Flush();
  }
  EXPECT_EQ(origin.calls.load(), 48);
  BlockCache cache(o);
  for (uint64_t i = 0; i < 48; ++i) EXPECT_TRUE(cache.disk()->Contains(Key(i))) << i;
}

// Purging a block (its file failed whole-file verification) also cancels its queued disk write:
// the bad bytes never reach the disk behind the purge.
TEST_F(BlockCacheDiskTest, PurgeCancelsAQueuedDiskWrite) {
  Origin origin;
  BlockCache cache(DiskOptions());
  for (uint64_t i = 0; i < 8; ++i) {
    ASSERT_TRUE(cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr).ok());
    cache.Purge(Key(i));  // right away: its write is usually still queued
  }
  cache.Flush();
  for (uint64_t i = 0; i < 8; ++i) {
    EXPECT_FALSE(cache.Contains(Key(i))) << i;
    EXPECT_FALSE(fsys::exists(BlockPath(Key(i)))) << i;
  }
  // The write queue's accounting is back to empty: a new block is fetched and written at once.
  ASSERT_TRUE(cache.Get(Key(9), kBlock, origin.For(Key(9)), nullptr).ok());
  cache.Flush();
  EXPECT_TRUE(cache.disk()->Contains(Key(9)));
}

// Small blocks (configs, dataset files) are written behind: each is a file to create, which costs
// more CPU than its fetch, so the write waits until no block has been asked for during
// small_write_quiet_ms. Until then the block is served from the write queue; once quiet it is on
// disk without any Flush.
TEST_F(BlockCacheDiskTest, SmallBlocksAreWrittenOnceTheCacheIsQuiet) {
  CacheOptions o = DiskOptions();
  o.small_write_quiet_ms = 300;
  Origin origin;
  BlockCache cache(o);
  ASSERT_NE(cache.disk(), nullptr);
  const BlockKey k = Key(1);
  ASSERT_TRUE(cache.Get(k, kBlock, origin.For(k), nullptr).ok());
  // A reader keeps the cache busy: the write waits.
  const BlockKey other = Key(2);
  for (auto end = Clock::now() + milliseconds(900); Clock::now() < end;) {
    ASSERT_TRUE(cache.Get(other, kBlock, origin.For(other), nullptr).ok());
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_FALSE(cache.disk()->Contains(k)) << "written while a reader was active";
  EXPECT_TRUE(cache.Contains(k));  // pending: still served without a fetch
  // Quiet: both reach the disk on their own.
  for (auto end = Clock::now() + std::chrono::seconds(10);
       !(cache.disk()->Contains(k) && cache.disk()->Contains(other)) && Clock::now() < end;)
    std::this_thread::sleep_for(milliseconds(20));
  EXPECT_TRUE(cache.disk()->Contains(k));
  EXPECT_TRUE(cache.disk()->Contains(other));
  EXPECT_TRUE(fsys::exists(BlockPath(k)));
  EXPECT_EQ(origin.calls.load(), 2);
}

// Write-behind is bounded: past max_deferred_write_bytes the small blocks go to the writers even
// while readers keep the cache busy, and destroying the cache writes whatever still waits.
TEST_F(BlockCacheDiskTest, DeferredSmallWritesAreBoundedAndWrittenAtShutdown) {
  CacheOptions o = DiskOptions();
  o.small_write_quiet_ms = 60000;  // never quiet during this test
  o.max_deferred_write_bytes = 4 * kBlock;
  Origin origin;
  {
    BlockCache cache(o);
    ASSERT_NE(cache.disk(), nullptr);
    for (uint64_t i = 0; i < 6; ++i) ASSERT_TRUE(cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr).ok());
    for (auto end = Clock::now() + std::chrono::seconds(10); !cache.disk()->Contains(Key(0)) && Clock::now() < end;) {
      ASSERT_TRUE(cache.Get(Key(5), kBlock, origin.For(Key(5)), nullptr).ok());  // keeps it busy
      std::this_thread::sleep_for(milliseconds(10));
    }
    EXPECT_TRUE(cache.disk()->Contains(Key(0))) << "the deferred bytes passed their cap but nothing was written";
    ASSERT_TRUE(cache.Get(Key(6), kBlock, origin.For(Key(6)), nullptr).ok());
  }  // Key(6) (and whatever else still waits) is written by the destructor
  BlockCache cache(o);
  for (uint64_t i = 0; i < 7; ++i) EXPECT_TRUE(cache.disk()->Contains(Key(i))) << i;
  EXPECT_EQ(origin.calls.load(), 7);
}

// Small blocks waiting for a quiet moment must not hold a reader back: when the write queue is
// full of them, a fetch waiting for room gets them written at once (not after write_stall_limit,
// and none is dropped from the disk tier).
TEST_F(BlockCacheDiskTest, AFullQueueOfDeferredSmallBlocksIsWrittenAtOnce) {
  CacheOptions o = DiskOptions();
  o.memory_bytes = 16 * kBlock;
  o.max_pending_write_bytes = 4 * kBlock;
  o.small_write_quiet_ms = 60000;
  o.max_deferred_write_bytes = 1ULL << 30;
  o.write_stall_limit = std::chrono::milliseconds(3000);
  auto& skipped = metrics::Get("cache.disk.write_skipped");
  const uint64_t skipped_before = skipped.Get();
  Origin origin;
  {
    BlockCache cache(o);
    ASSERT_NE(cache.disk(), nullptr);
    const auto t0 = Clock::now();
    for (uint64_t i = 0; i < 40; ++i) ASSERT_TRUE(cache.Get(Key(i), kBlock, origin.For(Key(i)), nullptr).ok());
    EXPECT_LT(Clock::now() - t0, milliseconds(2500)) << "a fetch waited out the stall limit";
  }
  EXPECT_EQ(skipped.Get(), skipped_before);
  BlockCache cache(o);
  for (uint64_t i = 0; i < 40; ++i) EXPECT_TRUE(cache.disk()->Contains(Key(i))) << i;
}

// Surge writers join only when a fetch has to wait for room in the write queue: a reader faster
// than the disk gets them, one the disk keeps up with does not; every block reaches the disk.
TEST_F(BlockCacheDiskTest, SurgeWritersJoinOnlyWhenFetchesWaitForTheDisk) {
  constexpr size_t kBig = 4 * kDirectMinBytes;  // direct writes, not write-behind
  auto& surge = metrics::Get("cache.disk.surge_writes");
  auto& waits = metrics::Get("cache.disk.write_backpressure");
  CacheOptions o = DiskOptions();
  o.disk_bytes = 1ULL << 30;
  o.block_size = kBig;
  o.memory_bytes = 64 * kBig;
  o.disk_writers = 1;
  o.surge_disk_writers = 2;
  {
    // Roomy queue, a reader slower than the disk: nobody waits, no surge.
    o.max_pending_write_bytes = 64 * kBig;
    Origin origin;
    origin.delay = milliseconds(20);
    const uint64_t surge0 = surge.Get(), waits0 = waits.Get();
    BlockCache cache(o);
    ASSERT_NE(cache.disk(), nullptr);
    for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(cache.Get(Key(i), kBig, origin.For(Key(i)), nullptr).ok());
    cache.Flush();
    EXPECT_EQ(waits.Get(), waits0);
    EXPECT_EQ(surge.Get(), surge0) << "surge writers ran with nobody waiting";
  }
  {
    // A memory tier full of blocks readers hold (written already) leaves the queue one block, and
    // a fast reader: fetches wait, and the surge writers help.
    o.memory_bytes = 4 * kBig;
    o.max_pending_write_bytes = kBig;
    Origin origin;
    BlockCache cache(o);
    ASSERT_NE(cache.disk(), nullptr);
    std::vector<BlockRef> held;
    for (uint64_t i = 90; i < 94; ++i) held.push_back(cache.Get(Key(i), kBig, origin.For(Key(i)), nullptr).value());
    cache.Flush();
    const uint64_t surge0 = surge.Get(), waits0 = waits.Get();
    for (uint64_t i = 100; i < 164; ++i) ASSERT_TRUE(cache.Get(Key(i), kBig, origin.For(Key(i)), nullptr).ok());
    cache.Flush();
    EXPECT_GT(waits.Get(), waits0);
    EXPECT_GT(surge.Get(), surge0) << "fetches waited for the disk but no surge writer helped";
    for (uint64_t i = 100; i < 164; ++i) EXPECT_TRUE(cache.disk()->Contains(Key(i))) << i;
  }
}

// A block just fetched is in the memory tier and in the write queue at once: one buffer, counted
// once against the memory cap. With the disk stalled, the queue takes as many such blocks as the
// memory tier holds before a fetch waits (counted twice, the fourth already waited), and
// memory stays within 1.25 x the cap.
TEST_F(BlockCacheDiskTest, ABlockInMemoryAndQueuedForTheDiskCountsOnce) {
  constexpr size_t kBig = 4 * kDirectMinBytes;  // direct writes, not write-behind
  auto& waits = metrics::Get("cache.disk.write_backpressure");
  auto& skipped = metrics::Get("cache.disk.write_skipped");
  std::mutex mu;
  std::condition_variable cv;
  bool disk_stalled = true;
  CacheOptions o = DiskOptions();
  o.block_size = kBig;
  o.memory_bytes = 4 * kBig;
  o.max_pending_write_bytes = kBig;
  o.disk_writers = 1;
  o.surge_disk_writers = 0;
  o.write_stall_limit = milliseconds(200);
  o.before_disk_write = [&] {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return !disk_stalled; });
  };
  Origin origin;
  {
    BlockCache cache(o);
    ASSERT_NE(cache.disk(), nullptr);
    const uint64_t waits0 = waits.Get(), skipped0 = skipped.Get();
    for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(cache.Get(Key(i), kBig, origin.For(Key(i)), nullptr).ok());
    EXPECT_EQ(waits.Get(), waits0) << "four blocks in memory and queued were counted as eight";
    EXPECT_EQ(cache.Stats().mem_blocks, 4u);
    // The memory tier and the queue now hold four blocks, all of it queued: the next fetch waits
    // for the disk (bounded), and its block is not written.
    ASSERT_TRUE(cache.Get(Key(4), kBig, origin.For(Key(4)), nullptr).ok());
    EXPECT_EQ(waits.Get(), waits0 + 1);
    EXPECT_EQ(skipped.Get(), skipped0 + 1);
    EXPECT_LE(cache.Stats().mem_bytes, 5 * kBig);
    {
      std::lock_guard lock(mu);
      disk_stalled = false;
    }
    cv.notify_all();
    cache.Flush();
    for (uint64_t i = 0; i < 4; ++i) EXPECT_TRUE(cache.disk()->Contains(Key(i))) << i;
    EXPECT_FALSE(cache.disk()->Contains(Key(4)));
  }
  EXPECT_EQ(origin.calls.load(), 5);
}

TEST_F(BlockCacheDiskTest, UnusableDiskDirFallsBackToMemory) {
  CacheOptions o = DiskOptions();
  hubfs::testing::WriteFileBytes(tmp_.path() + "/file", "x");
  o.disk_dir = tmp_.path() + "/file/cache";  // a path under a regular file can never be created
  BlockCache cache(o);
  EXPECT_EQ(cache.disk(), nullptr);
  Origin origin;
  auto r = cache.Get(Key(11), kBlock, origin.For(Key(11)), nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(AsString(*r) == Expected(Key(11), kBlock));
}

}  // namespace
}  // namespace hubfs::cache
