#include "ledger/ledger.h"

#include <catch2/catch.hpp>
#include <future>
#include <map>
#include <new>
#include <optional>
#include <random>
#include <thread>

#include "ledger/accounts.h"
#include "ledger/apply.h"
#include "ledger/coding.h"
#include "ledger/keys.h"
#include "ledger/merkle.h"
#include "ledger/rebuild.h"
#include "tests/ledger/ledger_test_util.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using testing::Balance;
using testing::Eventually;
using testing::TempDir;
using testing::Transfer;

std::unique_ptr<Ledger> OpenLedger(const std::string& dir, const Clock* clock = nullptr,
                                   std::function<Status()> before_write = nullptr) {
  LedgerOptions o;
  o.dir = dir;
  o.clock = clock;
  o.before_write = std::move(before_write);
  auto l = Ledger::Open(o);
  REQUIRE(l.ok());
  return std::move(l).value();
}

std::vector<Discrepancy> CheckRebuild(const Ledger& ledger) {
  auto snap = ledger.store()->NewSnapshot();
  RebuildResult rebuilt;
  std::vector<Discrepancy> found;
  REQUIRE(RebuildState(*ledger.store(), snap.get(), &rebuilt, &found).ok());
  REQUIRE(CompareDerivedState(*ledger.store(), snap.get(), rebuilt, &found).ok());
  for (const auto& d : found) UNSCOPED_INFO(d.ToString());
  return found;
}

// A sync held by a test (LedgerOptions::before_sync) until `released`, or for at most 30 s: if a
// REQUIRE fails before the test releases it, the appends waiting on it still finish, and the test
// fails instead of hanging in their futures' destructors.
void Hold(const std::shared_future<void>& released) { released.wait_for(std::chrono::seconds(30)); }

}  // namespace

TEST_CASE("Appends are numbered from zero and balances follow the postings", "[ledger]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  auto a = ledger->Append(Transfer("acme", "alice", 100, "k-a"));
  REQUIRE(a.ok());
  CHECK(a->first_id == 0);
  CHECK(a->count == 1);
  CHECK_FALSE(a->replayed);
  auto b = ledger->Append(Transfer("acme", "alice", -30, "k-b"));
  REQUIRE(b.ok());
  CHECK(b->first_id == 1);
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 70);
  CHECK(Balance(*ledger, "acme:adjustment") == -70);
  auto e = ledger->GetEntry(1);
  REQUIRE(e.ok());
  CHECK(e->postings[0].balance_after == 70);
  CHECK(e->idempotency_key == "k-b");
  CHECK(ledger->size() == 2);
  CHECK(CheckRebuild(*ledger).empty());
}

TEST_CASE("A refused decision writes nothing", "[ledger]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  auto r = ledger->Append(Transfer("acme", "bob", -1, "k"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().reason() == "insufficient_points");
  CHECK(ledger->size() == 0);
  // The key was not consumed: the same key may now succeed with another request.
  CHECK(ledger->Append(Transfer("acme", "bob", 5, "k")).ok());
}

TEST_CASE("A repeated request is replayed and writes nothing", "[ledger][idempotency]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  auto first = ledger->Append(Transfer("acme", "alice", 100, "same"));
  REQUIRE(first.ok());
  auto again = ledger->Append(Transfer("acme", "alice", 100, "same"));
  REQUIRE(again.ok());
  CHECK(again->replayed);
  CHECK(again->first_id == first->first_id);
  CHECK(ledger->size() == 1);
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 100);

  // The key is scoped to the actor: another actor's same key is a new request.
  auto other = ledger->Append(Transfer("acme", "alice", 100, "same", "", "k2"));
  REQUIRE(other.ok());
  CHECK_FALSE(other->replayed);
  CHECK(ledger->size() == 2);
}

TEST_CASE("The same key with another request is refused", "[ledger][idempotency]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  REQUIRE(ledger->Append(Transfer("acme", "alice", 100, "same")).ok());
  auto conflict = ledger->Append(Transfer("acme", "alice", 101, "same"));
  REQUIRE_FALSE(conflict.ok());
  CHECK(conflict.status().reason() == "idempotency_key_reused");
  CHECK(ledger->size() == 1);
}

TEST_CASE("Replays survive a restart", "[ledger][idempotency]") {
  TempDir dir;
  {
    auto ledger = OpenLedger(dir.path());
    REQUIRE(ledger->Append(Transfer("acme", "alice", 100, "same")).ok());
  }
  auto ledger = OpenLedger(dir.path());
  auto again = ledger->Append(Transfer("acme", "alice", 100, "same"));
  REQUIRE(again.ok());
  CHECK(again->replayed);
  CHECK(ledger->size() == 1);
}

