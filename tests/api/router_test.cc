// Router tests without sockets: a Router over a real Ledger and Loyalty in a temporary directory,
// driven by HttpRequest values, with the time on a ManualClock.
#include "api/router.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "api/json_view.h"
#include "ledger/base64.h"
#include "ledger/checkpoint.h"
#include "ledger/clock.h"
#include "ledger/merkle.h"
#include "ledger/note.h"
#include "ledger/signer.h"
#include "ledger/store.h"
#include "tests/test_util.h"
#include "tools/entry_json.h"

namespace tally {
namespace {

using Json = nlohmann::json;
using testing::TempDir;

constexpr int64_t kStart = 1'767'225'600 * kMicrosPerSecond;  // 2026-01-01T00:00:00Z
const std::string kAdminKey = "test-admin-key";
const std::string kNoKey = "";

// One server: ledger, loyalty and router over a temporary directory.
class Server {
 public:
  explicit Server(std::function<Status()> before_write = nullptr) : clock_(kStart) {
    LedgerOptions o;
    o.dir = dir_.path();
    o.clock = &clock_;
    o.before_write = std::move(before_write);
    auto ledger = Ledger::Open(o);
    REQUIRE(ledger.ok());
    ledger_ = std::move(ledger).value();
    loyalty_ = std::make_unique<Loyalty>(ledger_.get(), LoyaltyOptions{std::string(32, 's')});
    RouterOptions ro;
    ro.admin_key = kAdminKey;
    ro.backup_dir = backup_dir();
    router_ = std::make_unique<Router>(loyalty_.get(), ro);
  }

  // Sends a request. POST requests get a fresh Idempotency-Key unless `idem` is given; pass
  // kOmit to send none.
  HttpResponse Send(const std::string& method, const std::string& target,
                    const std::string& body = "", const std::string& key = kAdminKey,
                    const std::string& idem = "") {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.remote_address = "127.0.0.1";
    if (!key.empty()) r.headers.emplace_back("authorization", "Bearer " + key);
    std::string idem_key = idem.empty() ? "auto-" + std::to_string(++requests_) : idem;
    if (method == "POST" && idem != kOmit) r.headers.emplace_back("idempotency-key", idem_key);
    return Handle(r);
  }
  // As tallyd does: Router::Start first (the checkout writes), else Router::Handle. The
  // response is made on this thread, as the server makes it on its own.
  HttpResponse Handle(const HttpRequest& r) {
    if (via_start) {
      std::promise<std::function<HttpResponse()>> made;
      auto future = made.get_future();
      bool taken = router_->Start(
          r, [&made](std::function<HttpResponse()> make) { made.set_value(std::move(make)); });
      if (taken) return future.get()();
    }
    return router_->Handle(r);
  }
  bool via_start = true;  // false: every request through Router::Handle
  HttpResponse Get(const std::string& target, const std::string& key = kAdminKey) {
    return Send("GET", target, "", key);
  }
  HttpResponse Post(const std::string& target, const std::string& body,
                    const std::string& key = kAdminKey, const std::string& idem = "") {
    return Send("POST", target, body, key, idem);
  }

  // Creates an API key with the admin key; returns the secret.
  std::string MakeKey(const std::string& role, const std::string& program = "",
                      const std::string& customer = "", std::string* id = nullptr) {
    Json body = {{"role", role}, {"name", role + " key"}};
    if (!program.empty()) body["program"] = program;
    if (!customer.empty()) body["customer"] = customer;
    HttpResponse r = Post("/v1/api-keys", body.dump());
    REQUIRE(r.status == 201);
    Json j = Json::parse(r.body);
    if (id != nullptr) *id = j["id"];
    return j["key"];
  }

  // Creates program `id` (referrals on with defaults unless `extra` says otherwise).
  void MakeProgram(const std::string& id, Json extra = Json::object()) {
    Json body = {{"id", id}, {"name", "Program " + id}, {"referral", Json::object()}};
    body.update(extra);
    REQUIRE(Post("/v1/programs", body.dump()).status == 201);
  }

  // Earns points; returns the entry id.
  uint64_t Earn(const std::string& program, const std::string& customer, int64_t points,
                Json extra = Json::object()) {
    Json body = {{"customer", customer}, {"points", points}};
    body.update(extra);
    HttpResponse r = Post("/v1/programs/" + program + "/earn", body.dump());
    REQUIRE(r.status == 201);
    return Json::parse(r.body)["entry"]["id"];
  }

  Ledger& ledger() { return *ledger_; }
  std::string backup_dir() const { return dir_.path() + "/backups"; }
  ManualClock& clock() { return clock_; }
  const Router& router() const { return *router_; }

  static inline const std::string kOmit = "<omit>";

