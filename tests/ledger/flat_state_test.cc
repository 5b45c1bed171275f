// FlatState against MemoryState: the same operations give the same state, whether a column
// family is read from the start or only after many writes (its Puts buffered until then), and
// whatever room was reserved in it.
#include "ledger/flat_state.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ledger/set_digest.h"
#include "ledger/state.h"

namespace tally {
namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

Pairs ScanAll(const StateReader& s, Cf cf, bool reverse) {
  Pairs out;
  REQUIRE(s.Scan(cf, "", "", reverse, [&](std::string_view k, std::string_view v) {
             out.emplace_back(std::string(k), std::string(v));
             return true;
           }).ok());
  return out;
}

TEST_CASE("FlatState matches MemoryState under random puts, deletes and reads", "[flat_state]") {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    FlatState flat;
    MemoryState want;
    // Column families whose first read (a Get or a Delete) comes late exercise the buffered
    // Puts, among them Puts of a key buffered before.
    const Cf cfs[] = {Cf::kBalances, Cf::kLots, Cf::kCustomerEntries};
    const int first_read = static_cast<int>(rng() % 3000);
    // Each family's keys in the order of their records: the order they were first Put, except
    // that a key whose value changed size (in whole 8-byte units of key and value) moves to the
    // end, as the index saw it: buffered Puts are indexed in order, the last one's record kept.
    std::map<Cf, std::vector<std::string>> order;
    std::map<Cf, bool> indexed;  // read or deleted from: Puts no longer buffered
    std::map<std::pair<Cf, std::string>, size_t> record_units;
    // Room made before the writes and among them (Reserve then rehashes what is there), in
    // tables read from the start and in tables still buffering their Puts, some of it beyond
    // any table (ignored): none of it may change what the state holds.
    const uint64_t hints[] = {0, 10, 1000, 100000, uint64_t{1} << 40};
    if (seed % 2 == 0) flat.Reserve(cfs[seed % 3], hints[seed % 5]);
    for (int op = 0; op < 5000; ++op) {
      if (op % 1000 == 500) flat.Reserve(cfs[rng() % 3], hints[rng() % 5]);
      Cf cf = cfs[rng() % 3];
      // Keys from a small space (many overwrites), some empty or long; values of every size.
      std::string key = rng() % 50 == 0 ? "" : "k" + std::to_string(rng() % 400);
      if (rng() % 20 == 0) key += std::string(rng() % 300, 'x');
      std::string value(rng() % 40, static_cast<char>('a' + rng() % 26));
      int what = static_cast<int>(rng() % 10);
      if (what < 6 || op < first_read) {
        auto& keys = order[cf];
        auto it = std::find(keys.begin(), keys.end(), key);
        const size_t units = (key.size() + value.size() + 15) / 8;  // header, key, value
        if (it == keys.end()) {
          keys.push_back(key);
        } else if (!indexed[cf] || record_units[{cf, key}] != units) {
          // Buffered, each Put has its own record and the last one is kept; indexed, a Put
          // makes a new record when the size changes.
          keys.erase(it);
          keys.push_back(key);
        }
        record_units[{cf, key}] = units;
        flat.Put(cf, key, value);
        want.Put(cf, key, value);
      } else if (what < 8) {
        indexed[cf] = true;
        flat.Delete(cf, key);
        want.Delete(cf, key);
      } else {
        indexed[cf] = true;
        auto a = flat.Get(cf, key);
        auto b = want.Get(cf, key);
        REQUIRE(a.ok());
        REQUIRE(*a == *b);
      }
    }
    for (Cf cf : cfs) {
      INFO("seed " << seed << " cf " << kCfNames[static_cast<int>(cf)]);
      CHECK(ScanAll(flat, cf, false) == ScanAll(want, cf, false));
      CHECK(ScanAll(flat, cf, true) == ScanAll(want, cf, true));
      CHECK(flat.size(cf) == want.map(cf).size());
      size_t present = 0;
      std::vector<std::string> records;
      flat.ForEach(cf, [&](FlatState::Ref ref, const FlatState::Item& item) {
        records.emplace_back(item.key);
        REQUIRE(ref < flat.ref_end(cf));
        REQUIRE(flat.Find(cf, item.key) == ref);
        FlatState::Item again = flat.At(cf, ref);
        CHECK(
            (again.key == item.key && again.value == item.value && again.present == item.present));
        if (!item.present) {
          CHECK(want.map(cf).count(std::string(item.key)) == 0);
          return;
        }
        ++present;
        auto it = want.map(cf).find(item.key);
        REQUIRE(it != want.map(cf).end());
        CHECK(it->second == item.value);
      });
      CHECK(records == order[cf]);
      size_t key_bytes = 0;
      for (const std::string& k : records) key_bytes += k.size();
      CHECK(flat.record_bytes(cf) >= key_bytes + 8 * records.size());
      CHECK(present == want.map(cf).size());
      CHECK_FALSE(flat.Find(cf, "never put").has_value());
      // FindMany gives what Find gives, key by key, across its batches.
      std::vector<std::string> asked = records;
      for (int i = 0; i < 70; ++i) asked.push_back("never put " + std::to_string(i));
      std::shuffle(asked.begin(), asked.end(), rng);
      std::vector<std::string_view> views(asked.begin(), asked.end());
      std::vector<FlatState::Ref> refs(views.size(), 12345);
      flat.FindMany(cf, views.data(), views.size(), refs.data());
      for (size_t i = 0; i < views.size(); ++i) {
        CHECK(refs[i] == flat.Find(cf, views[i]).value_or(0));
      }
    }
  }
}

