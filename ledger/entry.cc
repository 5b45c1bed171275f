#include "ledger/entry.h"

#include <array>

#include "ledger/coding.h"
#include "ledger/limits.h"
#include "ledger/points.h"

namespace tally {
namespace {

constexpr std::array<const char*, kEntryTypeMax + 1> kTypeNames = {
    "",         "program",    "api_key", "earn",          "redeem",   "capture", "void",
    "reversal", "adjustment", "expiry",  "referral_code", "referral", "reward",  "signing_key"};

constexpr uint8_t kFlagHasRef = 1;
constexpr uint8_t kFlagHolds = 2;
constexpr uint8_t kFlagsKnown = kFlagHasRef | kFlagHolds;

// Which bytes an id may hold (kIdChar) and an account name (kIdChar | kAccountChar): one table
// look-up per byte, since every entry decoded is validated, byte by byte.
constexpr uint8_t kIdChar = 1;
constexpr uint8_t kAccountChar = 2;
constexpr std::array<uint8_t, 256> kCharClass = [] {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const bool id = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.' || c == '@';
    t[c] = static_cast<uint8_t>((id ? kIdChar | kAccountChar : 0) | (c == ':' ? kAccountChar : 0));
  }
  return t;
}();

bool AllOf(std::string_view s, uint8_t cls) {
  for (char c : s) {
    if ((kCharClass[static_cast<uint8_t>(c)] & cls) == 0) return false;
  }
  return true;
}

bool IsValidAccount(std::string_view a) {
  if (a.empty() || a.size() > kAccountBytesMax || a.front() == ':' || a.back() == ':') return false;
  return AllOf(a, kAccountChar);
}

Status ValidatePostings(const Entry& e) {
  if (e.postings.size() > kEntryPostingsMax) return Status::InvalidArgument("too many postings");
  int64_t sum = 0;
  for (size_t i = 0; i < e.postings.size(); ++i) {
    const Posting& p = e.postings[i];
    if (!IsValidAccount(p.account)) return Status::InvalidArgument("bad account: " + p.account);
    if (p.points == 0) return Status::InvalidArgument("zero posting on " + p.account);
    // At most kEntryPostingsMax postings: comparing with each earlier one is cheaper than a set.
    for (size_t j = 0; j < i; ++j) {
      if (e.postings[j].account == p.account) {
        return Status::InvalidArgument("account posted twice: " + p.account);
      }
    }
    if (!CheckedAdd(sum, p.points, &sum)) return Status::InvalidArgument("postings overflow");
  }
  if (sum != 0) return Status::InvalidArgument("postings do not sum to zero");
  return Status::Ok();
}

}  // namespace

const char* EntryTypeName(EntryType type) {
  auto i = static_cast<size_t>(type);
  return i >= 1 && i <= kEntryTypeMax ? kTypeNames[i] : "unknown";
}

std::optional<EntryType> EntryTypeFromName(std::string_view name) {
  for (size_t i = 1; i <= kEntryTypeMax; ++i) {
    if (name == kTypeNames[i]) return static_cast<EntryType>(i);
  }
  return std::nullopt;
}

bool IsValidId(std::string_view id) {
  if (id.empty() || id.size() > kIdBytesMax) return false;
  return AllOf(id, kIdChar);
}

