// Range GETs received straight into the caller's buffer (see direct_http.h).
#include "fetch/direct_http.h"

#include <curl/curl.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common/metrics.h"
#include "fetch/http1.h"
#include "fetch/url.h"

namespace hubfs::fetch {
namespace {

using Clock = CancelToken::Clock;
using std::chrono::milliseconds;

constexpr size_t kHeadBuffer = 16 * 1024;
constexpr size_t kMaxHead = 64 * 1024;             // a longer head is malformed
constexpr size_t kMaxKeptBody = 64 * 1024;         // redirect and error bodies: as the libcurl path
constexpr uint64_t kMaxDrainedBody = 1u << 20;     // longer ones are not drained: the connection goes
constexpr milliseconds kPollSlice{100};            // cancellation is noticed within this

enum class Wait { kReady, kDeadline, kStalled, kCancelled };

// Waits until the socket is ready for `events` or one poll slice has passed (kReady: try the
// send/recv again), or reports the deadline, a stall, or cancellation. Trying again after a slice
// also covers a TLS layer that wants to write before it can read (it retries on the next call).
Wait WaitFor(curl_socket_t sock, short events, Clock::time_point deadline, Clock::time_point stall_at,
             const CancelToken* cancel) {
  if (cancel != nullptr && cancel->ShouldStop()) return Wait::kCancelled;
  const auto now = Clock::now();
  if (now >= deadline) return Wait::kDeadline;
  if (now >= stall_at) return Wait::kStalled;
  const auto until = std::min({deadline, stall_at, now + kPollSlice});
  const auto ms = std::chrono::ceil<milliseconds>(until - now).count();
  pollfd p{sock, events, 0};
  ::poll(&p, 1, static_cast<int>(std::max<long long>(1, ms)));  // errors and EINTR: the retry reports them
  return Wait::kReady;
}

Error WaitError(Wait w, const CancelToken* cancel) {
  switch (w) {
    case Wait::kCancelled:
      // As the libcurl path: a token past its deadline is a timeout, a cancelled one a cancellation.
      return MakeError(cancel != nullptr && cancel->cancelled() ? ErrorKind::kCancelled : ErrorKind::kTimeout,
                       "transfer stopped", 0, CURLE_ABORTED_BY_CALLBACK);
    case Wait::kStalled:
      return MakeError(ErrorKind::kTimeout, "transfer stalled", 0, CURLE_OPERATION_TIMEDOUT);
    default:
      return MakeError(ErrorKind::kTimeout, "transfer timed out", 0, CURLE_OPERATION_TIMEDOUT);
  }
}

bool Printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c != 0x7f; });
}

int ProgressAbort(void* userp, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* cancel = static_cast<const CancelToken*>(userp);
  return (cancel != nullptr && cancel->ShouldStop()) ? 1 : 0;
}

}  // namespace

struct DirectHttp::Conn {
  CURL* curl = nullptr;
  curl_socket_t sock = CURL_SOCKET_BAD;
  std::string origin;
  bool reused = false;
  ~Conn() {
    if (curl != nullptr) curl_easy_cleanup(curl);
  }
};

DirectHttp::~DirectHttp() {
  for (auto& [origin, conns] : idle_)
    for (Conn* c : conns) delete c;
}

bool DirectHttp::ProxyConfigured() {
  for (const char* name : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return true;
  }
  return false;
}

DirectHttp::Conn* DirectHttp::Take(const std::string& origin) {
  std::vector<Conn*> dead;
  Conn* found = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = idle_.find(origin);
    while (it != idle_.end() && !it->second.empty() && found == nullptr) {
      Conn* c = it->second.back();
      it->second.pop_back();
      --idle_count_;
      // An idle connection has nothing to read: readable means the server closed it (or sent
      // something unasked), so it cannot carry a request.
      pollfd p{c->sock, static_cast<short>(POLLIN | POLLRDHUP), 0};
      if (::poll(&p, 1, 0) != 0) {
        dead.push_back(c);
      } else {
        found = c;
      }
    }
  }
  for (Conn* c : dead) delete c;  // outside the lock
  if (found != nullptr) found->reused = true;
  return found;
}

void DirectHttp::Keep(Conn* c) {
  {
    std::lock_guard lock(mu_);
    if (idle_count_ < kMaxIdle) {
      idle_[c->origin].push_back(c);
      ++idle_count_;
      return;
    }
  }
  delete c;
}

