// Hex digit checks shared by the Hub client, the name grammar and huggingface_hub's cache.
#pragma once

#include <cctype>
#include <cstddef>
#include <string_view>

namespace hubfs {

// Exactly n hex digits (either case): a commit id (40), an LFS sha256 (64).
inline bool IsHexDigits(std::string_view s, size_t n) {
  if (s.size() != n) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

}  // namespace hubfs
