// One HTTP/1.1 connection over which a range GET's body is received straight into the caller's
// buffer. Internal to the fetch library (HttpClient uses it for requests with a sink).
//
// Why: libcurl hands a body to its write callback out of its own receive buffer, so every byte
// of a range GET is copied twice on the client: the kernel's copy out of the socket (or OpenSSL's
// decryption) into curl's buffer, then a memcpy into the block buffer. On a cold read that second
// copy was 15% of the daemon's CPU, on a machine whose cores the network path and the FUSE path
// already share. Here libcurl still resolves, connects, does TLS and its certificate checks
// (CURLOPT_CONNECT_ONLY); the request is written with curl_easy_send, the status line and headers
// are parsed from a small look-ahead buffer, and the body goes from curl_easy_recv (a recv(2) or
// SSL_read) into the block buffer: one copy, as when curl writes to a file.
//
// What it speaks: HTTP/1.1 only (ALPN offers http/1.1), bodies framed by Content-Length, chunked
// transfer coding, or the connection's end; 1xx interim answers skipped; keep-alive unless the
// server says close. Limits: headers at most kMaxHeaderBytes; an error body (non-2xx) keeps its
// first 64 KiB, as the libcurl path does, and one longer than kMaxDiscardBytes closes the
// connection rather than draining it. Timeouts as in HttpOptions: connect, stall (no byte for
// stall_timeout_s), total; the CancelToken is polled at least every 100 ms while waiting.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/cancel.h"
#include "common/status.h"
#include "fetch/http_client.h"

namespace hubfs::fetch::internal {

// The parts of an http(s) URL a direct request needs.
struct DirectTarget {
  std::string origin;       // "scheme://host:port", the key of a kept-alive connection
  std::string host_header;  // "host" or "host:port" when the port is not the scheme's default
  std::string request_uri;  // "/path?query"
};

// The target of `url`, or false for a URL the direct path does not take (not http or https,
// credentials in it, unparsable).
bool ParseDirectTarget(const std::string& url, DirectTarget* out);

// Whether the environment configures a proxy (libcurl's http_proxy, https_proxy, all_proxy and
// their upper-case forms): then every request takes the libcurl path, which honours it.
bool ProxyConfigured();

class DirectConnection {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kMaxHeaderBytes = 64 * 1024;
  static constexpr size_t kMaxDiscardBytes = 1 << 20;

  // Connects to target.origin (DNS, TCP, TLS) within the connect timeout and `deadline`.
  static Result<std::unique_ptr<DirectConnection>> Open(const DirectTarget& target, const HttpOptions& options,
                                                        const CancelToken* cancel, Clock::time_point deadline);
  ~DirectConnection();
  DirectConnection(const DirectConnection&) = delete;
  DirectConnection& operator=(const DirectConnection&) = delete;

  // Sends `req` (a GET) and reads its answer: a 2xx body into req.sink (more than
  // req.sink_capacity fails, as in the libcurl path), any other body into response.body (its
  // first 64 KiB). On an error, *before_response is true when not one byte of an answer arrived
  // (a kept-alive connection the server had closed: the request can go again on a new one).
  Result<HttpResponse> RoundTrip(const DirectTarget& target, const HttpRequest& req, const CancelToken* cancel,
                                 Clock::time_point deadline, bool* before_response);

  // Whether another request may follow on this connection (the last answer was read exactly,
  // the server did not ask to close).
  bool reusable() const { return reusable_; }
  // Whether an idle connection still looks open (nothing to read, no hang-up).
  bool IdleAndOpen() const;
  const std::string& origin() const { return origin_; }

 private:
  DirectConnection(void* curl, long fd, std::string origin, const HttpOptions& options);

  // Waits until the socket is ready for `events`, the deadline, the stall limit or cancellation.
  Status Wait(short events, const CancelToken* cancel, Clock::time_point deadline);
  Status SendAll(const std::string& data, const CancelToken* cancel, Clock::time_point deadline);
  // Up to n bytes from the socket into dst; 0 at the end of the stream.
  Result<size_t> RecvSome(char* dst, size_t n, const CancelToken* cancel, Clock::time_point deadline);
  // One line (without CRLF) through the look-ahead buffer; at most kMaxHeaderBytes.
  Status ReadLine(std::string* line, const CancelToken* cancel, Clock::time_point deadline);
  // Exactly n body bytes into dst (nullptr: discarded), look-ahead first, then the socket.
  Status ReadBody(char* dst, size_t n, const CancelToken* cancel, Clock::time_point deadline);

  void* curl_;
  long fd_;
  std::string origin_;
  const HttpOptions& options_;
  bool reusable_ = false;
  bool got_bytes_ = false;  // of the current answer
  Clock::time_point last_progress_;
  std::vector<char> ahead_;  // look-ahead buffer: bytes [ahead_pos_, ahead_end_) not yet parsed
  size_t ahead_pos_ = 0;
  size_t ahead_end_ = 0;
};

}  // namespace hubfs::fetch::internal
