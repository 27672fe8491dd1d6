// Readahead policy, driven by read traces: what gets prefetched for sequential, random and mixed reads.
#include "fs/readahead.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../test_util.h"

namespace hubfs::fs {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;

struct Issued {
  uint64_t read_end;  // end of the read that triggered it
  PrefetchRange r;
};

// Checks that no two prefetch ranges overlap and none passes the end of the file.
void ExpectDisjointAndBounded(const std::vector<PrefetchRange>& ranges, uint64_t file_size) {
  std::vector<PrefetchRange> sorted = ranges;
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    EXPECT_LT(sorted[i].begin, sorted[i].end);
    EXPECT_LE(sorted[i].end, file_size);
    if (i > 0) {
      EXPECT_LE(sorted[i - 1].end, sorted[i].begin) << "overlapping prefetch ranges";
    }
  }
}

// Reads the whole file sequentially in 1 MiB reads; returns the non-empty prefetch ranges.
std::vector<Issued> SequentialTrace(Readahead& ra, uint64_t file_size, bool waited) {
  std::vector<Issued> out;
  for (uint64_t off = 0; off < file_size; off += kMiB) {
    const uint64_t len = std::min(kMiB, file_size - off);
    const PrefetchRange r = ra.OnRead(off, len, file_size, waited);
    if (!r.empty()) out.push_back({off + len, r});
  }
  return out;
}

TEST(Readahead, SequentialFromZeroIsContiguousAndBounded) {
  for (bool waited : {false, true}) {
    const uint64_t file_size = 300 * kMiB + 12345;  // not a multiple of the read size
    Readahead ra;
    auto trace = SequentialTrace(ra, file_size, waited);
    ASSERT_FALSE(trace.empty());
    // The very first read of the file already prefetches, starting right after it.
    EXPECT_EQ(trace[0].r.begin, kMiB);
    EXPECT_EQ(trace[0].r.end, kMiB + ReadaheadConfig{}.initial_window);
    std::vector<PrefetchRange> ranges;
    for (size_t i = 0; i < trace.size(); ++i) {
      ranges.push_back(trace[i].r);
      EXPECT_GE(trace[i].r.begin, trace[i].read_end) << "prefetch of bytes already read";
      if (i > 0) {
        EXPECT_EQ(trace[i].r.begin, trace[i - 1].r.end) << "gap or overlap at range " << i;
      }
    }
    ExpectDisjointAndBounded(ranges, file_size);
    // Everything past the first read was prefetched exactly once.
    EXPECT_EQ(ranges.back().end, file_size);
    uint64_t total = 0;
    for (auto& r : ranges) total += r.end - r.begin;
    EXPECT_EQ(total, file_size - kMiB);
  }
}

TEST(Readahead, WindowGrowsOnlyWhenTheReaderWaited) {
  const ReadaheadConfig cfg;
  const uint64_t file_size = 100ULL << 30;
  // Lead = how far the prefetch reaches past the read that triggered it.
  {
    Readahead ra;
    std::vector<uint64_t> leads;
    for (uint64_t off = 0; off < 40 * kMiB; off += kMiB) {
      const PrefetchRange r = ra.OnRead(off, kMiB, file_size, /*waited=*/true);
      ASSERT_FALSE(r.empty()) << "offset " << off;
      leads.push_back(r.end - (off + kMiB));
    }
    EXPECT_EQ(leads[0], cfg.initial_window);
    EXPECT_EQ(leads[1], 2 * cfg.initial_window);
    EXPECT_EQ(leads[2], 4 * cfg.initial_window);
    EXPECT_EQ(leads[3], cfg.max_window);  // 64 MiB: capped
    for (size_t i = 1; i < leads.size(); ++i) {
      EXPECT_GE(leads[i], leads[i - 1]);
      EXPECT_LE(leads[i], cfg.max_window);
    }
    EXPECT_EQ(leads.back(), cfg.max_window);
  }
  {
    Readahead ra;
    for (uint64_t off = 0; off < 40 * kMiB; off += kMiB) {
      const PrefetchRange r = ra.OnRead(off, kMiB, file_size, /*waited=*/false);
      ASSERT_FALSE(r.empty()) << "offset " << off;
      EXPECT_EQ(r.end - (off + kMiB), cfg.initial_window) << "window grew without a wait at " << off;
    }
  }
}