TEST_CASE("Concurrent duplicates in one commit group apply once", "[ledger][idempotency]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  std::vector<std::thread> threads;
  std::atomic<int> replayed{0}, written{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&] {
      auto r = ledger->Append(Transfer("acme", "alice", 10, "dup"));
      REQUIRE(r.ok());
      (r->replayed ? replayed : written)++;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(written == 1);
  CHECK(replayed == 15);
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 10);
}

TEST_CASE("A business key is claimed once, whatever the idempotency key", "[ledger]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  REQUIRE(ledger->Append(Transfer("acme", "alice", 50, "k1", "order-1")).ok());
  auto second = ledger->Append(Transfer("acme", "alice", 50, "k2", "order-1"));
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().code() == Code::kAlreadyExists);
  CHECK(second.status().reason() == "order_already_awarded");
  // Another program may use the same order id.
  CHECK(ledger->Append(Transfer("other", "alice", 50, "k3", "order-1")).ok());
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 50);
}

TEST_CASE("A balance that would overflow is refused", "[ledger]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  REQUIRE(ledger->Append(Transfer("acme", "alice", INT64_MAX, "a")).ok());
  auto r = ledger->Append(Transfer("acme", "alice", 1, "b"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kInvalidArgument);
  CHECK(ledger->size() == 1);
}

TEST_CASE("A customer's entries page newest first without repeats", "[ledger]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  for (int i = 0; i < 23; ++i) {
    REQUIRE(ledger->Append(Transfer("acme", "alice", i + 1, "a" + std::to_string(i))).ok());
    REQUIRE(ledger->Append(Transfer("acme", "bob", 1, "b" + std::to_string(i))).ok());
  }
  std::vector<uint64_t> seen;
  std::optional<uint64_t> cursor;
  for (int page = 0; page < 10; ++page) {
    auto entries = ledger->CustomerEntries("acme", "alice", cursor, 5);
    REQUIRE(entries.ok());
    if (entries->empty()) break;
    for (const Entry& e : *entries) {
      CHECK(e.customer == "alice");
      seen.push_back(e.id);
    }
    cursor = entries->back().id;
  }
  REQUIRE(seen.size() == 23);
  for (size_t i = 1; i < seen.size(); ++i) CHECK(seen[i] < seen[i - 1]);
  CHECK(seen.front() == 44);
  CHECK(ledger->CustomerEntries("acme", "carol", std::nullopt, 5)->empty());
  CHECK(ledger->CustomerEntries("acme", "alice", 0, 5)->empty());
}