std::optional<Result<HttpResponse>> DirectHttp::Perform(const HttpRequest& req, const CancelToken* cancel) {
  static auto& m_fallbacks = metrics::Get("fetch.direct.fallbacks");
  static const bool proxy = ProxyConfigured();
  if (proxy || req.method != "GET" || req.sink == nullptr || !req.authorization.empty() || !req.body.empty())
    return std::nullopt;
  const std::string origin = OriginOf(req.url);
  if (origin.empty()) return std::nullopt;
  const std::string_view url = req.url;
  const std::string_view rest = url.substr(url.find("://") + 3);
  const size_t path_at = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, path_at);
  std::string path(path_at == std::string_view::npos ? "/" : rest.substr(path_at));
  if (const size_t hash = path.find('#'); hash != std::string::npos) path.resize(hash);
  if (path.empty() || path[0] != '/') path.insert(0, "/");
  if (!Printable(authority) || !Printable(path)) return std::nullopt;  // libcurl knows what to do

  std::string text = "GET " + path + " HTTP/1.1\r\nHost: " + std::string(authority) + "\r\nUser-Agent: " +
                     options_.user_agent + "\r\nAccept: */*\r\n";
  if (req.range_begin >= 0)
    text += "Range: bytes=" + std::to_string(req.range_begin) + "-" +
            (req.range_end >= 0 ? std::to_string(req.range_end) : "") + "\r\n";
  for (const auto& h : req.headers) {
    if (h.find_first_of("\r\n") != std::string::npos) return std::nullopt;
    text += h + "\r\n";
  }
  text += "\r\n";

  auto deadline = Clock::now() + milliseconds(options_.total_timeout_ms);
  if (cancel != nullptr) deadline = std::min(deadline, cancel->deadline());

  for (int attempt = 0;; ++attempt) {
    Conn* c = Take(origin);
    if (c == nullptr) {
      auto conn = std::make_unique<Conn>();
      conn->origin = origin;
      conn->curl = curl_easy_init();
      if (conn->curl == nullptr) return Result<HttpResponse>(MakeError(ErrorKind::kIo, "curl_easy_init failed"));
      const long left_ms = std::max<long>(
          1, static_cast<long>(std::chrono::ceil<milliseconds>(deadline - Clock::now()).count()));
      CURL* curl = conn->curl;
      curl_easy_setopt(curl, CURLOPT_URL, req.url.c_str());
      curl_easy_setopt(curl, CURLOPT_CONNECT_ONLY, 1L);
      curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));  // ALPN: no h2
      curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
      curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, std::min(options_.connect_timeout_ms, left_ms));
      curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, left_ms);
      curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
      curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, ProgressAbort);
      curl_easy_setopt(curl, CURLOPT_XFERINFODATA, cancel);
      const CURLcode rc = curl_easy_perform(curl);
      if (rc != CURLE_OK) {
        if (rc == CURLE_ABORTED_BY_CALLBACK) return Result<HttpResponse>(WaitError(Wait::kCancelled, cancel));
        const ErrorKind kind = rc == CURLE_OPERATION_TIMEDOUT ? ErrorKind::kTimeout : ErrorKind::kIo;
        return Result<HttpResponse>(MakeError(kind, curl_easy_strerror(rc), 0, static_cast<int>(rc)));
      }
      if (curl_easy_getinfo(curl, CURLINFO_ACTIVESOCKET, &conn->sock) != CURLE_OK || conn->sock == CURL_SOCKET_BAD)
        return Result<HttpResponse>(MakeError(ErrorKind::kIo, "no socket after connect", 0, CURLE_COULDNT_CONNECT));
      c = conn.release();
    }
    bool stale = false;
    auto r = Exchange(c, req, text, cancel, &stale);
    if (stale && attempt == 0) continue;  // a reused connection the server had dropped: once more, fresh
    if (!r) m_fallbacks.Add();
    return r;
  }
}