TEST_CASE("FlatState keeps every record across its arena's chunks", "[flat_state]") {
  // About 30 MB of records, some of 100 KB, so that several 8 MiB chunks fill and the rest of a
  // chunk is skipped where a record does not fit; then values of another size for every fifth
  // key (new records at the end, some of 150 KB), and values of the same size for every
  // seventh (in place once indexed). Once buffered until the first read, once indexed from the
  // start.
  for (bool buffered : {true, false}) {
    INFO("buffered " << buffered);
    FlatState flat;
    MemoryState want;
    const Cf cf = Cf::kObjects;
    if (!buffered) REQUIRE(flat.Get(cf, "nothing").ok());
    auto value = [](int i, size_t size) {
      return std::string(size, static_cast<char>('a' + i % 26));
    };
    const int n = 2000;
    std::vector<std::string> order;
    for (int i = 0; i < n; ++i) {
      std::string key = "key" + std::to_string(i);
      std::string v = value(i, i % 7 == 0 ? 100000 : 50 + i % 13);
      flat.Put(cf, key, v);
      want.Put(cf, key, v);
      order.push_back(key);
    }
    for (int i = 0; i < n; ++i) {
      std::string key = "key" + std::to_string(i);
      std::string v;
      if (i % 5 == 0) {
        v = value(i + 1, 150000 + i);
      } else if (i % 7 == 0) {
        v = value(i + 2, want.map(cf).find(key)->second.size());
      } else {
        continue;
      }
      // Buffered, every Put has its own record, and the last one is kept.
      if (i % 5 == 0 || buffered) {
        order.erase(std::find(order.begin(), order.end(), key));
        order.push_back(key);
      }
      flat.Put(cf, key, v);
      want.Put(cf, key, v);
    }
    CHECK(flat.size(cf) == static_cast<size_t>(n));
    size_t i = 0;
    flat.ForEach(cf, [&](FlatState::Ref ref, const FlatState::Item& item) {
      REQUIRE(i < order.size());
      REQUIRE(item.key == order[i]);
      CHECK(item.present);
      CHECK(item.value == want.map(cf).find(item.key)->second);
      CHECK(flat.Find(cf, item.key) == ref);
      ++i;
    });
    CHECK(i == order.size());
    CHECK(ScanAll(flat, cf, false) == ScanAll(want, cf, false));
  }
}

TEST_CASE("FlatState walks past the unwritten rest of a chunk", "[flat_state]") {
  // The record arena's first chunk (8 MiB, its first 8 bytes unused) filled to exactly 8 bytes
  // short of its end: 524,287 records of 16 bytes (8-byte header, 8-byte key). The next record
  // (24 bytes: an 8-byte value too) starts the second chunk; the walk must step over those 8
  // bytes, never written (zero). Both while buffering and once indexed.
  for (bool buffered : {true, false}) {
    INFO("buffered " << buffered);
    FlatState flat;
    const Cf cf = Cf::kLots;
    if (!buffered) REQUIRE(flat.Get(cf, "nothing").ok());
    const int small = 524'287, n = small + 3;
    auto key = [](int i) {
      std::string k = std::to_string(i);
      return std::string(8 - k.size(), '0') + k;
    };
    for (int i = 0; i < n; ++i) flat.Put(cf, key(i), i < small ? "" : "12345678");
    int i = 0, wrong = 0;
    flat.ForEach(cf, [&](FlatState::Ref, const FlatState::Item& item) {
      if (item.key != key(i++)) ++wrong;
    });
    CHECK(wrong == 0);
    CHECK(i == n);
    CHECK(flat.size(cf) == static_cast<size_t>(n));
    std::vector<std::string> keys = {key(0), key(small), key(n - 1), "absent"};
    std::vector<std::string_view> views(keys.begin(), keys.end());
    std::vector<FlatState::Ref> refs(views.size());
    flat.FindMany(cf, views.data(), views.size(), refs.data());
    for (size_t j = 0; j < views.size(); ++j) {
      CHECK(refs[j] == flat.Find(cf, views[j]).value_or(0));
    }
    CHECK(refs[3] == 0);
    CHECK(flat.At(cf, refs[2]).value == "12345678");
  }
}

