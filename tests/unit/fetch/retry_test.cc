// Retry policy: which answers are retried, how long the waits are, and what the server may ask for.
#include "fetch/retry.h"

#include <gtest/gtest.h>

#include <chrono>

namespace hubfs::fetch {
namespace {

using std::chrono::milliseconds;

TEST(Retry, RetryableStatusTable) {
  struct Row {
    long status;
    bool retry;
  };
  const Row rows[] = {
      {408, true},  {429, true},  {500, true},  {502, true},  {503, true},  {504, true},
      {200, false}, {204, false}, {206, false}, {301, false}, {302, false}, {304, false},
      {400, false}, {401, false}, {403, false}, {404, false}, {410, false}, {416, false},
      {0, false},   {-1, false},
  };
  for (const auto& r : rows) EXPECT_EQ(IsRetryableStatus(r.status), r.retry) << "status " << r.status;
}

TEST(Retry, RetryableCurlCodes) {
  // libcurl's stable numeric codes: 0 OK, 3 URL_MALFORMAT, 6 COULDNT_RESOLVE_HOST, 7 COULDNT_CONNECT,
  // 28 OPERATION_TIMEDOUT, 52 GOT_NOTHING, 56 RECV_ERROR, 60 PEER_FAILED_VERIFICATION.
  EXPECT_FALSE(IsRetryableCurlCode(0));
  EXPECT_FALSE(IsRetryableCurlCode(3));
  EXPECT_TRUE(IsRetryableCurlCode(6));
  EXPECT_TRUE(IsRetryableCurlCode(7));
  EXPECT_TRUE(IsRetryableCurlCode(28));
  EXPECT_TRUE(IsRetryableCurlCode(52));
  EXPECT_TRUE(IsRetryableCurlCode(56));
  EXPECT_FALSE(IsRetryableCurlCode(60));  // a bad certificate does not get better by retrying
}

TEST(Retry, BackoffWithinQuarterToCeilingAndCapped) {
  RetryPolicy p;  // base 200 ms, cap 4 s
  for (int attempt = 1; attempt <= 40; ++attempt) {
    const long long ceiling = std::min<long long>(p.cap.count(), p.base.count() << std::min(attempt - 1, 20));
    long long lo = 1LL << 60, hi = 0;
    for (int i = 0; i < 300; ++i) {
      const auto d = BackoffDelay(p, attempt, -1);
      ASSERT_GE(d.count(), ceiling / 4) << "attempt " << attempt;
      ASSERT_LE(d.count(), ceiling) << "attempt " << attempt;
      lo = std::min<long long>(lo, d.count());
      hi = std::max<long long>(hi, d.count());
    }
    EXPECT_LT(lo, hi) << "attempt " << attempt << ": no jitter";
  }
  // The ceiling doubles: 200, 400, 800, 1600, 3200, then the 4 s cap.
  EXPECT_LE(BackoffDelay(p, 1, -1), milliseconds(200));
  EXPECT_LE(BackoffDelay(p, 100000, -1), milliseconds(4000));
  EXPECT_GE(BackoffDelay(p, 100000, -1), milliseconds(1000));
}

TEST(Retry, BackoffOddAttemptsAreSafe) {
  RetryPolicy p;
  for (int attempt : {0, -5, 1 << 30}) {
    const auto d = BackoffDelay(p, attempt, -1);
    EXPECT_GE(d.count(), 0) << attempt;
    EXPECT_LE(d, p.cap) << attempt;
  }
}

TEST(Retry, BackoffCustomPolicy) {
  RetryPolicy p;
  p.base = milliseconds(10);
  p.cap = milliseconds(35);
  for (int i = 0; i < 200; ++i) {
    const auto d3 = BackoffDelay(p, 3, -1);  // ceiling 40 capped to 35
    EXPECT_GE(d3.count(), 35 / 4);
    EXPECT_LE(d3.count(), 35);
  }
}

TEST(Retry, ServerHintWinsAndIsCapped) {
  RetryPolicy p;
  EXPECT_EQ(BackoffDelay(p, 1, 1500), milliseconds(1500));   // longer than the 200 ms backoff
  EXPECT_EQ(BackoffDelay(p, 5, 10), milliseconds(10));       // shorter than the backoff too
  EXPECT_EQ(BackoffDelay(p, 1, 0), milliseconds(0));
  EXPECT_EQ(BackoffDelay(p, 1, 10'000'000), p.max_server_wait);
  p.max_server_wait = milliseconds(2000);
  EXPECT_EQ(BackoffDelay(p, 1, 6000), milliseconds(2000));
}

TEST(Retry, RetryAfterSeconds) {
  EXPECT_EQ(ServerRetryHintMs("0", ""), 1000);
  EXPECT_EQ(ServerRetryHintMs("3", ""), 4000);
  EXPECT_EQ(ServerRetryHintMs("120", ""), 121000);
}

TEST(Retry, RetryAfterHttpDateAndJunkIgnored) {
  EXPECT_EQ(ServerRetryHintMs("Wed, 21 Oct 2015 07:28:00 GMT", ""), -1);
  EXPECT_EQ(ServerRetryHintMs("", ""), -1);
  EXPECT_EQ(ServerRetryHintMs("-3", ""), -1);
  EXPECT_EQ(ServerRetryHintMs("1.5", ""), -1);
  EXPECT_EQ(ServerRetryHintMs("99999999999999999999", ""), -1);  // absurd: not a usable hint
}

TEST(Retry, RateLimitHeader) {
  EXPECT_EQ(ServerRetryHintMs("", "\"api\";r=0;t=5"), 6000);
  EXPECT_EQ(ServerRetryHintMs("", "\"api\";r=0;t=0"), 1000);
  // Requests remain: the header says nothing about waiting.
  EXPECT_EQ(ServerRetryHintMs("", "\"api\";r=3;t=5"), -1);
  EXPECT_EQ(ServerRetryHintMs("", "garbage"), -1);
  EXPECT_EQ(ServerRetryHintMs("", "\"api\";r=0"), -1);
  // RateLimit wins when it says wait; Retry-After is the fallback when it does not.
  EXPECT_EQ(ServerRetryHintMs("2", "\"api\";r=0;t=5"), 6000);
  EXPECT_EQ(ServerRetryHintMs("2", "\"api\";r=7;t=5"), 3000);
}

}  // namespace
}  // namespace hubfs::fetch
