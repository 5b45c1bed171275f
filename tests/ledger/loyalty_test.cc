// Loyalty under concurrent writers: every decision is made on the ledger's one writer thread
// against the state left by every earlier decision, so racing requests cannot overspend a
// balance, refer a friend twice or use a code more often than allowed.
#include "ledger/loyalty.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <latch>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ledger/accounts.h"
#include "ledger/clock.h"
#include "ledger/coding.h"
#include "ledger/hash.h"
#include "ledger/keys.h"
#include "ledger/ledger.h"
#include "ledger/loyalty_internal.h"
#include "ledger/records.h"
#include "ledger/store.h"
#include "tests/test_util.h"

namespace tally {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000'000;

struct Fixture {
  testing::TempDir dir;
  ManualClock clock{kT0};
  std::unique_ptr<Ledger> ledger;
  std::unique_ptr<Loyalty> loyalty;

  explicit Fixture(std::optional<ReferralSettings> referral = std::nullopt) {
    LedgerOptions o;
    o.dir = dir.path();
    o.clock = &clock;
    auto opened = Ledger::Open(o);
    REQUIRE(opened.ok());
    ledger = std::move(opened).value();
    loyalty = std::make_unique<Loyalty>(ledger.get(), LoyaltyOptions{std::string(32, 's')});
    ProgramConfig p;
    p.id = "acme";
    p.name = "Acme";
    p.referral = referral;
    REQUIRE(loyalty->CreateProgram(Ctx("create"), p).ok());
  }

  static WriteContext Ctx(const std::string& key) { return WriteContext{"k1", key, Sha256(key)}; }

  // No assertions in here: the watcher thread calls it (INT64_MIN for a failed read).
  int64_t Balance(const std::string& customer, std::string_view kind) const {
    auto v = ledger->Read()->GetI64(Cf::kBalances, CustomerAccount("acme", customer, kind));
    return v.ok() ? *v : INT64_MIN;
  }
};

// Runs fn(i) on n threads released together; returns each call's refusal reason ("" for ok).
template <typename Fn>
std::vector<std::string> Race(int n, Fn fn) {
  std::vector<std::string> reasons(static_cast<size_t>(n));
  std::latch start(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      Result<WriteResult> r = fn(i);
      reasons[static_cast<size_t>(i)] = r.ok() ? "" : r.status().reason();
    });
  }
  for (std::thread& t : threads) t.join();
  return reasons;
}

std::map<std::string, int> Count(const std::vector<std::string>& reasons) {
  std::map<std::string, int> out;
  for (const std::string& r : reasons) ++out[r];
  return out;
}

TEST_CASE("Fifty concurrent redemptions of 10 points from 100 let exactly ten through",
          "[loyalty][concurrency]") {
  Fixture f;
  EarnRequest earn;
  earn.customer = "alice";
  earn.points = 100;
  REQUIRE(f.loyalty->Earn(Fixture::Ctx("earn"), "acme", earn).ok());

  // A reader watches the balance all along: it must never go below zero.
  std::atomic<bool> done{false};
  std::atomic<int64_t> lowest{100};
  std::thread watcher([&] {
    while (!done.load()) {
      int64_t b = f.Balance("alice", acct::kAvailable);
      if (b < lowest.load()) lowest.store(b);
    }
  });
  auto reasons = Race(50, [&](int i) {
    RedeemRequest r;
    r.customer = "alice";
    r.points = 10;
    return f.loyalty->Redeem(Fixture::Ctx("redeem-" + std::to_string(i)), "acme", r);
  });
  done.store(true);
  watcher.join();

  auto counts = Count(reasons);
  CHECK(counts[""] == 10);
  CHECK(counts["insufficient_points"] == 40);
  CHECK(counts.size() == 2);
  CHECK(lowest.load() >= 0);
  CHECK(f.Balance("alice", acct::kAvailable) == 0);
  auto view = f.loyalty->GetCustomer("acme", "alice");
  REQUIRE(view.ok());
  CHECK(view->lifetime_redeemed == 100);
  auto lots = f.loyalty->CustomerLots("acme", "alice", "", 50);
  REQUIRE(lots.ok());
  CHECK(lots->items.empty());
}

