// Safetensors prefetch plan (see safetensors_plan.h).
#include "fs/safetensors_plan.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

namespace hubfs::fs {

Result<uint64_t> SafetensorsPlan::HeaderLength(std::string_view first8, uint64_t file_size) {
  if (first8.size() < 8) return MakeError(ErrorKind::kInvalidArgument, "short safetensors prefix");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(first8[static_cast<size_t>(i)]);
  if (n == 0 || n > kMaxHeaderBytes || n > file_size - std::min<uint64_t>(file_size, 8))
    return MakeError(ErrorKind::kInvalidArgument, "safetensors header length out of range");
  return n;
}

Result<SafetensorsPlan> SafetensorsPlan::Parse(std::string_view header, uint64_t file_size) {
  using json = nlohmann::json;
  json j = json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return MakeError(ErrorKind::kInvalidArgument, "header is not a JSON object");
  const uint64_t base = 8 + header.size();
  if (base > file_size) return MakeError(ErrorKind::kInvalidArgument, "header beyond the file");
  SafetensorsPlan plan;
  // nlohmann's object iterates keys in sorted order: exactly the loaders' key order.
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const json& t = it.value();
    if (!t.is_object()) return MakeError(ErrorKind::kInvalidArgument, "tensor entry is not an object");
    auto off = t.find("data_offsets");
    if (off == t.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      return MakeError(ErrorKind::kInvalidArgument, "bad data_offsets");
    const uint64_t a = (*off)[0].get<uint64_t>(), b = (*off)[1].get<uint64_t>();
    if (a > b || b > file_size - base) return MakeError(ErrorKind::kInvalidArgument, "data_offsets out of range");
    plan.key_order_.push_back({base + a, base + b});
  }
  plan.by_offset_.resize(plan.key_order_.size());
  for (uint32_t i = 0; i < plan.by_offset_.size(); ++i) plan.by_offset_[i] = i;
  std::sort(plan.by_offset_.begin(), plan.by_offset_.end(), [&](uint32_t x, uint32_t y) {
    return plan.key_order_[x].begin < plan.key_order_[y].begin;
  });
  for (size_t i = 1; i < plan.by_offset_.size(); ++i) {
    if (plan.key_order_[plan.by_offset_[i]].begin < plan.key_order_[plan.by_offset_[i - 1]].end)
      return MakeError(ErrorKind::kInvalidArgument, "overlapping tensors");
  }
  return plan;
}

std::vector<ByteRange> SafetensorsPlan::Following(uint64_t offset, uint64_t budget) const {
  std::vector<ByteRange> out;
  auto it = std::upper_bound(by_offset_.begin(), by_offset_.end(), offset,
                             [&](uint64_t off, uint32_t i) { return off < key_order_[i].begin; });
  if (it == by_offset_.begin()) return out;
  const uint32_t k = *std::prev(it);
  if (offset >= key_order_[k].end) return out;
  for (size_t i = k; i < key_order_.size() && budget > 0; ++i) {
    ByteRange r = key_order_[i];
    if (i == k) r.begin = offset;
    if (r.end <= r.begin) continue;
    r.end = std::min(r.end, r.begin + budget);
    budget -= r.end - r.begin;
    out.push_back(r);
  }
  return out;
}

std::optional<std::string> NextShardFromIndex(std::string_view index_json, std::string_view shard) {
  using json = nlohmann::json;
  json j = json::parse(index_json.begin(), index_json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  auto map = j.find("weight_map");
  if (map == j.end() || !map->is_object()) return std::nullopt;
  std::vector<std::string> shards;
  for (const auto& v : *map) {
    if (!v.is_string()) return std::nullopt;
    shards.push_back(v.get<std::string>());
  }
  std::sort(shards.begin(), shards.end());
  shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
  auto it = std::find(shards.begin(), shards.end(), shard);
  if (it == shards.end() || std::next(it) == shards.end()) return std::nullopt;
  return *std::next(it);
}

}  // namespace hubfs::fs
