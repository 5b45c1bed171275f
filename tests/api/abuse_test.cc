// Abuse tests at the router, without sockets: what a dishonest or careless client can try through
// the API (racing writes, guessing codes, smuggling fields into bodies, stepping outside its
// role) and what it gets. docs/SECURITY.md names these tests as the evidence of its promises.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "api/router.h"
#include "ledger/clock.h"
#include "ledger/hash.h"
#include "ledger/keys.h"
#include "ledger/loyalty_internal.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using Json = nlohmann::json;
using testing::TempDir;

constexpr int64_t kStart = 1'767'225'600 * kMicrosPerSecond;  // 2026-01-01T00:00:00Z
const std::string kAdminKey = "abuse-admin-key";
constexpr std::string_view kCrockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

// A ledger, loyalty and router over a temporary directory; Handle may be called from any thread.
class Server {
 public:
  Server() : clock_(kStart) {
    LedgerOptions o;
    o.dir = dir_.path();
    o.clock = &clock_;
    auto ledger = Ledger::Open(o);
    REQUIRE(ledger.ok());
    ledger_ = std::move(ledger).value();
    loyalty_ = std::make_unique<Loyalty>(ledger_.get(), LoyaltyOptions{std::string(32, 's')});
    RouterOptions ro;
    ro.admin_key = kAdminKey;
    router_ = std::make_unique<Router>(loyalty_.get(), ro);
  }

  // A POST gets a fresh Idempotency-Key unless `idem` is given. Thread-safe.
  HttpResponse Send(const std::string& method, const std::string& target,
                    const std::string& body = "", const std::string& key = kAdminKey,
                    const std::string& idem = "") {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.remote_address = "127.0.0.1";
    if (!key.empty()) r.headers.emplace_back("authorization", "Bearer " + key);
    if (method == "POST") {
      r.headers.emplace_back("idempotency-key",
                             idem.empty() ? "auto-" + std::to_string(++requests_) : idem);
    }
    return router_->Handle(r);
  }
  HttpResponse Get(const std::string& target, const std::string& key = kAdminKey) {
    return Send("GET", target, "", key);
  }
  HttpResponse Post(const std::string& target, const std::string& body,
                    const std::string& key = kAdminKey, const std::string& idem = "") {
    return Send("POST", target, body, key, idem);
  }

  std::string MakeKey(const std::string& role, const std::string& program = "",
                      const std::string& customer = "") {
    Json body = {{"role", role}, {"name", role + " key"}};
    if (!program.empty()) body["program"] = program;
    if (!customer.empty()) body["customer"] = customer;
    HttpResponse r = Post("/v1/api-keys", body.dump());
    REQUIRE(r.status == 201);
    return Json::parse(r.body)["key"];
  }

  void MakeProgram(const std::string& id, Json extra = Json::object()) {
    Json body = {{"id", id}, {"name", "Program " + id}, {"referral", Json::object()}};
    body.update(extra);
    REQUIRE(Post("/v1/programs", body.dump()).status == 201);
  }

  uint64_t Earn(const std::string& program, const std::string& customer, int64_t points) {
    HttpResponse r = Post("/v1/programs/" + program + "/earn",
                          Json({{"customer", customer}, {"points", points}}).dump());
    REQUIRE(r.status == 201);
    return Json::parse(r.body)["entry"]["id"];
  }

  std::string Code(const std::string& program, const std::string& advocate) {
    HttpResponse r =
        Post("/v1/programs/" + program + "/referral-codes", Json({{"advocate", advocate}}).dump());
    REQUIRE((r.status == 201 || r.status == 200));
    return Json::parse(r.body)["code"];
  }

  Json Customer(const std::string& program, const std::string& customer) {
    HttpResponse r = Get("/v1/programs/" + program + "/customers/" + customer);
    REQUIRE(r.status == 200);
    return Json::parse(r.body);
  }

  Ledger& ledger() { return *ledger_; }
  ManualClock& clock() { return clock_; }

 private:
  TempDir dir_;
  ManualClock clock_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Loyalty> loyalty_;
  std::unique_ptr<Router> router_;
  std::atomic<int> requests_{0};
};

