// Fuzzes the URL helpers: percent-decoding, origins, redirect resolution, query parameters.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fetch/url.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  const size_t cut = s.find('\n');
  const std::string a = s.substr(0, cut), b = cut == std::string::npos ? "" : s.substr(cut + 1);
  using namespace hubfs::fetch;
  auto d = PercentDecode(a);
  if (d) {
    // Encoding then decoding is the identity.
    auto back = PercentDecode(PercentEncode(*d, false));
    if (!back || *back != *d) __builtin_trap();
  }
  (void)SameOrigin(a, b);
  const std::string loc = ResolveLocation(a, b);
  if (!loc.empty() && OriginOf(loc).empty() && loc.find("://") == std::string::npos) __builtin_trap();
  (void)QueryParam(a, b);
  (void)RedactUrl(a);
  return 0;
}
