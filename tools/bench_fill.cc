// tally-bench-fill: fills a data directory with N earn entries through the Loyalty API, many
// requests at once so that they share commit groups: much faster than over HTTP, with the same
// entries (one earn per request, each with its own idempotency key, order id and request hash,
// as tally-bench sends them). For the restart and disk benchmarks (docs/BENCHMARKS.md).
//
//   tally-bench-fill --data DIR [--entries 200000] [--program bench] [--customers 10000]
//                    [--appenders 256] [--background-write-rate N]
//
// Creates the program (as tally-bench --setup does) if absent. Entries are attributed to the
// admin key of TALLY_ADMIN_KEY ("env-admin"). Prints the entries appended and the rate.
// --background-write-rate is tallyd's: the bytes per second RocksDB's flushes and compactions
// may write (0: no limit).
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ledger/hash.h"
#include "ledger/ledger.h"
#include "ledger/limits.h"
#include "ledger/loyalty.h"
#include "ledger/records.h"

namespace tally {
namespace {

struct Flags {
  std::string data;
  int64_t entries = 200000;
  std::string program = "bench";
  int64_t customers = 10000;
  int appenders = 256;
  int64_t background_write_rate = kBackgroundWriteBytesPerSecDefault;
};

[[noreturn]] void Usage(const std::string& message) {
  std::fprintf(stderr,
               "tally-bench-fill: %s\nusage: tally-bench-fill --data DIR [--entries N] "
               "[--program ID] [--customers N] [--appenders N]\n"
               "                        [--background-write-rate N]\n",
               message.c_str());
  std::exit(2);
}

int64_t ParseInt(std::string_view flag, std::string_view text, int64_t min, int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < min || v > max) {
    Usage(std::string(flag) + " must be an integer from " + std::to_string(min) + " to " +
          std::to_string(max));
  }
  return v;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (i + 1 >= argc) Usage("missing value after " + std::string(arg));
    std::string_view value = argv[++i];
    if (arg == "--data") {
      f.data = std::string(value);
    } else if (arg == "--entries") {
      f.entries = ParseInt(arg, value, 1, 10'000'000'000);
    } else if (arg == "--program") {
      f.program = std::string(value);
    } else if (arg == "--customers") {
      f.customers = ParseInt(arg, value, 1, 1'000'000'000);
    } else if (arg == "--appenders") {
      f.appenders = static_cast<int>(ParseInt(arg, value, 1, 4096));
    } else if (arg == "--background-write-rate") {
      f.background_write_rate = ParseInt(arg, value, 0, kBackgroundWriteBytesPerSecMax);
      if (f.background_write_rate != 0 &&
          f.background_write_rate < kBackgroundWriteBytesPerSecMin) {
        Usage("--background-write-rate must be 0 (no limit) or at least " +
              std::to_string(kBackgroundWriteBytesPerSecMin));
      }
    } else {
      Usage("unknown flag " + std::string(arg));
    }
  }
  if (f.data.empty()) Usage("--data DIR is required");
  return f;
}

// The program tally-bench --setup creates: referrals on, codes that never expire nor run out.
ProgramConfig BenchProgram(const std::string& id) {
  ProgramConfig p;
  p.id = id;
  p.name = "tally-bench";
  ReferralSettings r;
  r.max_uses = 1'000'000'000'000;
  r.code_ttl_days = 0;
  p.referral = r;
  return p;
}

int Main(int argc, char** argv) {
  Flags f = ParseFlags(argc, argv);
  std::error_code ec;
  std::filesystem::create_directories(f.data, ec);
  if (ec) Usage("cannot create " + f.data + ": " + ec.message());
  LedgerOptions options;
  options.dir = f.data;
  options.background_write_bytes_per_sec = f.background_write_rate;
  auto ledger = Ledger::Open(options);
  if (!ledger.ok()) {
    std::fprintf(stderr, "tally-bench-fill: %s\n", ledger.status().ToString().c_str());
    return 1;
  }
  // API keys are not created here, so the secret they derive from does not matter.
  Loyalty loyalty(ledger->get(), LoyaltyOptions{std::string(32, '\0')});
  const std::string actor = "env-admin";
  const std::string run = std::to_string(std::chrono::system_clock::now().time_since_epoch() /
                                         std::chrono::microseconds(1));
  auto made = loyalty.CreateProgram(WriteContext{actor, run + "-program", Sha256(run)},
                                    BenchProgram(f.program));
  if (!made.ok() && made.status().reason() != "program_exists") {
    std::fprintf(stderr, "tally-bench-fill: %s\n", made.status().ToString().c_str());
    return 1;
  }

  const uint64_t before = (*ledger)->size();
  std::atomic<int64_t> next{0}, failed{0};
  std::atomic<bool> done{false};
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < f.appenders; ++t) {
    threads.emplace_back([&] {
      for (int64_t i = next.fetch_add(1); i < f.entries; i = next.fetch_add(1)) {
        std::string key = run + "-" + std::to_string(i);
        EarnRequest r;
        r.customer = "c" + std::to_string(i % f.customers);
        r.points = 10;
        r.order_id = "o" + key;
        std::string body = "{\"customer\":\"" + r.customer + "\",\"points\":10,\"order_id\":\"" +
                           r.order_id + "\"}";
        auto w = loyalty.Earn(WriteContext{actor, key, Sha256(body)}, f.program, r);
        if (!w.ok() && failed.fetch_add(1) == 0) {
          std::fprintf(stderr, "tally-bench-fill: %s\n", w.status().ToString().c_str());
        }
      }
    });
  }
  std::thread progress([&] {
    while (!done.load()) {
      for (int k = 0; k < 50 && !done.load(); ++k) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (done.load()) break;
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      uint64_t n = (*ledger)->size() - before;
      std::fprintf(stderr, "tally-bench-fill: %llu entries, %.0f/s\n",
                   static_cast<unsigned long long>(n), static_cast<double>(n) / s);
    }
  });
  for (auto& th : threads) th.join();
  done = true;
  progress.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uint64_t appended = (*ledger)->size() - before;
  LedgerStats s = (*ledger)->Stats();
  std::printf(
      "entries=%llu total=%llu failed=%lld seconds=%.2f entries_per_s=%.0f "
      "mean_group=%.1f\n",
      static_cast<unsigned long long>(appended), static_cast<unsigned long long>((*ledger)->size()),
      static_cast<long long>(failed.load()), seconds, static_cast<double>(appended) / seconds,
      s.groups ? static_cast<double>(s.group_entries_sum) / static_cast<double>(s.groups) : 0.0);
  ledger->reset();  // syncs and closes
  return failed.load() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tally

int main(int argc, char** argv) { return tally::Main(argc, argv); }