 private:
  TempDir dir_;
  ManualClock clock_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Loyalty> loyalty_;
  std::unique_ptr<Router> router_;
  int requests_ = 0;
};

Json Body(const HttpResponse& r) { return Json::parse(r.body); }

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

// Checks a receipt as a client would, offline: the leaf, the inclusion proof, the signature.
void VerifyReceipt(const Json& receipt, const Verifier& verifier) {
  auto entry = Base64Decode(receipt["entry"].get<std::string>());
  REQUIRE(entry.ok());
  std::vector<Hash> proof;
  for (const Json& h : receipt["inclusion_proof"]) {
    auto bytes = Base64Decode(h.get<std::string>());
    REQUIRE(bytes.ok());
    REQUIRE(bytes->size() == kHashSize);
    Hash hash;
    std::copy(bytes->begin(), bytes->end(), hash.begin());
    proof.push_back(hash);
  }
  std::string text;
  REQUIRE(VerifyNote(receipt["checkpoint"].get<std::string>(), verifier, &text).ok());
  auto checkpoint = ParseCheckpoint(text);
  REQUIRE(checkpoint.ok());
  CHECK(checkpoint->size == receipt["tree_size"].get<uint64_t>());
  CHECK(VerifyInclusion(receipt["leaf_index"].get<uint64_t>(), checkpoint->size, LeafHash(*entry),
                        proof, checkpoint->root)
            .ok());
}

Verifier LedgerVerifier(Ledger& ledger) {
  return Verifier(ledger.signer().name(), ledger.signer().public_key());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Operations and documents.

TEST_CASE("Health, readiness, metrics and the OpenAPI document need no key", "[router]") {
  Server s;
  HttpResponse health = s.Get("/healthz", kNoKey);
  CHECK(health.status == 200);
  CHECK(Body(health)["status"] == "ok");
  CHECK(s.Get("/readyz", kNoKey).status == 200);

  HttpResponse doc = s.Get("/v1/openapi.json", kNoKey);
  REQUIRE(doc.status == 200);
  Json openapi = Json::parse(doc.body);
  CHECK(openapi["openapi"].get<std::string>().rfind("3.", 0) == 0);
  for (const char* path : {"/v1/programs", "/v1/programs/{p}/earn", "/v1/ledger/consistency",
                           "/v1/api-keys/{id}", "/v1/programs/{p}/reports/activity"}) {
    CHECK(openapi["paths"].contains(path));
  }

  s.MakeProgram("acme");
  s.Earn("acme", "alice", 10);
  HttpResponse metrics = s.Get("/metrics", kNoKey);
  REQUIRE(metrics.status == 200);
  CHECK(*Header(metrics, "Content-Type") == "text/plain; version=0.0.4");
  CHECK_THAT(metrics.body, Catch::Contains("tally_http_requests_total{route=\"/v1/programs/{p}/"
                                           "earn\",status=\"201\"} 1"));
  CHECK_THAT(metrics.body, Catch::Contains("tally_http_request_seconds_bucket{route=\"/v1/"
                                           "programs\",status=\"201\",le=\"+Inf\"}"));
  CHECK_THAT(metrics.body, Catch::Contains("tally_http_request_seconds_count{route=\"/v1/programs/"
                                           "{p}/earn\",status=\"201\"} 1"));
  CHECK_THAT(metrics.body, Catch::Contains("tally_commit_group_entries_count"));
  CHECK_THAT(metrics.body, Catch::Contains("tally_fsync_seconds_bucket{le=\"+Inf\"}"));
  CHECK_THAT(metrics.body, Catch::Contains("tally_entries_total 2"));
}

TEST_CASE("Unknown paths answer 404 and wrong methods 405 with Allow", "[router]") {
  Server s;
  HttpResponse missing = s.Get("/v1/nothing");
  CHECK(missing.status == 404);
  CHECK(ErrorCode(missing) == "not_found");
  CHECK(*Header(missing, "Content-Type") == "application/problem+json");
  CHECK(s.Get("/v1/programs/").status == 404);
  CHECK(s.Get("/v1/programs/acme/earn/x").status == 404);

  HttpResponse wrong = s.Send("PUT", "/v1/programs");
  CHECK(wrong.status == 405);
  CHECK(ErrorCode(wrong) == "method_not_allowed");
  CHECK(*Header(wrong, "Allow") == "POST, GET");
  CHECK(s.Send("DELETE", "/v1/programs/acme/earn").status == 405);
  CHECK(s.Get("/v1/programs/acme/earn", kNoKey).status == 405);
}

TEST_CASE("Missing, unknown and revoked keys are 401", "[router]") {
  Server s;
  HttpResponse none = s.Get("/v1/programs", kNoKey);
  CHECK(none.status == 401);
  CHECK(ErrorCode(none) == "unauthorized");
  CHECK(*Header(none, "WWW-Authenticate") == "Bearer");
  CHECK(s.Get("/v1/programs", "wrong-key").status == 401);

  HttpRequest basic;
  basic.method = "GET";
  basic.target = "/v1/programs";
  basic.headers = {{"authorization", "Basic " + kAdminKey}};
  CHECK(s.Handle(basic).status == 401);
  basic.headers = {{"authorization", "bearer " + kAdminKey}};
  CHECK(s.Handle(basic).status == 200);

  std::string id;
  std::string key = s.MakeKey("checkout", "", "", &id);
  CHECK(s.Get("/v1/programs", key).status == 200);
  HttpResponse revoked = s.Send("DELETE", "/v1/api-keys/" + id);
  CHECK(revoked.status == 204);
  CHECK(s.Get("/v1/programs", key).status == 401);
  CHECK(s.Send("DELETE", "/v1/api-keys/" + id).status == 204);
  CHECK(s.Send("DELETE", "/v1/api-keys/no-such-key").status == 404);
}

TEST_CASE("A revocation works whatever Idempotency-Keys the caller used before", "[router]") {
  Server s;
  std::string id;
  std::string key = s.MakeKey("checkout", "", "", &id);
  // A client may use any printable key, including one that reads like the revocation's.
  REQUIRE(
      s.Post("/v1/programs", R"({"id":"acme","name":"Acme"})", kAdminKey, "revoke:" + id).status ==
      201);
  CHECK(s.Send("DELETE", "/v1/api-keys/" + id).status == 204);
  CHECK(s.Get("/v1/programs", key).status == 401);
  // The revocation entry carries no Idempotency-Key; a repeat writes nothing.
  uint64_t size = s.ledger().LatestCheckpoint().size;
  CHECK(s.Send("DELETE", "/v1/api-keys/" + id).status == 204);
  CHECK(s.ledger().LatestCheckpoint().size == size);
}

// ---------------------------------------------------------------------------------------------
// Programs.

TEST_CASE("Creating a program answers it with its defaults, and reads show it", "[router]") {
  Server s;
  HttpResponse created = s.Post("/v1/programs", R"({"id":"acme","name":"Acme Rewards"})");
  REQUIRE(created.status == 201);
  Json p = Body(created);
  CHECK(p == Json::parse(R"({"id":"acme","name":"Acme Rewards","currency":"USD",
      "point_value_minor":1,"earn_rate":{"points":1,"per_amount_minor":100},"expiry_days":0,
      "pending_days":0,"negative_balance":"deny","referral":null})"));
  CHECK(Body(s.Get("/v1/programs/acme")) == p);

  HttpResponse full = s.Post("/v1/programs", R"({"id":"zeta","name":"Z","currency":"EUR",
      "point_value_minor":2,"earn_rate":{"points":3,"per_amount_minor":50},"expiry_days":365,
      "pending_days":7,"negative_balance":"allow","referral":{"advocate_points":100}})");
  REQUIRE(full.status == 201);
  Json z = Body(full);
  CHECK(z["earn_rate"]["points"] == 3);
  CHECK(z["referral"]["advocate_points"] == 100);
  CHECK(z["referral"]["friend_points"] == 250);

  HttpResponse again = s.Post("/v1/programs", R"({"id":"acme","name":"Other"})");
  CHECK(again.status == 409);
  CHECK(ErrorCode(again) == "program_exists");
  CHECK(ErrorCode(s.Get("/v1/programs/nope")) == "not_found");

  Json page1 = Body(s.Get("/v1/programs?limit=1"));
  REQUIRE(page1["items"].size() == 1);
  REQUIRE(page1["next_cursor"].is_string());
  Json page2 =
      Body(s.Get("/v1/programs?limit=1&cursor=" + page1["next_cursor"].get<std::string>()));
  REQUIRE(page2["items"].size() == 1);
  CHECK(page2["items"][0]["id"] != page1["items"][0]["id"]);
  CHECK(Body(s.Get("/v1/programs"))["next_cursor"].is_null());
}

TEST_CASE("Patching a program changes the given fields only, never the id", "[router]") {
  Server s;
  s.MakeProgram("acme");
  HttpResponse patched = s.Send("PATCH", "/v1/programs/acme", R"({"name":"New","expiry_days":30,
      "earn_rate":{"points":2}})");
  REQUIRE(patched.status == 200);
  Json p = Body(patched);
  CHECK(p["name"] == "New");
  CHECK(p["expiry_days"] == 30);
  CHECK(p["earn_rate"]["points"] == 2);
  CHECK(p["earn_rate"]["per_amount_minor"] == 100);
  CHECK(p["referral"].is_object());

  CHECK(Body(s.Send("PATCH", "/v1/programs/acme", R"({"referral":null})"))["referral"].is_null());
  CHECK(s.Send("PATCH", "/v1/programs/acme", R"({"id":"other"})").status == 400);
  CHECK(s.Send("PATCH", "/v1/programs/nope", R"({"name":"x"})").status == 404);
  CHECK(Body(s.Get("/v1/programs/acme"))["name"] == "New");
}

// ---------------------------------------------------------------------------------------------
// Writes, receipts and idempotency.

TEST_CASE("An earn answers its entry and a receipt that verifies offline", "[router]") {
  Server s;
  s.MakeProgram("acme");
  HttpResponse r = s.Post("/v1/programs/acme/earn",
                          R"({"customer":"alice","points":120,"order_id":"o-1001",
                              "description":"first order"})");
  REQUIRE(r.status == 201);
  Json j = Body(r);
  const Json& e = j["entry"];
  CHECK(e["type"] == "earn");
  CHECK(e["program"] == "acme");
  CHECK(e["customer"] == "alice");
  CHECK(e["points"] == 120);
  CHECK(e["order_id"] == "o-1001");
  CHECK(e["description"] == "first order");
  CHECK(e["created_at"] == "2026-01-01T00:00:00Z");
  CHECK_FALSE(e.contains("hold"));
  REQUIRE(e["postings"].size() == 2);
  CHECK(e["postings"][0]["balance_after"].is_number_integer());

  const Json& receipt = j["receipt"];
  CHECK(receipt["leaf_index"] == e["id"]);
  auto bytes = s.ledger().GetEntryBytes(e["id"].get<uint64_t>());
  REQUIRE(bytes.ok());
  CHECK(receipt["entry"] == Base64Encode(*bytes));
  VerifyReceipt(receipt, LedgerVerifier(s.ledger()));

  HttpResponse by_order =
      s.Post("/v1/programs/acme/earn", R"({"customer":"alice","points":5,"order_id":"o-1001"})");
  CHECK(by_order.status == 409);
  CHECK(ErrorCode(by_order) == "order_already_awarded");
  CHECK(s.Post("/v1/programs/nope/earn", R"({"customer":"alice","points":5})").status == 404);

  Json from_amount =
      Body(s.Post("/v1/programs/acme/earn", R"({"customer":"bob","order_amount_minor":1999})"));
  CHECK(from_amount["entry"]["points"] == 19);
}

