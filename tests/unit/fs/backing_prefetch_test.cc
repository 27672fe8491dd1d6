// The sentinel policy of passthrough prefetch, driven by simulated readers over a simulated page
// cache: what it asks the kernel to read for a sequential reader, a header read, random reads, and
// a file already partly cached.
#include "fs/backing_prefetch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <random>
#include <set>
#include <vector>

#include "../test_util.h"
#include "common/metrics.h"

namespace hubfs::fs {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kChunk = 32 * kMiB;
using Range = SentinelStream::Range;

// A page cache of one file: the pages a reader read (with the kernel's own readahead of `ra`
// bytes past them) and the pages prefetched.
struct PageCache {
  std::set<uint64_t> pages;
  void Add(uint64_t off, uint64_t len, uint64_t size) {
    for (uint64_t p = off / kPage * kPage; p < std::min(size, off + len); p += kPage) pages.insert(p);
  }
  bool Cached(uint64_t off) const { return pages.count(off) > 0; }
};

struct Trace {
  std::vector<Range> issued;
  uint64_t max_lead = 0;  // the furthest prefetch end past the reader's position
};

// A reader reading [begin, end) in 1 MiB steps, the kernel reading `ra` ahead of it; the policy is
// polled after every step.
void Read(SentinelStream& s, PageCache& pc, Trace& run, uint64_t begin, uint64_t end, uint64_t size,
          uint64_t ra = 8 * kMiB) {
  for (uint64_t pos = begin; pos < end; pos += kMiB) {
    pc.Add(pos, kMiB + ra, size);
    for (const Range& r : s.Poll([&](uint64_t k) { return pc.Cached(k * kChunk); })) {
      run.issued.push_back(r);
      pc.Add(r.offset, r.length, size);
      run.max_lead = std::max(run.max_lead, r.offset + r.length - std::min(pos + kMiB, size));
    }
  }
}

void ExpectNoSentinelsNoOverlap(const std::vector<Range>& issued, uint64_t size) {
  std::vector<Range> sorted = issued;
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    const Range& r = sorted[i];
    EXPECT_GT(r.length, 0u);
    EXPECT_LE(r.offset + r.length, size);
    // no sentinel page inside: [k*chunk, k*chunk + page) never overlaps
    const uint64_t k = (r.offset + r.length - 1) / kChunk;
    EXPECT_GE(r.offset, k * kChunk + kPage) << "range " << r.offset << "+" << r.length << " covers a sentinel";
    if (i > 0) {
      EXPECT_LE(sorted[i - 1].offset + sorted[i - 1].length, r.offset) << "overlap";
    }
  }
}

TEST(SentinelStreamTest, SequentialReaderGetsTheRestOfTheFileAheadOfIt) {
  const uint64_t size = 1244 * kMiB + 12345;  // a shard-sized file, not chunk-aligned
  SentinelStream s(size, kChunk, kPage, 256 * kMiB);
  PageCache pc;
  Trace run;
  Read(s, pc, run, 0, size, size);
  ExpectNoSentinelsNoOverlap(run.issued, size);
  // everything from chunk 2 on, but the sentinels, was asked for
  uint64_t bytes = 0;
  for (const Range& r : run.issued) bytes += r.length;
  const uint64_t chunks = (size + kChunk - 1) / kChunk;
  EXPECT_EQ(bytes, size - 2 * kChunk - (chunks - 2) * kPage);
  EXPECT_TRUE(s.finished());
  // never more than the window, plus the chunk being read, ahead of the reader (whose sentinel the
  // kernel's readahead, 8 MiB here, brings in a step early)
  EXPECT_LE(run.max_lead, 256 * kMiB + kChunk + 9 * kMiB);
  EXPECT_GE(run.max_lead, 256 * kMiB - kChunk);
}

TEST(SentinelStreamTest, WindowStartsSmallAndDoubles) {
  const uint64_t size = 1024 * kMiB;
  SentinelStream s(size, kChunk, kPage, 256 * kMiB);
  PageCache pc;
  std::vector<size_t> chunks_per_step;
  for (uint64_t k = 1; k <= 5; ++k) {
    pc.Add(k * kChunk, kPage, size);  // the reader reaches sentinel k
    auto out = s.Poll([&](uint64_t j) { return pc.Cached(j * kChunk); });
    chunks_per_step.push_back(out.size());
    EXPECT_EQ(s.reader_chunk(), k);
  }
  // window 2, 4, 8 (the cap: 256 MiB), 8, 8 chunks past the reader's chunk
  EXPECT_EQ(chunks_per_step, (std::vector<size_t>{2, 3, 5, 1, 1}));
}