TEST(Readahead, CustomMaxWindowIsHonoured) {
  ReadaheadConfig cfg;
  cfg.initial_window = 2 * kMiB;
  cfg.max_window = 5 * kMiB;  // not a power-of-two multiple of the initial window
  Readahead ra(cfg);
  const uint64_t file_size = 1ULL << 30;
  uint64_t max_lead = 0;
  for (uint64_t off = 0; off < 30 * kMiB; off += kMiB) {
    const PrefetchRange r = ra.OnRead(off, kMiB, file_size, true);
    if (!r.empty()) max_lead = std::max(max_lead, r.end - (off + kMiB));
  }
  EXPECT_EQ(max_lead, cfg.max_window);
}

TEST(Readahead, RandomReadsPrefetchNothing) {
  const uint64_t seed = hubfs::testing::TestSeed();
  std::mt19937_64 rng(seed);
  const ReadaheadConfig cfg;
  // Reads in neighbouring slots are more than stride / 2 - 1 MiB apart: beyond both tolerances.
  const uint64_t stride = 128 * kMiB;
  ASSERT_GT(stride / 2 - kMiB, std::max(cfg.forward_tolerance, cfg.backward_tolerance));
  std::vector<uint64_t> slots(2000);
  std::iota(slots.begin(), slots.end(), 1);  // never offset 0: that one is a sequential start by design
  std::shuffle(slots.begin(), slots.end(), rng);
  const uint64_t file_size = (slots.size() + 2) * stride;
  Readahead ra;
  for (uint64_t slot : slots) {
    const uint64_t off = slot * stride + (rng() % (stride / 2));
    const uint64_t len = 4096 + rng() % kMiB;
    const PrefetchRange r = ra.OnRead(off, len, file_size, rng() % 2 == 0);
    EXPECT_TRUE(r.empty()) << "random read at " << off << " prefetched [" << r.begin << ", " << r.end << ")";
  }
}

TEST(Readahead, TwoInterleavedStreamsAreBothTracked) {
  const uint64_t file_size = 1ULL << 30;
  const uint64_t b_start = 512 * kMiB;
  Readahead ra;
  std::vector<PrefetchRange> a_ranges, b_ranges;
  for (int i = 0; i < 20; ++i) {
    const uint64_t a = static_cast<uint64_t>(i) * kMiB;
    const uint64_t b = b_start + static_cast<uint64_t>(i) * kMiB;
    const PrefetchRange ra_a = ra.OnRead(a, kMiB, file_size, false);
    const PrefetchRange ra_b = ra.OnRead(b, kMiB, file_size, false);
    if (!ra_a.empty()) a_ranges.push_back(ra_a);
    if (!ra_b.empty()) b_ranges.push_back(ra_b);
    if (i >= 1) {
      // From the second read of each stream on, each keeps its own window ahead of itself.
      EXPECT_FALSE(ra_a.empty()) << "stream A lost at read " << i;
      EXPECT_FALSE(ra_b.empty()) << "stream B lost at read " << i;
    }
  }
  ASSERT_FALSE(a_ranges.empty());
  ASSERT_FALSE(b_ranges.empty());
  for (auto& r : a_ranges) EXPECT_LT(r.end, b_start) << "stream A prefetched into B's region";
  for (auto& r : b_ranges) EXPECT_GT(r.begin, b_start);
  std::vector<PrefetchRange> all = a_ranges;
  all.insert(all.end(), b_ranges.begin(), b_ranges.end());
  ExpectDisjointAndBounded(all, file_size);
}

TEST(Readahead, SmallBackwardStepContinuesTheStream) {
  const uint64_t file_size = 1ULL << 30;
  Readahead ra;
  const PrefetchRange r0 = ra.OnRead(0, kMiB, file_size, false);
  const PrefetchRange r1 = ra.OnRead(kMiB, kMiB, file_size, false);
  ASSERT_FALSE(r1.empty());
  EXPECT_EQ(r1.begin, r0.end);
  // The kernel re-orders a little: 512 KiB back from where the stream stands.
  const PrefetchRange r2 = ra.OnRead(2 * kMiB - kMiB / 2, kMiB, file_size, /*waited=*/true);
  ASSERT_FALSE(r2.empty()) << "a small backward step was treated as a random read";
  EXPECT_EQ(r2.begin, r1.end);  // continues where the stream's prefetch stopped: nothing twice
  const PrefetchRange r3 = ra.OnRead(2 * kMiB + kMiB / 2, kMiB, file_size, true);
  ASSERT_FALSE(r3.empty());
  EXPECT_EQ(r3.begin, r2.end);
  ExpectDisjointAndBounded({r0, r1, r2, r3}, file_size);
}

