// A fixed set of threads running queued jobs in FIFO order: the cache's background disk writers and
// whole-file verifiers. Plain std::thread + mutex + condition variable on purpose: every handoff is
// visible to ThreadSanitizer (oneTBB's scheduler lives in an uninstrumented libtbb, where TSan
// reports its task handoffs as races), and Wait() gives tests and shutdown a clean barrier.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hubfs::cache {

// Sets the calling thread's nice value; false where not permitted (raising priority needs root or
// CAP_SYS_NICE), leaving it unchanged. Remembers the value it set, so repeated calls are free.
inline bool SetThreadNice(int nice) {
  thread_local int current = 0;
  if (nice == current) return true;
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice) != 0) return false;
  current = nice;
  return true;
}

class WorkerPool {
 public:
  // Idle priority (SCHED_IDLE) threads run only on CPU time nobody else wants: for work that must
  // happen but never at the expense of a reader (whole-file verification).
  enum class Priority { kNormal, kIdle };
  // `name`: the threads' name in top -H, perf and /proc (at most 15 characters). `surge_threads`
  // more threads take jobs only while SetSurge(true) is in effect (and finish the job they hold
  // when it ends): extra parallelism for the moments someone is waiting on the queue, without
  // their cost the rest of the time.
  explicit WorkerPool(int threads, Priority priority = Priority::kNormal, const char* name = "hubfs-worker",
                      int surge_threads = 0)
      : base_(std::max(1, threads)) {
    for (int i = 0; i < base_ + std::max(0, surge_threads); ++i)
      threads_.emplace_back([this, priority, name, i] {
        ::pthread_setname_np(::pthread_self(), name);
        if (priority == Priority::kIdle) {
          sched_param p{};
          ::sched_setscheduler(0, SCHED_IDLE, &p);  // best effort: a failure leaves normal priority
        }
        Main(i >= base_);
      });
  }
  ~WorkerPool() {
    Wait();
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    surge_cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Run(std::function<void()> job) {
    bool surge = false;
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(job));
      ++pending_;
      surge = surge_;
    }
    // Base and surge threads wait on separate conditions, so that a wake-up meant for a job never
    // lands on a surge thread that may not take it.
    cv_.notify_one();
    if (surge) surge_cv_.notify_one();
  }

  void SetSurge(bool on) {
    {
      std::lock_guard lock(mu_);
      if (surge_ == on) return;
      surge_ = on;
    }
    if (on) surge_cv_.notify_all();
  }

  // Whether the calling thread is a surge thread of some pool (for a job's own accounting).
  static bool InSurgeThread() { return SurgeFlag(); }

  // Returns once every job queued so far (and any they queued) has finished.
  void Wait() {
    std::unique_lock lock(mu_);
    idle_cv_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  static bool& SurgeFlag() {
    thread_local bool surge = false;
    return surge;
  }

  void Main(bool surge_thread) {
    SurgeFlag() = surge_thread;
    std::unique_lock lock(mu_);
    for (;;) {
      (surge_thread ? surge_cv_ : cv_).wait(lock, [&] {
        return stopping_ || (!jobs_.empty() && (!surge_thread || surge_));
      });
      if (stopping_ && (jobs_.empty() || surge_thread)) return;
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      job = nullptr;  // release captures outside the lock
      lock.lock();
      if (--pending_ == 0) idle_cv_.notify_all();
    }
  }

  const int base_;
  std::mutex mu_;
  std::condition_variable cv_, surge_cv_, idle_cv_;
  std::deque<std::function<void()>> jobs_;
  size_t pending_ = 0;
  bool surge_ = false;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace hubfs::cache
