// Loyalty writes: each call builds a Decider that checks the rules against current state on the
// writer thread and emits entries that record every decision (lots consumed, expiries, holds).
#include "ledger/loyalty.h"

#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "ledger/accounts.h"
#include "ledger/base64.h"
#include "ledger/clock.h"
#include "ledger/coding.h"
#include "ledger/keys.h"
#include "ledger/limits.h"
#include "ledger/loyalty_internal.h"
#include "ledger/points.h"

namespace tally {

using internal::LoadCustomer;
using internal::LoadEntry;
using internal::LoadHold;
using internal::LoadLots;
using internal::LoadProgram;
using internal::Lot;

// Failed referral-code look-ups per API key within the last minute.
struct Loyalty::Limiter {
  std::mutex mu;
  std::unordered_map<std::string, std::deque<int64_t>> failures;  // guarded by mu

  void Trim(std::deque<int64_t>& d, int64_t now) {
    while (!d.empty() && d.front() <= now - 60 * kMicrosPerSecond) d.pop_front();
  }
  bool Limited(const std::string& actor, int64_t now) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = failures.find(actor);
    if (it == failures.end()) return false;
    Trim(it->second, now);
    return it->second.size() >= static_cast<size_t>(kReferralFailedLookupsPerMinuteMax);
  }
  void RecordFailure(const std::string& actor, int64_t now) {
    std::lock_guard<std::mutex> lock(mu);
    auto& d = failures[actor];
    Trim(d, now);
    d.push_back(now);
  }
};