TEST(Readahead, LargeBackwardJumpStartsANewStream) {
  const uint64_t file_size = 1ULL << 30;
  Readahead ra;
  for (uint64_t off = 0; off < 100 * kMiB; off += kMiB) (void)ra.OnRead(off, kMiB, file_size, false);
  // 50 MiB back is beyond backward_tolerance (32 MiB): a new stream, which prefetches nothing yet.
  ASSERT_GT(50 * kMiB, ReadaheadConfig{}.backward_tolerance);
  const PrefetchRange r = ra.OnRead(50 * kMiB, kMiB, file_size, true);
  EXPECT_TRUE(r.empty());
  EXPECT_TRUE(r.jump);
}

// The kernel's readahead of one sequential reader: two batches of sixteen 1 MiB READs in flight,
// answered by FUSE threads in any order (here: every run of 32 consecutive READs shuffled).
std::vector<uint64_t> ReorderedReadaheadTrace(uint64_t file_size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> offs;
  for (uint64_t off = 0; off < file_size; off += kMiB) offs.push_back(off);
  for (size_t i = 0; i < offs.size(); i += 32)
    std::shuffle(offs.begin() + static_cast<long>(i), offs.begin() + static_cast<long>(std::min(offs.size(), i + 32)), rng);
  return offs;
}

// Replays `trace` (1 MiB READs) through `ra`; returns the jumps after the first READ (which may
// land anywhere in the first batch) and appends the prefetch ranges to `ranges`.
size_t ReplayJumps(Readahead& ra, const std::vector<uint64_t>& trace, uint64_t file_size,
                   std::vector<PrefetchRange>* ranges) {
  size_t jumps = 0;
  for (size_t i = 0; i < trace.size(); ++i) {
    const PrefetchRange r = ra.OnRead(trace[i], kMiB, file_size, true);
    if (r.jump && i > 0) ++jumps;
    if (!r.empty()) ranges->push_back(r);
  }
  return jumps;
}

TEST(Readahead, ReorderedReadaheadBatchesStayOneStream) {
  const uint64_t seed = hubfs::testing::TestSeed();
  const uint64_t file_size = 1ULL << 30;
  const std::vector<uint64_t> trace = ReorderedReadaheadTrace(file_size, seed);
  Readahead ra;
  std::vector<PrefetchRange> ranges;
  // A jump after a handle's first read makes a safetensors handle follow the tensor plan
  // (fs/filesystem.cc) instead of streaming.
  EXPECT_EQ(ReplayJumps(ra, trace, file_size, &ranges), 0u) << "seed " << seed;
  ExpectDisjointAndBounded(ranges, file_size);
  uint64_t prefetched = 0;
  for (const PrefetchRange& r : ranges) prefetched += r.end - r.begin;
  EXPECT_GE(prefetched, file_size - 32 * kMiB) << "the stream stopped prefetching";

  // The same trace with the tolerances hubfs had before (1 MiB behind, 16 MiB ahead) reports
  // jumps: the trace is as re-ordered as the kernel's READs are.
  ReadaheadConfig old;
  old.backward_tolerance = kMiB;
  old.forward_tolerance = 16 * kMiB;
  Readahead narrow(old);
  std::vector<PrefetchRange> narrow_ranges;
  EXPECT_GT(ReplayJumps(narrow, trace, file_size, &narrow_ranges), 0u) << "seed " << seed;
}

