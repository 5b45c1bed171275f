// FlatState against MemoryState: the same operations give the same state, whether a column
// family is read from the start or only after many writes (its Puts buffered until then), and
// whatever room was reserved in it.
#include "ledger/flat_state.h"

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

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
    // Column families whose first read comes late exercise the buffered Puts.
    const Cf cfs[] = {Cf::kBalances, Cf::kLots, Cf::kCustomerEntries};
    const int first_read = static_cast<int>(rng() % 3000);
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
      if (what < 6) {
        flat.Put(cf, key, value);
        want.Put(cf, key, value);
      } else if (what < 8) {
        flat.Delete(cf, key);
        want.Delete(cf, key);
      } else if (op >= first_read) {
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
      CHECK(flat.written(cf) >= flat.slots(cf));
      size_t present = 0;
      for (size_t i = 0; i < flat.slots(cf); ++i) {
        FlatState::Item item = flat.At(cf, i);
        REQUIRE(flat.Find(cf, item.key) == i);
        if (!item.present) {
          CHECK(want.map(cf).count(std::string(item.key)) == 0);
          continue;
        }
        ++present;
        auto it = want.map(cf).find(item.key);
        REQUIRE(it != want.map(cf).end());
        CHECK(it->second == item.value);
      }
      CHECK(present == want.map(cf).size());
      CHECK_FALSE(flat.Find(cf, "never put").has_value());
    }
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

}  // namespace
}  // namespace tally