namespace {

Status Refuse(Code code, std::string message, std::string reason) {
  return Status(code, std::move(message), std::move(reason));
}
Status BadRequest(std::string message) {
  return Status::InvalidArgument(std::move(message), "bad_request");
}

AppendRequest MakeRequest(const WriteContext& w, Decider decide) {
  return AppendRequest{w.actor, w.idempotency_key, w.request_hash, std::move(decide)};
}

Result<WriteResult> ToWriteResult(Result<AppendResult> r) {
  if (!r.ok()) return r.status();
  return WriteResult{r->first_id, r->count, r->replayed};
}

int64_t DefaultExpiry(const ProgramConfig& p, int64_t now) {
  return p.expiry_days == 0 ? 0 : now + p.expiry_days * kMicrosPerDay;
}

Status CheckPoints(int64_t points) {
  if (points < 1 || points > kPointsMax) return BadRequest("points must be 1 to 1000000000000");
  return Status::Ok();
}

std::string HoldKindPayload(HoldKind k) { return std::string(1, static_cast<char>(k)); }

// Lots consumed by a debit of `points` from available. Refuses with insufficient_points when the
// balance is short and `allow_negative` is false; with it, takes what the lots hold.
Result<std::vector<LotUse>> DebitLots(const StateReader& s, const std::string& program,
                                      const std::string& customer, int64_t points,
                                      bool allow_negative) {
  ASSIGN_OR_RETURN(int64_t balance,
                   s.GetI64(Cf::kBalances, CustomerAccount(program, customer, acct::kAvailable)));
  if (balance < points && !allow_negative) {
    return Refuse(Code::kFailedPrecondition,
                  "available " + std::to_string(balance) + ", needed " + std::to_string(points),
                  "insufficient_points");
  }
  ASSIGN_OR_RETURN(std::vector<Lot> lots, LoadLots(s, program, customer));
  std::vector<LotUse> uses;
  int64_t left = points;
  for (const Lot& l : lots) {
    if (left == 0) break;
    int64_t take = std::min(left, l.record.remaining);
    if (take > 0) uses.push_back({l.id, l.expires_at_us, take});
    left -= take;
  }
  return uses;
}

// Lots restored by giving `points` back to available after a redemption: into the lots the
// redemption consumed, last consumed first, each up to what it lost; the rest into a new lot
// named by the give-back entry. While the balance is negative the give-back first pays the debt.
Result<std::vector<LotUse>> RestoreLots(const DecideContext& ctx, const ProgramConfig& program,
                                        const std::string& customer, const Entry& redemption,
                                        int64_t points) {
  const StateReader& s = ctx.state();
  ASSIGN_OR_RETURN(int64_t balance, s.GetI64(Cf::kBalances, CustomerAccount(program.id, customer,
                                                                            acct::kAvailable)));
  int64_t after = 0;
  if (!CheckedAdd(balance, points, &after)) return BadRequest("balance would overflow");
  int64_t left = std::max<int64_t>(after, 0) - std::max<int64_t>(balance, 0);
  ASSIGN_OR_RETURN(std::vector<Lot> lots, LoadLots(s, program.id, customer));
  std::vector<LotUse> uses;
  for (auto it = redemption.lots.rbegin(); it != redemption.lots.rend() && left > 0; ++it) {
    int64_t room = it->points;
    for (const Lot& l : lots) {
      if (l.id == it->lot && l.expires_at_us == it->expires_at_us) {
        room = std::min(room, l.record.points - l.record.remaining);
      }
    }
    int64_t put = std::min(room, left);
    if (put > 0) uses.push_back({it->lot, it->expires_at_us, put});
    left -= put;
  }
  if (left > 0) uses.push_back({ctx.next_id(), DefaultExpiry(program, ctx.now_us()), left});
  return uses;
}

Status EmitOk(DecideContext& ctx, Entry e) {
  ASSIGN_OR_RETURN(Entry done, ctx.Emit(std::move(e)));
  (void)done;
  return Status::Ok();
}

// A hold of `program`, pending, as captured/voided/reversed by entry_id.
struct HeldEntry {
  Entry entry;
  HoldRecord hold;
};
Result<HeldEntry> FindHold(const StateReader& s, const std::string& program, uint64_t id) {
  ASSIGN_OR_RETURN(std::optional<Entry> e, LoadEntry(s, id));
  ASSIGN_OR_RETURN(std::optional<HoldRecord> h, LoadHold(s, id));
  if (!e || !h || e->program != program) {
    return Refuse(Code::kNotFound, "no hold at entry " + std::to_string(id), "unknown_hold");
  }
  return HeldEntry{std::move(*e), std::move(*h)};
}

// The source account of a hold's points: where a void or claw-back returns them.
std::string SourceAccount(const std::string& program, HoldKind kind) {
  return ProgramAccount(program, kind == HoldKind::kReferral ? acct::kReferral : acct::kIssued);
}

Status DecideResolve(DecideContext& ctx, const std::string& program, uint64_t id, bool capture) {
  ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(ctx.state(), program));
  ASSIGN_OR_RETURN(HeldEntry held, FindHold(ctx.state(), program, id));
  const HoldRecord& h = held.hold;
  if (h.state == HoldState::kNone) {
    return Refuse(Code::kNotFound, "entry " + std::to_string(id) + " holds no points",
                  "unknown_hold");
  }
  if (h.state != HoldState::kPending) {
    return Refuse(Code::kAlreadyExists, std::string("hold already ") + HoldStateName(h.state),
                  "hold_already_resolved");
  }
  Entry e;
  e.type = capture ? EntryType::kCapture : EntryType::kVoid;
  e.program = program;
  e.customer = h.customer;
  e.ref = id;
  e.payload = HoldKindPayload(h.kind);
  int64_t x = h.held;
  if (h.kind == HoldKind::kRedeem) {
    std::string reserved = CustomerAccount(program, h.customer, acct::kReserved);
    if (x > 0 && capture) {
      e.postings = {{reserved, -x, 0}, {ProgramAccount(program, acct::kRedeemed), x, 0}};
    } else if (x > 0) {
      e.postings = {{reserved, -x, 0},
                    {CustomerAccount(program, h.customer, acct::kAvailable), x, 0}};
      ASSIGN_OR_RETURN(e.lots, RestoreLots(ctx, p, h.customer, held.entry, x));
    }
  } else if (x > 0) {
    std::string pending = CustomerAccount(program, h.customer, acct::kPending);
    std::string to = capture ? CustomerAccount(program, h.customer, acct::kAvailable)
                             : SourceAccount(program, h.kind);
    e.postings = {{pending, -x, 0}, {to, x, 0}};
    if (capture) {
      e.expires_at_us =
          h.lot_expires_at_us != 0 ? h.lot_expires_at_us : DefaultExpiry(p, ctx.now_us());
    }
  }
  return EmitOk(ctx, std::move(e));
}