TEST(SentinelStreamTest, HeaderReadCostsNothing) {
  const uint64_t size = 1024 * kMiB;
  SentinelStream s(size, kChunk, kPage, 256 * kMiB);
  PageCache pc;
  Trace run;
  Read(s, pc, run, 0, 2 * kMiB, size);  // 8 bytes, a header, a first tensor
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(s.Poll([&](uint64_t k) { return pc.Cached(k * kChunk); }).empty());
  EXPECT_TRUE(run.issued.empty());
  EXPECT_FALSE(s.finished());
}

TEST(SentinelStreamTest, RandomReadsPastTheFirstChunksCostNothing) {
  const uint64_t size = 2048 * kMiB;
  SentinelStream s(size, kChunk, kPage, 256 * kMiB);
  PageCache pc;
  Trace run;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200; ++i) {
    const uint64_t off = 3 * kChunk + rng() % (size - 4 * kChunk);
    Read(s, pc, run, off, off + kMiB, size, 0);  // 1 MiB random reads (4 KiB readahead aside)
  }
  // a random read may land on a sentinel, but never on sentinel 1: nothing was reached in order
  EXPECT_TRUE(run.issued.empty());
}

TEST(SentinelStreamTest, CachedPrefixIsSkippedAndTheWindowFollowsIt) {
  const uint64_t size = 1024 * kMiB;
  SentinelStream s(size, kChunk, kPage, 256 * kMiB);
  PageCache pc;
  pc.Add(0, 10 * kChunk + kPage, size);  // an earlier reader left 320 MiB in the page cache
  auto out = s.Poll([&](uint64_t k) { return pc.Cached(k * kChunk); });
  EXPECT_EQ(s.reader_chunk(), 10u);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.front().offset, 11 * kChunk + kPage);  // after the reader's chunk
  EXPECT_EQ(out.back().offset + out.back().length, 19 * kChunk);
}

TEST(SentinelStreamTest, SmallWindowAndShortFile) {
  // a window narrower than a chunk still moves one chunk at a time; the last chunk is cut at the
  // end of the file, and a last chunk of one page asks for nothing
  const uint64_t size = 4 * kChunk + kPage;
  SentinelStream s(size, kChunk, kPage, kMiB);
  PageCache pc;
  Trace run;
  Read(s, pc, run, 0, size, size);
  ExpectNoSentinelsNoOverlap(run.issued, size);
  ASSERT_EQ(run.issued.size(), 2u);
  EXPECT_EQ(run.issued[0], (Range{2 * kChunk + kPage, kChunk - kPage}));
  EXPECT_EQ(run.issued[1], (Range{3 * kChunk + kPage, kChunk - kPage}));
  EXPECT_TRUE(s.finished());
}

