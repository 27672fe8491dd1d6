// A fixed set of threads running queued jobs in FIFO order: the cache's background disk writers and
// whole-file verifiers. Plain std::thread + mutex + condition variable on purpose: every handoff is
// visible to ThreadSanitizer (oneTBB's scheduler lives in an uninstrumented libtbb, where TSan
// reports its task handoffs as races), and Wait() gives tests and shutdown a clean barrier.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

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
  // `name`: the threads' name in top -H, perf and /proc (at most 15 characters).
  explicit WorkerPool(int threads, Priority priority = Priority::kNormal, const char* name = "hubfs-worker") {
    for (int i = 0; i < std::max(1, threads); ++i)
      threads_.emplace_back([this, priority, name] {
        ::pthread_setname_np(::pthread_self(), name);
        if (priority == Priority::kIdle) {
          sched_param p{};
          ::sched_setscheduler(0, SCHED_IDLE, &p);  // best effort: a failure leaves normal priority
        }
        Main();
      });
  }
  ~WorkerPool() {
    Wait();
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Run(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(job));
      ++pending_;
    }
    cv_.notify_one();
  }

  // Returns once every job queued so far (and any they queued) has finished.
  void Wait() {
    std::unique_lock lock(mu_);
    idle_cv_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  void Main() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      job = nullptr;  // release captures outside the lock
      lock.lock();
      if (--pending_ == 0) idle_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<void()>> jobs_;
  size_t pending_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace hubfs::cache
