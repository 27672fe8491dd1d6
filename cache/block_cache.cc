// The block cache (see block_cache.h).
#include "cache/block_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/file_util.h"
#include "common/log.h"
#include "common/metrics.h"

namespace hubfs::cache {
namespace {
constexpr int kWriterNice = -5;
using Clock = std::chrono::steady_clock;
metrics::Counter& MemHits() { static auto& c = metrics::Get("cache.mem.hit"); return c; }
metrics::Counter& DiskHits() { static auto& c = metrics::Get("cache.disk.hit"); return c; }
metrics::Counter& Misses() { static auto& c = metrics::Get("cache.miss"); return c; }
metrics::Counter& OriginBytes() { static auto& c = metrics::Get("cache.origin_bytes"); return c; }
metrics::Counter& MemBytes() { static auto& c = metrics::Get("cache.mem.bytes"); return c; }
metrics::Counter& MemBlocks() { static auto& c = metrics::Get("cache.mem.blocks"); return c; }
metrics::Counter& LocalHits() { static auto& c = metrics::Get("cache.local.hit"); return c; }
metrics::Counter& LocalBytes() { static auto& c = metrics::Get("cache.local.bytes"); return c; }
}  // namespace

BlockCache::BlockCache(CacheOptions options)
    : options_(std::move(options)),
      // At least 16 blocks per shard: a per-shard LRU over a handful of blocks evicts blocks that
      // parallel streams are about to read.
      nshards_(std::clamp<size_t>(options_.memory_bytes / std::max<size_t>(options_.block_size, 1) / 16, 1, kShards)),
      shards_(new Shard[kShards]) {
  if (!options_.disk_dir.empty()) {
    auto disk = DiskStore::Open(
        {options_.disk_dir, options_.disk_bytes, options_.min_free_bytes, options_.block_size});
    if (disk.ok()) {
      disk_ = std::move(disk.value());
    } else {
      metrics::Get("cache.disk.errors").Add();
      LOG_WARN("disk cache disabled: %s (reads are served from memory and the origin)",
               disk.error().ToString().c_str());
    }
  }
  if (options_.served_retain_bytes == 0) options_.served_retain_bytes = options_.memory_bytes / 8;
  if (options_.buffer_bytes == 0) options_.buffer_bytes = options_.memory_bytes + options_.memory_bytes / 2;
  BufferPool::SetFootprintLimit(options_.buffer_bytes);
  if (options_.max_pending_write_bytes == 0)
    options_.max_pending_write_bytes = std::max<uint64_t>(options_.memory_bytes / 4, 4 * options_.block_size);
  // Recycle block buffers: up to a quarter of the memory budget (at least 8) waiting for reuse.
  BufferPool::Configure(options_.block_size,
                        std::max<size_t>(8, options_.memory_bytes / 4 / std::max<size_t>(options_.block_size, 1)),
                        options_.huge_pages);
  if (disk_) {
    verified_dir_ = options_.disk_dir + "/" + kDiskFormatDir + "/verified";
    ::mkdir(verified_dir_.c_str(), 0700);
  }
  writers_ = std::make_unique<WorkerPool>(options_.disk_writers, WorkerPool::Priority::kNormal, "hubfs-write",
                                          options_.surge_disk_writers);
  // Hashing a whole file costs ~0.5 s of CPU per GB (SHA-256) plus reading it back from disk: it
  // waits until the cache has been quiet for a moment and runs at idle priority, so it never
  // takes CPU or disk bandwidth from a load in progress (the next shard of a checkpoint).
  verifier_ = std::make_unique<WorkerPool>(1, WorkerPool::Priority::kIdle, "hubfs-verify");
  if (disk_)
    flusher_ = std::thread([this] {
      ::pthread_setname_np(::pthread_self(), "hubfs-flush");
      FlusherMain();
    });
  for (int i = 0; i < std::max(1, options_.loader_threads); ++i)
    loaders_.emplace_back([this] {
      ::pthread_setname_np(::pthread_self(), "hubfs-fetch");
      LoaderMain();
    });
}

BlockCache::~BlockCache() {
  {
    std::lock_guard lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  for (auto& t : loaders_) t.join();
  // Queued flights that never ran: fail them so no waiter is left behind.
  for (auto& [key, weak] : queue_)
    if (auto flight = weak.lock()) Complete(key, flight, MakeError(ErrorKind::kCancelled, "cache shutting down"));
  queue_.clear();
  if (flusher_.joinable()) {
    {
      std::lock_guard lock(write_mu_);
      flusher_stop_ = true;
    }
    flush_cv_.notify_all();
    flusher_.join();
  }
  Flush();
  for (size_t i = 0; i < kShards; ++i) {
    MemBytes().Sub(shards_[i].bytes);
    MemBlocks().Sub(shards_[i].resident.size());
    shards_[i].lru.clear();
  }
}

void BlockCache::Flush() {
  verifier_->Wait();  // verification can purge blocks: before the writers' barrier
  SubmitDeferred();
  writers_->Wait();
}

void BlockCache::NoteActivity() {
  last_activity_ns_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
}

Clock::duration BlockCache::SinceActivity() const {
  return Clock::now() - Clock::time_point(Clock::duration(last_activity_ns_.load(std::memory_order_relaxed)));
}

bool BlockCache::WaitQuiet() {
  const auto quiet = std::chrono::milliseconds(options_.verify_quiet_ms);
  for (;;) {
    {
      std::lock_guard lock(queue_mu_);
      if (stopping_) return false;
    }
    const auto idle = SinceActivity();
    if (idle >= quiet) return true;
    std::this_thread::sleep_for(std::min<Clock::duration>(quiet - idle, std::chrono::milliseconds(100)));
  }
}

void BlockCache::SetHeld(const Block& b, uint8_t bit, bool on) {
  const uint8_t other = bit == Block::kResident ? Block::kWritePending : Block::kResident;
  const uint8_t old = on ? b.held_by.fetch_or(bit) : b.held_by.fetch_and(static_cast<uint8_t>(~bit));
  if ((old & other) == 0 || ((old & bit) != 0) == on) return;  // "in both" did not change
  if (on) resident_and_pending_bytes_ += b.size;
  else resident_and_pending_bytes_ -= b.size;
}

BlockRef BlockCache::Drop(Shard& s, Entry& e) {
  s.lru.erase(s.lru.iterator_to(e));
  s.bytes -= e.block->size;
  resident_bytes_ -= e.block->size;
  MemBytes().Sub(e.block->size);
  MemBlocks().Sub();
  if (e.unused_prefetch) unused_prefetch_bytes_ -= e.block->size;
  if (e.fully_served) served_bytes_ -= e.block->size;
  SetHeld(*e.block, Block::kResident, false);
  BlockRef block = std::move(e.block);
  s.resident.erase(e.key);  // destroys e
  return block;
}

void BlockCache::Served(const BlockKey& key, size_t bytes) {
  std::vector<BlockRef> freed;
  Shard& s = ShardFor(key);
  std::lock_guard lock(s.mu);
  auto it = s.resident.find(key);
  if (it == s.resident.end()) return;
  Entry& e = *it->second;
  e.served += bytes;
  if (e.unused_prefetch || e.served < e.block->size || e.fully_served) return;
  e.fully_served = true;
  served_bytes_ += e.block->size;
  s.lru.erase(s.lru.iterator_to(e));
  s.lru.push_front(e);
  // What was returned whole is with its reader (the kernel's page cache, or a direct reader's own
  // buffer): beyond a small reserve (re-reads come from the disk tier), such blocks give their
  // buffers back at once. A streaming read then cycles through a few dozen warm buffers instead
  // of filling the whole memory cap with fresh pages, which are slow to touch on a VM.
  for (auto lit = s.lru.begin(); served_bytes_.load() > options_.served_retain_bytes && lit != s.lru.end();) {
    Entry& v = *lit++;
    if (!v.fully_served) break;  // fully served blocks are the front of the list
    const long holders = v.block.use_count() - (v.block->write_pending() ? 1 : 0);
    if (holders > 1) continue;
    freed.push_back(Drop(s, v));
  }
}

bool BlockCache::InMemory(const BlockKey& key) const {
  Shard& s = ShardFor(key);
  std::lock_guard lock(s.mu);
  return s.resident.count(key) != 0;
}

BlockCache::LocalCopy::~LocalCopy() {
  if (fd >= 0) ::close(fd);
}

bool BlockCache::AddLocalCopy(const ContentId& id, uint64_t size, const std::string& path,
                              const FileIdentity* verified) {
  if (auto have = LocalCopyOf(id);
      have && have->path == path && have->size == size && (verified == nullptr || have->identity == *verified))
    return true;
  auto copy = std::make_shared<LocalCopy>();
  copy->path = path;
  copy->size = size;
  copy->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (copy->fd < 0) return false;
  copy->identity = FdIdentity(copy->fd);
  if (verified != nullptr && copy->identity != *verified) {
    static auto& m_replaced = metrics::Get("cache.local_copies_replaced");
    m_replaced.Add();
    return false;  // (copy's destructor closes it)
  }
  std::lock_guard lock(local_mu_);
  local_[id] = std::move(copy);
  local_count_ = local_.size();
  return true;
}

void BlockCache::DropLocalCopy(const ContentId& id) {
  std::shared_ptr<const LocalCopy> gone;  // closed outside the lock
  std::lock_guard lock(local_mu_);
  if (auto it = local_.find(id); it != local_.end()) {
    gone = std::move(it->second);
    local_.erase(it);
  }
  local_count_ = local_.size();
}

std::string BlockCache::LocalCopyPath(const ContentId& id) const {
  auto copy = LocalCopyOf(id);
  return copy ? copy->path : std::string();
}

std::shared_ptr<const BlockCache::LocalCopy> BlockCache::LocalCopyOf(const ContentId& id) const {
  if (local_count_.load(std::memory_order_relaxed) == 0) return nullptr;
  std::lock_guard lock(local_mu_);
  auto it = local_.find(id);
  return it == local_.end() ? nullptr : it->second;
}

Result<BlockRef> BlockCache::ReadLocal(const LocalCopy& copy, const BlockKey& key, size_t len) {
  auto block = std::make_shared<Block>(len);
  if (!PreadAll(copy.fd, block->data.get(), len, static_cast<off_t>(key.index * options_.block_size))) {
    LOG_WARN("reading %s failed (%s): fetching its blocks instead", copy.path.c_str(),
             errno != 0 ? std::strerror(errno) : "the file is shorter than it was");
    DropLocalCopy(key.content);
    return MakeError(ErrorKind::kIo, "local copy unreadable");
  }
  LocalHits().Add();
  LocalBytes().Add(len);
  return BlockRef(std::move(block));
}

bool BlockCache::Contains(const BlockKey& key) const {
  if (auto copy = LocalCopyOf(key.content); copy && key.index * options_.block_size < copy->size) return true;
  Shard& s = ShardFor(key);
  {
    std::lock_guard lock(s.mu);
    if (s.resident.count(key)) return true;
  }
  {
    std::lock_guard lock(write_mu_);
    if (pending_writes_.count(key)) return true;
  }
  return disk_ && disk_->Contains(key);
}

Result<BlockRef> BlockCache::Get(const BlockKey& key, size_t len, const FetchFn& fetch, const CancelToken* cancel,
                                 const std::function<void()>& before_wait) {
  NoteActivity();
  Shard& s = ShardFor(key);
  for (;;) {
    std::shared_ptr<Flight> flight;
    BlockRef hit;
    bool owner = false;
    {
      std::lock_guard lock(s.mu);
      if (auto it = s.resident.find(key); it != s.resident.end()) {
        s.lru.erase(s.lru.iterator_to(*it->second));
        s.lru.push_back(*it->second);
        hit = it->second->block;
        if (it->second->unused_prefetch) {
          it->second->unused_prefetch = false;
          unused_prefetch_bytes_ -= hit->size;
        }
      } else {
        auto [fit, inserted] = s.flights.try_emplace(key);
        if (inserted) {
          fit->second = std::make_shared<Flight>();
          fit->second->len = len;
          fit->second->claimed = true;
          owner = true;
        }
        flight = fit->second;
      }
    }
    if (hit) {
      MemHits().Add();
      NotePresent(key);
      return hit;
    }
    // A queued prefetch nobody runs yet: the demand reader runs it now.
    if (!owner && !flight->claimed.exchange(true)) {
      owner = true;
      queued_bytes_ -= flight->len;
    }
    if (owner) {
      bool write_to_disk = false;
      auto r = Load(key, len, fetch, cancel, /*prefetch=*/false, &write_to_disk, before_wait);
      Complete(key, flight, r);
      if (write_to_disk) ScheduleWrite(key, r.value());
      if (r.ok()) NotePresent(key);
      return r;
    }
    std::unique_lock lock(flight->mu);
    if (!flight->done && before_wait) {
      lock.unlock();
      before_wait();  // its owner may be waiting for buffer room this caller holds
      lock.lock();
    }
    while (!flight->done) {
      if (cancel != nullptr && cancel->ShouldStop())
        return MakeError(cancel->cancelled() ? ErrorKind::kCancelled : ErrorKind::kTimeout, "wait for block");
      flight->cv.wait_for(lock, std::chrono::milliseconds(50));
    }
    Result<BlockRef> r = flight->result;
    lock.unlock();
    if (r.ok()) MarkUsed(s, key);  // we waited on a prefetch: it has now been used
    // The loader gave up for its own reasons (its reader was interrupted): try again ourselves.
    if (!r.ok() && r.error().kind == ErrorKind::kCancelled && (cancel == nullptr || !cancel->ShouldStop()))
      continue;
    return r;
  }
}

void BlockCache::TrackFile(const ContentId& id, uint64_t size) {
  if (LocalCopyOf(id)) return;  // verified already, and never joined: it is whole where it is
  // A file verified before whole files were on is verified again, to be joined.
  const bool join = whole_files_ && disk_ && size >= kWholeMinBytes;
  if (join && disk_->Contains(BlockKey{id, kWholeIndex})) return;
  tracker_.Track(id, size, options_.block_size, join ? std::string() : verified_dir_);
}

BlockCache::Backing BlockCache::WholeBacking(const ContentId& id) {
  if (!whole_files_) return {};
  if (auto copy = LocalCopyOf(id)) {
    if (copy->size < kWholeMinBytes) return {};
    return Backing{"/proc/self/fd/" + std::to_string(copy->fd), copy};
  }
  return Backing{disk_ ? disk_->WholePath(id) : "", nullptr};
}

void BlockCache::NotePresent(const BlockKey& key) {
  auto complete = tracker_.NotePresent(key);
  if (!complete) return;
  const ContentId id = key.content;
  const uint64_t size = *complete;
  verifier_->Run([this, id, size] {
    // Shutting down: skip it rather than hold the unmount; the file has no marker, so it is
    // verified the next time all of its blocks are seen.
    if (WaitQuiet()) {
      VerifyFile(id, size);
    } else {
      tracker_.Forget(id);
    }
  });
}

void BlockCache::VerifyFile(const ContentId& id, uint64_t size) {
  static auto& m_ok = metrics::Get("cache.verify.ok");
  static auto& m_bad = metrics::Get("cache.verify.mismatch");
  static auto& m_incomplete = metrics::Get("cache.verify.incomplete");
  const uint64_t bs = options_.block_size;
  const uint64_t nblocks = (size + bs - 1) / bs;
  ContentHasher hasher(id, size);
  // The bytes being hashed are also written out as the whole file, kept if they verify.
  std::unique_ptr<WholeFileWriter> whole;
  if (whole_files_ && disk_ && size >= kWholeMinBytes) whole = disk_->BeginWhole(id, size);
  bool complete = true;
  for (uint64_t i = 0; i < nblocks && complete; ++i) {
    {
      std::lock_guard lock(queue_mu_);
      if (stopping_) break;  // unmounting: the file is verified when next seen complete
    }
    const BlockKey key{id, i};
    const size_t len = static_cast<size_t>(std::min<uint64_t>(bs, size - i * bs));
    BlockRef block;
    {
      Shard& s = ShardFor(key);
      std::lock_guard lock(s.mu);
      if (auto it = s.resident.find(key); it != s.resident.end()) block = it->second->block;
    }
    if (!block) {
      std::lock_guard lock(write_mu_);
      if (auto it = pending_writes_.find(key); it != pending_writes_.end()) block = it->second;
    }
    if (!block && disk_) {
      auto r = disk_->Read(key, len);
      if (r.ok()) block = r.value();
    }
    if (!block || block->size != len) {
      complete = false;
      break;
    }
    hasher.Update(block->data.get(), block->size);
    if (whole && !whole->Append(block->data.get(), block->size)) whole.reset();
  }
  {
    std::lock_guard lock(queue_mu_);
    if (stopping_) complete = false;
  }
  if (!complete) {
    m_incomplete.Add();  // evicted before verification, or unmounting: verified when complete again
    tracker_.Forget(id);
    return;
  }
  if (hasher.Matches()) {
    m_ok.Add();
    if (!verified_dir_.empty()) std::ofstream(FileTracker::MarkerPath(verified_dir_, id));
    if (whole) {
      // Blocks still queued for the disk would be written after the whole file replaced them.
      SubmitDeferred();
      writers_->Wait();
      if (auto st = whole->Commit(nblocks); !st.ok())
        LOG_WARN("cannot keep %s as a whole file: %s", id.Hex().c_str(), st.error().ToString().c_str());
    }
    return;
  }
  m_bad.Add();
  LOG_ERROR("content %s (%llu bytes) failed whole-file verification: the origin served wrong bytes; "
            "its blocks are purged and will be refetched", id.Hex().c_str(), static_cast<unsigned long long>(size));
  for (uint64_t i = 0; i < nblocks; ++i) Purge(BlockKey{id, i});
  tracker_.Forget(id);
}

void BlockCache::MarkUsed(Shard& s, const BlockKey& key) {
  std::lock_guard lock(s.mu);
  auto it = s.resident.find(key);
  if (it != s.resident.end() && it->second->unused_prefetch) {
    it->second->unused_prefetch = false;
    unused_prefetch_bytes_ -= it->second->block->size;
  }
}

bool BlockCache::PrefetchRoom(size_t len) const {
  // Queued, loading and loaded-but-unread prefetch stays within half the memory budget.
  const uint64_t budget = std::max<uint64_t>(options_.memory_bytes / 2, options_.block_size);
  return queued_bytes_.load() + unused_prefetch_bytes_.load() + len <= budget;
}

bool BlockCache::Prefetch(const BlockKey& key, size_t len, FetchFn fetch) {
  if (!PrefetchRoom(len)) return false;
  Shard& s = ShardFor(key);
  std::shared_ptr<Flight> flight;
  {
    std::lock_guard lock(s.mu);
    if (s.resident.count(key) || s.flights.count(key)) return false;
    flight = std::make_shared<Flight>();
    flight->len = len;
    flight->fetch = std::move(fetch);
    s.flights.emplace(key, flight);
  }
  queued_bytes_ += len;
  {
    std::lock_guard lock(queue_mu_);
    queue_.emplace_back(key, std::move(flight));
  }
  queue_cv_.notify_one();
  return true;
}

void BlockCache::LoaderMain() {
  for (;;) {
    BlockKey key;
    std::shared_ptr<Flight> flight;
    {
      std::unique_lock lock(queue_mu_);
      queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      key = queue_.front().first;
      flight = queue_.front().second.lock();
      queue_.pop_front();
    }
    if (!flight || flight->claimed.exchange(true)) continue;  // a demand reader took it
    CancelToken cancel(Clock::now() + options_.prefetch_timeout);
    bool write_to_disk = false;
    auto r = Load(key, flight->len, flight->fetch, &cancel, /*prefetch=*/true, &write_to_disk);
    const bool ok = r.ok();
    BlockRef block = write_to_disk ? r.value() : nullptr;
    Complete(key, flight, std::move(r), /*prefetched=*/true);
    // Counted until now, loading included (16 loaders hold 64 MiB of buffers while they fetch);
    // from here on the block counts as unread prefetch, or is gone.
    queued_bytes_ -= flight->len;
    if (block) ScheduleWrite(key, std::move(block));
    if (ok) NotePresent(key);
  }
}

Result<BlockRef> BlockCache::Load(const BlockKey& key, size_t len, const FetchFn& fetch, const CancelToken* cancel,
                                  bool prefetch, bool* write_to_disk, const std::function<void()>& before_wait) {
  *write_to_disk = false;
  {
    std::lock_guard lock(write_mu_);
    if (auto it = pending_writes_.find(key); it != pending_writes_.end() && it->second->size == len) {
      MemHits().Add();  // evicted from the memory tier while still on its way to the disk
      return it->second;
    }
  }
  // The disk read and the fetch below each take a buffer, counted from the moment room is found
  // for it; a load that ends before it takes one gives the room back.
  struct DropUnused {
    ~DropUnused() { BufferPool::DropPrecharge(); }
  } drop_unused;
  const auto no_room = [] { return MakeError(ErrorKind::kCancelled, "no memory for a prefetch"); };
  if (auto copy = LocalCopyOf(key.content); copy && key.index * options_.block_size < copy->size) {
    if (!WaitForBufferRoom(len, cancel, prefetch, before_wait)) return no_room();
    auto r = ReadLocal(*copy, key, len);
    if (r.ok()) return r;
  }
  if (disk_ && disk_->Contains(key)) {
    if (!WaitForBufferRoom(len, cancel, prefetch, before_wait)) return no_room();
    auto r = disk_->Read(key, len);
    if (r.ok()) {
      DiskHits().Add();
      return r;
    }
  }
  Misses().Add();
  const bool write = WaitForWriteRoom(len, cancel);  // first: it may wait long, holding no room
  if (!WaitForBufferRoom(len, cancel, prefetch, before_wait)) return no_room();
  auto block = std::make_shared<Block>(len);
  auto n = fetch(block->data.get(), len, cancel);
  if (!n.ok()) return n.error();
  if (*n != len) return MakeError(ErrorKind::kIo, "origin returned a short block");
  OriginBytes().Add(len);
  *write_to_disk = write;
  return BlockRef(std::move(block));
}

bool BlockCache::WaitForBufferRoom(size_t len, const CancelToken* cancel, bool prefetch,
                                   const std::function<void()>& before_wait) {
  static auto& m_waits = metrics::Get("cache.buffers.budget_waits");
  static auto& m_over = metrics::Get("cache.buffers.budget_exceeded");
  static auto& m_dropped = metrics::Get("cache.buffers.prefetch_dropped");
  const uint64_t limit = prefetch ? options_.buffer_bytes - options_.buffer_bytes / 8 : options_.buffer_bytes;
  if (BufferPool::Precharge(len, limit)) return true;
  m_waits.Add();
  if (before_wait) before_wait();
  auto give_up = Clock::now() + (prefetch ? options_.buffer_wait_limit / 10 : options_.buffer_wait_limit);
  if (cancel != nullptr) give_up = std::min(give_up, cancel->deadline());
  for (;;) {
    const uint64_t after = BufferPool::LiveBytes() + len;
    EvictForBuffers(after > limit ? after - limit : len);
    if (BufferPool::Precharge(len, limit)) return true;
    // Everything left is held: by readers copying it out, loads in flight, the disk write queue.
    // Each lets go within a READ, a fetch or a disk write; a reader holding a block while it
    // waits here has let it go in before_wait. The wait stays bounded all the same.
    if (Clock::now() >= give_up || (cancel != nullptr && cancel->ShouldStop())) {
      if (prefetch) {
        m_dropped.Add();
        return false;
      }
      m_over.Add();
      return true;
    }
    BufferPool::AwaitRelease(std::chrono::milliseconds(5));
  }
}

void BlockCache::EvictForBuffers(uint64_t want) {
  static auto& m_evict_unused = metrics::Get("cache.mem.evicted_unread_prefetch");
  uint64_t freed_bytes = 0;
  std::vector<BlockRef> freed;
  static std::atomic<size_t> next{0};  // where to start: the shards take turns
  const size_t first = next.fetch_add(1, std::memory_order_relaxed);
  // Blocks already read first; blocks prefetched and not read yet only if that is not enough (with
  // a disk tier they are on it or on their way to it, and a reader finds them there).
  for (int pass = 0; pass < 2 && freed_bytes < want; ++pass) {
    for (size_t i = 0; i < nshards_ && freed_bytes < want; ++i) {
      Shard& s = shards_[(first + i) % nshards_];
      std::lock_guard lock(s.mu);
      for (auto lit = s.lru.begin(); freed_bytes < want && lit != s.lru.end();) {
        Entry& e = *lit++;
        const bool queued = e.block->write_pending();
        // Held by a reader (copying it out): not evictable.
        if (e.block.use_count() - (queued ? 1 : 0) > 1 || (pass == 0 && e.unused_prefetch)) continue;
        if (e.unused_prefetch) m_evict_unused.Add();
        if (!queued) freed_bytes += e.block->size;  // a queued one is freed once written
        freed.push_back(Drop(s, e));
      }
    }
  }
  freed.clear();  // outside every lock
}

void BlockCache::Complete(const BlockKey& key, const std::shared_ptr<Flight>& flight, Result<BlockRef> result,
                          bool prefetched) {
  Shard& s = ShardFor(key);
  std::vector<BlockRef> freed;
  {
    std::lock_guard lock(s.mu);
    auto it = s.flights.find(key);
    if (it != s.flights.end() && it->second == flight) s.flights.erase(it);
    if (result.ok()) Insert(s, key, result.value(), prefetched, &freed);
  }
  {
    std::lock_guard lock(flight->mu);
    flight->result = std::move(result);
    flight->done = true;
    flight->fetch = nullptr;
  }
  flight->cv.notify_all();
  freed.clear();  // frees evicted blocks outside every lock
}

void BlockCache::Insert(Shard& s, const BlockKey& key, BlockRef block, bool prefetched,
                        std::vector<BlockRef>* freed) {
  // Unread prefetched blocks evicted because the cap was full: prefetch ran too far ahead.
  static auto& m_evict_unused = metrics::Get("cache.mem.evicted_unread_prefetch");
  const uint64_t shard_cap = options_.memory_bytes / nshards_;
  auto [it, inserted] = s.resident.try_emplace(key);
  if (!inserted) return;
  it->second = std::make_unique<Entry>();
  it->second->key = key;
  it->second->block = std::move(block);
  it->second->unused_prefetch = prefetched;
  if (prefetched) unused_prefetch_bytes_ += it->second->block->size;
  s.bytes += it->second->block->size;
  resident_bytes_ += it->second->block->size;
  SetHeld(*it->second->block, Block::kResident, true);
  MemBytes().Add(it->second->block->size);
  MemBlocks().Add();
  s.lru.push_back(*it->second);
  // Evict least recently used blocks nobody holds, down to the cap: first those already read,
  // then, only if that is not enough, unread prefetched ones.
  for (int pass = 0; pass < 2 && s.bytes > shard_cap; ++pass) {
    for (auto lit = s.lru.begin(); s.bytes > shard_cap && lit != s.lru.end();) {
      Entry& e = *lit;
      // Held by a reader: not evictable. Held only by the disk write queue: evictable (it stays
      // findable in pending_writes_ until written, and is freed then).
      const long holders = e.block.use_count() - (e.block->write_pending() ? 1 : 0);
      if (holders > 1 || e.key == key || (pass == 0 && e.unused_prefetch)) {
        ++lit;
        continue;
      }
      ++lit;
      if (e.unused_prefetch) m_evict_unused.Add();
      freed->push_back(Drop(s, e));
    }
  }
}

bool BlockCache::WaitForWriteRoom(uint64_t n, const CancelToken* cancel) {
  static auto& m_stalls = metrics::Get("cache.disk.write_backpressure");
  static auto& m_skipped = metrics::Get("cache.disk.write_skipped");
  if (!disk_) return false;
  // Backpressure, before a fetch: a reader or prefetcher faster than the disk waits for the
  // writers (bounding the memory queued for the disk) rather than dropping blocks (a dropped
  // block is a refetch after remount). A disk that stays stuck is skipped: the fetch goes on and
  // its block is not written.
  // The queue may also grow into the part of the memory cap the memory tier is not using (a
  // streaming read keeps few blocks resident): the disk then lags a burst of up to a memory cap
  // without holding the read back. The memory the tier and the queue hold together stays within
  // 1.25 x the cap either way; a block in both (just fetched: being read and waiting for the disk)
  // is one buffer and counts once (counted twice, 16 parallel streams' queue was half as long).
  const auto room = [&] {
    const uint64_t cap = options_.memory_bytes + options_.memory_bytes / 4;
    const uint64_t both = resident_and_pending_bytes_.load();
    const uint64_t all = resident_bytes_.load();
    const uint64_t resident = all > both ? all - both : 0;  // the tier's blocks not also queued
    const uint64_t spare = cap > resident ? cap - resident : 0;
    const uint64_t limit = std::max(options_.max_pending_write_bytes, std::min(spare, options_.memory_bytes));
    return pending_write_bytes_ + n <= limit;
  };
  std::unique_lock lock(write_mu_);
  if (room()) return true;
  m_stalls.Add();
  if (!deferred_.empty()) {  // small blocks waiting for a quiet moment: write them now
    flush_now_ = true;
    flush_cv_.notify_one();
  }
  auto deadline = Clock::now() + options_.write_stall_limit;
  if (cancel != nullptr) deadline = std::min(deadline, cancel->deadline());
  // Time fetches spent held back, summed over threads: the disk tier's share of a slow read.
  static auto& m_wait_us = metrics::Get("cache.disk.write_backpressure_us");
  const auto waited_from = Clock::now();
  // The disk is behind: surge writers join (until no fetch has waited for a while).
  ++write_room_waiters_;
  writers_->SetSurge(true);
  const bool ok = write_cv_.wait_until(lock, deadline, room);
  --write_room_waiters_;
  last_room_wait_ = Clock::now();
  m_wait_us.Add(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - waited_from).count()));
  if (ok) return true;
  m_skipped.Add();
  return false;
}