TEST_CASE("Entry times never decrease even when the clock goes back", "[ledger]") {
  TempDir dir;
  ManualClock clock(1'000'000'000);
  auto ledger = OpenLedger(dir.path(), &clock);
  REQUIRE(ledger->Append(Transfer("acme", "alice", 1, "a")).ok());
  clock.Set(500);
  REQUIRE(ledger->Append(Transfer("acme", "alice", 1, "b")).ok());
  CHECK(ledger->GetEntry(0)->time_us == 1'000'000'000);
  CHECK(ledger->GetEntry(1)->time_us == 1'000'000'000);
  clock.Set(2'000'000'000);
  REQUIRE(ledger->Append(Transfer("acme", "alice", 1, "c")).ok());
  CHECK(ledger->GetEntry(2)->time_us == 2'000'000'000);
}

TEST_CASE("After a failed write the ledger refuses every write", "[ledger][failstop]") {
  TempDir dir;
  std::atomic<bool> fail{false};
  {
    auto ledger = OpenLedger(dir.path(), nullptr, [&] {
      return fail ? Status::Unavailable("injected fsync error") : Status::Ok();
    });
    REQUIRE(ledger->Append(Transfer("acme", "alice", 10, "a")).ok());
    fail = true;
    auto r = ledger->Append(Transfer("acme", "alice", 10, "b"));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().reason() == "ledger_stopped");
    fail = false;  // even once the fault is gone, it stays stopped until reopened
    auto after = ledger->Append(Transfer("acme", "alice", 10, "c"));
    REQUIRE_FALSE(after.ok());
    CHECK(after.status().reason() == "ledger_stopped");
    CHECK(ledger->stopped());
    CHECK(ledger->size() == 1);
  }
  auto ledger = OpenLedger(dir.path());
  CHECK(ledger->size() == 1);
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 10);
  CHECK(ledger->Append(Transfer("acme", "alice", 10, "b")).ok());
  CHECK(CheckRebuild(*ledger).empty());
}

TEST_CASE("Submitted requests complete on the ledger's thread, or at once when refused",
          "[ledger]") {
  TempDir dir;
  std::atomic<bool> fail{false};
  auto ledger = OpenLedger(dir.path(), nullptr, [&] {
    return fail ? Status::Unavailable("injected fsync error") : Status::Ok();
  });
  const auto caller = std::this_thread::get_id();
  std::promise<std::pair<Result<AppendResult>, std::thread::id>> second;
  // A completion that throws (memory running out) costs its caller the answer, nothing more:
  // the rest of its group completes, and the writer goes on.
  ledger->Submit(Transfer("acme", "alice", 10, "a"),
                 [](Result<AppendResult>) { throw std::bad_alloc(); });
  ledger->Submit(Transfer("acme", "alice", 5, "b"), [&](Result<AppendResult> r) {
    second.set_value({std::move(r), std::this_thread::get_id()});
  });
  auto [done, on] = second.get_future().get();
  REQUIRE(done.ok());
  CHECK(on != caller);
  CHECK(ledger->Append(Transfer("acme", "alice", 1, "c")).ok());
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 16);
  // Once stopped, a submission is refused on the caller's thread, before it is queued.
  fail = true;
  CHECK_FALSE(ledger->Append(Transfer("acme", "alice", 1, "d")).ok());
  std::optional<Status> refused;
  std::thread::id refused_on;
  ledger->Submit(Transfer("acme", "alice", 1, "e"), [&](Result<AppendResult> r) {
    refused = r.status();
    refused_on = std::this_thread::get_id();
  });
  REQUIRE(refused.has_value());
  CHECK(refused->reason() == "ledger_stopped");
  CHECK(refused_on == caller);
}

// The writer writes a group without syncing it and goes on to decide the next; the syncer
// answers it once a sync covers it. Until then no reader sees it, nothing decided on top of it is
// answered, and nothing more is written.
TEST_CASE("A group is shown and answered only once a sync covers it", "[ledger][sync]") {
  TempDir dir;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> syncs{0};
  LedgerOptions o;
  o.dir = dir.path();
  o.before_sync = [&] {
    ++syncs;
    Hold(released);
    return Status::Ok();
  };
  auto opened = Ledger::Open(o);
  REQUIRE(opened.ok());
  auto ledger = std::move(opened).value();
  auto written = [&](uint64_t id) {  // in the store's latest state, durable or not
    auto v = ledger->store()->Get(Cf::kEntries, EntryKey(id));
    return v.ok() && v->has_value();
  };
  const CheckpointInfo empty = ledger->LatestCheckpoint();
  auto a = std::async(std::launch::async,
                      [&] { return ledger->Append(Transfer("acme", "alice", 10, "a")); });
  REQUIRE(Eventually([&] { return syncs == 1; }, std::chrono::seconds(10)));
  REQUIRE(written(0));
  CHECK(ledger->size() == 0);
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 0);
  CHECK(ledger->GetEntry(0).status().code() == Code::kNotFound);
  CHECK(ledger->GetReceipt(0).status().code() == Code::kNotFound);
  CHECK(ledger->LatestCheckpoint().note == empty.note);
  CHECK_FALSE(ledger->GetCheckpoint(1)->has_value());
  CHECK(ledger->CustomerEntries("acme", "alice", std::nullopt, 5)->empty());
  uint64_t holds = 99;
  ledger->Read(&holds);
  CHECK(holds == 0);

  // Meanwhile the writer decides the next requests on top of the unsynced group (b spends
  // points only it holds), but writes nothing more until that group is answered: the WAL never
  // holds two groups not yet synced. A replay of the first request is not answered before the
  // first group is durable either.
  auto b = std::async(std::launch::async,
                      [&] { return ledger->Append(Transfer("acme", "alice", -4, "b")); });
  auto again = std::async(std::launch::async,
                          [&] { return ledger->Append(Transfer("acme", "alice", 10, "a")); });
  CHECK(a.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout);
  CHECK(again.wait_for(std::chrono::milliseconds(0)) == std::future_status::timeout);
  CHECK(b.wait_for(std::chrono::milliseconds(0)) == std::future_status::timeout);
  CHECK_FALSE(written(1));
  CHECK(ledger->size() == 0);

  release.set_value();
  auto ra = a.get(), rb = b.get(), ragain = again.get();
  REQUIRE(ra.ok());
  REQUIRE(rb.ok());
  REQUIRE(ragain.ok());
  CHECK(ra->first_id == 0);
  CHECK(rb->first_id == 1);
  CHECK(ragain->replayed);
  CHECK(ragain->first_id == 0);
  CHECK(ledger->size() == 2);
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 6);
  CHECK(ledger->GetReceipt(1).ok());
  CHECK(ledger->LatestCheckpoint().size == 2);
}

