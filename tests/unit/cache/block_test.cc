// The block buffer pool: alignment, reuse, and huge-page mappings for pooled buffers.
#include "cache/block.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace hubfs::cache {
namespace {

constexpr size_t kMiB = 1u << 20;

// The /proc/self/smaps entry of the mapping that contains `p`: its start, end and field lines.
struct Vma {
  uintptr_t start = 0, end = 0;
  std::string fields;
};

Vma VmaOf(const void* p) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  Vma cur;
  bool found = false;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(in, line)) {
    const size_t dash = line.find('-');
    const size_t space = line.find(' ');
    const bool header = dash != std::string::npos && space != std::string::npos && dash < space &&
                        line.find_first_not_of("0123456789abcdef") == dash;
    if (header) {
      if (found) return cur;
      cur = Vma{std::stoull(line.substr(0, dash), nullptr, 16), std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16), ""};
      found = addr >= cur.start && addr < cur.end;
    } else if (found) {
      cur.fields += line + "\n";
    }
  }
  return found ? cur : Vma{};
}

// The pool is process-wide: start each test with no free buffers left by another (changing the
// huge-page setting drops the free list).
void FreshPool(size_t buffer_size, size_t max_free, bool huge_pages) {
  BufferPool::Configure(buffer_size, max_free, !huge_pages);
  BufferPool::Configure(buffer_size, max_free, huge_pages);
}

TEST(BufferPool, PooledBuffersGetHugePageMappingsOfTheirOwn) {
  FreshPool(4 * kMiB, 8, true);
  char* b = BufferPool::Acquire(4 * kMiB);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % kHugePageSize, 0u);
  EXPECT_TRUE(BufferPool::IsHuge(b));
  std::memset(b, 0x5a, 4 * kMiB);
  const Vma v = VmaOf(b);
  // Its own mapping, exactly the buffer, marked for huge pages (the madvise took effect).
  EXPECT_EQ(v.start, reinterpret_cast<uintptr_t>(b));
  EXPECT_EQ(v.end - v.start, 4 * kMiB);
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(thp, mode);
  if (!mode.empty() && mode.find("[never]") == std::string::npos) {
    const size_t flags = v.fields.find("VmFlags:");
    ASSERT_NE(flags, std::string::npos) << v.fields;
    const std::string line = v.fields.substr(flags, v.fields.find('\n', flags) - flags) + " ";
    EXPECT_NE(line.find(" hg "), std::string::npos) << line;  // MADV_HUGEPAGE
  }
  BufferPool::Release(b, 4 * kMiB);
}

TEST(BufferPool, ReleasedBuffersAreReusedUpToTheCapThenUnmapped) {
  FreshPool(4 * kMiB, 1, true);
  char* a = BufferPool::Acquire(4 * kMiB);
  char* b = BufferPool::Acquire(4 * kMiB - 100);  // a last block: shorter, same pooled size
  ASSERT_TRUE(BufferPool::IsHuge(a));
  ASSERT_TRUE(BufferPool::IsHuge(b));
  b[4 * kMiB - 101] = 1;
  BufferPool::Release(a, 4 * kMiB);             // kept (one free buffer allowed)
  BufferPool::Release(b, 4 * kMiB - 100);       // beyond the cap: unmapped
  EXPECT_FALSE(BufferPool::IsHuge(b));
  EXPECT_EQ(VmaOf(b).start, 0u) << "the released buffer is still mapped";
  char* c = BufferPool::Acquire(4 * kMiB);
  EXPECT_EQ(c, a);  // the pooled one comes back
  BufferPool::Release(c, 4 * kMiB);
}

