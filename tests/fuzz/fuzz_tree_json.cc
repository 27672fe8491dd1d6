// Fuzzes the tree-listing parser and the Snapshot built from what it accepts.
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
  }
  (void)hubfs::fetch::ParseIsoTime(body);
  return 0;
}