// A file on disk (TMPDIR), its page cache dropped on demand, and cachestat(2) over it.
class RealFile {
 public:
  explicit RealFile(size_t size) : path_(dir_.path() + "/backing"), bytes_(size, '\0') {
    std::mt19937_64 rng(hubfs::testing::TestSeed());
    for (size_t i = 0; i + 8 <= size; i += 8) {
      const uint64_t v = rng();
      std::memcpy(bytes_.data() + i, &v, 8);
    }
    hubfs::testing::WriteFileBytes(path_, bytes_);
  }
  // Empty when the page cache of this file cannot be watched (no cachestat, or memory-backed).
  std::string Unusable() const {
    struct statfs fs {};
    if (::statfs(path_.c_str(), &fs) != 0) return "statfs failed";
    if (fs.f_type == TMPFS_MAGIC) return dir_.path() + " is in memory (always cached)";
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    const bool ok = Cached(fd, 0, 0) >= 0;
    ::close(fd);
    return ok ? "" : "no cachestat(2)";
  }
  // A new descriptor, the file's page cache dropped first.
  int UncachedFd() const {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return fd;
  }
  // Pages of [off, off + len) in the page cache (len 0: to the end), -1 if cachestat fails.
  static int64_t Cached(int fd, uint64_t off, uint64_t len) {
    uint64_t range[2] = {off, len}, stat[5] = {};
    return ::syscall(451, fd, range, stat, 0) == 0 ? static_cast<int64_t>(stat[0]) : -1;
  }
  // The page-cache folios holding [off, off + len) (cached already: mapping them reads nothing),
  // from /proc/self/pagemap and /proc/kpageflags; -1 where that cannot be read (not root).
  static int64_t Folios(int fd, uint64_t off, uint64_t len) {
    void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(off));
    if (m == MAP_FAILED) return -1;
    int64_t folios = 0;
    const auto* p = static_cast<const volatile char*>(m);
    for (uint64_t i = 0; i < len; i += kPage) (void)p[i];
    // (pagemap reads must be multiples of 8 bytes: plain pread, no stream buffering)
    const int pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    const int flags = ::open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
    for (uint64_t i = 0; i < len && pagemap >= 0 && flags >= 0; i += kPage) {
      uint64_t entry = 0, f = 0;
      const off_t at = static_cast<off_t>((reinterpret_cast<uintptr_t>(m) + i) / kPage * 8);
      if (::pread(pagemap, &entry, 8, at) != 8) {
        folios = -1;
        break;
      }
      const uint64_t pfn = entry & ((1ULL << 55) - 1);
      if (!(entry >> 63) || pfn == 0 || ::pread(flags, &f, 8, static_cast<off_t>(pfn * 8)) != 8) {
        folios = -1;
        break;
      }
      if (!(f & (1ULL << 16))) ++folios;  // not a compound tail: a folio starts here
    }
    if (pagemap < 0 || flags < 0) folios = -1;
    if (pagemap >= 0) ::close(pagemap);
    if (flags >= 0) ::close(flags);
    ::munmap(m, len);
    return folios;
  }
  const std::string& bytes() const { return bytes_; }

 private:
  hubfs::testing::TempDir dir_;
  std::string path_;
  std::string bytes_;
};

