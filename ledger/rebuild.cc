#include "ledger/rebuild.h"

#include "ledger/apply.h"
#include "ledger/base64.h"
#include "ledger/coding.h"
#include "ledger/entry.h"
#include "ledger/keys.h"
#include "ledger/tree_store.h"

namespace tally {

std::string Discrepancy::ToString() const {
  std::string s = what;
  if (!cf.empty()) s += " [cf " + cf + "]";
  if (!key.empty()) s += " [key " + key + "]";
  if (entry_id) s += " [entry " + std::to_string(*entry_id) + "]";
  if (!expected.empty() || !found.empty()) s += ": expected " + expected + ", found " + found;
  return s;
}

void Replayer::Apply(std::string_view k, const Status& decoded, const Entry& e) {
  uint64_t id = k.size() == 8 ? DecodeU64(k) : UINT64_MAX;
  if (id != expected_id_) {
    found_->push_back({"entry missing or out of order", "entries", HexEncode(k), expected_id_,
                       std::to_string(expected_id_), std::to_string(id)});
    expected_id_ = id + 1;
  } else {
    ++expected_id_;
  }
  if (!decoded.ok()) {
    found_->push_back(
        {"entry does not decode: " + decoded.message(), "entries", HexEncode(k), id, "", ""});
  } else if (e.id != id) {
    found_->push_back({"entry id differs from its key", "entries", HexEncode(k), id,
                       std::to_string(id), std::to_string(e.id)});
  } else {
    Status a = ApplyEntry(e, &out_->state);
    if (!a.ok()) found_->push_back({a.message(), "entries", HexEncode(k), id, "", ""});
  }
  ++out_->entries;
}

void Replayer::Prefetch(const Entry& e) const {
  if (!e.idempotency_key.empty()) {
    out_->state.Prefetch(Cf::kIdempotency, IdempotencyKey(e.actor, e.idempotency_key));
  }
  if (auto claim = BusinessKeyOf(e)) out_->state.Prefetch(Cf::kBusinessKeys, claim->key);
  for (const Posting& p : e.postings) out_->state.Prefetch(Cf::kBalances, p.account);
  if (!e.program.empty() && !e.customer.empty()) {
    out_->state.Prefetch(Cf::kCustomers, CustomerKey(e.program, e.customer));
  }
}

Status RebuildState(const Store& store, const Snapshot* snapshot, RebuildResult* out,
                    std::vector<Discrepancy>* found) {
  Replayer replayer(out, found);
  std::vector<NodeWrite> nodes;
  Entry entry;  // decoded into again for each entry
  return store.Scan(Cf::kEntries, "", "", false, snapshot,
                    [&](std::string_view k, std::string_view v) {
                      const Status decoded = DecodeEntryInto(v, &entry);
                      replayer.Apply(k, decoded, entry);
                      nodes.clear();
                      out->frontier.Append(LeafHash(v), &nodes);
                      for (const NodeWrite& n : nodes) out->tree.Put(n);
                      return true;
                    });
}

namespace {

std::string Shown(std::string_view v) {
  return v.size() > 64 ? HexEncode(v.substr(0, 64)) + "..." : HexEncode(v);
}

// Scans `cf` in the store and looks each stored key up in the replayed state, a batch at a time
// (FlatState::FindMany); calls fn(key, value, ref) for each stored key, ref 0 if the replay
// never Put it.
template <typename Fn>
Status LookUpStored(const Store& store, const Snapshot* snapshot, Cf cf, const FlatState& rebuilt,
                    Fn&& fn) {
  // Each batch's keys and values are copied out of the scan, to be looked up together.
  constexpr size_t kBatch = 64;
  std::vector<std::string> keys(kBatch), values(kBatch);
  std::string_view views[kBatch];
  FlatState::Ref refs[kBatch];
  size_t n = 0;
  auto flush = [&] {
    for (size_t i = 0; i < n; ++i) views[i] = keys[i];
    rebuilt.FindMany(cf, views, n, refs);
    for (size_t i = 0; i < n; ++i) fn(keys[i], values[i], refs[i]);
    n = 0;
  };
  RETURN_IF_ERROR(
      store.Scan(cf, "", "", false, snapshot, [&](std::string_view k, std::string_view v) {
        keys[n].assign(k);
        values[n].assign(v);
        if (++n == kBatch) flush();
        return true;
      }));
  flush();
  return Status::Ok();
}

}  // namespace

Status CompareDerivedCf(const Store& store, const Snapshot* snapshot, Cf cf,
                        const FlatState& rebuilt, std::vector<Discrepancy>* found) {
  TALLY_CHECK(IsDerivedCf(cf) && cf != Cf::kTree);
  // Stored keys are distinct, so if as many of them are keys the replay holds as it holds in
  // all, none of its keys is missing from the store; only otherwise is a second scan needed, to
  // name the missing ones.
  size_t matched = 0;
  RETURN_IF_ERROR(
      LookUpStored(store, snapshot, cf, rebuilt,
                   [&](std::string_view k, std::string_view v, FlatState::Ref ref) {
                     FlatState::Item want;
                     if (ref != 0) want = rebuilt.At(cf, ref);
                     if (!want.present) {
                       found->push_back({"derived key not explained by the log", CfName(cf),
                                         HexEncode(k), std::nullopt, "nothing", Shown(v)});
                       return;
                     }
                     ++matched;
                     if (want.value != v) {
                       found->push_back({"derived value differs", CfName(cf), HexEncode(k),
                                         std::nullopt, Shown(want.value), Shown(v)});
                     }
                   }));
  if (matched == rebuilt.size(cf)) return Status::Ok();
  std::vector<bool> seen(rebuilt.ref_end(cf), false);
  RETURN_IF_ERROR(LookUpStored(store, snapshot, cf, rebuilt,
                               [&](std::string_view, std::string_view, FlatState::Ref ref) {
                                 if (ref != 0) seen[ref] = true;
                               }));
  rebuilt.ForEach(cf, [&](FlatState::Ref ref, const FlatState::Item& want) {
    if (seen[ref] || !want.present) return;
    found->push_back({"derived key missing", CfName(cf), HexEncode(want.key), std::nullopt,
                      Shown(want.value), "nothing"});
  });
  return Status::Ok();
}

Result<bool> StoredMatchesDigest(const Store& store, const Snapshot* snapshot, Cf cf,
                                 const SetDigest& replayed) {
  SetDigest stored = replayed.Empty();
  RETURN_IF_ERROR(
      store.Scan(cf, "", "", false, snapshot, [&](std::string_view k, std::string_view v) {
        stored.Add(k, v);
        return true;
      }));
  return stored == replayed;
}

Status CompareTree(const Store& store, const Snapshot* snapshot, const MemoryNodeStore& nodes,
                   uint64_t size, int lowest_level, std::vector<Discrepancy>* found) {
  // The expected keys in key order: level `lowest_level` indices 0 .. (size >> level) - 1, the
  // next level ..., while a level has a complete node.
  int level = lowest_level;
  uint64_t index = 0;
  auto at_end = [&] { return level >= 64 || (size >> level) == 0; };
  auto advance = [&] {
    if (++index >= (size >> level)) {
      ++level;
      index = 0;
    }
  };
  auto missing = [&] {
    auto want = nodes.GetNode(level, index);
    found->push_back({"derived key missing", CfName(Cf::kTree), HexEncode(TreeKey(level, index)),
                      std::nullopt, want.ok() ? HashToHex(*want) : "a node", "nothing"});
  };
  RETURN_IF_ERROR(
      store.Scan(Cf::kTree, "", "", false, snapshot, [&](std::string_view k, std::string_view v) {
        while (!at_end() && TreeKey(level, index) < k) {
          missing();
          advance();
        }
        if (at_end() || TreeKey(level, index) != k) {
          found->push_back({"derived key not explained by the log", CfName(Cf::kTree), HexEncode(k),
                            std::nullopt, "nothing", Shown(v)});
          return true;
        }
        auto want = nodes.GetNode(level, index);
        if (!want.ok() || AsBytes(*want) != v) {
          found->push_back({"derived value differs", CfName(Cf::kTree), HexEncode(k), std::nullopt,
                            want.ok() ? HashToHex(*want) : "a node", Shown(v)});
        }
        advance();
        return true;
      }));
  for (; !at_end(); advance()) missing();
  return Status::Ok();
}

Status CompareDerivedState(const Store& store, const Snapshot* snapshot,
                           const RebuildResult& rebuilt, std::vector<Discrepancy>* found) {
  for (int i = 0; i < kCfCount; ++i) {
    auto cf = static_cast<Cf>(i);
    if (!IsDerivedCf(cf)) continue;
    if (cf == Cf::kTree) {
      ASSIGN_OR_RETURN(uint64_t format, ReadStorageFormat(store, snapshot));
      RETURN_IF_ERROR(CompareTree(store, snapshot, rebuilt.tree, rebuilt.frontier.size(),
                                  LowestStoredTreeLevel(format), found));
    } else {
      RETURN_IF_ERROR(CompareDerivedCf(store, snapshot, cf, rebuilt.state, found));
    }
  }
  return Status::Ok();
}

}  // namespace tally
