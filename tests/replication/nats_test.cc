// Replication end to end: a three-server NATS JetStream cluster on loopback (its own config
// files, ports and data directories), the real tallyd as primary and follower, driven over HTTP
// under concurrent write load, and the real tally-audit on the data directories afterwards.
//
// Every write of the load is an earn with its own Idempotency-Key and no order id, retried with
// the same key until some server acknowledges it. So at the end each write must be in the log
// exactly once: a replay answers Idempotency-Replayed, each customer's balance is the sum of
// its earns, and the log holds one entry per write.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/tallyd_process.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using testing::TempDir;

const std::string kAdminKey = "replication-test-admin-key";
constexpr int kCustomers = 7;

// ---------------------------------------------------------------------------------------------
// HTTP: one request per loopback connection.

struct HttpResult {
  int status = 0;                              // 0: no response (refused, closed, timed out)
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  Json json() const { return Json::parse(body, nullptr, false); }
  std::string code() const {
    Json j = json();
    return j.is_object() && j.contains("code") ? j["code"].get<std::string>() : "";
  }
  bool replayed() const {
    auto it = headers.find("idempotency-replayed");
    return it != headers.end() && it->second == "true";
  }
};

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

HttpResult ParseResponse(const std::string& raw) {
  HttpResult r;
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos || raw.rfind("HTTP/1.1 ", 0) != 0) return r;
  size_t pos = raw.find("\r\n");
  while (pos < end) {
    size_t next = raw.find("\r\n", pos + 2);
    std::string line = raw.substr(pos + 2, next - pos - 2);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      size_t v = line.find_first_not_of(' ', colon + 1);
      r.headers[name] = v == std::string::npos ? "" : line.substr(v);
    }
    pos = next;
  }
  auto cl = r.headers.find("content-length");
  size_t length = cl == r.headers.end() ? 0 : std::stoul(cl->second);
  if (raw.size() < end + 4 + length) return r;
  r.body = raw.substr(end + 4, length);
  r.status = std::stoi(raw.substr(9, 3));
  return r;
}

HttpResult Http(uint16_t port, const std::string& method, const std::string& target,
                const std::string& body = "", const std::string& idempotency_key = "",
                std::chrono::milliseconds timeout = 30s) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  req += "Authorization: Bearer " + kAdminKey + "\r\n";
  if (!idempotency_key.empty()) req += "Idempotency-Key: " + idempotency_key + "\r\n";
  if (method == "POST") {
    req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "\r\n" + body;
  std::string raw;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && SendAll(fd, req)) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd, POLLIN, 0};
      int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) break;
      char buf[16384];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      raw.append(buf, static_cast<size_t>(n));
      if (ParseResponse(raw).status != 0) break;  // complete
    }
  }
  ::close(fd);
  return ParseResponse(raw);
}

HttpResult Get(uint16_t port, const std::string& target) { return Http(port, "GET", target); }

// Polls `done` every 50 ms until it holds or `timeout` passes.
bool Eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
}

// ---------------------------------------------------------------------------------------------
// A three-server JetStream cluster on loopback.

uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  socklen_t len = sizeof addr;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

class NatsCluster {
 public:
  static constexpr int kServers = 3;

  NatsCluster() {
    INFO("nats-server (Debian package nats-server) at " << NATS_SERVER_PATH);
    REQUIRE(::access(NATS_SERVER_PATH, X_OK) == 0);
    std::set<uint16_t> taken;
    for (int i = 0; i < kServers; ++i) {
      for (uint16_t* p : {&client_ports_[i], &route_ports_[i]}) {
        do *p = FreePort();
        while (*p == 0 || !taken.insert(*p).second);
      }
    }
    for (int i = 0; i < kServers; ++i) WriteConfig(i);
    for (int i = 0; i < kServers; ++i) Start(i);
  }
  ~NatsCluster() {
    for (int i = 0; i < kServers; ++i) Kill(i);
  }
  NatsCluster(const NatsCluster&) = delete;
  NatsCluster& operator=(const NatsCluster&) = delete;

