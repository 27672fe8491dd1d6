// xxh3 through libxxhash (see xxh3.h). On x86 the dispatcher picks the widest vector unit this CPU
// has (AVX-512/AVX2) at run time; the hash value is the same whichever unit computes it.
#include "common/xxh3.h"

#include <new>
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xxh_x86dispatch.h>
#define HUBFS_XXH3(data, len) XXH3_64bits_dispatch(data, len)
#define HUBFS_XXH3_UPDATE(state, data, len) XXH3_64bits_update_dispatch(state, data, len)
#else
#define HUBFS_XXH3(data, len) XXH3_64bits(data, len)
#define HUBFS_XXH3_UPDATE(state, data, len) XXH3_64bits_update(state, data, len)
#endif

namespace hubfs {

uint64_t Xxh3(const void* data, size_t len) { return HUBFS_XXH3(data, len); }

struct Xxh3Stream::State {
  XXH3_state_t* s = XXH3_createState();
  ~State() { XXH3_freeState(s); }
};

Xxh3Stream::Xxh3Stream() : state_(std::make_unique<State>()) {
  if (state_->s == nullptr) throw std::bad_alloc();
  Reset();
}

Xxh3Stream::~Xxh3Stream() = default;

void Xxh3Stream::Reset() { XXH3_64bits_reset(state_->s); }

void Xxh3Stream::Update(const void* data, size_t len) {
  if (len != 0) HUBFS_XXH3_UPDATE(state_->s, data, len);
}

uint64_t Xxh3Stream::Digest() const { return XXH3_64bits_digest(state_->s); }

}  // namespace hubfs
