// Fuzzes the tree-listing and repo-info parsers, the Snapshot built from what they accept, and the
// offline records written back from it (which must parse to the same entries).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fetch/hub_client.h"
#include "fs/snapshot.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  auto entries = hubfs::fetch::ParseTreePage(body);
  if (entries.ok()) {
    auto snap = hubfs::fs::Snapshot::Build(hubfs::fetch::RepoType::kModel, "org/name", std::string(40, 'a'), 0,
                                           entries.value());
    for (size_t i = 0; i < snap->node_count(); ++i) (void)snap->Find(snap->node(static_cast<uint32_t>(i)).path);
    auto back = hubfs::fetch::ParseTreePage(hubfs::fetch::TreeJson(entries.value()));
    if (!back.ok() || back->size() != entries->size()) __builtin_trap();
    for (size_t i = 0; i < back->size(); ++i) {
      const auto &a = (*back)[i], &b = (*entries)[i];
      if (a.path != b.path || a.is_dir != b.is_dir || a.size != b.size || a.oid != b.oid || a.lfs_sha256 != b.lfs_sha256)
        __builtin_trap();
    }
  }
  if (auto info = hubfs::fetch::ParseRepoInfo(body); info.ok()) {
    auto back = hubfs::fetch::ParseRepoInfo(hubfs::fetch::RepoInfoJson(info.value()));
    if (!back.ok() || back->id != info->id || back->sha != info->sha || back->gated != info->gated ||
        back->is_private != info->is_private || back->last_modified != info->last_modified)
      __builtin_trap();
  }
  (void)hubfs::fetch::ParseIsoTime(body);
  return 0;
}