  std::string urls() const {
    std::string out;
    for (int i = 0; i < kServers; ++i) {
      out += (i ? "," : "") + std::string("nats://127.0.0.1:") + std::to_string(client_ports_[i]);
    }
    return out;
  }

  // Starts server i (again, on the same ports and data directory).
  void Start(int i) {
    std::vector<std::string> args = {NATS_SERVER_PATH, "-c", Config(i)};
    std::vector<std::string> env = testing::ChildEnvironment("", {});
    std::vector<char*> argv = testing::CStrings(args);
    std::vector<char*> envp = testing::CStrings(env);
    std::string log = dir_ / ("n" + std::to_string(i) + ".log");
    int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t pid = ::fork();
    if (pid == 0) testing::ExecChild(argv.data(), envp.data(), log_fd, log_fd);
    if (log_fd >= 0) ::close(log_fd);
    REQUIRE(pid > 0);
    pids_[i] = pid;
  }

  // kill -9, and waits for the exit.
  void Kill(int i) {
    if (pids_[i] <= 0) return;
    ::kill(pids_[i], SIGKILL);
    testing::WaitFor(pids_[i], 10s);
    pids_[i] = -1;
  }

 private:
  std::string Config(int i) const { return dir_ / ("n" + std::to_string(i) + ".conf"); }

  void WriteConfig(int i) {
    std::string routes;
    for (int j = 0; j < kServers; ++j) {
      routes += (j ? ", " : "") + std::string("nats-route://127.0.0.1:") +
                std::to_string(route_ports_[j]);
    }
    std::ofstream out(Config(i));
    out << "server_name: n" << i << "\n"
        << "listen: 127.0.0.1:" << client_ports_[i] << "\n"
        << "max_payload: 8MB\n"
        << "jetstream {\n  store_dir: \"" << (dir_ / ("data" + std::to_string(i))) << "\"\n"
        << "  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n"
        << "cluster {\n  name: tally-test\n  listen: 127.0.0.1:" << route_ports_[i] << "\n"
        << "  routes: [" << routes << "]\n}\n";
  }

  TempDir dir_;
  uint16_t client_ports_[kServers] = {};
  uint16_t route_ports_[kServers] = {};
  pid_t pids_[kServers] = {-1, -1, -1};
};

// ---------------------------------------------------------------------------------------------
// tallyd as primary or follower.

class Node {
 public:
  std::string data() const { return dir_ / "data"; }
  std::string log() const { return testing::ReadWholeFile(dir_ / "tallyd.log"); }

  // Starts tallyd with `role` ("--replicate" or "--follow") on the cluster.
  void Start(const std::string& role, const NatsCluster& nats) {
    tallyd_.reset();
    tallyd_ = std::make_unique<testing::TallydProcess>(TALLYD_PATH, data(), kAdminKey,
                                                       dir_ / "tallyd.log",
                                                       std::vector<std::string>{role, nats.urls()});
    INFO("tallyd log:\n" << log());
    REQUIRE(tallyd_->started());
  }
  // A graceful stop's exit status; anything but 0 comes with tallyd's log.
  int Stop() {
    int code = tallyd_->Stop();
    if (code != 0) UNSCOPED_INFO("tallyd exited with " << code << "; its log:\n" << log());
    return code;
  }
  int Kill() { return tallyd_->Kill(); }
  uint16_t port() const { return tallyd_->port(); }

  // Copies the signing key pair and the API key secret from `from`'s data directory, as a
  // follower's operator does before its first start.
  void CopyKeysFrom(const Node& from) {
    std::filesystem::create_directories(data());
    for (const char* f : {"signing.key", "signing.pub", "api.secret"}) {
      std::filesystem::copy_file(from.data() + "/" + f, data() + "/" + f);
    }
  }

  Json Replication() const { return Get(port(), "/v1/admin/replication").json(); }
  std::string Checkpoint() const { return Get(port(), "/v1/ledger/checkpoint").body; }

