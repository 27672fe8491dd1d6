// URL helpers for the Hub protocol: percent-encoding of revisions (one path segment, '/' as %2F)
// and file paths ('/' kept), origin comparison (the token only ever goes to the Hub's own origin),
// Link header parsing for pagination, and redaction for logs. Pure functions, fuzzed.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace hubfs::fetch {

// Encodes every byte outside RFC 3986 unreserved; keeps '/' when keep_slash.
std::string PercentEncode(std::string_view s, bool keep_slash);
// Decodes %XX escapes; returns nullopt on a malformed escape or any NUL (raw or decoded).
std::optional<std::string> PercentDecode(std::string_view s);

// "scheme://host[:port]" lowercased with the default port made explicit, or "" if unparsable.
std::string OriginOf(std::string_view url);
bool SameOrigin(std::string_view a, std::string_view b);
// Resolves a Location header against the URL it answered (absolute, or path-absolute "/...").
std::string ResolveLocation(std::string_view base, std::string_view location);

// The URL of rel="next" in a Link header, if any. Accepts several comma-separated links.
std::optional<std::string> ParseLinkNext(std::string_view link_header);

// The value of query parameter `name` in url, raw (not decoded).
std::optional<std::string> QueryParam(std::string_view url, std::string_view name);

// The URL without its query string (signed CDN URLs carry credentials-like signatures).
std::string RedactUrl(std::string_view url);

}  // namespace hubfs::fetch
