// Helpers shared by the loyalty files (loyalty.cc: writes, loyalty_read.cc: reads and reports).
// Not part of the library's interface.
#ifndef TALLY_LEDGER_LOYALTY_INTERNAL_H_
#define TALLY_LEDGER_LOYALTY_INTERNAL_H_

#include <algorithm>
#include <array>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ledger/loyalty.h"
#include "ledger/records.h"
#include "ledger/state.h"

namespace tally {

// What a read said about one thing (a customer's view, an API key), kept with the tree size its
// read held (Ledger::Read(holds)) and served while that thing's change mark (Ledger::
// CustomerChangedAt, Ledger::ApiKeysChangedAt) is at most that size: a kept answer never misses
// a change acknowledged before the read, and an answer read from a snapshot older than a change
// is never served after it (Put also skips it when the mark has already passed). Sharded to keep
// the I/O threads apart; a full shard drops an entry of a bucket picked by a step counter (not
// begin(), which libstdc++ keeps near the newest insert).
template <typename V>
class ReadCache {
 public:
  explicit ReadCache(size_t capacity)
      : per_shard_(capacity == 0 ? 0 : std::max<size_t>(1, capacity / kShards)) {}

  std::optional<V> Get(const std::string& key, uint64_t changed_at) const {
    if (per_shard_ == 0) return std::nullopt;
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.entries.find(key);
    if (it == s.entries.end() || it->second.holds < changed_at) return std::nullopt;
    return it->second.value;
  }

  void Put(const std::string& key, uint64_t holds, uint64_t changed_at, const V& v) {
    if (per_shard_ == 0 || holds < changed_at) return;  // changed since the read: do not keep
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.entries.find(key);
    if (it != s.entries.end()) {
      if (it->second.holds <= holds) it->second = Cached{holds, v};
      return;
    }
    if (s.entries.size() >= per_shard_) Evict(s);
    s.entries.emplace(key, Cached{holds, v});
  }

 private:
  static constexpr size_t kShards = 16;
  struct Cached {
    uint64_t holds;
    V value;
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, Cached> entries;  // guarded by mu
    size_t victim = 0;                                // guarded by mu: where Evict looks next
  };
  Shard& shard(const std::string& key) const {
    return shards_[std::hash<std::string>{}(key) % kShards];
  }
  // REQUIRES: s.mu held, s.entries not empty.
  static void Evict(Shard& s) {
    const size_t buckets = s.entries.bucket_count();
    s.victim = (s.victim + 0x9e3779b97f4a7c15u) % buckets;  // walks the buckets evenly
    for (size_t i = 0; i < buckets; ++i) {
      size_t b = (s.victim + i) % buckets;
      if (s.entries.bucket_size(b) == 0) continue;
      const std::string key = s.entries.begin(b)->first;
      s.entries.erase(key);
      return;
    }
  }
  const size_t per_shard_;
  mutable std::array<Shard, kShards> shards_;
};

}  // namespace tally

namespace tally::internal {

Result<ProgramConfig> LoadProgram(const StateReader& s, const std::string& id);
Result<std::optional<CustomerRecord>> LoadCustomer(const StateReader& s, const std::string& program,
                                                   const std::string& customer);
Result<std::optional<HoldRecord>> LoadHold(const StateReader& s, uint64_t entry_id);
Result<std::optional<Entry>> LoadEntry(const StateReader& s, uint64_t id);

// One lot of a customer, as stored.
struct Lot {
  uint64_t id = 0;
  int64_t expires_at_us = 0;  // 0: never
  LotRecord record;
};
// The customer's lots in consumption order: soonest expiry first, never-expiring last, ties
// oldest first.
Result<std::vector<Lot>> LoadLots(const StateReader& s, const std::string& program,
                                  const std::string& customer);

// Opaque cursors: the last key of a page, hex-encoded.
std::string KeyCursor(std::string_view key);
Result<std::string> KeyFromCursor(const std::string& cursor);

// Referral codes: Crockford base32 from a CSPRNG with a check symbol.
std::string NewReferralCode();
// Upper-cases, maps I and L to 1 and O to 0, drops hyphens; nullopt if not a well-formed code.
std::optional<std::string> NormalizeReferralCode(std::string_view code);

}  // namespace tally::internal

#endif  // TALLY_LEDGER_LOYALTY_INTERNAL_H_