std::string ErrorCode(const HttpResponse& r) {
  Json j = Json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("code") ? j["code"].get<std::string>() : "";
}

const std::string* Header(const HttpResponse& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

// Runs fn(i) for i in [0, n) on n threads that start together.
template <typename Fn>
void RunConcurrently(int n, Fn fn) {
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      ++ready;
      while (ready.load() < n) std::this_thread::yield();
      fn(i);
    });
  }
  for (std::thread& t : threads) t.join();
}

// Counts responses by status and error code, from any thread.
class Outcomes {
 public:
  void Add(const HttpResponse& r) {
    std::lock_guard<std::mutex> lock(mu_);
    ++by_[std::to_string(r.status) + (r.status >= 400 ? " " + ErrorCode(r) : "")];
  }
  int Count(const std::string& what) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_.find(what);
    return it == by_.end() ? 0 : it->second;
  }
  std::string Describe() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& [k, n] : by_) out += k + ": " + std::to_string(n) + "; ";
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, int> by_;
};

// The balance_after of `account` in every posting of the log that touches it.
std::vector<int64_t> BalancesAfter(Ledger& ledger, const std::string& account) {
  std::vector<int64_t> out;
  for (uint64_t id = 0; id < ledger.size(); ++id) {
    auto e = ledger.GetEntry(id);
    REQUIRE(e.ok());
    for (const Posting& p : e->postings) {
      if (p.account == account) out.push_back(p.balance_after);
    }
  }
  return out;
}