TEST_CASE("A repeated write replays the same status and bytes and writes nothing", "[router]") {
  Server s;
  s.MakeProgram("acme");
  const std::string body = R"({"customer":"alice","points":50,"pending_days":3})";
  HttpResponse first = s.Post("/v1/programs/acme/earn", body, kAdminKey, "order-7");
  REQUIRE(first.status == 201);
  CHECK(Header(first, "Idempotency-Replayed") == nullptr);
  uint64_t size = s.ledger().size();
  uint64_t id = Body(first)["entry"]["id"];

  // Capturing the hold changes its state; the replay still shows it as written.
  REQUIRE(s.Post("/v1/programs/acme/holds/" + std::to_string(id) + "/capture", "{}").status == 201);
  size = s.ledger().size();
  s.clock().Advance(kMicrosPerSecond);
  HttpResponse again = s.Post("/v1/programs/acme/earn", body, kAdminKey, "order-7");
  CHECK(again.status == 201);
  CHECK(again.body == first.body);
  REQUIRE(Header(again, "Idempotency-Replayed") != nullptr);
  CHECK(*Header(again, "Idempotency-Replayed") == "true");
  CHECK(s.ledger().size() == size);

  HttpResponse other =
      s.Post("/v1/programs/acme/earn", R"({"customer":"alice","points":51})", kAdminKey, "order-7");
  CHECK(other.status == 422);
  CHECK(ErrorCode(other) == "idempotency_key_reused");

  // Keys are scoped to the API key that sends them.
  std::string checkout = s.MakeKey("checkout");
  CHECK(s.Post("/v1/programs/acme/earn", body, checkout, "order-7").status == 201);
}

TEST_CASE("Checkout writes answer the same through Start as through Handle", "[router]") {
  Server s;
  s.MakeProgram("acme", {{"pending_days", 0}});
  s.MakeProgram("held", {{"pending_days", 3}});
  s.Earn("acme", "c1", 500);
  uint64_t held = s.Earn("held", "c2", 70);
  uint64_t hold = Body(s.Post("/v1/programs/acme/redeem",
                              R"({"customer":"c1","points":20,"hold":true})"))["entry"]["id"];
  std::string checkout = s.MakeKey("checkout");
  struct Request {
    std::string target, body, key;
  };
  const std::vector<Request> requests = {
      {"/v1/programs/acme/earn", R"({"customer":"c1","points":5,"order_id":"o-1"})", kAdminKey},
      {"/v1/programs/acme/earn", R"({"customer":"c1","points":5,"order_id":"o-1"})", checkout},
      {"/v1/programs/acme/earn", R"({"customer":"c1","points":0})", kAdminKey},
      {"/v1/programs/acme/earn", R"({"customer":"c1","points":5,"bogus":1})", kAdminKey},
      {"/v1/programs/nope/earn", R"({"customer":"c1","points":5})", kAdminKey},
      {"/v1/programs/acme/earn", R"({"customer":"c1","points":5})", "wrong-key"},
      {"/v1/programs/acme/redeem", R"({"customer":"c1","points":7})", kAdminKey},
      {"/v1/programs/acme/redeem", R"({"customer":"c1","points":100000})", kAdminKey},
      {"/v1/programs/acme/holds/" + std::to_string(hold) + "/capture", "", kAdminKey},
      {"/v1/programs/acme/holds/" + std::to_string(hold) + "/void", "", kAdminKey},
      {"/v1/programs/held/holds/" + std::to_string(held) + "/void", "", kAdminKey},
      {"/v1/programs/acme/reversals", R"({"entry_id":1,"points":1,"reason":"r"})", kAdminKey},
  };
  int n = 0;
  for (const Request& r : requests) {
    INFO(r.target << " " << r.body);
    std::string idem = "same-" + std::to_string(++n);
    s.via_start = true;
    HttpResponse a = s.Post(r.target, r.body, r.key, idem);
    s.via_start = false;
    HttpResponse b = s.Post(r.target, r.body, r.key, idem);
    CHECK(a.status == b.status);
    CHECK(a.body == b.body);
    // A write that appended is replayed by the second path; nothing else is.
    const bool wrote = a.status == 201;
    CHECK((Header(b, "Idempotency-Replayed") != nullptr) == wrote);
  }
}

TEST_CASE("Every POST needs a well-formed Idempotency-Key", "[router]") {
  Server s;
  s.MakeProgram("acme");
  const std::string body = R"({"customer":"alice","points":5})";
  HttpResponse none = s.Post("/v1/programs/acme/earn", body, kAdminKey, Server::kOmit);
  CHECK(none.status == 400);
  CHECK(ErrorCode(none) == "idempotency_key_required");
  for (const std::string& bad :
       {std::string(256, 'k'), std::string("a\x01z"), std::string("caf\xc3\xa9"),
        std::string("tab\there"), std::string("del\x7f")}) {
    CHECK(ErrorCode(s.Post("/v1/programs/acme/earn", body, kAdminKey, bad)) ==
          "idempotency_key_required");
  }
  CHECK(s.Post("/v1/programs/acme/earn", body, kAdminKey, std::string(255, 'k')).status == 201);
  // Printable ASCII includes the space (API.md), and the entry stores it.
  HttpResponse spaced = s.Post("/v1/programs/acme/earn", body, kAdminKey, "order 7 try 1");
  CHECK(spaced.status == 201);
  HttpResponse again = s.Post("/v1/programs/acme/earn", body, kAdminKey, "order 7 try 1");
  CHECK(again.status == 201);
  CHECK(again.body == spaced.body);
  CHECK(Header(again, "Idempotency-Replayed") != nullptr);
  CHECK(s.Post("/v1/programs/acme/earn", body, kAdminKey, "!~order/7:a=b").status == 201);
  CHECK(s.Post("/v1/admin/promote", "{}", kAdminKey, Server::kOmit).status == 400);
}

TEST_CASE("Pending earns are captured or voided once", "[router]") {
  Server s;
  s.MakeProgram("acme");
  HttpResponse pending =
      s.Post("/v1/programs/acme/earn", R"({"customer":"alice","points":40,"pending_days":14})");
  REQUIRE(pending.status == 201);
  CHECK(Body(pending)["entry"]["hold"]["state"] == "pending");
  // API.md's entry shape: order_id and description are always there, null when not given.
  REQUIRE(Body(pending)["entry"].contains("order_id"));
  REQUIRE(Body(pending)["entry"].contains("description"));
  CHECK(Body(pending)["entry"]["order_id"].is_null());
  CHECK(Body(pending)["entry"]["description"].is_null());
  std::string id = std::to_string(Body(pending)["entry"]["id"].get<uint64_t>());
  CHECK(Body(s.Get("/v1/programs/acme/customers/alice"))["pending"] == 40);

  HttpResponse capture = s.Post("/v1/programs/acme/holds/" + id + "/capture", "{}");
  REQUIRE(capture.status == 201);
  Json c = Body(capture);
  CHECK(c["entry"]["type"] == "capture");
  CHECK(c["entry"]["refs"]["entry_id"].get<uint64_t>() == std::stoull(id));
  VerifyReceipt(c["receipt"], LedgerVerifier(s.ledger()));
  CHECK(Body(s.Get("/v1/programs/acme/customers/alice"))["available"] == 40);
  CHECK(Body(s.Get("/v1/ledger/entries/" + id))["entry"]["hold"]["state"] == "captured");

  HttpResponse twice = s.Post("/v1/programs/acme/holds/" + id + "/void", "");
  CHECK(twice.status == 409);
  CHECK(ErrorCode(twice) == "hold_already_resolved");
  CHECK(ErrorCode(s.Post("/v1/programs/acme/holds/99999/capture", "{}")) == "unknown_hold");
  CHECK(ErrorCode(s.Post("/v1/programs/acme/holds/abc/capture", "{}")) == "unknown_hold");
  CHECK(s.Post("/v1/programs/acme/holds/" + id + "/capture", R"({"x":1})").status == 400);

  uint64_t other = s.Earn("acme", "alice", 7, {{"pending_until", "2026-02-01T00:00:00Z"}});
  HttpResponse voided = s.Post("/v1/programs/acme/holds/" + std::to_string(other) + "/void", "{}");
  CHECK(voided.status == 201);
  CHECK(Body(voided)["entry"]["type"] == "void");
  CHECK(Body(s.Get("/v1/programs/acme/customers/alice"))["pending"] == 0);
}

