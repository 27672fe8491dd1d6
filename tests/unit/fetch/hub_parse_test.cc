// The Hub client's pure parsers: the error matrix, timestamps, and tree listing pages.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "fetch/hub_client.h"

namespace hubfs::fetch {
namespace {

HttpResponse Resp(long status, std::vector<std::pair<std::string, std::string>> headers = {}) {
  HttpResponse r;
  r.status = status;
  r.headers = std::move(headers);
  return r;
}

// ---- ErrorFromResponse: the Hub's error matrix ----

struct ErrorRow {
  const char* name;
  long status;
  const char* code;     // X-Error-Code, "" for none
  const char* message;  // X-Error-Message, "" for none
  ErrorKind want;
};

TEST(ErrorFromResponse, HubErrorMatrix) {
  const ErrorRow rows[] = {
      // Private or missing repo, without a token (the Hub says 401 so as not to leak existence).
      {"401 RepoNotFound", 401, "RepoNotFound", "Repository Not Found for url: https://huggingface.co/api/models/x/y.",
       ErrorKind::kNotFound},
      {"404 RepoNotFound", 404, "RepoNotFound", "", ErrorKind::kNotFound},
      {"404 RevisionNotFound", 404, "RevisionNotFound", "Invalid rev id: nope", ErrorKind::kNotFound},
      {"404 EntryNotFound", 404, "EntryNotFound", "Entry not found", ErrorKind::kNotFound},
      {"401 GatedRepo", 401, "GatedRepo", "Access to model x/y is restricted.", ErrorKind::kAccessDenied},
      {"403 GatedRepo", 403, "GatedRepo", "Access to model x/y is restricted and you are not in the authorized list.",
       ErrorKind::kAccessDenied},
      {"401 invalid token", 401, "", "Invalid credentials in Authorization header", ErrorKind::kAccessDenied},
      // Invalid credentials win even when the Hub also names the repo as missing.
      {"401 invalid token + RepoNotFound", 401, "RepoNotFound", "Invalid credentials in Authorization header",
       ErrorKind::kAccessDenied},
      {"403 disabled", 403, "", "Access to this resource is disabled.", ErrorKind::kAccessDenied},
      {"403 bare", 403, "", "", ErrorKind::kAccessDenied},
      {"401 bare", 401, "", "", ErrorKind::kAccessDenied},
      {"404 bare", 404, "", "", ErrorKind::kNotFound},
      {"410 gone", 410, "", "", ErrorKind::kNotFound},
      {"500", 500, "", "Internal Error", ErrorKind::kIo},
      {"502", 502, "", "", ErrorKind::kIo},
      {"429", 429, "", "", ErrorKind::kIo},
      {"400", 400, "", "", ErrorKind::kIo},
  };
  for (const auto& row : rows) {
    std::vector<std::pair<std::string, std::string>> h = {{"content-type", "application/json"}};
    if (*row.code) h.emplace_back("x-error-code", row.code);
    if (*row.message) h.emplace_back("x-error-message", row.message);
    const Error e = ErrorFromResponse(Resp(row.status, h), "GET https://huggingface.co/api/models/x/y");
    EXPECT_EQ(e.kind, row.want) << row.name << " -> " << ErrorKindName(e.kind);
    EXPECT_EQ(e.http_status, row.status) << row.name;
    EXPECT_NE(e.message.find("GET https://huggingface.co/api/models/x/y"), std::string::npos) << row.name;
    EXPECT_NE(e.message.find(std::to_string(row.status)), std::string::npos) << row.name;
    if (*row.code) {
      EXPECT_NE(e.message.find(row.code), std::string::npos) << row.name;
    }
  }
}

TEST(ErrorFromResponse, LastHeaderWins) {
  // Headers are looked up last-wins (a redirect hop's headers come first).
  auto r = Resp(404, {{"x-error-code", "GatedRepo"}, {"x-error-code", "EntryNotFound"}});
  EXPECT_EQ(ErrorFromResponse(r, "x").kind, ErrorKind::kNotFound);
}

TEST(ErrorFromResponse, LongServerMessageIsBounded) {
  const std::string huge(100000, 'A');
  const Error e = ErrorFromResponse(Resp(500, {{"x-error-message", huge}}), "GET /x");
  EXPECT_EQ(e.kind, ErrorKind::kIo);
  EXPECT_LT(e.message.size(), 1000u);
}

// ---- ParseIsoTime ----

TEST(ParseIsoTime, HubFormat) {
  EXPECT_EQ(ParseIsoTime("2019-09-23T19:48:44.000Z"), 1569268124);
  EXPECT_EQ(ParseIsoTime("2019-09-23T19:48:44Z"), 1569268124);
  EXPECT_EQ(ParseIsoTime("1970-01-01T00:00:00.000Z"), 0);
  EXPECT_EQ(ParseIsoTime("2024-02-29T12:00:00.000Z"), 1709208000);  // leap day
  EXPECT_EQ(ParseIsoTime("2038-01-19T03:14:08.000Z"), 2147483648LL);  // past 32-bit time_t
}

TEST(ParseIsoTime, MalformedIsZero) {
  for (const char* s : {"", "garbage", "2019-09-23", "2019-09-23T19:48", "2019-13-01T00:00:00Z",
                        "2019-00-10T00:00:00Z", "2019-09-00T00:00:00Z", "2019-09-32T00:00:00Z",
                        "2019-09-23T24:00:00Z", "2019-09-23T19:60:00Z", "1969-12-31T23:59:59Z",
                        "T19:48:44.000Z", "yyyy-mm-ddThh:mm:ss"}) {
    EXPECT_EQ(ParseIsoTime(s), 0) << '"' << s << '"';
  }
}

// ---- ParseTreePage ----

const std::string kOid1 = "0123456789abcdef0123456789abcdef01234567";
const std::string kOid2 = "89abcdef0123456789abcdef0123456789abcdef";
const std::string kSha = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

TEST(ParseTreePage, FileLfsFileAndDirectory) {
  const std::string body = R"([
    {"type":"file","oid":")" + kOid1 + R"(","size":665,"path":"config.json"},
    {"type":"file","oid":")" + kOid2 + R"(","size":135,
     "lfs":{"oid":")" + kSha + R"(","size":548105171,"pointerSize":135},"path":"model.safetensors"},
    {"type":"directory","oid":")" + kOid1 + R"(","size":0,"path":"onnx"}
  ])";
  auto r = ParseTreePage(body);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  ASSERT_EQ(r->size(), 3u);
  const TreeEntry& f = (*r)[0];
  EXPECT_EQ(f.path, "config.json");
  EXPECT_FALSE(f.is_dir);
  EXPECT_EQ(f.size, 665u);
  EXPECT_EQ(f.oid, kOid1);
  EXPECT_TRUE(f.lfs_sha256.empty());
  const TreeEntry& l = (*r)[1];
  EXPECT_EQ(l.path, "model.safetensors");
  EXPECT_FALSE(l.is_dir);
  EXPECT_EQ(l.size, 548105171u);  // the real size, not the pointer's
  EXPECT_EQ(l.lfs_sha256, kSha);
  EXPECT_EQ(l.oid, kOid2);
  const TreeEntry& d = (*r)[2];
  EXPECT_EQ(d.path, "onnx");
  EXPECT_TRUE(d.is_dir);
}

