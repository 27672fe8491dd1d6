// Block GETs received straight into the caller's buffer, against a scripted loopback HTTP server:
// bytes, reuse of connections (and replacing ones the server dropped), the fallback to libcurl for
// framings the direct path does not decode, and every failure ending as an error in bounded time.
#include "fetch/direct_http.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "fetch/http_client.h"

namespace hubfs::fetch {
namespace {

using Clock = std::chrono::steady_clock;

// What the server does with one request.
struct Reply {
  std::string bytes;           // sent as is
  bool close_after = false;    // close the connection once sent
  int stall_ms = 0;            // then wait this long before the next step (the client may give up)
};
// Request text, the index of the connection it came on, the index of the request on it.
using Script = std::function<Reply(const std::string& request, int conn, int nth)>;

// Serves connections one after another on 127.0.0.1, each until the client or the script ends it.
class ScriptedServer {
 public:
  explicit ScriptedServer(Script script) : script_(std::move(script)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::string Url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  int connections() const { return connections_.load(); }
  std::vector<std::string> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void Run() {
    for (int conn = 0; !stop_; ++conn) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      ++connections_;
      std::string buf;
      for (int nth = 0; !stop_; ++nth) {
        size_t end;
        while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
          char tmp[4096];
          const ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
          if (n <= 0) break;
          buf.append(tmp, static_cast<size_t>(n));
        }
        if (end == std::string::npos) break;
        const std::string request = buf.substr(0, end + 4);
        buf.erase(0, end + 4);
        {
          std::lock_guard lock(mu_);
          requests_.push_back(request);
        }
        const Reply r = script_(request, conn, nth);
        if (!r.bytes.empty()) (void)!::send(c, r.bytes.data(), r.bytes.size(), MSG_NOSIGNAL);
        if (r.stall_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(r.stall_ms));
        if (r.close_after) break;
      }
      ::close(c);
    }
  }

  Script script_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  mutable std::mutex mu_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

std::string Pattern(size_t n, size_t seed = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 9)) & 0xff);
  return s;
}

// "bytes=A-B" of the request, as numbers.
std::pair<size_t, size_t> RangeOf(const std::string& request) {
  const size_t at = request.find("Range: bytes=");
  if (at == std::string::npos) return {0, 0};
  unsigned long long a = 0, b = 0;
  std::sscanf(request.c_str() + at, "Range: bytes=%llu-%llu", &a, &b);
  return {static_cast<size_t>(a), static_cast<size_t>(b)};
}

std::string Partial(const std::string& file, const std::string& request, const std::string& extra_headers = "") {
  const auto [a, b] = RangeOf(request);
  return "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes " + std::to_string(a) + "-" + std::to_string(b) + "/" +
         std::to_string(file.size()) + "\r\nContent-Length: " + std::to_string(b - a + 1) + "\r\n" + extra_headers +
         "\r\n" + file.substr(a, b - a + 1);
}

HttpOptions FastOptions() {
  HttpOptions o;
  o.stall_timeout_s = 1;
  o.total_timeout_ms = 5000;
  o.connect_timeout_ms = 2000;
  return o;
}

HttpRequest BlockGet(const std::string& url, std::string* sink, size_t begin, size_t len) {
  HttpRequest r;
  r.url = url;
  r.range_begin = static_cast<int64_t>(begin);
  r.range_end = static_cast<int64_t>(begin + len - 1);
  r.sink = sink->data();
  r.sink_capacity = len;
  r.headers = {"Accept-Encoding: identity"};
  r.direct = true;
  return r;
}

TEST(DirectHttp, BodyLandsInTheSinkAndConnectionsAreReused) {
  const std::string file = Pattern(3 << 20);
  ScriptedServer server([&](const std::string& req, int, int) { return Reply{Partial(file, req)}; });
  HttpClient client(FastOptions());
  for (size_t i = 0; i < 3; ++i) {
    std::string sink(1 << 20, 'x');
    auto r = client.Perform(BlockGet(server.Url("/obj?sig=1"), &sink, i << 20, 1 << 20), nullptr);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(r->status, 206);
    EXPECT_EQ(r->body_bytes, 1u << 20);
    EXPECT_EQ(r->Header("content-range"), "bytes " + std::to_string(i << 20) + "-" +
                                              std::to_string(((i + 1) << 20) - 1) + "/" + std::to_string(file.size()));
    EXPECT_TRUE(sink == file.substr(i << 20, 1 << 20)) << "block " << i;
  }
  EXPECT_EQ(server.connections(), 1);  // keep-alive: one connection for the three
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[1].rfind("GET /obj?sig=1 HTTP/1.1\r\n", 0), 0u) << reqs[1];
  EXPECT_NE(reqs[1].find("Host: 127.0.0.1:"), std::string::npos);
  EXPECT_NE(reqs[1].find("Range: bytes=1048576-2097151\r\n"), std::string::npos);
  EXPECT_EQ(reqs[1].find("Authorization"), std::string::npos);
}

