// Apply: derives state from one entry. It is the only writer of derived state: the writer and
// Rebuild both call it, so derived state is a pure function of the log. It never re-runs a
// business rule; every decision (balances after, lots consumed) is read from the entry.
#ifndef TALLY_LEDGER_APPLY_H_
#define TALLY_LEDGER_APPLY_H_

#include <optional>
#include <string>

#include "ledger/entry.h"
#include "ledger/state.h"

namespace tally {

// Applies `e` on top of `state`. Errors (DataLoss) mean the entry contradicts the state it is
// applied to, for example a balance_after that is not the previous balance plus the points:
// the writer never produces such an entry, so Rebuild reports it as a discrepancy.
Status ApplyEntry(const Entry& e, StateWriter* state);

// The loyalty part of ApplyEntry (apply_loyalty.cc): lots, holds, customers, objects, schedule.
Status ApplyLoyalty(const Entry& e, StateWriter* state);

// The business key an entry claims, if any (one earn per program and order id, ...), and the
// reason code a second claim is refused with.
struct BusinessClaim {
  std::string key;
  const char* reason;
};
std::optional<BusinessClaim> BusinessKeyOf(const Entry& e);

// The idempotency record: the entries a request wrote and the hash of that request.
struct IdempotencyRecord {
  uint64_t first_id = 0;
  uint32_t count = 0;
  Hash request_hash{};
};
std::string EncodeIdempotencyRecord(const IdempotencyRecord& r);
Result<IdempotencyRecord> DecodeIdempotencyRecord(std::string_view v);

}  // namespace tally

#endif  // TALLY_LEDGER_APPLY_H_