TEST_CASE("Redemptions spend points or rewards and never go below zero", "[router]") {
  Server s;
  s.MakeProgram("acme");
  s.Earn("acme", "alice", 100);
  HttpResponse spent = s.Post("/v1/programs/acme/redeem", R"({"customer":"alice","points":30})");
  REQUIRE(spent.status == 201);
  CHECK(Body(spent)["entry"]["type"] == "redeem");
  CHECK(Body(spent)["entry"]["points"] == 30);
  HttpResponse too_many = s.Post("/v1/programs/acme/redeem", R"({"customer":"alice","points":71})");
  CHECK(too_many.status == 422);
  CHECK(ErrorCode(too_many) == "insufficient_points");

  HttpResponse reward =
      s.Post("/v1/programs/acme/rewards", R"({"id":"mug","name":"A mug","points":20,"stock":1})");
  REQUIRE(reward.status == 201);
  CHECK(Body(reward) == Json::parse(R"({"id":"mug","name":"A mug","points":20,"stock":1})"));
  CHECK(ErrorCode(s.Post("/v1/programs/acme/rewards", R"({"id":"mug","name":"B","points":1})")) ==
        "reward_exists");
  Json rewards = Body(s.Get("/v1/programs/acme/rewards"));
  REQUIRE(rewards["items"].size() == 1);
  CHECK(rewards["items"][0]["stock"] == 1);

  CHECK(s.Post("/v1/programs/acme/redeem", R"({"customer":"alice","reward_id":"mug"})").status ==
        201);
  HttpResponse gone =
      s.Post("/v1/programs/acme/redeem", R"({"customer":"alice","reward_id":"mug"})");
  CHECK(gone.status == 409);
  CHECK(ErrorCode(gone) == "out_of_stock");
  CHECK(ErrorCode(s.Post("/v1/programs/acme/redeem",
                         R"({"customer":"alice","reward_id":"hat"})")) == "unknown_reward");

  HttpResponse held =
      s.Post("/v1/programs/acme/redeem", R"({"customer":"alice","points":10,"hold":true})");
  REQUIRE(held.status == 201);
  CHECK(Body(held)["entry"]["hold"]["state"] == "pending");
  CHECK(Body(s.Get("/v1/programs/acme/customers/alice"))["reserved"] == 10);
  std::string id = std::to_string(Body(held)["entry"]["id"].get<uint64_t>());
  CHECK(s.Post("/v1/programs/acme/holds/" + id + "/void", "{}").status == 201);
  CHECK(Body(s.Get("/v1/programs/acme/customers/alice"))["available"] == 50);
}

TEST_CASE("Reversals claw back at most what is left of an earn", "[router]") {
  Server s;
  s.MakeProgram("acme");
  uint64_t earn = s.Earn("acme", "alice", 100);
  std::string path = "/v1/programs/acme/reversals";
  HttpResponse part = s.Post(path, Json({{"entry_id", earn}, {"points", 60}}).dump());
  REQUIRE(part.status == 201);
  CHECK(Body(part)["entry"]["type"] == "reversal");
  CHECK(Body(part)["entry"]["refs"]["entry_id"] == earn);
  HttpResponse over = s.Post(path, Json({{"entry_id", earn}, {"points", 41}}).dump());
  CHECK(over.status == 422);
  CHECK(ErrorCode(over) == "exceeds_reversible");
  CHECK(s.Post(path, Json({{"entry_id", earn}, {"reason", "refund"}}).dump()).status == 201);
  CHECK(Body(s.Get("/v1/programs/acme/customers/alice"))["available"] == 0);
}

TEST_CASE("Adjustments need a reason and expiry answers what it expired", "[router]") {
  Server s;
  s.MakeProgram("acme");
  HttpResponse adjusted = s.Post("/v1/programs/acme/adjustments",
                                 R"({"customer":"alice","points":-5,"reason":"goodwill"})");
  CHECK(adjusted.status == 422);
  CHECK(ErrorCode(adjusted) == "insufficient_points");
  CHECK(s.Post("/v1/programs/acme/adjustments",
               R"({"customer":"alice","points":25,"reason":"goodwill"})")
            .status == 201);
  CHECK(s.Post("/v1/programs/acme/adjustments", R"({"customer":"alice","points":0,"reason":"x"})")
            .status == 400);
  CHECK(s.Post("/v1/programs/acme/adjustments", R"({"customer":"alice","points":3})").status ==
        400);

  s.Earn("acme", "bob", 70, {{"expires_at", "2026-01-02T00:00:00Z"}});
  Json lots = Body(s.Get("/v1/programs/acme/customers/bob/lots"));
  REQUIRE(lots["items"].size() == 1);
  CHECK(lots["items"][0]["expires_at"] == "2026-01-02T00:00:00Z");
  CHECK(Body(s.Get("/v1/programs/acme/customers/bob"))["next_expiry"]["points"] == 70);

  s.clock().Advance(2 * kMicrosPerDay);
  HttpResponse expired = s.Post("/v1/programs/acme/expire", "{}", kAdminKey, "expire-1");
  REQUIRE(expired.status == 200);
  CHECK(Body(expired) == Json::parse(R"({"entries":1,"points":70})"));
  HttpResponse replay = s.Post("/v1/programs/acme/expire", "{}", kAdminKey, "expire-1");
  CHECK(replay.body == expired.body);
  CHECK(Header(replay, "Idempotency-Replayed") != nullptr);
  CHECK(Body(s.Get("/v1/programs/acme/customers/bob"))["lifetime_expired"] == 70);
}

TEST_CASE("Referral codes are made once per advocate and used by new friends", "[router]") {
  Server s;
  s.MakeProgram("acme", {{"referral", {{"max_uses", 2}, {"code_ttl_days", 1}}}});
  s.MakeProgram("plain", {{"referral", nullptr}});
  HttpResponse made = s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"alice"})");
  REQUIRE(made.status == 201);
  Json code = Body(made);
  CHECK(code["advocate"] == "alice");
  CHECK(code["uses"] == 0);
  CHECK(code["max_uses"] == 2);
  CHECK(code["expires_at"] == "2026-01-02T00:00:00Z");
  CHECK(code["code"].get<std::string>().size() >= 10);
  HttpResponse live = s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"alice"})");
  CHECK(live.status == 200);
  CHECK(Body(live)["code"] == code["code"]);
  std::string c = code["code"];
  CHECK(Body(s.Get("/v1/programs/acme/referral-codes/" + c))["code"] == c);

  std::string path = "/v1/programs/acme/referrals";
  HttpResponse referred = s.Post(path, Json({{"code", c}, {"friend", "bob"}}).dump());
  REQUIRE(referred.status == 201);
  CHECK(Body(referred)["entry"]["type"] == "referral");
  VerifyReceipt(Body(referred)["receipt"], LedgerVerifier(s.ledger()));
  CHECK(Body(s.Get("/v1/programs/acme/customers/bob"))["referred_by"] == "alice");

  CHECK(ErrorCode(s.Post(path, Json({{"code", c}, {"friend", "alice"}}).dump())) ==
        "self_referral");
  s.Earn("acme", "carol", 5);
  CHECK(ErrorCode(s.Post(path, Json({{"code", c}, {"friend", "carol"}}).dump())) ==
        "not_a_new_customer");
  CHECK(s.Post(path, Json({{"code", c}, {"friend", "dave"}}).dump()).status == 201);
  CHECK(ErrorCode(s.Post(path, Json({{"code", c}, {"friend", "erin"}}).dump())) ==
        "code_exhausted");
  CHECK(ErrorCode(s.Post(path, Json({{"code", "0000000000"}, {"friend", "erin"}}).dump())) ==
        "unknown_code");
  CHECK(ErrorCode(s.Post("/v1/programs/plain/referral-codes", R"({"advocate":"alice"})")) ==
        "referrals_disabled");

  HttpResponse frank = s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"frank"})");
  std::string fc = Body(frank)["code"];
  s.clock().Advance(2 * kMicrosPerDay);
  CHECK(ErrorCode(s.Post(path, Json({{"code", fc}, {"friend", "gina"}}).dump())) == "code_expired");
}

TEST_CASE("Repeated failed code look-ups are rate limited per key", "[router]") {
  Server s;
  s.MakeProgram("acme");
  std::string key = s.MakeKey("checkout");
  int limited = 0;
  for (int i = 0; i < 25; ++i) {
    HttpResponse r = s.Get("/v1/programs/acme/referral-codes/NOPE" + std::to_string(i), key);
    if (r.status == 429) {
      ++limited;
      CHECK(ErrorCode(r) == "rate_limited");
    } else {
      CHECK(ErrorCode(r) == "unknown_code");
    }
  }
  CHECK(limited >= 4);
  CHECK(ErrorCode(s.Get("/v1/programs/acme/referral-codes/NOPE", kAdminKey)) == "unknown_code");
}

// ---------------------------------------------------------------------------------------------
// Strict input.