Status DecideReverse(DecideContext& ctx, const std::string& program, const ReversalRequest& r) {
  ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(ctx.state(), program));
  ASSIGN_OR_RETURN(std::optional<Entry> target, LoadEntry(ctx.state(), r.entry_id));
  ASSIGN_OR_RETURN(std::optional<HoldRecord> hold, LoadHold(ctx.state(), r.entry_id));
  if (!target || target->program != program || !hold) {
    return Refuse(Code::kNotFound, "no earn or redemption at entry " + std::to_string(r.entry_id),
                  "not_found");
  }
  const HoldRecord& h = *hold;
  if (h.kind == HoldKind::kReferral) {
    return Refuse(Code::kFailedPrecondition, "referral rewards are corrected with adjustments",
                  "not_reversible");
  }
  int64_t reversible = h.state == HoldState::kVoided ? 0 : h.points - h.reversed;
  int64_t points = r.points.value_or(reversible);
  if (points < 1 || points > reversible) {
    return Refuse(Code::kFailedPrecondition,
                  "reversible: " + std::to_string(reversible) + ", asked " + std::to_string(points),
                  "exceeds_reversible");
  }
  Entry e;
  e.type = EntryType::kReversal;
  e.program = program;
  e.customer = h.customer;
  e.ref = r.entry_id;
  e.description = r.reason;
  e.payload = HoldKindPayload(h.kind);
  std::string available = CustomerAccount(program, h.customer, acct::kAvailable);
  bool pending = h.state == HoldState::kPending;
  if (h.kind == HoldKind::kEarn) {
    if (pending) {
      e.postings = {{CustomerAccount(program, h.customer, acct::kPending), -points, 0},
                    {SourceAccount(program, h.kind), points, 0}};
    } else {
      ASSIGN_OR_RETURN(e.lots, DebitLots(ctx.state(), program, h.customer, points,
                                         p.negative_balance == NegativeBalance::kAllow));
      e.postings = {{available, -points, 0}, {SourceAccount(program, h.kind), points, 0}};
    }
  } else {
    std::string from = pending ? CustomerAccount(program, h.customer, acct::kReserved)
                               : ProgramAccount(program, acct::kRedeemed);
    e.postings = {{from, -points, 0}, {available, points, 0}};
    ASSIGN_OR_RETURN(e.lots, RestoreLots(ctx, p, h.customer, *target, points));
  }
  return EmitOk(ctx, std::move(e));
}

Status CheckNewCustomerId(const std::string& customer) {
  if (!IsValidId(customer)) return BadRequest("customer must be 1 to 64 of A-Z a-z 0-9 _ - . @");
  return Status::Ok();
}

}  // namespace

Loyalty::Loyalty(Ledger* ledger, LoyaltyOptions options)
    : ledger_(ledger),
      options_(std::move(options)),
      limiter_(std::make_unique<Limiter>()),
      customers_(std::make_unique<ReadCache<CustomerView>>(options_.customer_cache_entries)),
      api_keys_(std::make_unique<ReadCache<ApiKeyRecord>>(kApiKeyCacheEntries)) {}
Loyalty::~Loyalty() = default;

int64_t EntryPoints(const Entry& e) {
  int64_t sum = 0;
  for (const Posting& p : e.postings) {
    if (p.points > 0) sum += p.points;
  }
  return sum;
}

Result<WriteResult> Loyalty::CreateProgram(const WriteContext& w, const ProgramConfig& config) {
  RETURN_IF_ERROR(ValidateProgram(config));
  return ToWriteResult(ledger_->Append(MakeRequest(w, [config](DecideContext& ctx) -> Status {
    auto existing = LoadProgram(ctx.state(), config.id);
    if (existing.ok()) {
      return Refuse(Code::kAlreadyExists, "program " + config.id + " exists", "program_exists");
    }
    if (existing.status().reason() != "not_found") return existing.status();
    Entry e;
    e.type = EntryType::kProgram;
    e.program = config.id;
    e.payload = EncodeProgram(config);
    return EmitOk(ctx, std::move(e));
  })));
}

Result<WriteResult> Loyalty::UpdateProgram(const WriteContext& w, const std::string& id,
                                           std::function<Status(ProgramConfig*)> patch) {
  return ToWriteResult(ledger_->Append(MakeRequest(w, [id, patch](DecideContext& ctx) -> Status {
    ASSIGN_OR_RETURN(ProgramConfig config, LoadProgram(ctx.state(), id));
    RETURN_IF_ERROR(patch(&config));
    if (config.id != id) return BadRequest("a program's id cannot change");
    RETURN_IF_ERROR(ValidateProgram(config));
    Entry e;
    e.type = EntryType::kProgram;
    e.program = id;
    e.payload = EncodeProgram(config);
    return EmitOk(ctx, std::move(e));
  })));
}

