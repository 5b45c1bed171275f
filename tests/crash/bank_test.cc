// The bank test: the real tallyd under concurrent load from several clients (earns retried on
// the same Idempotency-Key after a timeout or a disconnect, redemptions often larger than the
// balance, referrals, balance reads), killed with SIGKILL at random moments and restarted on the
// same data directory, TALLY_CRASH_ROUNDS times (default 20). Then a read phase checks that:
// every acknowledged write is there (its replay answers the same body, replayed); nothing was
// applied twice; every entry in the log is one the test sent, with the fields it sent; no
// balance ever went below zero; every entry's postings sum to zero and the balances, the
// balances report and the liability report agree; every receipt verifies under the ledger's
// public key with an independent verifier; and tally-audit verify finds the directory clean.
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/crash/crash_util.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using namespace std::chrono_literals;
using testing::EntryHead;
using testing::Failures;
using testing::HttpClient;
using testing::HttpReply;
using testing::Json;
using testing::RestartingTallyd;
using testing::TempDir;

const std::string kAdminKey = "bank-test-admin-key-5c0ffee";
const std::string kProgramId = "bank";
constexpr int kClientThreads = 6;
constexpr int kCustomers = 12;
constexpr int64_t kFriendPoints = 25;
constexpr int64_t kAdvocatePoints = 40;

enum class Op { kProgram, kEarn, kRedeem, kCode, kReferral };

// One logical write the test issued; every retry sends the same key and body.
struct Attempt {
  Op op = Op::kEarn;
  std::string key, target, body;
  std::string customer;  // earn, redeem: the customer; code: the advocate; referral: the friend
  std::string order_id;  // earn, redeem
  int64_t points = 0;    // earn, redeem
  std::string code;      // referral
  int sends = 0;
  // A send was given up by the client while tallyd may still have been working on it. Such a
  // request can reach the ledger after a later send of the same key was answered: when that
  // answer was a refusal (which stores nothing, API.md), the late original may still apply.
  bool abandoned = false;
  int status = 0;     // the final answer (0: none came)
  std::string reply;  // its body
  bool replayed = false;
};

const char* OpName(Op op) {
  switch (op) {
    case Op::kProgram:
      return "program";
    case Op::kEarn:
      return "earn";
    case Op::kRedeem:
      return "redeem";
    case Op::kCode:
      return "referral_code";
    case Op::kReferral:
      return "referral";
  }
  return "?";
}

std::string CodeOf(const std::string& body) {
  Json j = Json::parse(body, nullptr, false);
  return j.is_object() && j["code"].is_string() ? j["code"].get<std::string>() : "";
}

// Sends `a` until an answer that settles it: anything but "no answer" and 503. Now and then the
// client gives up after 1 ms, while the server may still commit the write, and sends again.
void Deliver(HttpClient& client, const RestartingTallyd& server, Attempt& a, std::mt19937_64& rng,
             std::chrono::steady_clock::time_point give_up) {
  for (;;) {
    uint16_t port = server.port();
    if (port != 0) {
      auto timeout = rng() % 16 == 0 ? 1ms : 10000ms;
      ++a.sends;
      HttpReply r = client.Send(port, "POST", a.target, a.body, a.key, timeout);
      if (r.status == 0 && timeout == 1ms) a.abandoned = true;
      if (r.status != 0 && r.status != 503) {
        a.status = r.status;
        a.reply = r.body;
        a.replayed = r.replayed();
        return;
      }
    }
    if (std::chrono::steady_clock::now() > give_up) return;
    std::this_thread::sleep_for(2ms);
  }
}

struct ClientThread {
  int index = 0;
  std::vector<Attempt> attempts;
};

class Bank {
 public:
  Bank(RestartingTallyd* server, Failures* failures) : server_(server), failures_(failures) {}

