// The libcurl transport against a scripted server on 127.0.0.1: bytes into the sink, status,
// headers, keep-alive reuse, errors and their curl codes (which decide retries), timeouts and
// cancellation. The server writes exactly the bytes a test gives it (framing errors included),
// drip-fed where buffer edges matter.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fetch/http_client.h"

namespace hubfs::fetch {
namespace {

using Clock = std::chrono::steady_clock;

struct Reply {
  std::string bytes;         // written as is
  size_t drip = 0;           // >0: in pieces of this many bytes, 1 ms apart
  int hold_ms = 0;           // then wait this long (a stalled server)
  bool close_after = false;  // then close the connection
};
// (connection number, request number on that connection, request head) -> what to write.
using Handler = std::function<Reply(int conn, int nreq, const std::string& head)>;

class ScriptedServer {
 public:
  explicit ScriptedServer(Handler handler) : handler_(std::move(handler)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(listen_fd_, 64), 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : workers_) t.join();
    for (int fd : fds_) ::close(fd);
    ::close(listen_fd_);
  }
  std::string url(const std::string& path = "/file") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int connections() const { return connections_.load(); }
  std::vector<std::string> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      const int conn = connections_++;
      std::lock_guard lock(mu_);
      fds_.push_back(fd);
      workers_.emplace_back([this, fd, conn] { Serve(fd, conn); });
    }
  }
  void Serve(int fd, int conn) {
    std::string buf;
    for (int nreq = 0; !stop_; ++nreq) {
      size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        char tmp[4096];
        const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) return;
        buf.append(tmp, static_cast<size_t>(n));
      }
      const std::string head = buf.substr(0, end + 4);
      buf.erase(0, end + 4);
      {
        std::lock_guard lock(mu_);
        requests_.push_back(head);
      }
      const Reply r = handler_(conn, nreq, head);
      const size_t piece = r.drip ? r.drip : r.bytes.size();
      for (size_t off = 0; off < r.bytes.size(); off += piece) {
        if (::send(fd, r.bytes.data() + off, std::min(piece, r.bytes.size() - off), MSG_NOSIGNAL) < 0) return;
        if (r.drip) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      for (int waited = 0; waited < r.hold_ms && !stop_; waited += 10)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (r.close_after) {
        ::shutdown(fd, SHUT_RDWR);
        return;
      }
    }
  }

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  mutable std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> workers_;
  std::vector<std::string> requests_;
  std::thread acceptor_;
};

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 4096) & 0xff);
  return s;
}

std::string Answer206(const std::string& body, uint64_t first = 0, const std::string& extra = "") {
  return "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes " + std::to_string(first) + "-" +
         std::to_string(first + body.size() - 1) + "/99999999\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + extra + "\r\n" + body;
}

std::string EnvOrEmpty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

class HttpClientTest : public ::testing::Test {
 protected:
  HttpOptions Options() const {
    HttpOptions o;
    o.stall_timeout_s = 1;
    o.total_timeout_ms = 10000;
    return o;
  }
  // One range GET of `capacity` bytes into `sink`, from a server that answers with `reply`.
  Result<HttpResponse> GetFrom(const Reply& reply, std::string* sink, size_t capacity) const {
    ScriptedServer server([&](int, int, const std::string&) { return reply; });
    HttpClient client(Options());
    return client.Perform(RangeGet(server.url(), sink, capacity), nullptr);
  }
  // `n` range GETs of `body`, one after another on one client: each gets the bytes.
  void GetEach(const ScriptedServer& server, const std::string& body, int n) const {
    HttpClient client(Options());
    for (int i = 0; i < n; ++i) {
      std::string sink;
      auto r = client.Perform(RangeGet(server.url(), &sink, body.size()), nullptr);
      ASSERT_TRUE(r.ok()) << "request " << i << ": " << r.error().ToString();
      EXPECT_TRUE(sink == body);
    }
  }
  // A range GET of `capacity` bytes into `sink`.
  static HttpRequest RangeGet(const std::string& url, std::string* sink, size_t capacity, uint64_t first = 0) {
    sink->assign(capacity, '\x55');
    HttpRequest req;
    req.url = url;
    req.range_begin = static_cast<int64_t>(first);
    req.range_end = static_cast<int64_t>(first + capacity - 1);
    req.sink = sink->data();
    req.sink_capacity = capacity;
    req.headers = {"Accept-Encoding: identity"};
    return req;
  }
};

