// The cache's worker pools: every job runs, Wait() is a barrier, surge threads work only during a
// surge, idle pools run at idle priority;
// SetThreadNice changes the calling thread's priority where permitted.
#include "cache/worker_pool.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace hubfs::cache {
namespace {

TEST(WorkerPool, RunsEveryJobAndWaitIsABarrier) {
  std::atomic<int> done{0};
  WorkerPool pool(3);
  for (int i = 0; i < 100; ++i) pool.Run([&] { done.fetch_add(1); });
  pool.Wait();
  EXPECT_EQ(done.load(), 100);
}

// Surge threads take jobs only while the surge is on; base threads always do.
TEST(WorkerPool, SurgeThreadsWorkOnlyDuringASurge) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> started{0};
  std::atomic<bool> b_in_surge{false};
  std::atomic<int> surge_jobs{0};  // jobs that ran on a surge thread
  const auto blocker = [&] {
    started.fetch_add(1);
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return release; });
  };
  {
    WorkerPool pool(1, WorkerPool::Priority::kNormal, "t-surge", /*surge_threads=*/1);
    pool.Run(blocker);  // occupies the base thread
    for (int i = 0; i < 200 && started.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_EQ(started.load(), 1);
    std::atomic<bool> b_ran{false};
    pool.Run([&] {
      b_in_surge = WorkerPool::InSurgeThread();
      if (b_in_surge) surge_jobs.fetch_add(1);
      b_ran = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    EXPECT_FALSE(b_ran.load()) << "a surge thread took a job without a surge";
    pool.SetSurge(true);
    for (int i = 0; i < 400 && !b_ran.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_TRUE(b_ran.load()) << "the surge thread did not take the waiting job";
    EXPECT_TRUE(b_in_surge.load());
    EXPECT_EQ(surge_jobs.load(), 1);
    pool.SetSurge(false);
    std::atomic<bool> c_ran{false};
    pool.Run([&] {
      if (WorkerPool::InSurgeThread()) surge_jobs.fetch_add(1);
      c_ran = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    EXPECT_FALSE(c_ran.load()) << "the surge ended but its thread took another job";
    {
      std::lock_guard lock(mu);
      release = true;
    }
    cv.notify_all();
    pool.Wait();  // the base thread runs what is left
    EXPECT_TRUE(c_ran.load());
    EXPECT_EQ(surge_jobs.load(), 1);
  }
  EXPECT_FALSE(WorkerPool::InSurgeThread());
}

TEST(WorkerPool, IdleThreadsRunAtIdlePriority) {
  int policy = -1;
  WorkerPool idle(1, WorkerPool::Priority::kIdle, "t-idle");
  idle.Run([&] { policy = sched_getscheduler(0); });
  idle.Wait();
  EXPECT_EQ(policy, SCHED_IDLE);  // lowering priority needs no privilege
}

TEST(SetThreadNice, RaisesWherePermittedAndAlwaysRestores) {
  std::thread([] {
    const auto nice_now = [] { return getpriority(PRIO_PROCESS, static_cast<id_t>(gettid())); };
    ASSERT_EQ(nice_now(), 0);
    const bool permitted = SetThreadNice(-5);  // needs CAP_SYS_NICE (root, usually)
    EXPECT_EQ(nice_now(), permitted ? -5 : 0);
    EXPECT_TRUE(SetThreadNice(0));  // lowering it back is always allowed
    EXPECT_EQ(nice_now(), 0);
    EXPECT_TRUE(SetThreadNice(3));
    EXPECT_EQ(nice_now(), 3);
  }).join();
}

}  // namespace
}  // namespace hubfs::cache
