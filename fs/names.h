// The grammar of names under the mount: repo directory names ("name" or "name@revision", where a
// revision containing '/' is percent-encoded, as in hf:// paths), Hub id parts, and paths inside a
// repo. Pure functions; anything the Hub could never produce is rejected here, before any request.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace hubfs::fs {

// An org or repo name part: [A-Za-z0-9_.-], 1..96 chars, no leading/trailing '-' or '.', no "--"
// or "..", not ending in ".git".
bool IsValidIdPart(std::string_view s);

struct RepoDirName {
  std::string name;      // repo name part
  std::string revision;  // decoded; empty = default branch
};
// "name" or "name@rev"; rev is percent-decoded ("refs%2Fpr%2F1" -> "refs/pr/1"). nullopt if invalid.
std::optional<RepoDirName> ParseRepoDirName(std::string_view s);

// A revision the Hub could accept: non-empty, <= 255 bytes, no NUL/control chars, no "..", no
// leading/trailing '/', no "//".
bool IsValidRevision(std::string_view rev);
// 40 lowercase/uppercase hex digits.
bool IsFullCommit(std::string_view rev);

// A file or directory name inside a repo: non-empty, <= 255 bytes, not "." or "..", no '/' or NUL.
bool IsValidEntryName(std::string_view s);
// A repo-relative path: '/'-separated valid entry names.
bool IsValidRepoPath(std::string_view path);

}  // namespace hubfs::fs
