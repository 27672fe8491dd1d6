// Safetensors-aware prefetch: the header of a .safetensors file says exactly which byte ranges a
// loader will read, and in which order (loaders walk tensors in key order, which is not file order).
// A Plan lists the tensors' absolute byte ranges in key order; given the offset a reader just
// jumped to, Following() names the ranges it will read next, so prefetch follows the loader
// instead of guessing from offsets. Parsing is defensive: a header that is malformed, too large,
// or whose offsets are out of range or overlapping yields an Error, and the file is read with the
// ordinary readahead.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace hubfs::fs {

struct ByteRange {
  uint64_t begin = 0;
  uint64_t end = 0;  // exclusive
};

class SafetensorsPlan {
 public:
  static constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the format's own limit

  // `header` is the JSON that follows the 8-byte length; `file_size` bounds every offset.
  static Result<SafetensorsPlan> Parse(std::string_view header, uint64_t file_size);
  // The header length from the first 8 bytes (little-endian), validated against the file size.
  static Result<uint64_t> HeaderLength(std::string_view first8, uint64_t file_size);

  // Up to `budget` bytes of the ranges that follow `offset` in key order: the rest of the tensor
  // holding `offset`, then the next tensors. Empty when offset is outside every tensor.
  std::vector<ByteRange> Following(uint64_t offset, uint64_t budget) const;

  // The first `budget` bytes a key-order loader reads after the header.
  std::vector<ByteRange> First(uint64_t budget) const {
    return key_order_.empty() ? std::vector<ByteRange>{} : Following(key_order_.front().begin, budget);
  }

  size_t tensor_count() const { return key_order_.size(); }
  const std::vector<ByteRange>& key_order() const { return key_order_; }

 private:
  std::vector<ByteRange> key_order_;    // tensors in key order
  std::vector<uint32_t> by_offset_;     // indices into key_order_, sorted by begin
};

// A sharded checkpoint's `*.safetensors.index.json` maps every tensor to its shard file; loaders
// (transformers, safetensors) read the shards in sorted name order. Given the index JSON and the
// name of one shard, the name of the shard a loader reads next; nullopt for the last shard, a
// shard the index does not name, or an index that is not what the format says.
std::optional<std::string> NextShardFromIndex(std::string_view index_json, std::string_view shard);

}  // namespace hubfs::fs