TEST(DirectHttp, HeadAndBodyInOnePacketAndInterimAnswers) {
  const std::string file = Pattern(100);
  ScriptedServer server([&](const std::string& req, int, int) {
    return Reply{"HTTP/1.1 100 Continue\r\n\r\n" + Partial(file, req)};
  });
  HttpClient client(FastOptions());
  std::string sink(10, 'x');
  auto r = client.Perform(BlockGet(server.Url("/o"), &sink, 7, 10), nullptr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(sink, file.substr(7, 10));
}

TEST(DirectHttp, ConnectionsTheServerDroppedAreReplaced) {
  const std::string file = Pattern(1 << 16);
  // Connection 0: answers once, then closes (without saying so). Connection 1: answers once, then
  // reads the next request and closes without answering (the race a keep-alive timeout causes).
  ScriptedServer server([&](const std::string& req, int conn, int nth) {
    if (conn == 0) return Reply{Partial(file, req), /*close_after=*/true};
    if (conn == 1 && nth == 1) return Reply{"", /*close_after=*/true};
    return Reply{Partial(file, req)};
  });
  HttpClient client(FastOptions());
  for (size_t i = 0; i < 3; ++i) {
    std::string sink(4096, 'x');
    auto r = client.Perform(BlockGet(server.Url("/o"), &sink, i * 4096, 4096), nullptr);
    ASSERT_TRUE(r.ok()) << "request " << i << ": " << r.error().ToString();
    EXPECT_EQ(sink, file.substr(i * 4096, 4096)) << "request " << i;
  }
  EXPECT_EQ(server.connections(), 3);
  EXPECT_EQ(server.requests().size(), 4u);  // one request was dropped unanswered and sent again
}

TEST(DirectHttp, ConnectionCloseIsHonoured) {
  const std::string file = Pattern(8192);
  ScriptedServer server([&](const std::string& req, int, int) {
    return Reply{Partial(file, req, "Connection: close\r\n"), /*close_after=*/false, /*stall_ms=*/0};
  });
  HttpClient client(FastOptions());
  for (int i = 0; i < 2; ++i) {
    std::string sink(100, 'x');
    auto r = client.Perform(BlockGet(server.Url("/o"), &sink, 0, 100), nullptr);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(sink, file.substr(0, 100));
  }
  // The server kept the first connection open, but the client said goodbye as asked.
  EXPECT_EQ(server.connections(), 2);
}

TEST(DirectHttp, ChunkedAnswersAreLeftToLibcurl) {
  const std::string file = Pattern(5000);
  auto& fallbacks = metrics::Get("fetch.direct.fallbacks");
  const uint64_t before = fallbacks.Get();
  ScriptedServer server([&](const std::string& req, int, int) {
    const auto [a, b] = RangeOf(req);
    const std::string body = file.substr(a, b - a + 1);
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", body.size() - 10);
    return Reply{"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes " + std::to_string(a) + "-" +
                 std::to_string(b) + "/5000\r\nTransfer-Encoding: chunked\r\n\r\n" + size +
                 body.substr(0, body.size() - 10) + "\r\na\r\n" + body.substr(body.size() - 10) + "\r\n0\r\n\r\n"};
  });
  HttpClient client(FastOptions());
  std::string sink(1000, 'x');
  auto r = client.Perform(BlockGet(server.Url("/o"), &sink, 100, 1000), nullptr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->body_bytes, 1000u);
  EXPECT_EQ(sink, file.substr(100, 1000));
  EXPECT_EQ(fallbacks.Get(), before + 1);
  EXPECT_EQ(server.requests().size(), 2u);  // asked again through libcurl
}

TEST(DirectHttp, ALongerBodyThanTheBlockIsAnErrorAndNothingOverflows) {
  ScriptedServer server([&](const std::string&, int, int) {
    return Reply{"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-99/200\r\nContent-Length: 200\r\n\r\n" +
                 std::string(200, 'z')};
  });
  HttpClient client(FastOptions());
  std::string sink(200, 'x');  // the request asks for 100: the rest is a guard
  HttpRequest req = BlockGet(server.Url("/o"), &sink, 0, 100);
  auto r = client.Perform(req, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("larger"), std::string::npos) << r.error().ToString();
  EXPECT_EQ(sink, std::string(200, 'x'));
}

TEST(DirectHttp, ABodyCutShortIsARetryableError) {
  ScriptedServer server([&](const std::string&, int, int) {
    return Reply{"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-999/1000\r\nContent-Length: 1000\r\n\r\n" +
                     std::string(500, 'z'),
                 /*close_after=*/true};
  });
  HttpClient client(FastOptions());
  std::string sink(1000, 'x');
  auto r = client.Perform(BlockGet(server.Url("/o"), &sink, 0, 1000), nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kIo);
  EXPECT_EQ(r.error().curl_code, CURLE_PARTIAL_FILE);
}

TEST(DirectHttp, AStalledBodyTimesOutWithinTheStallLimit) {
  ScriptedServer server([&](const std::string&, int, int) {
    return Reply{"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-999/1000\r\nContent-Length: 1000\r\n\r\n" +
                     std::string(10, 'z'),
                 /*close_after=*/true, /*stall_ms=*/1500};
  });
  HttpClient client(FastOptions());  // stall limit 1 s
  std::string sink(1000, 'x');
  const auto t0 = Clock::now();
  auto r = client.Perform(BlockGet(server.Url("/o"), &sink, 0, 1000), nullptr);
  const auto took = Clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  EXPECT_EQ(r.error().curl_code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_GE(took, std::chrono::milliseconds(900));
  EXPECT_LT(took, std::chrono::milliseconds(2500));
}

TEST(DirectHttp, TheCallersDeadlineEndsAWaitForAnAnswer) {
  ScriptedServer server([&](const std::string&, int, int) { return Reply{"", /*close_after=*/true, 1200}; });
  HttpClient client(FastOptions());
  std::string sink(1000, 'x');
  CancelToken deadline(Clock::now() + std::chrono::milliseconds(300));
  const auto t0 = Clock::now();
  auto r = client.Perform(BlockGet(server.Url("/o"), &sink, 0, 1000), &deadline);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(1500));

  CancelToken cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    cancel.Cancel();
  });
  auto c = client.Perform(BlockGet(server.Url("/o"), &sink, 0, 1000), &cancel);
  canceller.join();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().kind, ErrorKind::kCancelled);
  EXPECT_EQ(sink, std::string(1000, 'x'));
}

