// Loyalty: the rules of points and referrals over the ledger (DESIGN.md, "Loyalty rules in one
// place"). Each write decides on the writer thread against current state and records every
// decision in its entries; reads go through snapshots. The API layer only maps HTTP to these
// calls. Errors carry a stable reason (Status::reason) that the API turns into its error code.
#ifndef TALLY_LEDGER_LOYALTY_H_
#define TALLY_LEDGER_LOYALTY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ledger/entry.h"
#include "ledger/ledger.h"
#include "ledger/limits.h"
#include "ledger/records.h"

namespace tally {

template <typename V>
class ReadCache;  // loyalty_internal.h

// Who writes, and how the write is recognised when retried.
struct WriteContext {
  std::string actor;            // API key id ("" for the system)
  std::string idempotency_key;  // "" for system writes
  Hash request_hash{};          // identifies the request (method, path, body)
};

// The entries a write appended (or, replayed, appended the first time): [first_id, +count).
struct WriteResult {
  uint64_t first_id = 0;
  uint32_t count = 0;
  bool replayed = false;
};

struct EarnRequest {
  std::string customer;
  std::optional<int64_t> points;  // exactly one of points and order_amount_minor
  std::optional<int64_t> order_amount_minor;
  std::string order_id;                     // optional; unique per program
  std::optional<int64_t> pending_days;      // overrides the program's pending_days
  std::optional<int64_t> pending_until_us;  // holds until then (overrides pending_days)
  std::optional<int64_t> expires_at_us;     // expiry of this lot (overrides expiry_days)
  std::string description;
};

struct RedeemRequest {
  std::string customer;
  std::optional<int64_t> points;  // exactly one of points and reward_id
  std::string reward_id;
  std::string order_id;
  bool hold = false;  // reserve now, capture or void later
};

struct ReversalRequest {
  uint64_t entry_id = 0;          // an earn or a redemption (or a referral, for its advocate part)
  std::optional<int64_t> points;  // default: all that is left to reverse
  std::string reason;
};

struct ApiKeyRequest {
  Role role = Role::kCheckout;
  std::string name;
  std::string program;   // role customer only (required there)
  std::string customer;  // role customer only (required there)
};

struct ApiKeyCreated {
  WriteResult write;
  ApiKeyRecord record;
  std::string key;  // the secret, shown once (derived again, identically, on a replay)
};

struct CodeResult {
  ReferralCodeRecord code;
  bool created = false;  // false: the advocate's live code, returned again (nothing written)
  WriteResult write;
};

struct ExpireResult {
  WriteResult write;  // count = entries written
  int64_t points = 0;
};

struct CustomerView {
  std::string program, customer;
  int64_t available = 0, pending = 0, reserved = 0;
  int64_t lifetime_earned = 0, lifetime_redeemed = 0, lifetime_expired = 0;
  std::optional<std::pair<int64_t, int64_t>> next_expiry;  // (at_us, points)
  std::string referral_code;                               // "" for none
  std::string referred_by;                                 // "" for none
};

struct LotView {
  uint64_t entry_id = 0;
  int64_t points = 0;
  int64_t remaining = 0;
  int64_t expires_at_us = 0;  // 0: never
};

struct HoldView {
  uint64_t entry_id = 0;
  HoldRecord record;
};

template <typename T>
struct Page {
  std::vector<T> items;
  std::optional<std::string> next_cursor;  // opaque; pass back as `cursor`
};

// The liability roll-forward: opening + earned + referral + adjusted - redeemed - expired -
// reversed = closing. Opening and closing are what the program owes (available plus reserved
// points of all customers) at from and to; pending is reported apart.
struct Liability {
  int64_t from_us = 0, to_us = 0;
  int64_t opening = 0, earned = 0, referral = 0, adjusted = 0, redeemed = 0, expired = 0,
          reversed = 0, closing = 0, pending = 0;
  std::string currency;
  int64_t point_value_minor = 0;
  int64_t closing_value_minor = 0;
};

struct BalanceRow {
  std::string customer;
  int64_t available = 0, pending = 0, reserved = 0;
};

enum class Bucket { kHour, kDay, kMonth };
struct ActivityBucket {
  int64_t start_us = 0;
  int64_t earned = 0, referral = 0, adjusted = 0, redeemed = 0, expired = 0, reversed = 0;
  int64_t closing = 0;
};

struct LoyaltyOptions {
  // Secret from which API keys are derived (so that a replayed key creation returns the same
  // key while only its hash is stored). 32 random bytes, kept beside the signing key.
  std::string api_key_secret;
  // Customer views (GetCustomer) kept in memory, each until a commit group changes that
  // customer (Ledger::CustomerChangedAt); 0 disables the cache.
  size_t customer_cache_entries = kCustomerCacheEntriesDefault;
};

class Loyalty {
 public:
  Loyalty(Ledger* ledger, LoyaltyOptions options);
  ~Loyalty();

  // Programs. Create: AlreadyExists "program_exists". Update: NotFound "not_found"; the patch
  // edits a copy of the current config; the id cannot change.
  Result<WriteResult> CreateProgram(const WriteContext& w, const ProgramConfig& config);
  Result<WriteResult> UpdateProgram(const WriteContext& w, const std::string& id,
                                    std::function<Status(ProgramConfig*)> patch);
  Result<ProgramConfig> GetProgram(const std::string& id) const;  // NotFound "not_found"
  Result<Page<ProgramConfig>> ListPrograms(const std::string& cursor, size_t limit) const;

