// Storage faults: the real tallyd run under fiu-run (Debian's fiu-utils, libfiu's POSIX preload
// library) with I/O errors injected at random into the calls RocksDB makes (write, pwrite,
// fsync, fdatasync, read, open, rename, ...). Clients send concurrent earns, each with its own
// Idempotency-Key, and record every 2xx. Once tallyd refuses writes after a failed one
// (fail-stop: every write 503, /readyz 503) it is stopped, restarted without faults on the same
// data directory, and must hold every acknowledged earn (its replay answers the same body,
// replayed), and tally-audit verify must find the directory clean. Each cycle injects another
// family of faults; a start under faults that fails must fail cleanly too.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/crash/crash_util.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using namespace std::chrono_literals;
using testing::HttpClient;
using testing::HttpReply;
using testing::Json;
using testing::RestartingTallyd;
using testing::TempDir;

const std::string kAdminKey = "faults-test-admin-key-0b5e";
const std::string kFiuRun = "/usr/bin/fiu-run";
constexpr int kClientThreads = 4;

// One family of faults: libfiu failure points and the probability of each call failing.
struct FaultSpec {
  const char* name;
  std::vector<std::string> points;
  double probability;
};

const FaultSpec kSpecs[] = {
    {"sync", {"posix/io/sync/*"}, 0.01},
    {"write", {"posix/io/rw/write", "posix/io/rw/pwrite", "posix/io/rw/writev"}, 0.01},
    {"short writes", {"posix/io/rw/write/reduce", "posix/io/rw/pwrite/reduce"}, 0.05},
    {"read and write", {"posix/io/rw/*"}, 0.003},
    {"open, rename, unlink",
     {"posix/io/oc/open", "posix/io/dir/rename", "posix/io/dir/unlink", "posix/io/rw/ftruncate"},
     0.01},
    {"everything on files",
     {"posix/io/rw/*", "posix/io/sync/*", "posix/io/oc/*", "posix/io/dir/*"},
     0.002},
};

struct Earn {
  std::string key, body, reply;
};

// What one cycle saw.
struct CycleStats {
  bool started = false;
  int failed_starts = 0;
  int exit_code = -1;             // of tallyd under faults, at SIGTERM
  bool stopped_by_fault = false;  // /readyz answered 503
  size_t acked = 0, refused = 0, no_answer = 0;
  std::map<int, size_t> statuses;
};

// The AddressSanitizer runtime this test runs with, or "" (not a sanitizer build).
std::string AsanRuntime() {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    size_t at = line.find('/');
    if (at != std::string::npos && line.find("/libasan.so", at) != std::string::npos) {
      return line.substr(at);
    }
  }
  return "";
}

// A shell script that runs tallyd under fiu-run with `spec` enabled from the first call on.
// In an ASan build the ASan runtime must come first among the preloaded libraries, and fiu's
// preload library leaks a string by design; so the script sets fiu-run's three variables itself,
// with the runtime first and leak checking off.
std::string WriteWrapper(const std::string& dir, const FaultSpec& spec) {
  std::string path = dir + "/tallyd-under-fiu.sh";
  std::ofstream out(path);
  const std::string asan = AsanRuntime();
  if (asan.empty()) {
    out << "#!/bin/sh\nexec " << kFiuRun << " -x -f ''";
    for (const std::string& point : spec.points) {
      out << " -c 'enable_random name=" << point << ",probability=" << spec.probability << "'";
    }
  } else {
    out << "#!/bin/sh\nexport FIU_ENABLE='";
    for (const std::string& point : spec.points) {
      out << "enable_random name=" << point << ",probability=" << spec.probability << "\n";
    }
    out << "'\nexport FIU_CTRL_FIFO=''\nexport LD_PRELOAD='" << asan
        << " /usr/lib/fiu/fiu_run_preload.so /usr/lib/fiu/fiu_posix_preload.so'\n"
        << "export ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\"\nexec";
  }
  out << " " << TALLYD_PATH << " \"$@\"\n";
  out.close();
  ::chmod(path.c_str(), 0755);
  return path;
}

