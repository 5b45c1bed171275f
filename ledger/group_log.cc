#include "ledger/group_log.h"

#include "ledger/coding.h"
#include "ledger/limits.h"

namespace tally {
namespace {
constexpr uint8_t kGroupVersion = 1;
constexpr size_t kCheckpointBytesMax = 4096;
}  // namespace

std::string EncodeCommitGroup(const CommitGroup& g) {
  std::string out;
  PutU8(&out, kGroupVersion);
  PutU64(&out, g.writer);
  PutU64(&out, g.first_id);
  PutU32(&out, static_cast<uint32_t>(g.entries.size()));
  for (const std::string& e : g.entries) PutStr32(&out, e);
  PutStr32(&out, g.checkpoint);
  return out;
}

Result<CommitGroup> DecodeCommitGroup(std::string_view bytes) {
  Reader r(bytes);
  uint8_t version = 0;
  uint32_t count = 0;
  CommitGroup g;
  r.ReadU8(&version);
  if (version != kGroupVersion) r.Fail();
  r.ReadU64(&g.writer);
  r.ReadU64(&g.first_id);
  r.ReadU32(&count);
  if (count > kCommitGroupRequestsMax * kRequestEntriesMax) r.Fail();
  for (uint32_t i = 0; i < count && r.ok(); ++i) {
    r.ReadStr32(&g.entries.emplace_back(), kEntryBytesMax);
  }
  r.ReadStr32(&g.checkpoint, kCheckpointBytesMax);
  if (!r.ok() || !r.empty()) return Status::DataLoss("malformed commit group");
  return g;
}

Result<uint64_t> GroupLog::LastSeq(uint64_t known_seq) {
  for (;;) {
    ASSIGN_OR_RETURN(auto groups, ReadAfter(known_seq, kReplicationReadGroupsMax));
    if (groups.empty()) return known_seq;
    known_seq = groups.back().first;
  }
}

}  // namespace tally
