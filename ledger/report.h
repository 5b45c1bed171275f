// The liability roll-forward, computed from entries alone (the API's reports and the offline
// audit tool share it). Liability is what a program owes: its customers' available plus reserved
// points. Every entry's change of liability falls in exactly one category, so
//   opening + earned + referral + adjusted - redeemed - expired - reversed = closing.
#ifndef TALLY_LEDGER_REPORT_H_
#define TALLY_LEDGER_REPORT_H_

#include <cstdint>
#include <map>
#include <string>

#include "ledger/entry.h"

namespace tally {

struct Flows {
  int64_t earned = 0, referral = 0, adjusted = 0, redeemed = 0, expired = 0, reversed = 0;
  int64_t Net() const { return earned + referral + adjusted - redeemed - expired - reversed; }
  void Add(const Flows& o);
};

// How one entry moves a program's liability and pending points.
struct Movement {
  Flows flows;
  int64_t liability = 0;  // change of available + reserved, = flows.Net()
  int64_t pending = 0;    // change of pending
};
Movement Classify(const Entry& e);

// Folds a program's entries, oldest first, into balances over time.
class RollForward {
 public:
  // REQUIRES: entries of one program, in log order.
  void Add(const Entry& e, const Movement& m);
  int64_t liability() const { return liability_; }
  int64_t pending() const { return pending_; }
  // Per customer, per account kind: the balance after the last entry added.
  const std::map<std::string, std::map<std::string, int64_t>>& balances() const {
    return balances_;
  }

 private:
  int64_t liability_ = 0;
  int64_t pending_ = 0;
  std::map<std::string, std::map<std::string, int64_t>> balances_;
};

}  // namespace tally

#endif  // TALLY_LEDGER_REPORT_H_