Result<AppendRequest> Loyalty::PrepareEarn(const WriteContext& w, const std::string& program,
                                           const EarnRequest& r) const {
  RETURN_IF_ERROR(CheckNewCustomerId(r.customer));
  if (r.points.has_value() == r.order_amount_minor.has_value()) {
    return BadRequest("give exactly one of points and order_amount_minor");
  }
  if (r.points) RETURN_IF_ERROR(CheckPoints(*r.points));
  if (r.order_amount_minor && (*r.order_amount_minor < 1 || *r.order_amount_minor > kPointsMax)) {
    return BadRequest("order_amount_minor must be 1 to 1000000000000");
  }
  if (!r.order_id.empty() && !IsValidId(r.order_id)) return BadRequest("bad order_id");
  if (r.pending_days && (*r.pending_days < 0 || *r.pending_days > kDaysMax)) {
    return BadRequest("pending_days out of range");
  }
  if (r.description.size() > kDescriptionBytesMax) return BadRequest("description too long");
  return MakeRequest(w, [program, r](DecideContext& ctx) -> Status {
    ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(ctx.state(), program));
    int64_t now = ctx.now_us();
    int64_t points = 0;
    if (r.points) {
      points = *r.points;
    } else if (!CheckedMul(*r.order_amount_minor, p.earn_points, &points)) {
      return BadRequest("order amount too large");
    } else {
      points /= p.earn_per_amount_minor;  // rounded down
    }
    if (points < 1) return BadRequest("the order amount earns no points");
    if (points > kPointsMax) return BadRequest("the order amount earns too many points");
    if (r.expires_at_us && *r.expires_at_us <= now) return BadRequest("expires_at is past");
    int64_t until = 0;
    if (r.pending_until_us) {
      until = *r.pending_until_us > now ? *r.pending_until_us : 0;
    } else {
      int64_t days = r.pending_days.value_or(p.pending_days);
      until = days > 0 ? now + days * kMicrosPerDay : 0;
    }
    Entry e;
    e.type = EntryType::kEarn;
    e.program = program;
    e.customer = r.customer;
    e.order_id = r.order_id;
    e.description = r.description;
    std::string_view to = until != 0 ? acct::kPending : acct::kAvailable;
    e.postings = {{CustomerAccount(program, r.customer, to), points, 0},
                  {ProgramAccount(program, acct::kIssued), -points, 0}};
    e.holds = until != 0;
    e.hold_until_us = until;
    e.expires_at_us = r.expires_at_us ? *r.expires_at_us : (until != 0 ? 0 : DefaultExpiry(p, now));
    return EmitOk(ctx, std::move(e));
  });
}

Result<AppendRequest> Loyalty::PrepareRedeem(const WriteContext& w, const std::string& program,
                                             const RedeemRequest& r) const {
  RETURN_IF_ERROR(CheckNewCustomerId(r.customer));
  if (r.points.has_value() == !r.reward_id.empty()) {
    return BadRequest("give exactly one of points and reward_id");
  }
  if (r.points) RETURN_IF_ERROR(CheckPoints(*r.points));
  if (!r.reward_id.empty() && !IsValidId(r.reward_id)) return BadRequest("bad reward_id");
  if (!r.order_id.empty() && !IsValidId(r.order_id)) return BadRequest("bad order_id");
  return MakeRequest(w, [program, r](DecideContext& ctx) -> Status {
    const StateReader& s = ctx.state();
    ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(s, program));
    int64_t points = r.points.value_or(0);
    if (!r.reward_id.empty()) {
      ASSIGN_OR_RETURN(std::optional<std::string> v,
                       s.Get(Cf::kObjects, ObjectKey(ObjectKind::kReward, program, r.reward_id)));
      if (!v) return Refuse(Code::kNotFound, "no reward " + r.reward_id, "unknown_reward");
      ASSIGN_OR_RETURN(RewardRecord reward, DecodeReward(*v));
      if (reward.stock && *reward.stock <= 0) {
        return Refuse(Code::kAlreadyExists, "reward " + r.reward_id + " is out of stock",
                      "out_of_stock");
      }
      points = reward.points;
    }
    Entry e;
    e.type = EntryType::kRedeem;
    e.program = program;
    e.customer = r.customer;
    e.order_id = r.order_id;
    e.payload = r.reward_id;
    ASSIGN_OR_RETURN(e.lots, DebitLots(s, program, r.customer, points, false));
    std::string to = r.hold ? CustomerAccount(program, r.customer, acct::kReserved)
                            : ProgramAccount(program, acct::kRedeemed);
    e.postings = {{CustomerAccount(program, r.customer, acct::kAvailable), -points, 0},
                  {to, points, 0}};
    e.holds = r.hold;
    return EmitOk(ctx, std::move(e));
  });
}

Result<AppendRequest> Loyalty::PrepareCapture(const WriteContext& w, const std::string& program,
                                              uint64_t entry_id) const {
  return MakeRequest(w, [program, entry_id](DecideContext& ctx) {
    return DecideResolve(ctx, program, entry_id, true);
  });
}

Result<AppendRequest> Loyalty::PrepareVoid(const WriteContext& w, const std::string& program,
                                           uint64_t entry_id) const {
  return MakeRequest(w, [program, entry_id](DecideContext& ctx) {
    return DecideResolve(ctx, program, entry_id, false);
  });
}

