// A range GET received straight into the caller's buffer (see http_direct.h).
#include "fetch/http_direct.h"

#include <curl/curl.h>
#include <poll.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/metrics.h"

namespace hubfs::fetch::internal {
namespace {

constexpr size_t kAheadBytes = 16 * 1024;  // status line, headers, chunk-size lines
constexpr size_t kMaxErrorBody = 64 * 1024;
constexpr int kPollSliceMs = 100;  // cancellation is noticed within this

struct UrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

std::string UrlPart(CURLU* u, CURLUPart part, unsigned flags = 0) {
  char* s = nullptr;
  if (curl_url_get(u, part, &s, flags) != CURLUE_OK || s == nullptr) return "";
  std::string out(s);
  curl_free(s);
  return out;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.remove_suffix(1);
  return v;
}

bool HasCrLf(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

Error Weird(const std::string& what) {
  return MakeError(ErrorKind::kIo, "malformed HTTP answer: " + what, 0, CURLE_WEIRD_SERVER_REPLY);
}

// A decimal length (Content-Length) or a hex one (chunk size): digits only, no overflow.
bool ParseLength(std::string_view s, int base, uint64_t* out) {
  if (s.empty() || s.size() > 15) return false;  // < 2^60 either way
  uint64_t v = 0;
  for (char c : s) {
    int d = -1;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (base == 16 && c >= 'A' && c <= 'F') d = c - 'A' + 10;
    if (d < 0) return false;
    v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

// Whether a comma-separated header value lists `token` (case-insensitive).
bool ListsToken(const std::string& value, std::string_view token) {
  size_t start = 0;
  while (start <= value.size()) {
    size_t end = value.find(',', start);
    if (end == std::string::npos) end = value.size();
    if (Lower(Trim(std::string_view(value).substr(start, end - start))) == token) return true;
    start = end + 1;
  }
  return false;
}

struct ConnectProgress {
  const CancelToken* cancel;
};

int OnConnectProgress(void* userp, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* p = static_cast<const ConnectProgress*>(userp);
  return (p->cancel != nullptr && p->cancel->ShouldStop()) ? 1 : 0;
}

long MsUntil(DirectConnection::Clock::time_point t) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(t - DirectConnection::Clock::now()).count();
  return static_cast<long>(std::max<long long>(left, 0));
}

}  // namespace

bool ParseDirectTarget(const std::string& url, DirectTarget* out) {
  std::unique_ptr<CURLU, UrlDeleter> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return false;
  const std::string scheme = Lower(UrlPart(u.get(), CURLUPART_SCHEME));
  if (scheme != "http" && scheme != "https") return false;
  if (!UrlPart(u.get(), CURLUPART_USER).empty() || !UrlPart(u.get(), CURLUPART_PASSWORD).empty()) return false;
  const std::string host = Lower(UrlPart(u.get(), CURLUPART_HOST));
  const std::string port = UrlPart(u.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
  const std::string given_port = UrlPart(u.get(), CURLUPART_PORT);
  std::string path = UrlPart(u.get(), CURLUPART_PATH);
  const std::string query = UrlPart(u.get(), CURLUPART_QUERY);
  if (host.empty() || port.empty() || HasCrLf(path) || HasCrLf(query) || path.find(' ') != std::string::npos ||
      query.find(' ') != std::string::npos)
    return false;
  if (path.empty()) path = "/";
  const bool default_port = (scheme == "http" && port == "80") || (scheme == "https" && port == "443");
  out->origin = scheme + "://" + host + ":" + port;
  out->host_header = default_port || given_port.empty() ? host : host + ":" + port;
  out->request_uri = query.empty() ? path : path + "?" + query;
  return true;
}

bool ProxyConfigured() {
  static const bool configured = [] {
    for (const char* name : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
      const char* v = std::getenv(name);
      if (v != nullptr && *v != '\0') return true;
    }
    return false;
  }();
  return configured;
}

DirectConnection::DirectConnection(void* curl, long fd, std::string origin, const HttpOptions& options)
    : curl_(curl), fd_(fd), origin_(std::move(origin)), options_(options), ahead_(kAheadBytes) {}

DirectConnection::~DirectConnection() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

Result<std::unique_ptr<DirectConnection>> DirectConnection::Open(const DirectTarget& target,
                                                                 const HttpOptions& options,
                                                                 const CancelToken* cancel,
                                                                 Clock::time_point deadline) {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return MakeError(ErrorKind::kIo, "curl_easy_init failed");
  const long left_ms = std::max(1L, MsUntil(deadline));
  ConnectProgress progress{cancel};
  curl_easy_setopt(curl, CURLOPT_URL, (target.origin + "/").c_str());
  curl_easy_setopt(curl, CURLOPT_CONNECT_ONLY, 1L);
  curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));  // ALPN: http/1.1
  curl_easy_setopt(curl, CURLOPT_PROXY, "");  // only taken where no proxy is configured
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, std::min(options.connect_timeout_ms, left_ms));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, left_ms);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnConnectProgress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &progress);
  const CURLcode rc = curl_easy_perform(curl);
  // `progress` lives on this stack: no callback may see it later.
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 1L);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, nullptr);
  curl_socket_t fd = CURL_SOCKET_BAD;
  if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_ACTIVESOCKET, &fd);
  if (rc != CURLE_OK || fd == CURL_SOCKET_BAD) {
    curl_easy_cleanup(curl);
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
      const bool timed_out = cancel != nullptr && !cancel->cancelled();
      return MakeError(timed_out ? ErrorKind::kTimeout : ErrorKind::kCancelled, "transfer stopped", 0,
                       static_cast<int>(rc));
    }
    if (rc == CURLE_OK) return MakeError(ErrorKind::kIo, "no socket after connect", 0, CURLE_COULDNT_CONNECT);
    const ErrorKind kind = rc == CURLE_OPERATION_TIMEDOUT ? ErrorKind::kTimeout : ErrorKind::kIo;
    return MakeError(kind, curl_easy_strerror(rc), 0, static_cast<int>(rc));
  }
  metrics::Get("fetch.connections").Add();
  return std::unique_ptr<DirectConnection>(new DirectConnection(curl, static_cast<long>(fd), target.origin, options));
}