TEST_CASE("Request bodies are strict JSON objects of known fields", "[router]") {
  Server s;
  s.MakeProgram("acme");
  std::string deep = std::string(40, '[') + std::string(40, ']');
  std::string deep_object = R"({"customer":"alice","points":1,"description":)" + deep + "}";
  const std::vector<std::string> bad = {
      R"({"customer":"alice","points":5,"points":6})",                // duplicate key
      R"({"customer":"alice","customer":"bob","points":5})",          // duplicate key
      R"({"customer":"alice","points":1.0})",                         // float
      R"({"customer":"alice","points":1e3})",                         // exponent
      R"({"customer":"alice","points":"5"})",                         // wrong type
      R"({"customer":"alice","points":0})",                           // out of range
      R"({"customer":"alice","points":1000000000001})",               // over kPointsMax
      R"({"customer":"alice","points":-3})",                          // negative
      R"({"customer":"alice","points":99999999999999999999})",        // over int64
      R"({"customer":"alice","points":5,"balance":100})",             // mass assignment
      R"({"customer":"alice","points":5,"hold":true})",               // not an earn field
      R"({"customer":"alice","points":5,"id":3})",                    // not an earn field
      R"({"customer":"al ice","points":5})",                          // bad id
      R"({"customer":"","points":5})",                                // bad id
      R"({"points":5})",                                              // missing customer
      R"({"customer":"alice"})",                                      // neither amount
      R"({"customer":"alice","points":5,"order_amount_minor":500})",  // both amounts
      R"({"customer":"alice","points":5,"expires_at":"2026-01-01 00:00:00"})",
      R"({"customer":"alice","points":5,"expires_at":"2026-01-01T00:00:00+01:00"})",
      R"({"customer":"alice","points":5,"description":"a\u0001b"})",
      "{\"customer\":\"alice\",\"points\":5,\"description\":\"\xff\xfe\"}",  // bad UTF-8
      R"([{"customer":"alice","points":5}])",                                // not an object
      R"("alice")",
      R"({"customer":"alice","points":5} trailing)",
      R"({"customer":"alice","points":5)",
      "",
      deep_object,
  };
  for (const std::string& body : bad) {
    INFO(body);
    HttpResponse r = s.Post("/v1/programs/acme/earn", body);
    CHECK(r.status == 400);
    CHECK(ErrorCode(r) == "bad_request");
    CHECK(*Header(r, "Content-Type") == "application/problem+json");
  }
  CHECK(s.ledger().size() == 1);
  CHECK(s.Post("/v1/programs/acme/earn",
               R"({"customer":"alice","points":5,"expires_at":"2027-01-01T00:00:00.5+00:00",
                   "order_id":null})")
            .status == 201);
  Json problem = Body(s.Post("/v1/programs/acme/earn", R"({"customer":"alice","points":1.5})"));
  CHECK(problem["type"].is_string());
  CHECK(problem["title"] == "Bad Request");
  CHECK(problem["status"] == 400);
  CHECK_THAT(problem["detail"].get<std::string>(), Catch::Contains("points"));
}

TEST_CASE("Other bodies are strict too", "[router]") {
  Server s;
  CHECK(s.Post("/v1/programs", R"({"id":"acme"})").status == 400);
  CHECK(s.Post("/v1/programs", R"({"id":"acme","name":"A","currency":"usd"})").status == 400);
  CHECK(
      s.Post("/v1/programs", R"({"id":"acme","name":"A","earn_rate":{"points":1,"x":2}})").status ==
      400);
  CHECK(s.Post("/v1/programs", R"({"id":"acme","name":"A","negative_balance":"maybe"})").status ==
        400);
  CHECK(s.Post("/v1/programs", R"({"id":"a:b","name":"A"})").status == 400);
  CHECK(s.Post("/v1/api-keys", R"({"role":"customer","name":"k"})").status == 400);
  CHECK(s.Post("/v1/api-keys", R"({"role":"checkout","name":"k","program":"acme"})").status == 400);
  CHECK(s.Post("/v1/api-keys", R"({"role":"root","name":"k"})").status == 400);
  s.MakeProgram("acme");
  CHECK(s.Post("/v1/programs/acme/rewards", R"({"id":"r","name":"R","points":1,"stock":-1})")
            .status == 400);
  CHECK(s.Post("/v1/programs/acme/reversals", R"({"entry_id":-1})").status == 400);
  CHECK(s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"alice","x":1})").status == 400);
  CHECK(s.Post("/v1/programs/acme/expire", "[]").status == 400);
}

TEST_CASE("Query parameters are checked", "[router]") {
  Server s;
  s.MakeProgram("acme");
  s.Earn("acme", "alice", 5);
  for (const char* target :
       {"/v1/programs?limit=0", "/v1/programs?limit=501", "/v1/programs?limit=abc",
        "/v1/programs?limit=-1", "/v1/programs?limit=1&limit=2", "/v1/programs?color=red",
        "/v1/programs?cursor=%zz", "/v1/ledger/consistency?from=0&to=1",
        "/v1/ledger/consistency?from=2&to=1", "/v1/ledger/consistency?from=1&to=99",
        "/v1/ledger/consistency?from=1", "/v1/ledger/entries?type=bogus",
        "/v1/ledger/entries?program=a:b", "/v1/programs/acme/reports/liability?from=yesterday",
        "/v1/programs/acme/reports/liability?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "/v1/programs/acme/reports/activity?bucket=week",
        "/v1/programs/acme/reports/activity?bucket=hour&from=2020-01-01T00:00:00Z",
        "/v1/programs/acme/reports/balances?as_of=2026-13-01T00:00:00Z"}) {
    INFO(target);
    HttpResponse r = s.Get(target);
    CHECK(r.status == 400);
    CHECK(ErrorCode(r) == "bad_request");
  }
  CHECK(s.Get("/v1/programs?limit=500").status == 200);
  CHECK(s.Get("/v1/programs/acme/reports/liability?to=2026-01-01T00:00:00%2B00:00").status == 200);
  CHECK(s.Post("/v1/programs/acme/earn?x=1", R"({"customer":"alice","points":5})").status == 400);
}

// ---------------------------------------------------------------------------------------------
// Reads: customers, ledger, reports.

TEST_CASE("Customer reads show balances, entries newest first and lots", "[router]") {
  Server s;
  s.MakeProgram("acme", {{"expiry_days", 10}});
  s.Earn("acme", "alice", 10);
  s.clock().Advance(kMicrosPerSecond + 250);
  s.Earn("acme", "alice", 20);
  Json c = Body(s.Get("/v1/programs/acme/customers/alice"));
  CHECK(c["program"] == "acme");
  CHECK(c["customer"] == "alice");
  CHECK(c["available"] == 30);
  CHECK(c["lifetime_earned"] == 30);
  CHECK(c["next_expiry"]["at"] == "2026-01-11T00:00:00Z");
  CHECK(c["referral_code"].is_null());
  CHECK(ErrorCode(s.Get("/v1/programs/acme/customers/nobody")) == "not_found");
  CHECK(s.Get("/v1/programs/acme/customers/bad%20id").status == 404);

  Json entries = Body(s.Get("/v1/programs/acme/customers/alice/entries?limit=1"));
  REQUIRE(entries["items"].size() == 1);
  CHECK(entries["items"][0]["points"] == 20);
  CHECK(entries["items"][0]["created_at"] == "2026-01-01T00:00:01.000250Z");
  Json rest = Body(s.Get("/v1/programs/acme/customers/alice/entries?cursor=" +
                         entries["next_cursor"].get<std::string>()));
  REQUIRE(rest["items"].size() == 1);
  CHECK(rest["items"][0]["points"] == 10);

  Json lots = Body(s.Get("/v1/programs/acme/customers/alice/lots"));
  REQUIRE(lots["items"].size() == 2);
  CHECK(lots["items"][0]["remaining"] == 10);
  CHECK(lots["items"][0]["expires_at"] == "2026-01-11T00:00:00Z");
}