Result<AppendRequest> Loyalty::PrepareReverse(const WriteContext& w, const std::string& program,
                                              const ReversalRequest& r) const {
  if (r.points) RETURN_IF_ERROR(CheckPoints(*r.points));
  if (r.reason.size() > kDescriptionBytesMax) return BadRequest("reason too long");
  return MakeRequest(w,
                     [program, r](DecideContext& ctx) { return DecideReverse(ctx, program, r); });
}

Result<WriteResult> Loyalty::Earn(const WriteContext& w, const std::string& program,
                                  const EarnRequest& r) {
  return Write(PrepareEarn(w, program, r));
}

Result<WriteResult> Loyalty::Redeem(const WriteContext& w, const std::string& program,
                                    const RedeemRequest& r) {
  return Write(PrepareRedeem(w, program, r));
}

Result<WriteResult> Loyalty::Capture(const WriteContext& w, const std::string& program,
                                     uint64_t entry_id) {
  return Write(PrepareCapture(w, program, entry_id));
}

Result<WriteResult> Loyalty::Void(const WriteContext& w, const std::string& program,
                                  uint64_t entry_id) {
  return Write(PrepareVoid(w, program, entry_id));
}

Result<WriteResult> Loyalty::Reverse(const WriteContext& w, const std::string& program,
                                     const ReversalRequest& r) {
  return Write(PrepareReverse(w, program, r));
}

Result<WriteResult> Loyalty::Write(Result<AppendRequest> request) {
  if (!request.ok()) return request.status();
  return ToWriteResult(ledger_->Append(std::move(request).value()));
}

void Loyalty::Submit(Result<AppendRequest> request, WriteDone done) {
  if (!request.ok()) return done(request.status());
  ledger_->Submit(std::move(request).value(), [done = std::move(done)](Result<AppendResult> r) {
    done(ToWriteResult(std::move(r)));
  });
}

Result<WriteResult> Loyalty::Adjust(const WriteContext& w, const std::string& program,
                                    const std::string& customer, int64_t points,
                                    const std::string& reason) {
  RETURN_IF_ERROR(CheckNewCustomerId(customer));
  if (points == 0 || points > kPointsMax || points < -kPointsMax) {
    return BadRequest("points must be non-zero, at most 1000000000000 either way");
  }
  if (reason.empty() || reason.size() > kDescriptionBytesMax) {
    return BadRequest("an adjustment needs a reason (at most 1024 bytes)");
  }
  auto decide = [program, customer, points, reason](DecideContext& ctx) -> Status {
    ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(ctx.state(), program));
    Entry e;
    e.type = EntryType::kAdjustment;
    e.program = program;
    e.customer = customer;
    e.description = reason;
    e.postings = {{CustomerAccount(program, customer, acct::kAvailable), points, 0},
                  {ProgramAccount(program, acct::kAdjustment), -points, 0}};
    if (points > 0) {
      e.expires_at_us = DefaultExpiry(p, ctx.now_us());
    } else {
      ASSIGN_OR_RETURN(e.lots, DebitLots(ctx.state(), program, customer, -points,
                                         p.negative_balance == NegativeBalance::kAllow));
    }
    return EmitOk(ctx, std::move(e));
  };
  return ToWriteResult(ledger_->Append(MakeRequest(w, decide)));
}

Result<ExpireResult> Loyalty::Expire(const WriteContext& w, const std::string& program) {
  auto decide = [program](DecideContext& ctx) -> Status {
    const StateReader& s = ctx.state();
    ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(s, program));
    std::string prefix = SchedulePrefix(ScheduleKind::kLotExpiry, program);
    std::string end = prefix + EncodeI64(ctx.now_us() + 1);
    std::vector<std::string> due;
    RETURN_IF_ERROR(s.Scan(Cf::kSchedule, prefix, end, false, [&](std::string_view k, auto) {
      due.emplace_back(k);
      return due.size() < kRequestEntriesMax;
    }));
    for (const std::string& k : due) {
      // key: prefix, expiry (8), customer, NUL, lot (8)
      int64_t expires = DecodeI64(std::string_view(k).substr(prefix.size(), 8));
      std::string customer = k.substr(prefix.size() + 8, k.size() - prefix.size() - 8 - 9);
      uint64_t lot = DecodeU64(std::string_view(k).substr(k.size() - 8));
      ASSIGN_OR_RETURN(std::optional<std::string> v,
                       s.Get(Cf::kLots, LotKey(program, customer, expires, lot)));
      if (!v) return Status::DataLoss("scheduled lot missing");
      ASSIGN_OR_RETURN(LotRecord rec, DecodeLot(*v));
      Entry e;
      e.type = EntryType::kExpiry;
      e.program = p.id;
      e.customer = customer;
      e.ref = lot;
      e.lots = {{lot, expires, rec.remaining}};
      e.postings = {{CustomerAccount(program, customer, acct::kAvailable), -rec.remaining, 0},
                    {ProgramAccount(program, acct::kExpired), rec.remaining, 0}};
      RETURN_IF_ERROR(EmitOk(ctx, std::move(e)));
    }
    return Status::Ok();
  };
  ASSIGN_OR_RETURN(AppendResult a, ledger_->Append(MakeRequest(w, decide)));
  ExpireResult out{{a.first_id, a.count, a.replayed}, 0};
  for (uint32_t i = 0; i < a.count; ++i) {
    ASSIGN_OR_RETURN(Entry e, ledger_->GetEntry(a.first_id + i));
    out.points += EntryPoints(e);
  }
  return out;
}

