// The Hub token's source: huggingface_hub's lookup order, and a token file followed as it changes.
#include "fetch/token_source.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "tests/unit/test_util.h"

namespace hubfs::fetch {
namespace {

using hubfs::testing::TempDir;
using hubfs::testing::WriteFileBytes;
using std::chrono::hours;
using std::chrono::seconds;

TEST(TokenSource, CleanTokenLikeHuggingfaceHub) {
  EXPECT_EQ(CleanToken("hf_abc\n"), "hf_abc");
  EXPECT_EQ(CleanToken("\r\n  hf_abc \t\r\n"), "hf_abc");
  EXPECT_EQ(CleanToken("hf_a\r\nbc"), "hf_abc");  // CR and LF removed anywhere, as Python does
  EXPECT_EQ(CleanToken(" \t\r\n"), "");
  EXPECT_EQ(CleanToken(""), "");
}

struct Env {
  std::map<std::string, std::string> vars;
  std::string operator()(const char* name) const {
    auto it = vars.find(name);
    return it == vars.end() ? "" : it->second;
  }
};

TEST(TokenSource, HuggingfaceHubsDownloadCacheIsFoundAsItFindsIt) {
  Env env;
  EXPECT_EQ(HfHubCacheDir(env, "/h"), "/h/.cache/huggingface/hub");
  env.vars["XDG_CACHE_HOME"] = "/xdg";
  EXPECT_EQ(HfHubCacheDir(env, "/h"), "/xdg/huggingface/hub");
  env.vars["HF_HOME"] = "~/hf";
  EXPECT_EQ(HfHomeDir(env, "/h"), "/h/hf");
  EXPECT_EQ(HfHubCacheDir(env, "/h"), "/h/hf/hub");
  env.vars["HUGGINGFACE_HUB_CACHE"] = "/legacy";
  EXPECT_EQ(HfHubCacheDir(env, "/h"), "/legacy");
  env.vars["HF_HUB_CACHE"] = "~/hub";
  EXPECT_EQ(HfHubCacheDir(env, "/h"), "/h/hub");
}

TEST(TokenSource, DiscoverFollowsTheLookupOrder) {
  TempDir d;
  const std::string home = d.path() + "/home";
  const std::string hf_home = d.path() + "/hf";
  const std::string xdg = d.path() + "/xdg";
  for (const auto& dir : {home, home + "/.cache", home + "/.cache/huggingface", hf_home, xdg, xdg + "/huggingface"})
    ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0) << dir;
  WriteFileBytes(home + "/.cache/huggingface/token", "hf_home\n");
  WriteFileBytes(xdg + "/huggingface/token", "hf_xdg\n");
  WriteFileBytes(hf_home + "/token", "hf_hfhome\n");
  WriteFileBytes(d.path() + "/path", "hf_path\n");
  WriteFileBytes(d.path() + "/flag", "hf_flag\n");

  Env env;
  auto s = TokenSource::Discover("", env, home);
  EXPECT_EQ(s->Get(), "hf_home");
  EXPECT_TRUE(s->watched());
  EXPECT_EQ(s->path(), home + "/.cache/huggingface/token");

  env.vars["XDG_CACHE_HOME"] = xdg;
  EXPECT_EQ(TokenSource::Discover("", env, home)->Get(), "hf_xdg");
  env.vars["HF_HOME"] = hf_home;
  EXPECT_EQ(TokenSource::Discover("", env, home)->Get(), "hf_hfhome");
  env.vars["HF_HOME"] = "~/.cache/huggingface";  // ~/ is the home directory, as Python expands it
  EXPECT_EQ(TokenSource::Discover("", env, home)->Get(), "hf_home");
  env.vars["HF_HOME"] = hf_home;
  env.vars["HF_TOKEN_PATH"] = d.path() + "/path";
  EXPECT_EQ(TokenSource::Discover("", env, home)->Get(), "hf_path");
  env.vars["HUGGING_FACE_HUB_TOKEN"] = " hf_legacy\n";
  s = TokenSource::Discover("", env, home);
  EXPECT_EQ(s->Get(), "hf_legacy");
  EXPECT_FALSE(s->watched());
  EXPECT_EQ(s->origin(), "$HUGGING_FACE_HUB_TOKEN");
  env.vars["HF_TOKEN"] = "hf_env";
  s = TokenSource::Discover("", env, home);
  EXPECT_EQ(s->Get(), "hf_env");
  EXPECT_EQ(s->origin(), "$HF_TOKEN");
  // An empty (or blank) variable is no token: the next source is asked.
  env.vars["HF_TOKEN"] = " \n";
  EXPECT_EQ(TokenSource::Discover("", env, home)->Get(), "hf_legacy");
  env.vars["HF_TOKEN"] = "hf_env";

  // An explicit file wins over everything, the environment included.
  s = TokenSource::Discover(d.path() + "/flag", env, home);
  EXPECT_EQ(s->Get(), "hf_flag");
  EXPECT_EQ(s->origin(), "--token-file " + d.path() + "/flag");