TEST(DirectHttp, ErrorAnswersKeepTheirBodyOutOfTheSink) {
  ScriptedServer server([&](const std::string&, int, int) {
    return Reply{"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\nX-Cache: Error\r\n\r\nexpired"};
  });
  HttpClient client(FastOptions());
  std::string sink(100, 'x');
  for (int i = 0; i < 2; ++i) {
    auto r = client.Perform(BlockGet(server.Url("/o"), &sink, 0, 100), nullptr);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(r->status, 403);
    EXPECT_EQ(r->body, "expired");
    EXPECT_EQ(r->body_bytes, 0u);
    EXPECT_EQ(r->Header("x-cache"), "Error");
  }
  EXPECT_EQ(sink, std::string(100, 'x'));
  EXPECT_EQ(server.connections(), 1);  // the error body was read to its end: the connection stays usable
}

TEST(DirectHttp, AMalformedAnswerIsARetryableError) {
  ScriptedServer server([&](const std::string&, int, int) {
    return Reply{"HTTP/1.1 2x6 Nope\r\nContent-Length: 5\r\n\r\nhello", /*close_after=*/true};
  });
  HttpClient client(FastOptions());
  std::string sink(5, 'x');
  auto r = client.Perform(BlockGet(server.Url("/o"), &sink, 0, 5), nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kIo);
  EXPECT_EQ(r.error().curl_code, CURLE_WEIRD_SERVER_REPLY);
  EXPECT_EQ(sink, "xxxxx");
}

TEST(DirectHttp, RequestsWithCredentialsNeverTakeTheDirectPath) {
  DirectHttp direct(FastOptions());
  std::string sink(10, 'x');
  HttpRequest req = BlockGet("http://127.0.0.1:1/o", &sink, 0, 10);
  req.authorization = "Bearer hf_secret";
  EXPECT_FALSE(direct.Perform(req, nullptr).has_value());
  req.authorization.clear();
  req.sink = nullptr;
  EXPECT_FALSE(direct.Perform(req, nullptr).has_value());
}

}  // namespace
}  // namespace hubfs::fetch
