// The Hub API client (see hub_client.h).
#include "fetch/hub_client.h"

#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/hex.h"
#include "common/log.h"
#include "common/metrics.h"
#include "fetch/url.h"

namespace hubfs::fetch {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kMaxRedirects = 5;
constexpr size_t kMaxPages = 100000;
constexpr size_t kMaxTargets = 4096;
// A CDN URL is reused until this long before its Expires, and never longer than kMaxTargetAge.
constexpr auto kExpirySlack = std::chrono::seconds(30);
constexpr auto kMaxTargetAge = std::chrono::minutes(10);

bool IsRedirect(long s) { return s == 301 || s == 302 || s == 303 || s == 307 || s == 308; }

}  // namespace

const char* ApiCollection(RepoType type) {
  switch (type) {
    case RepoType::kDataset: return "datasets";
    case RepoType::kSpace: return "spaces";
    case RepoType::kModel: break;
  }
  return "models";
}

const char* UrlPrefix(RepoType type) {
  switch (type) {
    case RepoType::kDataset: return "datasets/";
    case RepoType::kSpace: return "spaces/";
    case RepoType::kModel: break;
  }
  return "";
}

Error ErrorFromResponse(const HttpResponse& r, const std::string& what) {
  const std::string code = r.Header("x-error-code");
  std::string msg = r.Header("x-error-message");
  if (msg.size() > 200) msg.resize(200);
  const std::string text = what + ": HTTP " + std::to_string(r.status) + (code.empty() ? "" : " " + code) +
                           (msg.empty() ? "" : " (" + msg + ")");
  const int s = static_cast<int>(r.status);
  if (msg.find("Invalid credentials") != std::string::npos) return MakeError(ErrorKind::kAccessDenied, text, s);
  if (code == "GatedRepo") return MakeError(ErrorKind::kAccessDenied, text, s);
  if (code == "RepoNotFound" || code == "RevisionNotFound" || code == "EntryNotFound")
    return MakeError(ErrorKind::kNotFound, text, s);
  if (s == 401 || s == 403) return MakeError(ErrorKind::kAccessDenied, text, s);
  if (s == 404 || s == 410) return MakeError(ErrorKind::kNotFound, text, s);
  return MakeError(ErrorKind::kIo, text, s);
}

int64_t ParseIsoTime(const std::string& s) {
  tm t{};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &se) != 6) return 0;
  static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > kDays[mo - 1] || h > 23 || mi > 59 || se > 60) return 0;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo == 2 && d == 29 && !leap) return 0;
  t.tm_year = y - 1900;
  t.tm_mon = mo - 1;
  t.tm_mday = d;
  t.tm_hour = h;
  t.tm_min = mi;
  t.tm_sec = se;
  return static_cast<int64_t>(timegm(&t));
}

Result<std::vector<TreeEntry>> ParseTreePage(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) return MakeError(ErrorKind::kIo, "tree listing is not a JSON array");
  std::vector<TreeEntry> out;
  out.reserve(j.size());
  for (const auto& e : j) {
    if (!e.is_object()) continue;
    auto type = e.find("type");
    auto path = e.find("path");
    if (type == e.end() || path == e.end() || !type->is_string() || !path->is_string()) continue;
    TreeEntry t;
    t.path = path->get<std::string>();
    const std::string ty = type->get<std::string>();
    if (ty == "directory") {
      t.is_dir = true;
    } else if (ty != "file") {
      continue;
    }
    if (auto oid = e.find("oid"); oid != e.end() && oid->is_string()) t.oid = oid->get<std::string>();
    if (!t.is_dir) {
      auto size = e.find("size");
      if (size == e.end() || !size->is_number_unsigned()) continue;
      t.size = size->get<uint64_t>();
      if (auto lfs = e.find("lfs"); lfs != e.end() && lfs->is_object()) {
        auto loid = lfs->find("oid");
        if (loid != lfs->end() && loid->is_string() && IsHexDigits(loid->get<std::string>(), 64))
          t.lfs_sha256 = loid->get<std::string>();
        auto lsize = lfs->find("size");
        if (lsize != lfs->end() && lsize->is_number_unsigned()) t.size = lsize->get<uint64_t>();
      }
      if (t.lfs_sha256.empty() && !IsHexDigits(t.oid, 40)) continue;  // no content identity: unusable
    }
    out.push_back(std::move(t));
  }
  return out;
}

