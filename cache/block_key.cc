// ContentId hex conversions (see block_key.h).
#include "cache/block_key.h"

#include <openssl/evp.h>

#include <cstring>

namespace hubfs::cache {

std::optional<ContentId> ContentId::FromHex(IdKind kind, std::string_view hex) {
  const size_t want = kind == IdKind::kSha256 ? 64 : 40;
  if (hex.size() != want) return std::nullopt;
  ContentId id;
  id.kind = kind;
  for (size_t i = 0; i < want / 2; ++i) {
    int v = 0;
    for (int k = 0; k < 2; ++k) {
      const char c = hex[2 * i + static_cast<size_t>(k)];
      int d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else return std::nullopt;
      v = v * 16 + d;
    }
    id.bytes[i] = static_cast<uint8_t>(v);
  }
  return id;
}

std::string ContentId::Hex() const {
  static const char* kHex = "0123456789abcdef";
  const size_t n = kind == IdKind::kSha256 ? 32 : 20;
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    s.push_back(kHex[bytes[i] >> 4]);
    s.push_back(kHex[bytes[i] & 15]);
  }
  return s;
}

ContentHasher::ContentHasher(const ContentId& id, uint64_t size) : id_(id), ctx_(EVP_MD_CTX_new()) {
  auto* ctx = static_cast<EVP_MD_CTX*>(ctx_);
  const bool git = id.kind == IdKind::kGitSha1;
  EVP_DigestInit_ex(ctx, git ? EVP_sha1() : EVP_sha256(), nullptr);
  if (git) {
    const std::string header = "blob " + std::to_string(size) + std::string(1, '\0');
    EVP_DigestUpdate(ctx, header.data(), header.size());
  }
}

ContentHasher::~ContentHasher() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void ContentHasher::Update(const char* data, size_t len) { EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, len); }

bool ContentHasher::Matches() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), digest, &n);
  return n > 0 && std::memcmp(digest, id_.bytes.data(), n) == 0;
}

bool MatchesContentId(const ContentId& id, const char* data, size_t len) {
  ContentHasher h(id, len);
  h.Update(data, len);
  return h.Matches();
}

}  // namespace hubfs::cache
