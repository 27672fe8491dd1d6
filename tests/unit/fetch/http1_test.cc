// HTTP/1.1 response heads: status line, header fields, body framing, connection reuse.
#include "fetch/http1.h"

#include <gtest/gtest.h>

#include <string>

namespace hubfs::fetch {
namespace {

TEST(FindHeadEnd, NeedsTheEmptyLine) {
  EXPECT_EQ(FindHeadEnd(""), 0u);
  EXPECT_EQ(FindHeadEnd("HTTP/1.1 200 OK\r\nA: b\r\n"), 0u);
  EXPECT_EQ(FindHeadEnd("HTTP/1.1 200 OK\r\nA: b\r\n\r"), 0u);
  const std::string head = "HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
  EXPECT_EQ(FindHeadEnd(head + "body"), head.size());
  EXPECT_EQ(FindHeadEnd("HTTP/1.1 200 OK\nA: b\n\nbody"), 22u);
}

TEST(ParseResponseHead, RangeAnswer) {
  auto h = ParseResponseHead(
      "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-99/1000\r\nContent-Length: 100\r\n"
      "ETag:  \"abc\" \r\n\r\n");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 206);
  EXPECT_EQ(h->content_length, 100);
  EXPECT_FALSE(h->transfer_encoding);
  EXPECT_TRUE(h->keep_alive);
  ASSERT_EQ(h->headers.size(), 3u);
  EXPECT_EQ(h->headers[0].first, "content-range");
  EXPECT_EQ(h->headers[0].second, "bytes 0-99/1000");
  EXPECT_EQ(h->headers[2].second, "\"abc\"");
}

TEST(ParseResponseHead, ConnectionReuse) {
  EXPECT_FALSE(ParseResponseHead("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")->keep_alive);
  EXPECT_FALSE(ParseResponseHead("HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\n\r\n")->keep_alive);
  EXPECT_FALSE(ParseResponseHead("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")->keep_alive);
  EXPECT_TRUE(ParseResponseHead("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")->keep_alive);
  EXPECT_TRUE(ParseResponseHead("HTTP/1.1 200 OK\r\n\r\n")->keep_alive);
}

TEST(ParseResponseHead, FramingOtherThanALengthIsReported) {
  auto h = ParseResponseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->transfer_encoding);
  EXPECT_EQ(h->content_length, -1);
  EXPECT_EQ(ParseResponseHead("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n")->content_length, -1);
}

TEST(ParseResponseHead, RepeatedEqualLengthsAreOneLength) {
  EXPECT_EQ(ParseResponseHead("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n")->content_length, 5);
  EXPECT_EQ(ParseResponseHead("HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n")->content_length, 5);
}

TEST(ParseResponseHead, MalformedHeadsAreRefused) {
  for (const char* bad : {
           "",
           "HTTP/1.1 200 OK",                                     // no line end
           "HTTP/2 200\r\n\r\n",                                  // not HTTP/1.x
           "HTTP/1.1 20 OK\r\n\r\n",                              // two digits
           "HTTP/1.1 2000 OK\r\n\r\n",                            // four digits
           "HTTP/1.1 099 Hm\r\n\r\n",                             // below 100
           "HTTP/1.1 600 Hm\r\n\r\n",                             // above 599
           "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",                  // header line without a colon
           "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",             // empty name
           "HTTP/1.1 200 OK\r\nContent Length: 5\r\n\r\n",        // whitespace in the name
           "HTTP/1.1 200 OK\r\nA: b\r\n continued\r\n\r\n",       // obsolete folding
           "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",       // sign
           "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",       // junk
           "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",         // empty
           "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",     // differing values
           "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
           "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",  // overflow
       }) {
    EXPECT_FALSE(ParseResponseHead(bad)) << bad;
  }
}

TEST(Bodyless, HeadInterimNoContentNotModified) {
  EXPECT_TRUE(Bodyless("HEAD", 200));
  EXPECT_TRUE(Bodyless("GET", 204));
  EXPECT_TRUE(Bodyless("GET", 304));
  EXPECT_TRUE(Bodyless("GET", 100));
  EXPECT_FALSE(Bodyless("GET", 200));
  EXPECT_FALSE(Bodyless("GET", 302));
}

}  // namespace
}  // namespace hubfs::fetch
