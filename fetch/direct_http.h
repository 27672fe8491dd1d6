// Range GETs whose body is received straight into the caller's buffer.
//
// Why: libcurl hands a body to its write callback out of its own receive buffer, so every byte of
// a block is copied once more (kernel -> libcurl's buffer -> the block) than a downloader writing
// to a file pays; on a cold read that copy was 14-15% of the daemon's CPU. Here libcurl still
// makes the connection (DNS, TCP, TLS, its timeouts: CURLOPT_CONNECT_ONLY), and this class speaks
// HTTP/1.1 on it with curl_easy_send/curl_easy_recv: it reads the response head into a small
// buffer, then receives the body directly into the block buffer.
//
// Scope, deliberately narrow: GET with a sink (a block fetch) to a URL without credentials (the
// Hub client uses it only for the cached CDN target of a file), no proxy configured in the
// environment, and a response whose body length is given by Content-Length (or that has no
// body). Anything else (a proxy, chunked or close-delimited framing) returns nullopt before a
// byte reaches the sink, and the caller performs the request with libcurl as usual.
//
// Connections are kept per origin (at most kMaxIdle idle ones) and reused only after a body was
// read to its end with keep-alive allowed. An idle connection the server has closed is noticed
// before reuse (it polls readable), and a reused one that ends before the first byte of an answer
// is replaced once by a fresh connection (GET is idempotent). Errors carry the curl code the
// libcurl path would have given (timeouts, resets, short bodies), so the retry policy is the same.
#pragma once

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/cancel.h"
#include "common/status.h"
#include "fetch/http_client.h"

namespace hubfs::fetch {

class DirectHttp {
 public:
  explicit DirectHttp(const HttpOptions& options) : options_(options) {}
  ~DirectHttp();
  DirectHttp(const DirectHttp&) = delete;
  DirectHttp& operator=(const DirectHttp&) = delete;

  // The response, an error, or nullopt: this request needs the libcurl path (nothing written to
  // the sink that a later answer would not overwrite).
  std::optional<Result<HttpResponse>> Perform(const HttpRequest& req, const CancelToken* cancel);

  // Whether the environment names a proxy libcurl would use (direct connections are then off).
  static bool ProxyConfigured();

 private:
  struct Conn;
  Conn* Take(const std::string& origin);
  void Keep(Conn* c);
  std::optional<Result<HttpResponse>> Exchange(Conn* c, const HttpRequest& req, const std::string& request_text,
                                               const CancelToken* cancel, bool* stale);

  static constexpr size_t kMaxIdle = 32;
  HttpOptions options_;
  std::mutex mu_;
  std::unordered_map<std::string, std::vector<Conn*>> idle_;  // by origin
  size_t idle_count_ = 0;
};

}  // namespace hubfs::fetch