  void Run(ClientThread* me, std::atomic<bool>* stop) {
    std::mt19937_64 rng(0xba4c + me->index);
    HttpClient client(kAdminKey);
    const std::string t = std::to_string(me->index);
    auto give_up = [] { return std::chrono::steady_clock::now() + 120s; };
    for (int n = 0; !*stop; ++n) {
      const std::string suffix = t + "-" + std::to_string(n);
      const std::string customer = "c" + std::to_string(rng() % kCustomers);
      unsigned dice = static_cast<unsigned>(rng() % 100);
      if (dice < 45) {
        Attempt a;
        a.op = Op::kEarn;
        a.key = "earn-" + suffix;
        a.customer = customer;
        a.order_id = "o-" + suffix;
        a.points = 1 + static_cast<int64_t>(rng() % 100);
        a.target = "/v1/programs/" + kProgramId + "/earn";
        a.body =
            Json{{"customer", a.customer}, {"points", a.points}, {"order_id", a.order_id}}.dump();
        Deliver(client, *server_, a, rng, give_up());
        if (a.status != 201) Fail(a, "an earn must be accepted");
        // A client that lost the answer sends again, maybe several times: each is a replay.
        if (a.status == 201 && rng() % 8 == 0) {
          for (int i = 1 + static_cast<int>(rng() % 3); i > 0; --i) {
            Attempt again = a;
            Deliver(client, *server_, again, rng, give_up());
            a.sends += again.sends;
            if (again.status != 201 || !again.replayed || again.reply != a.reply) {
              Fail(again, "a repeated earn must be replayed with the same body");
            }
          }
        }
        me->attempts.push_back(std::move(a));
      } else if (dice < 75) {
        Attempt a;
        a.op = Op::kRedeem;
        a.key = "redeem-" + suffix;
        a.customer = customer;
        a.order_id = "r-" + suffix;
        a.points = 1 + static_cast<int64_t>(rng() % 250);  // often more than the balance
        a.target = "/v1/programs/" + kProgramId + "/redeem";
        Json body{{"customer", a.customer}, {"points", a.points}, {"order_id", a.order_id}};
        if (rng() % 4 == 0) body["hold"] = true;
        a.body = body.dump();
        Deliver(client, *server_, a, rng, give_up());
        if (a.status != 201 && !(a.status == 422 && CodeOf(a.reply) == "insufficient_points")) {
          Fail(a, "a redemption is accepted or refused for insufficient points");
        }
        me->attempts.push_back(std::move(a));
      } else if (dice < 82) {
        Attempt code;
        code.op = Op::kCode;
        code.key = "code-" + suffix;
        code.customer = customer;
        code.target = "/v1/programs/" + kProgramId + "/referral-codes";
        code.body = Json{{"advocate", customer}}.dump();
        Deliver(client, *server_, code, rng, give_up());
        std::string value;
        if (code.status == 200 || code.status == 201) {
          Json j = Json::parse(code.reply, nullptr, false);
          if (j.is_object() && j["code"].is_string()) value = j["code"].get<std::string>();
        }
        if (value.empty()) Fail(code, "a referral code must be made or returned");
        me->attempts.push_back(code);
        if (value.empty()) continue;
        Attempt a;
        a.op = Op::kReferral;
        a.key = "referral-" + suffix;
        a.customer = "f-" + suffix;
        a.code = value;
        a.target = "/v1/programs/" + kProgramId + "/referrals";
        a.body = Json{{"code", value}, {"friend", a.customer}}.dump();
        Deliver(client, *server_, a, rng, give_up());
        if (a.status != 201) Fail(a, "a referral of a new friend must be accepted");
        me->attempts.push_back(std::move(a));
      } else {
        HttpReply r = testing::GetAnswered(client, *server_,
                                           "/v1/programs/" + kProgramId + "/customers/" + customer);
        Json j = Json::parse(r.body, nullptr, false);
        if (r.status == 200) {
          for (const char* field : {"available", "pending", "reserved"}) {
            if (!j[field].is_number_integer() || j[field].get<int64_t>() < 0) {
              failures_->Add("balance read of " + customer + ": " + r.body);
            }
          }
        } else if (r.status != 404) {
          failures_->Add("balance read of " + customer + " answered " + std::to_string(r.status) +
                         ": " + r.body);
        }
      }
    }
  }

