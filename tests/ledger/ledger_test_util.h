// A minimal decider for testing the ledger core without the loyalty rules: moves points between
// a customer's available account and the program's adjustment account, refusing to go below zero.
#ifndef TALLY_TESTS_LEDGER_LEDGER_TEST_UTIL_H_
#define TALLY_TESTS_LEDGER_LEDGER_TEST_UTIL_H_

#include <string>

#include "ledger/accounts.h"
#include "ledger/hash.h"
#include "ledger/keys.h"
#include "ledger/ledger.h"

namespace tally::testing {

inline AppendRequest Transfer(const std::string& program, const std::string& customer,
                              int64_t points, const std::string& idem = {},
                              const std::string& order_id = {}, const std::string& actor = "k1") {
  AppendRequest r;
  r.actor = actor;
  r.idempotency_key = idem;
  r.request_hash = Sha256(program + "/" + customer + "/" + std::to_string(points) + "/" + order_id);
  r.decide = [=](DecideContext& ctx) -> Status {
    std::string account = CustomerAccount(program, customer, acct::kAvailable);
    ASSIGN_OR_RETURN(int64_t balance, ctx.state().GetI64(Cf::kBalances, account));
    if (points < 0 && balance + points < 0) {
      return Status::FailedPrecondition("too few", "insufficient_points");
    }
    Entry e;
    e.type = order_id.empty() ? EntryType::kAdjustment : EntryType::kEarn;
    e.program = program;
    e.customer = customer;
    e.order_id = order_id;
    e.postings = {{account, points, 0}, {ProgramAccount(program, acct::kAdjustment), -points, 0}};
    ASSIGN_OR_RETURN(Entry done, ctx.Emit(std::move(e)));
    (void)done;
    return Status::Ok();
  };
  return r;
}

inline int64_t Balance(const Ledger& ledger, const std::string& account) {
  auto v = ledger.Read()->GetI64(Cf::kBalances, account);
  return v.ok() ? *v : -999999;
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_LEDGER_LEDGER_TEST_UTIL_H_