void BlockCache::EndSurgeIfCaughtUp() {
  // A reader that outruns the disk makes fetches wait again and again: the surge lasts until none
  // has waited for a while, not merely until the first one got room.
  constexpr auto kSurgeLinger = std::chrono::seconds(1);
  if (write_room_waiters_ == 0 && Clock::now() - last_room_wait_ >= kSurgeLinger) writers_->SetSurge(false);
}

void BlockCache::ScheduleWrite(const BlockKey& key, BlockRef block) {
  if (!disk_) return;
  const uint64_t n = block->size;
  {
    std::unique_lock lock(write_mu_);
    if (!pending_writes_.try_emplace(key, block).second) return;  // already on its way
    pending_write_bytes_ += n;
    SetHeld(*block, Block::kWritePending, true);
  }
  // The job finds its block in pending_writes_ (one reference for the queue, not two).
  block.reset();
  if (n < kDirectMinBytes) {
    // Write-behind: a small block waits until the cache is quiet (see FlusherMain).
    {
      std::lock_guard lock(write_mu_);
      deferred_.push_back({key, n});
      deferred_bytes_ += n;
    }
    flush_cv_.notify_one();
    return;
  }
  WriteQueued(key, n);
}

void BlockCache::FlusherMain() {
  const auto quiet = std::chrono::milliseconds(options_.small_write_quiet_ms);
  std::unique_lock lock(write_mu_);
  for (;;) {
    flush_cv_.wait(lock, [&] { return flusher_stop_ || !deferred_.empty(); });
    if (flusher_stop_) return;  // Flush() writes what is left
    const auto idle = SinceActivity();
    if (idle < quiet && deferred_bytes_ < options_.max_deferred_write_bytes && !flush_now_) {
      flush_cv_.wait_for(lock, quiet - idle);
      continue;
    }
    flush_now_ = false;
    lock.unlock();
    SubmitDeferred();
    lock.lock();
  }
}

