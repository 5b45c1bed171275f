// fuzz_json_request: bytes -> every request decoder of api/json_request.h (and the RFC 3339
// parser they use). Each must answer OK or InvalidArgument "bad_request", never crash, throw or
// hang; what one accepts must also pass the checks the handlers rely on.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "api/json_request.h"
#include "ledger/entry.h"
#include "ledger/limits.h"
#include "ledger/rfc3339.h"

namespace tally {
namespace {

[[noreturn]] void Fail(const char* what, const Status& s) {
  std::fprintf(stderr, "fuzz_json_request: %s: %s\n", what, s.ToString().c_str());
  std::abort();
}

// True if the decoder accepted the body; every refusal must be a 400 bad_request.
template <typename T>
bool Accepted(const char* what, const Result<T>& r) {
  if (r.ok()) return true;
  if (r.status().code() != Code::kInvalidArgument || r.status().reason() != "bad_request") {
    Fail(what, r.status());
  }
  return false;
}

void Require(bool ok, const char* what) {
  if (!ok) Fail(what, Status::Ok());
}

bool PointsOk(int64_t p) { return p >= 1 && p <= kPointsMax; }

}  // namespace
}  // namespace tally

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tally;
  std::string_view body(reinterpret_cast<const char*>(data), size);

  if (auto p = ParseProgramCreate(body); Accepted("ParseProgramCreate", p)) {
    Require(IsValidId(p->id) && !p->name.empty(), "program create without id or name");
  }
  if (auto patch = ParseProgramPatch(body); Accepted("ParseProgramPatch", patch)) {
    ProgramConfig config;
    config.id = "p";
    config.name = "n";
    ApplyProgramPatch(*patch, &config);
    Require(config.id == "p", "a patch changed the id");
    (void)ValidateProgram(config);
  }
  if (auto e = ParseEarn(body); Accepted("ParseEarn", e)) {
    Require(IsValidId(e->customer), "earn customer");
    Require(e->points.has_value() != e->order_amount_minor.has_value(), "earn points or amount");
    Require(!e->points || PointsOk(*e->points), "earn points range");
    Require(e->order_id.empty() || IsValidId(e->order_id), "earn order id");
  }
  if (auto r = ParseRedeem(body); Accepted("ParseRedeem", r)) {
    Require(IsValidId(r->customer), "redeem customer");
    Require(r->points.has_value() == r->reward_id.empty(), "redeem points or reward");
    Require(!r->points || PointsOk(*r->points), "redeem points range");
  }
  if (auto r = ParseReversal(body); Accepted("ParseReversal", r)) {
    Require(!r->points || PointsOk(*r->points), "reversal points range");
  }
  if (auto a = ParseAdjustment(body); Accepted("ParseAdjustment", a)) {
    Require(a->points != 0 && a->points >= -kPointsMax && a->points <= kPointsMax,
            "adjustment points range");
    Require(!a->reason.empty(), "adjustment reason");
  }
  if (auto w = ParseReward(body); Accepted("ParseReward", w)) {
    Require(IsValidId(w->id) && PointsOk(w->points), "reward id or points");
    Require(!w->stock || *w->stock >= 0, "reward stock");
  }
  if (auto advocate = ParseCodeRequest(body); Accepted("ParseCodeRequest", advocate)) {
    Require(IsValidId(*advocate), "code advocate");
  }
  if (auto r = ParseReferral(body); Accepted("ParseReferral", r)) {
    Require(!r->code.empty() && IsValidId(r->friend_id), "referral code or friend");
  }
  if (auto k = ParseApiKey(body); Accepted("ParseApiKey", k)) {
    bool bound = k->role == Role::kCustomer;
    Require(bound == IsValidId(k->program) && bound == IsValidId(k->customer), "api key binding");
  }
  Status empty = ParseEmpty(body);
  if (!empty.ok() && empty.reason() != "bad_request") Fail("ParseEmpty", empty);

  if (size <= 64) {
    Result<int64_t> us = ParseRfc3339(body);
    (void)us;
  }
  return 0;
}
