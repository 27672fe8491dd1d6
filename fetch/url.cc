// URL helpers (see url.h).
#include "fetch/url.h"

#include <cctype>

namespace hubfs::fetch {

std::string PercentEncode(std::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

static int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\0') return std::nullopt;  // NUL never belongs in a name or revision
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = HexVal(s[i + 1]), lo = HexVal(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    const char c = static_cast<char>(hi * 16 + lo);
    if (c == '\0') return std::nullopt;
    out.push_back(c);
    i += 2;
  }
  return out;
}

std::string OriginOf(std::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0) return "";
  std::string scheme(url.substr(0, scheme_end));
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "http" && scheme != "https") return "";
  std::string_view rest = url.substr(scheme_end + 3);
  const size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  if (authority.find('@') != std::string_view::npos) return "";  // userinfo: never ours
  if (authority.empty()) return "";
  std::string host(authority);
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const size_t colon = host.rfind(':');
  const size_t bracket = host.rfind(']');  // IPv6 literals: a port follows the ']'
  const bool has_port = colon != std::string::npos && (bracket == std::string::npos || bracket < colon);
  if (!has_port) host += scheme == "https" ? ":443" : ":80";
  return scheme + "://" + host;
}

bool SameOrigin(std::string_view a, std::string_view b) {
  const std::string oa = OriginOf(a);
  return !oa.empty() && oa == OriginOf(b);
}

static bool HasScheme(std::string_view s) {
  const size_t colon = s.find("://");
  if (colon == std::string_view::npos || colon == 0 || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
  for (size_t i = 0; i < colon; ++i) {
    const char c = s[i];
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') return false;
  }
  return true;
}

std::string ResolveLocation(std::string_view base, std::string_view location) {
  if (HasScheme(location)) return std::string(location);
  const std::string origin = OriginOf(base);
  if (origin.empty()) return "";
  if (!location.empty() && location[0] == '/') {
    if (location.size() > 1 && location[1] == '/') return "";  // scheme-relative: refuse
    // Keep the scheme://authority exactly as the base wrote it.
    const size_t scheme_end = base.find("://");
    const size_t path_start = base.find_first_of("/?#", scheme_end + 3);
    return std::string(base.substr(0, path_start)) + std::string(location);
  }
  return "";  // relative-path redirects are not used by the Hub
}

std::optional<std::string> ParseLinkNext(std::string_view h) {
  size_t pos = 0;
  while (pos < h.size()) {
    const size_t lt = h.find('<', pos);
    if (lt == std::string_view::npos) return std::nullopt;
    const size_t gt = h.find('>', lt + 1);
    if (gt == std::string_view::npos) return std::nullopt;
    std::string_view url = h.substr(lt + 1, gt - lt - 1);
    // Params run to the next '<' (links are comma-separated; a comma inside params is harmless).
    const size_t next_lt = h.find('<', gt + 1);
    std::string_view params = h.substr(gt + 1, (next_lt == std::string_view::npos ? h.size() : next_lt) - gt - 1);
    if (params.find("rel=\"next\"") != std::string_view::npos || params.find("rel=next") != std::string_view::npos) {
      return std::string(url);
    }
    if (next_lt == std::string_view::npos) return std::nullopt;
    pos = next_lt;
  }
  return std::nullopt;
}

std::optional<std::string> QueryParam(std::string_view url, std::string_view name) {
  const size_t q = url.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = url.substr(q + 1);
  const size_t hash = query.find('#');
  if (hash != std::string_view::npos) query = query.substr(0, hash);
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view kv = query.substr(pos, amp - pos);
    const size_t eq = kv.find('=');
    if (kv.substr(0, eq) == name) return std::string(eq == std::string_view::npos ? "" : kv.substr(eq + 1));
    pos = amp + 1;
  }
  return std::nullopt;
}

std::string RedactUrl(std::string_view url) {
  const size_t q = url.find('?');
  return std::string(url.substr(0, q)) + (q == std::string_view::npos ? "" : "?<redacted>");
}

}  // namespace hubfs::fetch
