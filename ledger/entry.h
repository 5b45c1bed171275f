// The entry: one immutable record of the log, and its canonical binary encoding.
// The encoding is frozen and documented in docs/format.md; the entry's id is its Merkle leaf index.
#ifndef TALLY_LEDGER_ENTRY_H_
#define TALLY_LEDGER_ENTRY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ledger/hash.h"
#include "ledger/status.h"

namespace tally {

// Entry types. The numbers are part of the encoding: do not change.
enum class EntryType : uint8_t {
  kProgram = 1,        // a program created or changed (payload: ProgramConfig)
  kApiKey = 2,         // an API key issued or revoked (payload: ApiKeyRecord)
  kEarn = 3,           // points awarded for an order
  kRedeem = 4,         // points spent, on points or a reward
  kCapture = 5,        // a hold resolved: pending earn made available, reserved points redeemed
  kVoid = 6,           // a hold resolved: pending earn cancelled, reserved points given back
  kReversal = 7,       // a refund: claw back an earn, give back a redemption
  kAdjustment = 8,     // an admin correction with a reason
  kExpiry = 9,         // the remainder of one expired lot
  kReferralCode = 10,  // a referral code made for an advocate (payload: ReferralCodeRecord)
  kReferral = 11,      // a friend used a code: friend and advocate rewarded
  kReward = 12,        // a catalog reward added or changed (payload: RewardRecord)
  kSigningKey = 13,    // a new checkpoint signing key (payload: SigningKeyRecord)
};
inline constexpr uint8_t kEntryTypeMax = 13;

const char* EntryTypeName(EntryType type);
std::optional<EntryType> EntryTypeFromName(std::string_view name);

// One leg of a double-entry movement. `balance_after` is the account's balance once this entry
// is applied: the entry records the decision, so state can be derived from the log alone.
struct Posting {
  std::string account;
  int64_t points = 0;
  int64_t balance_after = 0;
  bool operator==(const Posting&) const = default;
};

// Points taken from (or, for a give-back, restored to) one lot of the entry's customer. A lot is
// named by the id of the entry that credited it and keyed by its expiry.
struct LotUse {
  uint64_t lot = 0;
  int64_t expires_at_us = 0;  // 0: never
  int64_t points = 0;
  bool operator==(const LotUse&) const = default;
};

struct Entry {
  uint64_t id = 0;      // position in the log = Merkle leaf index
  int64_t time_us = 0;  // server time, never decreasing along the log
  EntryType type = EntryType::kAdjustment;
  std::string program;
  std::string actor;            // id of the API key that wrote it ("" for the system)
  std::string idempotency_key;  // "" when written by the system
  Hash request_hash{};          // hash of the request that produced it (zero for the system)
  std::string customer;         // the customer the entry is about, if any
  std::string order_id;         // business reference, if any
  std::optional<uint64_t> ref;  // the entry captured, voided, reversed or expired
  bool holds = false;           // the entry holds points (pending earn, reserved redemption)
  int64_t hold_until_us = 0;  // a pending earn becomes available at this time (0: only on capture)
  int64_t expires_at_us = 0;  // expiry of the lot this entry credits (0: never)
  std::vector<Posting> postings;
  std::vector<LotUse> lots;  // lots consumed by a debit of available points
  std::string description;
  std::string payload;  // a type-specific record (see payloads.h)

  bool operator==(const Entry&) const = default;
};

inline constexpr uint8_t kEntryFormatVersion = 1;

// Canonical bytes of an entry: the Merkle leaf. REQUIRES: ValidateEntry(e).ok().
std::string EncodeEntry(const Entry& e);

// Strict decoding: an unknown version or type, a length over its limit, unknown flag bits,
// truncated or trailing bytes are all errors (DataLoss). Also runs ValidateEntry.
Result<Entry> DecodeEntry(std::string_view bytes);
// DecodeEntry into an existing entry, every field overwritten, reusing the memory its strings and
// vectors hold (no allocation when it held an entry of the same shape): for decoding a whole log.
// On an error the entry's contents are unspecified.
Status DecodeEntryInto(std::string_view bytes, Entry* entry);

// The entry's own rules: postings sum to zero (checked arithmetic), no zero or duplicate
// postings, well-formed ids and accounts, lengths within limits.
Status ValidateEntry(const Entry& e);

// Ids (program, customer, reward, order): 1 to 64 of A-Z a-z 0-9 _ - . @
bool IsValidId(std::string_view id);

// An entry's idempotency key: at most 255 printable ASCII characters (0x20 to 0x7E); empty for
// the system's entries and revocations. The API also requires a client's key to be non-empty.
bool IsValidIdempotencyKey(std::string_view key);

}  // namespace tally

#endif  // TALLY_LEDGER_ENTRY_H_
