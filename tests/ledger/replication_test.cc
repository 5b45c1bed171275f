// Replication through an in-memory GroupLog: the ledger's half of tallyd --replicate/--follow.
// The NATS JetStream transport is tested end to end elsewhere; these tests pin the ledger's
// rules: publish before writing, apply through the same path as Rebuild, fence on takeover.
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include "ledger/group_log.h"
#include "ledger/ledger.h"
#include "ledger/rebuild.h"
#include "tests/ledger/ledger_test_util.h"
#include "tests/test_util.h"

namespace tally {
namespace {

class MemoryGroupLog final : public GroupLog {
 public:
  Result<uint64_t> Publish(const CommitGroup& g, uint64_t after_seq) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (down_) return Status::Unavailable("log down");
    if (after_seq != groups_.size()) {
      return Status::FailedPrecondition("expected last sequence " + std::to_string(after_seq),
                                        "wrong_last_seq");
    }
    groups_.push_back(g);
    if (lose_next_ack_) {
      lose_next_ack_ = false;
      return Status::Unavailable("acknowledgement lost");
    }
    return groups_.size();
  }
  Result<std::vector<std::pair<uint64_t, CommitGroup>>> ReadAfter(uint64_t after_seq,
                                                                  size_t max) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (down_) return Status::Unavailable("log down");
    std::vector<std::pair<uint64_t, CommitGroup>> out;
    for (uint64_t s = after_seq + 1; s <= groups_.size() && out.size() < max; ++s) {
      out.emplace_back(s, groups_[s - 1]);
    }
    return out;
  }
  void set_down(bool down) {
    std::lock_guard<std::mutex> lock(mu_);
    down_ = down;
  }
  void LoseNextAck() {
    std::lock_guard<std::mutex> lock(mu_);
    lose_next_ack_ = true;
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return groups_.size();
  }

 private:
  std::mutex mu_;
  std::vector<CommitGroup> groups_;
  bool down_ = false;
  bool lose_next_ack_ = false;
};

std::unique_ptr<Ledger> Open(const std::string& dir, GroupLog* log, bool follower) {
  LedgerOptions o;
  o.dir = dir;
  o.group_log = log;
  o.follower = follower;
  auto l = Ledger::Open(o);
  REQUIRE(l.ok());
  return std::move(l).value();
}

// A follower's directory holds the primary's signing key (API.md: copy it before first start).
void CopyKey(const std::string& from, const std::string& to) {
  std::filesystem::create_directories(to);
  for (const char* f : {"signing.key", "signing.pub"}) {
    std::filesystem::copy_file(from + "/" + f, to + "/" + f);
  }
}

void Follow(Ledger& follower, GroupLog& log) {
  for (;;) {
    auto groups = log.ReadAfter(follower.stream_seq(), 64);
    REQUIRE(groups.ok());
    if (groups->empty()) return;
    for (const auto& [seq, g] : *groups) REQUIRE(follower.ApplyGroup(g, seq).ok());
  }
}

bool RebuildClean(const Ledger& l) {
  auto snap = l.store()->NewSnapshot();
  RebuildResult r;
  std::vector<Discrepancy> found;
  REQUIRE(RebuildState(*l.store(), snap.get(), &r, &found).ok());
  REQUIRE(CompareDerivedState(*l.store(), snap.get(), r, &found).ok());
  for (const auto& d : found) UNSCOPED_INFO(d.ToString());
  return found.empty();
}

void Load(Ledger& l, int threads, int each, const std::string& tag) {
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < each; ++i) {
        auto r = l.Append(testing::Transfer("acme", "c" + std::to_string(i % 7), 1 + i % 3,
                                            tag + std::to_string(t) + "-" + std::to_string(i)));
        REQUIRE(r.ok());
      }
    });
  }
  for (auto& t : ts) t.join();
}

}  // namespace