TEST_F(HttpClientTest, RangeBodyLandsInTheSinkWithItsHeaders) {
  const std::string body = Pattern(3 << 20);
  ScriptedServer server([&](int, int, const std::string&) { return Reply{Answer206(body, 4096), 0, 0, false}; });
  HttpClient client(Options());
  std::string sink;
  HttpRequest req = RangeGet(server.url("/a/b%20c?Expires=9&Signature=x"), &sink, body.size(), 4096);
  req.authorization = "Bearer hf_test";
  auto r = client.Perform(req, nullptr);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body_bytes, body.size());
  EXPECT_TRUE(sink == body);
  EXPECT_EQ(r->Header("content-range"), "bytes 4096-" + std::to_string(4096 + body.size() - 1) + "/99999999");
  const std::string head = server.requests().at(0);
  EXPECT_EQ(head.rfind("GET /a/b%20c?Expires=9&Signature=x HTTP/1.1\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("\r\nRange: bytes=4096-" + std::to_string(4096 + body.size() - 1) + "\r\n"), std::string::npos);
  EXPECT_NE(head.find("\r\nHost: 127.0.0.1:"), std::string::npos);
  EXPECT_NE(head.find("\r\nAuthorization: Bearer hf_test\r\n"), std::string::npos);
  EXPECT_NE(head.find("\r\nAccept-Encoding: identity\r\n"), std::string::npos);
}

TEST_F(HttpClientTest, KeptAliveConnectionCarriesTheNextRequests) {
  const std::string body = Pattern(64 << 10);
  ScriptedServer server([&](int, int, const std::string&) { return Reply{Answer206(body), 0, 0, false}; });
  HttpClient client(Options());
  for (int i = 0; i < 3; ++i) {
    std::string sink;
    auto r = client.Perform(RangeGet(server.url(), &sink, body.size()), nullptr);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_TRUE(sink == body);
  }
  EXPECT_EQ(server.connections(), 1);
}

TEST_F(HttpClientTest, ConnectionClosedByTheServerIsReplacedWithoutAnError) {
  const std::string body = Pattern(1000);
  // The first connection answers one request and then drops the next one unanswered (a server
  // whose keep-alive ran out just as the request left); later connections answer everything.
  ScriptedServer server([&](int conn, int nreq, const std::string&) {
    if (conn == 0 && nreq == 1) return Reply{"", 0, 0, true};
    return Reply{Answer206(body), 0, 0, false};
  });
  GetEach(server, body, 2);
  EXPECT_EQ(server.connections(), 2);
}

TEST_F(HttpClientTest, ChunkedBodyDripFedIsReassembled) {
  const std::string body = Pattern(70000);
  std::string wire =
      "HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\nContent-Range: bytes 0-69999/70000\r\n\r\n";
  const size_t sizes[] = {1, 4095, 4096, 20000, 41808};
  size_t off = 0;
  for (size_t n : sizes) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "%zx;ext=1\r\n", n);
    wire += hex + body.substr(off, n) + "\r\n";
    off += n;
  }
  ASSERT_EQ(off, body.size());
  wire += "0\r\nX-Trailer: yes\r\n\r\n";
  ScriptedServer server([&](int, int, const std::string&) { return Reply{wire, 997, 0, false}; });
  HttpClient client(Options());
  for (int i = 0; i < 2; ++i) {  // the trailer was consumed: the connection is reused cleanly
    std::string sink;
    auto r = client.Perform(RangeGet(server.url(), &sink, body.size()), nullptr);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(r->body_bytes, body.size());
    EXPECT_TRUE(sink == body);
  }
  EXPECT_EQ(server.connections(), 1);
}

TEST_F(HttpClientTest, BodyFramedByTheConnectionsEnd) {
  const std::string body = Pattern(300000);
  std::string sink;
  const std::string head = "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
  auto r = GetFrom(Reply{head + body, 0, 0, true}, &sink, body.size());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body_bytes, body.size());
  EXPECT_TRUE(sink == body);
}

TEST_F(HttpClientTest, TruncatedBodyIsAPartialFileError) {
  const std::string body = Pattern(100000);
  const std::string full = Answer206(body);
  std::string sink;
  auto r = GetFrom(Reply{full.substr(0, full.size() - 50000), 0, 0, true}, &sink, body.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kIo);
  EXPECT_EQ(r.error().curl_code, CURLE_PARTIAL_FILE);
}

TEST_F(HttpClientTest, BodyLongerThanTheSinkFailsTheRequest) {
  const std::string body = Pattern(5000);
  std::string sink;
  auto r = GetFrom(Reply{"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + body, 0, 0, false}, &sink, 4000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kIo);
  EXPECT_NE(r.error().message.find("larger"), std::string::npos) << r.error().message;
  EXPECT_EQ(sink.size(), 4000u);
}

TEST_F(HttpClientTest, ErrorAnswerKeepsItsBodyOutOfTheSink) {
  std::string sink;
  const std::string answer =
      "HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nContent-Length: 15\r\n\r\nEntry not found";
  auto r = GetFrom(Reply{answer, 0, 0, false}, &sink, 1000);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->Header("x-error-code"), "EntryNotFound");
  EXPECT_EQ(r->body, "Entry not found");
  EXPECT_EQ(r->body_bytes, 0u);
  EXPECT_EQ(sink, std::string(1000, '\x55'));
}

TEST_F(HttpClientTest, RedirectIsReturnedNotFollowed) {
  std::string sink;
  const std::string answer =
      "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/cdn?x=1\r\nContent-Length: 5\r\n\r\nFound";
  auto r = GetFrom(Reply{answer, 0, 0, false}, &sink, 1000);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 302);
  EXPECT_EQ(r->Header("location"), "http://127.0.0.1:1/cdn?x=1");
}