bool DirectConnection::IdleAndOpen() const {
  pollfd p{static_cast<int>(fd_), POLLIN, 0};
  // An idle HTTP/1.1 connection has nothing to say: readable means closed (or garbage).
  return ::poll(&p, 1, 0) == 0;
}

Status DirectConnection::Wait(short events, const CancelToken* cancel, Clock::time_point deadline) {
  const auto stall_limit = last_progress_ + std::chrono::seconds(options_.stall_timeout_s);
  for (;;) {
    if (cancel != nullptr && cancel->ShouldStop()) {
      const bool timed_out = !cancel->cancelled();
      return MakeError(timed_out ? ErrorKind::kTimeout : ErrorKind::kCancelled, "transfer stopped", 0,
                       CURLE_ABORTED_BY_CALLBACK);
    }
    const auto now = Clock::now();
    if (now >= deadline) return MakeError(ErrorKind::kTimeout, "Timeout was reached", 0, CURLE_OPERATION_TIMEDOUT);
    if (now >= stall_limit)
      return MakeError(ErrorKind::kTimeout,
                       "no bytes from the server for " + std::to_string(options_.stall_timeout_s) + " s", 0,
                       CURLE_OPERATION_TIMEDOUT);
    const long ms = std::clamp<long>(std::min(MsUntil(deadline), MsUntil(stall_limit)), 1, kPollSliceMs);
    pollfd p{static_cast<int>(fd_), events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(ms));
    if (n > 0) return OkStatus();  // ready, or an error/hang-up that the next call reports
    if (n < 0 && errno != EINTR) return MakeError(ErrorKind::kIo, "poll failed", 0, CURLE_RECV_ERROR);
  }
}

Status DirectConnection::SendAll(const std::string& data, const CancelToken* cancel, Clock::time_point deadline) {
  size_t off = 0;
  while (off < data.size()) {
    size_t sent = 0;
    const CURLcode rc = curl_easy_send(static_cast<CURL*>(curl_), data.data() + off, data.size() - off, &sent);
    if (rc == CURLE_AGAIN) {
      if (auto st = Wait(POLLOUT, cancel, deadline); !st.ok()) return st;
      continue;
    }
    if (rc != CURLE_OK) return MakeError(ErrorKind::kIo, curl_easy_strerror(rc), 0, CURLE_SEND_ERROR);
    off += sent;
    last_progress_ = Clock::now();
  }
  return OkStatus();
}

Result<size_t> DirectConnection::RecvSome(char* dst, size_t n, const CancelToken* cancel, Clock::time_point deadline) {
  for (;;) {
    size_t got = 0;
    // Called before any poll: TLS may hold decrypted bytes that the socket no longer shows.
    const CURLcode rc = curl_easy_recv(static_cast<CURL*>(curl_), dst, n, &got);
    if (rc == CURLE_OK) {
      if (got > 0) {
        last_progress_ = Clock::now();
        got_bytes_ = true;
      }
      return got;
    }
    if (rc != CURLE_AGAIN) return MakeError(ErrorKind::kIo, curl_easy_strerror(rc), 0, CURLE_RECV_ERROR);
    if (auto st = Wait(POLLIN, cancel, deadline); !st.ok()) return st.error();
  }
}

