// Fuzzes Link header parsing (pagination): never crashes, and a result is always a substring.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fetch/url.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  auto next = hubfs::fetch::ParseLinkNext(s);
  if (next && s.find(*next) == std::string::npos) __builtin_trap();
  return 0;
}