TEST_CASE("A backup that copies a group not yet durable waits for it", "[ledger][sync]") {
  TempDir dir, out;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> syncs{0};
  LedgerOptions o;
  o.dir = dir.path();
  o.before_sync = [&] {
    if (++syncs == 2) Hold(released);
    return Status::Ok();
  };
  auto ledger = std::move(Ledger::Open(o)).value();
  REQUIRE(ledger->Append(Transfer("acme", "alice", 10, "a")).ok());
  auto b = std::async(std::launch::async,
                      [&] { return ledger->Append(Transfer("acme", "alice", 5, "b")); });
  REQUIRE(Eventually([&] { return syncs == 2; }, std::chrono::seconds(10)));
  auto backup =
      std::async(std::launch::async, [&] { return ledger->Backup(out.path() + "/copy"); });
  CHECK(backup.wait_for(std::chrono::milliseconds(200)) == std::future_status::timeout);
  release.set_value();
  REQUIRE(b.get().ok());
  auto size = backup.get();
  REQUIRE(size.ok());
  CHECK(*size == 2);
}

TEST_CASE("A failed sync stops the ledger, and nothing it should have covered is shown",
          "[ledger][sync][failstop]") {
  TempDir dir;
  std::atomic<bool> fail{false};
  {
    LedgerOptions o;
    o.dir = dir.path();
    o.before_sync = [&] { return fail ? Status::Unavailable("injected") : Status::Ok(); };
    auto ledger = std::move(Ledger::Open(o)).value();
    REQUIRE(ledger->Append(Transfer("acme", "alice", 10, "a")).ok());
    fail = true;
    auto r = ledger->Append(Transfer("acme", "alice", 5, "b"));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().reason() == "ledger_stopped");
    CHECK(ledger->stopped());
    CHECK(ledger->size() == 1);
    CHECK(ledger->GetEntry(1).status().code() == Code::kNotFound);
    CHECK(Balance(*ledger, "acme:customer:alice:available") == 10);
    fail = false;  // stays stopped until reopened
    CHECK(ledger->Append(Transfer("acme", "alice", 1, "c")).status().reason() == "ledger_stopped");
  }
  // The refused write had reached the WAL (only its sync failed), so it may be there after a
  // reopen: its outcome was unknown to the caller, whose retry with the same key applies it
  // exactly once either way.
  auto ledger = OpenLedger(dir.path());
  auto retry = ledger->Append(Transfer("acme", "alice", 5, "b"));
  REQUIRE(retry.ok());
  CHECK(retry->first_id == 1);
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 15);
  CHECK(ledger->size() == 2);
  CHECK(CheckRebuild(*ledger).empty());
}

TEST_CASE("A write decided during a sync that fails gets the stop's own answer",
          "[ledger][sync][failstop]") {
  TempDir dir;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> syncs{0};
  LedgerOptions o;
  o.dir = dir.path();
  o.before_sync = [&]() -> Status {
    if (++syncs < 2) return Status::Ok();
    Hold(released);
    return Status::Unavailable("injected");
  };
  auto ledger = std::move(Ledger::Open(o)).value();
  REQUIRE(ledger->Append(Transfer("acme", "alice", 10, "a")).ok());
  auto b = std::async(std::launch::async,
                      [&] { return ledger->Append(Transfer("acme", "alice", 5, "b")); });
  REQUIRE(Eventually([&] { return syncs == 2; }, std::chrono::seconds(10)));
  // c is decided and signed while b's sync is held, then waits for b's answer to be written.
  auto c = std::async(std::launch::async,
                      [&] { return ledger->Append(Transfer("acme", "alice", 1, "c")); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  release.set_value();
  auto rb = b.get();
  REQUIRE_FALSE(rb.ok());
  CHECK(rb.status().message() == "write failed, ledger stopped: injected");
  auto rc = c.get();
  REQUIRE_FALSE(rc.ok());
  CHECK(rc.status().reason() == "ledger_stopped");
  CHECK(rc.status().message() == "ledger stopped after a failed write");
  CHECK(ledger->size() == 1);
}

TEST_CASE("Eight threads appending ten thousand times each keep every balance exact",
          "[ledger][concurrency]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  constexpr int kThreads = 8, kAppends = 10000, kCustomers = 16;
  std::vector<std::thread> threads;
  std::atomic<int> acked{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kAppends; ++i) {
        std::string customer = "c" + std::to_string((t * kAppends + i) % kCustomers);
        auto r = ledger->Append(
            Transfer("acme", customer, (i % 7) + 1, std::to_string(t) + "-" + std::to_string(i)));
        if (r.ok() && !r->replayed) acked++;
      }
    });
  }
  for (auto& th : threads) th.join();
  REQUIRE(acked == kThreads * kAppends);
  CHECK(ledger->size() == kThreads * kAppends);
  std::map<std::string, int64_t> want;
  int64_t total = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kAppends; ++i) {
      want["c" + std::to_string((t * kAppends + i) % kCustomers)] += (i % 7) + 1;
      total += (i % 7) + 1;
    }
  }
  for (const auto& [c, points] : want) {
    CHECK(Balance(*ledger, CustomerAccount("acme", c, acct::kAvailable)) == points);
  }
  CHECK(Balance(*ledger, "acme:adjustment") == -total);
  CHECK(CheckRebuild(*ledger).empty());
}

