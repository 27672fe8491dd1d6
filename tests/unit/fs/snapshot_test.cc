// Snapshot construction from a tree listing: the directory tree a user lists under the mount.
#include "fs/snapshot.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace hubfs::fs {
namespace {

using fetch::TreeEntry;

std::string Oid(int i) {
  char buf[41];
  std::snprintf(buf, sizeof buf, "%040x", i);
  return buf;
}
const std::string kSha = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1";

TreeEntry File(std::string path, uint64_t size, int oid = 1) {
  TreeEntry e;
  e.path = std::move(path);
  e.size = size;
  e.oid = Oid(oid);
  return e;
}
TreeEntry Lfs(std::string path, uint64_t size) {
  TreeEntry e = File(std::move(path), size, 99);
  e.lfs_sha256 = kSha;
  return e;
}
TreeEntry Dir(std::string path) {
  TreeEntry e;
  e.path = std::move(path);
  e.is_dir = true;
  e.oid = Oid(7);
  return e;
}

std::shared_ptr<const Snapshot> Build(const std::vector<TreeEntry>& entries) {
  return Snapshot::Build(fetch::RepoType::kModel, "org/repo", Oid(123), 1569268124, entries);
}

std::vector<std::string> ChildNames(const Snapshot& s, uint32_t dir) {
  std::vector<std::string> out;
  for (uint32_t c : s.node(dir).children) out.push_back(s.node(c).name);
  return out;
}

TEST(Snapshot, MetadataAndRoot) {
  auto s = Snapshot::Build(fetch::RepoType::kDataset, "org/data", Oid(5), 42, {});
  EXPECT_EQ(s->type(), fetch::RepoType::kDataset);
  EXPECT_EQ(s->repo_id(), "org/data");
  EXPECT_EQ(s->commit(), Oid(5));
  EXPECT_EQ(s->mtime(), 42);
  ASSERT_EQ(s->node_count(), 1u);
  EXPECT_TRUE(s->node(0).is_dir);
  EXPECT_TRUE(s->node(0).children.empty());
  EXPECT_EQ(s->Find(""), 0u);
}

TEST(Snapshot, ImpliedDirectoriesAndSortedChildren) {
  auto s = Build({File("z.txt", 1), File("b/c/deep.bin", 10), File("a.json", 2), Lfs("b/model.safetensors", 1ULL << 33),
                  File("b/a.txt", 3), Dir("empty")});
  // Root: a.json, b, empty, z.txt (sorted by name).
  EXPECT_EQ(ChildNames(*s, 0), (std::vector<std::string>{"a.json", "b", "empty", "z.txt"}));
  auto b = s->Find("b");
  ASSERT_TRUE(b.has_value());
  EXPECT_TRUE(s->node(*b).is_dir);
  EXPECT_EQ(s->node(*b).path, "b");
  EXPECT_EQ(ChildNames(*s, *b), (std::vector<std::string>{"a.txt", "c", "model.safetensors"}));
  auto c = s->Find("b/c");
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(s->node(*c).is_dir);  // implied: never listed itself
  EXPECT_EQ(ChildNames(*s, *c), (std::vector<std::string>{"deep.bin"}));
  auto e = s->Find("empty");
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(s->node(*e).is_dir);
  EXPECT_TRUE(s->node(*e).children.empty());
}

TEST(Snapshot, ChildAndFindAgree) {
  auto s = Build({File("a/b/c.txt", 5, 3), Lfs("a/w.bin", 1000)});
  auto a = s->Child(0, "a");
  ASSERT_TRUE(a.has_value());
  auto b = s->Child(*a, "b");
  ASSERT_TRUE(b.has_value());
  auto c = s->Child(*b, "c.txt");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(s->Find("a/b/c.txt"), c);
  EXPECT_EQ(s->Find("a/b"), b);
  const SnapshotNode& n = s->node(*c);
  EXPECT_FALSE(n.is_dir);
  EXPECT_EQ(n.name, "c.txt");
  EXPECT_EQ(n.path, "a/b/c.txt");
  EXPECT_EQ(n.size, 5u);
  EXPECT_FALSE(n.lfs);
  EXPECT_EQ(n.oid, Oid(3));
  ASSERT_TRUE(n.content.has_value());
  EXPECT_EQ(n.content->kind, cache::IdKind::kGitSha1);
  EXPECT_EQ(n.content->Hex(), Oid(3));

  auto w = s->Find("a/w.bin");
  ASSERT_TRUE(w.has_value());
  const SnapshotNode& l = s->node(*w);
  EXPECT_TRUE(l.lfs);
  EXPECT_EQ(l.size, 1000u);
  ASSERT_TRUE(l.content.has_value());
  EXPECT_EQ(l.content->kind, cache::IdKind::kSha256);  // LFS files are keyed by their sha256
  EXPECT_EQ(l.content->Hex(), kSha);

  // Misses.
  EXPECT_FALSE(s->Child(0, "missing").has_value());
  EXPECT_FALSE(s->Child(*a, "c.txt").has_value());  // not a direct child
  EXPECT_FALSE(s->Child(*c, "x").has_value());      // a file has no children
  EXPECT_FALSE(s->Child(100000, "a").has_value());  // out of range
  EXPECT_FALSE(s->Find("a/b/c.txt/x").has_value());
  EXPECT_FALSE(s->Find("/a").has_value());
  EXPECT_FALSE(s->Find("a/").has_value());
  EXPECT_FALSE(s->Find("A").has_value());  // case-sensitive
}

TEST(Snapshot, HostilePathsSkipped) {
  auto s = Build({File("../escape", 1), File("a/../../etc/passwd", 1), File("/etc/shadow", 1), File("a//b", 1),
                  File("a/", 1), File("./x", 1), File(std::string("nul\0x", 5), 1), File("", 1),
                  Dir("../d"), Dir("/abs"), File("ok", 1)});
  EXPECT_EQ(ChildNames(*s, 0), (std::vector<std::string>{"ok"}));
  EXPECT_EQ(s->node_count(), 2u);  // root + ok: no directory was created for a rejected path
  EXPECT_FALSE(s->Find("..").has_value());
  EXPECT_FALSE(s->Find("etc").has_value());
  EXPECT_FALSE(s->Find("a").has_value());
}

TEST(Snapshot, EntryWithoutContentIdentitySkipped) {
  TreeEntry no_oid = File("no-oid", 1);
  no_oid.oid = "";
  TreeEntry short_oid = File("short-oid", 1);
  short_oid.oid = "abc";
  TreeEntry bad_lfs = File("bad-lfs", 1);
  bad_lfs.lfs_sha256 = "zz";
  TreeEntry nested = File("sub/no-oid", 1);
  nested.oid = "not hex at all, but forty characters lon";
  ASSERT_EQ(nested.oid.size(), 40u);
  auto s = Build({no_oid, short_oid, bad_lfs, nested, File("good", 1)});
  EXPECT_FALSE(s->Find("no-oid").has_value());
  EXPECT_FALSE(s->Find("short-oid").has_value());
  EXPECT_FALSE(s->Find("bad-lfs").has_value());
  EXPECT_FALSE(s->Find("sub/no-oid").has_value());
  EXPECT_TRUE(s->Find("good").has_value());
}

TEST(Snapshot, FileDirectoryConflictsSkipped) {
  // A file, then a directory (or a file below it) at the same path: the first one wins.
  auto s = Build({File("x", 1), Dir("x"), File("x/y", 1), File("d/f", 2), File("d", 3)});
  auto x = s->Find("x");
  ASSERT_TRUE(x.has_value());
  EXPECT_FALSE(s->node(*x).is_dir);
  EXPECT_EQ(s->node(*x).size, 1u);
  EXPECT_FALSE(s->Find("x/y").has_value());
  auto d = s->Find("d");
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(s->node(*d).is_dir);
  EXPECT_TRUE(s->Find("d/f").has_value());
  EXPECT_EQ(ChildNames(*s, 0), (std::vector<std::string>{"d", "x"}));
}

TEST(Snapshot, DuplicatesSkipped) {
  auto s = Build({File("dup", 1, 1), File("dup", 2, 2), Dir("dir"), Dir("dir"), File("dir/f", 1)});
  EXPECT_EQ(ChildNames(*s, 0), (std::vector<std::string>{"dir", "dup"}));
  auto dup = s->Find("dup");
  ASSERT_TRUE(dup.has_value());
  EXPECT_EQ(s->node(*dup).size, 1u);  // the first listing wins
  EXPECT_EQ(s->node(*dup).oid, Oid(1));
  EXPECT_EQ(ChildNames(*s, *s->Find("dir")), (std::vector<std::string>{"f"}));
}

TEST(Snapshot, LargeDirectoryIsComplete) {
  std::vector<TreeEntry> entries;
  const int n = 1500;
  for (int i = n - 1; i >= 0; --i) {  // reverse order: the snapshot must sort
    char name[32];
    std::snprintf(name, sizeof name, "big/shard-%05d.parquet", i);
    entries.push_back(File(name, static_cast<uint64_t>(i), i + 1));
  }
  auto s = Build(entries);
  auto big = s->Find("big");
  ASSERT_TRUE(big.has_value());
  const auto names = ChildNames(*s, *big);
  ASSERT_EQ(names.size(), static_cast<size_t>(n));
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "shard-%05d.parquet", i);
    auto c = s->Child(*big, name);
    ASSERT_TRUE(c.has_value()) << name;
    EXPECT_EQ(s->node(*c).size, static_cast<uint64_t>(i));
    EXPECT_EQ(s->Find(std::string("big/") + name), c);
  }
}

}  // namespace
}  // namespace hubfs::fs
