// Retry policy (see retry.h).
#include "fetch/retry.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <random>

namespace hubfs::fetch {

bool IsRetryableStatus(long status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

bool IsRetryableCurlCode(int code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
      return true;
    default:
      return false;
  }
}

std::chrono::milliseconds BackoffDelay(const RetryPolicy& p, int attempt, long server_hint_ms) {
  if (server_hint_ms >= 0) {
    return std::min(std::chrono::milliseconds(server_hint_ms), p.max_server_wait);
  }
  const int shift = std::clamp(attempt - 1, 0, 20);
  const long long ceiling = std::min<long long>(p.cap.count(), p.base.count() << shift);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // Full jitter, but never below a quarter of the step, so retries do not hammer a sick origin.
  std::uniform_int_distribution<long long> dist(ceiling / 4, std::max<long long>(ceiling, 1));
  return std::chrono::milliseconds(dist(rng));
}

long ServerRetryHintMs(const std::string& retry_after, const std::string& ratelimit) {
  // RateLimit: "api";r=0;t=12  -> wait t seconds (+1, as Python does) when r == 0.
  const size_t r = ratelimit.find(";r=");
  const size_t t = ratelimit.find(";t=");
  if (r != std::string::npos && t != std::string::npos) {
    const long remaining = std::strtol(ratelimit.c_str() + r + 3, nullptr, 10);
    const long secs = std::strtol(ratelimit.c_str() + t + 3, nullptr, 10);
    if (remaining == 0 && secs >= 0) return (secs + 1) * 1000;
  }
  if (!retry_after.empty() && std::all_of(retry_after.begin(), retry_after.end(), ::isdigit) &&
      retry_after.size() < 9) {
    return (std::strtol(retry_after.c_str(), nullptr, 10) + 1) * 1000;
  }
  return -1;
}

}  // namespace hubfs::fetch
