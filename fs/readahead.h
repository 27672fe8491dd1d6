// Readahead as a pure policy: given the reads of one open file, which bytes to prefetch next.
//
// Up to kMaxStreams sequential streams are tracked per handle (forked workers or a loader that
// interleaves two regions share one fd). A read continues a stream when it starts within
// [next - kBackwardTolerance, next + kForwardTolerance]; otherwise it starts a new stream (replacing
// the least recently used), which prefetches nothing: a random read costs exactly its own blocks.
// A continuing stream's window starts at kInitialWindow and doubles, up to kMaxWindow, each time the
// reader actually waited for data (the window was too small), as mountpoint-s3 does; a reader that
// never waits keeps its window, so fast re-reads do not balloon memory. Prefetch is issued only past
// what the stream already asked for, so each byte is requested once.
//
// Several handles of one file share the kernel's page cache: when another handle (8 processes
// reading one shard, tensor-parallel ranks) has brought a range in, the kernel skips it and this
// handle's next READ lands past it, beyond any tolerance. Given a way to ask whether the kernel
// accounts for the bytes in between (holds them, or has READs for them on the way), such a READ
// continues the stream behind it instead of looking like a random jump (which would reset its
// window, and send a safetensors handle to its tensor plan).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "fs/safetensors_plan.h"

namespace hubfs::fs {

struct ReadaheadConfig {
  uint64_t initial_window = 8u << 20;       // two 4 MiB blocks: covers the kernel's readahead tail
  uint64_t max_window = 64u << 20;          // 16 blocks in flight per stream
  // How far from where a stream stands a READ may land and still belong to it. The kernel keeps
  // up to two readahead batches (read_ahead_kb each) of 1 MiB READs in flight per file, and FUSE
  // threads answer them in any order: a READ up to that far ahead of or behind the stream is
  // the same sequential reader (hubfs sets both to 2 x read_ahead_kb, 16-64 MiB). Beyond it, a
  // READ starts a new stream (a jump). 1 MiB behind put 9 of 16 sequential handles of a
  // 16-thread read into tensor-plan mode.
  uint64_t forward_tolerance = 32u << 20;   // also: a skipped tensor is not a random jump
  uint64_t backward_tolerance = 32u << 20;
};

struct PrefetchRange {
  uint64_t begin = 0;
  uint64_t end = 0;  // exclusive; begin == end means nothing to prefetch
  bool jump = false;  // the read started a new stream away from the file's start
  int stream = -1;    // the stream it belongs to (for Unissued)
  // A jump after the handle's first read: a loader walking tensors in key order (a handle's first
  // read may land anywhere: a worker taking its 1/16 of the file). The kernel's re-ordered
  // readahead READs are not jumps (ReadaheadConfig::backward_tolerance).
  bool seek = false;
  bool empty() const { return begin >= end; }
};

class Readahead {
 public:
  static constexpr int kMaxStreams = 4;
  explicit Readahead(ReadaheadConfig config = {}) : config_(config) {}

  // Whether the kernel accounts for [begin, end) of the file: its page cache holds those bytes, or
  // READs for them are on the way (ReturnedBlocks::AccountsFor).
  using HeldFn = std::function<bool(uint64_t begin, uint64_t end)>;
  // `waited`: the reader had to wait for at least one of the blocks it asked for. `held` (may be
  // empty) is asked only when the read continues no stream within the tolerances.
  PrefetchRange OnRead(uint64_t offset, uint64_t len, uint64_t file_size, bool waited, const HeldFn& held = {});
  // Range `r` (from OnRead) was issued only up to `offset` (the cache's prefetch budget was
  // spent): the rest is offered again by its stream's next read instead of being dropped.
  void Unissued(const PrefetchRange& r, uint64_t offset);

 private:
  struct Stream {
    bool active = false;
    uint64_t next = 0;             // where a sequential continuation would start
    uint64_t window = 0;           // bytes to keep ahead of `next`
    uint64_t prefetched_until = 0;
    uint64_t last_use = 0;
  };
  ReadaheadConfig config_;
  std::array<Stream, kMaxStreams> streams_{};
  uint64_t tick_ = 0;
};

// One handle's whole prefetch policy, as Filesystem::Read applies it to each READ (and the recorded
// trace tests replay it): the handle's sequential streams (Readahead); on a .safetensors file, the
// switch to the tensor plan once the reader seeks (a loader walking tensors in key order), and then
// the plan's next tensors; and when the reader nears the end of a shard, the one moment to prefetch
// the next shard. Which blocks are actually fetched (held by the kernel, in the budget) is the
// caller's. Not thread-safe: the caller locks around OnRead, SetPlan, Unissued and TakeNearEnd; the
// plan, loaded by the caller (it may fetch the header), is immutable, and Next reads only it and
// what was fixed at construction.
class HandleReadahead {
 public:
  HandleReadahead(ReadaheadConfig config = {}, bool safetensors = false)
      : config_(config), ra_(config), safetensors_(safetensors) {}

