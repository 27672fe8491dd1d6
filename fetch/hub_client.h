// The Hub API client: repo info, tree listing (recursive, Link-paginated), org listings, and byte
// range reads through `resolve` (following the 302 of LFS files to the CDN, whose signed URL is
// cached until shortly before it expires, and re-resolved when the CDN says 403).
//
// Every request goes through one retry loop (retry.h) bounded by the caller's CancelToken deadline.
// The token is attached only to URLs on the endpoint's own origin: never to a CDN, never to a
// pagination link that points elsewhere, never into a log line.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/cancel.h"
#include "common/status.h"
#include "fetch/http_client.h"
#include "fetch/retry.h"
#include "fetch/token_source.h"

namespace hubfs::fetch {

enum class RepoType : uint8_t { kModel, kDataset, kSpace };
const char* ApiCollection(RepoType type);  // "models", "datasets", "spaces"
const char* UrlPrefix(RepoType type);      // "", "datasets/", "spaces/"

struct RepoInfo {
  std::string id;   // canonical "org/name" (legacy aliases resolve to it)
  std::string sha;  // 40-hex commit the revision resolved to
  int64_t last_modified = 0;  // unix seconds
  bool is_private = false;
  bool gated = false;
};

struct TreeEntry {
  std::string path;  // full path from the repo root
  bool is_dir = false;
  uint64_t size = 0;
  std::string oid;         // git blob (or tree) sha1
  std::string lfs_sha256;  // empty unless stored in LFS
};

struct FileLocation {
  RepoType type = RepoType::kModel;
  std::string repo_id;
  std::string commit;
  std::string path;
  uint64_t size = 0;
  // Stored in git, not LFS: its /raw/ URL serves the bytes themselves, with no redirect.
  bool git_blob = false;
};

struct HubOptions {
  std::string endpoint = "https://huggingface.co";  // no trailing '/'
  std::shared_ptr<TokenSource> token;                // null: no token
  RetryPolicy retry;
  // Never contact the Hub or the CDN: every request fails at once (kIo), so a mount serves what
  // its cache holds (huggingface_hub's HF_HUB_OFFLINE).
  bool offline = false;
};

// Maps a Hub error answer (X-Error-Code, status) to an Error kind. Exposed for tests.
Error ErrorFromResponse(const HttpResponse& r, const std::string& what);
// Parses "2019-09-23T19:48:44.000Z"; 0 when malformed.
int64_t ParseIsoTime(const std::string& s);
// Parses a repo info answer; an answer without a 40-hex sha or an id is an Error.
Result<RepoInfo> ParseRepoInfo(const std::string& body);
// The same shapes written back, for records kept while offline: ParseRepoInfo(RepoInfoJson(i))
// and ParseTreePage(TreeJson(v)) give back what was written.
std::string RepoInfoJson(const RepoInfo& info);
std::string TreeJson(const std::vector<TreeEntry>& entries);
// Parses one page of a tree listing; malformed entries are skipped, malformed JSON is an Error.
Result<std::vector<TreeEntry>> ParseTreePage(const std::string& body);

class HubClient {
 public:
  HubClient(HubOptions options, std::shared_ptr<HttpClient> http);

  Result<RepoInfo> GetRepoInfo(RepoType type, const std::string& id, const std::string& revision,
                               const CancelToken* cancel) const;
  Result<std::vector<TreeEntry>> ListTree(RepoType type, const std::string& id, const std::string& commit,
                                          const CancelToken* cancel) const;
  Result<std::vector<std::string>> ListRepos(RepoType type, const std::string& author,
                                             const CancelToken* cancel) const;
  // Reads [offset, offset+len) of the file into buf. Returns the byte count: len, or less at EOF.
  // Never returns wrong bytes: a short body, a wrong Content-Range or a 200 for a Range is retried.
  Result<size_t> ReadRange(const FileLocation& loc, uint64_t offset, char* buf, size_t len,
                           const CancelToken* cancel) const;

  const HubOptions& options() const { return options_; }

 private:
  struct Target {
    std::string url;
    std::chrono::steady_clock::time_point expires;
  };
  std::string Authorization(const std::string& url) const;
  // GET a JSON API URL with retries, following same-origin redirects.
  Result<HttpResponse> GetJson(const std::string& url, const CancelToken* cancel) const;
  // Sleeps for the backoff before retry `attempt`; false when the deadline or cancel forbids it.
  bool WaitBeforeRetry(int attempt, long hint_ms, const CancelToken* cancel) const;
  // {endpoint}/{type prefix}{repo}/{action}/{commit}/{path}, action "resolve" or "raw".
  std::string FileUrl(const FileLocation& loc, std::string_view action) const;
  // A 429 pauses every request to the origin until its reset time, not just the one that got it:
  // the mount slows down as a whole instead of hammering a rate limit with parallel fetches.
  void PauseFor(long ms) const;
  bool WaitForPause(const CancelToken* cancel) const;

  HubOptions options_;
  std::shared_ptr<HttpClient> http_;
  mutable std::atomic<int64_t> pause_until_ns_{0};  // steady clock
  mutable std::mutex targets_mu_;
  mutable std::unordered_map<std::string, Target> targets_;  // resolve URL -> final (CDN) URL
};

}  // namespace hubfs::fetch