bool IsValidIdempotencyKey(std::string_view key) {
  if (key.size() > kIdempotencyKeyBytesMax) return false;
  for (char c : key) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

Status ValidateEntry(const Entry& e) {
  auto t = static_cast<uint8_t>(e.type);
  if (t < 1 || t > kEntryTypeMax) return Status::InvalidArgument("unknown entry type");
  if (!e.program.empty() && !IsValidId(e.program)) return Status::InvalidArgument("bad program");
  if (!e.customer.empty() && !IsValidId(e.customer)) return Status::InvalidArgument("bad customer");
  if (!e.order_id.empty() && !IsValidId(e.order_id)) return Status::InvalidArgument("bad order id");
  if (e.actor.size() > kActorBytesMax) return Status::InvalidArgument("actor too long");
  if (!IsValidIdempotencyKey(e.idempotency_key)) {
    return Status::InvalidArgument("bad idempotency key");
  }
  if (e.description.size() > kDescriptionBytesMax) {
    return Status::InvalidArgument("description too long");
  }
  if (e.payload.size() > kEntryPayloadBytesMax) return Status::InvalidArgument("payload too long");
  if (e.lots.size() > kEntryLotsMax) return Status::InvalidArgument("too many lots");
  for (const LotUse& l : e.lots) {
    if (l.points <= 0 || l.expires_at_us < 0) return Status::InvalidArgument("bad lot use");
  }
  if (e.time_us < 0 || e.hold_until_us < 0 || e.expires_at_us < 0) {
    return Status::InvalidArgument("negative time");
  }
  return ValidatePostings(e);
}

std::string EncodeEntry(const Entry& e) {
  TALLY_CHECK(ValidateEntry(e).ok());
  std::string out;
  out.reserve(128 + e.postings.size() * 48 + e.description.size() + e.payload.size());
  PutU8(&out, kEntryFormatVersion);
  PutU64(&out, e.id);
  PutI64(&out, e.time_us);
  PutU8(&out, static_cast<uint8_t>(e.type));
  PutStr8(&out, e.program);
  PutStr8(&out, e.actor);
  PutStr8(&out, e.idempotency_key);
  out.append(AsBytes(e.request_hash));
  PutStr8(&out, e.customer);
  PutStr8(&out, e.order_id);
  uint8_t flags = (e.ref ? kFlagHasRef : 0) | (e.holds ? kFlagHolds : 0);
  PutU8(&out, flags);
  if (e.ref) PutU64(&out, *e.ref);
  PutI64(&out, e.hold_until_us);
  PutI64(&out, e.expires_at_us);
  PutU16(&out, static_cast<uint16_t>(e.postings.size()));
  for (const Posting& p : e.postings) {
    PutStr8(&out, p.account);
    PutI64(&out, p.points);
    PutI64(&out, p.balance_after);
  }
  PutU16(&out, static_cast<uint16_t>(e.lots.size()));
  for (const LotUse& l : e.lots) {
    PutU64(&out, l.lot);
    PutI64(&out, l.expires_at_us);
    PutI64(&out, l.points);
  }
  PutStr16(&out, e.description);
  PutStr32(&out, e.payload);
  TALLY_CHECK(out.size() <= kEntryBytesMax);
  return out;
}

namespace {

void ReadHeader(Reader& r, Entry& e) {
  e.ref.reset();
  uint8_t version = 0, type = 0;
  r.ReadU8(&version);
  if (version != kEntryFormatVersion) r.Fail();
  r.ReadU64(&e.id);
  r.ReadI64(&e.time_us);
  r.ReadU8(&type);
  if (type < 1 || type > kEntryTypeMax) r.Fail();
  e.type = static_cast<EntryType>(type);
  r.ReadStr8(&e.program, kIdBytesMax);
  r.ReadStr8(&e.actor, kActorBytesMax);
  r.ReadStr8(&e.idempotency_key, kIdempotencyKeyBytesMax);
  std::string_view hash;
  if (r.ReadView(e.request_hash.size(), &hash)) {
    std::copy(hash.begin(), hash.end(), e.request_hash.begin());
  }
  r.ReadStr8(&e.customer, kIdBytesMax);
  r.ReadStr8(&e.order_id, kIdBytesMax);
  uint8_t flags = 0;
  r.ReadU8(&flags);
  if ((flags & ~kFlagsKnown) != 0) r.Fail();
  if (flags & kFlagHasRef) {
    uint64_t ref = 0;
    r.ReadU64(&ref);
    e.ref = ref;
  }
  e.holds = (flags & kFlagHolds) != 0;
  r.ReadI64(&e.hold_until_us);
  r.ReadI64(&e.expires_at_us);
}

void ReadBody(Reader& r, Entry& e) {
  uint16_t n = 0;
  r.ReadU16(&n);
  if (n > kEntryPostingsMax) r.Fail();
  // Elements the vectors already hold are reused (DecodeEntryInto), then any left over dropped.
  size_t i = 0;
  for (; i < n && r.ok(); ++i) {
    Posting& p = i < e.postings.size() ? e.postings[i] : e.postings.emplace_back();
    r.ReadStr8(&p.account, kAccountBytesMax);
    r.ReadI64(&p.points);
    r.ReadI64(&p.balance_after);
  }
  e.postings.resize(i);
  r.ReadU16(&n);
  if (n > kEntryLotsMax) r.Fail();
  for (i = 0; i < n && r.ok(); ++i) {
    LotUse& l = i < e.lots.size() ? e.lots[i] : e.lots.emplace_back();
    r.ReadU64(&l.lot);
    r.ReadI64(&l.expires_at_us);
    r.ReadI64(&l.points);
  }
  e.lots.resize(i);
  r.ReadStr16(&e.description, kDescriptionBytesMax);
  r.ReadStr32(&e.payload, kEntryPayloadBytesMax);
}

}  // namespace

Status DecodeEntryInto(std::string_view bytes, Entry* entry) {
  if (bytes.size() > kEntryBytesMax) return Status::DataLoss("entry too large");
  Reader r(bytes);
  ReadHeader(r, *entry);
  ReadBody(r, *entry);
  if (!r.ok()) return Status::DataLoss("malformed entry encoding");
  if (!r.empty()) return Status::DataLoss("trailing bytes after entry");
  Status st = ValidateEntry(*entry);
  if (!st.ok()) return Status::DataLoss("invalid entry: " + st.message());
  return Status::Ok();
}

Result<Entry> DecodeEntry(std::string_view bytes) {
  Entry e;
  RETURN_IF_ERROR(DecodeEntryInto(bytes, &e));
  return e;
}

}  // namespace tally
