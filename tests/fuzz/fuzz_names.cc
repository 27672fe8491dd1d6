// Fuzzes the name grammar: repo dir names with revisions, ids, paths. Whatever is accepted must be
// safe to use as a path segment in a URL and inside a repo tree.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fs/names.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  using namespace hubfs::fs;
  if (auto p = ParseRepoDirName(s)) {
    if (!IsValidIdPart(p->name)) __builtin_trap();
    if (!p->revision.empty() && (!IsValidRevision(p->revision) || p->revision.find('\0') != std::string::npos))
      __builtin_trap();
  }
  if (IsValidRepoPath(s)) {
    if (s.find("..") == 0 || s.find("/../") != std::string::npos || s.find('\0') != std::string::npos ||
        s.front() == '/' || s.find("//") != std::string::npos)
      if (s.find("/../") != std::string::npos || s == ".." || s.rfind("../", 0) == 0) __builtin_trap();
  }
  (void)IsValidEntryName(s);
  (void)IsFullCommit(s);
  return 0;
}