int CrockfordIndex(char c) {
  size_t at = kCrockford.find(c);
  return at == std::string_view::npos ? -1 : static_cast<int>(at);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Races.

TEST_CASE("Concurrent redemptions never spend more than the balance", "[abuse]") {
  Server s;
  s.MakeProgram("acme");
  std::string checkout = s.MakeKey("checkout");
  s.Earn("acme", "alice", 1000);

  // 16 threads x 12 attempts of 10 points (a third of them reservations): 1920 points asked of
  // a balance of 1000.
  Outcomes results;
  std::atomic<int> reserved{0};
  RunConcurrently(16, [&](int t) {
    for (int i = 0; i < 12; ++i) {
      bool hold = (t + i) % 3 == 0;
      Json body = {{"customer", "alice"}, {"points", 10}, {"hold", hold}};
      HttpResponse r = s.Post("/v1/programs/acme/redeem", body.dump(), checkout);
      results.Add(r);
      if (r.status == 201 && hold) ++reserved;
    }
  });
  INFO(results.Describe());
  CHECK(results.Count("201") == 100);
  CHECK(results.Count("422 insufficient_points") == 92);

  Json alice = s.Customer("acme", "alice");
  CHECK(alice["available"] == 0);
  CHECK(alice["reserved"] == 10 * reserved.load());
  CHECK(alice["lifetime_redeemed"] == 10 * (100 - reserved.load()));
  // Every balance the log ever recorded for the account stayed within [0, 1000].
  std::vector<int64_t> balances = BalancesAfter(s.ledger(), "acme:customer:alice:available");
  REQUIRE(balances.size() == 101);
  for (int64_t b : balances) CHECK((b >= 0 && b <= 1000));
}

TEST_CASE("A request sent many times at once with one Idempotency-Key is applied once", "[abuse]") {
  Server s;
  s.MakeProgram("acme");
  std::string checkout = s.MakeKey("checkout");
  s.Earn("acme", "alice", 100);
  uint64_t size = s.ledger().size();

  std::vector<HttpResponse> responses(12);
  RunConcurrently(12, [&](int t) {
    responses[t] = s.Post("/v1/programs/acme/redeem", R"({"customer":"alice","points":60})",
                          checkout, "double-click");
  });
  int replayed = 0;
  for (const HttpResponse& r : responses) {
    REQUIRE(r.status == 201);
    CHECK(r.body == responses[0].body);
    if (const std::string* h = Header(r, "Idempotency-Replayed"); h && *h == "true") ++replayed;
  }
  CHECK(replayed == 11);
  CHECK(s.ledger().size() == size + 1);
  CHECK(s.Customer("acme", "alice")["available"] == 40);
}

TEST_CASE("Concurrent referrals into one code never exceed its max_uses", "[abuse]") {
  Server s;
  s.MakeProgram("acme", {{"referral",
                          {{"max_uses", 5},
                           {"advocate_points", 100},
                           {"friend_points", 50},
                           {"advocate_pending_days", 30}}}});
  std::string checkout = s.MakeKey("checkout");
  std::string code = s.Code("acme", "alice");

  Outcomes results;
  RunConcurrently(24, [&](int t) {
    Json body = {{"code", code}, {"friend", "friend-" + std::to_string(t)}};
    results.Add(s.Post("/v1/programs/acme/referrals", body.dump(), checkout));
  });
  INFO(results.Describe());
  CHECK(results.Count("201") == 5);
  CHECK(results.Count("422 code_exhausted") == 19);

  HttpResponse got = s.Get("/v1/programs/acme/referral-codes/" + code, checkout);
  REQUIRE(got.status == 200);
  CHECK(Json::parse(got.body)["uses"] == 5);
  Json alice = s.Customer("acme", "alice");
  CHECK(alice["pending"] == 5 * 100);
  CHECK(alice["available"] == 0);
}

TEST_CASE("One friend referred at once through many codes is rewarded once", "[abuse]") {
  Server s;
  s.MakeProgram("acme", {{"referral", {{"max_uses", 100}}}});
  std::string checkout = s.MakeKey("checkout");
  std::vector<std::string> codes;
  for (int i = 0; i < 8; ++i) codes.push_back(s.Code("acme", "advocate-" + std::to_string(i)));

  Outcomes results;
  RunConcurrently(16, [&](int t) {
    Json body = {{"code", codes[t % codes.size()]}, {"friend", "mallory"}};
    results.Add(s.Post("/v1/programs/acme/referrals", body.dump(), checkout));
  });
  INFO(results.Describe());
  CHECK(results.Count("201") == 1);
  CHECK(results.Count("409 already_referred") == 15);
  CHECK(s.Customer("acme", "mallory")["available"] == 250);

  // Nor can an advocate refer themselves, or a friend come back under another code later.
  CHECK(ErrorCode(s.Post("/v1/programs/acme/referrals",
                         Json({{"code", codes[0]}, {"friend", "advocate-0"}}).dump(), checkout)) ==
        "self_referral");
  CHECK(ErrorCode(s.Post("/v1/programs/acme/referrals",
                         Json({{"code", codes[1]}, {"friend", "mallory"}}).dump(), checkout)) ==
        "already_referred");
  // A customer with ledger history is no new friend.
  s.Earn("acme", "oldtimer", 5);
  CHECK(ErrorCode(s.Post("/v1/programs/acme/referrals",
                         Json({{"code", codes[2]}, {"friend", "oldtimer"}}).dump(), checkout)) ==
        "not_a_new_customer");
}

// ---------------------------------------------------------------------------------------------
// Referral codes: guessing and enumeration.

TEST_CASE("Guessing codes is rate limited per key after 20 failures a minute", "[abuse]") {
  Server s;
  s.MakeProgram("acme");
  std::string guesser = s.MakeKey("checkout");
  std::string honest = s.MakeKey("checkout");
  std::string code = s.Code("acme", "alice");
  const std::string get = "/v1/programs/acme/referral-codes/";
  const std::string refer = "/v1/programs/acme/referrals";

  // 20 failed look-ups: well-formed codes with a wrong check symbol, well-formed codes that do
  // not exist, junk; through GET and through referrals.
  for (int i = 0; i < 20; ++i) {
    std::string guess = code;
    guess[static_cast<size_t>(i % 11)] = guess[static_cast<size_t>(i % 11)] == 'Z' ? 'Y' : 'Z';
    if (i % 4 == 3) guess = "NOT-A-CODE-" + std::to_string(i);
    HttpResponse r = i % 2 == 0
                         ? s.Get(get + guess, guesser)
                         : s.Post(refer, Json({{"code", guess}, {"friend", "f"}}).dump(), guesser);
    INFO(i << " " << guess);
    CHECK(r.status == 404);
    CHECK(ErrorCode(r) == "unknown_code");
  }
  // The 21st look-up is refused, even of the right code, by either route.
  HttpResponse limited = s.Get(get + code, guesser);
  CHECK(limited.status == 429);
  CHECK(ErrorCode(limited) == "rate_limited");
  REQUIRE(Header(limited, "Retry-After") != nullptr);
  CHECK(*Header(limited, "Retry-After") == "60");
  CHECK(ErrorCode(s.Post(refer, Json({{"code", code}, {"friend", "f"}}).dump(), guesser)) ==
        "rate_limited");
  CHECK(s.Customer("acme", "alice")["pending"] == 0);

  // Another key is not affected.
  CHECK(s.Get(get + code, honest).status == 200);
  CHECK(ErrorCode(s.Get(get + "0000-0000-0000", honest)) == "unknown_code");

  // Refused look-ups do not extend the window: a minute after the failures the key works again.
  s.clock().Advance(61 * kMicrosPerSecond);
  CHECK(s.Get(get + code, guesser).status == 200);
}

TEST_CASE("A burst of concurrent guesses from one key is cut off near the limit", "[abuse]") {
  Server s;
  s.MakeProgram("acme");
  std::string guesser = s.MakeKey("checkout");
  constexpr int kThreads = 8;
  Outcomes results;
  RunConcurrently(kThreads, [&](int t) {
    for (int i = 0; i < 10; ++i) {
      results.Add(
          s.Get("/v1/programs/acme/referral-codes/GUESS" + std::to_string(t * 100 + i), guesser));
    }
  });
  INFO(results.Describe());
  // The limit is checked before a look-up and the failure counted after it, so look-ups in
  // flight together may each pass the check (docs/SECURITY.md): at most one per thread more.
  CHECK(results.Count("404 unknown_code") >= 20);
  CHECK(results.Count("404 unknown_code") < 20 + kThreads);
  CHECK(results.Count("429 rate_limited") == kThreads * 10 - results.Count("404 unknown_code"));
}

TEST_CASE("Referral codes are not enumerable", "[abuse]") {
  Server s;
  s.MakeProgram("acme");
  constexpr int kCodes = 1000;
  std::vector<HttpResponse> made(kCodes);
  RunConcurrently(8, [&](int t) {
    for (int i = t; i < kCodes; i += 8) {
      made[static_cast<size_t>(i)] =
          s.Post("/v1/programs/acme/referral-codes",
                 Json({{"advocate", "adv-" + std::to_string(i)}}).dump());
    }
  });
  std::vector<std::string> codes;
  for (const HttpResponse& r : made) {
    REQUIRE(r.status == 201);
    codes.push_back(Json::parse(r.body)["code"]);
  }
  // In the order the log made them.
  std::vector<std::pair<uint64_t, std::string>> by_entry;
  for (uint64_t id = 0; id < s.ledger().size(); ++id) {
    auto e = s.ledger().GetEntry(id);
    REQUIRE(e.ok());
    if (e->type != EntryType::kReferralCode) continue;
    auto record = DecodeReferralCode(e->payload);
    REQUIRE(record.ok());
    by_entry.emplace_back(id, record->code);
  }
  REQUIRE(by_entry.size() == static_cast<size_t>(kCodes));

  // All distinct, 12 symbols of Crockford base32, each accepted as it is.
  std::set<std::string> distinct(codes.begin(), codes.end());
  CHECK(distinct.size() == static_cast<size_t>(kCodes));
  for (const std::string& c : codes) {
    INFO(c);
    REQUIRE(c.size() == 12);
    for (char ch : c) CHECK(CrockfordIndex(ch) >= 0);
    CHECK(internal::NormalizeReferralCode(c) == c);
  }

  // The check symbol rejects every single-symbol change of every code.
  int accepted = 0;
  for (const std::string& c : codes) {
    for (size_t at = 0; at < c.size(); ++at) {
      for (char sym : kCrockford) {
        if (sym == c[at]) continue;
        std::string changed = c;
        changed[at] = sym;
        if (internal::NormalizeReferralCode(changed).has_value()) ++accepted;
      }
    }
  }
  CHECK(accepted == 0);
  // And the API treats a changed code as unknown.
  std::string checkout = s.MakeKey("checkout");
  for (size_t at : {size_t{0}, size_t{5}, size_t{11}}) {
    std::string changed = codes[0];
    changed[at] = changed[at] == '7' ? '8' : '7';
    CHECK(ErrorCode(s.Get("/v1/programs/acme/referral-codes/" + changed, checkout)) ==
          "unknown_code");
  }

  // No shared prefixes beyond chance: a 6-symbol prefix is 30 random bits, so among 1000 codes
  // the expected number of pairs sharing one is 1000*999/2 / 2^30 < 0.001.
  std::map<std::string, int> prefixes;
  for (const std::string& c : codes) ++prefixes[c.substr(0, 6)];
  int sharing_pairs = 0;
  for (const auto& [p, n] : prefixes) sharing_pairs += n * (n - 1) / 2;
  CHECK(sharing_pairs <= 1);

  // Each of the 11 random positions is uniform over the 32 symbols (chi-square, 31 degrees of
  // freedom: 90 is far beyond the 1e-6 tail), and the check symbol is not constant.
  for (size_t at = 0; at < 12; ++at) {
    std::vector<int> seen(32);
    for (const std::string& c : codes) ++seen[static_cast<size_t>(CrockfordIndex(c[at]))];
    double expected = kCodes / 32.0, chi2 = 0;
    for (int n : seen) chi2 += (n - expected) * (n - expected) / expected;
    INFO("position " << at);
    CHECK(chi2 < 90.0);
  }

  // No sequence: codes made one after another are not close as numbers (55 random bits: two
  // within 2^32 of each other by chance has probability 2^-22 per pair).
  auto value = [](const std::string& c) {
    uint64_t v = 0;
    for (size_t i = 0; i < 11; ++i) v = v * 32 + static_cast<uint64_t>(CrockfordIndex(c[i]));
    return v;
  };
  int close = 0;
  for (size_t i = 1; i < by_entry.size(); ++i) {
    uint64_t a = value(by_entry[i - 1].second), b = value(by_entry[i].second);
    if ((a > b ? a - b : b - a) < (uint64_t{1} << 32)) ++close;
  }
  CHECK(close <= 1);
}

// ---------------------------------------------------------------------------------------------
// Mass assignment: fields a client may not set are refused, and nothing changes.

TEST_CASE("Bodies carrying fields the client may not set are refused and change nothing",
          "[abuse]") {
  Server s;
  s.MakeProgram("acme", {{"referral", {{"max_uses", 2}}}});
  std::string checkout = s.MakeKey("checkout");
  std::string alice_key = s.MakeKey("customer", "acme", "alice");
  uint64_t earn = s.Earn("acme", "alice", 100);
  std::string code = s.Code("acme", "alice");
  HttpResponse held = s.Post("/v1/programs/acme/redeem",
                             R"({"customer":"alice","points":10,"hold":true})", checkout);
  REQUIRE(held.status == 201);
  uint64_t hold = Json::parse(held.body)["entry"]["id"];

  struct Case {
    std::string path;
    Json body;
    std::string key;
  };
  const Json earn_body = {{"customer", "alice"}, {"points", 10}};
  const Json redeem_body = {{"customer", "alice"}, {"points", 10}};
  std::vector<Case> cases;
  auto with = [](Json body, const std::string& field, Json value) {
    body[field] = std::move(value);
    return body;
  };
  for (auto [field, value] : std::vector<std::pair<std::string, Json>>{
           {"balance", 1000000},
           {"available", 1000000},
           {"pending", 0},
           {"lifetime_earned", 5},
           {"id", 0},
           {"hold", true},
           {"state", "captured"},
           {"uses", 0},
           {"role", "admin"},
           {"key_hash", std::string(44, 'A')},
           {"actor", "env-admin"},
           {"program", "other"},
           {"postings", Json::array({{{"account", "acme:issued"}, {"points", -10}}})},
           {"created_at", "2020-01-01T00:00:00Z"},
       }) {
    cases.push_back({"/v1/programs/acme/earn", with(earn_body, field, value), checkout});
  }
  for (auto [field, value] : std::vector<std::pair<std::string, Json>>{{"balance", 0},
                                                                       {"available", 1000000},
                                                                       {"reserved", 0},
                                                                       {"id", 1},
                                                                       {"state", "captured"},
                                                                       {"role", "admin"},
                                                                       {"actor", "env-admin"}}) {
    cases.push_back({"/v1/programs/acme/redeem", with(redeem_body, field, value), checkout});
  }
  const std::string capture = "/v1/programs/acme/holds/" + std::to_string(hold) + "/capture";
  const std::string void_path = "/v1/programs/acme/holds/" + std::to_string(hold) + "/void";
  cases.push_back({capture, {{"state", "voided"}}, checkout});
  cases.push_back({capture, {{"points", 1}}, checkout});
  cases.push_back({void_path, {{"state", "captured"}}, checkout});
  cases.push_back({"/v1/programs/acme/reversals",
                   {{"entry_id", earn}, {"points", 1}, {"state", "voided"}},
                   checkout});
  cases.push_back({"/v1/programs/acme/reversals",
                   {{"entry_id", earn}, {"points", 1}, {"actor", "env-admin"}},
                   checkout});
  cases.push_back(
      {"/v1/programs/acme/reversals", {{"entry_id", earn}, {"customer", "bob"}}, checkout});
  cases.push_back({"/v1/programs/acme/adjustments",
                   {{"customer", "alice"}, {"points", 5}, {"reason", "r"}, {"actor", "x"}},
                   kAdminKey});
  cases.push_back({"/v1/programs/acme/adjustments",
                   {{"customer", "alice"}, {"points", 5}, {"reason", "r"}, {"balance", 0}},
                   kAdminKey});
  for (auto [field, value] :
       std::vector<std::pair<std::string, Json>>{{"uses", 0},
                                                 {"max_uses", 1000},
                                                 {"expires_at", "2099-01-01T00:00:00Z"},
                                                 {"code", "AAAAAAAAAAAA"}}) {
    cases.push_back(
        {"/v1/programs/acme/referral-codes", with({{"advocate", "bob"}}, field, value), checkout});
    cases.push_back({"/v1/programs/acme/referral-codes",
                     with({{"advocate", "alice"}}, field, value), alice_key});
  }
  for (auto [field, value] : std::vector<std::pair<std::string, Json>>{
           {"uses", 0}, {"advocate", "bob"}, {"friend_points", 1000000}, {"state", "captured"}}) {
    cases.push_back({"/v1/programs/acme/referrals",
                     with({{"code", code}, {"friend", "newbie"}}, field, value), checkout});
  }
  for (auto [field, value] :
       std::vector<std::pair<std::string, Json>>{{"key_hash", std::string(44, 'A')},
                                                 {"id", "chosen-id"},
                                                 {"key", "my-own-secret"},
                                                 {"revoked", false},
                                                 {"actor", "env-admin"},
                                                 {"created_us", 0}}) {
    cases.push_back(
        {"/v1/api-keys", with({{"role", "checkout"}, {"name", "n"}}, field, value), kAdminKey});
  }
  cases.push_back({"/v1/programs", {{"id", "zeta"}, {"name", "Z"}, {"balance", 5}}, kAdminKey});
  cases.push_back(
      {"/v1/programs", {{"id", "zeta"}, {"name", "Z"}, {"referral", {{"uses", 0}}}}, kAdminKey});
  cases.push_back({"/v1/programs/acme/rewards",
                   {{"id", "mug"}, {"name", "Mug"}, {"points", 5}, {"sold", 0}},
                   kAdminKey});

  uint64_t size = s.ledger().size();
  Json before = s.Customer("acme", "alice");
  for (const Case& c : cases) {
    INFO(c.path << " " << c.body.dump());
    HttpResponse r = s.Post(c.path, c.body.dump(), c.key);
    CHECK(r.status == 400);
    CHECK(ErrorCode(r) == "bad_request");
  }
  // PATCH may change any program field but its id.
  HttpResponse patch = s.Send("PATCH", "/v1/programs/acme", R"({"id":"other"})");
  CHECK(patch.status == 400);
  CHECK(ErrorCode(patch) == "bad_request");

  CHECK(s.ledger().size() == size);
  CHECK(s.Customer("acme", "alice") == before);
  CHECK(s.Get("/v1/programs/zeta").status == 404);
  HttpResponse got = s.Get("/v1/programs/acme/referral-codes/" + code, checkout);
  CHECK(Json::parse(got.body)["uses"] == 0);
}

// ---------------------------------------------------------------------------------------------
// Roles.

TEST_CASE("A customer key cannot read or act for another customer nor use staff endpoints",
          "[abuse]") {
  Server s;
  s.MakeProgram("acme");
  s.MakeProgram("beta");
  std::string alice = s.MakeKey("customer", "acme", "alice");
  uint64_t earn = s.Earn("acme", "alice", 100);
  s.Earn("acme", "bob", 100);
  s.Earn("beta", "alice", 100);
  std::string bob_code = s.Code("acme", "bob");
  uint64_t size = s.ledger().size();

  // Its own data: yes.
  CHECK(s.Get("/v1/programs/acme/customers/alice", alice).status == 200);
  CHECK(s.Get("/v1/programs/acme/customers/alice/entries", alice).status == 200);
  CHECK(s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"alice"})", alice).status == 201);

  // Another customer's, or its own name in another program: as if it did not exist (404).
  for (const char* target :
       {"/v1/programs/acme/customers/bob", "/v1/programs/acme/customers/bob/entries",
        "/v1/programs/acme/customers/bob/lots", "/v1/programs/beta/customers/alice",
        "/v1/programs/beta/customers/alice/entries", "/v1/programs/beta/rewards",
        "/v1/programs/acme/customers/nobody"}) {
    INFO(target);
    HttpResponse r = s.Get(target, alice);
    CHECK(r.status == 404);
  }
  CHECK(s.Get("/v1/programs/acme/referral-codes/" + bob_code, alice).status == 404);
  CHECK(s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"bob"})", alice).status == 404);
  CHECK(s.Post("/v1/programs/beta/referral-codes", R"({"advocate":"alice"})", alice).status == 404);

  // Staff and admin endpoints, even about itself: 403.
  const std::string self = R"({"customer":"alice","points":10})";
  const std::vector<std::pair<std::string, std::string>> forbidden = {
      {"POST /v1/programs/acme/earn", self},
      {"POST /v1/programs/acme/redeem", self},
      {"POST /v1/programs/acme/holds/" + std::to_string(earn) + "/capture", "{}"},
      {"POST /v1/programs/acme/holds/" + std::to_string(earn) + "/void", "{}"},
      {"POST /v1/programs/acme/reversals", R"({"entry_id":)" + std::to_string(earn) + "}"},
      {"POST /v1/programs/acme/adjustments", R"({"customer":"alice","points":5,"reason":"x"})"},
      {"POST /v1/programs/acme/expire", "{}"},
      {"POST /v1/programs/acme/rewards", R"({"id":"r","name":"R","points":1})"},
      {"POST /v1/programs/acme/referrals", R"({"code":")" + bob_code + R"(","friend":"zed"})"},
      {"POST /v1/programs", R"({"id":"mine","name":"Mine"})"},
      {"PATCH /v1/programs/acme", R"({"name":"Mine"})"},
      {"POST /v1/api-keys", R"({"role":"admin","name":"root"})"},
      {"DELETE /v1/api-keys/anything", ""},
      {"GET /v1/programs", ""},
      {"GET /v1/programs/acme", ""},
      {"GET /v1/ledger/entries", ""},
      {"GET /v1/ledger/entries/0", ""},
      {"GET /v1/ledger/checkpoint", ""},
      {"GET /v1/programs/acme/reports/liability", ""},
      {"GET /v1/programs/acme/reports/balances", ""},
      {"GET /v1/admin/replication", ""},
      {"POST /v1/admin/promote", "{}"},
  };
  for (const auto& [request, body] : forbidden) {
    INFO(request);
    size_t space = request.find(' ');
    HttpResponse r = s.Send(request.substr(0, space), request.substr(space + 1), body, alice);
    CHECK(r.status == 403);
    CHECK(ErrorCode(r) == "forbidden");
  }
  // Nothing was written but alice's own code.
  CHECK(s.ledger().size() == size + 1);
  CHECK(s.Customer("acme", "alice")["available"] == 100);

  // A checkout key is no admin, and a finance key writes nothing.
  std::string checkout = s.MakeKey("checkout");
  std::string finance = s.MakeKey("finance");
  for (const auto& [path, body] : std::vector<std::pair<std::string, std::string>>{
           {"/v1/programs/acme/adjustments", R"({"customer":"bob","points":5,"reason":"x"})"},
           {"/v1/programs/acme/expire", "{}"},
           {"/v1/api-keys", R"({"role":"admin","name":"root"})"},
           {"/v1/programs", R"({"id":"mine","name":"Mine"})"}}) {
    INFO(path);
    CHECK(s.Post(path, body, checkout).status == 403);
    CHECK(s.Post(path, body, finance).status == 403);
  }
  CHECK(s.Post("/v1/programs/acme/earn", self, finance).status == 403);
  CHECK(s.Post("/v1/programs/acme/redeem", self, finance).status == 403);
}