TEST_CASE("Ledger endpoints serve checkpoints, entries, proofs and the public key", "[router]") {
  Server s;
  s.MakeProgram("acme");
  s.Earn("acme", "alice", 10);
  s.Earn("acme", "bob", 20);
  Json cp = Body(s.Get("/v1/ledger/checkpoint"));
  CHECK(cp["size"] == s.ledger().size());
  CHECK(cp["origin"] == s.ledger().options().origin);
  std::string text;
  REQUIRE(VerifyNote(cp["checkpoint"].get<std::string>(), LedgerVerifier(s.ledger()), &text).ok());

  Json key = Body(s.Get("/v1/ledger/public-key"));
  CHECK(key["public_key"] == Base64Encode(s.ledger().signer().public_key()));
  CHECK(key["key_id"].get<std::string>().size() == 8);
  auto verifier = Verifier::FromVerifierKey(key["verifier_key"].get<std::string>());
  REQUIRE(verifier.ok());
  CHECK(verifier->key_id() == s.ledger().signer().key_id());

  Json all = Body(s.Get("/v1/ledger/entries"));
  REQUIRE(all["items"].size() == 3);
  CHECK(all["items"][0]["id"] == 2);
  Json earns = Body(s.Get("/v1/ledger/entries?type=earn&program=acme&limit=1"));
  REQUIRE(earns["items"].size() == 1);
  CHECK(earns["items"][0]["customer"] == "bob");
  CHECK(Body(s.Get("/v1/ledger/entries?type=program"))["items"][0]["customer"].is_null());

  Json one = Body(s.Get("/v1/ledger/entries/1"));
  CHECK(one["entry"]["id"] == 1);
  VerifyReceipt(one["receipt"], LedgerVerifier(s.ledger()));
  CHECK(ErrorCode(s.Get("/v1/ledger/entries/3")) == "not_found");
  CHECK(s.Get("/v1/ledger/entries/x").status == 404);

  Json proof = Body(s.Get("/v1/ledger/consistency?from=1&to=3"));
  CHECK(proof["from"] == 1);
  CHECK(proof["to"] == 3);
  std::vector<Hash> hashes;
  for (const Json& h : proof["proof"]) {
    std::string bytes = *Base64Decode(h.get<std::string>());
    Hash hash;
    std::copy(bytes.begin(), bytes.end(), hash.begin());
    hashes.push_back(hash);
  }
  auto bytes0 = s.ledger().GetEntryBytes(0);
  REQUIRE(bytes0.ok());
  auto root3 = ParseCheckpoint(text);
  REQUIRE(root3.ok());
  CHECK(VerifyConsistency(1, 3, hashes, LeafHash(*bytes0), root3->root).ok());
}

TEST_CASE("Reports roll the liability forward", "[router]") {
  Server s;
  s.MakeProgram("acme");
  s.Earn("acme", "alice", 100);
  s.Post("/v1/programs/acme/redeem", R"({"customer":"alice","points":30})");
  s.Earn("acme", "bob", 5, {{"pending_days", 3}});
  s.clock().Advance(kMicrosPerDay);
  Json l = Body(s.Get("/v1/programs/acme/reports/liability"));
  CHECK(l["opening"] == 0);
  CHECK(l["earned"] == 100);
  CHECK(l["redeemed"] == 30);
  CHECK(l["closing"] == 70);
  CHECK(l["pending"] == 5);
  CHECK(l["currency"] == "USD");
  CHECK(l["closing_value_minor"] == 70);
  CHECK(l["opening"].get<int64_t>() + l["earned"].get<int64_t>() + l["referral"].get<int64_t>() +
            l["adjusted"].get<int64_t>() - l["redeemed"].get<int64_t>() -
            l["expired"].get<int64_t>() - l["reversed"].get<int64_t>() ==
        l["closing"].get<int64_t>());

  Json b = Body(s.Get("/v1/programs/acme/reports/balances"));
  REQUIRE(b["items"].size() == 2);
  CHECK(b["items"][0]["customer"] == "alice");
  CHECK(b["items"][0]["available"] == 70);
  Json before = Body(s.Get("/v1/programs/acme/reports/balances?as_of=2025-12-31T00:00:00Z"));
  for (const Json& row : before["items"]) CHECK(row["available"] == 0);

  Json a =
      Body(s.Get("/v1/programs/acme/reports/activity?from=2026-01-01T00:00:00Z"
                 "&to=2026-01-02T12:00:00Z&bucket=day"));
  REQUIRE(a["buckets"].size() >= 1);
  CHECK(a["buckets"][0]["start"] == "2026-01-01T00:00:00Z");
  CHECK(a["buckets"][0]["earned"] == 100);
  CHECK(s.Get("/v1/programs/acme/reports/activity").status == 200);
}

TEST_CASE("Replication answers standalone and promote refuses", "[router]") {
  Server s;
  Json r = Body(s.Get("/v1/admin/replication"));
  CHECK(r == Json::parse(R"({"role":"standalone","stream":null,"applied":0})"));
  HttpResponse promote = s.Post("/v1/admin/promote", "{}");
  CHECK(promote.status == 409);
  CHECK(ErrorCode(promote) == "not_a_follower");
}

TEST_CASE("Backups are made by the ledger, answered again for the same key, never overwritten",
          "[router]") {
  namespace fs = std::filesystem;
  Server s;
  s.MakeProgram("acme");
  s.Earn("acme", "alice", 10);
  HttpResponse made = s.Post("/v1/admin/backups", R"({"name":"nightly"})", kAdminKey, "bk-1");
  INFO(made.body);
  REQUIRE(made.status == 201);
  const std::string path = s.backup_dir() + "/nightly";
  CHECK(Body(made) == Json({{"name", "nightly"},
                            {"path", path},
                            {"size", s.ledger().size()},
                            {"created_at", "2026-01-01T00:00:00Z"}}));
  CHECK(fs::exists(path + "/signing.pub"));
  CHECK(fs::exists(path + "/backup.json"));
  CHECK(!fs::exists(path + "/signing.key"));
  {  // the copy holds every entry written before the request
    Store::Options o;
    o.mode = Store::Mode::kReadOnly;
    o.create_if_missing = false;
    auto copy = Store::Open(path + "/db", o);
    REQUIRE(copy.ok());
    uint64_t entries = 0;
    REQUIRE((*copy)
                ->Scan(Cf::kEntries, "", "", false, nullptr,
                       [&](auto, auto) {
                         ++entries;
                         return true;
                       })
                .ok());
    CHECK(entries == s.ledger().size());
  }
  s.Earn("acme", "alice", 5);

  // A repeat answers the same bytes and makes nothing; the key with another body is refused.
  HttpResponse again = s.Post("/v1/admin/backups", R"({"name":"nightly"})", kAdminKey, "bk-1");
  CHECK(again.status == 201);
  CHECK(again.body == made.body);
  REQUIRE(Header(again, "Idempotency-Replayed") != nullptr);
  CHECK(*Header(again, "Idempotency-Replayed") == "true");
  HttpResponse reused = s.Post("/v1/admin/backups", R"({"name":"other"})", kAdminKey, "bk-1");
  CHECK(reused.status == 422);
  CHECK(ErrorCode(reused) == "idempotency_key_reused");
  HttpResponse taken = s.Post("/v1/admin/backups", R"({"name":"nightly"})", kAdminKey, "bk-2");
  CHECK(taken.status == 409);
  CHECK(ErrorCode(taken) == "backup_exists");
  for (const char* body : {R"({"name":".."})", R"({"name":".hidden"})", R"({"name":"a/b"})",
                           R"({"name":""})", R"({"name":7})", R"({"nme":"x"})", "[]"}) {
    INFO(body);
    HttpResponse bad = s.Post("/v1/admin/backups", body);
    CHECK(bad.status == 400);
    CHECK(ErrorCode(bad) == "bad_request");
  }
  CHECK(s.Post("/v1/admin/backups", "{}", s.MakeKey("checkout")).status == 403);
  CHECK(s.Post("/v1/admin/backups", "{}", kAdminKey, Server::kOmit).status == 400);

  // Without a name: named after the time. What a crash left half-written goes first.
  fs::create_directories(s.backup_dir() + "/.other.partial-123/db");
  s.clock().Advance(2'000'000);
  HttpResponse unnamed = s.Post("/v1/admin/backups", "");
  INFO(unnamed.body);
  REQUIRE(unnamed.status == 201);
  CHECK(Body(unnamed)["name"] == "backup-2026-01-01T000002.000000Z");
  CHECK(Body(unnamed)["size"] == s.ledger().size());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(s.backup_dir())) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  CHECK(names ==
        std::vector<std::string>{".requests", "backup-2026-01-01T000002.000000Z", "nightly"});

  // The answer is kept once the backup is gone: a repeat still answers it, and makes nothing.
  fs::remove_all(path);
  HttpResponse late = s.Post("/v1/admin/backups", R"({"name":"nightly"})", kAdminKey, "bk-1");
  CHECK(late.status == 201);
  CHECK(late.body == made.body);
  CHECK(Header(late, "Idempotency-Replayed") != nullptr);
  CHECK(!fs::exists(path));
  // Without its record (tallyd stopped before keeping it), the backup's own backup.json answers.
  s.clock().Advance(1);
  HttpResponse found = s.Post("/v1/admin/backups", "", kAdminKey, "bk-3");
  INFO(found.body);
  REQUIRE(found.status == 201);
  CHECK(Body(found)["name"] == "backup-2026-01-01T000002.000001Z");
  fs::remove_all(s.backup_dir() + "/.requests");
  HttpResponse again2 = s.Post("/v1/admin/backups", "", kAdminKey, "bk-3");
  CHECK(again2.status == 201);
  CHECK(again2.body == found.body);
  CHECK(Header(again2, "Idempotency-Replayed") != nullptr);
}

