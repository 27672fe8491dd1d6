// The name grammar under the mount: anything the Hub could never produce is rejected before a request.
#include "fs/names.h"

#include <gtest/gtest.h>

#include <string>

namespace hubfs::fs {
namespace {

TEST(IsValidIdPart, Table) {
  struct Row {
    std::string s;
    bool ok;
  };
  const Row rows[] = {
      {"gpt2", true},
      {"bert-base-uncased", true},
      {"Llama-3.1-8B", true},
      {"a", true},
      {"x_y.z-w", true},
      {"9", true},
      {std::string(96, 'a'), true},
      {std::string(97, 'a'), false},
      {"", false},
      {"a--b", false},
      {"a..b", false},
      {"-a", false},
      {"a-", false},
      {".a", false},
      {"a.", false},
      {"repo.git", false},
      {"repo.gitx", true},
      {"a/b", false},
      {"a b", false},
      {"a@b", false},
      {"caf\xC3\xA9", false},
      {std::string("a\0b", 3), false},
      {"..", false},
      {".", false},
  };
  for (const auto& r : rows) EXPECT_EQ(IsValidIdPart(r.s), r.ok) << '"' << r.s << '"';
}

TEST(ParseRepoDirName, NameOnly) {
  auto r = ParseRepoDirName("gpt2");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->name, "gpt2");
  EXPECT_EQ(r->revision, "");
}

TEST(ParseRepoDirName, NameAndRevision) {
  auto r = ParseRepoDirName("tiny@v1.0");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->name, "tiny");
  EXPECT_EQ(r->revision, "v1.0");
}

TEST(ParseRepoDirName, EncodedRevisionIsDecoded) {
  auto r = ParseRepoDirName("tiny@refs%2Fpr%2F1");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->name, "tiny");
  EXPECT_EQ(r->revision, "refs/pr/1");
  auto c = ParseRepoDirName("tiny@0123456789abcdef0123456789abcdef01234567");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->revision, "0123456789abcdef0123456789abcdef01234567");
}

TEST(ParseRepoDirName, Invalid) {
  for (const char* s : {"tiny@", "tiny@%2", "tiny@a%00b", "bad--name@main", "bad--name", "@main", "",
                        "tiny@%G1", "tiny@..", "tiny@a%2F%2Fb", "tiny@%2Fmain", "tiny@main%2F", "-x@main",
                        "tiny@a%0Ab"}) {
    EXPECT_FALSE(ParseRepoDirName(s).has_value()) << '"' << s << '"';
  }
}

TEST(IsValidRevision, Table) {
  EXPECT_TRUE(IsValidRevision("main"));
  EXPECT_TRUE(IsValidRevision("refs/pr/1"));
  EXPECT_TRUE(IsValidRevision("v1.0"));
  EXPECT_TRUE(IsValidRevision("0123456789abcdef0123456789abcdef01234567"));
  EXPECT_TRUE(IsValidRevision("feature/a.b"));
  EXPECT_TRUE(IsValidRevision(std::string(255, 'r')));
  EXPECT_FALSE(IsValidRevision(std::string(256, 'r')));
  EXPECT_FALSE(IsValidRevision(""));
  EXPECT_FALSE(IsValidRevision("/main"));
  EXPECT_FALSE(IsValidRevision("main/"));
  EXPECT_FALSE(IsValidRevision("refs//pr"));
  EXPECT_FALSE(IsValidRevision(".."));
  EXPECT_FALSE(IsValidRevision("a/../b"));
  EXPECT_FALSE(IsValidRevision(std::string("a\0b", 3)));
  EXPECT_FALSE(IsValidRevision("a\nb"));
  EXPECT_FALSE(IsValidRevision("a\tb"));
  EXPECT_FALSE(IsValidRevision("a\x7f"));
}

TEST(IsFullCommit, Table) {
  EXPECT_TRUE(IsFullCommit("0123456789abcdef0123456789abcdef01234567"));
  EXPECT_TRUE(IsFullCommit("0123456789ABCDEF0123456789ABCDEF01234567"));
  EXPECT_FALSE(IsFullCommit("0123456789abcdef0123456789abcdef0123456"));    // 39
  EXPECT_FALSE(IsFullCommit("0123456789abcdef0123456789abcdef012345678"));  // 41
  EXPECT_FALSE(IsFullCommit("g123456789abcdef0123456789abcdef01234567"));
  EXPECT_FALSE(IsFullCommit("main"));
  EXPECT_FALSE(IsFullCommit(""));
}

TEST(IsValidEntryName, Table) {
  EXPECT_TRUE(IsValidEntryName("config.json"));
  EXPECT_TRUE(IsValidEntryName(".gitattributes"));
  EXPECT_TRUE(IsValidEntryName("..."));
  EXPECT_TRUE(IsValidEntryName("a b"));
  EXPECT_TRUE(IsValidEntryName("caf\xC3\xA9"));
  EXPECT_TRUE(IsValidEntryName(std::string(255, 'n')));
  EXPECT_FALSE(IsValidEntryName(std::string(256, 'n')));
  EXPECT_FALSE(IsValidEntryName(""));
  EXPECT_FALSE(IsValidEntryName("."));
  EXPECT_FALSE(IsValidEntryName(".."));
  EXPECT_FALSE(IsValidEntryName("a/b"));
  EXPECT_FALSE(IsValidEntryName("/"));
  EXPECT_FALSE(IsValidEntryName(std::string("a\0b", 3)));
}

TEST(IsValidRepoPath, Table) {
  EXPECT_TRUE(IsValidRepoPath("a"));
  EXPECT_TRUE(IsValidRepoPath("a/b/c"));
  EXPECT_TRUE(IsValidRepoPath("onnx/model.onnx"));
  EXPECT_TRUE(IsValidRepoPath(".hidden/.x"));
  EXPECT_FALSE(IsValidRepoPath(""));
  EXPECT_FALSE(IsValidRepoPath("/a"));
  EXPECT_FALSE(IsValidRepoPath("a/"));
  EXPECT_FALSE(IsValidRepoPath("a//b"));
  EXPECT_FALSE(IsValidRepoPath("a/../b"));
  EXPECT_FALSE(IsValidRepoPath("../a"));
  EXPECT_FALSE(IsValidRepoPath("a/./b"));
  EXPECT_FALSE(IsValidRepoPath("/"));
  EXPECT_FALSE(IsValidRepoPath(std::string("a/\0", 3)));
  EXPECT_FALSE(IsValidRepoPath("a/" + std::string(256, 'x')));
}

}  // namespace
}  // namespace hubfs::fs