TEST_CASE("A revoked key stops working at once, for every route", "[abuse]") {
  Server s;
  s.MakeProgram("acme");
  HttpResponse made = s.Post("/v1/api-keys", R"({"role":"checkout","name":"till 3"})");
  REQUIRE(made.status == 201);
  Json key = Json::parse(made.body);
  std::string secret = key["key"];
  CHECK(s.Post("/v1/programs/acme/earn", R"({"customer":"alice","points":5})", secret).status ==
        201);

  // Requests racing the revocation either finish before it or are refused after it.
  std::atomic<bool> revoked{false};
  std::atomic<int> after_revocation_ok{0};
  int revoke_status = 0;
  RunConcurrently(4, [&](int t) {
    if (t == 0) {
      revoke_status = s.Send("DELETE", "/v1/api-keys/" + key["id"].get<std::string>()).status;
      revoked = true;
      return;
    }
    for (int i = 0; i < 20; ++i) {
      bool was_revoked = revoked.load();
      HttpResponse r = s.Get("/v1/programs/acme", secret);
      if (was_revoked && r.status != 401) ++after_revocation_ok;
    }
  });
  CHECK(revoke_status == 204);
  CHECK(after_revocation_ok == 0);
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/programs"},
           {"POST", "/v1/programs/acme/earn"},
           {"GET", "/v1/ledger/checkpoint"},
           {"POST", "/v1/programs/acme/referral-codes"}}) {
    HttpResponse r = s.Send(method, path, R"({"customer":"alice","points":5})", secret);
    CHECK(r.status == 401);
  }
}