void BlockCache::SubmitDeferred() {
  std::deque<std::pair<BlockKey, uint64_t>> batch;
  {
    std::lock_guard lock(write_mu_);
    batch.swap(deferred_);
    deferred_bytes_ = 0;
  }
  for (const auto& [key, n] : batch) WriteQueued(key, n);
}

void BlockCache::WriteQueued(const BlockKey& key, uint64_t n) {
  static auto& m_errors = metrics::Get("cache.disk.write_errors");
  writers_->Run([this, key, n] {
    static auto& m_surge = metrics::Get("cache.disk.surge_writes");
    BlockRef queued;
    {
      std::lock_guard lock(write_mu_);
      auto it = pending_writes_.find(key);
      if (it == pending_writes_.end()) return;  // purged before its turn
      queued = it->second;
    }
    if (WorkerPool::InSurgeThread()) m_surge.Add();
    // A large block is one direct write the thread waits on: at nice -5 (where permitted) the
    // writer runs as soon as it completes, keeping the disk busy so backpressure rarely holds a
    // fetch back (cold reads +7-10% on 2 cores). Small blocks are page-cache copies: at normal
    // priority they do not preempt fetches (a raised small-file writer cost that row 18%).
    SetThreadNice(queued->size >= kDirectMinBytes ? kWriterNice : 0);
    if (options_.before_disk_write) options_.before_disk_write();
    static auto& h_write = metrics::GetHistogram("cache.disk.write_latency_us");
    Status st = [&] {
      metrics::LatencyTimer timer(h_write);
      return disk_->Write(key, queued->data.get(), queued->size);
    }();
    bool purged = false;
    {
      std::lock_guard lock(write_mu_);
      auto it = pending_writes_.find(key);
      purged = it == pending_writes_.end() || it->second != queued;
      if (!purged) {
        pending_write_bytes_ -= n;
        pending_writes_.erase(it);
        SetHeld(*queued, Block::kWritePending, false);
      }
      EndSurgeIfCaughtUp();
    }
    write_cv_.notify_all();
    if (purged && st.ok()) disk_->Remove(key);  // purged while being written: the file must go too
    if (!st.ok()) {
      m_errors.Add();
      if (!logged_disk_error_.exchange(true))
        LOG_WARN("disk cache write failed: %s (serving from memory and the origin; logged once)",
                 st.error().ToString().c_str());
    }
  });
}

void BlockCache::Purge(const BlockKey& key) {
  Shard& s = ShardFor(key);
  BlockRef freed;
  {
    std::lock_guard lock(s.mu);
    if (auto it = s.resident.find(key); it != s.resident.end()) freed = Drop(s, *it->second);
  }
  {
    // Not yet written: the write is cancelled (or, if under way, its file removed when it ends).
    std::lock_guard lock(write_mu_);
    if (auto it = pending_writes_.find(key); it != pending_writes_.end()) {
      pending_write_bytes_ -= it->second->size;
      SetHeld(*it->second, Block::kWritePending, false);
      pending_writes_.erase(it);
    }
    EndSurgeIfCaughtUp();
  }
  write_cv_.notify_all();
  if (disk_) disk_->Remove(key);
}

CacheStats BlockCache::Stats() const {
  return CacheStats{MemHits().Get(), DiskHits().Get(), Misses().Get(), OriginBytes().Get(), MemBytes().Get(),
                    MemBlocks().Get(), disk_ ? disk_->used_bytes() : 0, disk_ ? disk_->block_count() : 0};
}

}  // namespace hubfs::cache