 private:
  TempDir dir_;
  std::unique_ptr<testing::TallydProcess> tallyd_;
};

void CreateProgram(uint16_t port) {
  HttpResult r =
      Http(port, "POST", "/v1/programs", R"({"id":"acme","name":"Acme"})", "create-acme");
  INFO(r.body);
  REQUIRE(r.status == 201);
}

testing::CommandResult Audit(const std::string& data) {
  return testing::RunCommand({TALLY_AUDIT_PATH, "verify", "--data", data}, 120s);
}

// Waits until `follower` holds what `primary` holds: the same tree size and checkpoint.
void WaitCaughtUp(const Node& follower, const Node& primary) {
  bool same = Eventually(
      [&] {
        std::string p = primary.Checkpoint();
        return !p.empty() && follower.Checkpoint() == p;
      },
      60s);
  INFO("primary " << primary.Checkpoint() << "\nfollower " << follower.Checkpoint());
  REQUIRE(same);
}

// ---------------------------------------------------------------------------------------------
// The write load.

struct Write {
  std::string key;
  std::string customer;
  int points = 0;
  std::string Body() const {
    return R"({"customer":")" + customer + R"(","points":)" + std::to_string(points) + "}";
  }
};

// `threads` writers, each sending its earns one at a time to the port in `target`, every one
// retried with its key until a server acknowledges it (201) or the load stops.
class Load {
 public:
  Load(std::atomic<uint16_t>* target, int threads, std::string tag)
      : target_(target), tag_(std::move(tag)) {
    for (int t = 0; t < threads; ++t) threads_.emplace_back([this, t] { Run(t); });
  }
  ~Load() { Stop(); }

  void Stop() {
    stop_ = true;
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  size_t acked() const { return acked_; }
  // Acknowledgements that were not replays: writes applied for the first time.
  size_t fresh() const { return fresh_; }
  // Every write started, acknowledged or not.
  std::vector<Write> writes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return writes_;
  }
  // The writes acknowledged by `port`.
  std::vector<Write> AckedBy(uint16_t port) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Write> out;
    for (const Write& w : writes_) {
      auto it = acked_by_.find(w.key);
      if (it != acked_by_.end() && it->second == port) out.push_back(w);
    }
    return out;
  }
  // Statuses other than 201, 503 and no answer.
  std::vector<std::string> unexpected() const {
    std::lock_guard<std::mutex> lock(mu_);
    return unexpected_;
  }
  // How many answers were 503 (any code).
  size_t unavailable() const { return unavailable_; }

 private:
  void Run(int t) {
    for (int i = 0; !stop_; ++i) {
      Write w{tag_ + "-" + std::to_string(t) + "-" + std::to_string(i),
              "c" + std::to_string((t * 31 + i) % kCustomers), 1 + i % 5};
      {
        std::lock_guard<std::mutex> lock(mu_);
        writes_.push_back(w);
      }
      while (!stop_) {
        uint16_t port = target_->load();
        HttpResult r = Http(port, "POST", "/v1/programs/acme/earn", w.Body(), w.key);
        if (r.status == 201) {
          std::lock_guard<std::mutex> lock(mu_);
          acked_by_[w.key] = port;
          ++acked_;
          if (!r.replayed()) ++fresh_;
          break;
        }
        if (r.status == 503) {
          ++unavailable_;
        } else if (r.status != 0) {
          std::lock_guard<std::mutex> lock(mu_);
          unexpected_.push_back(std::to_string(r.status) + " " + r.body);
        }
        std::this_thread::sleep_for(20ms);
      }
    }
  }

  std::atomic<uint16_t>* target_;
  std::string tag_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> acked_{0};
  std::atomic<size_t> fresh_{0};
  std::atomic<size_t> unavailable_{0};
  mutable std::mutex mu_;
  std::vector<Write> writes_;                 // guarded by mu_
  std::map<std::string, uint16_t> acked_by_;  // guarded by mu_
  std::vector<std::string> unexpected_;       // guarded by mu_
  std::vector<std::thread> threads_;          // last
};