TEST_CASE("API key secrets are stored only as their hashes", "[abuse]") {
  Server s;
  s.MakeProgram("acme");
  std::vector<std::string> secrets = {s.MakeKey("checkout"), s.MakeKey("finance"),
                                      s.MakeKey("customer", "acme", "alice")};
  s.Earn("acme", "alice", 5);
  auto view = s.ledger().Read();
  int hashes_found = 0;
  std::vector<std::string> stored_in;  // column families holding a secret
  for (int i = 0; i < kCfCount; ++i) {
    Status scanned =
        view->Scan(static_cast<Cf>(i), "", "", false, [&](std::string_view k, std::string_view v) {
          for (const std::string& secret : secrets) {
            Hash h = Sha256(secret);
            std::string_view hash = AsBytes(h);
            if (k.find(secret) != std::string_view::npos ||
                v.find(secret) != std::string_view::npos) {
              stored_in.push_back(kCfNames[i]);
            }
            if (k.find(hash) != std::string_view::npos || v.find(hash) != std::string_view::npos) {
              ++hashes_found;
            }
          }
          return true;
        });
    REQUIRE(scanned.ok());
  }
  CHECK(stored_in.empty());
  CHECK(hashes_found > 0);
  // Nor does any read answer with a secret.
  for (const char* target : {"/v1/ledger/entries?type=api_key", "/v1/ledger/entries/1"}) {
    HttpResponse r = s.Get(target);
    REQUIRE(r.status == 200);
    for (const std::string& secret : secrets) CHECK(r.body.find(secret) == std::string::npos);
  }
}

}  // namespace tally
