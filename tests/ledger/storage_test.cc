// The disk-full guard (LedgerOptions::min_free_bytes): below the threshold, writes are refused
// before they reach the writer or RocksDB, and reads keep working. And the storage engine's
// background threads: compactions at nice 19, flushes at the process's own priority, both under
// the background write limit.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
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

namespace {

// Writes `n` keys of incompressible values to the tree family (the family the test store writes).
// Returns the write's status rather than asserting it: a forked child calls it too.
Status PutTreeKeys(Store& store, int n, size_t value_bytes) {
  StoreBatch batch(store);
  uint64_t x = 88172645463325252ULL;
  for (int i = 0; i < n; ++i) {
    std::string value(value_bytes, '\0');
    for (char& c : value) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;  // xorshift: values LZ4 cannot shrink
      c = static_cast<char>(x);
    }
    batch.Put(Cf::kTree, TreeKey(5, static_cast<uint64_t>(i)), value);
  }
  return store.Write(batch);
}

}  // namespace

TEST_CASE("Flushes and compactions write under the background write limit", "[ledger][storage]") {
  CHECK(kBackgroundWriteBytesPerSecDefault == int64_t{32} * 1024 * 1024);
  TempDir dir;
  SECTION("the default limit counts what they write") {
    auto store = Store::Open(dir.path(), Store::Options{});
    REQUIRE(store.ok());
    CHECK((*store)->background_writes().limit_bytes_per_sec == kBackgroundWriteBytesPerSecDefault);
    REQUIRE(PutTreeKeys(**store, 1000, 32).ok());
    // A flush, then a compaction: both write a table of at least the keys' 32,000 value bytes.
    REQUIRE((*store)->CompactRange(Cf::kTree, TreeKey(5, 0), TreeKey(6, 0)).ok());
    CHECK((*store)->background_writes().bytes >= 2 * 32000);
  }
  SECTION("0 sets no limit, and nothing is counted") {
    Store::Options o;
    o.background_write_bytes_per_sec = 0;
    auto store = Store::Open(dir.path(), o);
    REQUIRE(store.ok());
    REQUIRE(PutTreeKeys(**store, 1000, 32).ok());
    REQUIRE((*store)->CompactRange(Cf::kTree, TreeKey(5, 0), TreeKey(6, 0)).ok());
    CHECK((*store)->background_writes().limit_bytes_per_sec == 0);
    CHECK((*store)->background_writes().bytes == 0);
  }
  SECTION("a read-only store writes nothing and has no limit") {
    REQUIRE(Store::Open(dir.path(), Store::Options{}).ok());  // creates it, then closes it
    Store::Options o;
    o.mode = Store::Mode::kReadOnly;
    o.create_if_missing = false;
    auto store = Store::Open(dir.path(), o);
    REQUIRE(store.ok());
    CHECK((*store)->background_writes().limit_bytes_per_sec == 0);
  }
  SECTION("the ledger passes its option to its store") {
    LedgerOptions o;
    o.dir = dir.path();
    o.background_write_bytes_per_sec = 1 << 20;
    auto ledger = Ledger::Open(o);
    REQUIRE(ledger.ok());
    CHECK((*ledger)->Stats().background_write_limit == 1 << 20);
  }
}

TEST_CASE("Closing a store flushes its memtables without the background write limit",
          "[ledger][storage]") {
  TempDir dir;
  Store::Options o;
  // RocksDB refills at least 100 bytes per 20 ms: paced, this store writes 5,000 bytes/s.
  o.background_write_bytes_per_sec = 1024;
  {
    auto store = Store::Open(dir.path(), o);
    REQUIRE(store.ok());
    REQUIRE(PutTreeKeys(**store, 2048, 1024).ok());
    auto start = std::chrono::steady_clock::now();
    store->reset();  // flushes about 2 MiB
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(seconds < 60);  // paced: about 420 s
  }
  // The close flushed: the WAL is empty, and the keys are in a table file.
  std::vector<std::string> tables;
  for (const auto& f : std::filesystem::directory_iterator(dir.path())) {
    if (f.path().extension() == ".sst") tables.push_back(f.path());
    if (f.path().extension() == ".log") CHECK(std::filesystem::file_size(f.path()) == 0);
  }
  CHECK_FALSE(tables.empty());
  auto reopened = Store::Open(dir.path(), o);
  REQUIRE(reopened.ok());
  auto v = (*reopened)->Get(Cf::kTree, TreeKey(5, 399));
  REQUIRE(v.ok());
  REQUIRE(v->has_value());
  CHECK((*v)->size() == 1024);
}

TEST_CASE("After a crash, the open flushes what the WAL replay recovered without the limit",
          "[ledger][storage]") {
  TempDir dir;
  // The child writes about 2 MiB (synced to the WAL) and exits without closing: no flush.
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    auto store = Store::Open(dir.path(), Store::Options{});
    if (!store.ok()) _exit(3);
    _exit(PutTreeKeys(**store, 2048, 1024).ok() ? 0 : 4);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);

  Store::Options o;
  o.background_write_bytes_per_sec = 1024;  // 5,000 bytes/s: see the test above
  auto start = std::chrono::steady_clock::now();
  auto store = Store::Open(dir.path(), o);  // replays the WAL and flushes it to a table
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(store.ok());
  CHECK(seconds < 60);                                               // paced: about 420 s
  CHECK((*store)->background_writes().limit_bytes_per_sec == 1024);  // paced from here on
  auto v = (*store)->Get(Cf::kTree, TreeKey(5, 2047));
  REQUIRE(v.ok());
  REQUIRE(v->has_value());
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
