// The cache's worker pools: every job runs, Wait() is a barrier, idle pools run at idle priority;
// SetThreadNice changes the calling thread's priority where permitted.
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
