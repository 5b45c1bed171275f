// Strict parsing of the API's JSON request bodies into the business layer's request structs.
//
// Every body must be one JSON object (UTF-8) with no duplicate keys, nested at most
// kJsonDepthMax deep, holding only the fields the endpoint defines (an unknown field is an
// error, which also stops mass assignment of fields like "balance"), each of its type: amounts
// are JSON integers (1.0 and 1e3 are refused), ids match IsValidId, times are RFC 3339 UTC.
// A null optional field counts as absent. Every error is InvalidArgument with reason
// "bad_request" and a message naming the field. No exception escapes.
//
// All request field names live in json_request.cc.
#ifndef TALLY_API_JSON_REQUEST_H_
#define TALLY_API_JSON_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "api/backup_record.h"
#include "ledger/loyalty.h"
#include "ledger/records.h"
#include "ledger/status.h"

namespace tally {

// Fields of a program that a PATCH may change; absent ones stay as they are.
struct ReferralPatch {
  std::optional<int64_t> advocate_points, friend_points, max_uses, code_ttl_days,
      advocate_pending_days;
};
struct ProgramPatch {
  std::optional<std::string> name, currency;
  std::optional<int64_t> point_value_minor, earn_points, earn_per_amount_minor, expiry_days,
      pending_days;
  std::optional<NegativeBalance> negative_balance;
  bool referral_set = false;              // the body had "referral" (null disables)
  std::optional<ReferralPatch> referral;  // when referral_set: null, or the fields to change
};

// Applies a patch to a program: referral fields change the current settings, or the defaults
// when referrals were disabled.
void ApplyProgramPatch(const ProgramPatch& patch, ProgramConfig* config);

struct AdjustmentBody {
  std::string customer;
  int64_t points = 0;  // non-zero, |points| <= kPointsMax
  std::string reason;  // non-empty
};

struct ReferralBody {
  std::string code;
  std::string friend_id;
  std::string order_id;
};

// POST /v1/programs: id and name required, the rest as ProgramPatch, defaults from
// ProgramConfig.
Result<ProgramConfig> ParseProgramCreate(std::string_view body);
// PATCH /v1/programs/{p}: any field but id.
Result<ProgramPatch> ParseProgramPatch(std::string_view body);
Result<EarnRequest> ParseEarn(std::string_view body);
Result<RedeemRequest> ParseRedeem(std::string_view body);
Result<ReversalRequest> ParseReversal(std::string_view body);
Result<AdjustmentBody> ParseAdjustment(std::string_view body);
Result<RewardRecord> ParseReward(std::string_view body);
// POST .../referral-codes: returns the advocate.
Result<std::string> ParseCodeRequest(std::string_view body);
Result<ReferralBody> ParseReferral(std::string_view body);
Result<ApiKeyRequest> ParseApiKey(std::string_view body);
// POST /v1/admin/backups: {"name"?}, an id that does not start with '.'; "{}" or an empty body
// leaves the name to tallyd.
Result<std::optional<std::string>> ParseBackupRequest(std::string_view body);
// A kept backup record, as RenderBackupRecord writes it.
Result<BackupRecord> ParseBackupRecord(std::string_view text);
// Bodies without fields (capture, void, expire, promote): "{}" or an empty body.
Status ParseEmpty(std::string_view body);

}  // namespace tally

#endif  // TALLY_API_JSON_REQUEST_H_
