// How the store keeps the ledger's Merkle tree, and the storage format version that says so
// (docs/format.md, "Storage format").
//
// Format 2 (what this build writes) keeps the complete nodes of the tree from level
// kTreeStoredFromLevel up: about one key per eight entries. A complete node below that level
// covers at most eight entries and is hashed from them when a proof needs it. Format 1 (a store
// without the format key) kept every level from 0, two keys per entry. Ledger::Open moves a
// format 1 store to format 2; the readers of a data directory (tally-audit) accept both.
#ifndef TALLY_LEDGER_TREE_STORE_H_
#define TALLY_LEDGER_TREE_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ledger/hash.h"
#include "ledger/merkle.h"
#include "ledger/state.h"
#include "ledger/status.h"
#include "ledger/store.h"

namespace tally {

inline constexpr uint64_t kStorageFormat = 2;
inline constexpr int kTreeStoredFromLevel = 4;

// True if format 2 stores nodes of `level` in the tree column family.
inline bool IsStoredTreeLevel(int level) { return level >= kTreeStoredFromLevel; }

// The storage format a format key's value names: 1 if there is no key, else its value. DataLoss
// for a value that is not 8 bytes; FailedPrecondition for a format this build does not know.
Result<uint64_t> ParseStorageFormat(const std::optional<std::string>& value);

// ParseStorageFormat of `store`'s format key.
Result<uint64_t> ReadStorageFormat(const Store& store, const Snapshot* snapshot);

// The lowest tree level a store of `format` (a value ReadStorageFormat returns) holds.
int LowestStoredTreeLevel(uint64_t format);

// Puts the nodes of `nodes` that format 2 stores (IsStoredTreeLevel) into the tree column family
// of `state`: what a commit writes of the nodes its entries completed.
void PutStoredTreeNodes(const std::vector<NodeWrite>& nodes, StateWriter* state);

// Brings a writable store to kStorageFormat in one synced batch: a format 1 store loses the
// tree nodes below kTreeStoredFromLevel (one range deletion, then compacted away to return the
// space) and gains the format key; an empty store just gains the key. Nothing to do at
// kStorageFormat.
Status UpgradeStorageFormat(Store& store);

// The complete nodes of the tree as a store holds them: from the tree column family from
// `lowest_level` up, and below it hashed from the entries the node covers (one scan of at most
// 2^lowest_level entries). DataLoss if a node or an entry it needs is missing.
class StoreNodeReader final : public NodeReader {
 public:
  StoreNodeReader(const Store* store, const Snapshot* snapshot, int lowest_level)
      : store_(store), snapshot_(snapshot), lowest_level_(lowest_level) {}
  Result<Hash> GetNode(int level, uint64_t index) const override;

 private:
  Result<Hash> HashEntries(int level, uint64_t index) const;

  const Store* store_;
  const Snapshot* snapshot_;
  int lowest_level_;
};

}  // namespace tally

#endif  // TALLY_LEDGER_TREE_STORE_H_