TEST_CASE("A stopped ledger answers 503 and is not ready", "[router]") {
  std::atomic<bool> fail{false};
  Server s([&fail] { return fail ? Status::Internal("disk on fire") : Status::Ok(); });
  s.MakeProgram("acme");
  fail = true;
  HttpResponse failed = s.Post("/v1/programs/acme/earn", R"({"customer":"alice","points":5})");
  CHECK(failed.status >= 500);
  HttpResponse after = s.Post("/v1/programs/acme/earn", R"({"customer":"alice","points":5})");
  CHECK(after.status == 503);
  CHECK(ErrorCode(after) == "unavailable");
  CHECK(s.Get("/readyz", kNoKey).status == 503);
  CHECK(s.Get("/v1/programs/acme").status == 200);
}

// ---------------------------------------------------------------------------------------------
// Roles.

namespace {

// One endpoint of the role matrix: the request, with {tag} (the role's name) and setup ids
// filled in, and the roles whose keys may call it.
struct MatrixRow {
  std::string method, target, body;
  std::set<std::string> roles;
};

std::string Fill(std::string text, const std::map<std::string, std::string>& vars) {
  for (const auto& [name, value] : vars) {
    for (size_t at = text.find(name); at != std::string::npos; at = text.find(name, at)) {
      text.replace(at, name.size(), value);
      at += value.size();
    }
  }
  return text;
}

const std::vector<MatrixRow>& Matrix() {
  const std::set<std::string> a = {"admin"}, ac = {"admin", "checkout"}, af = {"admin", "finance"},
                              acf = {"admin", "checkout", "finance"},
                              acfu = {"admin", "checkout", "finance", "customer"},
                              acu = {"admin", "checkout", "customer"};
  const std::string p = "/v1/programs/acme";
  static const std::vector<MatrixRow> rows = {
      {"POST", "/v1/programs", R"({"id":"m-{tag}","name":"M"})", a},
      {"GET", "/v1/programs", "", acf},
      {"GET", p, "", acf},
      {"PATCH", p, R"({"name":"Acme {tag}"})", a},
      {"GET", p + "/customers/alice", "", acfu},
      {"GET", p + "/customers/alice/entries", "", acfu},
      {"GET", p + "/customers/alice/lots", "", acfu},
      {"POST", p + "/earn", R"({"customer":"alice","points":5})", ac},
      {"POST", p + "/redeem", R"({"customer":"alice","points":1})", ac},
      {"POST", p + "/holds/{capture}/capture", "{}", ac},
      {"POST", p + "/holds/{void}/void", "{}", ac},
      {"POST", p + "/reversals", R"({"entry_id":{earn},"points":1})", ac},
      {"POST", p + "/adjustments", R"({"customer":"alice","points":1,"reason":"r"})", a},
      {"POST", p + "/expire", "{}", a},
      {"POST", p + "/rewards", R"({"id":"r-{tag}","name":"R","points":1})", a},
      {"GET", p + "/rewards", "", acu},
      {"POST", p + "/referral-codes", R"({"advocate":"alice"})", acu},
      {"GET", p + "/referral-codes/{code}", "", acu},
      {"POST", p + "/referrals", R"({"code":"{code}","friend":"f-{tag}"})", ac},
      {"GET", p + "/reports/liability", "", af},
      {"GET", p + "/reports/balances", "", af},
      {"GET", p + "/reports/activity", "", af},
      {"POST", "/v1/api-keys", R"({"role":"checkout","name":"k-{tag}"})", a},
      {"DELETE", "/v1/api-keys/{victim}", "", a},
      {"GET", "/v1/ledger/checkpoint", "", acf},
      {"GET", "/v1/ledger/entries", "", af},
      {"GET", "/v1/ledger/entries/1", "", acf},
      {"GET", "/v1/ledger/consistency?from=1&to=2", "", acf},
      {"GET", "/v1/ledger/public-key", "", acf},
      {"GET", "/v1/admin/replication", "", a},
      {"POST", "/v1/admin/backups", "{}", a},
  };
  return rows;
}

}  // namespace

TEST_CASE("Each role may call exactly the endpoints of the role table", "[router]") {
  Server s;
  s.MakeProgram("acme");
  s.Earn("acme", "alice", 1000);
  std::string code =
      Body(s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"alice"})"))["code"];
  std::map<std::string, std::string> keys = {{"admin", kAdminKey},
                                             {"checkout", s.MakeKey("checkout")},
                                             {"finance", s.MakeKey("finance")},
                                             {"customer", s.MakeKey("customer", "acme", "alice")}};
  std::map<std::string, std::map<std::string, std::string>> vars;
  for (const auto& [role, key] : keys) {
    std::string victim;
    s.MakeKey("checkout", "", "", &victim);
    vars[role] = {{"{tag}", role},
                  {"{code}", code},
                  {"{victim}", victim},
                  {"{earn}", std::to_string(s.Earn("acme", "alice", 10))},
                  {"{capture}", std::to_string(s.Earn("acme", "alice", 3, {{"pending_days", 5}}))},
                  {"{void}", std::to_string(s.Earn("acme", "alice", 3, {{"pending_days", 5}}))}};
  }
  for (const MatrixRow& row : Matrix()) {
    for (const auto& [role, key] : keys) {
      std::string target = Fill(row.target, vars[role]);
      INFO(role << " " << row.method << " " << target);
      HttpResponse r = s.Send(row.method, target, Fill(row.body, vars[role]), key);
      if (row.roles.count(role)) {
        CHECK(r.status >= 200);
        CHECK(r.status < 300);
      } else {
        CHECK(r.status == 403);
        CHECK(ErrorCode(r) == "forbidden");
      }
    }
  }
  for (const auto& [role, key] : keys) {
    CHECK(s.Post("/v1/admin/promote", "{}", key).status == (role == "admin" ? 409 : 403));
  }
}

TEST_CASE("A customer key sees nothing of other customers or programs", "[router]") {
  Server s;
  s.MakeProgram("acme");
  s.MakeProgram("other");
  s.Earn("acme", "alice", 10);
  s.Earn("acme", "bob", 10);
  s.Earn("other", "alice", 10);
  std::string bob_code =
      Body(s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"bob"})"))["code"];
  std::string key = s.MakeKey("customer", "acme", "alice");

  CHECK(s.Get("/v1/programs/acme/customers/alice", key).status == 200);
  for (const std::string& target : std::vector<std::string>{
           "/v1/programs/acme/customers/bob", "/v1/programs/acme/customers/bob/entries",
           "/v1/programs/acme/customers/bob/lots", "/v1/programs/other/customers/alice",
           "/v1/programs/other/rewards", "/v1/programs/acme/referral-codes/" + bob_code}) {
    INFO(target);
    HttpResponse r = s.Get(target, key);
    CHECK(r.status == 404);
    CHECK(r.body.find("\"bob\"") == std::string::npos);
  }
  CHECK(s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"bob"})", key).status == 404);
  CHECK(s.Post("/v1/programs/other/referral-codes", R"({"advocate":"alice"})", key).status == 404);
  HttpResponse own = s.Post("/v1/programs/acme/referral-codes", R"({"advocate":"alice"})", key);
  REQUIRE(own.status == 201);
  std::string alice_code = Body(own)["code"];
  CHECK(s.Get("/v1/programs/acme/referral-codes/" + alice_code, key).status == 200);
  CHECK(s.Get("/v1/programs/acme", key).status == 403);
  CHECK(s.Post("/v1/programs/acme/earn", R"({"customer":"alice","points":5})", key).status == 403);
}

}  // namespace tally

