// Fuzzes the safetensors header parser: a hostile header never crashes, and every accepted plan
// stays inside the file with non-overlapping tensors.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fs/safetensors_plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  using hubfs::fs::SafetensorsPlan;
  const uint64_t file_size = size + 4096;
  (void)SafetensorsPlan::HeaderLength(s.substr(0, 8), file_size);
  auto plan = SafetensorsPlan::Parse(s, file_size);
  if (plan.ok()) {
    for (const auto& r : plan->key_order())
      if (r.begin > r.end || r.end > file_size) __builtin_trap();
    uint64_t total = 0;
    for (const auto& r : plan->Following(8 + size, 1 << 20)) total += r.end - r.begin;
    if (total > (1 << 20)) __builtin_trap();
    uint64_t first = 0;
    for (const auto& r : plan->First(1 << 20)) first += r.end - r.begin;
    if (first > (1 << 20)) __builtin_trap();
  }
  // The same bytes as a sharded checkpoint's index.json.
  if (auto next = hubfs::fs::NextShardFromIndex(s, "model-00001-of-00002.safetensors"))
    if (*next <= "model-00001-of-00002.safetensors") __builtin_trap();  // always a later name
  return 0;
}
