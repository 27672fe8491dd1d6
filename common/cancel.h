// A cancellation token with a deadline. FUSE interrupts and shutdown set it; transfer loops and
// waits poll it, so a reader that gives up stops waiting promptly, and no wait outlives its deadline.
#pragma once

#include <atomic>
#include <chrono>

namespace hubfs {

class CancelToken {
 public:
  using Clock = std::chrono::steady_clock;
  explicit CancelToken(Clock::time_point deadline = Clock::time_point::max()) : deadline_(deadline) {}
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  bool expired() const { return Clock::now() >= deadline_; }
  bool ShouldStop() const { return cancelled() || expired(); }
  Clock::time_point deadline() const { return deadline_; }

 private:
  std::atomic<bool> cancelled_{false};
  Clock::time_point deadline_;
};

}  // namespace hubfs
