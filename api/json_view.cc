#include "api/json_view.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <utility>

#include "ledger/base64.h"
#include "ledger/rfc3339.h"
#include "ledger/signer.h"
#include "ledger/utf8.h"

namespace tally {
namespace {

// Keys keep the order they are set in, so every view reads in the order API.md shows.
using Json = nlohmann::ordered_json;

std::string Dump(const Json& j) {
  // Strings come from validated input and the log; replace, never throw, on bad UTF-8.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// A JSON string, the same bytes Dump gives: '"' and '\\' escaped, control characters as the
// short escapes or \u00xx, well-formed UTF-8 as is. A string that is not well-formed UTF-8 (none
// should reach here) goes through the JSON library, which replaces the bad bytes.
void AppendString(std::string_view s, std::string* out) {
  const size_t start = out->size();
  *out += '"';
  size_t copied = 0;  // s[0, copied) is in *out
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c >= 0x80) {  // ASCII is decided here, byte by byte; the rest is decoded
      std::string_view rest = s.substr(i);
      if (NextCodePoint(&rest) == kBadUtf8) {
        out->resize(start);
        *out += Dump(Json(std::string(s)));
        return;
      }
      i = s.size() - rest.size();
      continue;
    }
    if (c >= 0x20 && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    out->append(s.data() + copied, i - copied);
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        *out += "\\u00";
        *out += kHex[c >> 4];
        *out += kHex[c & 15];
      }
    }
    copied = ++i;
  }
  out->append(s.data() + copied, s.size() - copied);
  *out += '"';
}

// Bytes as a JSON string of their standard base64 (the alphabet needs no escaping).
void AppendBase64String(std::string_view bytes, std::string* out) {
  *out += '"';
  AppendBase64(bytes, out);
  *out += '"';
}

// Writes one JSON object field by field, directly as text, for the responses served most often
// (building a JSON document first costs more than the rest of such a response). Fields come
// out in the order they are written, as with ordered_json.
class ObjectWriter {
 public:
  explicit ObjectWriter(std::string* out) : out_(out) { *out_ += '{'; }
  ObjectWriter& Str(std::string_view key, std::string_view value) {
    Key(key);
    AppendString(value, out_);
    return *this;
  }
  ObjectWriter& StrOrNull(std::string_view key, std::string_view value) {
    Key(key);
    if (value.empty()) {
      *out_ += "null";
    } else {
      AppendString(value, out_);
    }
    return *this;
  }
  ObjectWriter& Int(std::string_view key, int64_t value) {
    Key(key);
    *out_ += std::to_string(value);
    return *this;
  }
  ObjectWriter& UInt(std::string_view key, uint64_t value) {
    Key(key);
    *out_ += std::to_string(value);
    return *this;
  }
  ObjectWriter& Base64(std::string_view key, std::string_view bytes) {
    Key(key);
    AppendBase64String(bytes, out_);
    return *this;
  }
  ObjectWriter& Raw(std::string_view key, std::string_view json) {
    Key(key);
    *out_ += json;
    return *this;
  }
  // Writes the key and returns the text to append the value to, for values written in place.
  std::string* Value(std::string_view key) {
    Key(key);
    return out_;
  }
  void Close() { *out_ += '}'; }

 private:
  // Keys are literals of the API's field names (plain ASCII): written as they are.
  void Key(std::string_view key) {
    *out_ += first_ ? "\"" : ",\"";
    first_ = false;
    *out_ += key;
    *out_ += "\":";
  }
  std::string* out_;
  bool first_ = true;
};

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

// An entry (API.md's entry shape), the most served object: written as text directly.
void AppendEntry(const EntryView& v, std::string* out) {
  const Entry& e = v.entry;
  ObjectWriter w(out);
  w.UInt("id", e.id)
      .Str("type", EntryTypeName(e.type))
      .Str("program", e.program)
      .StrOrNull("customer", e.customer)
      .Int("points", EntryPoints(e))
      .Str("created_at", FormatRfc3339(e.time_us))
      // Always present, null when empty (API.md's entry shape; the JSON Lines export does the
      // same).
      .StrOrNull("order_id", e.order_id)
      .StrOrNull("description", e.description);
  if (e.holds && v.hold) {
    ObjectWriter(w.Value("hold")).Str("state", HoldStateName(*v.hold)).Close();
  }
  if (e.ref) ObjectWriter(w.Value("refs")).UInt("entry_id", *e.ref).Close();
  std::string* postings = w.Value("postings");
  *postings += '[';
  for (size_t i = 0; i < e.postings.size(); ++i) {
    if (i > 0) *postings += ',';
    const Posting& p = e.postings[i];
    ObjectWriter(postings)
        .Str("account", p.account)
        .Int("points", p.points)
        .Int("balance_after", p.balance_after)
        .Close();
  }
  *postings += ']';
  w.Close();
}

