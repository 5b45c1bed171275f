#include "ledger/tree_store.h"

#include <algorithm>
#include <string>
#include <vector>

#include "ledger/coding.h"
#include "ledger/keys.h"

namespace tally {

Result<uint64_t> ParseStorageFormat(const std::optional<std::string>& v) {
  if (!v) return uint64_t{1};
  if (v->size() != 8) return Status::DataLoss("storage format key is not 8 bytes");
  uint64_t format = DecodeU64(*v);
  if (format < 1 || format > kStorageFormat) {
    return Status::FailedPrecondition("storage format " + std::to_string(format) +
                                      " is not one this build reads (1 to " +
                                      std::to_string(kStorageFormat) + ")");
  }
  return format;
}

Result<uint64_t> ReadStorageFormat(const Store& store, const Snapshot* snapshot) {
  ASSIGN_OR_RETURN(std::optional<std::string> v, store.Get(Cf::kMeta, kMetaFormat, snapshot));
  return ParseStorageFormat(v);
}

int LowestStoredTreeLevel(uint64_t format) { return format >= 2 ? kTreeStoredFromLevel : 0; }

void PutStoredTreeNodes(const std::vector<NodeWrite>& nodes, StateWriter* state) {
  for (const NodeWrite& n : nodes) {
    if (IsStoredTreeLevel(n.level))
      state->Put(Cf::kTree, TreeKey(n.level, n.index), AsBytes(n.hash));
  }
}

Status UpgradeStorageFormat(Store& store) {
  ASSIGN_OR_RETURN(uint64_t format, ReadStorageFormat(store, nullptr));
  if (format == kStorageFormat) return Status::Ok();
  StoreBatch batch(store);
  batch.DeleteRange(Cf::kTree, TreeKey(0, 0), TreeKey(kTreeStoredFromLevel, 0));
  batch.Put(Cf::kMeta, kMetaFormat, EncodeU64(kStorageFormat));
  RETURN_IF_ERROR(store.Write(batch));
  return store.CompactRange(Cf::kTree, TreeKey(0, 0), TreeKey(kTreeStoredFromLevel, 0));
}

Result<Hash> StoreNodeReader::GetNode(int level, uint64_t index) const {
  if (level < lowest_level_) return HashEntries(level, index);
  ASSIGN_OR_RETURN(std::optional<std::string> v,
                   store_->Get(Cf::kTree, TreeKey(level, index), snapshot_));
  if (!v || v->size() != kHashSize) {
    return Status::DataLoss("missing tree node " + std::to_string(level) + "/" +
                            std::to_string(index));
  }
  Hash h;
  std::copy(v->begin(), v->end(), h.begin());
  return h;
}

Result<Hash> StoreNodeReader::HashEntries(int level, uint64_t index) const {
  const uint64_t first = index << level, count = uint64_t{1} << level;
  std::vector<Hash> hashes;
  hashes.reserve(count);
  RETURN_IF_ERROR(store_->Scan(Cf::kEntries, EntryKey(first), EntryKey(first + count), false,
                               snapshot_, [&](std::string_view k, std::string_view v) {
                                 if (k != EntryKey(first + hashes.size())) return false;
                                 hashes.push_back(LeafHash(v));
                                 return true;
                               }));
  if (hashes.size() != count) {
    return Status::DataLoss("missing entry " + std::to_string(first + hashes.size()) +
                            " under tree node " + std::to_string(level) + "/" +
                            std::to_string(index));
  }
  for (size_t n = count; n > 1; n /= 2) {
    for (size_t i = 0; i < n / 2; ++i) hashes[i] = NodeHash(hashes[2 * i], hashes[2 * i + 1]);
  }
  return hashes.front();
}

}  // namespace tally