HubClient::HubClient(HubOptions options, std::shared_ptr<HttpClient> http)
    : options_(std::move(options)), http_(std::move(http)) {
  while (!options_.endpoint.empty() && options_.endpoint.back() == '/') options_.endpoint.pop_back();
}

std::string HubClient::Authorization(const std::string& url) const {
  if (!options_.token || !SameOrigin(url, options_.endpoint)) return "";
  std::string token = options_.token->Get();  // current: a login or logout on a live mount counts
  return token.empty() ? "" : "Bearer " + token;
}

bool HubClient::WaitBeforeRetry(int attempt, long hint_ms, const CancelToken* cancel) const {
  static auto& m_retries = metrics::Get("fetch.retries");
  if (attempt >= options_.retry.max_attempts) return false;
  const auto delay = BackoffDelay(options_.retry, attempt, hint_ms);
  const auto wake = Clock::now() + delay;
  if (cancel != nullptr && wake >= cancel->deadline()) return false;
  m_retries.Add();
  while (Clock::now() < wake) {
    if (cancel != nullptr && cancel->cancelled()) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(wake - Clock::now(), std::chrono::milliseconds(50)));
  }
  return true;
}

void HubClient::PauseFor(long ms) const {
  const int64_t until = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            (Clock::now() + std::chrono::milliseconds(ms)).time_since_epoch()).count();
  int64_t cur = pause_until_ns_.load();
  while (cur < until && !pause_until_ns_.compare_exchange_weak(cur, until)) {
  }
}

bool HubClient::WaitForPause(const CancelToken* cancel) const {
  for (;;) {
    const auto until = Clock::time_point(std::chrono::nanoseconds(pause_until_ns_.load()));
    const auto now = Clock::now();
    if (now >= until) return true;
    if (cancel != nullptr && (cancel->cancelled() || until >= cancel->deadline())) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(until - now, std::chrono::milliseconds(50)));
  }
}

Result<HttpResponse> HubClient::GetJson(const std::string& start_url, const CancelToken* cancel) const {
  if (options_.offline) return MakeError(ErrorKind::kIo, "offline (--offline): the Hub is not asked");
  std::string url = start_url;
  int redirects = 0;
  for (int attempt = 1;; ++attempt) {
    HttpRequest req;
    req.url = url;
    req.authorization = Authorization(url);
    req.headers = {"Accept: application/json"};
    if (!WaitForPause(cancel)) return MakeError(ErrorKind::kIo, "rate limited by the Hub past the deadline", 429);
    auto r = http_->Perform(req, cancel);
    if (!r.ok()) {
      if (IsRetryableCurlCode(r.error().curl_code) && WaitBeforeRetry(attempt, -1, cancel)) continue;
      return r.error();
    }
    HttpResponse& resp = r.value();
    if (IsRedirect(resp.status)) {
      std::string next = ResolveLocation(url, resp.Header("location"));
      if (next.empty() || !SameOrigin(next, options_.endpoint) || ++redirects > kMaxRedirects)
        return MakeError(ErrorKind::kIo, "unexpected API redirect", static_cast<int>(resp.status));
      url = next;
      --attempt;
      continue;
    }
    const long hint = ServerRetryHintMs(resp.Header("retry-after"), resp.Header("ratelimit"));
    if (resp.status == 429 && hint > 0) PauseFor(hint);
    if (IsRetryableStatus(resp.status) && WaitBeforeRetry(attempt, hint, cancel)) continue;
    if (resp.status != 200) return ErrorFromResponse(resp, "GET " + RedactUrl(url));
    return std::move(r.value());
  }
}

