// The libcurl transport: one blocking Perform() per request, on easy handles taken from a pool so
// that keep-alive connections are reused across requests and threads. Redirects are never followed
// here: the Hub client follows them itself, so that it can read the headers of the 302 and so that
// the Authorization header can never travel to another origin. Timeouts: connect, stall (no bytes
// for N seconds), and a total deadline; cancellation is polled from the progress callback.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/cancel.h"
#include "common/status.h"

namespace hubfs::fetch {

struct HttpOptions {
  std::string user_agent = "hubfs/0.1";
  long connect_timeout_ms = 10000;
  long stall_timeout_s = 15;      // fewer than 1 byte/s for this long: the connection is replaced
  long total_timeout_ms = 60000;  // upper bound for one request, whatever the caller's deadline
  size_t max_string_body = 256u << 20;  // JSON listings larger than this are refused
};

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, POST
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string authorization;         // full header value ("Bearer ..."), sent only if non-empty
  std::string body;                  // POST body
  int64_t range_begin = -1;          // inclusive byte range; -1 = no Range header
  int64_t range_end = -1;
  // If set, the body is written here and a body longer than sink_capacity fails the request.
  char* sink = nullptr;
  size_t sink_capacity = 0;
};

struct HttpResponse {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased, last wins on lookup
  std::string body;       // when no sink was given
  size_t body_bytes = 0;  // bytes received (into body or sink)

  // The value of header `name` (lowercase), or "" when absent.
  std::string Header(std::string_view name) const;
  bool HasHeader(std::string_view name) const;
};

class HttpClient {
 public:
  explicit HttpClient(HttpOptions options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Transport errors (connect, timeout, reset, body overflow, cancellation) are Errors carrying the
  // curl code; any HTTP status, 4xx and 5xx included, is a successful Perform.
  Result<HttpResponse> Perform(const HttpRequest& request, const CancelToken* cancel) const;

  const HttpOptions& options() const { return options_; }

 private:
  void* Acquire() const;
  void Release(void* handle) const;

  HttpOptions options_;
  mutable std::mutex mu_;
  mutable std::vector<void*> idle_;  // CURL* easy handles with live connections
};

}  // namespace hubfs::fetch
