// Readahead policy (see readahead.h).
#include "fs/readahead.h"

#include <algorithm>

namespace hubfs::fs {

PrefetchRange Readahead::OnRead(uint64_t offset, uint64_t len, uint64_t file_size, bool waited,
                                const HeldFn& held) {
  ++tick_;
  const uint64_t end = std::min(offset + len, file_size);
  Stream* s = nullptr;
  for (auto& st : streams_) {
    if (!st.active) continue;
    const uint64_t lo = st.next > config_.backward_tolerance ? st.next - config_.backward_tolerance : 0;
    if (offset >= lo && offset <= st.next + config_.forward_tolerance) {
      s = &st;
      break;
    }
  }
  if (s == nullptr && held) {
    // Past every tolerance: still the stream right behind, if the kernel accounts for the gap.
    Stream* behind = nullptr;
    for (auto& st : streams_) {
      if (st.active && st.next <= offset && (behind == nullptr || st.next > behind->next)) behind = &st;
    }
    if (behind != nullptr && held(behind->next, offset)) s = behind;
  }
  if (s == nullptr) {
    // A new stream: replace the least recently used one. Random reads prefetch nothing.
    s = &*std::min_element(streams_.begin(), streams_.end(), [](const Stream& a, const Stream& b) {
      if (a.active != b.active) return !a.active;
      return a.last_use < b.last_use;
    });
    *s = Stream{true, end, 0, end, tick_};
    // A read from the very start of a file is almost always the start of a sequential stream.
    if (offset == 0) s->window = config_.initial_window;
    else return PrefetchRange{0, 0, true, -1, tick_ > 1};
  } else {
    s->last_use = tick_;
    if (s->window == 0) s->window = config_.initial_window;
    else if (waited) s->window = std::min(s->window * 2, config_.max_window);
    s->next = std::max(s->next, end);
  }
  const uint64_t want_end = std::min(s->next + s->window, file_size);
  const uint64_t begin = std::max(s->prefetched_until, s->next);
  if (begin >= want_end) return {};
  s->prefetched_until = want_end;
  return {begin, want_end, false, static_cast<int>(s - streams_.data())};
}

void Readahead::Unissued(const PrefetchRange& r, uint64_t offset) {
  if (r.stream < 0 || r.stream >= kMaxStreams) return;
  // (If the slot was taken by a new stream meanwhile, lowering its mark re-offers nothing it has
  // not passed: OnRead starts at max(prefetched_until, next).)
  Stream& s = streams_[static_cast<size_t>(r.stream)];
  if (s.active) s.prefetched_until = std::min(s.prefetched_until, offset);
}

void ReturnedBlocks::Note(uint64_t begin, uint64_t end) {
  end = std::min(end, size_);
  if (begin >= end) return;
  recent_ends_[noted_++ % recent_ends_.size()] = end;
  furthest_ = std::max(furthest_, end);
  const uint64_t first = begin / bs_, last = (end - 1) / bs_;
  for (uint64_t b = first; b <= last && b < served_.size(); ++b) {
    if (Has(b)) {  // asked again: the kernel let its pages go
      std::fill(served_.begin(), served_.end(), 0);
      break;
    }
  }
  if (served_.size() <= last) served_.resize(last + 1, 0);
  for (uint64_t b = first; b <= last; ++b) {
    const uint64_t s = std::max(begin, b * bs_), e = std::min(end, (b + 1) * bs_);
    served_[b] = static_cast<uint32_t>(std::min<uint64_t>(served_[b] + (e - s), BlockLen(b)));
  }
}

bool ReturnedBlocks::Holds(uint64_t begin, uint64_t end) const {
  const uint64_t first = (begin + bs_ - 1) / bs_, stop = std::min(end, size_) / bs_;
  if (first >= stop) return false;
  for (uint64_t b = first; b < stop; ++b) {
    if (!Has(b)) return false;
  }
  return true;
}

bool ReturnedBlocks::AccountsFor(uint64_t begin, uint64_t end, uint64_t back, uint64_t fwd) const {
  if (Holds(begin, end)) return true;
  const uint64_t lo = end > back ? end - back : 0, hi = end + fwd;
  const size_t n = std::min(noted_, recent_ends_.size());
  return std::any_of(recent_ends_.begin(), recent_ends_.begin() + static_cast<long>(n),
                     [&](uint64_t e) { return e >= lo && e <= hi; });
}

HandleReadahead::Step HandleReadahead::OnRead(uint64_t offset, uint64_t len, uint64_t file_size, bool waited,
                                              const Readahead::HeldFn& held) {
  Step s;
  s.stream = ra_.OnRead(offset, len, file_size, waited, held);
  if (s.stream.seek && safetensors_ && !plan_mode_) plan_mode_ = s.entered_plan = true;
  if (plan_mode_ && !plan_tried_) plan_tried_ = s.load_plan = true;
  if (plan_mode_) s.plan = plan_;
  return s;
}

HandleReadahead::Ahead HandleReadahead::Next(const Step& step, uint64_t end, uint64_t file_size) const {
  Ahead a;
  const uint64_t look = config_.max_window / 2;
  if (step.plan) {
    uint64_t ahead = 0;
    a.tensors = step.plan->Following(end, look);
    for (const ByteRange& r : a.tensors) ahead += r.end - r.begin;
    a.near_end = ahead < look;  // the last tensors in key order
  } else if (safetensors_) {
    a.near_end = end + look >= file_size && !step.stream.jump;  // a sequential reader close to the end
  }
  return a;
}

}  // namespace hubfs::fs