// A receipt, in every write response.
void AppendReceipt(const Receipt& r, std::string* out) {
  ObjectWriter w(out);
  w.Int("leaf_index", static_cast<int64_t>(r.leaf_index)).Base64("entry", r.entry);
  std::string* proof = w.Value("inclusion_proof");
  *proof += '[';
  for (size_t i = 0; i < r.inclusion_proof.size(); ++i) {
    if (i > 0) *proof += ',';
    AppendBase64String(AsBytes(r.inclusion_proof[i]), proof);
  }
  *proof += ']';
  w.Str("checkpoint", r.checkpoint).Int("tree_size", static_cast<int64_t>(r.tree_size));
  // Only under a rotated key: the signing_key receipts that lead to it from the first key.
  if (!r.key_chain.empty()) {
    std::string* chain = w.Value("key_chain");
    *chain += '[';
    for (size_t i = 0; i < r.key_chain.size(); ++i) {
      if (i > 0) *chain += ',';
      AppendReceipt(r.key_chain[i], chain);
    }
    *chain += ']';
  }
  w.Close();
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

std::string RenderEntry(const EntryView& e) {
  std::string out;
  AppendEntry(e, &out);
  return out;
}

std::string RenderEntryWithReceipt(const EntryView& e, const Receipt& receipt) {
  std::string out;
  // An earn's answer with a 10-hash proof is about 1.3 KB: one allocation for most answers.
  out.reserve(2048);
  ObjectWriter w(&out);
  AppendEntry(e, w.Value("entry"));
  AppendReceipt(receipt, w.Value("receipt"));
  w.Close();
  return out;
}

std::string RenderEntryPage(const Page<EntryView>& page) {
  std::string out;
  ObjectWriter w(&out);
  std::string* items = w.Value("items");
  *items += '[';
  for (size_t i = 0; i < page.items.size(); ++i) {
    if (i > 0) *items += ',';
    AppendEntry(page.items[i], items);
  }
  *items += ']';
  if (page.next_cursor) {
    w.Str("next_cursor", *page.next_cursor);
  } else {
    w.Raw("next_cursor", "null");
  }
  w.Close();
  return out;
}

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
  std::string out;
  out.reserve(320);
  ObjectWriter w(&out);
  w.Str("program", c.program)
      .Str("customer", c.customer)
      .Int("available", c.available)
      .Int("pending", c.pending)
      .Int("reserved", c.reserved)
      .Int("lifetime_earned", c.lifetime_earned)
      .Int("lifetime_redeemed", c.lifetime_redeemed)
      .Int("lifetime_expired", c.lifetime_expired);
  if (c.next_expiry) {
    std::string expiry;
    ObjectWriter e(&expiry);
    e.Str("at", FormatRfc3339(c.next_expiry->first)).Int("points", c.next_expiry->second).Close();
    w.Raw("next_expiry", expiry);
  } else {
    w.Raw("next_expiry", "null");
  }
  w.StrOrNull("referral_code", c.referral_code).StrOrNull("referred_by", c.referred_by).Close();
  return out;
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

namespace {
Json BackupJson(const BackupRecord& b) {
  Json j;
  j["name"] = b.name;
  j["path"] = b.path;
  j["size"] = b.size;
  j["created_at"] = b.created_at;
  return j;
}
}  // namespace

std::string RenderBackup(const BackupRecord& b) { return Dump(BackupJson(b)); }

std::string RenderBackupRecord(const BackupRecord& b) {
  Json j = BackupJson(b);
  j["idempotency"] = b.idempotency;
  j["request"] = b.request;
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
