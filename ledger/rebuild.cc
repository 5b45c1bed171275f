#include "ledger/rebuild.h"

#include "ledger/apply.h"
#include "ledger/base64.h"
#include "ledger/coding.h"
#include "ledger/entry.h"
#include "ledger/keys.h"

namespace tally {

std::string Discrepancy::ToString() const {
  std::string s = what;
  if (!cf.empty()) s += " [cf " + cf + "]";
  if (!key.empty()) s += " [key " + key + "]";
  if (entry_id) s += " [entry " + std::to_string(*entry_id) + "]";
  if (!expected.empty() || !found.empty()) s += ": expected " + expected + ", found " + found;
  return s;
}

Status RebuildState(const Store& store, const Snapshot* snapshot, RebuildResult* out,
                    std::vector<Discrepancy>* found) {
  uint64_t expected_id = 0;
  std::vector<NodeWrite> nodes;
  Status st = store.Scan(
      Cf::kEntries, "", "", false, snapshot, [&](std::string_view k, std::string_view v) {
        uint64_t id = k.size() == 8 ? DecodeU64(k) : UINT64_MAX;
        if (id != expected_id) {
          found->push_back({"entry missing or out of order", "entries", HexEncode(k), expected_id,
                            std::to_string(expected_id), std::to_string(id)});
          expected_id = id + 1;
        } else {
          ++expected_id;
        }
        auto e = DecodeEntry(v);
        if (!e.ok()) {
          found->push_back({"entry does not decode: " + e.status().message(), "entries",
                            HexEncode(k), id, "", ""});
        } else if (e->id != id) {
          found->push_back({"entry id differs from its key", "entries", HexEncode(k), id,
                            std::to_string(id), std::to_string(e->id)});
        } else {
          Status a = ApplyEntry(*e, &out->state);
          if (!a.ok()) found->push_back({a.message(), "entries", HexEncode(k), id, "", ""});
        }
        nodes.clear();
        out->frontier.Append(LeafHash(v), &nodes);
        for (const NodeWrite& n : nodes) {
          out->state.Put(Cf::kTree, TreeKey(n.level, n.index), AsBytes(n.hash));
        }
        ++out->entries;
        return true;
      });
  return st;
}

namespace {

std::string Shown(std::string_view v) {
  return v.size() > 64 ? HexEncode(v.substr(0, 64)) + "..." : HexEncode(v);
}

}  // namespace

Status CompareDerivedState(const Store& store, const Snapshot* snapshot, const MemoryState& rebuilt,
                           std::vector<Discrepancy>* found) {
  for (int i = 0; i < kCfCount; ++i) {
    auto cf = static_cast<Cf>(i);
    if (!IsDerivedCf(cf)) continue;
    const MemoryState::Map& want = rebuilt.map(cf);
    auto it = want.begin();
    RETURN_IF_ERROR(
        store.Scan(cf, "", "", false, snapshot, [&](std::string_view k, std::string_view v) {
          while (it != want.end() && it->first < k) {
            found->push_back({"derived key missing", kCfNames[i], HexEncode(it->first),
                              std::nullopt, Shown(it->second), "nothing"});
            ++it;
          }
          if (it != want.end() && it->first == k) {
            if (it->second != v) {
              found->push_back({"derived value differs", kCfNames[i], HexEncode(k), std::nullopt,
                                Shown(it->second), Shown(v)});
            }
            ++it;
          } else {
            found->push_back({"derived key not explained by the log", kCfNames[i], HexEncode(k),
                              std::nullopt, "nothing", Shown(v)});
          }
          return true;
        }));
    for (; it != want.end(); ++it) {
      found->push_back({"derived key missing", kCfNames[i], HexEncode(it->first), std::nullopt,
                        Shown(it->second), "nothing"});
    }
  }
  return Status::Ok();
}

}  // namespace tally