// Earns from several clients until `until`, or shortly after tallyd stopped taking writes.
CycleStats Drive(const RestartingTallyd& server, int cycle, std::chrono::milliseconds length,
                 std::vector<Earn>* acked, testing::Failures* failures) {
  CycleStats stats;
  std::mutex mu;
  std::atomic<bool> fail_stopped{false};
  auto until = std::chrono::steady_clock::now() + length;
  std::vector<std::thread> threads;
  for (int t = 0; t < kClientThreads; ++t) {
    threads.emplace_back([&, t] {
      HttpClient client(kAdminKey);
      std::mt19937_64 rng(static_cast<uint64_t>(cycle * 100 + t));
      std::chrono::steady_clock::time_point stop_at = until;
      for (int n = 0; std::chrono::steady_clock::now() < stop_at; ++n) {
        Earn e;
        e.key =
            "fault-" + std::to_string(cycle) + "-" + std::to_string(t) + "-" + std::to_string(n);
        e.body = Json{
            {"customer", "c" + std::to_string(rng() % 8)},
            {"points", 1 + static_cast<int64_t>(rng() % 50)},
            {"order_id",
             e.key}}.dump();
        const bool sent_after_fail_stop = fail_stopped;
        HttpReply r =
            client.Send(server.port(), "POST", "/v1/programs/acme/earn", e.body, e.key, 10s);
        if (sent_after_fail_stop && r.status != 503 && r.status != 0) {
          failures->Add("after fail-stop, " + e.key + " answered " + std::to_string(r.status) +
                        " " + r.body);
        }
        std::lock_guard<std::mutex> lock(mu);
        ++stats.statuses[r.status];
        if (r.status == 201) {
          ++stats.acked;
          e.reply = r.body;
          acked->push_back(std::move(e));
        } else if (r.status == 0) {
          ++stats.no_answer;
          if (!server.running()) return;  // tallyd died: nothing more to send to
        } else {
          ++stats.refused;
        }
        if (r.status == 503 && !fail_stopped) {
          HttpClient probe("");
          HttpReply ready = probe.Send(server.port(), "GET", "/readyz");
          if (ready.status == 503) {
            fail_stopped = true;
            stats.stopped_by_fault = true;
            stop_at = std::min(stop_at, std::chrono::steady_clock::now() + 100ms);
          }
        }
        if (fail_stopped) stop_at = std::min(stop_at, std::chrono::steady_clock::now() + 100ms);
      }
    });
  }
  for (auto& th : threads) th.join();
  return stats;
}

}  // namespace