TEST_CASE("Thirty concurrent referrals of the same friend with one code let exactly one through",
          "[loyalty][concurrency]") {
  ReferralSettings rs;
  rs.max_uses = 100;
  Fixture f(rs);
  auto code = f.loyalty->GetOrCreateCode(Fixture::Ctx("code"), "acme", "ann");
  REQUIRE(code.ok());

  auto reasons = Race(30, [&](int i) {
    return f.loyalty->Refer(Fixture::Ctx("refer-" + std::to_string(i)), "acme", code->code.code,
                            "fred", "");
  });

  auto counts = Count(reasons);
  CHECK(counts[""] == 1);
  CHECK(counts["already_referred"] == 29);
  CHECK(counts.size() == 2);
  CHECK(f.Balance("fred", acct::kAvailable) == rs.friend_points);
  CHECK(f.Balance("ann", acct::kPending) == rs.advocate_points);
  auto looked = f.loyalty->GetCode("k1", "acme", code->code.code);
  REQUIRE(looked.ok());
  CHECK(looked->uses == 1);
  auto fred = f.loyalty->GetCustomer("acme", "fred");
  REQUIRE(fred.ok());
  CHECK(fred->referred_by == "ann");
}

TEST_CASE("A code with three uses, one spent, lets exactly two of thirty concurrent friends in",
          "[loyalty][concurrency]") {
  ReferralSettings rs;
  rs.max_uses = 3;
  Fixture f(rs);
  auto code = f.loyalty->GetOrCreateCode(Fixture::Ctx("code"), "acme", "ann");
  REQUIRE(code.ok());
  REQUIRE(code->code.max_uses == 3);
  REQUIRE(f.loyalty->Refer(Fixture::Ctx("first"), "acme", code->code.code, "early", "").ok());

  auto reasons = Race(30, [&](int i) {
    return f.loyalty->Refer(Fixture::Ctx("refer-" + std::to_string(i)), "acme", code->code.code,
                            "friend" + std::to_string(i), "");
  });

  auto counts = Count(reasons);
  CHECK(counts[""] == 2);
  CHECK(counts["code_exhausted"] == 28);
  CHECK(counts.size() == 2);
  auto looked = f.loyalty->GetCode("k1", "acme", code->code.code);
  REQUIRE(looked.ok());
  CHECK(looked->uses == 3);
  CHECK(f.Balance("ann", acct::kPending) == 3 * rs.advocate_points);
  int referred = 0;
  for (int i = 0; i < 30; ++i) {
    auto view = f.loyalty->GetCustomer("acme", "friend" + std::to_string(i));
    if (view.ok()) {
      ++referred;
      CHECK(view->available == rs.friend_points);
    }
  }
  CHECK(referred == 2);
}

// Customer views are cached (LoyaltyOptions::customer_cache_entries) until a commit group changes
// the customer. A Loyalty without the cache over the same ledger is the oracle.
bool SameView(const CustomerView& a, const CustomerView& b) {
  return a.program == b.program && a.customer == b.customer && a.available == b.available &&
         a.pending == b.pending && a.reserved == b.reserved &&
         a.lifetime_earned == b.lifetime_earned && a.lifetime_redeemed == b.lifetime_redeemed &&
         a.lifetime_expired == b.lifetime_expired && a.next_expiry == b.next_expiry &&
         a.referral_code == b.referral_code && a.referred_by == b.referred_by;
}

TEST_CASE("A cached customer view never misses an acknowledged change", "[loyalty][concurrency]") {
  Fixture f;
  // Two readers keep the cache filled from whatever snapshot they hold while the writes land.
  std::atomic<bool> done{false};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      while (!done.load()) (void)f.loyalty->GetCustomer("acme", "alice");
    });
  }
  int stale = 0;
  for (int i = 1; i <= 300; ++i) {
    EarnRequest earn;
    earn.customer = "alice";
    earn.points = 1;
    REQUIRE(f.loyalty->Earn(Fixture::Ctx("earn-" + std::to_string(i)), "acme", earn).ok());
    auto view = f.loyalty->GetCustomer("acme", "alice");
    REQUIRE(view.ok());
    if (view->lifetime_earned != i || view->available != i) ++stale;
  }
  done.store(true);
  for (std::thread& t : readers) t.join();
  CHECK(stale == 0);
}