// Sends every write to `port` until acknowledged (a write never acknowledged before may be
// applied now, or replayed if its first attempt had reached the log).
void Complete(uint16_t port, const std::vector<Write>& writes) {
  for (const Write& w : writes) {
    HttpResult r;
    bool done = Eventually(
        [&] {
          r = Http(port, "POST", "/v1/programs/acme/earn", w.Body(), w.key);
          return r.status == 201;
        },
        30s);
    INFO(w.key << ": " << r.status << " " << r.body);
    REQUIRE(done);
  }
}

// Every write in `writes` is in the log of the server at `port`: a replay says so.
void CheckReplayed(uint16_t port, const std::vector<Write>& writes) {
  for (const Write& w : writes) {
    HttpResult r = Http(port, "POST", "/v1/programs/acme/earn", w.Body(), w.key);
    INFO(w.key << ": " << r.status << " " << r.body);
    REQUIRE(r.status == 201);
    CHECK(r.replayed());
  }
}

// Each write applied exactly once: balances are the sums of the earns, and the log holds the
// program's entry and one entry per write.
void CheckExactlyOnce(uint16_t port, const std::vector<Write>& writes) {
  std::map<std::string, int64_t> expected;
  for (const Write& w : writes) expected[w.customer] += w.points;
  for (const auto& [customer, points] : expected) {
    HttpResult r = Get(port, "/v1/programs/acme/customers/" + customer);
    INFO(customer << ": " << r.body);
    REQUIRE(r.status == 200);
    CHECK(r.json()["available"].get<int64_t>() == points);
  }
  CHECK(Get(port, "/v1/admin/replication").json()["applied"].get<uint64_t>() == writes.size() + 1);
}

// Both servers answer the same for every customer.
void CheckSameBalances(uint16_t a, uint16_t b) {
  for (int c = 0; c < kCustomers; ++c) {
    std::string path = "/v1/programs/acme/customers/c" + std::to_string(c);
    HttpResult x = Get(a, path), y = Get(b, path);
    INFO(path);
    CHECK(x.status == 200);
    CHECK(x.body == y.body);
  }
}

void CheckAuditClean(const std::string& data) {
  testing::CommandResult audit = Audit(data);
  INFO(data << ":\n" << audit.output);
  CHECK(audit.exit_code == 0);
}

// A primary with a program, and a follower holding its key.
struct Pair {
  NatsCluster nats;
  Node primary, follower;
  Pair() {
    primary.Start("--replicate", nats);
    CreateProgram(primary.port());
    follower.CopyKeysFrom(primary);
    follower.Start("--follow", nats);
  }
};

}  // namespace

TEST_CASE("A follower under write load equals the primary", "[replication][nats][slow]") {
  Pair p;
  CHECK(p.primary.Replication()["role"] == "primary");
  CHECK(p.primary.Replication()["stream"] == "TALLY");
  CHECK(p.follower.Replication()["role"] == "follower");
  CHECK(Get(p.follower.port(), "/readyz").status == 503);
  CHECK(Get(p.primary.port(), "/readyz").status == 200);

  std::atomic<uint16_t> target{p.primary.port()};
  Load load(&target, 6, "a");
  // The follower applies while the load runs: its size grows meanwhile.
  REQUIRE(Eventually([&] { return load.acked() >= 300; }, 60s));
  REQUIRE(
      Eventually([&] { return p.follower.Replication()["applied"].get<uint64_t>() > 100; }, 30s));
  // A write to the follower is refused, naming the primary.
  HttpResult refused = Http(p.follower.port(), "POST", "/v1/programs/acme/earn",
                            R"({"customer":"x","points":1})", "to-follower");
  CHECK(refused.status == 503);
  CHECK(refused.code() == "not_primary");
  CHECK(refused.json()["detail"].get<std::string>().find(
            "http://127.0.0.1:" + std::to_string(p.primary.port())) != std::string::npos);
  load.Stop();
  CHECK(load.unexpected().empty());
  Complete(p.primary.port(), load.writes());  // the last write of each writer, if cut short

  WaitCaughtUp(p.follower, p.primary);
  CHECK(p.follower.Replication()["applied"] == p.primary.Replication()["applied"]);
  CheckSameBalances(p.primary.port(), p.follower.port());
  // Every checkpoint the follower stored is the primary's, byte for byte.
  Json cp = Json::parse(p.primary.Checkpoint());
  uint64_t size = cp["size"].get<uint64_t>();
  for (uint64_t id : {uint64_t{1}, size / 3, size / 2, size - 1}) {
    std::string path = "/v1/ledger/entries/" + std::to_string(id);
    HttpResult x = Get(p.primary.port(), path), y = Get(p.follower.port(), path);
    CHECK(x.status == 200);
    CHECK(x.body == y.body);  // the entry, its proof and the checkpoint that covered it
  }
  CheckExactlyOnce(p.follower.port(), load.writes());
}

