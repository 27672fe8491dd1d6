// The cache's worker pools: every job runs, Wait() is a barrier, and each pool's threads run at the
// scheduling priority it asked for (where the process is allowed to set it).
#include "cache/worker_pool.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
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

TEST(WorkerPool, ThreadsRunAtTheirPriority) {
  int policy = -1, nice_high = 0, nice_normal = 0;
  {
    WorkerPool idle(1, WorkerPool::Priority::kIdle, "t-idle");
    idle.Run([&] { policy = sched_getscheduler(0); });
    idle.Wait();
  }
  EXPECT_EQ(policy, SCHED_IDLE);  // lowering priority needs no privilege
  {
    WorkerPool normal(1);
    normal.Run([&] { nice_normal = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid())); });
    normal.Wait();
    WorkerPool high(1, WorkerPool::Priority::kHigh, "t-high");
    high.Run([&] { nice_high = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid())); });
    high.Wait();
  }
  // Raising it needs CAP_SYS_NICE (root, usually): then the writers run at nice -5, else unchanged.
  bool permitted = false;
  std::thread([&] { permitted = setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), WorkerPool::kHighNice) == 0; })
      .join();
  EXPECT_EQ(nice_high, permitted ? WorkerPool::kHighNice : nice_normal);
}

}  // namespace
}  // namespace hubfs::cache
