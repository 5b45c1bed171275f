// The type-specific records carried in entry payloads and kept, latest version, as derived
// state: programs, rewards, API keys, referral codes, customers, holds and lots. Each has a
// canonical binary encoding (docs/format.md) with a strict decoder.
#ifndef TALLY_LEDGER_RECORDS_H_
#define TALLY_LEDGER_RECORDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ledger/hash.h"
#include "ledger/status.h"

namespace tally {

enum class NegativeBalance : uint8_t { kDeny = 0, kAllow = 1 };

struct ReferralSettings {
  int64_t advocate_points = 500;
  int64_t friend_points = 250;
  int64_t max_uses = 10;
  int64_t code_ttl_days = 90;          // 0: codes never expire
  int64_t advocate_pending_days = 30;  // 0: the advocate's points are available at once
  bool operator==(const ReferralSettings&) const = default;
};

struct ProgramConfig {
  std::string id;
  std::string name;
  std::string currency = "USD";
  int64_t point_value_minor = 1;  // money value of one point, in minor units of currency
  int64_t earn_points = 1;        // earn rate: earn_points per earn_per_amount_minor
  int64_t earn_per_amount_minor = 100;
  int64_t expiry_days = 0;   // 0: points never expire
  int64_t pending_days = 0;  // 0: earned points are available at once
  NegativeBalance negative_balance = NegativeBalance::kDeny;
  std::optional<ReferralSettings> referral;  // absent: referrals disabled
  bool operator==(const ProgramConfig&) const = default;
};
std::string EncodeProgram(const ProgramConfig& p);
Result<ProgramConfig> DecodeProgram(std::string_view bytes);
// Rules a program must satisfy (ids, non-negative days, positive rates).
Status ValidateProgram(const ProgramConfig& p);

struct RewardRecord {
  std::string id;
  std::string name;
  int64_t points = 0;
  std::optional<int64_t> stock;  // absent: unlimited
  bool operator==(const RewardRecord&) const = default;
};
std::string EncodeReward(const RewardRecord& r);
Result<RewardRecord> DecodeReward(std::string_view bytes);

enum class Role : uint8_t { kAdmin = 1, kCheckout = 2, kFinance = 3, kCustomer = 4 };
const char* RoleName(Role r);
std::optional<Role> RoleFromName(std::string_view name);

struct ApiKeyRecord {
  std::string id;
  std::string name;
  Role role = Role::kCheckout;
  std::string program;   // role customer only
  std::string customer;  // role customer only
  Hash key_hash{};       // SHA-256 of the secret key; the key itself is never stored
  bool revoked = false;
  int64_t created_us = 0;
  bool operator==(const ApiKeyRecord&) const = default;
};
std::string EncodeApiKey(const ApiKeyRecord& k);
Result<ApiKeyRecord> DecodeApiKey(std::string_view bytes);

struct ReferralCodeRecord {
  std::string code;
  std::string advocate;
  int64_t expires_at_us = 0;  // 0: never
  int64_t max_uses = 0;
  int64_t uses = 0;
  bool operator==(const ReferralCodeRecord&) const = default;
};
std::string EncodeReferralCode(const ReferralCodeRecord& c);
Result<ReferralCodeRecord> DecodeReferralCode(std::string_view bytes);

// The payload of a signing_key entry: the new key, endorsed by the key it replaces.
struct SigningKeyRecord {
  std::string name;          // signed-note key name
  std::string public_key;    // raw 32-byte Ed25519 key
  std::string previous_key;  // raw 32-byte key it replaces
  std::string endorsement;   // previous key's signature over EndorsementMessage()
  bool operator==(const SigningKeyRecord&) const = default;
};
std::string EncodeSigningKey(const SigningKeyRecord& k);
Result<SigningKeyRecord> DecodeSigningKey(std::string_view bytes);
// What the previous key signs to endorse a new one.
std::string EndorsementMessage(std::string_view name, std::string_view new_public_key);

// What Tally keeps per customer beside the balances.
struct CustomerRecord {
  int64_t lifetime_earned = 0;    // points that became available from earns and referrals
  int64_t lifetime_redeemed = 0;  // points redeemed, net of give-backs
  int64_t lifetime_expired = 0;
  std::string referral_code;  // the advocate's current code, if any
  std::string referred_by;    // the advocate who referred this customer, if any
  uint64_t first_entry = 0;
  bool operator==(const CustomerRecord&) const = default;
};
std::string EncodeCustomer(const CustomerRecord& c);
Result<CustomerRecord> DecodeCustomer(std::string_view bytes);

// A hold or a reversible movement: every earn, redemption and referral has one, keyed by entry.
enum class HoldKind : uint8_t { kEarn = 1, kRedeem = 2, kReferral = 3 };
enum class HoldState : uint8_t { kNone = 0, kPending = 1, kCaptured = 2, kVoided = 3 };
const char* HoldStateName(HoldState s);
struct HoldRecord {
  HoldKind kind = HoldKind::kEarn;
  HoldState state = HoldState::kNone;  // kNone: the entry never held points
  std::string customer;                // whose points (the advocate for a referral)
  int64_t points = 0;                  // moved by the entry (for a referral: the advocate's part)
  int64_t held = 0;                    // still pending or reserved
  int64_t reversed = 0;                // clawed back or given back so far
  int64_t until_us = 0;                // a pending hold becomes available then (0: only on capture)
  int64_t lot_expires_at_us = 0;  // expiry override for the lot a capture creates (0: program's)
  std::string reward_id;          // a redemption of a catalog reward
  bool operator==(const HoldRecord&) const = default;
};
std::string EncodeHold(const HoldRecord& h);
Result<HoldRecord> DecodeHold(std::string_view bytes);

struct LotRecord {
  int64_t points = 0;     // credited
  int64_t remaining = 0;  // not yet consumed or expired
  bool operator==(const LotRecord&) const = default;
};
std::string EncodeLot(const LotRecord& l);
Result<LotRecord> DecodeLot(std::string_view bytes);

}  // namespace tally

#endif  // TALLY_LEDGER_RECORDS_H_
