// A randomized model test: a seeded generator drives the ledger and a small reference model side
// by side and compares every result and balance. A failing seed is printed; set TALLY_SEED to
// rerun just that seed.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "ledger/accounts.h"
#include "ledger/ledger.h"
#include "tests/ledger/ledger_test_util.h"
#include "tests/test_util.h"

namespace tally {
namespace {

struct Op {
  std::string customer;
  int64_t points;
  std::string idem;
  std::string order;
};

struct Model {
  std::map<std::string, int64_t> balances;
  std::map<std::string, std::pair<std::string, uint64_t>> idem;  // key -> (request, id)
  std::set<std::string> orders;
  uint64_t next_id = 0;

  // Expected outcome: nullopt for success (with id), or the reason of the refusal.
  struct Outcome {
    bool ok;
    std::string reason;
    uint64_t id;
    bool replayed;
  };
  Outcome Apply(const Op& op) {
    std::string request = op.customer + "/" + std::to_string(op.points) + "/" + op.order;
    auto it = idem.find(op.idem);
    if (it != idem.end()) {
      if (it->second.first != request) return {false, "idempotency_key_reused", 0, false};
      return {true, "", it->second.second, true};
    }
    if (op.points < 0 && balances[op.customer] + op.points < 0) {
      return {false, "insufficient_points", 0, false};
    }
    if (!op.order.empty() && orders.count(op.order))
      return {false, "order_already_awarded", 0, false};
    balances[op.customer] += op.points;
    if (!op.order.empty()) orders.insert(op.order);
    idem[op.idem] = {request, next_id};
    return {true, "", next_id++, false};
  }
};

void RunSeed(uint64_t seed, int ops) {
  INFO("seed " << seed << " (rerun with TALLY_SEED=" << seed << ")");
  testing::TempDir dir;
  ManualClock clock(1'700'000'000'000'000);
  LedgerOptions o;
  o.dir = dir.path();
  o.clock = &clock;
  auto ledger = Ledger::Open(o);
  REQUIRE(ledger.ok());
  Model model;
  std::mt19937_64 rng(seed);
  std::vector<Op> history;
  for (int i = 0; i < ops; ++i) {
    Op op;
    int kind = static_cast<int>(rng() % 10);
    if (kind == 0 && !history.empty()) {
      op = history[rng() % history.size()];  // a retry of an earlier request
    } else if (kind == 1 && !history.empty()) {
      op = history[rng() % history.size()];  // an earlier key with another request
      op.points += 1;
    } else {
      op.customer = "c" + std::to_string(rng() % 5);
      op.points = static_cast<int64_t>(rng() % 200) - 80;
      if (op.points == 0) op.points = 1;
      op.idem = "k" + std::to_string(i);
      if (rng() % 4 == 0) op.order = "o" + std::to_string(rng() % 40);
    }
    history.push_back(op);
    clock.Advance(static_cast<int64_t>(rng() % 1000));
    auto want = model.Apply(op);
    auto got =
        (*ledger)->Append(testing::Transfer("acme", op.customer, op.points, op.idem, op.order));
    INFO("op " << i << ": " << op.customer << " " << op.points << " key " << op.idem << " order "
               << op.order);
    REQUIRE(got.ok() == want.ok);
    if (want.ok) {
      CHECK(got->first_id == want.id);
      CHECK(got->replayed == want.replayed);
    } else {
      CHECK(got.status().reason() == want.reason);
    }
  }
  for (const auto& [customer, balance] : model.balances) {
    CHECK(testing::Balance(**ledger, CustomerAccount("acme", customer, acct::kAvailable)) ==
          balance);
  }
  CHECK((*ledger)->size() == model.next_id);
}

}  // namespace

TEST_CASE("The ledger agrees with a reference model over random seeds", "[ledger][model]") {
  if (const char* s = std::getenv("TALLY_SEED")) {
    RunSeed(std::strtoull(s, nullptr, 10), 500);
    return;
  }
  for (uint64_t seed = 1; seed <= 20; ++seed) RunSeed(seed, 300);
}

}  // namespace tally
