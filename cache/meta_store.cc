// Metadata records beside the block cache (see meta_store.h).
#include "cache/meta_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cache/disk_store.h"
#include "common/file_util.h"
#include "common/log.h"

namespace hubfs::cache {
namespace {

constexpr std::string_view kMagic = "HUBFSMETA1\n";
constexpr const char* kTempPrefix = "tmp-";  // record names are 32 hex digits
constexpr uint64_t kMaxValue = 64ULL << 20;  // one record; a tree of ~200k files is ~40 MB

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

uint64_t RecordHash(std::string_view key, std::string_view value) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, key.data(), key.size());
  XXH3_64bits_update(st, "\n", 1);
  XXH3_64bits_update(st, value.data(), value.size());
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

// The file, or nullopt if it cannot be read, is larger than `limit`, or is not a plain file.
std::optional<std::string> ReadFile(const std::string& path, uint64_t limit) {
  std::string out;
  if (ReadFileUpTo(path, limit, &out, /*follow_links=*/false) != 0) return std::nullopt;
  return out;
}

struct RecordFile {
  std::string path;
  uint64_t bytes = 0;
  int64_t mtime_ns = 0;
};

std::vector<RecordFile> ListRecords(const std::string& root) {
  std::vector<RecordFile> out;
  DIR* d = ::opendir(root.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.' || std::strncmp(e->d_name, kTempPrefix, std::strlen(kTempPrefix)) == 0) continue;
    RecordFile r{root + "/" + e->d_name};
    struct stat st {};
    if (::lstat(r.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    r.bytes = static_cast<uint64_t>(st.st_size);
    r.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    out.push_back(std::move(r));
  }
  ::closedir(d);
  return out;
}

// Why `raw` is not a sound record ("" when it is), with its key and value.
// Format: HUBFSMETA1\n <key>\n <value length>\n <xxh3 hex>\n <value>
std::string ParseRecord(std::string_view r, std::string_view* key, std::string_view* value) {
  if (r.substr(0, kMagic.size()) != kMagic) return "not a hubfs metadata record";
  r.remove_prefix(kMagic.size());
  const size_t k = r.find('\n');
  if (k == std::string_view::npos) return "truncated";
  *key = r.substr(0, k);
  r.remove_prefix(k + 1);
  const size_t l = r.find('\n');
  if (l == std::string_view::npos || l == 0 || l > 20) return "truncated";
  uint64_t len = 0;
  for (char c : r.substr(0, l)) {
    if (c < '0' || c > '9') return "bad length";
    len = len * 10 + static_cast<uint64_t>(c - '0');
  }
  r.remove_prefix(l + 1);
  if (r.size() < 17 || r[16] != '\n') return "truncated";
  const std::string_view hash = r.substr(0, 16);
  r.remove_prefix(17);
  if (r.size() != len) return "wrong length";
  if (hash != Hex64(RecordHash(*key, r))) return "checksum mismatch";
  *value = r;
  return "";
}

std::string HashName(std::string_view key) {
  const XXH128_hash_t h = XXH3_128bits(key.data(), key.size());
  return Hex64(h.high64) + Hex64(h.low64);
}

}  // namespace

Result<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& dir, MetaLimits limits, std::string_view name) {
  const std::string root = dir + "/" + kDiskFormatDir + "/" + std::string(name);
  if (auto st = MakeDirs(root); !st.ok()) return st.error();
  // Temp files are from a daemon that died mid-write: they never became records.
  if (DIR* d = ::opendir(root.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::strncmp(e->d_name, kTempPrefix, std::strlen(kTempPrefix)) == 0)
        ::unlink((root + "/" + e->d_name).c_str());
    ::closedir(d);
  }
  std::unique_ptr<MetaStore> store(new MetaStore(root, limits));
  std::lock_guard lock(store->mu_);
  store->Rescan();
  store->PruneIfNeeded();  // the limits may have been lowered since
  return store;
}

std::string MetaStore::PathFor(const std::string& key) const { return root_ + "/" + HashName(key); }


std::optional<std::string> MetaStore::Get(const std::string& key) const {
  const std::string path = PathFor(key);
  auto raw = ReadFile(path, kMaxValue + key.size() + 128);
  if (!raw) return std::nullopt;
  std::string_view k, v;
  std::string why = ParseRecord(*raw, &k, &v);
  // Another key (damage, or a 128-bit hash collision): a miss; the record is of no use either way.
  if (why.empty() && k != key) why = "written for another key";
  if (!why.empty()) {
    LOG_WARN("metadata record %s: %s; removed", path.c_str(), why.c_str());
    ::unlink(path.c_str());
    return std::nullopt;
  }
  return std::string(v);
}

MetaVerifyReport MetaStore::VerifyAll(const std::string& dir, bool remove_bad, std::string_view name) {
  MetaVerifyReport report;
  for (const auto& f : ListRecords(dir + "/" + kDiskFormatDir + "/" + std::string(name))) {
    ++report.records;
    auto raw = ReadFile(f.path, kMaxValue + 4096);
    std::string_view k, v;
    const bool ok = raw && ParseRecord(*raw, &k, &v).empty() &&
                    f.path.substr(f.path.rfind('/') + 1) == HashName(k);
    if (!ok) {
      ++report.bad;
      if (remove_bad) ::unlink(f.path.c_str());
    }
  }
  return report;
}

bool MetaStore::Touch(const std::string& key) {
  // The record's mtime is its age for pruning: a tree written once and used for months stays.
  return ::utimensat(AT_FDCWD, PathFor(key).c_str(), nullptr, 0) == 0;
}

Status MetaStore::Put(const std::string& key, std::string_view value) {
  if (value.size() > kMaxValue) return MakeError(ErrorKind::kNoSpace, "metadata record too large");
  if (key.find('\n') != std::string::npos) return MakeError(ErrorKind::kInvalidArgument, "key has a newline");
  std::string rec;
  rec.reserve(kMagic.size() + key.size() + value.size() + 48);
  rec.append(kMagic).append(key).append("\n").append(std::to_string(value.size())).append("\n");
  rec.append(Hex64(RecordHash(key, value))).append("\n").append(value);

  const std::string path = PathFor(key);
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string tmp = root_ + "/" + kTempPrefix + std::to_string(rng());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return MakeError(errno == ENOSPC ? ErrorKind::kNoSpace : ErrorKind::kIo,
                               "create " + tmp + ": " + std::strerror(errno));
  // No fsync: a crash may leave the record empty or cut short, which Get() takes for a miss; the
  // lookup that writes it does not wait for the disk.
  int err = WriteAll(fd, rec.data(), rec.size());
  ::close(fd);
  std::lock_guard lock(mu_);
  struct stat old {};
  const bool replaced = ::stat(path.c_str(), &old) == 0;
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    return MakeError(err == ENOSPC ? ErrorKind::kNoSpace : ErrorKind::kIo,
                     "write " + path + ": " + std::strerror(err));
  }
  if (replaced) {
    bytes_ -= std::min<uint64_t>(bytes_, static_cast<uint64_t>(old.st_size));
  } else {
    ++records_;
  }
  bytes_ += rec.size();
  PruneIfNeeded();
  return OkStatus();
}

