// Account names: `program:kind` for the program's accounts and `program:customer:ID:kind` for a
// customer's. Ids never contain ':', so names parse back without ambiguity.
#ifndef TALLY_LEDGER_ACCOUNTS_H_
#define TALLY_LEDGER_ACCOUNTS_H_

#include <string>
#include <string_view>

namespace tally {

// Account kinds, in their own namespace so they read acct::kAvailable.
namespace acct {
// A customer's accounts.
inline constexpr std::string_view kAvailable = "available";  // spendable points
inline constexpr std::string_view kPending = "pending";      // awarded, not yet spendable
inline constexpr std::string_view kReserved = "reserved";    // held for a redemption
// The program's accounts.
inline constexpr std::string_view kIssued = "issued";          // source of earned points
inline constexpr std::string_view kRedeemed = "redeemed";      // sink of spent points
inline constexpr std::string_view kExpired = "expired";        // sink of expired points
inline constexpr std::string_view kReferral = "referral";      // source of referral rewards
inline constexpr std::string_view kAdjustment = "adjustment";  // source/sink of corrections
}  // namespace acct

std::string CustomerAccount(std::string_view program, std::string_view customer,
                            std::string_view kind);
std::string ProgramAccount(std::string_view program, std::string_view kind);

struct AccountName {
  std::string_view program;
  std::string_view customer;  // empty for a program account
  std::string_view kind;
};
// Returns false if the name is not of either form.
bool ParseAccount(std::string_view account, AccountName* out);

}  // namespace tally

#endif  // TALLY_LEDGER_ACCOUNTS_H_
