#include "api/json_view.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <utility>

#include "ledger/base64.h"
#include "ledger/rfc3339.h"
#include "ledger/signer.h"

namespace tally {
namespace {

// Keys keep the order they are set in, so every view reads in the order API.md shows.
using Json = nlohmann::ordered_json;

std::string Dump(const Json& j) {
  // Strings come from validated input and the log; replace, never throw, on bad UTF-8.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json OrNull(const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); }

Json TimeOrNull(int64_t us) { return us == 0 ? Json(nullptr) : Json(FormatRfc3339(us)); }

Json Cursor(const std::optional<std::string>& next) { return next ? Json(*next) : Json(nullptr); }

template <typename T, typename F>
Json PageJson(const Page<T>& page, F item) {
  Json items = Json::array();
  for (const T& t : page.items) items.push_back(item(t));
  Json j;
  j["items"] = std::move(items);
  j["next_cursor"] = Cursor(page.next_cursor);
  return j;
}

Json PostingJson(const Posting& p) {
  Json j;
  j["account"] = p.account;
  j["points"] = p.points;
  j["balance_after"] = p.balance_after;
  return j;
}

Json EntryJson(const EntryView& v) {
  const Entry& e = v.entry;
  Json j;
  j["id"] = e.id;
  j["type"] = EntryTypeName(e.type);
  j["program"] = e.program;
  j["customer"] = OrNull(e.customer);
  j["points"] = EntryPoints(e);
  j["created_at"] = FormatRfc3339(e.time_us);
  if (!e.order_id.empty()) j["order_id"] = e.order_id;
  if (!e.description.empty()) j["description"] = e.description;
  if (e.holds && v.hold) j["hold"] = Json{{"state", HoldStateName(*v.hold)}};
  if (e.ref) j["refs"] = Json{{"entry_id", *e.ref}};
  Json postings = Json::array();
  for (const Posting& p : e.postings) postings.push_back(PostingJson(p));
  j["postings"] = std::move(postings);
  return j;
}

Json ReceiptJson(const Receipt& r) {
  Json proof = Json::array();
  for (const Hash& h : r.inclusion_proof) proof.push_back(Base64Encode(AsBytes(h)));
  Json j;
  j["leaf_index"] = r.leaf_index;
  j["entry"] = Base64Encode(r.entry);
  j["inclusion_proof"] = std::move(proof);
  j["checkpoint"] = r.checkpoint;
  j["tree_size"] = r.tree_size;
  // Only under a rotated key: the signing_key receipts that lead to it from the first key.
  if (!r.key_chain.empty()) {
    Json chain = Json::array();
    for (const Receipt& link : r.key_chain) chain.push_back(ReceiptJson(link));
    j["key_chain"] = std::move(chain);
  }
  return j;
}

Json ReferralJson(const std::optional<ReferralSettings>& r) {
  if (!r) return nullptr;
  Json j;
  j["advocate_points"] = r->advocate_points;
  j["friend_points"] = r->friend_points;
  j["max_uses"] = r->max_uses;
  j["code_ttl_days"] = r->code_ttl_days;
  j["advocate_pending_days"] = r->advocate_pending_days;
  return j;
}

Json ProgramJson(const ProgramConfig& p) {
  Json j;
  j["id"] = p.id;
  j["name"] = p.name;
  j["currency"] = p.currency;
  j["point_value_minor"] = p.point_value_minor;
  j["earn_rate"] = Json{{"points", p.earn_points}, {"per_amount_minor", p.earn_per_amount_minor}};
  j["expiry_days"] = p.expiry_days;
  j["pending_days"] = p.pending_days;
  j["negative_balance"] = p.negative_balance == NegativeBalance::kAllow ? "allow" : "deny";
  j["referral"] = ReferralJson(p.referral);
  return j;
}

Json RewardJson(const RewardRecord& r) {
  Json j;
  j["id"] = r.id;
  j["name"] = r.name;
  j["points"] = r.points;
  j["stock"] = r.stock ? Json(*r.stock) : Json(nullptr);
  return j;
}

Json CodeJson(const ReferralCodeRecord& c) {
  Json j;
  j["code"] = c.code;
  j["advocate"] = c.advocate;
  j["expires_at"] = TimeOrNull(c.expires_at_us);
  j["max_uses"] = c.max_uses;
  j["uses"] = c.uses;
  return j;
}

Json LotJson(const LotView& l) {
  Json j;
  j["entry_id"] = l.entry_id;
  j["points"] = l.points;
  j["remaining"] = l.remaining;
  j["expires_at"] = TimeOrNull(l.expires_at_us);
  return j;
}

Json BalanceJson(const BalanceRow& b) {
  Json j;
  j["customer"] = b.customer;
  j["available"] = b.available;
  j["pending"] = b.pending;
  j["reserved"] = b.reserved;
  return j;
}

Json BucketJson(const ActivityBucket& b) {
  Json j;
  j["start"] = FormatRfc3339(b.start_us);
  j["earned"] = b.earned;
  j["referral"] = b.referral;
  j["adjusted"] = b.adjusted;
  j["redeemed"] = b.redeemed;
  j["expired"] = b.expired;
  j["reversed"] = b.reversed;
  j["closing"] = b.closing;
  return j;
}

}  // namespace

std::string RenderEntry(const EntryView& e) { return Dump(EntryJson(e)); }

std::string RenderEntryWithReceipt(const EntryView& e, const Receipt& receipt) {
  Json j;
  j["entry"] = EntryJson(e);
  j["receipt"] = ReceiptJson(receipt);
  return Dump(j);
}

std::string RenderEntryPage(const Page<EntryView>& page) { return Dump(PageJson(page, EntryJson)); }

std::string RenderProgram(const ProgramConfig& p) { return Dump(ProgramJson(p)); }

std::string RenderProgramPage(const Page<ProgramConfig>& page) {
  return Dump(PageJson(page, ProgramJson));
}

std::string RenderReward(const RewardRecord& r) { return Dump(RewardJson(r)); }

std::string RenderRewardPage(const Page<RewardRecord>& page) {
  return Dump(PageJson(page, RewardJson));
}

std::string RenderCode(const ReferralCodeRecord& c) { return Dump(CodeJson(c)); }

std::string RenderCustomer(const CustomerView& c) {
  Json j;
  j["program"] = c.program;
  j["customer"] = c.customer;
  j["available"] = c.available;
  j["pending"] = c.pending;
  j["reserved"] = c.reserved;
  j["lifetime_earned"] = c.lifetime_earned;
  j["lifetime_redeemed"] = c.lifetime_redeemed;
  j["lifetime_expired"] = c.lifetime_expired;
  j["next_expiry"] = nullptr;
  if (c.next_expiry) {
    j["next_expiry"] =
        Json{{"at", FormatRfc3339(c.next_expiry->first)}, {"points", c.next_expiry->second}};
  }
  j["referral_code"] = OrNull(c.referral_code);
  j["referred_by"] = OrNull(c.referred_by);
  return Dump(j);
}

std::string RenderLotPage(const Page<LotView>& page) { return Dump(PageJson(page, LotJson)); }

std::string RenderApiKeyCreated(const ApiKeyRecord& k, const std::string& key) {
  Json j;
  j["id"] = k.id;
  j["key"] = key;
  j["role"] = RoleName(k.role);
  j["name"] = k.name;
  if (!k.program.empty()) j["program"] = k.program;
  if (!k.customer.empty()) j["customer"] = k.customer;
  if (k.created_us != 0) j["created_at"] = FormatRfc3339(k.created_us);
  return Dump(j);
}

std::string RenderExpired(uint64_t entries, int64_t points) {
  Json j;
  j["entries"] = entries;
  j["points"] = points;
  return Dump(j);
}

std::string RenderCheckpoint(const CheckpointInfo& c) {
  Json j;
  j["origin"] = c.origin;
  j["size"] = c.size;
  j["root"] = Base64Encode(AsBytes(c.root));
  j["checkpoint"] = c.note;
  return Dump(j);
}

std::string RenderConsistency(uint64_t from, uint64_t to, const std::vector<Hash>& proof) {
  Json hashes = Json::array();
  for (const Hash& h : proof) hashes.push_back(Base64Encode(AsBytes(h)));
  Json j;
  j["from"] = from;
  j["to"] = to;
  j["proof"] = std::move(hashes);
  return Dump(j);
}

std::string RenderPublicKey(const std::string& name, uint32_t key_id,
                            const std::string& raw_public_key) {
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%08x", key_id);
  Json j;
  j["name"] = name;
  j["key_id"] = hex;
  j["public_key"] = Base64Encode(raw_public_key);
  j["verifier_key"] = VerifierKey(name, raw_public_key);
  return Dump(j);
}

std::string RenderLiability(const Liability& l) {
  Json j;
  j["from"] = FormatRfc3339(l.from_us);
  j["to"] = FormatRfc3339(l.to_us);
  j["opening"] = l.opening;
  j["earned"] = l.earned;
  j["referral"] = l.referral;
  j["adjusted"] = l.adjusted;
  j["redeemed"] = l.redeemed;
  j["expired"] = l.expired;
  j["reversed"] = l.reversed;
  j["closing"] = l.closing;
  j["pending"] = l.pending;
  j["currency"] = l.currency;
  j["point_value_minor"] = l.point_value_minor;
  j["closing_value_minor"] = l.closing_value_minor;
  return Dump(j);
}

std::string RenderBalancePage(const Page<BalanceRow>& page) {
  return Dump(PageJson(page, BalanceJson));
}

std::string RenderActivity(const std::vector<ActivityBucket>& buckets) {
  Json list = Json::array();
  for (const ActivityBucket& b : buckets) list.push_back(BucketJson(b));
  Json j;
  j["buckets"] = std::move(list);
  return Dump(j);
}

std::string RenderReplication(const std::string& role, const std::optional<std::string>& stream,
                              uint64_t applied) {
  Json j;
  j["role"] = role;
  j["stream"] = stream ? Json(*stream) : Json(nullptr);
  j["applied"] = applied;
  return Dump(j);
}

std::string RenderPromoted(const std::string& role, uint64_t applied) {
  Json j;
  j["role"] = role;
  j["applied"] = applied;
  return Dump(j);
}

std::string RenderHealth(const std::string& status) { return Dump(Json{{"status", status}}); }

std::string RenderProblem(int status, const std::string& title, const std::string& code,
                          const std::string& detail) {
  Json j;
  j["type"] = "about:blank";
  j["title"] = title;
  j["status"] = status;
  j["code"] = code;
  j["detail"] = detail;
  return Dump(j);
}

}  // namespace tally