TEST_CASE("Cached customer views follow every kind of change, including other customers' requests",
          "[loyalty]") {
  ReferralSettings rs;
  rs.max_uses = 10;
  Fixture f(rs);
  Loyalty uncached(f.ledger.get(), LoyaltyOptions{std::string(32, 's'), 0});
  std::vector<std::string> customers = {"ann", "fred", "gus"};
  int step = 0;
  auto check = [&](const std::string& what) {
    ++step;
    for (const std::string& c : customers) {
      for (int twice = 0; twice < 2; ++twice) {  // a miss fills the cache, the next read hits it
        auto got = f.loyalty->GetCustomer("acme", c);
        auto want = uncached.GetCustomer("acme", c);
        INFO(what << ": " << c);
        REQUIRE(got.ok() == want.ok());
        if (got.ok()) CHECK(SameView(*got, *want));
      }
    }
  };
  check("empty");
  EarnRequest earn;
  earn.customer = "ann";
  earn.points = 500;
  earn.expires_at_us = kT0 + 10 * kMicrosPerDay;
  REQUIRE(f.loyalty->Earn(Fixture::Ctx("e1"), "acme", earn).ok());
  check("earn");
  earn.points = 70;
  earn.expires_at_us = kT0 + 5 * kMicrosPerDay;
  REQUIRE(f.loyalty->Earn(Fixture::Ctx("e2"), "acme", earn).ok());
  check("earn expiring sooner");
  auto code = f.loyalty->GetOrCreateCode(Fixture::Ctx("code"), "acme", "ann");
  REQUIRE(code.ok());
  check("code");
  REQUIRE(f.loyalty->Refer(Fixture::Ctx("refer"), "acme", code->code.code, "fred", "").ok());
  check("referral: the advocate's view changes by the friend's request");
  RedeemRequest redeem;
  redeem.customer = "ann";
  redeem.points = 100;
  REQUIRE(f.loyalty->Redeem(Fixture::Ctx("r1"), "acme", redeem).ok());
  check("redeem");
  REQUIRE(f.loyalty->Adjust(Fixture::Ctx("a1"), "acme", "gus", 9, "goodwill").ok());
  check("adjust");
  f.clock.Advance(6 * kMicrosPerDay);
  REQUIRE(f.loyalty->RunDueWork().ok());
  check("expiry by the due work");
  f.clock.Advance(rs.advocate_pending_days * kMicrosPerDay);
  REQUIRE(f.loyalty->RunDueWork().ok());
  check("pending window ended by the due work");
  CHECK(step == 9);
}

TEST_CASE("A revoked API key stops working at once, however often it was used before",
          "[loyalty][concurrency]") {
  Fixture f;
  for (int round = 0; round < 20; ++round) {
    ApiKeyRequest r;
    r.role = Role::kCheckout;
    r.name = "till";
    auto created = f.loyalty->CreateApiKey(Fixture::Ctx("key-" + std::to_string(round)), r);
    REQUIRE(created.ok());
    const std::string key = created->key;
    auto first = f.loyalty->Authenticate(key);
    REQUIRE(first.ok());
    REQUIRE(first->has_value());
    // Two readers keep the key cached from whatever snapshot they hold while it is revoked.
    std::atomic<bool> done{false};
    std::vector<std::thread> readers;
    for (int t = 0; t < 2; ++t) {
      readers.emplace_back([&] {
        while (!done.load()) (void)f.loyalty->Authenticate(key);
      });
    }
    REQUIRE(
        f.loyalty->RevokeApiKey(Fixture::Ctx("revoke-" + std::to_string(round)), created->record.id)
            .ok());
    auto after = f.loyalty->Authenticate(key);
    done.store(true);
    for (std::thread& t : readers) t.join();
    REQUIRE(after.ok());
    CHECK_FALSE(after->has_value());
  }
}

