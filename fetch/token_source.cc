// The Hub token's source (see token_source.h).
#include "fetch/token_source.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/file_util.h"
#include "common/log.h"

namespace hubfs::fetch {
namespace {

constexpr size_t kMaxTokenFile = 64 * 1024;  // a token is ~40 bytes; anything larger is not one

}  // namespace

bool HubEnvTrue(std::string_view value) {
  std::string v(value);
  for (char& c : v) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return v == "1" || v == "ON" || v == "YES" || v == "TRUE";
}

namespace {
std::string ExpandHome(const std::string& p, const std::string& home) {
  return p.rfind("~/", 0) == 0 ? home + p.substr(1) : p;
}
}  // namespace

std::string HfHomeDir(const std::function<std::string(const char*)>& env, const std::string& home) {
  if (std::string h = ExpandHome(env("HF_HOME"), home); !h.empty()) return h;
  const std::string xdg = ExpandHome(env("XDG_CACHE_HOME"), home);
  return (xdg.empty() ? home + "/.cache" : xdg) + "/huggingface";
}

std::string HfHubCacheDir(const std::function<std::string(const char*)>& env, const std::string& home) {
  for (const char* name : {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"})
    if (std::string d = ExpandHome(env(name), home); !d.empty()) return d;
  return HfHomeDir(env, home) + "/hub";
}

std::string CleanToken(std::string_view raw) {
  std::string out;
  for (char c : raw)
    if (c != '\r' && c != '\n') out.push_back(c);
  const size_t b = out.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return out.substr(b, out.find_last_not_of(" \t") - b + 1);
}

TokenSource::TokenSource(std::string token, std::string path, std::string origin, Clock::duration recheck)
    : token_(std::move(token)), path_(std::move(path)), origin_(std::move(origin)), recheck_(recheck) {}

std::shared_ptr<TokenSource> TokenSource::None() {
  return std::shared_ptr<TokenSource>(new TokenSource("", "", "none", {}));
}

std::shared_ptr<TokenSource> TokenSource::Fixed(std::string token, std::string origin) {
  return std::shared_ptr<TokenSource>(new TokenSource(CleanToken(token), "", std::move(origin), {}));
}

std::shared_ptr<TokenSource> TokenSource::File(std::string path, std::string origin, Clock::duration recheck) {
  // A daemon changes its directory to /: a relative path is made absolute while it still means
  // what the user meant.
  if (!path.empty() && path[0] != '/') {
    if (char* cwd = ::getcwd(nullptr, 0)) {
      path = std::string(cwd) + "/" + path;
      std::free(cwd);
    }
  }
  std::shared_ptr<TokenSource> s(new TokenSource("", std::move(path), std::move(origin), recheck));
  std::lock_guard lock(s->mu_);
  s->Reload(StatIdentity(s->path_), /*announce=*/false);
  s->next_check_ = Clock::now() + recheck;
  return s;
}

std::shared_ptr<TokenSource> TokenSource::Discover(const std::string& token_file,
                                                   const std::function<std::string(const char*)>& env,
                                                   const std::string& home) {
  if (!token_file.empty()) return File(token_file, "--token-file " + token_file);
  if (HubEnvTrue(env("HF_HUB_DISABLE_IMPLICIT_TOKEN"))) return None();
  for (const char* name : {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})
    if (auto t = CleanToken(env(name)); !t.empty()) return Fixed(t, std::string("$") + name);
  if (auto p = ExpandHome(env("HF_TOKEN_PATH"), home); !p.empty()) return File(p, "$HF_TOKEN_PATH " + p);
  const std::string path = HfHomeDir(env, home) + "/token";
  return File(path, "token file " + path);
}

void TokenSource::Reload(const FileIdentity& id, bool announce) {
  seen_ = id;
  const bool had = !token_.empty();
  if (!id.exists) {
    token_.clear();
    if (had && announce) LOG_INFO("token file %s is gone: no token from now on", path_.c_str());
    return;
  }
  std::string raw;
  if (const int e = ReadFileUpTo(path_, kMaxTokenFile, &raw); e != 0) {
    // Unreadable is not "logged out": keep what we had, and say so once per change of the file.
    LOG_WARN("token file %s: %s; %s", path_.c_str(), std::strerror(e),
             had ? "keeping the token read before" : "no token");
    return;
  }
  std::string next = CleanToken(raw);
  if (next == token_) return;
  token_ = std::move(next);
  if (announce)
    LOG_INFO("token file %s changed: %s", path_.c_str(), token_.empty() ? "no token" : "a new token is in use");
}

std::string TokenSource::Get() {
  std::lock_guard lock(mu_);
  if (path_.empty()) return token_;
  const auto now = Clock::now();
  if (now >= next_check_) {
    next_check_ = now + recheck_;
    if (const FileIdentity id = StatIdentity(path_); !(id == seen_)) Reload(id, /*announce=*/true);
  }
  return token_;
}

}  // namespace hubfs::fetch
