// State views: how deciding and applying entries read and write derived state, whether it lives
// in the store (serving), in a pending commit group (the writer), or in memory (Rebuild).
#ifndef TALLY_LEDGER_STATE_H_
#define TALLY_LEDGER_STATE_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ledger/keys.h"
#include "ledger/status.h"
#include "ledger/store.h"

namespace tally {

class StateReader {
 public:
  virtual ~StateReader() = default;
  virtual Result<std::optional<std::string>> Get(Cf cf, std::string_view key) const = 0;
  // As Store::Scan.
  virtual Status Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
                      const ScanFn& fn) const = 0;

  // Several Gets at once, values in the keys' order. The default asks Get for each.
  virtual Result<std::vector<std::optional<std::string>>> MultiGet(
      const std::vector<std::pair<Cf, std::string_view>>& keys) const;

  // Helpers over Get for 8-byte integers: absent reads as 0.
  Result<int64_t> GetI64(Cf cf, std::string_view key) const;
};

class StateWriter : public StateReader {
 public:
  virtual void Put(Cf cf, std::string_view key, std::string_view value) = 0;
  virtual void Delete(Cf cf, std::string_view key) = 0;
};

// Reads the store through one snapshot (or the latest state if snapshot is null).
class StoreReader final : public StateReader {
 public:
  StoreReader(const Store* store, std::shared_ptr<const Snapshot> snapshot)
      : store_(store), snapshot_(std::move(snapshot)) {}
  Result<std::optional<std::string>> Get(Cf cf, std::string_view key) const override;
  Status Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
              const ScanFn& fn) const override;
  Result<std::vector<std::optional<std::string>>> MultiGet(
      const std::vector<std::pair<Cf, std::string_view>>& keys) const override;

 private:
  const Store* store_;
  std::shared_ptr<const Snapshot> snapshot_;
};

// All state in sorted in-memory maps, one per column family. Rebuild derives into it.
class MemoryState final : public StateWriter {
 public:
  using Map = std::map<std::string, std::string, std::less<>>;
  Result<std::optional<std::string>> Get(Cf cf, std::string_view key) const override;
  Status Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
              const ScanFn& fn) const override;
  void Put(Cf cf, std::string_view key, std::string_view value) override;
  void Delete(Cf cf, std::string_view key) override;
  const Map& map(Cf cf) const { return maps_[static_cast<size_t>(cf)]; }

 private:
  Map maps_[kCfCount];
};

// Changes on top of a base view: the writer's pending commit group. Reads see the changes.
// A savepoint lets a failed request's changes be rolled back without touching the others'.
// What the base answers to Get is remembered (absence included) for the overlay's life, since
// deciding and applying an entry read the same keys: the base must not change meanwhile, as
// the committed store does not while the writer decides a group.
class OverlayState final : public StateWriter {
 public:
  explicit OverlayState(const StateReader* base) : base_(base) {}
  Result<std::optional<std::string>> Get(Cf cf, std::string_view key) const override;
  // Merges the base's keys with the changes. Cost grows with the range: for small ranges.
  Status Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
              const ScanFn& fn) const override;
  void Put(Cf cf, std::string_view key, std::string_view value) override;
  void Delete(Cf cf, std::string_view key) override;

  size_t Savepoint() const { return undo_.size(); }
  void RollbackTo(size_t savepoint);
  // Adds every change to the batch, in key order per column family.
  void AddTo(StoreBatch* batch) const;
  // Calls fn with every key changed (put or deleted) in cf, in key order.
  template <typename Fn>
  void ForEachChangedKey(Cf cf, Fn&& fn) const {
    const auto c = static_cast<uint8_t>(cf);
    for (auto it = changes_.lower_bound(Key{c, std::string()});
         it != changes_.end() && it->first.first == c; ++it) {
      fn(std::string_view(it->first.second));
    }
  }

 private:
  using Key = std::pair<uint8_t, std::string>;
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<std::string>{}(k.second) * 31 + k.first;
    }
  };
  void Set(Cf cf, std::string_view key, std::optional<std::string> value);

  const StateReader* base_;
  std::map<Key, std::optional<std::string>> changes_;
  mutable std::unordered_map<Key, std::optional<std::string>, KeyHash> base_reads_;
  // (key, previous change or absence of one) for rollback.
  std::vector<std::pair<Key, std::optional<std::optional<std::string>>>> undo_;
};

}  // namespace tally

#endif  // TALLY_LEDGER_STATE_H_