Result<WriteResult> Loyalty::ActivateDue(const std::string& program) {
  auto decide = [program](DecideContext& ctx) -> Status {
    std::string prefix = SchedulePrefix(ScheduleKind::kHoldActivation, program);
    std::string end = prefix + EncodeI64(ctx.now_us() + 1);
    std::vector<uint64_t> due;
    RETURN_IF_ERROR(
        ctx.state().Scan(Cf::kSchedule, prefix, end, false, [&](std::string_view k, auto) {
          due.push_back(DecodeU64(k.substr(k.size() - 8)));
          return due.size() < kRequestEntriesMax;
        }));
    for (uint64_t id : due) RETURN_IF_ERROR(DecideResolve(ctx, program, id, true));
    return Status::Ok();
  };
  return ToWriteResult(ledger_->Append(MakeRequest(WriteContext{}, decide)));
}

Result<uint64_t> Loyalty::RunDueWork() {
  uint64_t written = 0;
  std::string cursor;
  for (;;) {
    ASSIGN_OR_RETURN(Page<ProgramConfig> page, ListPrograms(cursor, kPageItemsMax));
    for (const ProgramConfig& p : page.items) {
      ASSIGN_OR_RETURN(ExpireResult x, Expire(WriteContext{}, p.id));
      ASSIGN_OR_RETURN(WriteResult a, ActivateDue(p.id));
      written += x.write.count + a.count;
    }
    if (!page.next_cursor) return written;
    cursor = *page.next_cursor;
  }
}

Result<WriteResult> Loyalty::AddReward(const WriteContext& w, const std::string& program,
                                       const RewardRecord& reward) {
  if (!IsValidId(reward.id)) return BadRequest("reward id must be 1 to 64 of A-Z a-z 0-9 _ - . @");
  if (reward.name.empty() || reward.name.size() > 200)
    return BadRequest("name must be 1 to 200 bytes");
  RETURN_IF_ERROR(CheckPoints(reward.points));
  if (reward.stock && (*reward.stock < 0 || *reward.stock > kPointsMax)) {
    return BadRequest("stock out of range");
  }
  return ToWriteResult(
      ledger_->Append(MakeRequest(w, [program, reward](DecideContext& ctx) -> Status {
        ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(ctx.state(), program));
        ASSIGN_OR_RETURN(
            std::optional<std::string> v,
            ctx.state().Get(Cf::kObjects, ObjectKey(ObjectKind::kReward, program, reward.id)));
        if (v)
          return Refuse(Code::kAlreadyExists, "reward " + reward.id + " exists", "reward_exists");
        Entry e;
        e.type = EntryType::kReward;
        e.program = p.id;
        e.payload = EncodeReward(reward);
        return EmitOk(ctx, std::move(e));
      })));
}

Result<CodeResult> Loyalty::GetOrCreateCode(const WriteContext& w, const std::string& program,
                                            const std::string& advocate) {
  RETURN_IF_ERROR(CheckNewCustomerId(advocate));
  // Written by the decider on the writer thread while this thread waits for it.
  std::optional<ReferralCodeRecord> live;
  std::string fresh = internal::NewReferralCode();
  auto decide = [&](DecideContext& ctx) -> Status {
    const StateReader& s = ctx.state();
    ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(s, program));
    if (!p.referral)
      return Refuse(Code::kFailedPrecondition, "referrals are off", "referrals_disabled");
    ASSIGN_OR_RETURN(std::optional<std::string> current,
                     s.Get(Cf::kObjects, ObjectKey(ObjectKind::kAdvocateCode, program, advocate)));
    if (current) {
      ASSIGN_OR_RETURN(
          std::optional<std::string> v,
          s.Get(Cf::kObjects, ObjectKey(ObjectKind::kReferralCode, program, *current)));
      if (!v) return Status::DataLoss("advocate code missing");
      ASSIGN_OR_RETURN(ReferralCodeRecord c, DecodeReferralCode(*v));
      bool expired = c.expires_at_us != 0 && ctx.now_us() >= c.expires_at_us;
      if (!expired && c.uses < c.max_uses) {
        live = c;
        return Status::Ok();
      }
    }
    ReferralCodeRecord c;
    c.code = fresh;
    c.advocate = advocate;
    c.max_uses = p.referral->max_uses;
    c.expires_at_us = p.referral->code_ttl_days == 0
                          ? 0
                          : ctx.now_us() + p.referral->code_ttl_days * kMicrosPerDay;
    Entry e;
    e.type = EntryType::kReferralCode;
    e.program = program;
    e.customer = advocate;
    e.payload = EncodeReferralCode(c);
    return EmitOk(ctx, std::move(e));
  };
  ASSIGN_OR_RETURN(AppendResult a, ledger_->Append(MakeRequest(w, decide)));
  CodeResult out;
  out.write = {a.first_id, a.count, a.replayed};
  if (a.count == 0) {
    if (!live) return Status::Internal("no code decided");
    out.code = *live;
    return out;
  }
  ASSIGN_OR_RETURN(Entry e, ledger_->GetEntry(a.first_id));
  ASSIGN_OR_RETURN(out.code, DecodeReferralCode(e.payload));
  out.created = true;
  return out;
}