TEST_CASE("Failover: the primary killed under load, the follower promoted",
          "[replication][nats][slow]") {
  Pair p;
  std::atomic<uint16_t> target{p.primary.port()};
  Load load(&target, 4, "b");
  REQUIRE(Eventually([&] { return load.acked() >= 150; }, 60s));
  uint16_t old_port = p.primary.port();
  CHECK(p.primary.Kill() == 128 + SIGKILL);

  HttpResult promoted = Http(p.follower.port(), "POST", "/v1/admin/promote", "{}", "promote-1");
  INFO(promoted.body);
  REQUIRE(promoted.status == 200);
  CHECK(promoted.json()["role"] == "primary");
  CHECK(Get(p.follower.port(), "/readyz").status == 200);
  size_t before = load.acked();
  target = p.follower.port();
  REQUIRE(Eventually([&] { return load.acked() >= before + 150; }, 60s));
  load.Stop();
  CHECK(load.unexpected().empty());

  std::vector<Write> by_old = load.AckedBy(old_port);
  std::vector<Write> by_new = load.AckedBy(p.follower.port());
  CHECK(by_old.size() >= 150);
  CHECK(by_new.size() >= 150);
  // Every write either primary acknowledged is in the new primary's log.
  CheckReplayed(p.follower.port(), by_old);
  CheckReplayed(p.follower.port(), by_new);
  // The rest (in flight when the primary died) go through now, once.
  Complete(p.follower.port(), load.writes());
  CheckExactlyOnce(p.follower.port(), load.writes());

  // The old primary rejoins as a follower and converges.
  p.primary.Start("--follow", p.nats);
  WaitCaughtUp(p.primary, p.follower);
  CHECK(p.primary.Replication()["role"] == "follower");
  CheckSameBalances(p.primary.port(), p.follower.port());
  CHECK(p.primary.Stop() == 0);
  CHECK(p.follower.Stop() == 0);
  CheckAuditClean(p.primary.data());
  CheckAuditClean(p.follower.data());
}