TEST(Readahead, ForwardSkipWithinToleranceContinues) {
  const uint64_t file_size = 1ULL << 30;
  Readahead ra;
  (void)ra.OnRead(0, kMiB, file_size, false);
  (void)ra.OnRead(kMiB, kMiB, file_size, false);
  // Skipping 10 MiB (a tensor nobody needs) is still the same stream.
  const PrefetchRange r = ra.OnRead(12 * kMiB, kMiB, file_size, false);
  EXPECT_FALSE(r.empty());
  EXPECT_GE(r.begin, 13 * kMiB);
  // Skipping 100 MiB is not.
  EXPECT_TRUE(ra.OnRead(200 * kMiB, kMiB, file_size, false).empty());
}

// Eight processes reading one shard share the kernel's page cache: a handle that falls behind
// finds what the others brought in and its next READ lands past it, far beyond the tolerance.
// Told that the kernel accounts for the bytes in between, the policy keeps the handle's stream
// (and its window) instead of starting a new one and reporting a jump.
TEST(Readahead, ReadPastBytesTheKernelHoldsContinuesTheStream) {
  const uint64_t file_size = 1ULL << 30;
  auto held_from = [](uint64_t from, uint64_t to) {
    return [from, to](uint64_t a, uint64_t b) { return a >= from && b <= to; };
  };
  Readahead ra;
  uint64_t window_end = 0;
  for (uint64_t off = 0; off < 20 * kMiB; off += kMiB) {
    const PrefetchRange r = ra.OnRead(off, kMiB, file_size, /*waited=*/true);
    if (!r.empty()) window_end = r.end;
  }
  ASSERT_GT(window_end, 20 * kMiB);
  // Another handle read [20 MiB, 300 MiB): this handle's next READ is at 300 MiB.
  const PrefetchRange r = ra.OnRead(300 * kMiB, kMiB, file_size, true, held_from(20 * kMiB, 300 * kMiB));
  EXPECT_FALSE(r.jump);
  ASSERT_FALSE(r.empty()) << "the stream's window was lost";
  EXPECT_EQ(r.begin, 301 * kMiB);
  EXPECT_GT(r.end - r.begin, ReadaheadConfig{}.initial_window) << "the window grown before was reset";
  // The stream goes on from there.
  const PrefetchRange next = ra.OnRead(301 * kMiB, kMiB, file_size, true);
  EXPECT_FALSE(next.jump);

  // The same READ without that knowledge, or with bytes in between the kernel does not hold, is
  // a jump and prefetches nothing.
  for (const Readahead::HeldFn& held : {Readahead::HeldFn{}, Readahead::HeldFn(held_from(20 * kMiB, 299 * kMiB))}) {
    Readahead other;
    for (uint64_t off = 0; off < 20 * kMiB; off += kMiB) (void)other.OnRead(off, kMiB, file_size, true);
    const PrefetchRange j = other.OnRead(300 * kMiB, kMiB, file_size, true, held);
    EXPECT_TRUE(j.jump);
    EXPECT_TRUE(j.empty());
  }
  // A READ behind every stream is a jump whatever the kernel holds (there is no stream behind it).
  Readahead back;
  for (uint64_t off = 500 * kMiB; off < 520 * kMiB; off += kMiB) (void)back.OnRead(off, kMiB, file_size, true);
  EXPECT_TRUE(back.OnRead(100 * kMiB, kMiB, file_size, true, [](uint64_t, uint64_t) { return true; }).jump);
}

TEST(Readahead, SixteenRegionsEachWithItsOwnHandle) {
  const uint64_t file_size = 16ULL << 30;  // 16 regions of 1 GiB
  const uint64_t region = file_size / 16;
  std::vector<Readahead> handles(16);
  std::vector<PrefetchRange> all;
  // Round-robin, as 16 worker processes would.
  for (int step = 0; step < 4; ++step) {
    for (int h = 0; h < 16; ++h) {
      const uint64_t off = static_cast<uint64_t>(h) * region + static_cast<uint64_t>(step) * kMiB;
      const PrefetchRange r = handles[static_cast<size_t>(h)].OnRead(off, kMiB, file_size, true);
      if (step >= 1) {
        EXPECT_FALSE(r.empty()) << "region " << h << " got no prefetch at read " << step;
        EXPECT_GE(r.begin, off + kMiB);
        EXPECT_LE(r.end, static_cast<uint64_t>(h + 1) * region);
      }
      if (!r.empty()) all.push_back(r);
    }
  }
  ExpectDisjointAndBounded(all, file_size);
}

