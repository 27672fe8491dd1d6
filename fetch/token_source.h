// Where the Hub token comes from, found the way huggingface_hub finds it, and kept current.
//
// A token from the environment is fixed: a process's environment never changes. A token file is
// watched: `hf auth login`, `hf auth logout` or a rotated token on a running mount take effect on
// the next Hub request (within `recheck`, one second by default), with no remount. The file is
// stat'ed at most once per `recheck`, and read again only when its identity (inode, size, mtime,
// ctime) changed. The token's value is never logged; only whether one is set.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/file_util.h"

namespace hubfs::fetch {

// A huggingface_hub boolean variable: true when, upper-cased, it is 1, ON, YES or TRUE.
bool HubEnvTrue(std::string_view value);

// huggingface_hub's directories, found as it finds them (`env` looks a variable up, "" when unset;
// a leading ~/ is `home`, as Python's expanduser does): HF_HOME is $HF_HOME, else
// $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface; its download cache is $HF_HUB_CACHE,
// else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub.
std::string HfHomeDir(const std::function<std::string(const char*)>& env, const std::string& home);
std::string HfHubCacheDir(const std::function<std::string(const char*)>& env, const std::string& home);

// CR and LF removed, spaces and tabs trimmed; an empty result means "no token".
std::string CleanToken(std::string_view raw);

class TokenSource {
 public:
  using Clock = std::chrono::steady_clock;

  static std::shared_ptr<TokenSource> None();
  static std::shared_ptr<TokenSource> Fixed(std::string token, std::string origin);
  // Reads the file now. A missing file is no token (yet): it is picked up when it appears.
  static std::shared_ptr<TokenSource> File(std::string path, std::string origin,
                                           Clock::duration recheck = std::chrono::seconds(1));

  // The lookup order of huggingface_hub: an explicit --token-file, else (unless
  // HF_HUB_DISABLE_IMPLICIT_TOKEN) $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, then the file
  // $HF_TOKEN_PATH, else $HF_HOME/token, else $XDG_CACHE_HOME/huggingface/token, else
  // ~/.cache/huggingface/token. `env` looks a variable up ("" when unset); a leading ~/ in
  // HF_TOKEN_PATH or HF_HOME is `home`, as Python expands it.
  static std::shared_ptr<TokenSource> Discover(const std::string& token_file,
                                               const std::function<std::string(const char*)>& env,
                                               const std::string& home);

  // The current token, "" when there is none.
  std::string Get();
  bool watched() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  // Where the token comes from, for the log: "--token-file /etc/hubfs/token", "$HF_TOKEN"...
  const std::string& origin() const { return origin_; }

 private:
  TokenSource(std::string token, std::string path, std::string origin, Clock::duration recheck);
  void Reload(const FileIdentity& id, bool announce);  // mu_ held

  std::mutex mu_;
  std::string token_;
  const std::string path_;  // empty: fixed
  const std::string origin_;
  const Clock::duration recheck_;
  Clock::time_point next_check_{};
  FileIdentity seen_;
};

}  // namespace hubfs::fetch
