#include "ledger/report.h"

#include "ledger/accounts.h"
#include "ledger/records.h"

namespace tally {

void Flows::Add(const Flows& o) {
  earned += o.earned;
  referral += o.referral;
  adjusted += o.adjusted;
  redeemed += o.redeemed;
  expired += o.expired;
  reversed += o.reversed;
}

Movement Classify(const Entry& e) {
  Movement m;
  for (const Posting& p : e.postings) {
    AccountName n;
    if (!ParseAccount(p.account, &n) || n.customer.empty()) continue;
    if (n.kind == acct::kAvailable || n.kind == acct::kReserved) m.liability += p.points;
    if (n.kind == acct::kPending) m.pending += p.points;
  }
  HoldKind kind = e.payload.size() == 1 ? static_cast<HoldKind>(e.payload[0]) : HoldKind::kEarn;
  int64_t d = m.liability;
  switch (e.type) {
    case EntryType::kEarn:
      m.flows.earned = d;
      break;
    case EntryType::kReferral:
      m.flows.referral = d;
      break;
    case EntryType::kAdjustment:
      m.flows.adjusted = d;
      break;
    case EntryType::kRedeem:
      m.flows.redeemed = -d;
      break;
    case EntryType::kExpiry:
      m.flows.expired = -d;
      break;
    case EntryType::kReversal:
      m.flows.reversed = -d;
      break;
    case EntryType::kCapture:
    case EntryType::kVoid:
      if (kind == HoldKind::kRedeem) {
        m.flows.redeemed = -d;
      } else if (kind == HoldKind::kReferral) {
        m.flows.referral = d;
      } else {
        m.flows.earned = d;
      }
      break;
    default:
      m.flows.adjusted = d;  // no other type moves points; kept exact all the same
      break;
  }
  return m;
}

void RollForward::Add(const Entry& e, const Movement& m) {
  liability_ += m.liability;
  pending_ += m.pending;
  for (const Posting& p : e.postings) {
    AccountName n;
    if (ParseAccount(p.account, &n) && !n.customer.empty()) {
      balances_[std::string(n.customer)][std::string(n.kind)] = p.balance_after;
    }
  }
}

}  // namespace tally