TEST(Readahead, EndOfFile) {
  const uint64_t file_size = 3 * kMiB;
  Readahead ra;
  const PrefetchRange r0 = ra.OnRead(0, kMiB, file_size, true);
  EXPECT_EQ(r0.begin, kMiB);
  EXPECT_EQ(r0.end, file_size);
  EXPECT_TRUE(ra.OnRead(kMiB, kMiB, file_size, true).empty());
  EXPECT_TRUE(ra.OnRead(2 * kMiB, kMiB, file_size, true).empty());
  EXPECT_TRUE(ra.OnRead(3 * kMiB, kMiB, file_size, true).empty());  // at EOF
  EXPECT_TRUE(ra.OnRead(0, 10, 0, true).empty());                   // empty file
}

// A stream whose range did not fit in the cache's prefetch budget gets the rest offered again by
// its next read, so those blocks are prefetched late rather than left to demand fetches; a fully
// issued range is never offered twice.
TEST(Readahead, UnissuedRestIsOfferedAgainByTheNextRead) {
  const uint64_t file_size = 1ULL << 30;
  Readahead ra;
  const PrefetchRange first = ra.OnRead(0, kMiB, file_size, true);
  ASSERT_EQ(first.begin, kMiB);
  ASSERT_GT(first.end, first.begin + kMiB);
  const uint64_t stopped = first.begin + kMiB;  // only one MiB of it fitted
  ra.Unissued(first, stopped);
  const PrefetchRange again = ra.OnRead(kMiB, kMiB, file_size, false);
  EXPECT_EQ(again.begin, stopped) << "the unissued rest was dropped";
  EXPECT_GE(again.end, first.end);
  // Fully issued this time: the next read offers only what is new.
  const PrefetchRange next = ra.OnRead(2 * kMiB, kMiB, file_size, false);
  if (!next.empty()) {
    EXPECT_GE(next.begin, again.end) << "a range issued whole was offered twice";
  }
  // Unissued never extends a stream (a later offset than issued changes nothing).
  Readahead fresh;
  const PrefetchRange r = fresh.OnRead(0, kMiB, file_size, true);
  fresh.Unissued(r, r.end + 64 * kMiB);
  const PrefetchRange r2 = fresh.OnRead(kMiB, kMiB, file_size, false);
  if (!r2.empty()) {
    EXPECT_GE(r2.begin, r.end);
  }
}

// The kernel keeps every hubfs file's page cache: blocks it was given whole are not prefetched
// again, until it asks for one of them (it dropped pages), which clears every mark.
// A two-tensor safetensors file whose key order ("a", then "b") is the reverse of its file order.
struct TwoTensorFile {
  std::string header = R"({"b":{"dtype":"U8","shape":[67108864],"data_offsets":[0,67108864]},)"
                       R"("a":{"dtype":"U8","shape":[67108864],"data_offsets":[67108864,134217728]}})";
  uint64_t base = 8 + header.size();  // where the tensors' data starts
  uint64_t size = base + 128 * kMiB;
  std::shared_ptr<const SafetensorsPlan> plan() const {
    auto p = SafetensorsPlan::Parse(header, size);
    EXPECT_TRUE(p.ok());
    return std::make_shared<const SafetensorsPlan>(std::move(p.value()));
  }
};

