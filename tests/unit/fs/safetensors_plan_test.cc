// SafetensorsPlan: key-order ranges from a header, and rejection of hostile headers.
#include "fs/safetensors_plan.h"

#include <gtest/gtest.h>

#include <string>

namespace hubfs::fs {
namespace {

std::string Le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

TEST(SafetensorsPlan, KeyOrderIsAlphabeticalNotFileOrder) {
  // File order: b (0-100), a (100-300), c (300-310); key order: a, b, c.
  const std::string h = R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[25],"data_offsets":[0,100]},)"
                        R"("a":{"dtype":"F32","shape":[50],"data_offsets":[100,300]},"c":{"dtype":"U8","shape":[10],"data_offsets":[300,310]}})";
  const uint64_t base = 8 + h.size();
  auto p = SafetensorsPlan::Parse(h, base + 310);
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  ASSERT_EQ(p->tensor_count(), 3u);
  EXPECT_EQ(p->key_order()[0].begin, base + 100);  // a
  EXPECT_EQ(p->key_order()[1].begin, base + 0);    // b
  // Reading inside "a" (key 0): the rest of a, then b (which lies before it in the file), then c.
  auto next = p->Following(base + 150, 1 << 20);
  ASSERT_EQ(next.size(), 3u);
  EXPECT_EQ(next[0].begin, base + 150);
  EXPECT_EQ(next[0].end, base + 300);
  EXPECT_EQ(next[1].begin, base + 0);
  EXPECT_EQ(next[1].end, base + 100);
  EXPECT_EQ(next[2].begin, base + 300);
  // The budget bounds the total.
  auto capped = p->Following(base + 150, 160);
  uint64_t total = 0;
  for (auto& r : capped) total += r.end - r.begin;
  EXPECT_EQ(total, 160u);
  // Outside every tensor (the header): nothing.
  EXPECT_TRUE(p->Following(3, 1000).empty());
}

TEST(SafetensorsPlan, HostileHeadersAreRejected) {
  const uint64_t size = 1000;
  EXPECT_FALSE(SafetensorsPlan::Parse("not json", size).ok());
  EXPECT_FALSE(SafetensorsPlan::Parse("[1,2]", size).ok());
  EXPECT_FALSE(SafetensorsPlan::Parse(R"({"a":{"data_offsets":[5,2]}})", size).ok());             // reversed
  EXPECT_FALSE(SafetensorsPlan::Parse(R"({"a":{"data_offsets":[0,999999]}})", size).ok());        // beyond file
  EXPECT_FALSE(SafetensorsPlan::Parse(R"({"a":{"data_offsets":[0,10]},"b":{"data_offsets":[5,20]}})", size).ok());
  EXPECT_FALSE(SafetensorsPlan::Parse(R"({"a":{"data_offsets":[-1,10]}})", size).ok());
  EXPECT_FALSE(SafetensorsPlan::Parse(R"({"a":{"data_offsets":"x"}})", size).ok());
  EXPECT_FALSE(SafetensorsPlan::Parse(R"({"a":7})", size).ok());
  EXPECT_FALSE(SafetensorsPlan::Parse(std::string(50, '{'), size).ok());
}

TEST(SafetensorsPlan, FirstIsTheStartOfKeyOrder) {
  // b (file order first) is read after a (key order first).
  const std::string header = R"({"b":{"dtype":"U8","shape":[10],"data_offsets":[0,10]},)"
                             R"("a":{"dtype":"U8","shape":[20],"data_offsets":[10,30]}})";
  auto p = SafetensorsPlan::Parse(header, 8 + header.size() + 30);
  ASSERT_TRUE(p.ok());
  const uint64_t base = 8 + header.size();
  auto first = p->First(25);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].begin, base + 10);  // a
  EXPECT_EQ(first[0].end, base + 30);
  EXPECT_EQ(first[1].begin, base + 0);  // then b, cut to the budget
  EXPECT_EQ(first[1].end, base + 5);
  SafetensorsPlan empty = SafetensorsPlan::Parse("{}", 100).value();
  EXPECT_TRUE(empty.First(100).empty());
}

TEST(NextShardFromIndex, FollowsSortedShardNames) {
  // weight_map values in tensor-key order are not in shard order; loaders sort the shard names.
  const std::string index = R"({"metadata":{"total_size":1},"weight_map":{
      "a.weight":"model-00003-of-00003.safetensors",
      "b.weight":"model-00001-of-00003.safetensors",
      "c.weight":"model-00002-of-00003.safetensors",
      "d.weight":"model-00001-of-00003.safetensors"}})";
  EXPECT_EQ(NextShardFromIndex(index, "model-00001-of-00003.safetensors"), "model-00002-of-00003.safetensors");
  EXPECT_EQ(NextShardFromIndex(index, "model-00002-of-00003.safetensors"), "model-00003-of-00003.safetensors");
  EXPECT_EQ(NextShardFromIndex(index, "model-00003-of-00003.safetensors"), std::nullopt);  // the last
  EXPECT_EQ(NextShardFromIndex(index, "other.safetensors"), std::nullopt);                  // not named
}

TEST(NextShardFromIndex, MalformedIndexesNameNothing) {
  const std::string s = "model-00001-of-00002.safetensors";
  EXPECT_EQ(NextShardFromIndex("", s), std::nullopt);
  EXPECT_EQ(NextShardFromIndex("not json", s), std::nullopt);
  EXPECT_EQ(NextShardFromIndex("[1]", s), std::nullopt);
  EXPECT_EQ(NextShardFromIndex(R"({"weight_map":[]})", s), std::nullopt);
  EXPECT_EQ(NextShardFromIndex(R"({"weight_map":{"a":1,"b":"model-00002-of-00002.safetensors"}})", s), std::nullopt);
  EXPECT_EQ(NextShardFromIndex(R"({"weight_map":{"a":"model-00001-of-00002.safetensors"}})", s), std::nullopt);
}

TEST(SafetensorsPlan, HeaderLengthIsBounded) {
  EXPECT_EQ(SafetensorsPlan::HeaderLength(Le64(100), 1000).value(), 100u);
  EXPECT_FALSE(SafetensorsPlan::HeaderLength(Le64(0), 1000).ok());
  EXPECT_FALSE(SafetensorsPlan::HeaderLength(Le64(993), 1000).ok());  // beyond the file
  EXPECT_FALSE(SafetensorsPlan::HeaderLength(Le64(~0ULL), ~0ULL).ok());
  EXPECT_FALSE(SafetensorsPlan::HeaderLength("abc", 1000).ok());
  EXPECT_FALSE(SafetensorsPlan::HeaderLength(Le64(8), 4).ok());
}

}  // namespace
}  // namespace hubfs::fs
