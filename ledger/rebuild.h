// Rebuild: derived state as a pure function of the log. Replays every entry into fresh state and
// compares it, byte for byte, with what the store holds. The audit tool and tests use it.
#ifndef TALLY_LEDGER_REBUILD_H_
#define TALLY_LEDGER_REBUILD_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ledger/entry.h"
#include "ledger/flat_state.h"
#include "ledger/keys.h"
#include "ledger/merkle.h"
#include "ledger/set_digest.h"
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
  FlatState state;          // every derived column family but the tree
  MemoryNodeStore tree;     // every complete node of the tree (RebuildState)
  MerkleFrontier frontier;  // the tree over the entries replayed (likewise)
  uint64_t entries = 0;
};

// Replays entries, in log order, into fresh derived state: what RebuildState does with each entry
// of the log. For callers that read and decode the log themselves (the audit decodes on one
// thread and replays on another).
class Replayer {
 public:
  Replayer(RebuildResult* out, std::vector<Discrepancy>* found) : out_(out), found_(found) {}
  // The next entry of the log: its key in the entries column family and DecodeEntryInto of its
  // value (`entry` is used only if `decoded` is OK). Records an id out of order, an entry that
  // does not decode or one that contradicts the state (skipping it) in `found`.
  void Apply(std::string_view key, const Status& decoded, const Entry& entry);
  // A hint, given a few entries before Apply: starts loading the index cells of the keys that
  // applying `entry` looks up: its idempotency key and business key (usually absent, rarely in
  // cache in a big replay), its accounts' balances and its customer (small tables, but evicted
  // by the big ones streaming through the cache).
  void Prefetch(const Entry& entry) const;

 private:
  RebuildResult* out_;
  std::vector<Discrepancy>* found_;
  uint64_t expected_id_ = 0;
};

// Replays the log of `store` (through `snapshot`, may be null) into fresh derived state and
// rehashes it into a fresh Merkle tree. Entries that do not decode, are out of
// order, or contradict the state are recorded in `found` and skipped. Returns an error only if
// the store could not be read.
Status RebuildState(const Store& store, const Snapshot* snapshot, RebuildResult* out,
                    std::vector<Discrepancy>* found);

// Compares one derived column family of the store (not the tree) with the rebuilt state, every
// key and every value byte, appending each difference to `found`: keys the store has and the
// state does not come in key order, then keys missing from the store in the order replay made
// them. Cost: one scan of the column family and one hash look-up per key.
Status CompareDerivedCf(const Store& store, const Snapshot* snapshot, Cf cf,
                        const FlatState& rebuilt, std::vector<Discrepancy>* found);

// For a column family the replay kept only a digest of (FlatState::KeepOnlyDigest): whether the
// store's keys and values in `cf` are the pairs `replayed` was made of. One scan, no look-ups. A
// difference is not located: CompareDerivedCf against a replay that kept the family's records
// does that.
Result<bool> StoredMatchesDigest(const Store& store, const Snapshot* snapshot, Cf cf,
                                 const SetDigest& replayed);

// Compares the tree column family with the complete nodes of a tree of `size` leaves from
// `lowest_level` up (what the store's format keeps: LowestStoredTreeLevel): one scan, in key
// order (level, then index), no look-ups.
Status CompareTree(const Store& store, const Snapshot* snapshot, const MemoryNodeStore& nodes,
                   uint64_t size, int lowest_level, std::vector<Discrepancy>* found);

// Every derived column family, tree included, against what RebuildState made.
Status CompareDerivedState(const Store& store, const Snapshot* snapshot,
                           const RebuildResult& rebuilt, std::vector<Discrepancy>* found);

}  // namespace tally

#endif  // TALLY_LEDGER_REBUILD_H_