  // HF_HUB_DISABLE_IMPLICIT_TOKEN: nothing implicit is sent; an explicit file still is.
  for (const char* yes : {"1", "true", "ON", "yes"}) {
    env.vars["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = yes;
    EXPECT_EQ(TokenSource::Discover("", env, home)->Get(), "") << yes;
  }
  EXPECT_EQ(TokenSource::Discover(d.path() + "/flag", env, home)->Get(), "hf_flag");
  env.vars["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "0";
  EXPECT_EQ(TokenSource::Discover("", env, home)->Get(), "hf_env");
}

TEST(TokenSource, FileIsFollowedThroughLoginRotationAndLogout) {
  TempDir d;
  const std::string path = d.path() + "/token";
  auto s = TokenSource::File(path, "test", seconds(0));
  EXPECT_EQ(s->Get(), "");  // mounted before any login

  WriteFileBytes(path, "hf_first\n");  // hf auth login
  EXPECT_EQ(s->Get(), "hf_first");
  EXPECT_EQ(s->Get(), "hf_first");

  WriteFileBytes(path, "hf_second_longer\n");  // rewritten in place
  EXPECT_EQ(s->Get(), "hf_second_longer");

  // Replaced by rename, the way atomic writers (and Kubernetes secrets) do it.
  WriteFileBytes(path + ".new", "hf_third\n");
  ASSERT_EQ(std::rename((path + ".new").c_str(), path.c_str()), 0);
  EXPECT_EQ(s->Get(), "hf_third");

  ASSERT_EQ(::unlink(path.c_str()), 0);  // hf auth logout
  EXPECT_EQ(s->Get(), "");

  WriteFileBytes(path, "hf_again\n");
  EXPECT_EQ(s->Get(), "hf_again");
  WriteFileBytes(path, "\n");  // emptied: no token, as Python reads it
  EXPECT_EQ(s->Get(), "");
}

TEST(TokenSource, AnUnreadableFileKeepsTheTokenReadBefore) {
  TempDir d;
  const std::string path = d.path() + "/token";
  WriteFileBytes(path, "hf_kept\n");
  auto s = TokenSource::File(path, "test", seconds(0));
  EXPECT_EQ(s->Get(), "hf_kept");
  // Something that exists but cannot be read as a file (root reads any mode, so a directory):
  // not a logout.
  ASSERT_EQ(::unlink(path.c_str()), 0);
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
  EXPECT_EQ(s->Get(), "hf_kept");
  ASSERT_EQ(::rmdir(path.c_str()), 0);
  EXPECT_EQ(s->Get(), "");
  // Far too large to be a token: refused, not read into memory.
  WriteFileBytes(path, "hf_small\n");
  EXPECT_EQ(s->Get(), "hf_small");
  WriteFileBytes(path, std::string(1 << 20, 'x'));
  EXPECT_EQ(s->Get(), "hf_small");
}

TEST(TokenSource, TheFileIsCheckedAtMostOncePerRecheck) {
  TempDir d;
  const std::string path = d.path() + "/token";
  WriteFileBytes(path, "hf_one\n");
  auto s = TokenSource::File(path, "test", hours(1));
  EXPECT_EQ(s->Get(), "hf_one");
  WriteFileBytes(path, "hf_two_changed\n");
  EXPECT_EQ(s->Get(), "hf_one");  // not stat'ed again within the hour
}

TEST(TokenSource, RelativePathIsMadeAbsolute) {
  TempDir d;
  WriteFileBytes(d.path() + "/token", "hf_rel\n");
  char* cwd = ::getcwd(nullptr, 0);
  ASSERT_NE(cwd, nullptr);
  ASSERT_EQ(::chdir(d.path().c_str()), 0);
  auto s = TokenSource::File("token", "test", seconds(0));
  ASSERT_EQ(::chdir("/"), 0);  // as a daemon does
  EXPECT_EQ(s->path(), d.path() + "/token");
  WriteFileBytes(d.path() + "/token", "hf_rel_changed\n");
  EXPECT_EQ(s->Get(), "hf_rel_changed");
  ASSERT_EQ(::chdir(cwd), 0);
  std::free(cwd);
}

TEST(TokenSource, FixedNeverChanges) {
  auto s = TokenSource::Fixed(" hf_fixed\n", "$HF_TOKEN");
  EXPECT_EQ(s->Get(), "hf_fixed");
  EXPECT_FALSE(s->watched());
  EXPECT_EQ(TokenSource::None()->Get(), "");
}

// Readers on many threads while the file is rewritten (run under TSan too): every token read is
// one that was written whole, never a torn or empty one.
TEST(TokenSource, ConcurrentReadersSeeWholeTokens) {
  TempDir d;
  const std::string path = d.path() + "/token";
  const std::vector<std::string> tokens = {"hf_aaaa", "hf_bbbbbbbb", "hf_cccccccccccc"};
  WriteFileBytes(path, tokens[0]);
  auto s = TokenSource::File(path, "test", seconds(0));
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t)
    readers.emplace_back([&] {
      const std::set<std::string> ok(tokens.begin(), tokens.end());
      while (!stop.load()) {
        if (!ok.count(s->Get())) bad.fetch_add(1);
      }
    });
  for (int i = 0; i < 200; ++i) {
    const std::string tmp = path + ".tmp";
    WriteFileBytes(tmp, tokens[static_cast<size_t>(i) % tokens.size()]);
    ASSERT_EQ(std::rename(tmp.c_str(), path.c_str()), 0);
  }
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(s->Get(), tokens[199 % tokens.size()]);
}

}  // namespace
}  // namespace hubfs::fetch