TEST_CASE("Acknowledged writes survive injected storage faults (fiu-run)", "[faults][slow]") {
  if (::access(kFiuRun.c_str(), X_OK) != 0) {
    FAIL("fiu-run is missing: install fiu-utils (scripts/install-deps.sh --test)");
  }
  const int cycles = testing::EnvInt("TALLY_FAULT_CYCLES", static_cast<int>(std::size(kSpecs)));
  TempDir dir;
  const std::string data = dir / "data";
  const std::string log = dir / "tallyd.log";
  const std::vector<std::string> args = {"--threads", "16", "--min-free-bytes", "0"};

  // The program, written without faults.
  {
    RestartingTallyd clean(TALLYD_PATH, data, kAdminKey, log, args);
    REQUIRE(clean.Start());
    HttpClient client(kAdminKey);
    HttpReply r = client.Send(clean.port(), "POST", "/v1/programs",
                              R"({"id":"acme","name":"Acme"})", "create-program");
    REQUIRE(r.status == 201);
    REQUIRE(clean.Stop() == 0);
  }

  std::vector<Earn> acked;
  testing::Failures failures;
  size_t fail_stops = 0, failed_starts = 0;
  for (int cycle = 0; cycle < cycles; ++cycle) {
    const FaultSpec& spec = kSpecs[cycle % std::size(kSpecs)];
    INFO("cycle " << cycle << ": " << spec.name);
    const std::string wrapper = WriteWrapper(dir.path(), spec);
    RestartingTallyd faulty(wrapper, data, kAdminKey, log, args);
    CycleStats stats;
    size_t acked_before = acked.size();
    // Faults on from the first call: a start may fail, and must fail cleanly (a message and
    // exit 1, no crash); up to three tries.
    int failed = 0;
    faulty.set_start_timeout(10s);
    while (failed < 3 && !faulty.Start()) {
      // Still up: it started, but a fault ate its "listening" line on the way to stdout.
      const bool up = faulty.running();
      int code = faulty.Stop();
      INFO("tallyd log:\n" << faulty.log());
      if (!up) CHECK(code == 1);
      ++failed;
    }
    if (faulty.running()) {
      stats = Drive(faulty, cycle, 2500ms, &acked, &failures);
      stats.started = true;
      // Every acknowledged write must be on disk whatever the exit; a crash is reported.
      stats.exit_code = faulty.Stop();
    }
    stats.failed_starts = failed;
    failed_starts += static_cast<size_t>(failed);
    if (stats.stopped_by_fault) ++fail_stops;
    std::string statuses;
    for (const auto& [status, n] : stats.statuses) {
      statuses += " " + std::to_string(status) + "x" + std::to_string(n);
    }
    WARN("faults '" << spec.name << "': " << stats.failed_starts << " failed starts, "
                    << (stats.started ? "ran" : "never ran") << ","
                    << (stats.stopped_by_fault ? " fail-stopped," : "") << " answers:" << statuses
                    << (stats.started ? ", exit " + std::to_string(stats.exit_code) : ""));

    // Restarted without faults: every acknowledged earn is there, and replays as it was.
    RestartingTallyd clean(TALLYD_PATH, data, kAdminKey, log, args);
    REQUIRE(clean.Start());
    HttpClient client(kAdminKey);
    HttpReply ready = client.Send(clean.port(), "GET", "/readyz");
    CHECK(ready.status == 200);
    size_t lost = 0;
    for (size_t i = acked_before; i < acked.size(); ++i) {
      const Earn& e = acked[i];
      HttpReply r = client.Send(clean.port(), "POST", "/v1/programs/acme/earn", e.body, e.key);
      if (r.status != 201 || !r.replayed() || r.body != e.reply) {
        ++lost;
        UNSCOPED_INFO("acknowledged " << e.key << " replayed as " << r.status << " " << r.body);
      }
    }
    CHECK(lost == 0);
    CHECK(clean.Stop() == 0);
    testing::CommandResult audit =
        testing::RunCommand({TALLY_AUDIT_PATH, "verify", "--data", data});
    INFO("tally-audit: " << audit.output << "\ntallyd log:\n" << clean.log());
    CHECK(audit.exit_code == 0);
  }
  for (const std::string& f : failures.list()) UNSCOPED_INFO(f);
  CHECK(failures.count() == 0);

  // Every acknowledged earn of every cycle, once more after all of them.
  RestartingTallyd clean(TALLYD_PATH, data, kAdminKey, log, args);
  REQUIRE(clean.Start());
  HttpClient client(kAdminKey);
  size_t lost = 0;
  for (const Earn& e : acked) {
    HttpReply r = client.Send(clean.port(), "POST", "/v1/programs/acme/earn", e.body, e.key);
    if (r.status != 201 || !r.replayed() || r.body != e.reply) ++lost;
  }
  CHECK(lost == 0);
  CHECK(clean.Stop() == 0);
  // The faults must have bitten: at least one cycle ended in fail-stop.
  CHECK(fail_stops + failed_starts > 0);
  WARN("faults: " << cycles << " cycles, " << acked.size() << " acknowledged earns, " << fail_stops
                  << " fail-stops, " << failed_starts << " failed starts");
}

}  // namespace tally