// The prefetcher's threads over a real file on disk (the sanitizer builds run this): a reader
// followed from Start to Stop reads its bytes unchanged while chunks are read ahead of it; a
// second file stopped mid-way and a third never stopped (the destructor) end cleanly.
TEST(BackingPrefetcherTest, FollowsReadersOfARealFileAndStops) {
  const size_t size = 24 * kMiB;
  RealFile file(size);
  if (auto why = file.Unusable(); !why.empty()) GTEST_SKIP() << why;
  auto& prefetched = metrics::Get("passthrough.prefetch.bytes");
  auto& followed = metrics::Get("passthrough.prefetch.files");
  const uint64_t bytes0 = prefetched.Get(), files0 = followed.Get();
  {
    BackingPrefetcher pf(8 * kMiB);  // 1 MiB sentinel chunks
    const int reader = file.UncachedFd();
    pf.Start(1, file.UncachedFd());
    ASSERT_EQ(followed.Get(), files0 + 1);
    std::string got(size, '\0');
    for (size_t off = 0; off < size; off += kMiB) {
      ASSERT_EQ(::pread(reader, got.data() + off, kMiB, static_cast<off_t>(off)), static_cast<ssize_t>(kMiB));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(got == file.bytes());
    EXPECT_GT(prefetched.Get(), bytes0);
    pf.Stop(1);
    pf.Stop(1);  // a second Stop is harmless
    ::close(reader);
    // stopped while a reader moves, and one left to the destructor
    const int r2 = file.UncachedFd();
    pf.Start(2, file.UncachedFd());
    pf.Start(3, file.UncachedFd());
    for (size_t off = 0; off < 8 * kMiB; off += kMiB) ASSERT_EQ(::pread(r2, got.data(), kMiB, static_cast<off_t>(off)), static_cast<ssize_t>(kMiB));
    pf.Stop(2);
    ::close(r2);
  }
  EXPECT_EQ(followed.Get(), files0 + 3);
}

// With the default window (32 MiB chunks): a reader just
// past the first sentinel gets the next two chunks read ahead, and none of the sentinels (its
// own next one, and the one after the prefetched chunks) is read by the prefetch itself, whatever
// the kernel's readahead of the prefetch's own reads does. The 2 MiB holding a sentinel is left
// to the reader's readahead; a chunk is read from its end back, and where pages below the prefetch
// are in the page cache already (the reader's readahead got there first), it leaves the rest of
// that chunk alone.
TEST(BackingPrefetcherTest, PrefetchNeverReadsASentinel) {
  constexpr uint64_t kChunk32 = 32 * kMiB;
  const size_t size = 5 * kChunk32 + 12345;
  RealFile file(size);
  if (auto why = file.Unusable(); !why.empty()) GTEST_SKIP() << why;
  BackingPrefetcher pf(256 * kMiB);
  const int reader = file.UncachedFd();
  const int followed = file.UncachedFd();
  // One page 10 MiB into chunk 3, as a reader's readahead ahead of the prefetch would leave it.
  const int early = file.UncachedFd();
  ASSERT_EQ(::posix_fadvise(early, 0, 0, POSIX_FADV_RANDOM), 0);
  std::string page(kPage, '\0');
  ASSERT_EQ(::pread(early, page.data(), kPage, static_cast<off_t>(3 * kChunk32 + 10 * kMiB)),
            static_cast<ssize_t>(kPage));
  ::close(early);
  ASSERT_EQ(RealFile::Cached(reader, 3 * kChunk32, kChunk32), 1);
  pf.Start(1, followed);
  std::string buf(kMiB, '\0');
  for (uint64_t off = 0; off < kChunk32 + 4 * kMiB; off += kMiB) {  // just past sentinel 1
    ASSERT_EQ(::pread(reader, buf.data(), kMiB, static_cast<off_t>(off)), static_cast<ssize_t>(kMiB));
    ASSERT_EQ(std::memcmp(buf.data(), file.bytes().data() + off, kMiB), 0);
  }
  // Chunk 2 arrives past its first 2 MiB; chunk 3 from its end down to 8 MiB above the page
  // found there: [20, 32) MiB (the step at 18 MiB sees the page within 8 MiB below and stops).
  const int64_t body_pages = static_cast<int64_t>((kChunk32 - 2 * kMiB) / kPage + 12 * kMiB / kPage);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto body = [&] {
    return RealFile::Cached(reader, 2 * kChunk32 + 2 * kMiB, kChunk32 - 2 * kMiB) +
           RealFile::Cached(reader, 3 * kChunk32 + 20 * kMiB, 12 * kMiB);
  };
  while (body() < body_pages && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(body(), body_pages);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // any readahead still in flight
  for (uint64_t k = 2; k <= 4; ++k) EXPECT_EQ(RealFile::Cached(reader, k * kChunk32, 2 * kMiB), 0) << "sentinel " << k;
  EXPECT_EQ(RealFile::Cached(reader, 3 * kChunk32 + 2 * kMiB, 18 * kMiB), 1) << "chunk 3 below its overtaken step";
  // Past its first 2 MiB (the sentinel's), a prefetched chunk is in 2 MiB folios, where this
  // kernel and filesystem have them at all (a control read the same way says so): 15 folios for
  // 30 MiB, where WILLNEED or a fresh descriptor's readahead make hundreds to thousands.
  const int64_t got = RealFile::Folios(reader, 2 * kChunk32 + 2 * kMiB, kChunk32 - 2 * kMiB);
  ::close(reader);
  if (got < 0) GTEST_SKIP() << "page flags unreadable (needs root)";
  const int ctl = file.UncachedFd();
  void* m = ::mmap(nullptr, 2 * kMiB, PROT_READ, MAP_SHARED, ctl, static_cast<off_t>(4 * kChunk32 + 2 * kMiB));
  ASSERT_NE(m, MAP_FAILED);
  const bool huge = ::madvise(m, 2 * kMiB, MADV_HUGEPAGE) == 0 && ::madvise(m, 2 * kMiB, MADV_RANDOM) == 0 &&
                    ::madvise(m, 2 * kMiB, 22 /* MADV_POPULATE_READ */) == 0;
  ::munmap(m, 2 * kMiB);
  const int64_t control = huge ? RealFile::Folios(ctl, 4 * kChunk32 + 2 * kMiB, 2 * kMiB) : -1;
  ::close(ctl);
  if (control != 1) GTEST_SKIP() << "no 2 MiB page-cache folios here (control: " << control << " folios)";
  EXPECT_EQ(got, static_cast<int64_t>((kChunk32 - 2 * kMiB) / (2 * kMiB)));
}

}  // namespace
}  // namespace hubfs::fs
