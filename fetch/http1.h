// HTTP/1.1 response heads, parsed: the status line and header fields of an answer read straight
// off a connection (direct_http.h), with the body framing that decides where the body ends and
// whether the connection may carry the next request. Pure functions, fuzzed.
//
// Only what a range GET needs is interpreted: the status, Content-Length (several equal values
// are one; differing values, a sign, or junk make the head malformed: RFC 9112 section 6.3),
// Transfer-Encoding (any value counts as a framing this parser does not decode), and Connection
// (close, keep-alive, and the HTTP/1.0 default). Header names are lowercased, values trimmed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hubfs::fetch {

struct ResponseHead {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // lowercased names, in order
  int64_t content_length = -1;   // -1: absent
  bool transfer_encoding = false;  // chunked or any other coding: the length is not known here
  bool keep_alive = false;         // the connection may be reused once the body has been read
};

// The length of the head in `buf` including its terminating empty line ("\r\n\r\n", or a bare
// "\n\n"), or 0 while it is incomplete.
size_t FindHeadEnd(std::string_view buf);

// Parses one complete head (as delimited by FindHeadEnd). nullopt when malformed: no HTTP/1.x
// status line, a status outside 100-599, a header line without a colon, a name with whitespace
// before the colon, or a bad Content-Length.
std::optional<ResponseHead> ParseResponseHead(std::string_view head);

// Whether a response to `method` with this status has no body whatever its headers say.
bool Bodyless(std::string_view method, int status);

}  // namespace hubfs::fetch