TEST_CASE("Split brain: a replaced primary gets no write acknowledged",
          "[replication][nats][slow]") {
  Pair p;
  std::atomic<uint16_t> target{p.primary.port()};
  Load load(&target, 4, "c");
  REQUIRE(Eventually([&] { return load.acked() >= 150; }, 60s));

  // Promotion while the old primary runs and writes.
  HttpResult promoted = Http(p.follower.port(), "POST", "/v1/admin/promote", "{}", "promote-1");
  INFO(promoted.body);
  REQUIRE(promoted.status == 200);
  size_t acked_at_promotion = load.acked();
  // At most the writes in flight at that moment are still acknowledged; then none.
  std::this_thread::sleep_for(1s);
  size_t settled = load.acked();
  CHECK(settled <= acked_at_promotion + 4);
  std::this_thread::sleep_for(2s);
  CHECK(load.acked() == settled);
  CHECK(load.unavailable() > 0);
  for (int i = 0; i < 5; ++i) {
    HttpResult r = Http(p.primary.port(), "POST", "/v1/programs/acme/earn",
                        R"({"customer":"c0","points":1})", "stale-" + std::to_string(i));
    CHECK(r.status == 503);
    CHECK(r.code() == "not_primary");
  }
  CHECK(p.primary.Replication()["role"] == "fenced");
  CHECK(Get(p.primary.port(), "/readyz").status == 503);
  CHECK(p.primary.log().find("FENCED") != std::string::npos);
  // A second promotion: the old primary is not a follower.
  CHECK(Http(p.primary.port(), "POST", "/v1/admin/promote", "{}", "promote-2").code() ==
        "not_a_follower");

  // The writers move to the new primary; everything the old one acknowledged is there.
  target = p.follower.port();
  REQUIRE(Eventually([&] { return load.acked() >= settled + 50; }, 60s));
  load.Stop();
  CHECK(load.unexpected().empty());
  CheckReplayed(p.follower.port(), load.AckedBy(p.primary.port()));
  Complete(p.follower.port(), load.writes());
  CheckExactlyOnce(p.follower.port(), load.writes());
  // The fenced primary learned the new primary's groups up to its fence: the same log so far.
  CHECK(p.primary.Stop() == 0);
  CheckAuditClean(p.primary.data());
}

TEST_CASE("NATS servers die: one is tolerated, two stop writes until one returns",
          "[replication][nats][slow]") {
  NatsCluster nats;
  Node primary;
  primary.Start("--replicate", nats);
  CreateProgram(primary.port());
  std::atomic<uint16_t> target{primary.port()};
  Load load(&target, 4, "d");
  REQUIRE(Eventually([&] { return load.acked() >= 100; }, 60s));
  auto primary_size = [&] {
    return Get(primary.port(), "/v1/admin/replication").json()["applied"].get<uint64_t>();
  };

  nats.Kill(0);
  size_t after_one = load.acked();
  INFO("tallyd log:\n" << primary.log());
  REQUIRE(Eventually([&] { return load.acked() >= after_one + 100; }, 30s));

  nats.Kill(1);
  // In-flight groups time out; then every write fails with 503 and nothing is acknowledged.
  REQUIRE(Eventually(
      [&] {
        HttpResult r = Http(primary.port(), "POST", "/v1/programs/acme/earn",
                            R"({"customer":"c1","points":1})", "probe-down");
        return r.status == 503;
      },
      30s));
  // A group whose acknowledgement was lost in the kill may still land in the stream and be
  // learned in a catch-up: its writes then answer 201 as replays. Nothing new is applied.
  std::this_thread::sleep_for(3s);
  size_t stalled = load.fresh();
  uint64_t size = primary_size();
  std::this_thread::sleep_for(3s);
  CHECK(load.fresh() == stalled);
  CHECK(primary_size() == size);
  HttpResult down = Http(primary.port(), "POST", "/v1/programs/acme/earn",
                         R"({"customer":"c1","points":1})", "probe-down");
  CHECK(down.status == 503);
  CHECK(Get(primary.port(), "/v1/admin/replication").json()["role"] == "primary");
  CHECK(Get(primary.port(), "/readyz").status == 200);  // the role takes writes; the stream not

  nats.Start(1);
  REQUIRE(Eventually([&] { return load.fresh() >= stalled + 100; }, 60s));
  load.Stop();
  CHECK(load.unexpected().empty());

  // Nothing acknowledged was lost, nothing applied twice (the probe may or may not have been
  // applied: it is completed like every other write).
  std::vector<Write> writes = load.writes();
  CheckReplayed(primary.port(), load.AckedBy(primary.port()));
  writes.push_back(Write{"probe-down", "c1", 1});
  Complete(primary.port(), writes);
  CheckExactlyOnce(primary.port(), writes);
  CHECK(primary.Stop() == 0);
  CheckAuditClean(primary.data());
}

}  // namespace tally
