// The loyalty part of Apply: lots, holds, customers, catalog objects, referral codes and the
// schedule of due work, all derived from one entry. Every amount is read from the entry; no
// rule is re-run here (see the entry conventions in docs/format.md).
#include <algorithm>

#include "ledger/accounts.h"
#include "ledger/apply.h"
#include "ledger/coding.h"
#include "ledger/keys.h"
#include "ledger/records.h"

namespace tally {
namespace {

Status Corrupt(const Entry& e, const std::string& what) {
  return Status::DataLoss("entry " + std::to_string(e.id) + ": " + what);
}

template <typename T, typename DecodeFn>
Result<std::optional<T>> GetRecord(const StateReader& s, Cf cf, const std::string& key,
                                   DecodeFn decode) {
  ASSIGN_OR_RETURN(std::optional<std::string> v, s.Get(cf, key));
  if (!v) return std::optional<T>();
  ASSIGN_OR_RETURN(T t, decode(*v));
  return std::optional<T>(std::move(t));
}

// The points an entry posts to one account (0 if none).
int64_t PostedTo(const Entry& e, const std::string& account) {
  for (const Posting& p : e.postings) {
    if (p.account == account) return p.points;
  }
  return 0;
}

Status UpdateCustomer(const Entry& e, const std::string& customer, StateWriter* s,
                      const std::function<void(CustomerRecord&)>& change) {
  std::string key = CustomerKey(e.program, customer);
  ASSIGN_OR_RETURN(auto rec, GetRecord<CustomerRecord>(*s, Cf::kCustomers, key, DecodeCustomer));
  CustomerRecord c = rec ? *rec : CustomerRecord{0, 0, 0, "", "", e.id};
  change(c);
  s->Put(Cf::kCustomers, key, EncodeCustomer(c));
  return Status::Ok();
}

Status PutLot(const Entry& e, const std::string& customer, uint64_t lot, int64_t expires_at_us,
              int64_t delta_points, int64_t delta_remaining, StateWriter* s) {
  std::string key = LotKey(e.program, customer, expires_at_us, lot);
  ASSIGN_OR_RETURN(auto rec, GetRecord<LotRecord>(*s, Cf::kLots, key, DecodeLot));
  // A give-back into a lot that was used up (and removed), or into the new lot named by the
  // give-back, (re-)creates it with the restored points.
  LotRecord l = rec ? *rec : LotRecord{std::max<int64_t>(delta_remaining, 0), 0};
  l.points += delta_points;
  l.remaining += delta_remaining;
  if (l.remaining < 0 || l.remaining > l.points)
    return Corrupt(e, "lot " + std::to_string(lot) + " overdrawn");
  std::string due = LotExpiryKey(e.program, expires_at_us, customer, lot);
  if (l.remaining == 0) {
    s->Delete(Cf::kLots, key);
    if (expires_at_us != 0) s->Delete(Cf::kSchedule, due);
  } else {
    s->Put(Cf::kLots, key, EncodeLot(l));
    if (expires_at_us != 0) s->Put(Cf::kSchedule, due, {});
  }
  return Status::Ok();
}

// Lots: consumed or restored as listed in the entry, or new ones for fresh credits.
Status ApplyLots(const Entry& e, StateWriter* s) {
  if (!e.lots.empty()) {
    int64_t direction = PostedTo(e, CustomerAccount(e.program, e.customer, acct::kAvailable));
    if (direction == 0) return Corrupt(e, "lots listed without an available posting");
    for (const LotUse& u : e.lots) {
      // A restore re-creates an exhausted lot with the restored points.
      int64_t delta = direction < 0 ? -u.points : u.points;
      RETURN_IF_ERROR(PutLot(e, e.customer, u.lot, u.expires_at_us, 0, delta, s));
    }
    return Status::Ok();
  }
  bool credits = e.type == EntryType::kEarn || e.type == EntryType::kCapture ||
                 e.type == EntryType::kAdjustment || e.type == EntryType::kReferral;
  if (!credits) return Status::Ok();
  for (const Posting& p : e.postings) {
    AccountName name;
    if (p.points <= 0 || !ParseAccount(p.account, &name) || name.customer.empty() ||
        name.kind != acct::kAvailable) {
      continue;
    }
    // While a balance is negative the credit first pays the debt; only the rest is a lot.
    int64_t remaining = std::clamp<int64_t>(p.balance_after, 0, p.points);
    if (remaining == 0) continue;
    std::string key = LotKey(e.program, name.customer, e.expires_at_us, e.id);
    s->Put(Cf::kLots, key, EncodeLot(LotRecord{remaining, remaining}));
    if (e.expires_at_us != 0) {
      s->Put(Cf::kSchedule, LotExpiryKey(e.program, e.expires_at_us, name.customer, e.id), {});
    }
  }
  return Status::Ok();
}

HoldKind KindOfPayload(const Entry& e) {
  return e.payload.size() == 1 ? static_cast<HoldKind>(e.payload[0]) : HoldKind::kEarn;
}

Status NewHold(const Entry& e, HoldRecord h, StateWriter* s) {
  h.state = e.holds ? HoldState::kPending : HoldState::kNone;
  h.held = e.holds ? h.points : 0;
  h.until_us = e.holds ? e.hold_until_us : 0;
  s->Put(Cf::kHolds, HoldKey(e.id), EncodeHold(h));
  if (e.holds && h.until_us != 0) {
    s->Put(Cf::kSchedule, HoldActivationKey(e.program, h.until_us, e.id), {});
  }
  return Status::Ok();
}

// Capture, void and reversal change the hold of the entry they refer to.
Status ApplyToHold(const Entry& e, StateWriter* s) {
  if (!e.ref) return Corrupt(e, "no entry referred to");
  ASSIGN_OR_RETURN(auto rec, GetRecord<HoldRecord>(*s, Cf::kHolds, HoldKey(*e.ref), DecodeHold));
  if (!rec) return Corrupt(e, "refers to an entry without a hold");
  HoldRecord h = *rec;
  bool was_pending = h.state == HoldState::kPending;
  if (e.type == EntryType::kCapture || e.type == EntryType::kVoid) {
    if (!was_pending) return Corrupt(e, "resolves a hold that is not pending");
    h.state = e.type == EntryType::kCapture ? HoldState::kCaptured : HoldState::kVoided;
    h.held = 0;
  } else {
    std::string_view held_kind = h.kind == HoldKind::kRedeem ? acct::kReserved : acct::kPending;
    int64_t from_held = -PostedTo(e, CustomerAccount(e.program, h.customer, held_kind));
    int64_t amount = 0;
    for (const Posting& p : e.postings) amount += p.points > 0 ? p.points : 0;
    h.reversed += amount;
    h.held -= std::max<int64_t>(from_held, 0);
    if (h.held < 0 || h.reversed > h.points) return Corrupt(e, "reverses more than it may");
  }
  if (was_pending && h.state != HoldState::kPending && h.until_us != 0) {
    s->Delete(Cf::kSchedule, HoldActivationKey(e.program, h.until_us, *e.ref));
  }
  s->Put(Cf::kHolds, HoldKey(*e.ref), EncodeHold(h));
  return Status::Ok();
}

Status ApplyRewardStock(const Entry& e, const std::string& reward_id, int64_t delta,
                        StateWriter* s) {
  std::string key = ObjectKey(ObjectKind::kReward, e.program, reward_id);
  ASSIGN_OR_RETURN(auto rec, GetRecord<RewardRecord>(*s, Cf::kObjects, key, DecodeReward));
  if (!rec) return Corrupt(e, "unknown reward " + reward_id);
  if (!rec->stock) return Status::Ok();
  RewardRecord r = *rec;
  *r.stock += delta;
  if (*r.stock < 0) return Corrupt(e, "reward stock below zero");
  s->Put(Cf::kObjects, key, EncodeReward(r));
  return Status::Ok();
}

Status ApplyCustomers(const Entry& e, StateWriter* s) {
  // Every customer an entry posts to, or is about, is known from then on.
  std::vector<std::string> customers;
  if (!e.customer.empty()) customers.push_back(e.customer);
  for (const Posting& p : e.postings) {
    AccountName n;
    if (ParseAccount(p.account, &n) && !n.customer.empty() &&
        std::find(customers.begin(), customers.end(), n.customer) == customers.end()) {
      customers.emplace_back(n.customer);
    }
  }
  for (const std::string& c : customers) {
    int64_t earned = 0, redeemed = 0, expired = 0;
    std::string available = CustomerAccount(e.program, c, acct::kAvailable);
    int64_t to_available = PostedTo(e, available);
    switch (e.type) {
      case EntryType::kEarn:
      case EntryType::kReferral:
        earned = std::max<int64_t>(to_available, 0);
        break;
      case EntryType::kCapture:
        if (KindOfPayload(e) != HoldKind::kRedeem) earned = to_available;
        break;
      case EntryType::kReversal:
        if (KindOfPayload(e) != HoldKind::kRedeem) earned = std::min<int64_t>(to_available, 0);
        break;
      default:
        break;
    }
    if (c == e.customer) {
      redeemed = PostedTo(e, ProgramAccount(e.program, acct::kRedeemed));
      expired = PostedTo(e, ProgramAccount(e.program, acct::kExpired));
    }
    RETURN_IF_ERROR(UpdateCustomer(e, c, s, [&](CustomerRecord& r) {
      r.lifetime_earned += earned;
      r.lifetime_redeemed += redeemed;
      r.lifetime_expired += expired;
    }));
  }
  return Status::Ok();
}

Status ApplyObjects(const Entry& e, StateWriter* s) {
  switch (e.type) {
    case EntryType::kProgram:
      s->Put(Cf::kObjects, ObjectKey(ObjectKind::kProgram, "", e.program), e.payload);
      return Status::Ok();
    case EntryType::kReward: {
      ASSIGN_OR_RETURN(RewardRecord r, DecodeReward(e.payload));
      s->Put(Cf::kObjects, ObjectKey(ObjectKind::kReward, e.program, r.id), e.payload);
      return Status::Ok();
    }
    case EntryType::kApiKey: {
      ASSIGN_OR_RETURN(ApiKeyRecord k, DecodeApiKey(e.payload));
      s->Put(Cf::kObjects, ObjectKey(ObjectKind::kApiKey, "", k.id), e.payload);
      std::string by_hash = ObjectKey(ObjectKind::kApiKeyHash, "", AsBytes(k.key_hash));
      if (k.revoked) {
        s->Delete(Cf::kObjects, by_hash);
      } else {
        s->Put(Cf::kObjects, by_hash, k.id);
      }
      return Status::Ok();
    }
    case EntryType::kSigningKey:
      s->Put(Cf::kObjects, ObjectKey(ObjectKind::kSigningKey, "", EncodeU64(e.id)), e.payload);
      return Status::Ok();
    case EntryType::kReferralCode: {
      ASSIGN_OR_RETURN(ReferralCodeRecord c, DecodeReferralCode(e.payload));
      s->Put(Cf::kObjects, ObjectKey(ObjectKind::kReferralCode, e.program, c.code), e.payload);
      s->Put(Cf::kObjects, ObjectKey(ObjectKind::kAdvocateCode, e.program, c.advocate), c.code);
      return UpdateCustomer(e, c.advocate, s, [&](CustomerRecord& r) { r.referral_code = c.code; });
    }
    default:
      return Status::Ok();
  }
}

Status ApplyReferral(const Entry& e, StateWriter* s) {
  std::string key = ObjectKey(ObjectKind::kReferralCode, e.program, e.payload);
  ASSIGN_OR_RETURN(auto rec,
                   GetRecord<ReferralCodeRecord>(*s, Cf::kObjects, key, DecodeReferralCode));
  if (!rec) return Corrupt(e, "unknown referral code");
  ReferralCodeRecord c = *rec;
  ++c.uses;
  s->Put(Cf::kObjects, key, EncodeReferralCode(c));
  s->Put(Cf::kBusinessKeys, BusinessKey(BusinessKind::kReferralFriend, e.program, e.customer),
         EncodeU64(e.id));
  RETURN_IF_ERROR(
      UpdateCustomer(e, e.customer, s, [&](CustomerRecord& r) { r.referred_by = c.advocate; }));
  int64_t advocate_points = PostedTo(e, CustomerAccount(e.program, c.advocate, acct::kPending)) +
                            PostedTo(e, CustomerAccount(e.program, c.advocate, acct::kAvailable));
  HoldRecord h;
  h.kind = HoldKind::kReferral;
  h.customer = c.advocate;
  h.points = advocate_points;
  return NewHold(e, h, s);
}

}  // namespace

Status ApplyLoyalty(const Entry& e, StateWriter* s) {
  RETURN_IF_ERROR(ApplyObjects(e, s));
  if (!e.postings.empty() || e.type == EntryType::kReferral) RETURN_IF_ERROR(ApplyCustomers(e, s));
  RETURN_IF_ERROR(ApplyLots(e, s));
  switch (e.type) {
    case EntryType::kEarn: {
      HoldRecord h;
      h.kind = HoldKind::kEarn;
      h.customer = e.customer;
      h.points = PostedTo(e, ProgramAccount(e.program, acct::kIssued)) * -1;
      h.lot_expires_at_us = e.holds ? e.expires_at_us : 0;
      return NewHold(e, h, s);
    }
    case EntryType::kRedeem: {
      HoldRecord h;
      h.kind = HoldKind::kRedeem;
      h.customer = e.customer;
      h.points = -PostedTo(e, CustomerAccount(e.program, e.customer, acct::kAvailable));
      h.reward_id = e.payload;
      if (!e.payload.empty()) RETURN_IF_ERROR(ApplyRewardStock(e, e.payload, -1, s));
      return NewHold(e, h, s);
    }
    case EntryType::kVoid: {
      RETURN_IF_ERROR(ApplyToHold(e, s));
      ASSIGN_OR_RETURN(auto h, GetRecord<HoldRecord>(*s, Cf::kHolds, HoldKey(*e.ref), DecodeHold));
      // A reserved reward that was never handed over goes back to stock.
      if (h && h->kind == HoldKind::kRedeem && !h->reward_id.empty()) {
        return ApplyRewardStock(e, h->reward_id, 1, s);
      }
      return Status::Ok();
    }
    case EntryType::kCapture:
    case EntryType::kReversal:
      return ApplyToHold(e, s);
    case EntryType::kReferral:
      return ApplyReferral(e, s);
    default:
      return Status::Ok();
  }
}

}  // namespace tally