Result<WriteResult> Loyalty::Refer(const WriteContext& w, const std::string& program,
                                   const std::string& code, const std::string& friend_id,
                                   const std::string& order_id) {
  int64_t now = ledger_->clock().NowMicros();
  if (limiter_->Limited(w.actor, now)) {
    return Refuse(Code::kResourceExhausted, "too many failed code look-ups", "rate_limited");
  }
  RETURN_IF_ERROR(CheckNewCustomerId(friend_id));
  if (!order_id.empty() && !IsValidId(order_id)) return BadRequest("bad order_id");
  std::optional<std::string> normal = internal::NormalizeReferralCode(code);
  auto decide = [&](DecideContext& ctx) -> Status {
    const StateReader& s = ctx.state();
    ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(s, program));
    if (!p.referral)
      return Refuse(Code::kFailedPrecondition, "referrals are off", "referrals_disabled");
    std::optional<std::string> v;
    if (normal) {
      ASSIGN_OR_RETURN(v,
                       s.Get(Cf::kObjects, ObjectKey(ObjectKind::kReferralCode, program, *normal)));
    }
    if (!v) return Refuse(Code::kNotFound, "no such code", "unknown_code");
    ASSIGN_OR_RETURN(ReferralCodeRecord c, DecodeReferralCode(*v));
    if (c.expires_at_us != 0 && ctx.now_us() >= c.expires_at_us) {
      return Refuse(Code::kFailedPrecondition, "code expired", "code_expired");
    }
    if (c.uses >= c.max_uses)
      return Refuse(Code::kFailedPrecondition, "code used up", "code_exhausted");
    if (c.advocate == friend_id) {
      return Refuse(Code::kFailedPrecondition, "an advocate cannot refer themselves",
                    "self_referral");
    }
    ASSIGN_OR_RETURN(
        std::optional<std::string> referred,
        s.Get(Cf::kBusinessKeys, BusinessKey(BusinessKind::kReferralFriend, program, friend_id)));
    if (referred)
      return Refuse(Code::kAlreadyExists, "friend already referred", "already_referred");
    ASSIGN_OR_RETURN(std::optional<CustomerRecord> known, LoadCustomer(s, program, friend_id));
    if (known) {
      return Refuse(Code::kFailedPrecondition, "friend already has ledger history",
                    "not_a_new_customer");
    }
    const ReferralSettings& rs = *p.referral;
    Entry e;
    e.type = EntryType::kReferral;
    e.program = program;
    e.customer = friend_id;
    e.order_id = order_id;
    e.payload = c.code;
    e.expires_at_us = DefaultExpiry(p, ctx.now_us());
    bool advocate_pending = rs.advocate_pending_days > 0 && rs.advocate_points > 0;
    if (rs.friend_points > 0) {
      e.postings.push_back(
          {CustomerAccount(program, friend_id, acct::kAvailable), rs.friend_points, 0});
    }
    if (rs.advocate_points > 0) {
      std::string_view kind = advocate_pending ? acct::kPending : acct::kAvailable;
      e.postings.push_back({CustomerAccount(program, c.advocate, kind), rs.advocate_points, 0});
    }
    if (rs.friend_points + rs.advocate_points > 0) {
      e.postings.push_back(
          {ProgramAccount(program, acct::kReferral), -(rs.friend_points + rs.advocate_points), 0});
    }
    e.holds = advocate_pending;
    e.hold_until_us =
        advocate_pending ? ctx.now_us() + rs.advocate_pending_days * kMicrosPerDay : 0;
    return EmitOk(ctx, std::move(e));
  };
  auto r = ToWriteResult(ledger_->Append(MakeRequest(w, decide)));
  if (!r.ok() && r.status().reason() == "unknown_code") limiter_->RecordFailure(w.actor, now);
  return r;
}

