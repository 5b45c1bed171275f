// The disk-full guard end to end: tallyd --min-free-bytes above what any disk has refuses
// every write with 507 insufficient_storage and answers /readyz 503, while reads go on; the
// same data directory takes writes again under a threshold the disk meets.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "tests/crash/crash_util.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using testing::HttpClient;
using testing::HttpReply;
using testing::Json;
using testing::RestartingTallyd;
using testing::TempDir;

const std::string kAdminKey = "storage-test-admin-key-d15c";
const std::string kMoreThanAnyDisk = "4611686018427387904";  // 2^62 bytes

std::string Code(const HttpReply& r) {
  Json j = Json::parse(r.body, nullptr, false);
  return j.is_object() && j["code"].is_string() ? j["code"].get<std::string>() : "";
}

}  // namespace

TEST_CASE("Below --min-free-bytes tallyd refuses writes with 507 and serves reads",
          "[e2e][storage]") {
  TempDir dir;
  const std::string data = dir / "data";
  const std::string earn = R"({"customer":"alice","points":70,"order_id":"o-1"})";
  std::string first_reply;
  {
    RestartingTallyd server(TALLYD_PATH, data, kAdminKey, dir / "tallyd.log",
                            {"--min-free-bytes", "0"});
    REQUIRE(server.Start());
    HttpClient client(kAdminKey);
    REQUIRE(client
                .Send(server.port(), "POST", "/v1/programs", R"({"id":"acme","name":"Acme"})",
                      "program")
                .status == 201);
    HttpReply r = client.Send(server.port(), "POST", "/v1/programs/acme/earn", earn, "earn-1");
    REQUIRE(r.status == 201);
    first_reply = r.body;
    REQUIRE(server.Stop() == 0);
  }

  RestartingTallyd short_disk(TALLYD_PATH, data, kAdminKey, dir / "tallyd.log",
                              {"--min-free-bytes", kMoreThanAnyDisk});
  REQUIRE(short_disk.Start());
  HttpClient client(kAdminKey);
  const uint16_t port = short_disk.port();

  HttpReply refused = client.Send(port, "POST", "/v1/programs/acme/earn",
                                  R"({"customer":"alice","points":5,"order_id":"o-2"})", "earn-2");
  CHECK(refused.status == 507);
  CHECK(Code(refused) == "insufficient_storage");
  CHECK(refused.Header("content-type") == "application/problem+json");
  // Every kind of write, and a replay too: the guard stands before the ledger.
  CHECK(client
            .Send(port, "POST", "/v1/programs/acme/redeem", R"({"customer":"alice","points":1})",
                  "redeem-1")
            .status == 507);
  CHECK(client.Send(port, "POST", "/v1/programs", R"({"id":"other","name":"Other"})", "program-2")
            .status == 507);
  CHECK(client.Send(port, "POST", "/v1/programs/acme/earn", earn, "earn-1").status == 507);

  HttpReply ready = client.Send(port, "GET", "/readyz");
  CHECK(ready.status == 503);
  CHECK(client.Send(port, "GET", "/healthz").status == 200);

  HttpReply customer = client.Send(port, "GET", "/v1/programs/acme/customers/alice");
  REQUIRE(customer.status == 200);
  CHECK(Json::parse(customer.body)["available"] == 70);
  HttpReply entry = client.Send(port, "GET", "/v1/ledger/entries/1");
  REQUIRE(entry.status == 200);
  CHECK(Json::parse(entry.body) == Json::parse(first_reply));
  CHECK(client.Send(port, "GET", "/v1/ledger/checkpoint").status == 200);
  CHECK(client.Send(port, "GET", "/v1/programs/acme/reports/liability").status == 200);
  CHECK(short_disk.Stop() == 0);

  // With room again, the same directory takes the refused write.
  RestartingTallyd roomy(TALLYD_PATH, data, kAdminKey, dir / "tallyd.log",
                         {"--min-free-bytes", "1"});
  REQUIRE(roomy.Start());
  CHECK(client.Send(roomy.port(), "GET", "/readyz").status == 200);
  HttpReply again = client.Send(roomy.port(), "POST", "/v1/programs/acme/earn",
                                R"({"customer":"alice","points":5,"order_id":"o-2"})", "earn-2");
  CHECK(again.status == 201);
  CHECK_FALSE(again.replayed());
  CHECK(roomy.Stop() == 0);
}

TEST_CASE("tallyd's --min-free-bytes flag takes a byte count", "[e2e][storage]") {
  TempDir dir;
  for (const char* bad : {"-1", "lots", "", "1e9"}) {
    testing::CommandResult r = testing::RunCommand(
        {TALLYD_PATH, "--data", dir / "data", "--listen", "127.0.0.1:0", "--min-free-bytes", bad});
    INFO("--min-free-bytes '" << bad << "': " << r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find("--min-free-bytes") != std::string::npos);
  }
  testing::CommandResult help = testing::RunCommand({TALLYD_PATH, "--help"});
  CHECK(help.output.find("--min-free-bytes N") != std::string::npos);
}

TEST_CASE("tallyd's --background-write-rate sets the limit /metrics reports", "[e2e][storage]") {
  TempDir dir;
  auto limit_shown = [&](std::vector<std::string> args) {
    RestartingTallyd server(TALLYD_PATH, dir / "data", kAdminKey, dir / "tallyd.log",
                            std::move(args));
    REQUIRE(server.Start());
    HttpClient client(kAdminKey);
    HttpReply m = client.Send(server.port(), "GET", "/metrics");
    REQUIRE(m.status == 200);
    const std::string name = "\ntally_background_write_limit_bytes_per_second ";
    size_t at = m.body.find(name);
    REQUIRE(at != std::string::npos);
    CHECK(m.body.find("\ntally_background_write_bytes_total ") != std::string::npos);
    REQUIRE(server.Stop() == 0);
    return m.body.substr(at + name.size(), m.body.find('\n', at + 1) - at - name.size());
  };
  CHECK(limit_shown({}) == "33554432");
  CHECK(limit_shown({"--background-write-rate", "1048576"}) == "1048576");
  CHECK(limit_shown({"--background-write-rate=0"}) == "0");

  for (const char* bad : {"-1", "fast", "", "1e9", "1099511627777", "1", "1048575"}) {
    testing::CommandResult r = testing::RunCommand({TALLYD_PATH, "--data", dir / "data", "--listen",
                                                    "127.0.0.1:0", "--background-write-rate", bad});
    INFO("--background-write-rate '" << bad << "': " << r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find("--background-write-rate") != std::string::npos);
  }
  testing::CommandResult help = testing::RunCommand({TALLYD_PATH, "--help"});
  CHECK(help.output.find("--background-write-rate N") != std::string::npos);
}

}  // namespace tally