 private:
  void Fail(const Attempt& a, const std::string& why) {
    failures_->Add(std::string(OpName(a.op)) + " " + a.key + " " + a.body + ": " + why + ", got " +
                   std::to_string(a.status) + " " + a.reply);
  }

  RestartingTallyd* server_;
  Failures* failures_;
};

int64_t CustomerBalance(const std::map<std::string, int64_t>& balances, const std::string& c,
                        const char* kind) {
  auto it = balances.find(kProgramId + ":customer:" + c + ":" + kind);
  return it == balances.end() ? 0 : it->second;
}

}  // namespace

TEST_CASE("Bank: acknowledged writes survive random SIGKILLs under concurrent load",
          "[crash][slow]") {
  const int rounds = testing::EnvInt("TALLY_CRASH_ROUNDS", 20);
  TempDir dir;
  const std::string data = dir / "data";
  RestartingTallyd server(TALLYD_PATH, data, kAdminKey, dir / "tallyd.log",
                          {"--threads", "16", "--min-free-bytes", "0"});
  REQUIRE(server.Start());
  auto started = std::chrono::steady_clock::now();

  Attempt program;
  program.op = Op::kProgram;
  program.key = "create-program";
  program.target = "/v1/programs";
  program.body = Json{
      {"id", kProgramId},
      {"name", "Bank"},
      {"negative_balance", "deny"},
      {"referral",
       {{"advocate_points", kAdvocatePoints},
        {"friend_points", kFriendPoints},
        {"max_uses", 1000000},
        {"code_ttl_days", 0},
        {"advocate_pending_days",
         30}}}}.dump();
  {
    HttpClient client(kAdminKey);
    std::mt19937_64 rng(1);
    Deliver(client, server, program, rng, std::chrono::steady_clock::now() + 30s);
    REQUIRE(program.status == 201);
  }

  Failures failures;
  Bank bank(&server, &failures);
  std::atomic<bool> stop{false};
  std::vector<ClientThread> clients(kClientThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClientThreads; ++i) {
    clients[i].index = i;
    threads.emplace_back([&, i] { bank.Run(&clients[i], &stop); });
  }
  std::mt19937 rng(20240611);
  int kills = 0;
  for (int round = 0; round < rounds; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 450));
    INFO("round " << round);
    REQUIRE(server.Kill() == 128 + SIGKILL);
    ++kills;
    // Now and then the restart comes at once, with clients still retrying into the gap.
    if (rng() % 3 != 0) std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 200));
    REQUIRE(server.Start());
  }
  stop = true;
  for (auto& th : threads) th.join();
  auto load_done = std::chrono::steady_clock::now();

  {
    INFO(failures.count() << " failures during the load");
    for (const std::string& f : failures.list()) UNSCOPED_INFO(f);
    CHECK(failures.count() == 0);
  }

  // Every attempt, by idempotency key.
  std::map<std::string, const Attempt*> by_key;
  by_key[program.key] = &program;
  size_t acked = 0, sends = 0, retried = 0, replayed = 0, refused = 0;
  for (const ClientThread& c : clients) {
    for (const Attempt& a : c.attempts) {
      by_key[a.key] = &a;
      sends += a.sends;
      if (a.status == 201) ++acked;
      if (a.status == 422) ++refused;
      if (a.sends > 1) ++retried;
      if (a.replayed) ++replayed;  // the first answer was lost after the write committed
    }
  }
  INFO(kills << " kills, " << by_key.size() << " attempts, " << acked << " acknowledged, " << sends
             << " sends");
  REQUIRE(kills == rounds);
  REQUIRE(acked > 100);

  HttpClient client(kAdminKey);
  const testing::Bytes pub = testing::FetchPublicKey(client, server);
  REQUIRE(pub.size() == 32);

  // The whole log, oldest first.
  auto listed = testing::GetAllPages(client, server, "/v1/ledger/entries");
  REQUIRE(listed);
  std::vector<Json> entries(listed->rbegin(), listed->rend());
  HttpReply cp = testing::GetAnswered(client, server, "/v1/ledger/checkpoint");
  REQUIRE(cp.status == 200);
  CHECK(Json::parse(cp.body)["size"].get<uint64_t>() == entries.size());

  std::map<std::string, uint64_t> entry_of_key;  // idempotency key -> entry id
  std::map<std::string, int64_t> balances;       // account -> balance from the postings
  int64_t all_accounts = 0;
  testing::Failures problems;  // what the read phase finds, reported together
  for (size_t i = 0; i < entries.size(); ++i) {
    const Json& e = entries[i];
    INFO("entry " << e.dump());
    REQUIRE(e["id"].get<uint64_t>() == i);

    // Its receipt verifies, and the receipt's bytes say who sent it with which key.
    HttpReply r = testing::GetAnswered(client, server, "/v1/ledger/entries/" + std::to_string(i));
    REQUIRE(r.status == 200);
    Json got = Json::parse(r.body);
    CHECK(got["entry"] == e);
    std::string bytes;
    if (!testing::VerifyReceiptJson(got["receipt"], pub, &bytes)) {
      problems.Add("the receipt of entry " + std::to_string(i) + " does not verify: " + r.body);
      continue;
    }
    std::optional<EntryHead> head = testing::DecodeEntryHead(bytes);
    REQUIRE(head);
    CHECK(head->id == i);

    // Postings: sum zero, balance_after follows, no customer balance ever below zero.
    int64_t sum = 0;
    for (const Json& p : e["postings"]) {
      const std::string account = p["account"].get<std::string>();
      int64_t points = p["points"].get<int64_t>();
      sum += points;
      balances[account] += points;
      all_accounts += points;
      CHECK(p["balance_after"].get<int64_t>() == balances[account]);
      if (account.find(":customer:") != std::string::npos) CHECK(balances[account] >= 0);
    }
    CHECK(sum == 0);

    // Every entry is a write the test sent, with what it sent, once.
    auto it = by_key.find(head->idempotency_key);
    if (it == by_key.end() || head->actor != "env-admin") {
      problems.Add("entry " + std::to_string(i) + " with key '" + head->idempotency_key + "' by '" +
                   head->actor + "' matches no request the test sent: " + e.dump());
      continue;
    }
    const Attempt& a = *it->second;
    if (!entry_of_key.emplace(a.key, i).second) {
      problems.Add("key " + a.key + " wrote entries " + std::to_string(entry_of_key[a.key]) +
                   " and " + std::to_string(i));
    }
    bool same = e["type"] == OpName(a.op);
    switch (a.op) {
      case Op::kProgram:
        break;
      case Op::kEarn:
      case Op::kRedeem:
        same = same && e["customer"] == a.customer && e["order_id"] == a.order_id &&
               e["points"] == a.points;
        break;
      case Op::kCode:
        same = same && e["customer"] == a.customer;
        break;
      case Op::kReferral:
        same =
            same && e["customer"] == a.customer && e["points"] == kFriendPoints + kAdvocatePoints;
        break;
    }
    if (!same) {
      problems.Add("entry " + std::to_string(i) + " " + e.dump() + " does not match its request " +
                   a.body);
    }
  }
  CHECK(all_accounts == 0);

  // Acknowledged writes are there; refused ones are not; settled ones replay as they were.
  size_t late_originals = 0;
  for (const auto& [key, a] : by_key) {
    bool written = entry_of_key.count(key) > 0;
    if (a->status == 0) {
      problems.Add(key + " " + a->body + " never got an answer");
    } else if (a->status == 201) {
      if (!written) problems.Add("acknowledged " + key + " " + a->body + " is missing");
      HttpReply again = client.Send(server.port(), "POST", a->target, a->body, key);
      if (again.status != 201 || !again.replayed() || again.body != a->reply) {
        problems.Add("replay of " + key + " answered " + std::to_string(again.status) + " " +
                     again.body + " instead of " + a->reply);
      }
    } else if (written && a->abandoned) {
      ++late_originals;  // a send the client gave up on applied after a later one was refused
    } else if (written) {
      problems.Add(key + " " + a->body + " answered " + std::to_string(a->status) + " " + a->reply +
                   " but was written");
    }
  }
  {
    INFO(problems.count() << " problems in the log");
    for (const std::string& p : problems.list()) UNSCOPED_INFO(p);
    CHECK(problems.count() == 0);
  }

  // Nothing applied twice: one earn per order id, and exactly the acknowledged ones.
  auto earns = testing::GetAllPages(client, server,
                                    "/v1/ledger/entries?program=" + kProgramId + "&type=earn");
  REQUIRE(earns);
  std::map<std::string, int> per_order;
  for (const Json& e : *earns) ++per_order[e["order_id"].get<std::string>()];
  std::set<std::string> acked_orders;
  for (const ClientThread& c : clients) {
    for (const Attempt& a : c.attempts) {
      if (a.op == Op::kEarn && a.status == 201) acked_orders.insert(a.order_id);
    }
  }
  size_t doubled = 0;
  for (const auto& [order, count] : per_order) {
    if (count != 1) ++doubled;
    CHECK(acked_orders.count(order) == 1);
  }
  CHECK(doubled == 0);
  CHECK(per_order.size() == acked_orders.size());

  // The balances report agrees with the postings and is never negative; the liability report
  // closes at the sum of available and reserved, and rolls forward.
  auto rows =
      testing::GetAllPages(client, server, "/v1/programs/" + kProgramId + "/reports/balances");
  REQUIRE(rows);
  int64_t owed = 0;
  std::set<std::string> reported;
  for (const Json& row : *rows) {
    const std::string c = row["customer"].get<std::string>();
    INFO("balances row " << row.dump());
    reported.insert(c);
    for (const char* kind : {"available", "pending", "reserved"}) {
      CHECK(row[kind].get<int64_t>() >= 0);
      CHECK(row[kind].get<int64_t>() == CustomerBalance(balances, c, kind));
    }
    owed += row["available"].get<int64_t>() + row["reserved"].get<int64_t>();
  }
  for (const auto& [account, balance] : balances) {
    if (balance == 0 || account.find(":customer:") == std::string::npos) continue;
    std::string c = account.substr(kProgramId.size() + 10);
    c = c.substr(0, c.rfind(':'));
    CHECK(reported.count(c) == 1);
  }
  HttpReply liability =
      testing::GetAnswered(client, server, "/v1/programs/" + kProgramId + "/reports/liability");
  REQUIRE(liability.status == 200);
  Json l = Json::parse(liability.body);
  INFO("liability " << l.dump());
  CHECK(l["closing"].get<int64_t>() == owed);
  CHECK(l["opening"].get<int64_t>() + l["earned"].get<int64_t>() + l["referral"].get<int64_t>() +
            l["adjusted"].get<int64_t>() - l["redeemed"].get<int64_t>() -
            l["expired"].get<int64_t>() - l["reversed"].get<int64_t>() ==
        l["closing"].get<int64_t>());

  // A clean stop, then the audit tool on the directory.
  CHECK(server.Stop() == 0);
  testing::CommandResult audit = testing::RunCommand({TALLY_AUDIT_PATH, "verify", "--data", data});
  INFO("tally-audit: " << audit.output);
  CHECK(audit.exit_code == 0);

  auto finished = std::chrono::steady_clock::now();
  WARN("bank: " << kills << " kills, " << entries.size() << " entries, " << acked
                << " acknowledged writes (" << replayed << " first answered by a replay), "
                << refused << " refused, " << retried << " sent more than once (" << late_originals
                << " refused but applied by an abandoned send), " << sends << " sends; load "
                << std::chrono::duration<double>(load_done - started).count() << " s, checks "
                << std::chrono::duration<double>(finished - load_done).count() << " s");
}

}  // namespace tally
