// Cache keys are content identity plus block index: the LFS sha256 of a file, else its git blob
// sha1, then the block number. Two repos or revisions that share a file share its blocks, and a
// key can never name stale bytes, because different bytes have a different identity.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace hubfs::cache {

enum class IdKind : uint8_t { kSha256 = 1, kGitSha1 = 2 };

struct ContentId {
  std::array<uint8_t, 32> bytes{};  // sha1 ids use the first 20 bytes, the rest zero
  IdKind kind = IdKind::kSha256;

  // From 64 hex (sha256) or 40 hex (git sha1) digits; nullopt for anything else.
  static std::optional<ContentId> FromHex(IdKind kind, std::string_view hex);
  std::string Hex() const;
  bool operator==(const ContentId& o) const { return kind == o.kind && bytes == o.bytes; }
};

struct BlockKey {
  ContentId content;
  uint64_t index = 0;
  bool operator==(const BlockKey& o) const { return index == o.index && content == o.content; }
};

struct BlockKeyHash {
  size_t operator()(const BlockKey& k) const {
    uint64_t h = 0;
    std::memcpy(&h, k.content.bytes.data(), sizeof h);  // already a cryptographic hash
    return static_cast<size_t>(h ^ (k.index * 0x9E3779B97F4A7C15ULL) ^ static_cast<uint64_t>(k.content.kind));
  }
};

// Streams a file's bytes and tells whether they hash to its content identity.
class ContentHasher {
 public:
  ContentHasher(const ContentId& id, uint64_t size);
  ~ContentHasher();
  ContentHasher(const ContentHasher&) = delete;
  ContentHasher& operator=(const ContentHasher&) = delete;
  void Update(const char* data, size_t len);
  bool Matches();  // call once, after all bytes

 private:
  ContentId id_;
  void* ctx_;  // EVP_MD_CTX
};

// True if `data` hashes to `id`: sha256(data) for LFS ids, sha1("blob <n>\0" + data) for git ids.
bool MatchesContentId(const ContentId& id, const char* data, size_t len);

}  // namespace hubfs::cache