TEST_CASE("FlatState scans a range in order", "[flat_state]") {
  FlatState s;
  for (int i = 0; i < 100; ++i) s.Put(Cf::kLots, "k" + std::to_string(1000 + i), "v");
  s.Delete(Cf::kLots, "k1050");
  Pairs got;
  REQUIRE(s.Scan(Cf::kLots, "k1048", "k1053", true, [&](std::string_view k, std::string_view v) {
             got.emplace_back(std::string(k), std::string(v));
             return got.size() < 3;
           }).ok());
  CHECK(got == Pairs{{"k1052", "v"}, {"k1051", "v"}, {"k1049", "v"}});
}

TEST_CASE("FlatState keeps only a digest of a family it is told to", "[flat_state]") {
  FlatState s;
  const SetDigest empty = SetDigest::WithRandomKey();
  s.KeepOnlyDigest(Cf::kProgramEntries, empty.Empty());
  CHECK(s.digest(Cf::kLots) == nullptr);
  SetDigest want = empty.Empty();
  for (int i = 0; i < 1000; ++i) {
    const std::string k = "p" + std::to_string(i);
    s.Put(Cf::kProgramEntries, k, "e");
    s.Put(Cf::kLots, k, "lot");
    want.Add(k, "e");
  }
  s.Prefetch(Cf::kProgramEntries, "p1");  // does nothing
  s.Reserve(Cf::kProgramEntries, 1000);   // likewise
  REQUIRE(s.digest(Cf::kProgramEntries) != nullptr);
  CHECK(*s.digest(Cf::kProgramEntries) == want);
  CHECK(s.size(Cf::kProgramEntries) == 1000);
  CHECK(s.record_bytes(Cf::kProgramEntries) == want.bytes());
  // The other families keep their records.
  CHECK(s.size(Cf::kLots) == 1000);
  auto lot = s.Get(Cf::kLots, "p7");
  REQUIRE(lot.ok());
  CHECK(*lot == std::optional<std::string>("lot"));
}

// A family kept as a digest with reads: new keys and the last key are followed; an earlier key
// is not, and says so.
TEST_CASE("FlatState follows reads of new keys and of the last key in a digest", "[flat_state]") {
  const SetDigest empty = SetDigest::WithRandomKey();
  auto fresh = [&] {
    auto s = std::make_unique<FlatState>();
    s->KeepOnlyDigest(Cf::kIdempotency, empty.Empty(), true);
    s->Reserve(Cf::kIdempotency, 100);
    return s;
  };
  auto get = [](FlatState& s, std::string_view k) {
    auto v = s.Get(Cf::kIdempotency, k);
    REQUIRE(v.ok());
    return *v;
  };
  std::unique_ptr<FlatState> s = fresh();
  SetDigest want = empty.Empty();
  for (int i = 0; i < 1000; ++i) {
    const std::string k = "k" + std::to_string(i);
    s->Prefetch(Cf::kIdempotency, k);
    CHECK(get(*s, k) == std::nullopt);  // new
    s->Put(Cf::kIdempotency, k, "1");
    CHECK(get(*s, k) == std::optional<std::string>("1"));  // the last key
    if (i % 10 == 0) {
      s->Put(Cf::kIdempotency, k, "22");  // the last key again, another value
      want.Add(k, "22");
    } else {
      want.Add(k, "1");
    }
  }
  s->Delete(Cf::kIdempotency, "never");  // an absent key: nothing to follow
  CHECK_FALSE(s->lost_track(Cf::kIdempotency));
  CHECK(*s->digest(Cf::kIdempotency) == want);
  CHECK(s->size(Cf::kIdempotency) == 1000);

  // An earlier key, read, written or deleted: not followed.
  s->Put(Cf::kIdempotency, "k5", "x");
  CHECK(s->lost_track(Cf::kIdempotency));
  s = fresh();
  s->Put(Cf::kIdempotency, "a", "1");
  s->Put(Cf::kIdempotency, "b", "1");
  CHECK(get(*s, "a") == std::nullopt);
  CHECK(s->lost_track(Cf::kIdempotency));
  s = fresh();
  s->Put(Cf::kIdempotency, "a", "1");
  s->Delete(Cf::kIdempotency, "a");
  CHECK(s->lost_track(Cf::kIdempotency));
}

}  // namespace
}  // namespace tally