TEST(BufferPool, SmallOrOddSizesAndHugePagesOffUseOrdinaryPages) {
  FreshPool(4 * kMiB, 8, true);
  char* small = BufferPool::Acquire(100 * 1024);  // not pooled
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small) % kPageSize, 0u);
  EXPECT_FALSE(BufferPool::IsHuge(small));
  BufferPool::Release(small, 100 * 1024);

  BufferPool::Configure(3 * kMiB, 8, true);  // pooled, but not a whole number of huge pages
  char* odd = BufferPool::Acquire(3 * kMiB);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(odd) % kPageSize, 0u);
  EXPECT_FALSE(BufferPool::IsHuge(odd));
  BufferPool::Release(odd, 3 * kMiB);

  BufferPool::Configure(4 * kMiB, 8, false);
  char* off = BufferPool::Acquire(4 * kMiB);
  EXPECT_FALSE(BufferPool::IsHuge(off));
  std::memset(off, 1, 4 * kMiB);
  BufferPool::Release(off, 4 * kMiB);
}

TEST(BufferPool, ALargeBufferOutsideThePoolIsGivenBackToTheSystemWhenReleased) {
  // A reader's copy of part of a block (up to a 1 MiB READ), a file's last block: not pooled. From
  // malloc they stayed in its arenas after release (peak RSS); mapped on their own, they do not.
  FreshPool(4 * kMiB, 8, true);
  void* volatile big = std::malloc(8 * kMiB);  // as in a long-running daemon: malloc's mmap
  std::free(big);                               // threshold raised above the buffer's size
  const uint64_t live = BufferPool::LiveBytes();
  char* b = BufferPool::Acquire(kMiB + 5);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(BufferPool::LiveBytes(), live + kMiB + kPageSize);
  std::memset(b, 7, kMiB + 5);
  EXPECT_NE(VmaOf(b).start, 0u);
  EXPECT_FALSE(BufferPool::IsHuge(b));
  BufferPool::Release(b, kMiB + 5);
  EXPECT_EQ(BufferPool::LiveBytes(), live);
  EXPECT_EQ(VmaOf(b).start, 0u) << "still mapped after release";
}

TEST(BufferPool, ABufferOutsideTheBudgetTakesNoRoomAndIsGivenBackWhenReleased) {
  // A reader's copy of part of a block it lets go: taken while every budgeted buffer is held, it
  // must neither wait for room nor take any.
  FreshPool(kMiB, 8, false);
  const uint64_t live = BufferPool::LiveBytes();
  const uint64_t outside = BufferPool::OutsideBytes();
  {
    Block copy(768 << 10, Block::OutsideBudget{});  // would take a pooled 1 MiB buffer otherwise
    std::memset(copy.data.get(), 7, copy.size);
    EXPECT_EQ(BufferPool::LiveBytes(), live);
    EXPECT_EQ(BufferPool::OutsideBytes(), outside + (768 << 10));
    EXPECT_TRUE(BufferPool::Precharge(kMiB, live + kMiB)) << "the copy took room in the budget";
    BufferPool::DropPrecharge();
    EXPECT_NE(VmaOf(copy.data.get()).start, 0u);
    const char* at = copy.data.get();
    copy.data.reset();
    EXPECT_EQ(VmaOf(at).start, 0u) << "still mapped after release";
  }
  EXPECT_EQ(BufferPool::OutsideBytes(), outside);
  EXPECT_EQ(BufferPool::LiveBytes(), live);
}

TEST(BufferPool, BuffersOutstandingAcrossAReconfigureAreFreedTheWayTheyWereMade) {
  // A cache re-created with other settings in the same process (as these tests do): buffers
  // handed out before must still be released correctly (ASan checks munmap against free).
  FreshPool(4 * kMiB, 8, true);
  char* huge = BufferPool::Acquire(4 * kMiB);
  ASSERT_TRUE(BufferPool::IsHuge(huge));
  BufferPool::Configure(4 * kMiB, 8, false);
  char* plain = BufferPool::Acquire(4 * kMiB);
  ASSERT_FALSE(BufferPool::IsHuge(plain));
  BufferPool::Configure(2 * kMiB, 8, true);  // other size: neither is pooled any more
  BufferPool::Release(huge, 4 * kMiB);
  BufferPool::Release(plain, 4 * kMiB);
  EXPECT_FALSE(BufferPool::IsHuge(huge));
  BufferPool::Configure(4 * kMiB, 8, true);
}

}  // namespace
}  // namespace hubfs::cache
