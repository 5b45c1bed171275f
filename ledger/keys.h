// Every RocksDB column family and key layout of the ledger, in one place (docs/format.md).
// Integers in keys are big-endian so that byte order is numeric order. Ids never contain a NUL
// byte, so NUL separates the parts of a composite key and keeps prefixes unambiguous.
#ifndef TALLY_LEDGER_KEYS_H_
#define TALLY_LEDGER_KEYS_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tally {

// Column families. The numbers index kCfNames; names are part of the format: do not change.
enum class Cf : uint8_t {
  kMeta = 0,         // "default": latest checkpoint and format version (not derived)
  kEntries,          // id -> canonical entry bytes: the log
  kCheckpoints,      // tree size -> signed checkpoint note, one per commit group (not derived)
  kTree,             // level, index -> hash of a complete Merkle subtree
  kBalances,         // account -> balance (i64)
  kCustomerEntries,  // program, customer, ~id -> "" (a customer's entries, newest first)
  kProgramEntries,   // program, ~id -> type (u8) (a program's entries, newest first)
  kIdempotency,      // actor, idempotency key -> first id, count, request hash
  kBusinessKeys,     // kind, program, business id -> entry id
  kLots,             // program, customer, expiry, lot id -> points, remaining
  kHolds,            // entry id -> hold state
  kObjects,          // kind, program, id -> latest record (programs, rewards, keys, codes)
  kCustomers,        // program, customer -> customer summary
  kSchedule,         // kind, program, time, ... -> "" (lots to expire, holds to activate)
  kCount,
};
inline constexpr int kCfCount = static_cast<int>(Cf::kCount);
extern const char* const kCfNames[kCfCount];
inline const char* CfName(Cf cf) { return kCfNames[static_cast<int>(cf)]; }

// True for the column families that Rebuild derives from the log and compares byte for byte.
bool IsDerivedCf(Cf cf);

// Meta keys.
inline constexpr std::string_view kMetaCheckpoint = "checkpoint";
inline constexpr std::string_view kMetaFormat = "format";
// The replicated log's sequence of the last group held (replication only), written with it.
inline constexpr std::string_view kMetaStreamSeq = "stream_seq";
// Replication: the id this data directory publishes its groups under (u64), kept across restarts
// of a primary so that it knows its own groups; a follower takes a new one at every open.
inline constexpr std::string_view kMetaWriterId = "writer_id";

// Kinds in kBusinessKeys and kObjects. Numbers are part of the format: do not change.
enum class BusinessKind : uint8_t { kEarnOrder = 1, kRedeemOrder = 2, kReferralFriend = 3 };
enum class ObjectKind : uint8_t {
  kProgram = 1,
  kReward = 2,
  kApiKey = 3,
  kReferralCode = 4,
  kAdvocateCode = 5,
  kSigningKey = 6,
  kApiKeyHash = 7,
};

std::string EntryKey(uint64_t id);
std::string CheckpointKey(uint64_t size);
std::string TreeKey(int level, uint64_t index);
std::string CustomerEntriesPrefix(std::string_view program, std::string_view customer);
std::string CustomerEntryKey(std::string_view program, std::string_view customer, uint64_t id);
std::string ProgramEntriesPrefix(std::string_view program);
std::string ProgramEntryKey(std::string_view program, uint64_t id);
// The entry id at the end of a CustomerEntryKey or ProgramEntryKey.
uint64_t IdFromNewestFirstKey(std::string_view key);
std::string IdempotencyKey(std::string_view actor, std::string_view key);
std::string BusinessKey(BusinessKind kind, std::string_view program, std::string_view id);
std::string LotsPrefix(std::string_view program, std::string_view customer);
// Lots order soonest expiry first, never-expiring (0) last, ties oldest first.
std::string LotKey(std::string_view program, std::string_view customer, int64_t expires_at_us,
                   uint64_t lot);
std::string HoldKey(uint64_t entry_id);
std::string ObjectPrefix(ObjectKind kind, std::string_view program);
std::string ObjectKey(ObjectKind kind, std::string_view program, std::string_view id);
// Due work, ordered by time within a program: lots to expire and pending holds to activate.
enum class ScheduleKind : uint8_t { kLotExpiry = 1, kHoldActivation = 2 };
std::string SchedulePrefix(ScheduleKind kind, std::string_view program);
std::string LotExpiryKey(std::string_view program, int64_t expires_at_us, std::string_view customer,
                         uint64_t lot);
std::string HoldActivationKey(std::string_view program, int64_t until_us, uint64_t entry_id);
std::string CustomerPrefix(std::string_view program);
std::string CustomerKey(std::string_view program, std::string_view customer);

// The customer a key of kCustomers, kLots or kBalances (a customer account) belongs to: false
// for any other key. Everything Loyalty::GetCustomer reads is in those three families, so a
// commit group changes a customer's view only through a key this names (Ledger's change marks).
bool CustomerOfKey(Cf cf, std::string_view key, std::string_view* program,
                   std::string_view* customer);

// True for a kObjects key of an API key record or of its hash index (Ledger::ApiKeysChangedAt).
bool IsApiKeyObject(std::string_view key);

// The smallest key greater than every key that starts with prefix ("" if none exists).
std::string PrefixEnd(std::string_view prefix);

}  // namespace tally

#endif  // TALLY_LEDGER_KEYS_H_
