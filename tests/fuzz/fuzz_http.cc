// fuzz_http: bytes -> an HttpRequest (see RequestFromFuzzInput in fuzz_server.h) -> Router::Handle
// over a real ledger. HttpServer hands the Router exactly such requests once Beast has parsed
// them; fuzz_http_wire fuzzes that parsing.
//
// Beyond the sanitizers, every response must be well formed: a status from 200 to 599 other
// than 500 (a 500 is a request the API did not expect: a bug), and an error body that is a
// problem document with a code. A write that succeeded with an Idempotency-Key is sent again and
// must be replayed: the same status and body, marked Idempotency-Replayed. And now and then
// (after 1024, 2048, 4096, ... inputs) the derived state must equal the state rebuilt by
// replaying the log, whatever the fuzzer wrote.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "ledger/rebuild.h"
#include "ledger/store.h"
#include "tests/fuzz/fuzz_server.h"

namespace tally::fuzz {
namespace {

[[noreturn]] void Fail(const HttpRequest& request, const HttpResponse& response, const char* why) {
  std::fprintf(stderr, "fuzz_http: %s\nrequest: %s %s\nbody: %s\nresponse: %d %s\n", why,
               request.method.c_str(), request.target.c_str(), request.body.c_str(),
               response.status, response.body.c_str());
  std::abort();
}

void Check(const HttpRequest& request, const HttpResponse& response) {
  if (response.status < 200 || response.status > 599) Fail(request, response, "bad status");
  if (response.status == 500) Fail(request, response, "internal error");
  if (response.status < 400) return;
  auto problem = nlohmann::json::parse(response.body, nullptr, false);
  if (!problem.is_object() || !problem.contains("code") || !problem["code"].is_string() ||
      problem["status"] != response.status) {
    Fail(request, response, "error body is not a problem document");
  }
}

bool Replayed(const HttpResponse& r) {
  for (const auto& [name, value] : r.headers) {
    if (name == "Idempotency-Replayed" && value == "true") return true;
  }
  return false;
}

void CheckReplay(Router& router, const HttpRequest& request, const HttpResponse& first) {
  if (first.status < 200 || first.status > 299 || request.method != "POST" ||
      request.Header("idempotency-key") == nullptr) {
    return;
  }
  HttpResponse again = router.Handle(request);
  if (again.status != first.status || again.body != first.body) {
    Fail(request, again, "a replayed write answered differently");
  }
  // A write that appended nothing (a referral code returned again) has nothing to replay.
  if (!Replayed(again) && first.status != 200) {
    Fail(request, again, "a repeated write was not marked as replayed");
  }
}

void CheckRebuildNowAndThen(Ledger& ledger) {
  static uint64_t inputs = 0, next = 1024;
  if (++inputs != next) return;
  next *= 2;
  auto snapshot = ledger.store()->NewSnapshot();
  RebuildResult rebuilt;
  std::vector<Discrepancy> found;
  Status s = RebuildState(*ledger.store(), snapshot.get(), &rebuilt, &found);
  if (s.ok()) s = CompareDerivedState(*ledger.store(), snapshot.get(), rebuilt, &found);
  if (!s.ok()) {
    std::fprintf(stderr, "fuzz_http: rebuild failed: %s\n", s.ToString().c_str());
    std::abort();
  }
  if (found.empty()) return;
  for (const Discrepancy& d : found) std::fprintf(stderr, "%s\n", d.ToString().c_str());
  std::fprintf(stderr, "fuzz_http: the derived state differs from the log's replay\n");
  std::abort();
}

}  // namespace
}  // namespace tally::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tally::fuzz;
  FuzzServer& server = FuzzServer::Get();
  tally::HttpRequest request;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (!RequestFromFuzzInput(server, input, &request)) return 0;
  tally::HttpResponse response = server.router().Handle(request);
  Check(request, response);
  CheckReplay(server.router(), request, response);
  CheckRebuildNowAndThen(server.ledger());
  return 0;
}
