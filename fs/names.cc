// Name grammar (see names.h).
#include "fs/names.h"

#include <cctype>

#include "common/hex.h"
#include "fetch/url.h"

namespace hubfs::fs {

bool IsValidIdPart(std::string_view s) {
  if (s.empty() || s.size() > 96) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  if (s.front() == '-' || s.front() == '.' || s.back() == '-' || s.back() == '.') return false;
  if (s.find("--") != std::string_view::npos || s.find("..") != std::string_view::npos) return false;
  if (s.size() >= 4 && s.substr(s.size() - 4) == ".git") return false;
  return true;
}

bool IsValidRevision(std::string_view rev) {
  if (rev.empty() || rev.size() > 255) return false;
  for (char c : rev)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  if (rev.front() == '/' || rev.back() == '/') return false;
  if (rev.find("//") != std::string_view::npos || rev.find("..") != std::string_view::npos) return false;
  return true;
}

bool IsFullCommit(std::string_view rev) { return IsHexDigits(rev, 40); }

std::optional<RepoDirName> ParseRepoDirName(std::string_view s) {
  const size_t at = s.find('@');
  RepoDirName out;
  out.name = std::string(s.substr(0, at));
  if (!IsValidIdPart(out.name)) return std::nullopt;
  if (at == std::string_view::npos) return out;
  auto rev = fetch::PercentDecode(s.substr(at + 1));
  if (!rev || !IsValidRevision(*rev)) return std::nullopt;
  out.revision = std::move(*rev);
  return out;
}

bool IsValidEntryName(std::string_view s) {
  if (s.empty() || s.size() > 255 || s == "." || s == "..") return false;
  for (char c : s)
    if (c == '/' || c == '\0') return false;
  return true;
}

bool IsValidRepoPath(std::string_view path) {
  if (path.empty()) return false;
  size_t start = 0;
  while (true) {
    const size_t slash = path.find('/', start);
    if (!IsValidEntryName(path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start)))
      return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

}  // namespace hubfs::fs
