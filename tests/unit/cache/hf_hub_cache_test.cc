// Copies in huggingface_hub's cache: found by etag or in the snapshot, used only once their bytes
// hash to their content id, hashed once (across instances with a MetaStore, and by one thread
// however many ask), hashed again when the file changes, and never waited on past a deadline.
#include "cache/hf_hub_cache.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "tests/unit/test_util.h"

namespace hubfs::cache {
namespace {

using hubfs::testing::TempDir;
using hubfs::testing::WriteFileBytes;
namespace fsys = std::filesystem;

std::string Hex(const unsigned char* md, unsigned n) {
  std::string hex;
  for (unsigned i = 0; i < n; ++i) {
    char h[3];
    std::snprintf(h, sizeof h, "%02x", md[i]);
    hex += h;
  }
  return hex;
}

ContentId Sha256Of(const std::string& data) {
  unsigned char md[32];
  unsigned n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  return *ContentId::FromHex(IdKind::kSha256, Hex(md, n));
}

ContentId GitIdOf(const std::string& data) {
  const std::string obj = "blob " + std::to_string(data.size()) + std::string(1, '\0') + data;
  unsigned char md[20];
  unsigned n = 0;
  EVP_Digest(obj.data(), obj.size(), md, &n, EVP_sha1(), nullptr);
  return *ContentId::FromHex(IdKind::kGitSha1, Hex(md, n));
}

std::string Random(size_t n) {
  std::mt19937_64 rng(hubfs::testing::TestSeed());
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

uint64_t Hashed() { return metrics::Get("hf_cache.bytes_hashed").Get(); }

struct Layout {
  TempDir dir;
  std::string root() const { return dir.path() + "/hub"; }
  std::string repo() const { return root() + "/models--org--name"; }
  // A blob named by `id`, and the snapshot's relative link to it.
  std::string Blob(const ContentId& id, const std::string& bytes, const std::string& path = "") {
    const std::string blob = repo() + "/blobs/" + id.Hex();
    fsys::create_directories(repo() + "/blobs");
    WriteFileBytes(blob, bytes);
    if (!path.empty()) {
      fsys::create_directories(repo() + "/snapshots/c0ffee");
      fsys::create_symlink("../../blobs/" + id.Hex(), repo() + "/snapshots/c0ffee/" + path);
    }
    return blob;
  }
};

TEST(HfHubCache, RepoFolderIsHuggingfaceHubs) {
  EXPECT_EQ(HfHubCache::RepoFolder("models", "org/name"), "models--org--name");
  EXPECT_EQ(HfHubCache::RepoFolder("datasets", "a-b/c.d"), "datasets--a-b--c.d");
  EXPECT_EQ(HfHubCache::RepoFolder("models", "gpt2"), "models--gpt2");
}

TEST(HfHubCache, ASoundBlobIsFoundAndAnythingElseIsNot) {
  Layout l;
  const std::string data = Random(3 << 20), small = "{\"a\": 1}\n";
  const ContentId id = Sha256Of(data), git = GitIdOf(small);
  const std::string blob = l.Blob(id, data), small_blob = l.Blob(git, small);
  HfHubCache hf(l.root(), nullptr);
  const std::string folder = "models--org--name";
  EXPECT_EQ(hf.Find(folder, "c0ffee", "model.bin", id, data.size(), nullptr), blob);
  FileIdentity verified;
  EXPECT_EQ(hf.Find(folder, "c0ffee", "model.bin", id, data.size(), nullptr, true, nullptr, &verified), blob);
  EXPECT_TRUE(verified.exists && verified == StatIdentity(blob)) << "the identity of the file that was hashed";
  EXPECT_EQ(hf.Find(folder, "c0ffee", "config.json", git, small.size(), nullptr), small_blob);  // git blob id
  EXPECT_EQ(hf.Find(folder, "", "", id, data.size() + 1, nullptr), "");   // another size
  EXPECT_EQ(hf.Find("models--org--other", "", "", id, data.size(), nullptr), "");  // another repo
  EXPECT_EQ(hf.Find(folder, "", "", Sha256Of("x"), 1, nullptr), "");  // not downloaded
  HfHubCache none("", nullptr);
  EXPECT_EQ(none.Find(folder, "", "", id, data.size(), nullptr), "");

  // Flipped byte, same size: only the hash can tell.
  std::string bad = data;
  bad[bad.size() / 3] ^= 1;
  Layout l2;
  l2.Blob(id, bad);
  auto& mismatched = metrics::Get("hf_cache.copies_mismatched");
  const uint64_t before = mismatched.Get();
  HfHubCache hf2(l2.root(), nullptr);
  EXPECT_EQ(hf2.Find(folder, "", "", id, data.size(), nullptr), "");
  EXPECT_EQ(mismatched.Get(), before + 1);
  EXPECT_EQ(hf2.Find(folder, "", "", id, data.size(), nullptr), "");  // known bad: not hashed again
  EXPECT_EQ(mismatched.Get(), before + 1);
}

TEST(HfHubCache, AFileInTheSnapshotItselfIsFoundAndALinkToTheBlobIsHashedOnce) {
  Layout l;
  const std::string data = Random(1 << 20);
  const ContentId id = Sha256Of(data);
  // Downloaded without symlinks: no blob, the file in the snapshot.
  fsys::create_directories(l.repo() + "/snapshots/c0ffee/sub");
  WriteFileBytes(l.repo() + "/snapshots/c0ffee/sub/w.bin", data);
  HfHubCache hf(l.root(), nullptr);
  EXPECT_EQ(hf.Find("models--org--name", "c0ffee", "sub/w.bin", id, data.size(), nullptr),
            l.repo() + "/snapshots/c0ffee/sub/w.bin");
  EXPECT_EQ(hf.Find("models--org--name", "other", "sub/w.bin", id, data.size(), nullptr), "");

  // A damaged blob and the snapshot's link to it are one file: hashed (and refused) once.
  Layout l2;
  std::string bad = data;
  bad[0] ^= 1;
  l2.Blob(id, bad, "w.bin");
  const uint64_t before = Hashed();
  HfHubCache hf2(l2.root(), nullptr);
  EXPECT_EQ(hf2.Find("models--org--name", "c0ffee", "w.bin", id, data.size(), nullptr), "");
  EXPECT_EQ(Hashed() - before, data.size());
}

TEST(HfHubCache, TheVerdictOutlivesTheMountAndAChangeIsHashedAgain) {
  Layout l;
  TempDir cache;
  const std::string data = Random(2 << 20);
  const ContentId id = Sha256Of(data);
  const std::string blob = l.Blob(id, data);
  std::shared_ptr<MetaStore> meta = MetaStore::Open(cache.path()).value();
  uint64_t before = Hashed();
  {
    HfHubCache hf(l.root(), meta);
    EXPECT_EQ(hf.Find("models--org--name", "", "", id, data.size(), nullptr), blob);
    EXPECT_EQ(hf.Find("models--org--name", "", "", id, data.size(), nullptr), blob);
  }
  EXPECT_EQ(Hashed() - before, data.size());
  before = Hashed();
  {
    HfHubCache hf(l.root(), MetaStore::Open(cache.path()).value());  // a remount
    EXPECT_EQ(hf.Find("models--org--name", "", "", id, data.size(), nullptr), blob);
  }
  EXPECT_EQ(Hashed(), before);
  // Rewritten in place, other bytes: a new file as far as the verdict goes.
  std::string bad = data;
  bad[100] ^= 1;
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // a later mtime on coarse clocks
  WriteFileBytes(blob, bad);
  HfHubCache hf(l.root(), MetaStore::Open(cache.path()).value());
  EXPECT_EQ(hf.Find("models--org--name", "", "", id, data.size(), nullptr), "");
  EXPECT_EQ(Hashed() - before, data.size());
}

// Verdicts live in a store of their own: hashing more copies than it holds prunes only verdicts,
// never the repo records a mount without the Hub needs; and a remount finds them there.
TEST(HfHubCache, VerdictsAreKeptApartFromTheRepoRecords) {
  Layout l;
  TempDir cache;
  std::shared_ptr<MetaStore> repos = MetaStore::Open(cache.path(), MetaLimits{2, 1 << 20}).value();
  ASSERT_TRUE(repos->Put("rev/models/org/name/main", "a revision record").ok());
  ASSERT_TRUE(repos->Put("tree/models/org/name/c0ffee", "a tree record").ok());
  std::vector<std::pair<ContentId, std::string>> copies;
  for (int i = 0; i < 3; ++i) {
    const std::string data = Random(64 << 10);
    copies.emplace_back(Sha256Of(data), data);
    l.Blob(copies.back().first, data);
  }
  const uint64_t before = Hashed();
  {
    // (The verdicts' store with room for 2, as the repo store has here: 3 copies prune one.)
    HfHubCache hf(l.root(), MetaStore::Open(cache.path(), MetaLimits{2, 1 << 20}, MetaStore::kVerdictStore).value());
    for (const auto& [id, data] : copies) EXPECT_NE(hf.Find("models--org--name", "", "", id, data.size(), nullptr), "");
  }
  EXPECT_EQ(Hashed() - before, 3u * (64 << 10));
  EXPECT_EQ(MetaStore::Open(cache.path()).value()->records(), 2u);
  EXPECT_EQ(repos->Get("rev/models/org/name/main").value_or(""), "a revision record");
  EXPECT_EQ(repos->Get("tree/models/org/name/c0ffee").value_or(""), "a tree record");
  EXPECT_EQ(MetaStore::Open(cache.path(), {}, MetaStore::kVerdictStore).value()->records(), 2u);
  // The store a mount opens: a remount hashes nothing it kept.
  {
    HfHubCache hf(l.root(), HfHubCache::OpenVerdicts(cache.path()).value());
    EXPECT_NE(hf.Find("models--org--name", "", "", copies[0].first, copies[0].second.size(), nullptr), "");
  }
  const uint64_t after = Hashed();
  {
    HfHubCache hf(l.root(), HfHubCache::OpenVerdicts(cache.path()).value());
    EXPECT_NE(hf.Find("models--org--name", "", "", copies[0].first, copies[0].second.size(), nullptr), "");
  }
  EXPECT_EQ(Hashed(), after);
  EXPECT_EQ(MetaStore::Open(cache.path()).value()->records(), 2u) << "verdicts never land among the repo records";
}

TEST(HfHubCache, NoWaitPastADeadlineAndOneHashForManyCallers) {
  Layout l;
  const std::string data = Random(48 << 20);
  const ContentId id = Sha256Of(data);
  const std::string blob = l.Blob(id, data);
  HfHubCache hf(l.root(), nullptr);
  // A prefetch does not wait: it learns the copy is being hashed.
  bool pending = false;
  EXPECT_EQ(hf.Find("models--org--name", "", "", id, data.size(), nullptr, /*wait=*/false, &pending), "");
  EXPECT_TRUE(pending);
  // A reader whose deadline has passed does not wait either.
  const CancelToken expired(CancelToken::Clock::now());
  EXPECT_EQ(hf.Find("models--org--name", "", "", id, data.size(), &expired, true, &pending), "");
  // Eight readers at once: all get the copy; it was hashed once.
  const uint64_t before = Hashed();
  std::vector<std::thread> readers;
  std::atomic<int> found{0};
  for (int i = 0; i < 8; ++i)
    readers.emplace_back([&] {
      if (hf.Find("models--org--name", "", "", id, data.size(), nullptr) == blob) found.fetch_add(1);
    });
  for (auto& t : readers) t.join();
  EXPECT_EQ(found.load(), 8);
  EXPECT_LE(Hashed() - before, data.size());  // the first hash was already under way
  EXPECT_EQ(hf.Find("models--org--name", "", "", id, data.size(), nullptr, false, &pending), blob);
  EXPECT_FALSE(pending);
}

TEST(HfHubCache, RefsSnapshotsAndReposAsHuggingfaceHubLaysThemOut) {
  Layout l;
  const std::string commit(40, 'c'), other(40, 'd');
  const std::string big = Random(1 << 16), small = "x = 1\n";
  const ContentId big_id = Sha256Of(big), small_id = GitIdOf(small);
  l.Blob(big_id, big);
  l.Blob(small_id, small);
  const std::string snap = l.repo() + "/snapshots/" + commit;
  fsys::create_directories(snap + "/sub/deeper");
  fsys::create_symlink("../../blobs/" + big_id.Hex(), snap + "/model.bin");
  fsys::create_symlink("../../../../blobs/" + small_id.Hex(), snap + "/sub/deeper/conf.py");
  WriteFileBytes(snap + "/copied.txt", "stored without a link");  // no id: left out
  fsys::create_symlink("../../blobs/" + std::string(64, 'e'), snap + "/dangling.bin");  // blob gone
  fsys::create_directories(l.repo() + "/refs/refs/pr");
  WriteFileBytes(l.repo() + "/refs/main", commit);  // no newline, as huggingface_hub writes it
  WriteFileBytes(l.repo() + "/refs/v1.0", other + "\n");
  WriteFileBytes(l.repo() + "/refs/refs/pr/1", "not a commit");
  WriteFileBytes(l.dir.path() + "/secret", commit);
  HfHubCache hf(l.root(), nullptr);
  const std::string folder = "models--org--name";
  EXPECT_EQ(hf.Commit(folder, ""), commit);
  EXPECT_EQ(hf.Commit(folder, "main"), commit);
  EXPECT_EQ(hf.Commit(folder, "v1.0"), other);
  EXPECT_EQ(hf.Commit(folder, commit), commit);  // a commit with a snapshot folder
  EXPECT_EQ(hf.Commit(folder, other), "");       // ...and one without
  EXPECT_EQ(hf.Commit(folder, "refs/pr/1"), "");
  EXPECT_EQ(hf.Commit(folder, "../../../secret"), "");  // never outside refs/
  EXPECT_EQ(hf.Commit(folder, "nope"), "");
  EXPECT_EQ(hf.Commit("models--org--other", ""), "");

  auto files = hf.Files(folder, commit);
  ASSERT_TRUE(files.has_value());
  std::sort(files->begin(), files->end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].path, "model.bin");
  EXPECT_EQ((*files)[0].size, big.size());
  EXPECT_TRUE((*files)[0].id == big_id);
  EXPECT_EQ((*files)[1].path, "sub/deeper/conf.py");
  EXPECT_EQ((*files)[1].size, small.size());
  EXPECT_TRUE((*files)[1].id == small_id);
  EXPECT_FALSE(hf.Files(folder, other).has_value());
  EXPECT_FALSE(hf.Files(folder, "../" + commit).has_value());

  fsys::create_directories(l.root() + "/models--org--second/snapshots");
  fsys::create_directories(l.root() + "/models--org--no-snapshots");
  fsys::create_directories(l.root() + "/datasets--org--data/snapshots");
  fsys::create_directories(l.root() + "/models--orgx--y/snapshots");
  EXPECT_EQ(hf.Repos("models", "org"), (std::vector<std::string>{"name", "second"}));
  EXPECT_EQ(hf.Repos("datasets", "org"), (std::vector<std::string>{"data"}));
  EXPECT_TRUE(hf.Repos("models", "nobody").empty());
}

}  // namespace
}  // namespace hubfs::cache