// Sends the request on c and reads the answer. Takes c: keeps it for reuse or closes it.
std::optional<Result<HttpResponse>> DirectHttp::Exchange(Conn* c, const HttpRequest& req, const std::string& text,
                                                         const CancelToken* cancel, bool* stale) {
  static auto& m_requests = metrics::Get("fetch.requests");
  std::unique_ptr<Conn> owned(c);
  auto deadline = Clock::now() + milliseconds(options_.total_timeout_ms);
  if (cancel != nullptr) deadline = std::min(deadline, cancel->deadline());
  const auto stall = std::chrono::seconds(options_.stall_timeout_s);
  auto stall_at = Clock::now() + stall;
  const auto fail = [&](ErrorKind kind, const char* message, int status, CURLcode code) {
    return std::optional<Result<HttpResponse>>(MakeError(kind, message, status, static_cast<int>(code)));
  };

  m_requests.Add();
  for (size_t sent = 0; sent < text.size();) {
    size_t n = 0;
    const CURLcode rc = curl_easy_send(c->curl, text.data() + sent, text.size() - sent, &n);
    if (rc == CURLE_AGAIN) {
      const Wait w = WaitFor(c->sock, POLLOUT, deadline, stall_at, cancel);
      if (w != Wait::kReady) return std::optional<Result<HttpResponse>>(WaitError(w, cancel));
      continue;
    }
    if (rc != CURLE_OK) {
      *stale = c->reused;
      return fail(ErrorKind::kIo, "send failed", 0, CURLE_SEND_ERROR);
    }
    sent += n;
  }

  // Receives into [to, to + cap): the byte count, 0 at end of stream, or an error.
  const auto receive = [&](char* to, size_t cap) -> Result<size_t> {
    for (;;) {
      size_t n = 0;
      const CURLcode rc = curl_easy_recv(c->curl, to, cap, &n);
      if (rc == CURLE_AGAIN) {
        const Wait w = WaitFor(c->sock, POLLIN, deadline, stall_at, cancel);
        if (w != Wait::kReady) return WaitError(w, cancel);
        continue;
      }
      if (rc != CURLE_OK) return MakeError(ErrorKind::kIo, "receive failed", 0, CURLE_RECV_ERROR);
      if (n > 0) stall_at = Clock::now() + stall;
      return n;
    }
  };

  // The head (after any 1xx interim answers).
  std::string buf(kHeadBuffer, '\0');
  size_t have = 0, head_len = 0;
  std::optional<ResponseHead> head;
  for (;;) {
    while ((head_len = FindHeadEnd(std::string_view(buf.data(), have))) == 0) {
      if (have == buf.size()) {
        if (buf.size() >= kMaxHead) return fail(ErrorKind::kIo, "response head too long", 0, CURLE_WEIRD_SERVER_REPLY);
        buf.resize(buf.size() * 2);
      }
      auto n = receive(buf.data() + have, buf.size() - have);
      if (!n.ok()) {
        *stale = c->reused && have == 0 && n.error().curl_code == CURLE_RECV_ERROR;
        return std::optional<Result<HttpResponse>>(n.error());
      }
      if (*n == 0) {
        *stale = c->reused && have == 0;
        return fail(ErrorKind::kIo, "connection closed before a complete answer", 0, CURLE_GOT_NOTHING);
      }
      have += *n;
    }
    head = ParseResponseHead(std::string_view(buf.data(), head_len));
    if (!head) return fail(ErrorKind::kIo, "malformed response head", 0, CURLE_WEIRD_SERVER_REPLY);
    if (head->status >= 200) break;
    buf.erase(0, head_len);  // 1xx: the real answer follows
    have -= head_len;
    buf.resize(std::max(buf.size(), kHeadBuffer));
  }

  HttpResponse resp;
  resp.status = head->status;
  resp.headers = std::move(head->headers);
  const size_t extra = have - head_len;  // body bytes that came with the head
  const char* early = buf.data() + head_len;
  if (Bodyless(req.method, resp.status)) {
    if (extra == 0 && head->keep_alive) Keep(owned.release());
    return std::optional<Result<HttpResponse>>(std::move(resp));
  }
  if (head->transfer_encoding || head->content_length < 0) return std::nullopt;  // framing for libcurl
  const uint64_t len = static_cast<uint64_t>(head->content_length);
  const bool reusable = head->keep_alive && extra <= len;

  if (resp.status >= 200 && resp.status < 300) {
    if (len > req.sink_capacity)
      return fail(ErrorKind::kIo, "response body larger than expected", resp.status, CURLE_WRITE_ERROR);
    size_t got = std::min<uint64_t>(extra, len);
    std::memcpy(req.sink, early, got);
    while (got < len) {
      auto n = receive(req.sink + got, len - got);
      if (!n.ok()) return std::optional<Result<HttpResponse>>(n.error());
      if (*n == 0) return fail(ErrorKind::kIo, "connection closed before the end of the body", resp.status, CURLE_PARTIAL_FILE);
      got += *n;
    }
    resp.body_bytes = len;
  } else {
    // A redirect's or an error's body: the first 64 KiB are kept, never in the caller's buffer.
    resp.body.assign(early, std::min<uint64_t>({extra, len, kMaxKeptBody}));
    if (len > kMaxDrainedBody) return std::optional<Result<HttpResponse>>(std::move(resp));  // closes c
    uint64_t got = std::min<uint64_t>(extra, len);
    char scratch[16 * 1024];
    while (got < len) {
      auto n = receive(scratch, static_cast<size_t>(std::min<uint64_t>(sizeof scratch, len - got)));
      if (!n.ok() || *n == 0) return std::optional<Result<HttpResponse>>(std::move(resp));  // closes c
      const size_t keep = std::min<size_t>(*n, kMaxKeptBody - std::min(kMaxKeptBody, resp.body.size()));
      resp.body.append(scratch, keep);
      got += *n;
    }
  }
  if (reusable) Keep(owned.release());
  return std::optional<Result<HttpResponse>>(std::move(resp));
}

}  // namespace hubfs::fetch