Status DirectConnection::ReadLine(std::string* line, const CancelToken* cancel, Clock::time_point deadline) {
  line->clear();
  for (;;) {
    const char* begin = ahead_.data() + ahead_pos_;
    const char* nl = static_cast<const char*>(std::memchr(begin, '\n', ahead_end_ - ahead_pos_));
    if (nl != nullptr) {
      line->append(begin, nl);
      ahead_pos_ = static_cast<size_t>(nl - ahead_.data()) + 1;
      if (!line->empty() && line->back() == '\r') line->pop_back();
      return OkStatus();
    }
    line->append(begin, ahead_end_ - ahead_pos_);
    ahead_pos_ = ahead_end_ = 0;
    if (line->size() > kMaxHeaderBytes) return Weird("a header line longer than 64 KiB");
    auto n = RecvSome(ahead_.data(), ahead_.size(), cancel, deadline);
    if (!n.ok()) return n.error();
    if (*n == 0) return MakeError(ErrorKind::kIo, "connection closed in the answer's head", 0, CURLE_GOT_NOTHING);
    ahead_end_ = *n;
  }
}

Status DirectConnection::ReadBody(char* dst, size_t n, const CancelToken* cancel, Clock::time_point deadline) {
  const size_t from_ahead = std::min(n, ahead_end_ - ahead_pos_);
  if (dst != nullptr) std::memcpy(dst, ahead_.data() + ahead_pos_, from_ahead);
  ahead_pos_ += from_ahead;
  size_t done = from_ahead;
  while (done < n) {
    // Straight into the destination: the point of this class. Discarded bytes use the look-ahead.
    char* to = dst != nullptr ? dst + done : ahead_.data();
    const size_t want = dst != nullptr ? n - done : std::min(n - done, ahead_.size());
    auto got = RecvSome(to, want, cancel, deadline);
    if (!got.ok()) return got.error();
    if (*got == 0)
      return MakeError(ErrorKind::kIo, "connection closed with " + std::to_string(n - done) + " body bytes missing",
                       0, CURLE_PARTIAL_FILE);
    done += *got;
  }
  if (dst == nullptr && from_ahead < n) ahead_pos_ = ahead_end_ = 0;  // the look-ahead held only discards
  return OkStatus();
}