TEST_CASE("A follower applying the log equals the primary", "[replication]") {
  testing::TempDir a, b;
  MemoryGroupLog log;
  auto primary = Open(a.path(), &log, false);
  CHECK(primary->role() == ReplicationRole::kPrimary);
  CopyKey(a.path(), b.path());
  auto follower = Open(b.path(), &log, true);
  CHECK(follower->role() == ReplicationRole::kFollower);
  std::thread applier([&] {
    for (int i = 0; i < 50; ++i) Follow(*follower, log);
  });
  Load(*primary, 8, 50, "k");
  applier.join();
  Follow(*follower, log);
  CHECK(follower->size() == 400);
  CHECK(follower->LatestCheckpoint().note == primary->LatestCheckpoint().note);
  CHECK(follower->LatestCheckpoint().root == primary->LatestCheckpoint().root);
  for (int c = 0; c < 7; ++c) {
    std::string account = "acme:customer:c" + std::to_string(c) + ":available";
    CHECK(testing::Balance(*follower, account) == testing::Balance(*primary, account));
  }
  CHECK(RebuildClean(*follower));
  // A follower refuses writes.
  auto w = follower->Append(testing::Transfer("acme", "x", 1, "f1"));
  REQUIRE_FALSE(w.ok());
  CHECK(w.status().reason() == "not_primary");
}

TEST_CASE("A follower raises the change marks of the customers each applied group changes",
          "[replication]") {
  testing::TempDir a, b;
  MemoryGroupLog log;
  auto primary = Open(a.path(), &log, false);
  CopyKey(a.path(), b.path());
  auto follower = Open(b.path(), &log, true);
  REQUIRE(primary->Append(testing::Transfer("acme", "alice", 5, "k1")).ok());
  REQUIRE(primary->Append(testing::Transfer("acme", "bob", 5, "k2")).ok());
  Follow(*follower, log);
  CHECK(follower->CustomerChangedAt("acme", "alice") == 1);
  CHECK(follower->CustomerChangedAt("acme", "bob") == 2);
  CHECK(follower->CustomerChangedAt("acme", "carol") == 0);
}

TEST_CASE("A primary writes nothing the log did not take, and resumes when it returns",
          "[replication]") {
  testing::TempDir a;
  MemoryGroupLog log;
  auto primary = Open(a.path(), &log, false);
  REQUIRE(primary->Append(testing::Transfer("acme", "alice", 5, "a")).ok());
  log.set_down(true);
  auto r = primary->Append(testing::Transfer("acme", "alice", 5, "b"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().reason() == "replication");
  CHECK(primary->size() == 1);
  CHECK(testing::Balance(*primary, "acme:customer:alice:available") == 5);
  log.set_down(false);
  REQUIRE(primary->Append(testing::Transfer("acme", "alice", 5, "b")).ok());
  CHECK(primary->size() == 2);
  CHECK(log.size() == 2);
  CHECK(RebuildClean(*primary));
}

TEST_CASE("A lost acknowledgement is recovered from the log, not written twice", "[replication]") {
  testing::TempDir a;
  MemoryGroupLog log;
  auto primary = Open(a.path(), &log, false);
  log.LoseNextAck();
  auto r = primary->Append(testing::Transfer("acme", "alice", 5, "a"));
  REQUIRE_FALSE(r.ok());  // the outcome was unknown to the primary
  // The retry finds the group in the log, applies it, and answers as a replay.
  auto again = primary->Append(testing::Transfer("acme", "alice", 5, "a"));
  REQUIRE(again.ok());
  CHECK(again->replayed);
  CHECK(primary->size() == 1);
  CHECK(primary->role() == ReplicationRole::kPrimary);
  REQUIRE(primary->Append(testing::Transfer("acme", "alice", 5, "b")).ok());
  CHECK(testing::Balance(*primary, "acme:customer:alice:available") == 10);
  CHECK(RebuildClean(*primary));
}

TEST_CASE("A promoted follower fences the old primary", "[replication]") {
  testing::TempDir a, b;
  MemoryGroupLog log;
  auto old_primary = Open(a.path(), &log, false);
  CopyKey(a.path(), b.path());
  auto follower = Open(b.path(), &log, true);
  Load(*old_primary, 2, 20, "a");
  REQUIRE(follower->Promote().ok());
  CHECK(follower->role() == ReplicationRole::kPrimary);
  CHECK(follower->size() == 40);
  REQUIRE(follower->Append(testing::Transfer("acme", "bob", 3, "new-1")).ok());
  // The old primary still runs: nothing more it writes is acknowledged.
  auto stale = old_primary->Append(testing::Transfer("acme", "bob", 3, "old-1"));
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.status().reason() == "not_primary");
  auto again = old_primary->Append(testing::Transfer("acme", "bob", 3, "old-2"));
  REQUIRE_FALSE(again.ok());
  CHECK(again.status().reason() == "not_primary");
  CHECK(old_primary->role() == ReplicationRole::kFenced);
  // It did learn the new primary's group: the same log, the same root.
  CHECK(old_primary->LatestCheckpoint().root == follower->LatestCheckpoint().root);
  REQUIRE(follower->Append(testing::Transfer("acme", "bob", 3, "new-2")).ok());
  CHECK(testing::Balance(*follower, "acme:customer:bob:available") == 6);
  CHECK(RebuildClean(*follower));
  CHECK(RebuildClean(*old_primary));
}

