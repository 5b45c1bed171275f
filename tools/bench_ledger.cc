// Synced appends per second through the ledger's group commit, with N concurrent appenders.
// Usage: bench_ledger [appenders=1] [seconds=5] [dir=fresh temp dir]
// Each append is one durable entry (two postings), acknowledged only after its group's WAL
// write is synced; the ratio between 64 appenders and 1 shows group commit at work.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "ledger/accounts.h"
#include "ledger/ledger.h"

namespace {

tally::AppendRequest Earn(int thread, uint64_t i) {
  tally::AppendRequest r;
  r.actor = "bench";
  r.idempotency_key = std::to_string(thread) + "-" + std::to_string(i);
  r.request_hash = tally::Sha256(r.idempotency_key);
  std::string customer = "c" + std::to_string((thread * 7919 + i) % 10000);
  r.decide = [customer](tally::DecideContext& ctx) -> tally::Status {
    tally::Entry e;
    e.type = tally::EntryType::kAdjustment;
    e.program = "bench";
    e.customer = customer;
    e.postings = {{tally::CustomerAccount("bench", customer, tally::acct::kAvailable), 10, 0},
                  {tally::ProgramAccount("bench", tally::acct::kAdjustment), -10, 0}};
    auto done = ctx.Emit(std::move(e));
    return done.status();
  };
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int appenders = argc > 1 ? std::atoi(argv[1]) : 1;
  double seconds = argc > 2 ? std::atof(argv[2]) : 5.0;
  std::string dir =
      argc > 3
          ? argv[3]
          : (std::filesystem::temp_directory_path() / ("tally-bench-" + std::to_string(::getpid())))
                .string();
  tally::LedgerOptions o;
  o.dir = dir;
  auto ledger = tally::Ledger::Open(o);
  if (!ledger.ok()) {
    std::fprintf(stderr, "bench_ledger: %s\n", ledger.status().ToString().c_str());
    return 1;
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> done{0}, failed{0};
  std::vector<std::thread> threads;
  auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < appenders; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        auto r = (*ledger)->Append(Earn(t, i));
        (r.ok() ? done : failed).fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : threads) th.join();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  tally::LedgerStats s = (*ledger)->Stats();
  std::printf(
      "appenders=%d appends=%llu failed=%llu seconds=%.2f appends_per_s=%.0f "
      "groups=%llu mean_group=%.1f mean_sync_ms=%.3f\n",
      appenders, static_cast<unsigned long long>(done.load()),
      static_cast<unsigned long long>(failed.load()), elapsed,
      static_cast<double>(done.load()) / elapsed, static_cast<unsigned long long>(s.groups),
      s.groups ? static_cast<double>(s.group_entries_sum) / static_cast<double>(s.groups) : 0.0,
      s.groups ? 1000.0 * s.write_seconds_sum / static_cast<double>(s.groups) : 0.0);
  ledger->reset();
  if (argc <= 3) std::filesystem::remove_all(dir);
  return failed == 0 ? 0 : 1;
}