TEST(ParseTreePage, LargeSizes) {
  auto r = ParseTreePage(R"([{"type":"file","oid":")" + kOid1 +
                         R"(","size":135,"lfs":{"oid":")" + kSha + R"(","size":18446744073709551615},"path":"big"}])");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].size, 18446744073709551615ULL);
}

TEST(ParseTreePage, EmptyArray) {
  auto r = ParseTreePage("[]");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST(ParseTreePage, EntriesMissingFieldsAreSkipped) {
  const std::string good = R"({"type":"file","oid":")" + kOid1 + R"(","size":1,"path":"good"})";
  const std::vector<std::string> bad = {
      R"({"oid":")" + kOid1 + R"(","size":1,"path":"no-type"})",
      R"({"type":"file","oid":")" + kOid1 + R"(","size":1})",
      R"({"type":"file","oid":")" + kOid1 + R"(","size":1,"path":17})",
      R"({"type":7,"oid":")" + kOid1 + R"(","size":1,"path":"type-not-string"})",
      R"({"type":"file","oid":")" + kOid1 + R"(","path":"no-size"})",
      R"({"type":"file","oid":")" + kOid1 + R"(","size":-1,"path":"negative-size"})",
      R"({"type":"file","oid":")" + kOid1 + R"(","size":"12","path":"string-size"})",
      R"({"type":"file","oid":")" + kOid1 + R"(","size":1.5,"path":"float-size"})",
      R"({"type":"file","size":1,"path":"no-oid"})",
      R"({"type":"file","oid":"xyz","size":1,"path":"short-oid"})",
      R"({"type":"file","oid":"zz23456789abcdef0123456789abcdef01234567","size":1,"path":"non-hex-oid"})",
      R"({"type":"file","size":1,"lfs":{"oid":"nothex","size":5},"path":"lfs-bad-oid-and-no-oid"})",
      R"({"type":"submodule","oid":")" + kOid1 + R"(","size":1,"path":"sub"})",
      R"({"type":"symlink","oid":")" + kOid1 + R"(","size":1,"path":"link"})",
      R"(null)", R"(42)", R"("file")", R"([])",
  };
  std::string body = "[" + good;
  for (const auto& b : bad) body += "," + b;
  body += "," + good + "]";
  auto r = ParseTreePage(body);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  ASSERT_EQ(r->size(), 2u);
  for (const auto& e : *r) EXPECT_EQ(e.path, "good");
}

TEST(ParseTreePage, LfsWithBadShaFallsBackToGitOid) {
  auto r = ParseTreePage(R"([{"type":"file","oid":")" + kOid1 +
                         R"(","size":10,"lfs":{"oid":"not-a-sha","size":10},"path":"x"}])");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_TRUE((*r)[0].lfs_sha256.empty());
  EXPECT_EQ((*r)[0].oid, kOid1);
}