// Writes one key straight into the store, behind the ledger (no entry, no change mark): what a
// cached answer then says shows whether it came from memory.
void WriteBehind(Ledger& ledger, Cf cf, const std::string& key, std::optional<std::string> value) {
  StoreBatch batch(*ledger.store());
  if (value) {
    batch.Put(cf, key, *value);
  } else {
    batch.Delete(cf, key);
  }
  REQUIRE(ledger.store()->Write(batch).ok());
}

TEST_CASE("Customer views and API keys are answered from memory until they change", "[loyalty]") {
  Fixture f;
  EarnRequest earn;
  earn.customer = "alice";
  earn.points = 100;
  REQUIRE(f.loyalty->Earn(Fixture::Ctx("e1"), "acme", earn).ok());
  REQUIRE(f.loyalty->GetCustomer("acme", "alice")->available == 100);
  ApiKeyRequest r;
  r.name = "till";
  auto created = f.loyalty->CreateApiKey(Fixture::Ctx("key"), r);
  REQUIRE(created.ok());
  REQUIRE(f.loyalty->Authenticate(created->key)->has_value());

  // Behind the ledger: alice's balance changes and the key's hash index goes. A commit that
  // touches neither (bob's earn) gives reads a new snapshot that shows both.
  WriteBehind(*f.ledger, Cf::kBalances, CustomerAccount("acme", "alice", acct::kAvailable),
              EncodeI64(999));
  WriteBehind(*f.ledger, Cf::kObjects,
              ObjectKey(ObjectKind::kApiKeyHash, "", AsBytes(created->record.key_hash)),
              std::nullopt);
  earn.customer = "bob";
  REQUIRE(f.loyalty->Earn(Fixture::Ctx("e2"), "acme", earn).ok());
  Loyalty fresh(f.ledger.get(), LoyaltyOptions{std::string(32, 's')});
  CHECK(fresh.GetCustomer("acme", "alice")->available == 999);
  CHECK_FALSE(fresh.Authenticate(created->key)->has_value());
  // The cached answers are the ones read before.
  CHECK(f.loyalty->GetCustomer("acme", "alice")->available == 100);
  CHECK(f.loyalty->Authenticate(created->key)->has_value());

  // A commit that changes alice, or any key, ends them.
  earn.customer = "alice";
  earn.points = 1;
  REQUIRE(f.loyalty->Earn(Fixture::Ctx("e3"), "acme", earn).ok());
  CHECK(f.loyalty->GetCustomer("acme", "alice")->available == 1000);
  ApiKeyRequest other;
  other.name = "other";
  REQUIRE(f.loyalty->CreateApiKey(Fixture::Ctx("key2"), other).ok());
  CHECK_FALSE(f.loyalty->Authenticate(created->key)->has_value());
}

TEST_CASE("A full read cache makes room by dropping old entries, not the newest ones",
          "[loyalty]") {
  ReadCache<int> cache(160);  // 10 entries in each of 16 shards
  for (int i = 0; i < 1160; ++i) cache.Put("k" + std::to_string(i), 1, 0, i);
  int first_kept = 0, last_kept = 0;
  for (int i = 0; i < 160; ++i) first_kept += cache.Get("k" + std::to_string(i), 0).has_value();
  for (int i = 1000; i < 1160; ++i) {
    last_kept += cache.Get("k" + std::to_string(i), 0).has_value();
  }
  CHECK(first_kept < 40);  // the first 160 were pushed out by 1000 later ones
  CHECK(last_kept > 60);   // of the newest 160, most are still there
  CHECK(last_kept <= 160);
  CHECK(cache.Get("k1159", 0) == std::optional<int>(1159));
  CHECK_FALSE(cache.Get("k1159", 2).has_value());  // changed after the read that kept it
}

}  // namespace
}  // namespace tally