Result<ReferralCodeRecord> Loyalty::GetCode(const std::string& actor, const std::string& program,
                                            const std::string& code) {
  int64_t now = ledger_->clock().NowMicros();
  if (limiter_->Limited(actor, now)) {
    return Refuse(Code::kResourceExhausted, "too many failed code look-ups", "rate_limited");
  }
  auto view = ledger_->Read();
  ASSIGN_OR_RETURN(ProgramConfig p, LoadProgram(*view, program));
  std::optional<std::string> normal = internal::NormalizeReferralCode(code);
  std::optional<std::string> v;
  if (normal) {
    ASSIGN_OR_RETURN(v,
                     view->Get(Cf::kObjects, ObjectKey(ObjectKind::kReferralCode, p.id, *normal)));
  }
  if (!v) {
    limiter_->RecordFailure(actor, now);
    return Refuse(Code::kNotFound, "no such code", "unknown_code");
  }
  return DecodeReferralCode(*v);
}

std::string Loyalty::DeriveKeySecret(const std::string& key_id) const {
  unsigned char mac[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), options_.api_key_secret.data(),
       static_cast<int>(options_.api_key_secret.size()),
       reinterpret_cast<const unsigned char*>(key_id.data()), key_id.size(), mac, &len);
  TALLY_CHECK(len == 32);
  return "tly_" + HexEncode(std::string_view(reinterpret_cast<const char*>(mac), 24));
}

Result<ApiKeyCreated> Loyalty::CreateApiKey(const WriteContext& w, const ApiKeyRequest& r) {
  if (r.name.empty() || r.name.size() > 200) return BadRequest("name must be 1 to 200 bytes");
  bool customer_role = r.role == Role::kCustomer;
  if (customer_role && (!IsValidId(r.program) || !IsValidId(r.customer))) {
    return BadRequest("a customer key needs program and customer");
  }
  if (!customer_role && (!r.program.empty() || !r.customer.empty())) {
    return BadRequest("only customer keys are bound to a program and customer");
  }
  // The id follows from who asked and their idempotency key, so a replay names the same key.
  std::string id = "key_" + HashToHex(Sha256({options_.api_key_secret, w.actor,
                                              std::string_view("\0", 1), w.idempotency_key}))
                                .substr(0, 16);
  ApiKeyRecord rec{id,    r.name, r.role, r.program, r.customer, Sha256(DeriveKeySecret(id)),
                   false, 0};
  auto decide = [rec](DecideContext& ctx) mutable -> Status {
    if (rec.role == Role::kCustomer)
      RETURN_IF_ERROR(LoadProgram(ctx.state(), rec.program).status());
    ASSIGN_OR_RETURN(std::optional<std::string> v,
                     ctx.state().Get(Cf::kObjects, ObjectKey(ObjectKind::kApiKey, "", rec.id)));
    if (v) return Refuse(Code::kAlreadyExists, "key id taken", "api_key_exists");
    rec.created_us = ctx.now_us();
    Entry e;
    e.type = EntryType::kApiKey;
    e.payload = EncodeApiKey(rec);
    return EmitOk(ctx, std::move(e));
  };
  ASSIGN_OR_RETURN(AppendResult a, ledger_->Append(MakeRequest(w, decide)));
  ASSIGN_OR_RETURN(Entry e, ledger_->GetEntry(a.first_id));
  ApiKeyCreated out;
  out.write = {a.first_id, a.count, a.replayed};
  ASSIGN_OR_RETURN(out.record, DecodeApiKey(e.payload));
  out.key = DeriveKeySecret(out.record.id);
  return out;
}

Result<WriteResult> Loyalty::RevokeApiKey(const WriteContext& w, const std::string& id) {
  auto decide = [id](DecideContext& ctx) -> Status {
    ASSIGN_OR_RETURN(std::optional<std::string> v,
                     ctx.state().Get(Cf::kObjects, ObjectKey(ObjectKind::kApiKey, "", id)));
    if (!v) return Refuse(Code::kNotFound, "no key " + id, "not_found");
    ASSIGN_OR_RETURN(ApiKeyRecord rec, DecodeApiKey(*v));
    if (rec.revoked) return Status::Ok();
    rec.revoked = true;
    Entry e;
    e.type = EntryType::kApiKey;
    e.payload = EncodeApiKey(rec);
    return EmitOk(ctx, std::move(e));
  };
  return ToWriteResult(ledger_->Append(MakeRequest(w, decide)));
}

}  // namespace tally