TEST(ParseTreePage, NonArrayAndInvalidJsonAreErrors) {
  for (const std::string& body : {std::string(R"({"error":"Repository not found"})"), std::string("\"str\""),
                                 std::string("42"), std::string("null"), std::string(""), std::string("[{"),
                                 std::string("[1,2"), std::string("not json"), std::string("[]]"),
                                 std::string("\xff\xfe[]")}) {
    auto r = ParseTreePage(body);
    EXPECT_FALSE(r.ok()) << '"' << body << '"';
    if (!r.ok()) {
      EXPECT_EQ(r.error().kind, ErrorKind::kIo);
    }
  }
}

TEST(ParseTreePage, DeeplyNestedGarbageDoesNotCrash) {
  const size_t depth = 200000;
  std::string nested(depth, '[');
  nested += std::string(depth, ']');
  auto r = ParseTreePage(nested);  // a valid array holding only garbage
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());

  std::string objects;
  for (size_t i = 0; i < depth; ++i) objects += "{\"a\":";
  objects += "1" + std::string(depth, '}');
  auto r2 = ParseTreePage("[" + objects + "]");  // one object without type or path: skipped
  ASSERT_TRUE(r2.ok());
  EXPECT_TRUE(r2->empty());

  std::string unterminated(depth, '[');
  EXPECT_FALSE(ParseTreePage(unterminated).ok());
}

TEST(ParseTreePage, HugeListing) {
  std::string body = "[";
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    if (i) body += ',';
    body += R"({"type":"file","oid":")" + kOid1 + R"(","size":)" + std::to_string(i) + R"(,"path":"d/f)" +
            std::to_string(i) + "\"}";
  }
  body += "]";
  auto r = ParseTreePage(body);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), static_cast<size_t>(n));
  EXPECT_EQ((*r)[n - 1].path, "d/f" + std::to_string(n - 1));
  EXPECT_EQ((*r)[n - 1].size, static_cast<uint64_t>(n - 1));
}

// ---- The records kept for offline use: written in the Hub's shapes, read back by its parsers ----

TEST(OfflineRecords, RepoInfoRoundTrips) {
  RepoInfo in;
  in.id = "org/model \u00fc";
  in.sha = std::string(40, 'a');
  in.last_modified = 1700000000;
  in.is_private = true;
  in.gated = true;
  auto out = ParseRepoInfo(RepoInfoJson(in));
  ASSERT_TRUE(out.ok()) << out.error().ToString();
  EXPECT_EQ(out->id, in.id);
  EXPECT_EQ(out->sha, in.sha);
  EXPECT_EQ(out->last_modified, in.last_modified);
  EXPECT_TRUE(out->is_private);
  EXPECT_TRUE(out->gated);
  in.last_modified = 0;
  in.gated = in.is_private = false;
  out = ParseRepoInfo(RepoInfoJson(in));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->last_modified, 0);
  EXPECT_FALSE(out->gated);
}

TEST(OfflineRecords, ParseRepoInfoRefusesWhatIsNotOne) {
  EXPECT_FALSE(ParseRepoInfo("").ok());
  EXPECT_FALSE(ParseRepoInfo("[]").ok());
  EXPECT_FALSE(ParseRepoInfo(R"({"id":"a/b","sha":"short"})").ok());
  EXPECT_FALSE(ParseRepoInfo(R"({"sha":")" + std::string(40, 'b') + R"("})").ok());
  EXPECT_TRUE(ParseRepoInfo(R"({"id":"a/b","sha":")" + std::string(40, 'b') + R"("})").ok());
}

TEST(OfflineRecords, TreeRoundTrips) {
  std::vector<TreeEntry> in;
  in.push_back({"a", true, 0, std::string(40, '1'), ""});
  in.push_back({"a/config.json", false, 314, std::string(40, '2'), ""});
  in.push_back({"model.safetensors", false, 5ULL << 32, std::string(40, '3'), std::string(64, 'f')});
  in.push_back({"docs/hello w\u00f6rld.txt", false, 0, std::string(40, '4'), ""});
  auto out = ParseTreePage(TreeJson(in));
  ASSERT_TRUE(out.ok()) << out.error().ToString();
  ASSERT_EQ(out->size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ((*out)[i].path, in[i].path);
    EXPECT_EQ((*out)[i].is_dir, in[i].is_dir);
    EXPECT_EQ((*out)[i].size, in[i].size);
    EXPECT_EQ((*out)[i].oid, in[i].oid);
    EXPECT_EQ((*out)[i].lfs_sha256, in[i].lfs_sha256);
  }
  EXPECT_EQ(TreeJson({}), "[]");
}

}  // namespace
}  // namespace hubfs::fetch