  // Points. Every call names its program; an unknown program is NotFound "not_found".
  Result<WriteResult> Earn(const WriteContext& w, const std::string& program, const EarnRequest& r);
  Result<WriteResult> Redeem(const WriteContext& w, const std::string& program,
                             const RedeemRequest& r);
  Result<WriteResult> Capture(const WriteContext& w, const std::string& program, uint64_t entry_id);
  Result<WriteResult> Void(const WriteContext& w, const std::string& program, uint64_t entry_id);
  Result<WriteResult> Reverse(const WriteContext& w, const std::string& program,
                              const ReversalRequest& r);
  Result<WriteResult> Adjust(const WriteContext& w, const std::string& program,
                             const std::string& customer, int64_t points,
                             const std::string& reason);
  // Expires every lot of the program whose expiry is at or before now: one entry per lot.
  Result<ExpireResult> Expire(const WriteContext& w, const std::string& program);
  // Makes available every pending hold of the program whose window has ended (system writes).
  Result<WriteResult> ActivateDue(const std::string& program);
  // Runs Expire and ActivateDue for every program (the background job). Returns entries written.
  Result<uint64_t> RunDueWork();

  // The checkout writes above in two steps, for callers that do not wait: Prepare* checks the
  // request (the errors the write itself would return first) and builds it; Submit queues it,
  // and `done` gets what the write would return, on the ledger's sync thread (or at once on
  // this thread when the request is refused first). `done` must be quick and must not wait
  // on the ledger (Ledger::Submit). Earn(w, p, r) is Write(PrepareEarn(w, p, r)).
  Result<AppendRequest> PrepareEarn(const WriteContext& w, const std::string& program,
                                    const EarnRequest& r) const;
  Result<AppendRequest> PrepareRedeem(const WriteContext& w, const std::string& program,
                                      const RedeemRequest& r) const;
  Result<AppendRequest> PrepareCapture(const WriteContext& w, const std::string& program,
                                       uint64_t entry_id) const;
  Result<AppendRequest> PrepareVoid(const WriteContext& w, const std::string& program,
                                    uint64_t entry_id) const;
  Result<AppendRequest> PrepareReverse(const WriteContext& w, const std::string& program,
                                       const ReversalRequest& r) const;
  using WriteDone = std::function<void(Result<WriteResult>)>;
  Result<WriteResult> Write(Result<AppendRequest> request);
  void Submit(Result<AppendRequest> request, WriteDone done);

  // Rewards. AlreadyExists "reward_exists" for an id already in the catalog.
  Result<WriteResult> AddReward(const WriteContext& w, const std::string& program,
                                const RewardRecord& reward);
  Result<Page<RewardRecord>> ListRewards(const std::string& program, const std::string& cursor,
                                         size_t limit) const;

  // Referrals.
  Result<CodeResult> GetOrCreateCode(const WriteContext& w, const std::string& program,
                                     const std::string& advocate);
  // NotFound "unknown_code" (counted as a failed look-up for `actor`).
  Result<ReferralCodeRecord> GetCode(const std::string& actor, const std::string& program,
                                     const std::string& code);
  Result<WriteResult> Refer(const WriteContext& w, const std::string& program,
                            const std::string& code, const std::string& friend_id,
                            const std::string& order_id);

  // Customers. NotFound "not_found" for a customer never seen.
  Result<CustomerView> GetCustomer(const std::string& program, const std::string& customer) const;
  Result<Page<Entry>> CustomerEntries(const std::string& program, const std::string& customer,
                                      const std::string& cursor, size_t limit) const;
  Result<Page<LotView>> CustomerLots(const std::string& program, const std::string& customer,
                                     const std::string& cursor, size_t limit) const;
  Result<HoldView> GetHold(const std::string& program, uint64_t entry_id) const;

  // API keys. Authenticate returns nullopt for an unknown or revoked key.
  Result<ApiKeyCreated> CreateApiKey(const WriteContext& w, const ApiKeyRequest& r);
  Result<WriteResult> RevokeApiKey(const WriteContext& w, const std::string& id);
  Result<std::optional<ApiKeyRecord>> Authenticate(std::string_view key) const;
  // The key that CreateApiKey gives a request with this context (deterministic).
  std::string DeriveKeySecret(const std::string& key_id) const;

  // The whole log, or one program's, newest first, optionally of one type.
  Result<Page<Entry>> ListEntries(const std::string& program, std::optional<EntryType> type,
                                  const std::string& cursor, size_t limit) const;

  // Finance (times in µs; to_us defaults to now by the caller).
  Result<Liability> LiabilityReport(const std::string& program, int64_t from_us,
                                    int64_t to_us) const;
  Result<Page<BalanceRow>> BalancesAsOf(const std::string& program, int64_t as_of_us,
                                        const std::string& cursor, size_t limit) const;
  Result<std::vector<ActivityBucket>> Activity(const std::string& program, int64_t from_us,
                                               int64_t to_us, Bucket bucket) const;

  Ledger* ledger() const { return ledger_; }

 private:
  struct Limiter;
  Ledger* ledger_;
  LoyaltyOptions options_;
  std::unique_ptr<Limiter> limiter_;
  std::unique_ptr<ReadCache<CustomerView>> customers_;
  std::unique_ptr<ReadCache<ApiKeyRecord>> api_keys_;  // valid keys by hash
};

// The JSON view's "points" of an entry: the sum of its positive postings.
int64_t EntryPoints(const Entry& e);

}  // namespace tally

#endif  // TALLY_LEDGER_LOYALTY_H_