TEST_F(HttpClientTest, InterimAnswerIsSkipped) {
  const std::string body = Pattern(2000);
  std::string sink;
  const std::string interim = "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n";
  auto r = GetFrom(Reply{interim + Answer206(body), 0, 0, false}, &sink, body.size());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 206);
  EXPECT_TRUE(sink == body);
}

TEST_F(HttpClientTest, StalledServerTimesOutInBoundedTime) {
  const std::string body = Pattern(100000);
  std::string sink;
  const auto t0 = Clock::now();
  auto r = GetFrom(Reply{Answer206(body).substr(0, 20000), 0, 5000, false}, &sink, body.size());
  const auto took = Clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().curl_code, CURLE_OPERATION_TIMEDOUT) << r.error().ToString();
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  // libcurl's low-speed check averages the rate over its last 5 s: a stall after a burst is
  // noticed 5-6 s later with a 1 s limit, well inside the 10 s total.
  EXPECT_LT(took, std::chrono::milliseconds(9000));
}

TEST_F(HttpClientTest, CancellationStopsAWaitingTransferPromptly) {
  ScriptedServer server([&](int, int, const std::string&) { return Reply{"", 0, 5000, false}; });
  HttpOptions o = Options();
  o.stall_timeout_s = 30;
  HttpClient client(o);
  CancelToken cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    cancel.Cancel();
  });
  std::string sink;
  const auto t0 = Clock::now();
  auto r = client.Perform(RangeGet(server.url(), &sink, 1000), &cancel);
  const auto took = Clock::now() - t0;
  canceller.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kCancelled) << r.error().ToString();
  EXPECT_LT(took, std::chrono::milliseconds(2000));
}

TEST_F(HttpClientTest, DripFedAnswerIsReassembled) {
  // Status line, headers and body cut at odd places: a header line across two reads, the body's
  // first bytes read along with the headers, the rest straight into the sink.
  const std::string body = Pattern(30000);
  std::string sink;
  auto r = GetFrom(Reply{Answer206(body, 0, "X-Long: " + std::string(500, 'v') + "\r\n"), 333, 0, false}, &sink,
                   body.size());
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->Header("x-long"), std::string(500, 'v'));
  EXPECT_EQ(r->body_bytes, body.size());
  EXPECT_TRUE(sink == body);
}

TEST_F(HttpClientTest, ConnectionCloseAnswerIsNotReused) {
  const std::string body = Pattern(4000);
  ScriptedServer server(
      [&](int, int, const std::string&) { return Reply{Answer206(body, 0, "Connection: close\r\n"), 0, 0, true}; });
  GetEach(server, body, 3);
  EXPECT_EQ(server.connections(), 3);
}

TEST_F(HttpClientTest, MalformedStatusLineIsAnError) {
  std::string sink;
  auto r = GetFrom(Reply{"HTTP/1.1 2x6 Partial\r\nContent-Length: 4\r\n\r\nabcd", 0, 0, true}, &sink, 4);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kIo);
  EXPECT_EQ(sink, std::string(4, '\x55'));
}

TEST_F(HttpClientTest, NothingAnsweredIsAnError) {
  std::string sink;
  auto r = GetFrom(Reply{"", 0, 0, true}, &sink, 100);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kIo);
  EXPECT_EQ(r.error().curl_code, CURLE_GOT_NOTHING) << r.error().ToString();
}

TEST_F(HttpClientTest, ProxyFromTheEnvironmentCarriesBlockFetches) {
  // A proxy named in the environment gets every request, block fetches included: the scripted
  // server plays the proxy and sees the absolute URL.
  const std::string body = Pattern(5000);
  ScriptedServer proxy([&](int, int, const std::string&) { return Reply{Answer206(body), 0, 0, false}; });
  const std::string saved[] = {EnvOrEmpty("http_proxy"), EnvOrEmpty("no_proxy"), EnvOrEmpty("NO_PROXY")};
  ::setenv("http_proxy", proxy.url("").c_str(), 1);
  ::unsetenv("no_proxy");
  ::unsetenv("NO_PROXY");
  Result<HttpResponse> r = MakeError(ErrorKind::kIo, "not run");
  std::string sink;
  {
    HttpClient client(Options());
    r = client.Perform(RangeGet("http://origin.invalid/cdn/blob?x=1", &sink, body.size()), nullptr);
  }
  const char* names[] = {"http_proxy", "no_proxy", "NO_PROXY"};
  for (int i = 0; i < 3; ++i) {
    if (saved[i].empty()) ::unsetenv(names[i]);
    else ::setenv(names[i], saved[i].c_str(), 1);
  }
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_TRUE(sink == body);
  ASSERT_EQ(proxy.requests().size(), 1u);
  EXPECT_EQ(proxy.requests()[0].rfind("GET http://origin.invalid/cdn/blob?x=1 HTTP/1.1\r\n", 0), 0u)
      << proxy.requests()[0];
}

}  // namespace
}  // namespace hubfs::fetch
