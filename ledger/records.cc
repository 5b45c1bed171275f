#include "ledger/records.h"

#include <array>

#include "ledger/coding.h"
#include "ledger/entry.h"
#include "ledger/limits.h"

namespace tally {
namespace {

// Every record starts with a format version byte. Do not change.
constexpr uint8_t kRecordVersion = 1;

template <typename T, typename ReadFn>
Result<T> DecodeWith(std::string_view bytes, const char* what, ReadFn read) {
  Reader r(bytes);
  uint8_t version = 0;
  r.ReadU8(&version);
  if (version != kRecordVersion) r.Fail();
  T out;
  read(r, out);
  if (!r.ok() || !r.empty()) return Status::DataLoss(std::string("malformed ") + what + " record");
  return out;
}

void PutOptional(std::string* out, const std::optional<int64_t>& v) {
  PutU8(out, v ? 1 : 0);
  if (v) PutI64(out, *v);
}

void ReadOptional(Reader& r, std::optional<int64_t>* v) {
  uint8_t has = 0;
  r.ReadU8(&has);
  if (has > 1) r.Fail();
  if (has == 1) {
    int64_t x = 0;
    r.ReadI64(&x);
    *v = x;
  }
}

void ReadBool(Reader& r, bool* b) {
  uint8_t v = 0;
  r.ReadU8(&v);
  if (v > 1) r.Fail();
  *b = v == 1;
}

void ReadHash(Reader& r, Hash* h) {
  std::string s;
  if (r.ReadBytes(h->size(), &s)) std::copy(s.begin(), s.end(), h->begin());
}

constexpr size_t kNameBytesMax = 200;
constexpr size_t kCurrencyBytesMax = 8;

}  // namespace

std::string EncodeProgram(const ProgramConfig& p) {
  std::string out;
  PutU8(&out, kRecordVersion);
  PutStr8(&out, p.id);
  PutStr8(&out, p.name);
  PutStr8(&out, p.currency);
  PutI64(&out, p.point_value_minor);
  PutI64(&out, p.earn_points);
  PutI64(&out, p.earn_per_amount_minor);
  PutI64(&out, p.expiry_days);
  PutI64(&out, p.pending_days);
  PutU8(&out, static_cast<uint8_t>(p.negative_balance));
  PutU8(&out, p.referral ? 1 : 0);
  if (p.referral) {
    PutI64(&out, p.referral->advocate_points);
    PutI64(&out, p.referral->friend_points);
    PutI64(&out, p.referral->max_uses);
    PutI64(&out, p.referral->code_ttl_days);
    PutI64(&out, p.referral->advocate_pending_days);
  }
  return out;
}

Result<ProgramConfig> DecodeProgram(std::string_view bytes) {
  return DecodeWith<ProgramConfig>(bytes, "program", [](Reader& r, ProgramConfig& p) {
    r.ReadStr8(&p.id, kIdBytesMax);
    r.ReadStr8(&p.name, kNameBytesMax);
    r.ReadStr8(&p.currency, kCurrencyBytesMax);
    r.ReadI64(&p.point_value_minor);
    r.ReadI64(&p.earn_points);
    r.ReadI64(&p.earn_per_amount_minor);
    r.ReadI64(&p.expiry_days);
    r.ReadI64(&p.pending_days);
    uint8_t neg = 0;
    r.ReadU8(&neg);
    if (neg > 1) r.Fail();
    p.negative_balance = static_cast<NegativeBalance>(neg);
    bool has_referral = false;
    ReadBool(r, &has_referral);
    if (has_referral) {
      ReferralSettings s;
      r.ReadI64(&s.advocate_points);
      r.ReadI64(&s.friend_points);
      r.ReadI64(&s.max_uses);
      r.ReadI64(&s.code_ttl_days);
      r.ReadI64(&s.advocate_pending_days);
      p.referral = s;
    }
  });
}

Status ValidateProgram(const ProgramConfig& p) {
  auto bad = [](const std::string& m) { return Status::InvalidArgument(m, "bad_request"); };
  if (!IsValidId(p.id)) return bad("program id must be 1 to 64 of A-Z a-z 0-9 _ - . @");
  if (p.name.empty() || p.name.size() > kNameBytesMax) return bad("name must be 1 to 200 bytes");
  if (p.currency.size() != 3) return bad("currency must be a 3-letter code");
  for (char c : p.currency) {
    if (c < 'A' || c > 'Z') return bad("currency must be a 3-letter code");
  }
  if (p.point_value_minor < 0 || p.point_value_minor > kPointsMax) {
    return bad("point_value_minor out of range");
  }
  if (p.earn_points < 0 || p.earn_points > kPointsMax || p.earn_per_amount_minor < 1 ||
      p.earn_per_amount_minor > kPointsMax) {
    return bad("earn_rate out of range");
  }
  if (p.expiry_days < 0 || p.expiry_days > kDaysMax || p.pending_days < 0 ||
      p.pending_days > kDaysMax) {
    return bad("days out of range");
  }
  if (p.referral) {
    const ReferralSettings& s = *p.referral;
    if (s.advocate_points < 0 || s.advocate_points > kPointsMax || s.friend_points < 0 ||
        s.friend_points > kPointsMax || s.max_uses < 1 || s.max_uses > kPointsMax ||
        s.code_ttl_days < 0 || s.code_ttl_days > kDaysMax || s.advocate_pending_days < 0 ||
        s.advocate_pending_days > kDaysMax) {
      return bad("referral settings out of range");
    }
  }
  return Status::Ok();
}

std::string EncodeReward(const RewardRecord& r) {
  std::string out;
  PutU8(&out, kRecordVersion);
  PutStr8(&out, r.id);
  PutStr8(&out, r.name);
  PutI64(&out, r.points);
  PutOptional(&out, r.stock);
  return out;
}

Result<RewardRecord> DecodeReward(std::string_view bytes) {
  return DecodeWith<RewardRecord>(bytes, "reward", [](Reader& r, RewardRecord& w) {
    r.ReadStr8(&w.id, kIdBytesMax);
    r.ReadStr8(&w.name, kNameBytesMax);
    r.ReadI64(&w.points);
    ReadOptional(r, &w.stock);
  });
}

namespace {
constexpr std::array<const char*, 5> kRoleNames = {"", "admin", "checkout", "finance", "customer"};
constexpr std::array<const char*, 4> kHoldStateNames = {"none", "pending", "captured", "voided"};
}  // namespace

const char* RoleName(Role r) {
  auto i = static_cast<size_t>(r);
  return i < kRoleNames.size() ? kRoleNames[i] : "";
}

std::optional<Role> RoleFromName(std::string_view name) {
  for (size_t i = 1; i < kRoleNames.size(); ++i) {
    if (name == kRoleNames[i]) return static_cast<Role>(i);
  }
  return std::nullopt;
}

const char* HoldStateName(HoldState s) {
  auto i = static_cast<size_t>(s);
  return i < kHoldStateNames.size() ? kHoldStateNames[i] : "";
}

std::string EncodeApiKey(const ApiKeyRecord& k) {
  std::string out;
  PutU8(&out, kRecordVersion);
  PutStr8(&out, k.id);
  PutStr8(&out, k.name);
  PutU8(&out, static_cast<uint8_t>(k.role));
  PutStr8(&out, k.program);
  PutStr8(&out, k.customer);
  out.append(AsBytes(k.key_hash));
  PutU8(&out, k.revoked ? 1 : 0);
  PutI64(&out, k.created_us);
  return out;
}

Result<ApiKeyRecord> DecodeApiKey(std::string_view bytes) {
  return DecodeWith<ApiKeyRecord>(bytes, "api key", [](Reader& r, ApiKeyRecord& k) {
    r.ReadStr8(&k.id, kIdBytesMax);
    r.ReadStr8(&k.name, kNameBytesMax);
    uint8_t role = 0;
    r.ReadU8(&role);
    if (role < 1 || role > 4) r.Fail();
    k.role = static_cast<Role>(role);
    r.ReadStr8(&k.program, kIdBytesMax);
    r.ReadStr8(&k.customer, kIdBytesMax);
    ReadHash(r, &k.key_hash);
    ReadBool(r, &k.revoked);
    r.ReadI64(&k.created_us);
  });
}

std::string EncodeReferralCode(const ReferralCodeRecord& c) {
  std::string out;
  PutU8(&out, kRecordVersion);
  PutStr8(&out, c.code);
  PutStr8(&out, c.advocate);
  PutI64(&out, c.expires_at_us);
  PutI64(&out, c.max_uses);
  PutI64(&out, c.uses);
  return out;
}

Result<ReferralCodeRecord> DecodeReferralCode(std::string_view bytes) {
  return DecodeWith<ReferralCodeRecord>(bytes, "referral code",
                                        [](Reader& r, ReferralCodeRecord& c) {
                                          r.ReadStr8(&c.code, kIdBytesMax);
                                          r.ReadStr8(&c.advocate, kIdBytesMax);
                                          r.ReadI64(&c.expires_at_us);
                                          r.ReadI64(&c.max_uses);
                                          r.ReadI64(&c.uses);
                                        });
}

std::string EncodeSigningKey(const SigningKeyRecord& k) {
  std::string out;
  PutU8(&out, kRecordVersion);
  PutStr8(&out, k.name);
  PutStr8(&out, k.public_key);
  PutStr8(&out, k.previous_key);
  PutStr8(&out, k.endorsement);
  return out;
}

Result<SigningKeyRecord> DecodeSigningKey(std::string_view bytes) {
  auto k = DecodeWith<SigningKeyRecord>(bytes, "signing key", [](Reader& r, SigningKeyRecord& s) {
    r.ReadStr8(&s.name, kNameBytesMax);
    r.ReadStr8(&s.public_key, 32);
    r.ReadStr8(&s.previous_key, 32);
    r.ReadStr8(&s.endorsement, 64);
  });
  if (k.ok() &&
      (k->public_key.size() != 32 || k->previous_key.size() != 32 || k->endorsement.size() != 64)) {
    return Status::DataLoss("malformed signing key record");
  }
  return k;
}

std::string EndorsementMessage(std::string_view name, std::string_view new_public_key) {
  std::string m = "tally signing key rotation\n";
  m.append(name).append("\n");
  m.append(new_public_key);
  return m;
}

std::string EncodeCustomer(const CustomerRecord& c) {
  std::string out;
  out.reserve(1 + 3 * 8 + 1 + c.referral_code.size() + 1 + c.referred_by.size() + 8);
  PutU8(&out, kRecordVersion);
  PutI64(&out, c.lifetime_earned);
  PutI64(&out, c.lifetime_redeemed);
  PutI64(&out, c.lifetime_expired);
  PutStr8(&out, c.referral_code);
  PutStr8(&out, c.referred_by);
  PutU64(&out, c.first_entry);
  return out;
}

Result<CustomerRecord> DecodeCustomer(std::string_view bytes) {
  return DecodeWith<CustomerRecord>(bytes, "customer", [](Reader& r, CustomerRecord& c) {
    r.ReadI64(&c.lifetime_earned);
    r.ReadI64(&c.lifetime_redeemed);
    r.ReadI64(&c.lifetime_expired);
    r.ReadStr8(&c.referral_code, kIdBytesMax);
    r.ReadStr8(&c.referred_by, kIdBytesMax);
    r.ReadU64(&c.first_entry);
  });
}

std::string EncodeHold(const HoldRecord& h) {
  std::string out;
  out.reserve(3 + 1 + h.customer.size() + 5 * 8 + 1 + h.reward_id.size());
  PutU8(&out, kRecordVersion);
  PutU8(&out, static_cast<uint8_t>(h.kind));
  PutU8(&out, static_cast<uint8_t>(h.state));
  PutStr8(&out, h.customer);
  PutI64(&out, h.points);
  PutI64(&out, h.held);
  PutI64(&out, h.reversed);
  PutI64(&out, h.until_us);
  PutI64(&out, h.lot_expires_at_us);
  PutStr8(&out, h.reward_id);
  return out;
}

Result<HoldRecord> DecodeHold(std::string_view bytes) {
  return DecodeWith<HoldRecord>(bytes, "hold", [](Reader& r, HoldRecord& h) {
    uint8_t kind = 0, state = 0;
    r.ReadU8(&kind);
    r.ReadU8(&state);
    if (kind < 1 || kind > 3 || state > 3) r.Fail();
    h.kind = static_cast<HoldKind>(kind);
    h.state = static_cast<HoldState>(state);
    r.ReadStr8(&h.customer, kIdBytesMax);
    r.ReadI64(&h.points);
    r.ReadI64(&h.held);
    r.ReadI64(&h.reversed);
    r.ReadI64(&h.until_us);
    r.ReadI64(&h.lot_expires_at_us);
    r.ReadStr8(&h.reward_id, kIdBytesMax);
  });
}

std::string EncodeLot(const LotRecord& l) {
  std::string out;
  out.reserve(2 * 8);
  PutI64(&out, l.points);
  PutI64(&out, l.remaining);
  return out;
}

Result<LotRecord> DecodeLot(std::string_view bytes) {
  Reader r(bytes);
  LotRecord l;
  r.ReadI64(&l.points);
  r.ReadI64(&l.remaining);
  if (!r.ok() || !r.empty()) return Status::DataLoss("malformed lot record");
  return l;
}

}  // namespace tally