// A safetensors handle that seeks after its first read follows the tensor plan: the plan is asked
// for once, then every step carries it, and what follows in key order is prefetched.
TEST(HandleReadahead, ASeekOnASafetensorsFileSwitchesToThePlanOnce) {
  const TwoTensorFile f;
  HandleReadahead h({}, /*safetensors=*/true);
  auto s = h.OnRead(0, kMiB, f.size, true);  // the header
  EXPECT_FALSE(s.entered_plan);
  EXPECT_FALSE(s.load_plan);
  EXPECT_EQ(s.plan, nullptr);  // not following a plan
  EXPECT_TRUE(h.Next(s, kMiB, f.size).tensors.empty());
  s = h.OnRead(f.base + 64 * kMiB, kMiB, f.size, true);  // "a", first in key order, last in the file
  EXPECT_TRUE(s.stream.seek);
  EXPECT_TRUE(s.entered_plan);
  ASSERT_TRUE(s.load_plan);
  EXPECT_EQ(s.plan, nullptr);
  const auto plan = f.plan();
  h.SetPlan(plan);
  s.plan = plan;
  auto a = h.Next(s, f.base + 65 * kMiB, f.size);
  ASSERT_FALSE(a.tensors.empty());
  EXPECT_EQ(a.tensors.front().begin, f.base + 65 * kMiB);
  EXPECT_FALSE(a.near_end);
  // The next READ carries the plan without asking for it again.
  s = h.OnRead(f.base + 65 * kMiB, kMiB, f.size, false);
  EXPECT_FALSE(s.entered_plan);
  EXPECT_FALSE(s.load_plan);
  EXPECT_EQ(s.plan, plan);
  // Past the end of "a", key order goes on at "b", at the file's start.
  a = h.Next(s, f.base + 128 * kMiB - kMiB, f.size);
  ASSERT_EQ(a.tensors.size(), 2u);
  EXPECT_EQ(a.tensors[1].begin, f.base);
  EXPECT_FALSE(a.near_end);
  // Within half a max window of the end of key order (the end of "b"): the shard is nearly done.
  s = h.OnRead(f.base + 60 * kMiB, kMiB, f.size, false);
  a = h.Next(s, f.base + 61 * kMiB, f.size);
  EXPECT_TRUE(a.near_end);
  EXPECT_TRUE(h.TakeNearEnd());
  EXPECT_FALSE(h.TakeNearEnd()) << "the next shard is prefetched once per handle";
}

// The same reads on a file that is not safetensors never involve a plan or the next shard.
TEST(HandleReadahead, OtherFilesNeverFollowAPlan) {
  const TwoTensorFile f;
  HandleReadahead h({}, /*safetensors=*/false);
  h.OnRead(0, kMiB, f.size, true);
  auto s = h.OnRead(f.base + 64 * kMiB, kMiB, f.size, true);
  EXPECT_TRUE(s.stream.seek);
  EXPECT_FALSE(s.entered_plan);
  EXPECT_FALSE(s.load_plan);
  EXPECT_EQ(s.plan, nullptr);  // not following a plan
  s = h.OnRead(f.size - kMiB, kMiB, f.size, false);
  EXPECT_FALSE(s.entered_plan || s.load_plan);
  EXPECT_FALSE(h.Next(s, f.size, f.size).near_end);
}

// A safetensors handle whose header is not usable (SetPlan(nullptr)) goes on with its streams, and
// nears the end the way a sequential reader does: reading on within half a max window of it.
TEST(HandleReadahead, WithoutAUsablePlanTheEndIsTheFilesEnd) {
  const TwoTensorFile f;
  const uint64_t look = ReadaheadConfig{}.max_window / 2;
  HandleReadahead h({}, /*safetensors=*/true);
  h.OnRead(0, kMiB, f.size, true);
  auto s = h.OnRead(f.base + 64 * kMiB, kMiB, f.size, true);
  ASSERT_TRUE(s.load_plan);
  h.SetPlan(nullptr);
  uint64_t off = f.base + 65 * kMiB;
  for (; off + kMiB + look < f.size; off += kMiB) {
    s = h.OnRead(off, kMiB, f.size, false);
    EXPECT_EQ(s.plan, nullptr);
    EXPECT_FALSE(h.Next(s, off + kMiB, f.size).near_end) << off;
  }
  s = h.OnRead(off, kMiB, f.size, false);
  EXPECT_TRUE(h.Next(s, off + kMiB, f.size).near_end);
  // A jump to the end is a random read, not a reader finishing the file.
  HandleReadahead j({}, true);
  j.OnRead(0, kMiB, f.size, true);
  s = j.OnRead(f.size - kMiB, kMiB, f.size, true);
  EXPECT_TRUE(s.stream.jump);
  j.SetPlan(nullptr);
  s.plan = nullptr;
  EXPECT_FALSE(j.Next(s, f.size, f.size).near_end);
}

