// C2SP tlog-checkpoint bodies (https://c2sp.org/tlog-checkpoint): the text a log signs as a note.
#ifndef TALLY_LEDGER_CHECKPOINT_H_
#define TALLY_LEDGER_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ledger/hash.h"
#include "ledger/status.h"

namespace tally {

struct Checkpoint {
  std::string origin;                   // the log's identity, e.g. "tally.example.com/ledger"
  uint64_t size = 0;                    // number of leaves
  Hash root{};                          // RFC 6962 root of those leaves
  std::vector<std::string> extensions;  // optional extra lines, without '\n'
};

// Returns "<origin>\n<size in decimal>\n<base64 root>\n" followed by one line per extension.
// Preconditions (checked): origin and every extension are non-empty, without control characters.
std::string FormatCheckpoint(const Checkpoint& checkpoint);

// Parses a checkpoint body strictly: lines end in '\n'; the origin is non-empty; the size is
// decimal without sign or leading zeros ("0" itself excepted) and fits in 64 bits; the root is
// strict base64 of exactly 32 bytes; extension lines are non-empty; no control characters.
// InvalidArgument otherwise.
Result<Checkpoint> ParseCheckpoint(std::string_view text);

}  // namespace tally

#endif  // TALLY_LEDGER_CHECKPOINT_H_
