// The readahead policy replayed over recorded offset traces: the FUSE READs the kernel sent for
// each loader pattern of the benchmark (tests/unit/fs/traces, recorded by
// tools/bench/record_traces.py through the stub FUSE filesystem mounted as hubfs mounts, a
// 280 MiB shard of the benchmark's checkpoint opened as hubfs opens a cold shard).
//
// The replay runs HandleReadahead, the policy Filesystem::Read applies to each READ: a handle's
// streams (their `held` answered by the inode's ReturnedBlocks), the switch to the safetensors plan
// on a seek, the plan's next tensors, and the moment the next shard is prefetched. Around it, as
// Filesystem::Read does: blocks the kernel was given whole are never prefetched, and a READ
// "waited" when one of its blocks had not been asked for yet. It measures, per pattern:
//   - covered: of the blocks READs needed, the share a prefetch had asked for before the first
//     READ that needed it (the reader did not start the block's fetch itself);
//   - wasted: blocks prefetched that no READ of the trace needed;
//   - plan handles: handles that switched to the tensor plan;
//   - next shard: handles that signalled the shard's end was near (the next shard's prefetch).
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "fs/readahead.h"
#include "fs/safetensors_plan.h"

namespace hubfs::fs {
namespace {

constexpr uint64_t kMiB = 1u << 20;
constexpr uint64_t kBlock = 4 * kMiB;  // hubfs's default block size

struct TraceRead {
  uint64_t handle, offset, size;
};

struct Trace {
  uint64_t file_size = 0;
  std::vector<TraceRead> reads;
};

std::string TraceDir() { return HUBFS_TRACE_DIR; }

Trace LoadTrace(const std::string& name) {
  Trace t;
  std::ifstream in(TraceDir() + "/" + name + ".trace");
  EXPECT_TRUE(in) << "missing trace " << name;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      if (auto at = line.find("file_size "); at != std::string::npos)
        t.file_size = std::stoull(line.substr(at + 10));
      continue;
    }
    std::istringstream ls(line);
    TraceRead r{};
    ls >> r.handle >> r.offset >> r.size;
    EXPECT_FALSE(ls.fail()) << name << ": " << line;
    t.reads.push_back(r);
  }
  EXPECT_GT(t.file_size, 0u) << name;
  return t;
}

