// The disk-full guard (LedgerOptions::min_free_bytes): below the threshold, writes are refused
// before they reach the writer or RocksDB, and reads keep working. And the storage engine's
// background threads: compactions at nice 19, flushes at the process's own priority.
#include <sys/resource.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ledger/keys.h"
#include "ledger/ledger.h"
#include "ledger/store.h"
#include "tests/ledger/ledger_test_util.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using testing::Balance;
using testing::TempDir;
using testing::Transfer;

constexpr uint64_t kMoreThanAnyDisk = uint64_t{1} << 62;

std::unique_ptr<Ledger> OpenWithGuard(const std::string& dir, uint64_t min_free_bytes,
                                      std::function<Status()> before_write = nullptr) {
  LedgerOptions o;
  o.dir = dir;
  o.min_free_bytes = min_free_bytes;
  o.before_write = std::move(before_write);
  auto l = Ledger::Open(o);
  REQUIRE(l.ok());
  return std::move(l).value();
}

// The nice value of each of this process's threads named `name` (/proc/self/task/TID/stat,
// field 19).
std::vector<int> NiceOfThreads(const std::string& name) {
  std::vector<int> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string line;
    if (!std::getline(comm, line) || line != name) continue;
    std::ifstream stat_file(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    // The fields after the command, which is in parentheses and may hold spaces, start with
    // field 3 (the state); skip to field 19.
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string skipped;
    for (int field_no = 3; field_no < 19; ++field_no) fields >> skipped;
    int nice = 0;
    if (fields >> nice) out.push_back(nice);
  }
  return out;
}

}  // namespace

TEST_CASE("Compactions run at nice 19, flushes at the process's own priority",
          "[ledger][storage]") {
  TempDir dir;
  auto store = Store::Open(dir.path(), Store::Options{});
  REQUIRE(store.ok());
  StoreBatch batch(**store);
  for (int i = 0; i < 1000; ++i) {
    batch.Put(Cf::kTree, TreeKey(5, static_cast<uint64_t>(i)), std::string(32, 'x'));
  }
  REQUIRE((*store)->Write(batch).ok());
  // Flushes the memtable (a flush thread), then rewrites the file (a compaction thread).
  REQUIRE((*store)->CompactRange(Cf::kTree, TreeKey(5, 0), TreeKey(6, 0)).ok());

  errno = 0;
  const int own = getpriority(PRIO_PROCESS, 0);
  REQUIRE(errno == 0);
  std::vector<int> compactions = NiceOfThreads("rocksdb:low");
  std::vector<int> flushes = NiceOfThreads("rocksdb:high");
  REQUIRE_FALSE(compactions.empty());
  REQUIRE_FALSE(flushes.empty());
  for (int nice : compactions) CHECK(nice == 19);
  for (int nice : flushes) CHECK(nice == own);
}

TEST_CASE("The default disk-full guard is 256 MiB", "[ledger][storage]") {
  CHECK(LedgerOptions().min_free_bytes == uint64_t{256} * 1024 * 1024);
}

TEST_CASE("Below min_free_bytes writes are refused before the writer and reads go on",
          "[ledger][storage]") {
  TempDir dir;
  {
    auto ledger = OpenWithGuard(dir.path(), 0);
    REQUIRE(ledger->Append(Transfer("acme", "alice", 10, "a")).ok());
    REQUIRE(ledger->Append(Transfer("acme", "alice", 5, "b")).ok());
  }
  std::atomic<int> writes{0};
  auto ledger = OpenWithGuard(dir.path(), kMoreThanAnyDisk, [&] {
    ++writes;
    return Status::Ok();
  });
  CheckpointInfo before = ledger->LatestCheckpoint();

  auto w = ledger->Writable();
  CHECK(w.code() == Code::kResourceExhausted);
  CHECK(w.reason() == "insufficient_storage");
  for (int i = 0; i < 3; ++i) {
    auto r = ledger->Append(Transfer("acme", "alice", 1, "c" + std::to_string(i)));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::kResourceExhausted);
    CHECK(r.status().reason() == "insufficient_storage");
  }
  // A replay of an acknowledged request is refused as well: the guard looks at nothing else.
  auto replay = ledger->Append(Transfer("acme", "alice", 10, "a"));
  CHECK(replay.status().reason() == "insufficient_storage");
  CHECK(writes == 0);  // nothing reached the commit path
  // Not fail-stop: the ledger is not stopped, only refusing while the disk is short.
  CHECK_FALSE(ledger->stopped());

  // Reads keep working.
  CHECK(ledger->size() == 2);
  CHECK(Balance(*ledger, "acme:customer:alice:available") == 15);
  auto e = ledger->GetEntry(1);
  REQUIRE(e.ok());
  CHECK(e->idempotency_key == "b");
  auto receipt = ledger->GetReceipt(0);
  REQUIRE(receipt.ok());
  CHECK(receipt->tree_size >= 1);
  CHECK(ledger->LatestCheckpoint().size == before.size);
  CHECK(ledger->CustomerEntries("acme", "alice", std::nullopt, 10)->size() == 2);
}

TEST_CASE("A threshold the disk meets, or 0, lets writes through", "[ledger][storage]") {
  TempDir dir;
  for (uint64_t threshold : {uint64_t{0}, uint64_t{1}}) {
    auto ledger = OpenWithGuard(dir.path(), threshold);
    CHECK(ledger->Writable().ok());
    CHECK(ledger->Append(Transfer("acme", "bob", 3, "t" + std::to_string(threshold))).ok());
  }
  auto ledger = OpenWithGuard(dir.path(), 0);
  CHECK(Balance(*ledger, "acme:customer:bob:available") == 6);
}

}  // namespace tally
