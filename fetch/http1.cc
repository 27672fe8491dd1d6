// HTTP/1.1 response heads (see http1.h).
#include "fetch/http1.h"

#include <cctype>

namespace hubfs::fetch {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Digits only, no sign, no overflow past 2^62.
std::optional<int64_t> ParseLength(std::string_view v) {
  if (v.empty() || v.size() > 18) return std::nullopt;
  int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

// Whether a comma-separated header value lists `token` (case-insensitive).
bool ListsToken(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    const std::string item = Lower(Trim(value.substr(0, comma)));
    if (item == token) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

size_t FindHeadEnd(std::string_view buf) {
  for (size_t i = 0; i < buf.size(); ++i) {
    if (buf[i] != '\n') continue;
    if (i + 1 < buf.size() && buf[i + 1] == '\n') return i + 2;
    if (i + 2 < buf.size() && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
  }
  return 0;
}

std::optional<ResponseHead> ParseResponseHead(std::string_view head) {
  ResponseHead out;
  size_t eol = head.find('\n');
  if (eol == std::string_view::npos) return std::nullopt;
  const std::string_view status_line = Trim(head.substr(0, eol));
  // "HTTP/1.1 206 Partial Content": version, one space, three digits, then a space or the end.
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ') return std::nullopt;
  const char minor = status_line[7];
  if (minor != '0' && minor != '1') return std::nullopt;
  for (size_t i = 9; i < 12; ++i)
    if (!std::isdigit(static_cast<unsigned char>(status_line[i]))) return std::nullopt;
  if (status_line.size() > 12 && status_line[12] != ' ') return std::nullopt;
  out.status = (status_line[9] - '0') * 100 + (status_line[10] - '0') * 10 + (status_line[11] - '0');
  if (out.status < 100 || out.status > 599) return std::nullopt;
  bool close = false, keep_alive_token = false;
  head.remove_prefix(eol + 1);
  while (!head.empty()) {
    eol = head.find('\n');
    const std::string_view raw = head.substr(0, eol);
    head.remove_prefix(eol == std::string_view::npos ? head.size() : eol + 1);
    const std::string_view line = Trim(raw);
    if (line.empty()) break;  // the empty line ending the head
    if (raw.front() == ' ' || raw.front() == '\t') return std::nullopt;  // obsolete line folding
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    const std::string_view name = line.substr(0, colon);
    if (name.find_first_of(" \t") != std::string_view::npos) return std::nullopt;
    std::string lname = Lower(name);
    const std::string_view value = Trim(line.substr(colon + 1));
    if (lname == "content-length") {
      // "5, 5" or repeated fields with one value are one length; anything else is malformed.
      std::string_view rest = value;
      do {
        const size_t comma = rest.find(',');
        const auto n = ParseLength(Trim(rest.substr(0, comma)));
        if (!n || (out.content_length >= 0 && *n != out.content_length)) return std::nullopt;
        out.content_length = *n;
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      } while (!rest.empty());
    } else if (lname == "transfer-encoding") {
      out.transfer_encoding = true;
    } else if (lname == "connection") {
      close = close || ListsToken(value, "close");
      keep_alive_token = keep_alive_token || ListsToken(value, "keep-alive");
    }
    out.headers.emplace_back(std::move(lname), std::string(value));
  }
  out.keep_alive = !close && (minor == '1' || keep_alive_token);
  return out;
}

bool Bodyless(std::string_view method, int status) {
  return method == "HEAD" || (status >= 100 && status < 200) || status == 204 || status == 304;
}

}  // namespace hubfs::fetch
