// The libcurl transport (see http_client.h).
#include "fetch/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>

#include "common/metrics.h"

namespace hubfs::fetch {
namespace {

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

struct Transfer {
  const HttpRequest* req;
  HttpResponse* resp;
  const CancelToken* cancel;
  size_t max_string_body;
  bool overflow = false;
  long status = 0;  // from the latest status line
};

constexpr size_t kMaxNonSuccessBody = 64 * 1024;  // redirect and error bodies: kept small, never in a sink

size_t OnBody(char* data, size_t size, size_t nmemb, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  const size_t n = size * nmemb;
  const bool success = t->status >= 200 && t->status < 300;
  if (!success) {
    // A redirect's or an error's body never lands in the caller's block buffer.
    const size_t keep = std::min(n, kMaxNonSuccessBody - std::min(kMaxNonSuccessBody, t->resp->body.size()));
    t->resp->body.append(data, keep);
    return n;
  }
  if (t->req->sink != nullptr) {
    if (t->resp->body_bytes + n > t->req->sink_capacity) {
      t->overflow = true;
      return 0;  // aborts with CURLE_WRITE_ERROR
    }
    std::memcpy(t->req->sink + t->resp->body_bytes, data, n);
  } else {
    if (t->resp->body.size() + n > t->max_string_body) {
      t->overflow = true;
      return 0;
    }
    t->resp->body.append(data, n);
  }
  t->resp->body_bytes += n;
  return n;
}

size_t OnHeader(char* data, size_t size, size_t nmemb, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  const size_t n = size * nmemb;
  std::string_view line(data, n);
  if (line.rfind("HTTP/", 0) == 0) {
    t->resp->headers.clear();  // a new status line (e.g. after 100 Continue)
    const size_t sp = line.find(' ');
    t->status = sp == std::string_view::npos ? 0 : std::strtol(std::string(line.substr(sp + 1, 3)).c_str(), nullptr, 10);
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  std::string name(line.substr(0, colon));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
    value.remove_suffix(1);
  t->resp->headers.emplace_back(std::move(name), std::string(value));
  return n;
}

int OnProgress(void* userp, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(userp);
  return (t->cancel != nullptr && t->cancel->ShouldStop()) ? 1 : 0;
}

}  // namespace

std::string HttpResponse::Header(std::string_view name) const {
  for (auto it = headers.rbegin(); it != headers.rend(); ++it)
    if (it->first == name) return it->second;
  return "";
}

bool HttpResponse::HasHeader(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(), [&](const auto& h) { return h.first == name; });
}

HttpClient::HttpClient(HttpOptions options) : options_(std::move(options)) {
  static CurlGlobal global;
}

HttpClient::~HttpClient() {
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* HttpClient::Acquire() const {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void HttpClient::Release(void* handle) const {
  std::lock_guard lock(mu_);
  idle_.push_back(handle);
}

Result<HttpResponse> HttpClient::Perform(const HttpRequest& req, const CancelToken* cancel) const {
  static auto& m_requests = metrics::Get("fetch.requests");
  static auto& m_errors = metrics::Get("fetch.transport_errors");
  CURL* curl = static_cast<CURL*>(Acquire());
  if (curl == nullptr) return MakeError(ErrorKind::kIo, "curl_easy_init failed");
  curl_easy_reset(curl);  // keeps the connection cache

  HttpResponse resp;
  Transfer t{&req, &resp, cancel, options_.max_string_body};
  curl_slist* headers = nullptr;
  for (const auto& h : req.headers) headers = curl_slist_append(headers, h.c_str());
  if (!req.authorization.empty()) {
    const std::string h = "Authorization: " + req.authorization;
    headers = curl_slist_append(headers, h.c_str());
  }
  headers = curl_slist_append(headers, "Expect:");

  long timeout_ms = options_.total_timeout_ms;
  if (cancel != nullptr && cancel->deadline() != CancelToken::Clock::time_point::max()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(cancel->deadline() -
                                                                            CancelToken::Clock::now());
    timeout_ms = std::clamp<long>(static_cast<long>(left.count()), 1, timeout_ms);
  }

  curl_easy_setopt(curl, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, options_.user_agent.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, options_.connect_timeout_ms);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, options_.stall_timeout_s);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 512L * 1024L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
  std::string range;
  if (req.range_begin >= 0) {
    range = std::to_string(req.range_begin) + "-" + (req.range_end >= 0 ? std::to_string(req.range_end) : "");
    curl_easy_setopt(curl, CURLOPT_RANGE, range.c_str());
  }
  if (req.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (req.method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req.body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(req.body.size()));
  }

  m_requests.Add();
  const CURLcode rc = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (rc != CURLE_OK) {
    // A failed transfer may leave the connection in an unknown state: do not reuse this handle.
    curl_easy_cleanup(curl);
    m_errors.Add();
    if (t.overflow) {
      return MakeError(ErrorKind::kIo, "response body larger than expected", static_cast<int>(status),
                       static_cast<int>(rc));
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
      const bool timed_out = cancel != nullptr && !cancel->cancelled();
      return MakeError(timed_out ? ErrorKind::kTimeout : ErrorKind::kCancelled, "transfer stopped", 0,
                       static_cast<int>(rc));
    }
    const ErrorKind kind = rc == CURLE_OPERATION_TIMEDOUT ? ErrorKind::kTimeout : ErrorKind::kIo;
    return MakeError(kind, curl_easy_strerror(rc), static_cast<int>(status), static_cast<int>(rc));
  }
  resp.status = status;
  Release(curl);
  return resp;
}

}  // namespace hubfs::fetch