TEST_CASE("Rebuild finds a stored balance that was altered", "[ledger][rebuild]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  REQUIRE(ledger->Append(Transfer("acme", "alice", 10, "a")).ok());
  REQUIRE(CheckRebuild(*ledger).empty());
  StoreBatch batch(*ledger->store());
  batch.Put(Cf::kBalances, "acme:customer:alice:available", EncodeI64(11));
  REQUIRE(ledger->store()->Write(batch).ok());
  auto found = CheckRebuild(*ledger);
  REQUIRE(found.size() == 1);
  CHECK(found[0].cf == "balances");
}

TEST_CASE("The ledger reopens with its tree, checkpoint and key", "[ledger]") {
  TempDir dir;
  CheckpointInfo before;
  {
    auto ledger = OpenLedger(dir.path());
    for (int i = 0; i < 10; ++i) {
      REQUIRE(ledger->Append(Transfer("acme", "alice", 1, std::to_string(i))).ok());
    }
    before = ledger->LatestCheckpoint();
    CHECK(before.size == 10);
  }
  auto ledger = OpenLedger(dir.path());
  CheckpointInfo after = ledger->LatestCheckpoint();
  CHECK(after.size == 10);
  CHECK(after.root == before.root);
  CHECK(after.note == before.note);
  REQUIRE(ledger->Append(Transfer("acme", "alice", 1, "next")).ok());
  CHECK(ledger->LatestCheckpoint().size == 11);
}

TEST_CASE("CustomerOfKey names the customer of each key a customer view reads", "[ledger]") {
  std::string_view program, customer;  // views into the key
  const std::string record = CustomerKey("acme", "alice");
  REQUIRE(CustomerOfKey(Cf::kCustomers, record, &program, &customer));
  CHECK((program == "acme" && customer == "alice"));
  // The expiry and lot id of a lot key hold NUL bytes; only the first two NULs separate.
  const std::string lot = LotKey("acme", "bob", 256, 0);
  REQUIRE(CustomerOfKey(Cf::kLots, lot, &program, &customer));
  CHECK((program == "acme" && customer == "bob"));
  const std::string account = CustomerAccount("p.1", "c@x", acct::kReserved);
  REQUIRE(CustomerOfKey(Cf::kBalances, account, &program, &customer));
  CHECK((program == "p.1" && customer == "c@x"));
  CHECK_FALSE(
      CustomerOfKey(Cf::kBalances, ProgramAccount("acme", acct::kIssued), &program, &customer));
  CHECK_FALSE(CustomerOfKey(Cf::kLots, "acme", &program, &customer));
  CHECK_FALSE(CustomerOfKey(Cf::kEntries, record, &program, &customer));
}

TEST_CASE("A commit raises the change mark of each customer it changes, before it is read",
          "[ledger]") {
  TempDir dir;
  auto ledger = OpenLedger(dir.path());
  CHECK(ledger->CustomerChangedAt("acme", "alice") == 0);
  REQUIRE(ledger->Append(Transfer("acme", "alice", 5, "k1")).ok());
  CHECK(ledger->CustomerChangedAt("acme", "alice") == 1);
  uint64_t holds = 0;
  auto view = ledger->Read(&holds);
  CHECK(holds == 1);
  REQUIRE(ledger->Append(Transfer("acme", "bob", 5, "k2")).ok());
  CHECK(ledger->CustomerChangedAt("acme", "alice") == 1);
  CHECK(ledger->CustomerChangedAt("acme", "bob") == 2);
  ledger->Read(&holds);
  CHECK(holds == 2);
}

}  // namespace tally