TEST_CASE("A restarted primary takes the group it published before dying as its own",
          "[replication]") {
  testing::TempDir a;
  MemoryGroupLog log;
  {
    LedgerOptions o;
    o.dir = a.path();
    o.group_log = &log;
    o.before_write = [] { return Status::Internal("the process dies before its local write"); };
    auto dying = Ledger::Open(o);
    REQUIRE(dying.ok());
    REQUIRE_FALSE((*dying)->Append(testing::Transfer("acme", "alice", 5, "a")).ok());
  }
  REQUIRE(log.size() == 1);  // published, not written here
  auto primary = Open(a.path(), &log, false);
  auto again = primary->Append(testing::Transfer("acme", "alice", 5, "a"));
  REQUIRE(again.ok());
  CHECK(again->replayed);
  CHECK(primary->role() == ReplicationRole::kPrimary);  // not fenced by its own group
  REQUIRE(primary->Append(testing::Transfer("acme", "alice", 5, "b")).ok());
  CHECK(testing::Balance(*primary, "acme:customer:alice:available") == 10);
  CHECK(RebuildClean(*primary));
}

TEST_CASE("A promotion while the old primary keeps writing fences the old primary",
          "[replication]") {
  testing::TempDir a, b;
  MemoryGroupLog log;
  auto old_primary = Open(a.path(), &log, false);
  CopyKey(a.path(), b.path());
  auto follower = Open(b.path(), &log, true);
  std::mutex mu;
  std::vector<std::string> acked;
  std::thread writer([&] {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (int i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
      std::string key = "w" + std::to_string(i);
      auto r = old_primary->Append(testing::Transfer("acme", "c" + std::to_string(i % 3), 1, key));
      if (r.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        acked.push_back(key);
      } else if (old_primary->role() == ReplicationRole::kFenced) {
        return;
      }
    }
  });
  while (log.size() < 20) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Status promoted = follower->Promote();  // races the old primary's publishes
  writer.join();
  REQUIRE(promoted.ok());
  CHECK(follower->role() == ReplicationRole::kPrimary);
  CHECK(old_primary->role() == ReplicationRole::kFenced);
  REQUIRE(follower->Append(testing::Transfer("acme", "c0", 1, "new")).ok());
  // Every write the old primary acknowledged is in the new primary's log, once.
  for (const std::string& key : acked) {
    int i = std::stoi(key.substr(1));
    auto r = follower->Append(testing::Transfer("acme", "c" + std::to_string(i % 3), 1, key));
    REQUIRE(r.ok());
    CHECK(r->replayed);
  }
  CHECK(follower->size() == acked.size() + 1);
  CHECK(RebuildClean(*follower));
}

}  // namespace tally
