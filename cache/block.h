// An immutable block of file content, shared by reference between the cache tiers and the readers
// that hold it. A reader holding a BlockRef keeps the bytes alive; eviction skips held blocks.
#pragma once

#include <cstddef>
#include <memory>

namespace hubfs::cache {

struct Block {
  explicit Block(size_t n) : data(new char[n]), size(n) {}
  std::unique_ptr<char[]> data;
  size_t size;
};
using BlockRef = std::shared_ptr<const Block>;

}  // namespace hubfs::cache