SafetensorsPlan LoadPlan(uint64_t file_size) {
  std::ifstream in(TraceDir() + "/shard.header.json", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  auto plan = SafetensorsPlan::Parse(ss.str(), file_size);
  EXPECT_TRUE(plan.ok());
  return std::move(plan.value());
}

struct ReplayResult {
  uint64_t needed = 0;      // distinct blocks READs needed
  uint64_t covered = 0;     // ... that a prefetch had asked for before the first READ needing it
  uint64_t prefetched = 0;  // distinct blocks prefetched
  uint64_t wasted = 0;      // ... that no READ needed
  int handles = 0;
  int plan_handles = 0;
  uint64_t max_ahead = 0;   // the furthest a prefetch reached past the READ that issued it
  int next_shard_handles = 0;  // handles that signalled the shard's end was near (next shard's prefetch)
  uint64_t first_next_shard_at = UINT64_MAX;  // where the first READ so signalling ended
  double covered_share() const { return needed ? static_cast<double>(covered) / needed : 0; }
};

// `slow_origin`: every READ waited (the origin never kept up), so every stream's window grows to its
// maximum; otherwise a READ waited only when one of its blocks had not been asked for yet.
ReplayResult Replay(const Trace& t, const SafetensorsPlan* plan, bool slow_origin = false, ReadaheadConfig cfg = {}) {
  const uint64_t nblocks = (t.file_size + kBlock - 1) / kBlock;
  // The plan as Filesystem::LoadPlan gives it: shared by every handle of the file, loaded when a
  // handle first needs it. A file without one (not safetensors) is read by the streams alone.
  const auto shared_plan = plan ? std::make_shared<const SafetensorsPlan>(*plan) : nullptr;
  std::map<uint64_t, HandleReadahead> handles;
  ReturnedBlocks returned(kBlock, t.file_size);
  enum : uint8_t { kNone, kByPrefetch, kByRead };
  std::vector<uint8_t> asked(nblocks, kNone);
  std::vector<bool> needed(nblocks, false);
  ReplayResult out;
  for (const TraceRead& r : t.reads) {
    const uint64_t end = std::min(r.offset + r.size, t.file_size);
    if (r.offset >= end) continue;
    const uint64_t first = r.offset / kBlock, last = (end - 1) / kBlock;
    bool waited = slow_origin;
    for (uint64_t b = first; b <= last; ++b) waited = waited || asked[b] == kNone;
    auto [it, fresh] = handles.try_emplace(r.handle, cfg, plan != nullptr);
    HandleReadahead& h = it->second;
    HandleReadahead::Step step = h.OnRead(r.offset, end - r.offset, t.file_size, waited, [&](uint64_t a, uint64_t b) {
      return returned.AccountsFor(a, b, cfg.backward_tolerance, cfg.forward_tolerance);
    });
    if (step.entered_plan) ++out.plan_handles;
    if (step.load_plan) {
      step.plan = shared_plan;
      h.SetPlan(shared_plan);
    }
    returned.Note(r.offset, end);
    auto prefetch = [&](uint64_t from, uint64_t to) {
      for (uint64_t b = from / kBlock; b * kBlock < to && b < nblocks; ++b) {
        if ((b >= first && b <= last) || returned.Has(b)) continue;
        if (asked[b] == kNone) asked[b] = kByPrefetch;
        out.max_ahead = std::max(out.max_ahead, (b + 1) * kBlock > end ? (b + 1) * kBlock - end : 0);
      }
    };
    if (!step.stream.empty()) prefetch(step.stream.begin, step.stream.end);
    const HandleReadahead::Ahead ahead = h.Next(step, end, t.file_size);
    for (const ByteRange& br : ahead.tensors) prefetch(br.begin, br.end);
    if (ahead.near_end && h.TakeNearEnd()) {
      ++out.next_shard_handles;
      out.first_next_shard_at = std::min(out.first_next_shard_at, end);
    }
    for (uint64_t b = first; b <= last; ++b) {
      if (!needed[b]) {
        needed[b] = true;
        ++out.needed;
        if (asked[b] == kByPrefetch) ++out.covered;
      }
      if (asked[b] == kNone) asked[b] = kByRead;
    }
  }
  for (uint64_t b = 0; b < nblocks; ++b) {
    if (asked[b] != kByPrefetch) continue;
    ++out.prefetched;
    if (!needed[b]) ++out.wasted;
  }
  out.handles = static_cast<int>(handles.size());
  return out;
}

void Describe(const std::string& name, const ReplayResult& r) {
  std::printf("%-9s handles %2d, blocks needed %3llu, covered by prefetch %5.1f%%, prefetched %3llu, wasted %llu, "
              "plan handles %d, furthest ahead %llu MiB, next shard from %d handles\n",
              name.c_str(), r.handles, static_cast<unsigned long long>(r.needed), 100 * r.covered_share(),
              static_cast<unsigned long long>(r.prefetched), static_cast<unsigned long long>(r.wasted),
              r.plan_handles, static_cast<unsigned long long>(r.max_ahead / kMiB), r.next_shard_handles);
}

constexpr const char* kAll[] = {"seq", "eight", "threads", "odirect", "shared", "st", "mmap", "ranks", "prefetch"};

// Each handle's first half of its READs: a load stopped half-way.
Trace FirstHalfOfEachHandle(const Trace& t) {
  std::map<uint64_t, size_t> total, kept;
  for (const TraceRead& r : t.reads) ++total[r.handle];
  Trace out{t.file_size, {}};
  for (const TraceRead& r : t.reads)
    if (kept[r.handle]++ < total[r.handle] / 2) out.reads.push_back(r);
  return out;
}

class RecordedTrace : public ::testing::Test {
 protected:
  // Replays trace `name` (of a load stopped half-way if `half`) with the shard's tensor plan.
  ReplayResult Run(const std::string& name, bool slow_origin = false, bool half = false) {
    trace_ = LoadTrace(name);
    if (half) trace_ = FirstHalfOfEachHandle(trace_);
    plan_ = LoadPlan(trace_.file_size);
    auto r = Replay(trace_, &plan_, slow_origin);
    Describe(name + (half ? ", half" : "") + (slow_origin ? ", slow" : ""), r);
    const uint64_t nblocks = (trace_.file_size + kBlock - 1) / kBlock;
    if (half) {
      EXPECT_LT(r.needed, nblocks) << name << ": half a load reads part of the file";
    } else {
      EXPECT_EQ(r.needed, nblocks) << name << ": every pattern reads the whole shard";
    }
    // Prefetch stays within one window of its reader: never more than max_window past the READ.
    EXPECT_LE(r.max_ahead, ReadaheadConfig{}.max_window + kBlock) << name;
    return r;
  }
  Trace trace_;
  SafetensorsPlan plan_ = SafetensorsPlan();
};

// What each recorded pattern gets: its handles, how many follow the tensor plan (-1: not asked),
// and the share of the blocks it needed that prefetch asked for before the first READ needing them.
struct Expected {
  const char* name;
  int handles;
  int plan_handles;
  double covered;
  const char* why;
};
constexpr Expected kExpected[] = {
    {"seq", 1, 0, 0.98, "dd: one sequential stream; every block but the first asked for ahead of it"},
    {"eight", 8, 0, 0.95,
     "8 processes reading the whole shard at once: 8 sequential streams, none mistaken for a loader jumping "
     "around; every block after the first asked for ahead of whichever reader got there first"},
    {"threads", 16, 0, 0.5,
     "16 threads, each its own fd and 1/16: each handle's first READ lands mid-file, a random read that "
     "prefetches nothing (not a seek: no plan), then each handle is one stream (SlicesAreFetchedByTheirReadersOnlyAtTheirStart)"},
    {"odirect", 16, 0, 0.5, "the same with O_DIRECT opens"},
    {"shared", 1, -1, 0.95,
     "4 forked workers on one fd: one handle whose READs interleave the workers' offsets, tracked as its "
     "streams (in the recorded run one worker falls far enough behind to count as a seek, and the handle then "
     "follows the tensor plan: what it asks for is still all read)"},
    {"st", 1, 0, 0.95,
     "pread of every tensor in key order: the fixture's tensors are stored as safetensors writers store them "
     "(by dtype, then name), so key order runs through the file in small steps back and forth, within the "
     "streams' tolerances: no seek, and the sequential window stays ahead of the loader"},
    {"mmap", 2, 1, 0.9,
     "safe_open + mmap: the header's handle, and the mapping's readahead READs walked in key order, which seek "
     "(from the header to the first tensor far away) and then follow the plan"},
    {"ranks", 4, -1, 0.85,
     "4 tensor-parallel ranks, each its rows of every tensor in key order: each skips the other ranks' rows, "
     "within a stream's tolerance or over rows another rank has been given, and between them most blocks are "
     "asked for before the first rank needs them"},
    {"prefetch", 9, -1, 0.85,
     "vLLM: 8 threads in 16 MiB pieces, then the mmap load (the prefetch's READs were direct: the kernel holds "
     "nothing, so the mapping's READs come again)"},
};

TEST_F(RecordedTrace, EachPatternIsCoveredAhead) {
  for (const Expected& e : kExpected) {
    auto r = Run(e.name);
    EXPECT_EQ(r.handles, e.handles) << e.name << ": " << e.why;
    if (e.plan_handles >= 0) {
      EXPECT_EQ(r.plan_handles, e.plan_handles) << e.name << ": " << e.why;
    }
    EXPECT_GE(r.covered_share(), e.covered) << e.name << ": " << e.why;
  }
}

// One reader: exactly its first block is its own fetch.
TEST_F(RecordedTrace, OneSequentialReaderFetchesOnlyItsFirstBlock) {
  auto r = Run("seq");
  EXPECT_EQ(r.covered, r.needed - 1);
}

// 16 slices: only the first blocks of each slice are its reader's own fetches (run in parallel).
TEST_F(RecordedTrace, SlicesAreFetchedByTheirReadersOnlyAtTheirStart) {
  for (const char* name : {"threads", "odirect"}) {
    auto r = Run(name);
    EXPECT_LE(r.needed - r.covered, 2u * 16) << name << ": at most 2 blocks per slice fetched by its reader";
  }
}

// The mmap load's READs on a file that is not safetensors (no plan): still covered by the streams.
TEST_F(RecordedTrace, MmapLoadWithoutAPlan) {
  const Trace t = LoadTrace("mmap");
  auto r = Replay(t, nullptr);
  Describe("mmap, no plan", r);
  EXPECT_GE(r.covered_share(), 0.9);
}

// A slow origin: every READ waits, so each stream's window doubles up to max_window. Prefetch then
// runs up to a whole window ahead of each reader (Run checks: never further).
TEST_F(RecordedTrace, SlowOriginGrowsWindowsToTheirMaximum) {
  for (const char* name : kAll) {
    auto r = Run(name, /*slow_origin=*/true);
    EXPECT_GE(r.covered_share(), 0.7) << name;
    if (std::string(name) == "seq") {
      EXPECT_GE(r.max_ahead, ReadaheadConfig{}.max_window - kBlock) << "the window grew to its maximum";
    }
  }
}

// The next shard is prefetched when a reader is finishing this one: every whole load gets there;
// a load stopped half-way never does, except through the readers of the last slices, which run
// within half a max window of the file's end from their start.
TEST_F(RecordedTrace, TheNextShardIsPrefetchedOnlyNearTheEnd) {
  const uint64_t look = ReadaheadConfig{}.max_window / 2;
  for (const char* name : kAll) {
    auto whole = Run(name);
    EXPECT_GE(whole.next_shard_handles, 1) << name << ": the whole shard was read";
    auto half = Run(name, /*slow_origin=*/false, /*half=*/true);
    const bool slices = std::string(name) == "threads" || std::string(name) == "odirect";
    if (slices) {
      EXPECT_GE(half.first_next_shard_at + look, trace_.file_size) << name << ": only the last slices signal";
    } else {
      EXPECT_EQ(half.next_shard_handles, 0) << name << ": stopped half-way, far from the end";
    }
  }
  // Not a safetensors file (no plan, no index beside it): never.
  EXPECT_EQ(Replay(LoadTrace("seq"), nullptr).next_shard_handles, 0);
}

// A load stopped half-way: what prefetch asked for that no READ needed is bounded by one window
// for each region of the file being read at once (16 slices, vLLM's 8 pieces; one for the rest,
// however many handles read it), plus the plan's look-ahead for a handle following the tensor plan,
// with the origin slow (the largest windows) or not. A slice's reader, whose window has few READs to
// grow, stops within 2 blocks of where it stopped.
TEST_F(RecordedTrace, AStoppedLoadWastesAtMostAWindowPerRegion) {
  const ReadaheadConfig cfg;
  const std::map<std::string, uint64_t> regions = {{"threads", 16}, {"odirect", 16}, {"prefetch", 8}};
  for (const char* name : kAll) {
    for (bool slow : {false, true}) {
      auto r = Run(name, slow, /*half=*/true);
      const uint64_t n = regions.count(name) ? regions.at(name) : 1;
      uint64_t bound = n * (cfg.max_window / kBlock + 1) + r.plan_handles * (cfg.max_window / 2 / kBlock + 2);
      if (n == 16) bound = 2 * 16;
      EXPECT_LE(r.wasted, bound) << name << (slow ? " (slow origin)" : "");
    }
  }
}

}  // namespace
}  // namespace hubfs::fs
