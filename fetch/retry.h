// Retry policy: which failures are worth another attempt, and how long to wait before it.
// Exponential backoff with full jitter (base * 2^n, capped), Retry-After / RateLimit "t" honoured
// on 429 and 503; every wait is clipped to the caller's deadline, so retries never outlive a FUSE
// request's time bound.
#pragma once

#include <chrono>
#include <string>

namespace hubfs::fetch {

struct RetryPolicy {
  int max_attempts = 5;                                  // Python's http_backoff makes 5 retries
  std::chrono::milliseconds base{200};                   // first wait ~200 ms
  std::chrono::milliseconds cap{4000};                   // waits double up to 4 s
  std::chrono::milliseconds max_server_wait{30000};      // cap on Retry-After / RateLimit t
};

bool IsRetryableStatus(long status);
bool IsRetryableCurlCode(int curl_code);

// The wait before attempt `attempt` (1-based count of failures so far). `server_hint_ms` >= 0 is
// what the server asked for (Retry-After or RateLimit t); it wins over backoff.
std::chrono::milliseconds BackoffDelay(const RetryPolicy& p, int attempt, long server_hint_ms);

// Parses Retry-After (integer seconds; HTTP dates are ignored, as Python does) and the IETF
// RateLimit header (`"api";r=0;t=12`). Returns -1 when neither says anything usable.
long ServerRetryHintMs(const std::string& retry_after, const std::string& ratelimit);

}  // namespace hubfs::fetch
