// Helpers shared by the loyalty files (loyalty.cc: writes, loyalty_read.cc: reads and reports).
// Not part of the library's interface.
#ifndef TALLY_LEDGER_LOYALTY_INTERNAL_H_
#define TALLY_LEDGER_LOYALTY_INTERNAL_H_

#include <string>
#include <vector>

#include "ledger/loyalty.h"
#include "ledger/records.h"
#include "ledger/state.h"

namespace tally::internal {

Result<ProgramConfig> LoadProgram(const StateReader& s, const std::string& id);
Result<std::optional<CustomerRecord>> LoadCustomer(const StateReader& s, const std::string& program,
                                                   const std::string& customer);
Result<std::optional<HoldRecord>> LoadHold(const StateReader& s, uint64_t entry_id);
Result<std::optional<Entry>> LoadEntry(const StateReader& s, uint64_t id);

// One lot of a customer, as stored.
struct Lot {
  uint64_t id = 0;
  int64_t expires_at_us = 0;  // 0: never
  LotRecord record;
};
// The customer's lots in consumption order: soonest expiry first, never-expiring last, ties
// oldest first.
Result<std::vector<Lot>> LoadLots(const StateReader& s, const std::string& program,
                                  const std::string& customer);

// Opaque cursors: the last key of a page, hex-encoded.
std::string KeyCursor(std::string_view key);
Result<std::string> KeyFromCursor(const std::string& cursor);

// Referral codes: Crockford base32 from a CSPRNG with a check symbol.
std::string NewReferralCode();
// Upper-cases, maps I and L to 1 and O to 0, drops hyphens; nullopt if not a well-formed code.
std::optional<std::string> NormalizeReferralCode(std::string_view code);

}  // namespace tally::internal

#endif  // TALLY_LEDGER_LOYALTY_INTERNAL_H_
