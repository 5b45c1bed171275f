// RFC 3339 UTC timestamps, the API's one text form of time, to and from microseconds since the
// Unix epoch.
#ifndef TALLY_LEDGER_RFC3339_H_
#define TALLY_LEDGER_RFC3339_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "ledger/status.h"

namespace tally {

// Parses "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)" (T and Z in either case) into microseconds
// since the epoch. Years 1970 to 9999; no leap seconds; digits of the fraction beyond the
// sixth are truncated. InvalidArgument (reason "bad_request") for anything else, including
// offsets other than UTC.
Result<int64_t> ParseRfc3339(std::string_view text);

// Formats microseconds since the epoch as "YYYY-MM-DDTHH:MM:SSZ", with six fractional digits
// only when the microseconds are not zero. REQUIRES: 0 <= us < the year 10000.
std::string FormatRfc3339(int64_t us);

}  // namespace tally

#endif  // TALLY_LEDGER_RFC3339_H_