TEST(ReturnedBlocks, WholeBlocksOnlyAndAReRequestClearsEverything) {
  constexpr uint64_t kB = 4 << 20;
  ReturnedBlocks r(kB, 10 * kB + 100);  // 11 blocks, the last one 100 bytes
  EXPECT_FALSE(r.Has(0));
  r.Note(0, kB / 2);
  EXPECT_FALSE(r.Has(0)) << "half a block is not in the page cache yet";
  r.Note(kB / 2, kB + 4096);  // the rest of block 0 and one page of block 1
  EXPECT_TRUE(r.Has(0));
  EXPECT_FALSE(r.Has(1));
  r.Note(10 * kB, 10 * kB + 4096);  // the short last block, asked as a whole page
  EXPECT_TRUE(r.Has(10));
  EXPECT_FALSE(r.Has(11)) << "past the end";
  // Sixteen workers' slices meeting inside blocks: each block is whole once both sides are read.
  r.Note(2 * kB + kB / 3, 4 * kB);
  EXPECT_FALSE(r.Has(2));
  EXPECT_TRUE(r.Has(3));
  r.Note(2 * kB, 2 * kB + kB / 3);
  EXPECT_TRUE(r.Has(2));
  // The kernel asks again for a block it had whole: it dropped pages, so nothing is assumed.
  r.Note(3 * kB, 3 * kB + 4096);
  EXPECT_FALSE(r.Has(0));
  EXPECT_FALSE(r.Has(2));
  EXPECT_FALSE(r.Has(10));
  EXPECT_FALSE(r.Has(3));
  EXPECT_EQ(r.furthest(), 10 * kB + 100) << "how far the file was read survives the clearing";
  // Empty and out-of-range reads change nothing.
  r.Note(5 * kB, 5 * kB);
  r.Note(20 * kB, 21 * kB);
  EXPECT_FALSE(r.Has(5));
  EXPECT_EQ(r.furthest(), 10 * kB + 100);
}

// Holds(begin, end): every block wholly inside the range was given whole; the partial blocks at
// the edges are not asked.
TEST(ReturnedBlocks, HoldsAsksTheWholeBlocksInside) {
  constexpr uint64_t kB = 4 << 20;
  ReturnedBlocks r(kB, 10 * kB);
  r.Note(2 * kB, 6 * kB);  // blocks 2-5
  EXPECT_TRUE(r.Holds(2 * kB, 6 * kB));
  EXPECT_TRUE(r.Holds(kB + 5, 6 * kB + 7)) << "edge blocks 1 and 6 are partial: not asked";
  EXPECT_FALSE(r.Holds(kB, 6 * kB)) << "block 1 lies wholly inside and was not given";
  EXPECT_FALSE(r.Holds(2 * kB, 7 * kB)) << "block 6 lies wholly inside and was not given";
  EXPECT_FALSE(r.Holds(2 * kB + 1, 3 * kB - 1)) << "no whole block inside: nothing known";
  EXPECT_FALSE(r.Holds(8 * kB, 12 * kB)) << "past what was noted";
}

// AccountsFor: held in the page cache, or one of the latest 16 READs (any handle) ended near the
// far end (READs of other handles the kernel already issued for the bytes in between).
TEST(ReturnedBlocks, AccountsForRecentReadsNearTheFarEnd) {
  constexpr uint64_t kB = 4 << 20, kTol = 32 * kMiB;
  ReturnedBlocks r(kB, 1ULL << 30);
  r.Note(0, kMiB);
  EXPECT_FALSE(r.AccountsFor(kMiB, 300 * kMiB, kTol, kTol)) << "nothing near 300 MiB";
  r.Note(290 * kMiB, 291 * kMiB);  // another handle's READ
  EXPECT_TRUE(r.AccountsFor(kMiB, 300 * kMiB, kTol, kTol));
  EXPECT_FALSE(r.AccountsFor(kMiB, 400 * kMiB, kTol, kTol)) << "291 MiB is not within 32 MiB of 400 MiB";
  // Only the latest 16 READs count.
  for (uint64_t i = 0; i < 16; ++i) r.Note(600 * kMiB + i * kMiB, 601 * kMiB + i * kMiB);
  EXPECT_FALSE(r.AccountsFor(kMiB, 300 * kMiB, kTol, kTol)) << "the READ near 300 MiB is no longer among the latest";
  EXPECT_TRUE(r.AccountsFor(kMiB, 620 * kMiB, kTol, kTol));
}

}  // namespace
}  // namespace hubfs::fs
