// Replication: a commit group as it travels through a replicated log (NATS JetStream in tallyd),
// and the interface the ledger publishes through. The ledger decides; the log orders and keeps;
// followers apply the same groups through the same Apply as Rebuild and check every checkpoint.
#ifndef TALLY_LEDGER_GROUP_LOG_H_
#define TALLY_LEDGER_GROUP_LOG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ledger/status.h"

namespace tally {

// One commit group: the canonical bytes of its entries and the signed checkpoint after them.
struct CommitGroup {
  uint64_t writer = 0;    // random id of the primary that wrote it (tells our groups from others')
  uint64_t first_id = 0;  // id of the first entry
  std::vector<std::string> entries;
  std::string checkpoint;
  bool operator==(const CommitGroup&) const = default;
};
// Version byte 1, u64 writer, u64 first_id, u32 count, str32 per entry, str32 checkpoint.
std::string EncodeCommitGroup(const CommitGroup& g);
Result<CommitGroup> DecodeCommitGroup(std::string_view bytes);

// A replicated, ordered log of commit groups. Sequences start at 1; 0 means "before the first".
class GroupLog {
 public:
  virtual ~GroupLog() = default;
  // Appends `group` right after sequence `after_seq` and returns its sequence once the log holds
  // it durably. FailedPrecondition "wrong_last_seq": the log already holds a group after
  // `after_seq` (this writer lost an acknowledgement, or another writer took over). Unavailable:
  // the outcome is unknown. Thread-compatible: the ledger calls it from its writer thread only.
  virtual Result<uint64_t> Publish(const CommitGroup& group, uint64_t after_seq) = 0;
  // Up to `max` groups after `after_seq`, in order, with their sequences.
  virtual Result<std::vector<std::pair<uint64_t, CommitGroup>>> ReadAfter(uint64_t after_seq,
                                                                          size_t max) = 0;
  // The sequence of the last group in the log (0 when empty), given that it holds at least
  // `known_seq`. The default reads the groups after `known_seq` to the end; a log that can tell
  // cheaply overrides it.
  virtual Result<uint64_t> LastSeq(uint64_t known_seq);
};

}  // namespace tally

#endif  // TALLY_LEDGER_GROUP_LOG_H_
