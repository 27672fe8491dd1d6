// Fuzzes HTTP/1.1 response head parsing (answers read straight off a CDN connection): never
// crashes, finds the end of a head only where there is one, and what it parses is consistent.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fetch/http1.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  const size_t end = hubfs::fetch::FindHeadEnd(s);
  if (end > s.size()) __builtin_trap();
  if (end != 0 && s[end - 1] != '\n') __builtin_trap();
  auto head = hubfs::fetch::ParseResponseHead(end != 0 ? s.substr(0, end) : s);
  if (head) {
    if (head->status < 100 || head->status > 599) __builtin_trap();
    if (head->content_length < -1) __builtin_trap();
    for (const auto& [name, value] : head->headers)
      for (char c : name)
        if (c >= 'A' && c <= 'Z') __builtin_trap();
  }
  return 0;
}
