// The one table from Error kinds to errno: every row.
#include "fs/errno_map.h"

#include <gtest/gtest.h>

#include <iterator>

namespace hubfs::fs {
namespace {

TEST(ErrnoMap, EveryKind) {
  struct Row {
    ErrorKind kind;
    int err;
  };
  const Row rows[] = {
      {ErrorKind::kNotFound, ENOENT},       {ErrorKind::kAccessDenied, EACCES},
      {ErrorKind::kIo, EIO},                {ErrorKind::kTimeout, EIO},
      {ErrorKind::kCancelled, EINTR},       {ErrorKind::kInvalidArgument, EINVAL},
      {ErrorKind::kNoSpace, EIO},           {ErrorKind::kCorrupt, EIO},
      {ErrorKind::kReadOnly, EROFS},        {ErrorKind::kNotDirectory, ENOTDIR},
      {ErrorKind::kIsDirectory, EISDIR},
      {ErrorKind::kNoAttribute, ENODATA},
  };
  // The table above must cover every enumerator (kNoAttribute is the last one).
  static_assert(static_cast<int>(ErrorKind::kNoAttribute) == 11, "a new ErrorKind needs a row here");
  ASSERT_EQ(std::size(rows), static_cast<size_t>(ErrorKind::kNoAttribute) + 1);
  for (const auto& r : rows)
    EXPECT_EQ(ErrnoFor(r.kind), r.err) << ErrorKindName(r.kind);
}

TEST(ErrnoMap, KindNamesAreDistinct) {
  for (int a = 0; a <= static_cast<int>(ErrorKind::kNoAttribute); ++a)
    for (int b = a + 1; b <= static_cast<int>(ErrorKind::kNoAttribute); ++b)
      EXPECT_STRNE(ErrorKindName(static_cast<ErrorKind>(a)), ErrorKindName(static_cast<ErrorKind>(b)));
}

}  // namespace
}  // namespace hubfs::fs
