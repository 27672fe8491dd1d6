// URL helpers: percent-encoding, origins (where the token may go), redirects, Link pagination.
#include "fetch/url.h"

#include <gtest/gtest.h>

#include <string>

namespace hubfs::fetch {
namespace {

// ---- PercentEncode ----

TEST(PercentEncode, RevisionWithSlashIsOneSegment) {
  EXPECT_EQ(PercentEncode("refs/pr/1", /*keep_slash=*/false), "refs%2Fpr%2F1");
  EXPECT_EQ(PercentEncode("main", false), "main");
}

TEST(PercentEncode, PathKeepsSlashes) {
  EXPECT_EQ(PercentEncode("onnx/model.onnx", /*keep_slash=*/true), "onnx/model.onnx");
  EXPECT_EQ(PercentEncode("a b/c#d?e", true), "a%20b/c%23d%3Fe");
}

TEST(PercentEncode, UnreservedKeptEverythingElseEscaped) {
  EXPECT_EQ(PercentEncode("AZaz09-_.~", false), "AZaz09-_.~");
  EXPECT_EQ(PercentEncode("a+b&c=d%e", false), "a%2Bb%26c%3Dd%25e");
  EXPECT_EQ(PercentEncode(" ", false), "%20");
  EXPECT_EQ(PercentEncode("", true), "");
}

TEST(PercentEncode, UnicodeIsEncodedBytewiseUppercaseHex) {
  // "é" is C3 A9 in UTF-8; "日" is E6 97 A5.
  EXPECT_EQ(PercentEncode("caf\xC3\xA9", true), "caf%C3%A9");
  EXPECT_EQ(PercentEncode("\xE6\x97\xA5/x", true), "%E6%97%A5/x");
  EXPECT_EQ(PercentEncode(std::string("\x00\xFF", 2), false), "%00%FF");
}

TEST(PercentEncode, RoundTripsThroughDecode) {
  std::string all;
  for (int c = 1; c < 256; ++c) all.push_back(static_cast<char>(c));
  for (bool keep : {false, true}) {
    auto back = PercentDecode(PercentEncode(all, keep));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, all);
  }
}

// ---- PercentDecode ----

TEST(PercentDecode, Valid) {
  EXPECT_EQ(PercentDecode("refs%2Fpr%2F1"), "refs/pr/1");
  EXPECT_EQ(PercentDecode("refs%2fpr%2f1"), "refs/pr/1");  // lowercase hex too
  EXPECT_EQ(PercentDecode("plain"), "plain");
  EXPECT_EQ(PercentDecode(""), "");
  EXPECT_EQ(PercentDecode("%41"), "A");    // escape at the very end
  EXPECT_EQ(PercentDecode("a%41"), "aA");
  EXPECT_EQ(PercentDecode("%C3%A9"), "\xC3\xA9");
  EXPECT_EQ(PercentDecode("a+b"), "a+b");  // '+' is not a space in a path
}

TEST(PercentDecode, MalformedEscapesRejected) {
  EXPECT_EQ(PercentDecode("%G1"), std::nullopt);
  EXPECT_EQ(PercentDecode("%1G"), std::nullopt);
  EXPECT_EQ(PercentDecode("abc%4"), std::nullopt);  // truncated
  EXPECT_EQ(PercentDecode("%4"), std::nullopt);
  EXPECT_EQ(PercentDecode("%"), std::nullopt);
  EXPECT_EQ(PercentDecode("x%"), std::nullopt);
  EXPECT_EQ(PercentDecode("% 1"), std::nullopt);
}

TEST(PercentDecode, DecodedNulRejected) {
  EXPECT_EQ(PercentDecode("%00"), std::nullopt);
  EXPECT_EQ(PercentDecode("a%00b"), std::nullopt);
}

// ---- OriginOf / SameOrigin ----

TEST(Origin, DefaultPortsMadeExplicit) {
  EXPECT_EQ(OriginOf("https://huggingface.co/api/models"), "https://huggingface.co:443");
  EXPECT_EQ(OriginOf("http://127.0.0.1/x"), "http://127.0.0.1:80");
  EXPECT_EQ(OriginOf("http://127.0.0.1:1234/api?x=1"), "http://127.0.0.1:1234");
  EXPECT_EQ(OriginOf("https://huggingface.co"), "https://huggingface.co:443");
  EXPECT_EQ(OriginOf("https://huggingface.co?q"), "https://huggingface.co:443");
  EXPECT_TRUE(SameOrigin("https://huggingface.co/a", "https://huggingface.co:443/b"));
  EXPECT_TRUE(SameOrigin("http://h/a", "http://h:80"));
  EXPECT_FALSE(SameOrigin("http://h/a", "https://h/a"));  // scheme matters
}

TEST(Origin, CaseInsensitiveSchemeAndHost) {
  EXPECT_EQ(OriginOf("HTTPS://HuggingFace.CO/Path/Keeps/Case"), "https://huggingface.co:443");
  EXPECT_TRUE(SameOrigin("HTTPS://HUGGINGFACE.CO/x", "https://huggingface.co"));
}

TEST(Origin, UserinfoRejected) {
  EXPECT_EQ(OriginOf("https://user:pw@huggingface.co/x"), "");
  // The classic confusion: the real host is evil.com.
  EXPECT_EQ(OriginOf("https://huggingface.co@evil.com/x"), "");
  EXPECT_FALSE(SameOrigin("https://huggingface.co@evil.com/", "https://huggingface.co"));
  EXPECT_FALSE(SameOrigin("https://a@h/", "https://a@h/"));  // even with itself: never ours
}

TEST(Origin, DifferentPortOrHostIsDifferentOrigin) {
  EXPECT_FALSE(SameOrigin("http://127.0.0.1:1234/a", "http://127.0.0.1:1235/a"));
  EXPECT_FALSE(SameOrigin("https://huggingface.co:8443/", "https://huggingface.co/"));
  EXPECT_FALSE(SameOrigin("https://cdn-lfs.huggingface.co/x", "https://huggingface.co"));
  EXPECT_FALSE(SameOrigin("https://huggingface.co.evil.com/x", "https://huggingface.co"));
}

TEST(Origin, Unparsable) {
  EXPECT_EQ(OriginOf(""), "");
  EXPECT_EQ(OriginOf("huggingface.co/x"), "");
  EXPECT_EQ(OriginOf("/api/models"), "");
  EXPECT_EQ(OriginOf("://x"), "");
  EXPECT_EQ(OriginOf("ftp://huggingface.co/"), "");
  EXPECT_EQ(OriginOf("https:///path"), "");
  EXPECT_FALSE(SameOrigin("", ""));  // two unparsable URLs are not "the same origin"
  EXPECT_FALSE(SameOrigin("garbage", "garbage"));
}

TEST(Origin, Ipv6Literal) {
  EXPECT_EQ(OriginOf("http://[::1]/x"), "http://[::1]:80");
  EXPECT_EQ(OriginOf("http://[::1]:8080/x"), "http://[::1]:8080");
  EXPECT_FALSE(SameOrigin("http://[::1]:8080/", "http://[::1]/"));
}

// ---- ResolveLocation ----

TEST(ResolveLocation, AbsoluteIsTakenAsIs) {
  EXPECT_EQ(ResolveLocation("https://huggingface.co/gpt2/resolve/main/x",
                            "https://cdn-lfs.hf.co/repos/ab/cd?Expires=1&Signature=s"),
            "https://cdn-lfs.hf.co/repos/ab/cd?Expires=1&Signature=s");
}

TEST(ResolveLocation, PathAbsoluteKeepsSchemeHostPort) {
  EXPECT_EQ(ResolveLocation("http://127.0.0.1:1234/api/models/old?x=1", "/api/models/new"),
            "http://127.0.0.1:1234/api/models/new");
  EXPECT_EQ(ResolveLocation("https://huggingface.co/gpt2/resolve/main/config.json",
                            "/api/resolve-cache/models/gpt2/abc/config.json?etag=%22x%22"),
            "https://huggingface.co/api/resolve-cache/models/gpt2/abc/config.json?etag=%22x%22");
  // A base with no path at all.
  EXPECT_EQ(ResolveLocation("https://huggingface.co", "/x"), "https://huggingface.co/x");
  EXPECT_EQ(ResolveLocation("https://huggingface.co?q=1", "/x"), "https://huggingface.co/x");
}

TEST(ResolveLocation, SchemeRelativeRefused) {
  EXPECT_EQ(ResolveLocation("https://huggingface.co/a", "//evil.com/steal"), "");
  EXPECT_EQ(ResolveLocation("https://huggingface.co/a", "//"), "");
}

TEST(ResolveLocation, RelativePathAndBadBaseRefused) {
  EXPECT_EQ(ResolveLocation("https://huggingface.co/a/b", "c"), "");
  EXPECT_EQ(ResolveLocation("https://huggingface.co/a/b", ""), "");
  EXPECT_EQ(ResolveLocation("not a url", "/x"), "");
}

TEST(ResolveLocation, PathAbsoluteWithUrlInQueryIsStillPathAbsolute) {
  // RFC 3986: a reference starting with "/" (and not "//") is path-absolute, whatever its query holds.
  const std::string got = ResolveLocation("https://huggingface.co/a", "/login?next=https://huggingface.co/a");
  EXPECT_EQ(got, "https://huggingface.co/login?next=https://huggingface.co/a");
}

// ---- ParseLinkNext ----

TEST(ParseLinkNext, HubFormat) {
  EXPECT_EQ(ParseLinkNext("<http://127.0.0.1:1234/api/models/org/x/tree/abc?recursive=true&cursor=abc>; rel=\"next\""),
            "http://127.0.0.1:1234/api/models/org/x/tree/abc?recursive=true&cursor=abc");
  EXPECT_EQ(ParseLinkNext("<https://huggingface.co/api/models?author=x&limit=1000&cursor=eyJ9>; rel=\"next\""),
            "https://huggingface.co/api/models?author=x&limit=1000&cursor=eyJ9");
}

TEST(ParseLinkNext, SeveralLinks) {
  EXPECT_EQ(ParseLinkNext("<https://h/p?page=1>; rel=\"prev\", <https://h/p?page=3>; rel=\"next\", "
                          "<https://h/p?page=9>; rel=\"last\""),
            "https://h/p?page=3");
  EXPECT_EQ(ParseLinkNext("<https://h/n>; rel=\"next\", <https://h/p>; rel=\"prev\""), "https://h/n");
  EXPECT_EQ(ParseLinkNext("<https://h/n>;rel=next"), "https://h/n");
}

TEST(ParseLinkNext, NoNext) {
  EXPECT_EQ(ParseLinkNext(""), std::nullopt);
  EXPECT_EQ(ParseLinkNext("<https://h/p?page=1>; rel=\"prev\""), std::nullopt);
  EXPECT_EQ(ParseLinkNext("<https://h/p>; rel=\"prev\", <https://h/l>; rel=\"last\""), std::nullopt);
}

TEST(ParseLinkNext, GarbageDoesNotCrashOrInventALink) {
  for (const char* g : {"<", ">", "<<<>", "<https://h/x", "rel=\"next\"", "https://h/x; rel=\"next\"",
                        ">>; rel=\"prev\" <", ",,,,;;;;", "\"<\"", "<>"}) {
    auto r = ParseLinkNext(g);
    if (r.has_value()) {
      // Only an explicit <...> followed by rel=next may be returned.
      EXPECT_NE(std::string(g).find("next"), std::string::npos) << g;
    }
  }
  EXPECT_EQ(ParseLinkNext("<https://h/x"), std::nullopt);
  EXPECT_EQ(ParseLinkNext("https://h/x; rel=\"next\""), std::nullopt);
  EXPECT_EQ(ParseLinkNext(std::string(100000, '<')), std::nullopt);
}

// ---- QueryParam / RedactUrl ----

TEST(QueryParam, FindsRawValues) {
  const std::string url = "https://cdn.hf.co/repos/x?Expires=1700000000&Signature=a%2Fb&Key-Pair-Id=K#frag";
  EXPECT_EQ(QueryParam(url, "Expires"), "1700000000");
  EXPECT_EQ(QueryParam(url, "Signature"), "a%2Fb");  // raw, not decoded
  EXPECT_EQ(QueryParam(url, "Key-Pair-Id"), "K");   // fragment not included
  EXPECT_EQ(QueryParam(url, "Missing"), std::nullopt);
  EXPECT_EQ(QueryParam(url, "Expire"), std::nullopt);   // no prefix matches
  EXPECT_EQ(QueryParam(url, "expires"), std::nullopt);  // case-sensitive
  EXPECT_EQ(QueryParam("https://h/x?flag&a=1", "flag"), "");
  EXPECT_EQ(QueryParam("https://h/x?a==b", "a"), "=b");
  EXPECT_EQ(QueryParam("https://h/x", "a"), std::nullopt);
  EXPECT_EQ(QueryParam("https://h/x#a=1", "a"), std::nullopt);
}

TEST(RedactUrl, DropsQuery) {
  EXPECT_EQ(RedactUrl("https://cdn.hf.co/repos/x?Expires=1&Signature=SECRET"), "https://cdn.hf.co/repos/x?<redacted>");
  EXPECT_EQ(RedactUrl("https://huggingface.co/api/models/gpt2"), "https://huggingface.co/api/models/gpt2");
  EXPECT_EQ(RedactUrl("").find("SECRET"), std::string::npos);
  EXPECT_EQ(RedactUrl("https://h/x?Signature=SECRET").find("SECRET"), std::string::npos);
}

}  // namespace
}  // namespace hubfs::fetch