void MetaStore::Rescan() {
  records_ = bytes_ = 0;
  for (const auto& r : ListRecords(root_)) {
    ++records_;
    bytes_ += r.bytes;
  }
}

void MetaStore::PruneIfNeeded() {
  if (records_ <= limits_.max_records && bytes_ <= limits_.max_bytes) return;
  auto files = ListRecords(root_);
  std::sort(files.begin(), files.end(), [](const RecordFile& a, const RecordFile& b) { return a.mtime_ns < b.mtime_ns; });
  // Down to 3/4 of each limit, so that a full store is not pruned again on every write.
  const uint64_t low_records = limits_.max_records - limits_.max_records / 4;
  const uint64_t low_bytes = limits_.max_bytes - limits_.max_bytes / 4;
  records_ = files.size();
  bytes_ = 0;
  for (const auto& f : files) bytes_ += f.bytes;
  for (const auto& f : files) {
    if (records_ <= low_records && bytes_ <= low_bytes) break;
    if (::unlink(f.path.c_str()) != 0) continue;
    --records_;
    bytes_ -= std::min(bytes_, f.bytes);
  }
}

uint64_t MetaStore::records() const {
  std::lock_guard lock(mu_);
  return records_;
}

uint64_t MetaStore::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

}  // namespace hubfs::cache