  struct Step {
    PrefetchRange stream;    // the streams' prefetch
    bool entered_plan = false;  // this READ's seek switched the handle to the tensor plan
    bool load_plan = false;     // ... and its plan is to be loaded now (SetPlan), once per handle
    std::shared_ptr<const SafetensorsPlan> plan;  // the plan the handle follows (null: none, or not yet loaded)
  };
  Step OnRead(uint64_t offset, uint64_t len, uint64_t file_size, bool waited, const Readahead::HeldFn& held = {});
  // The plan the caller loaded for Step::load_plan (null when the header is not usable).
  void SetPlan(std::shared_ptr<const SafetensorsPlan> plan) { plan_ = std::move(plan); }
  void Unissued(const PrefetchRange& r, uint64_t offset) { ra_.Unissued(r, offset); }

  struct Ahead {
    std::vector<ByteRange> tensors;  // the plan's next tensors after the READ, up to half a max window
    bool near_end = false;           // the reader is finishing the shard (see TakeNearEnd)
  };
  // After `step` (its plan set if it was loaded), for a READ that ended at `end`: a plan handle
  // prefetches the tensors that follow in key order and nears the end when fewer than half a max
  // window of them are left; a safetensors handle without a plan nears it reading sequentially
  // within half a max window of the file's end. Only reads the plan and the handle's fixed settings.
  Ahead Next(const Step& step, uint64_t end, uint64_t file_size) const;
  // True the first time only: the next shard is prefetched once per handle.
  bool TakeNearEnd() { return !std::exchange(near_end_taken_, true); }

 private:
  ReadaheadConfig config_;  // fixed at construction, as is safetensors_
  Readahead ra_;
  bool safetensors_;
  bool plan_mode_ = false;
  bool plan_tried_ = false;
  bool near_end_taken_ = false;
  std::shared_ptr<const SafetensorsPlan> plan_;
};

// Which blocks of one inode the kernel has been given whole. Every open keeps the page cache (the
// content is immutable), so such a block is in the kernel's page cache and readahead skips it: 16
// workers reading slices of one file would otherwise each prefetch past their slice into blocks
// the next worker already read, and load them back from the disk tier. A READ for a block given
// whole means the kernel dropped pages (memory pressure, drop_caches): every mark is cleared and
// readahead works as on a fresh file. Not thread-safe: the caller locks.
class ReturnedBlocks {
 public:
  ReturnedBlocks(uint64_t block_size, uint64_t file_size) : bs_(block_size), size_(file_size) {}
  // A READ of [begin, end) is being answered.
  void Note(uint64_t begin, uint64_t end);
  bool Has(uint64_t block) const { return block < served_.size() && served_[block] >= BlockLen(block); }
  // Whether every block lying wholly inside [begin, end) was given whole (the partial blocks at the
  // edges are not asked: their other bytes belong to the reads on either side). False when no
  // block lies wholly inside.
  bool Holds(uint64_t begin, uint64_t end) const;
  // Holds(begin, end), or one of the latest READs (any handle) ended within [end - back,
  // end + fwd]: a handle whose kernel skipped pages that other handles' READs, perhaps not
  // answered yet, are bringing in (for Readahead::OnRead's `held`).
  bool AccountsFor(uint64_t begin, uint64_t end, uint64_t back, uint64_t fwd) const;
  // The end of the furthest READ noted so far (kept when the marks are cleared).
  uint64_t furthest() const { return furthest_; }

 private:
  uint64_t BlockLen(uint64_t block) const { return std::min(bs_, size_ - std::min(size_, block * bs_)); }
  uint64_t bs_, size_;
  std::vector<uint32_t> served_;  // bytes given per block, grown on demand
  std::array<uint64_t, 16> recent_ends_{};  // a ring over the latest READs' ends
  size_t noted_ = 0;                        // READs noted so far
  uint64_t furthest_ = 0;
};

}  // namespace hubfs::fs
