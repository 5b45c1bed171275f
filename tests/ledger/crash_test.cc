// Crash test: a child process appends concurrently and reports each acknowledgement to the
// parent over a pipe; the parent kills it with SIGKILL at a random moment, reopens the store and
// checks that no acknowledged entry is missing and that Rebuild equals stored state.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "ledger/apply.h"
#include "ledger/keys.h"
#include "ledger/ledger.h"
#include "ledger/rebuild.h"
#include "tests/ledger/ledger_test_util.h"
#include "tests/test_util.h"

namespace tally {
namespace {

// The child: appends from four threads until killed, writing "key id points\n" per ack.
[[noreturn]] void ChildMain(const std::string& dir, int round, int fd) {
  LedgerOptions o;
  o.dir = dir;
  auto ledger = Ledger::Open(o);
  if (!ledger.ok()) _exit(3);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0;; ++i) {
        std::string key =
            "r" + std::to_string(round) + "-t" + std::to_string(t) + "-" + std::to_string(i);
        int64_t points = (i % 9) + 1;
        auto r =
            (*ledger)->Append(testing::Transfer("acme", "c" + std::to_string(i % 7), points, key));
        if (!r.ok()) _exit(4);
        std::string line =
            key + " " + std::to_string(r->first_id) + " " + std::to_string(points) + "\n";
        if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(5);
      }
    });
  }
  for (auto& th : threads) th.join();
  _exit(0);
}

}  // namespace

TEST_CASE("No acknowledged entry is lost across twenty SIGKILLs", "[ledger][crash][slow]") {
  testing::TempDir dir;
  std::mt19937 rng(12345);
  std::map<std::string, std::pair<uint64_t, int64_t>> acked;  // key -> (id, points)
  for (int round = 0; round < 20; ++round) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      ChildMain(dir.path(), round, fds[1]);
    }
    close(fds[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    REQUIRE(WIFSIGNALED(status));
    std::string data;
    char buf[65536];
    for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;)
      data.append(buf, static_cast<size_t>(n));
    close(fds[0]);
    std::istringstream lines(data);
    std::string key;
    uint64_t id;
    int64_t points;
    while (lines >> key >> id >> points) acked[key] = {id, points};

    LedgerOptions o;
    o.dir = dir.path();
    auto ledger = Ledger::Open(o);
    REQUIRE(ledger.ok());
    INFO("round " << round << ", " << acked.size() << " acknowledged so far");
    auto view = (*ledger)->Read();
    for (const auto& [k, want] : acked) {
      auto rec = view->Get(Cf::kIdempotency, IdempotencyKey("k1", k));
      REQUIRE(rec.ok());
      REQUIRE(rec->has_value());
      auto r = DecodeIdempotencyRecord(**rec);
      REQUIRE(r.ok());
      CHECK(r->first_id == want.first);
      auto e = (*ledger)->GetEntry(want.first);
      REQUIRE(e.ok());
      CHECK(e->idempotency_key == k);
      CHECK(e->postings[0].points == want.second);
    }
    auto snap = (*ledger)->store()->NewSnapshot();
    RebuildResult rebuilt;
    std::vector<Discrepancy> found;
    REQUIRE(RebuildState(*(*ledger)->store(), snap.get(), &rebuilt, &found).ok());
    REQUIRE(CompareDerivedState(*(*ledger)->store(), snap.get(), rebuilt, &found).ok());
    for (const auto& d : found) UNSCOPED_INFO(d.ToString());
    CHECK(found.empty());
    CHECK(rebuilt.entries == (*ledger)->size());
  }
  CHECK(acked.size() > 100);
}

}  // namespace tally
