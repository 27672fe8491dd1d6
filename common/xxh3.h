// The block checksum: xxh3-64 (seed 0), one-shot or streamed as bytes arrive.
//
// The disk tier stores every block with this hash and checks it on every read. A cold block is
// hashed while it arrives from the network, a chunk at a time right after the chunk is copied
// into the block (still in the CPU's cache), instead of re-reading 4 MiB from memory in the disk
// writer; both give the same value (xxh3's streaming and one-shot forms agree by design).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace hubfs {

uint64_t Xxh3(const void* data, size_t len);

class Xxh3Stream {
 public:
  Xxh3Stream();
  ~Xxh3Stream();
  Xxh3Stream(const Xxh3Stream&) = delete;
  Xxh3Stream& operator=(const Xxh3Stream&) = delete;

  void Reset();
  void Update(const void* data, size_t len);
  // xxh3 of every byte given since construction or the last Reset (Xxh3 of their concatenation).
  uint64_t Digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace hubfs
