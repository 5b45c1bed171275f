// Rebuild: derived state as a pure function of the log. Replays every entry into fresh state and
// compares it, byte for byte, with what the store holds. The audit tool and tests use it.
#ifndef TALLY_LEDGER_REBUILD_H_
#define TALLY_LEDGER_REBUILD_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ledger/merkle.h"
#include "ledger/state.h"
#include "ledger/store.h"

namespace tally {

// One thing found wrong: what, where (column family, key, entry id) and expected versus found.
struct Discrepancy {
  std::string what;
  std::string cf;
  std::string key;  // hex
  std::optional<uint64_t> entry_id;
  std::string expected;  // hex or text
  std::string found;
  std::string ToString() const;
};

struct RebuildResult {
  MemoryState state;        // every derived column family, tree included
  MerkleFrontier frontier;  // the tree over the entries replayed
  uint64_t entries = 0;
};

// Replays the log of `store` (through `snapshot`, may be null) into fresh derived state. Entries
// that do not decode, are out of order, or contradict the state are recorded in `found` and
// skipped. Returns an error only if the store could not be read.
Status RebuildState(const Store& store, const Snapshot* snapshot, RebuildResult* out,
                    std::vector<Discrepancy>* found);

// Compares every derived column family of the store with the rebuilt state, key by key, byte
// for byte, appending each difference to `found`.
Status CompareDerivedState(const Store& store, const Snapshot* snapshot, const MemoryState& rebuilt,
                           std::vector<Discrepancy>* found);

}  // namespace tally

#endif  // TALLY_LEDGER_REBUILD_H_