Result<RepoInfo> ParseRepoInfo(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return MakeError(ErrorKind::kIo, "repo info is not a JSON object");
  RepoInfo info;
  if (auto it = j.find("id"); it != j.end() && it->is_string()) info.id = it->get<std::string>();
  if (auto it = j.find("sha"); it != j.end() && it->is_string()) info.sha = it->get<std::string>();
  if (!IsHexDigits(info.sha, 40) || info.id.empty()) return MakeError(ErrorKind::kIo, "repo info lacks id or sha");
  if (auto it = j.find("lastModified"); it != j.end() && it->is_string())
    info.last_modified = ParseIsoTime(it->get<std::string>());
  if (auto it = j.find("private"); it != j.end() && it->is_boolean()) info.is_private = it->get<bool>();
  if (auto it = j.find("gated"); it != j.end())
    info.gated = it->is_string() || (it->is_boolean() && it->get<bool>());
  return info;
}

namespace {
std::string IsoTime(int64_t t) {
  if (t <= 0) return "";
  const time_t tt = static_cast<time_t>(t);
  tm g{};
  gmtime_r(&tt, &g);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S.000Z", &g);
  return buf;
}
}  // namespace

std::string RepoInfoJson(const RepoInfo& info) {
  json j = {{"id", info.id}, {"sha", info.sha}, {"private", info.is_private}, {"gated", info.gated}};
  if (info.last_modified > 0) j["lastModified"] = IsoTime(info.last_modified);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string TreeJson(const std::vector<TreeEntry>& entries) {
  json out = json::array();
  for (const auto& e : entries) {
    json j = {{"type", e.is_dir ? "directory" : "file"}, {"path", e.path}, {"oid", e.oid}};
    if (!e.is_dir) {
      j["size"] = e.size;
      if (!e.lfs_sha256.empty()) j["lfs"] = {{"oid", e.lfs_sha256}, {"size", e.size}};
    }
    out.push_back(std::move(j));
  }
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

Result<RepoInfo> HubClient::GetRepoInfo(RepoType type, const std::string& id, const std::string& revision,
                                        const CancelToken* cancel) const {
  std::string url = options_.endpoint + "/api/" + ApiCollection(type) + "/" + PercentEncode(id, true);
  if (!revision.empty()) url += "/revision/" + PercentEncode(revision, false);
  auto r = GetJson(url, cancel);
  if (!r.ok()) return r.error();
  return ParseRepoInfo(r->body);
}

Result<std::vector<TreeEntry>> HubClient::ListTree(RepoType type, const std::string& id, const std::string& commit,
                                                   const CancelToken* cancel) const {
  static auto& m_pages = metrics::Get("fetch.tree_pages");
  std::string url = options_.endpoint + "/api/" + ApiCollection(type) + "/" + PercentEncode(id, true) +
                    "/tree/" + PercentEncode(commit, false) + "?recursive=true&expand=false";
  std::vector<TreeEntry> all;
  for (size_t page = 0; page < kMaxPages; ++page) {
    auto r = GetJson(url, cancel);
    if (!r.ok()) return r.error();
    m_pages.Add();
    auto entries = ParseTreePage(r->body);
    if (!entries.ok()) return entries.error();
    for (auto& e : *entries) all.push_back(std::move(e));
    auto next = ParseLinkNext(r->Header("link"));
    if (!next) return all;
    if (!SameOrigin(*next, options_.endpoint))
      return MakeError(ErrorKind::kIo, "tree pagination link points to another origin");
    url = *next;
  }
  return MakeError(ErrorKind::kIo, "tree listing has too many pages");
}

Result<std::vector<std::string>> HubClient::ListRepos(RepoType type, const std::string& author,
                                                      const CancelToken* cancel) const {
  std::string url = options_.endpoint + "/api/" + ApiCollection(type) + "?author=" + PercentEncode(author, false) +
                    "&limit=1000";
  std::vector<std::string> ids;
  for (size_t page = 0; page < kMaxPages; ++page) {
    auto r = GetJson(url, cancel);
    if (!r.ok()) return r.error();
    json j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.is_array()) return MakeError(ErrorKind::kIo, "repo list is not a JSON array");
    for (const auto& e : j) {
      if (!e.is_object()) continue;
      auto it = e.find("id");
      if (it != e.end() && it->is_string()) ids.push_back(it->get<std::string>());
    }
    auto next = ParseLinkNext(r->Header("link"));
    if (!next) return ids;
    if (!SameOrigin(*next, options_.endpoint))
      return MakeError(ErrorKind::kIo, "repo list pagination link points to another origin");
    url = *next;
  }
  return MakeError(ErrorKind::kIo, "repo list has too many pages");
}

std::string HubClient::FileUrl(const FileLocation& loc, std::string_view action) const {
  return options_.endpoint + "/" + UrlPrefix(loc.type) + PercentEncode(loc.repo_id, true) + "/" +
         std::string(action) + "/" + PercentEncode(loc.commit, false) + "/" + PercentEncode(loc.path, true);
}

Result<size_t> HubClient::ReadRange(const FileLocation& loc, uint64_t offset, char* buf, size_t len,
                                    const CancelToken* cancel) const {
  static auto& m_bytes = metrics::Get("fetch.bytes");
  static auto& m_bad = metrics::Get("fetch.bad_responses");
  static auto& m_reresolve = metrics::Get("fetch.cdn_reresolve");
  static auto& h_latency = metrics::GetHistogram("fetch.range.latency_us");
  metrics::LatencyTimer timer(h_latency);
  if (offset >= loc.size || len == 0) return size_t{0};
  if (options_.offline) return MakeError(ErrorKind::kIo, "offline (--offline): not in the cache");
  const size_t want = static_cast<size_t>(std::min<uint64_t>(len, loc.size - offset));
  const std::string resolve_url = FileUrl(loc, "resolve");
  // A whole git-stored file (configs, tokenizers, small dataset files) is read from /raw/: one
  // request, where /resolve/ answers with a 307 to /api/resolve-cache/ first. Any failure there
  // falls back to /resolve/, the route every client uses.
  bool use_raw = loc.git_blob && offset == 0 && want == loc.size;

  int expired_cdn = 0;
  for (int attempt = 1;; ++attempt) {
    std::string url;
    {
      std::lock_guard lock(targets_mu_);
      auto it = targets_.find(resolve_url);
      if (it != targets_.end() && Clock::now() < it->second.expires) url = it->second.url;
    }
    const bool cached_target = !url.empty();
    if (!cached_target) url = use_raw ? FileUrl(loc, "raw") : resolve_url;
    const bool raw_attempt = !cached_target && use_raw;

    long hint_ms = -1;
    Error failure;
    bool retry = false;
    for (int hop = 0;; ++hop) {
      HttpRequest req;
      req.url = url;
      req.authorization = Authorization(url);
      req.range_begin = static_cast<int64_t>(offset);
      req.range_end = static_cast<int64_t>(offset + want - 1);
      req.sink = buf;
      req.sink_capacity = want;
      req.headers = {"Accept-Encoding: identity"};
      if (!WaitForPause(cancel)) return MakeError(ErrorKind::kIo, "rate limited by the Hub past the deadline", 429);
      auto r = http_->Perform(req, cancel);
      if (!r.ok()) {
        failure = r.error();
        retry = IsRetryableCurlCode(failure.curl_code) ||
                (failure.kind == ErrorKind::kIo && failure.message.find("larger") != std::string::npos);
        if (failure.kind == ErrorKind::kCancelled || failure.kind == ErrorKind::kTimeout) return failure;
        if (retry) m_bad.Add();
        break;
      }
      HttpResponse& resp = r.value();
      if (IsRedirect(resp.status)) {
        const std::string next = ResolveLocation(url, resp.Header("location"));
        if (next.empty() || hop >= kMaxRedirects) {
          failure = MakeError(ErrorKind::kIo, "bad redirect from resolve", static_cast<int>(resp.status));
          break;
        }
        url = next;
        continue;
      }
      const bool on_hub = SameOrigin(url, options_.endpoint);
      if (resp.status == 403 && !on_hub && expired_cdn < 2) {
        // The signed CDN URL expired: forget it and resolve again.
        std::lock_guard lock(targets_mu_);
        targets_.erase(resolve_url);
        ++expired_cdn;
        m_reresolve.Add();
        --attempt;
        failure = MakeError(ErrorKind::kAccessDenied, "CDN refused a signed URL", 403);
        retry = true;
        hint_ms = 0;
        break;
      }
      if (IsRetryableStatus(resp.status)) {
        failure = ErrorFromResponse(resp, "GET " + RedactUrl(url));
        hint_ms = ServerRetryHintMs(resp.Header("retry-after"), resp.Header("ratelimit"));
        if (resp.status == 429 && hint_ms > 0) PauseFor(hint_ms);
        retry = true;
        break;
      }
      if (resp.status == 416) return size_t{0};
      if (raw_attempt && resp.status != 206 && resp.status != 200) {
        use_raw = false;  // /raw/ refused: ask /resolve/ at once, which decides the errno
        --attempt;
        hint_ms = 0;
        retry = true;
        failure = ErrorFromResponse(resp, "GET " + RedactUrl(url));
        break;
      }
      if (resp.status != 206 && resp.status != 200) return ErrorFromResponse(resp, "GET " + RedactUrl(url));
      // Validate before trusting a byte: the exact range, the exact length.
      bool valid = resp.body_bytes == want;
      if (resp.status == 206) {
        const std::string cr = resp.Header("content-range");
        unsigned long long a = 0, b = 0;
        valid = valid && std::sscanf(cr.c_str(), "bytes %llu-%llu/", &a, &b) == 2 && a == offset &&
                b == offset + want - 1;
      } else {
        valid = valid && offset == 0 && want == loc.size;  // a 200 is the whole file or nothing
      }
      if (!valid) {
        use_raw = false;
        m_bad.Add();
        failure = MakeError(ErrorKind::kIo, "origin answered a different range or length",
                            static_cast<int>(resp.status));
        retry = true;
        break;
      }
      if (!on_hub && !cached_target) {
        Target t{url, Clock::now() + kMaxTargetAge};
        if (auto exp = QueryParam(url, "Expires")) {
          const long long at = std::strtoll(exp->c_str(), nullptr, 10);
          const long long left = at - static_cast<long long>(std::time(nullptr));
          t.expires = std::min(t.expires, Clock::now() + std::chrono::seconds(left) - kExpirySlack);
        }
        std::lock_guard lock(targets_mu_);
        if (targets_.size() >= kMaxTargets) targets_.clear();
        targets_[resolve_url] = std::move(t);
      }
      m_bytes.Add(want);
      return want;
    }
    if (!retry || !WaitBeforeRetry(attempt, hint_ms, cancel)) {
      // Out of retries (a CDN that keeps refusing fresh URLs included): the origin failed.
      if (retry && failure.kind != ErrorKind::kCancelled) failure.kind = ErrorKind::kIo;
      LOG_WARN("read %s/%s@%.8s/%s [%llu+%zu] failed: %s", ApiCollection(loc.type), loc.repo_id.c_str(),
               loc.commit.c_str(), loc.path.c_str(), static_cast<unsigned long long>(offset), want,
               failure.ToString().c_str());
      return failure;
    }
  }
}

}  // namespace hubfs::fetch
