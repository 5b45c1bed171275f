#include "ledger/apply.h"

#include <set>

#include "ledger/accounts.h"
#include "ledger/coding.h"
#include "ledger/keys.h"
#include "ledger/points.h"

namespace tally {

std::string EncodeIdempotencyRecord(const IdempotencyRecord& r) {
  std::string v;
  v.reserve(8 + 4 + r.request_hash.size());
  PutU64(&v, r.first_id);
  PutU32(&v, r.count);
  v.append(AsBytes(r.request_hash));
  return v;
}

Result<IdempotencyRecord> DecodeIdempotencyRecord(std::string_view v) {
  Reader rd(v);
  IdempotencyRecord r;
  std::string_view hash;
  rd.ReadU64(&r.first_id);
  rd.ReadU32(&r.count);
  rd.ReadView(r.request_hash.size(), &hash);
  if (!rd.ok() || !rd.empty()) return Status::DataLoss("bad idempotency record");
  std::copy(hash.begin(), hash.end(), r.request_hash.begin());
  return r;
}

std::optional<BusinessClaim> BusinessKeyOf(const Entry& e) {
  if (e.order_id.empty()) return std::nullopt;
  if (e.type == EntryType::kEarn) {
    return BusinessClaim{BusinessKey(BusinessKind::kEarnOrder, e.program, e.order_id),
                         "order_already_awarded"};
  }
  return std::nullopt;
}

namespace {

Status ApplyPostings(const Entry& e, StateWriter* state) {
  for (const Posting& p : e.postings) {
    ASSIGN_OR_RETURN(int64_t before, state->GetI64(Cf::kBalances, p.account));
    int64_t after = 0;
    if (!CheckedAdd(before, p.points, &after) || after != p.balance_after) {
      return Status::DataLoss("entry " + std::to_string(e.id) + ": balance of " + p.account +
                              " after is " + std::to_string(p.balance_after) + ", expected " +
                              std::to_string(before) + " + " + std::to_string(p.points));
    }
    state->Put(Cf::kBalances, p.account, EncodeI64(after));
  }
  return Status::Ok();
}

// Every customer an entry concerns: the entry's own and any whose account it posts to.
std::set<std::string_view> CustomersOf(const Entry& e) {
  std::set<std::string_view> out;
  if (!e.customer.empty()) out.insert(e.customer);
  for (const Posting& p : e.postings) {
    AccountName name;
    if (ParseAccount(p.account, &name) && !name.customer.empty()) out.insert(name.customer);
  }
  return out;
}

Status ApplyIdempotency(const Entry& e, StateWriter* state) {
  if (e.idempotency_key.empty()) return Status::Ok();
  std::string key = IdempotencyKey(e.actor, e.idempotency_key);
  ASSIGN_OR_RETURN(std::optional<std::string> v, state->Get(Cf::kIdempotency, key));
  IdempotencyRecord r{e.id, 1, e.request_hash};
  if (v) {
    // A request that wrote several entries: they are consecutive and share one hash.
    ASSIGN_OR_RETURN(r, DecodeIdempotencyRecord(*v));
    if (r.first_id + r.count != e.id || r.request_hash != e.request_hash) {
      return Status::DataLoss("entry " + std::to_string(e.id) +
                              " reuses idempotency key of entry " + std::to_string(r.first_id));
    }
    ++r.count;
  }
  state->Put(Cf::kIdempotency, key, EncodeIdempotencyRecord(r));
  return Status::Ok();
}

}  // namespace

Status ApplyEntry(const Entry& e, StateWriter* state) {
  RETURN_IF_ERROR(ApplyPostings(e, state));
  if (!e.program.empty()) {
    for (std::string_view c : CustomersOf(e)) {
      state->Put(Cf::kCustomerEntries, CustomerEntryKey(e.program, c, e.id), {});
    }
    std::string type(1, static_cast<char>(e.type));
    state->Put(Cf::kProgramEntries, ProgramEntryKey(e.program, e.id), type);
  }
  RETURN_IF_ERROR(ApplyIdempotency(e, state));
  if (auto claim = BusinessKeyOf(e)) {
    ASSIGN_OR_RETURN(std::optional<std::string> prior, state->Get(Cf::kBusinessKeys, claim->key));
    if (prior) {
      return Status::DataLoss("entry " + std::to_string(e.id) + " claims a business key of entry " +
                              std::to_string(DecodeU64(*prior)));
    }
    state->Put(Cf::kBusinessKeys, claim->key, EncodeU64(e.id));
  }
  return ApplyLoyalty(e, state);
}

}  // namespace tally