namespace tally {
namespace {

// The receipt is written as text directly: it must be the compact JSON the library would write.
TEST_CASE("an entry with its receipt renders as compact, ordered JSON", "[json_view]") {
  using Ordered = nlohmann::ordered_json;
  Entry e;
  e.id = 41;
  e.type = EntryType::kEarn;
  e.program = "p";
  e.customer = "c\"1";
  e.time_us = kStart;
  e.postings = {{"customer:p:c\"1", 5, 5}, {"program:p:issued", -5, -5}};
  Receipt link;
  link.leaf_index = 3;
  link.entry = std::string("\x00\x01\xff", 3);
  link.inclusion_proof = {Sha256("a")};
  link.checkpoint = "tally.local/ledger\n4\nroot\n\n\xe2\x80\x94 key sig\n";
  link.tree_size = 4;
  Receipt r;
  r.leaf_index = 41;
  r.entry = "entry bytes";
  r.inclusion_proof = {Sha256("x"), Sha256("y")};
  r.checkpoint = "origin \"quoted\" \\ and \x01 control\n42\n";
  r.tree_size = 42;
  r.key_chain = {link};
  std::string text = RenderEntryWithReceipt(EntryView{e, std::nullopt}, r);
  Ordered j = Ordered::parse(text);
  CHECK(j.dump(-1, ' ', false, Ordered::error_handler_t::replace) == text);
  CHECK(j["receipt"]["leaf_index"] == 41);
  CHECK(j["receipt"]["entry"] == Base64Encode("entry bytes"));
  CHECK(j["receipt"]["inclusion_proof"] ==
        Ordered::array({Base64Encode(AsBytes(Sha256("x"))), Base64Encode(AsBytes(Sha256("y")))}));
  CHECK(j["receipt"]["checkpoint"] == r.checkpoint);
  CHECK(j["receipt"]["tree_size"] == 42);
  CHECK(j["receipt"]["key_chain"][0]["checkpoint"] == link.checkpoint);
  CHECK(j["receipt"]["key_chain"][0]["entry"] == Base64Encode(link.entry));
  CHECK(j["entry"]["customer"] == "c\"1");
  std::vector<std::string> keys;
  for (auto it = j["receipt"].begin(); it != j["receipt"].end(); ++it) keys.push_back(it.key());
  CHECK(keys == std::vector<std::string>{"leaf_index", "entry", "inclusion_proof", "checkpoint",
                                         "tree_size", "key_chain"});
  r.key_chain.clear();
  CHECK_FALSE(
      Ordered::parse(RenderEntryWithReceipt(EntryView{e, std::nullopt}, r))["receipt"].contains(
          "key_chain"));
}

// An entry as the JSON library writes it, in API.md's order: what the entry renderers must
// write byte for byte.
nlohmann::ordered_json ExpectedEntry(const EntryView& v) {
  return EntryJsonOf<nlohmann::ordered_json>(v.entry, v.hold);
}

std::string LibraryDump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// Entries are written as text directly: each must be the JSON the library would write from the
// same fields, in API.md's order, whatever the strings hold.
TEST_CASE("entries and pages of entries render as the library would write them", "[json_view]") {
  using Ordered = nlohmann::ordered_json;
  Entry plain;
  plain.id = 7;
  plain.type = EntryType::kEarn;
  plain.program = "p";
  plain.customer = "alice";
  plain.time_us = kStart + 123'456;
  plain.postings = {{"p:customer:alice:available", 5, 5}, {"p:issued", -5, -5}};
  Entry full = plain;
  full.id = (uint64_t{1} << 62) + 1;
  full.type = EntryType::kRedeem;
  full.customer = "caf\xc3\xa9 \"x\" \\ \x01";
  full.order_id = "order\t1";
  full.description = "line\nbreak \xe2\x80\x94 dash";
  full.holds = true;
  full.ref = uint64_t{1} << 40;
  full.postings = {{"p:customer:caf\xc3\xa9:reserved", -9'000'000'000'000, INT64_MIN + 1},
                   {"p:redeemed", 9'000'000'000'000, INT64_MAX}};
  Entry system = plain;
  system.type = EntryType::kExpiry;
  system.customer.clear();
  system.postings.clear();
  const EntryView views[] = {
      {plain, std::nullopt},      {full, HoldState::kPending},
      {full, HoldState::kVoided}, {full, std::nullopt},  // a hold state not known: no "hold" field
      {system, std::nullopt},
  };
  Page<EntryView> page;
  for (const EntryView& v : views) {
    std::string text = RenderEntry(v);
    CHECK(text == LibraryDump(ExpectedEntry(v)));
    CHECK(Ordered::parse(text) == ExpectedEntry(v));
    page.items.push_back(v);
  }
  Ordered items = Ordered::array();
  for (const EntryView& v : views) items.push_back(ExpectedEntry(v));
  CHECK(RenderEntryPage(page) == LibraryDump(Ordered{{"items", items}, {"next_cursor", nullptr}}));
  page.next_cursor = "c\"ursor";
  CHECK(RenderEntryPage(page) ==
        LibraryDump(Ordered{{"items", items}, {"next_cursor", "c\"ursor"}}));
  CHECK(RenderEntryPage(Page<EntryView>{}) ==
        LibraryDump(Ordered{{"items", Ordered::array()}, {"next_cursor", nullptr}}));
}

// Strings are escaped as text directly too: any bytes, well-formed UTF-8 or not, must come out
// as the library writes them (which replaces what is not UTF-8).
TEST_CASE("strings of any bytes render as the library would write them", "[json_view]") {
  // Bytes where escaping and UTF-8 decoding change: controls, quote, backslash, DEL, and the
  // edges of each UTF-8 lead and continuation range.
  const uint8_t kEdges[] = {0x00, 0x01, 0x08, 0x09, 0x0a, 0x0c, 0x0d, 0x1f, 0x20, '"',  '\\',
                            'a',  0x7e, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1,
                            0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff};
  std::mt19937 rng(20261124);
  Entry e;
  e.id = 1;
  e.type = EntryType::kEarn;
  e.program = "p";
  e.time_us = kStart;
  std::vector<std::string> cases = {"",
                                    "plain",
                                    "caf\xc3\xa9",
                                    "\xe2\x80\x94",
                                    "\xf0\x9f\x98\x80",
                                    "\xed\xa0\x80",
                                    "\xc0\xaf",
                                    "\xf4\x90\x80\x80",
                                    "a\xe2\x80"};
  for (int n = 0; n < 20000; ++n) {
    std::string s(rng() % 12, '\0');
    for (char& c : s) {
      c = static_cast<char>(rng() % 2 ? kEdges[rng() % sizeof(kEdges)] : rng() % 256);
    }
    cases.push_back(s);
  }
  int mismatches = 0;
  for (const std::string& s : cases) {
    e.description = s;
    e.customer = s;
    EntryView v{e, std::nullopt};
    if (RenderEntry(v) != LibraryDump(ExpectedEntry(v))) {
      if (++mismatches <= 3) CHECK(RenderEntry(v) == LibraryDump(ExpectedEntry(v)));
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("a customer renders as compact, ordered JSON", "[json_view]") {
  using Ordered = nlohmann::ordered_json;
  CustomerView c;
  c.program = "p\\1";
  c.customer = "caf\xc3\xa9 \"x\"";
  c.available = -3;
  c.pending = 7;
  c.reserved = 0;
  c.lifetime_earned = 1'000'000'000'000;
  c.referred_by = "adv";
  for (bool expiry : {false, true}) {
    if (expiry) c.next_expiry = std::make_pair(kStart, int64_t{12});
    std::string text = RenderCustomer(c);
    Ordered j = Ordered::parse(text);
    CHECK(j.dump(-1, ' ', false, Ordered::error_handler_t::replace) == text);
    CHECK(j["program"] == c.program);
    CHECK(j["customer"] == c.customer);
    CHECK(j["available"] == -3);
    CHECK(j["lifetime_earned"] == c.lifetime_earned);
    CHECK(j["referral_code"].is_null());
    CHECK(j["referred_by"] == "adv");
    if (expiry) {
      CHECK(j["next_expiry"] == Ordered{{"at", "2026-01-01T00:00:00Z"}, {"points", 12}});
    } else {
      CHECK(j["next_expiry"].is_null());
    }
    std::vector<std::string> keys;
    for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
    CHECK(keys == std::vector<std::string>{"program", "customer", "available", "pending",
                                           "reserved", "lifetime_earned", "lifetime_redeemed",
                                           "lifetime_expired", "next_expiry", "referral_code",
                                           "referred_by"});
  }
}

}  // namespace
}  // namespace tally