Result<HttpResponse> DirectConnection::RoundTrip(const DirectTarget& target, const HttpRequest& req,
                                                 const CancelToken* cancel, Clock::time_point deadline,
                                                 bool* before_response) {
  reusable_ = false;
  got_bytes_ = false;
  *before_response = true;
  last_progress_ = Clock::now();
  std::string head = "GET " + target.request_uri + " HTTP/1.1\r\nHost: " + target.host_header +
                     "\r\nUser-Agent: " + options_.user_agent + "\r\nAccept: */*\r\n";
  if (req.range_begin >= 0)
    head += "Range: bytes=" + std::to_string(req.range_begin) + "-" +
            (req.range_end >= 0 ? std::to_string(req.range_end) : "") + "\r\n";
  if (!req.authorization.empty()) head += "Authorization: " + req.authorization + "\r\n";
  for (const auto& h : req.headers) {
    if (HasCrLf(h) || h.find(':') == std::string::npos) return MakeError(ErrorKind::kInvalidArgument, "bad header");
    head += h + "\r\n";
  }
  head += "\r\n";
  if (HasCrLf(options_.user_agent) || HasCrLf(req.authorization))
    return MakeError(ErrorKind::kInvalidArgument, "bad header");
  if (auto st = SendAll(head, cancel, deadline); !st.ok()) return st.error();

  HttpResponse resp;
  std::string line;
  bool keep_alive = true;
  bool chunked = false;
  bool has_length = false;
  uint64_t length = 0;
  for (;;) {  // interim 1xx answers, then the final one
    auto st = ReadLine(&line, cancel, deadline);
    *before_response = !got_bytes_;
    if (!st.ok()) return st.error();
    // "HTTP/1.1 206 Partial Content"
    if (line.size() < 12 || line.compare(0, 7, "HTTP/1.") != 0 || line[8] != ' ') return Weird("status line");
    uint64_t code = 0;
    if (!ParseLength(std::string_view(line).substr(9, 3), 10, &code) || code < 100 || code > 999 ||
        (line.size() > 12 && line[12] != ' '))
      return Weird("status line");
    keep_alive = line[7] == '1';  // HTTP/1.0: one answer per connection
    resp.status = static_cast<long>(code);
    resp.headers.clear();
    size_t head_bytes = line.size();
    for (;;) {
      if (auto h = ReadLine(&line, cancel, deadline); !h.ok()) return h.error();
      if (line.empty()) break;
      head_bytes += line.size();
      if (head_bytes > kMaxHeaderBytes) return Weird("headers longer than 64 KiB");
      const size_t colon = line.find(':');
      if (colon == std::string::npos || colon == 0) return Weird("header line without a name");
      resp.headers.emplace_back(Lower(std::string_view(line).substr(0, colon)),
                                std::string(Trim(std::string_view(line).substr(colon + 1))));
    }
    if (resp.status >= 200) break;
  }
  for (const auto& [name, value] : resp.headers) {
    if (name == "connection" && ListsToken(value, "close")) keep_alive = false;
    if (name == "transfer-encoding") chunked = Lower(Trim(value)).ends_with("chunked");
    if (name == "content-length") {
      uint64_t v = 0;
      if (!ParseLength(Trim(value), 10, &v) || (has_length && v != length)) return Weird("Content-Length");
      has_length = true;
      length = v;
    }
  }
  const bool has_transfer_coding = resp.HasHeader("transfer-encoding");
  const bool success = resp.status >= 200 && resp.status < 300;
  const bool no_body = resp.status == 204 || resp.status == 304;

  // Where `n` more body bytes go: the sink (2xx), the first 64 KiB of an error body, or nowhere.
  uint64_t discarded = 0;
  auto deliver = [&](uint64_t n) -> Status {
    if (success) {
      if (req.sink == nullptr || resp.body_bytes + n > req.sink_capacity)
        return MakeError(ErrorKind::kIo, "response body larger than expected", static_cast<int>(resp.status),
                         CURLE_WRITE_ERROR);
      if (auto st = ReadBody(req.sink + resp.body_bytes, static_cast<size_t>(n), cancel, deadline); !st.ok())
        return st;
      resp.body_bytes += static_cast<size_t>(n);
      return OkStatus();
    }
    const size_t keep = static_cast<size_t>(std::min<uint64_t>(n, kMaxErrorBody - resp.body.size()));
    const size_t at = resp.body.size();
    resp.body.resize(at + keep);
    if (auto st = ReadBody(resp.body.data() + at, keep, cancel, deadline); !st.ok()) return st;
    discarded += n - keep;
    if (discarded > kMaxDiscardBytes) return MakeError(ErrorKind::kIo, "error body too long", 0, CURLE_WRITE_ERROR);
    return ReadBody(nullptr, static_cast<size_t>(n - keep), cancel, deadline);
  };
  // An error answer's body that is too long to drain ends the connection instead, as curl's does.
  auto finish = [&](Status st) -> Result<HttpResponse> {
    if (!st.ok()) {
      if (!success && st.error().curl_code == CURLE_WRITE_ERROR) {
        reusable_ = false;
        return std::move(resp);
      }
      return st.error();
    }
    reusable_ = keep_alive && ahead_pos_ == ahead_end_;
    return std::move(resp);
  };

  if (no_body) return finish(OkStatus());
  if (chunked) {
    for (;;) {
      if (auto st = ReadLine(&line, cancel, deadline); !st.ok()) return st.error();
      const std::string_view size_field = Trim(std::string_view(line).substr(0, line.find(';')));
      uint64_t n = 0;
      if (!ParseLength(size_field, 16, &n)) return Weird("chunk size");
      if (n == 0) break;
      if (auto st = deliver(n); !st.ok()) return finish(st);
      if (auto st = ReadLine(&line, cancel, deadline); !st.ok()) return st.error();
      if (!line.empty()) return Weird("chunk without its CRLF");
    }
    do {  // trailers, up to the empty line
      if (auto st = ReadLine(&line, cancel, deadline); !st.ok()) return st.error();
    } while (!line.empty());
    return finish(OkStatus());
  }
  if (has_length && !has_transfer_coding) return finish(deliver(length));
  // Framed by the end of the connection.
  keep_alive = false;
  for (;;) {
    if (ahead_pos_ == ahead_end_) {
      // A 2xx body straight into the sink while it has room; anything else through the look-ahead
      // (one more byte than the sink holds is the overflow error).
      const bool direct = success && req.sink != nullptr && resp.body_bytes < req.sink_capacity;
      char* to = direct ? req.sink + resp.body_bytes : ahead_.data();
      auto n = RecvSome(to, direct ? req.sink_capacity - resp.body_bytes : ahead_.size(), cancel, deadline);
      if (!n.ok()) return n.error();
      if (*n == 0) break;
      if (direct) {
        resp.body_bytes += *n;
        continue;
      }
      ahead_pos_ = 0;
      ahead_end_ = *n;
    }
    if (auto st = deliver(ahead_end_ - ahead_pos_); !st.ok()) return finish(st);
  }
  return finish(OkStatus());
}

}  // namespace hubfs::fetch::internal
