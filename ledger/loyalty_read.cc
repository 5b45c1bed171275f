// Loyalty reads and finance reports. Every read goes through one snapshot.
#include <openssl/rand.h>

#include <algorithm>
#include <ctime>
#include <map>

#include "ledger/accounts.h"
#include "ledger/base64.h"
#include "ledger/coding.h"
#include "ledger/keys.h"
#include "ledger/limits.h"
#include "ledger/loyalty.h"
#include "ledger/loyalty_internal.h"

namespace tally {
namespace internal {

Result<ProgramConfig> LoadProgram(const StateReader& s, const std::string& id) {
  ASSIGN_OR_RETURN(std::optional<std::string> v,
                   s.Get(Cf::kObjects, ObjectKey(ObjectKind::kProgram, "", id)));
  if (!v) return Status::NotFound("no program " + id, "not_found");
  return DecodeProgram(*v);
}

Result<std::optional<CustomerRecord>> LoadCustomer(const StateReader& s, const std::string& program,
                                                   const std::string& customer) {
  ASSIGN_OR_RETURN(std::optional<std::string> v,
                   s.Get(Cf::kCustomers, CustomerKey(program, customer)));
  if (!v) return std::optional<CustomerRecord>();
  ASSIGN_OR_RETURN(CustomerRecord c, DecodeCustomer(*v));
  return std::optional<CustomerRecord>(std::move(c));
}

Result<std::optional<HoldRecord>> LoadHold(const StateReader& s, uint64_t entry_id) {
  ASSIGN_OR_RETURN(std::optional<std::string> v, s.Get(Cf::kHolds, HoldKey(entry_id)));
  if (!v) return std::optional<HoldRecord>();
  ASSIGN_OR_RETURN(HoldRecord h, DecodeHold(*v));
  return std::optional<HoldRecord>(std::move(h));
}

Result<std::optional<Entry>> LoadEntry(const StateReader& s, uint64_t id) {
  ASSIGN_OR_RETURN(std::optional<std::string> v, s.Get(Cf::kEntries, EntryKey(id)));
  if (!v) return std::optional<Entry>();
  ASSIGN_OR_RETURN(Entry e, DecodeEntry(*v));
  return std::optional<Entry>(std::move(e));
}

Result<std::vector<Lot>> LoadLots(const StateReader& s, const std::string& program,
                                  const std::string& customer) {
  std::string prefix = LotsPrefix(program, customer);
  std::vector<Lot> lots;
  Status decode;
  RETURN_IF_ERROR(s.Scan(Cf::kLots, prefix, PrefixEnd(prefix), false,
                         [&](std::string_view k, std::string_view v) {
                           auto rec = DecodeLot(v);
                           if (!rec.ok() || k.size() != prefix.size() + 16) {
                             decode = Status::DataLoss("malformed lot");
                             return false;
                           }
                           uint64_t exp = DecodeU64(k.substr(prefix.size(), 8));
                           Lot l;
                           l.id = DecodeU64(k.substr(prefix.size() + 8));
                           l.expires_at_us = exp == UINT64_MAX ? 0 : static_cast<int64_t>(exp);
                           l.record = *rec;
                           lots.push_back(l);
                           return true;
                         }));
  RETURN_IF_ERROR(decode);
  return lots;
}

std::string KeyCursor(std::string_view key) { return HexEncode(key); }

Result<std::string> KeyFromCursor(const std::string& cursor) {
  if (cursor.size() % 2 != 0 || cursor.size() > 1024) {
    return Status::InvalidArgument("bad cursor", "bad_request");
  }
  std::string key;
  for (size_t i = 0; i < cursor.size(); i += 2) {
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = nibble(cursor[i]), lo = nibble(cursor[i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("bad cursor", "bad_request");
    key.push_back(static_cast<char>(hi * 16 + lo));
  }
  return key;
}

namespace {
constexpr char kCrockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int CrockfordValue(char c) {
  for (int i = 0; i < 32; ++i) {
    if (kCrockford[i] == c) return i;
  }
  return -1;
}

// Odd weights make every single-symbol substitution change the sum modulo 32.
char CheckSymbol(std::string_view body) {
  int sum = 0;
  for (size_t i = 0; i < body.size(); ++i) {
    sum += static_cast<int>(2 * i + 1) * CrockfordValue(body[i]);
  }
  return kCrockford[sum % 32];
}
}  // namespace

std::string NewReferralCode() {
  unsigned char bytes[kReferralCodeChars - 1];
  TALLY_CHECK(RAND_bytes(bytes, sizeof bytes) == 1);
  std::string code;
  for (unsigned char b : bytes) code.push_back(kCrockford[b % 32]);  // 256 % 32 == 0: unbiased
  code.push_back(CheckSymbol(code));
  return code;
}

std::optional<std::string> NormalizeReferralCode(std::string_view code) {
  std::string out;
  for (char c : code) {
    if (c == '-') continue;
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c == 'I' || c == 'L') c = '1';
    if (c == 'O') c = '0';
    if (CrockfordValue(c) < 0) return std::nullopt;
    out.push_back(c);
  }
  if (out.size() != static_cast<size_t>(kReferralCodeChars)) return std::nullopt;
  std::string_view body = std::string_view(out).substr(0, out.size() - 1);
  if (CheckSymbol(body) != out.back()) return std::nullopt;
  return out;
}

}  // namespace internal

using internal::KeyCursor;
using internal::KeyFromCursor;
using internal::LoadCustomer;
using internal::LoadProgram;

namespace {

size_t ClampLimit(size_t limit) { return std::clamp<size_t>(limit, 1, kPageItemsMax); }

// Scans one prefix from a cursor (exclusive), decoding each value, a page at a time.
template <typename T, typename Fn>
Result<Page<T>> ScanPage(const StateReader& s, Cf cf, const std::string& prefix,
                         const std::string& cursor, size_t limit, Fn to_item) {
  limit = ClampLimit(limit);
  std::string start = prefix;
  if (!cursor.empty()) {
    ASSIGN_OR_RETURN(std::string after, KeyFromCursor(cursor));
    if (after.compare(0, prefix.size(), prefix) != 0) {
      return Status::InvalidArgument("bad cursor", "bad_request");
    }
    start = after + std::string(1, '\0');
  }
  Page<T> page;
  std::string last;
  Status st;
  RETURN_IF_ERROR(
      s.Scan(cf, start, PrefixEnd(prefix), false, [&](std::string_view k, std::string_view v) {
        if (page.items.size() == limit) {
          page.next_cursor = KeyCursor(last);
          return false;
        }
        auto item = to_item(k, v);
        if (!item.ok()) {
          st = item.status();
          return false;
        }
        page.items.push_back(std::move(item).value());
        last = std::string(k);
        return true;
      }));
  RETURN_IF_ERROR(st);
  return page;
}

}  // namespace

Result<ProgramConfig> Loyalty::GetProgram(const std::string& id) const {
  return LoadProgram(*ledger_->Read(), id);
}

Result<Page<ProgramConfig>> Loyalty::ListPrograms(const std::string& cursor, size_t limit) const {
  return ScanPage<ProgramConfig>(
      *ledger_->Read(), Cf::kObjects, ObjectPrefix(ObjectKind::kProgram, ""), cursor, limit,
      [](std::string_view, std::string_view v) { return DecodeProgram(v); });
}

Result<Page<RewardRecord>> Loyalty::ListRewards(const std::string& program,
                                                const std::string& cursor, size_t limit) const {
  auto view = ledger_->Read();
  RETURN_IF_ERROR(LoadProgram(*view, program).status());
  return ScanPage<RewardRecord>(
      *view, Cf::kObjects, ObjectPrefix(ObjectKind::kReward, program), cursor, limit,
      [](std::string_view, std::string_view v) { return DecodeReward(v); });
}

Result<CustomerView> Loyalty::GetCustomer(const std::string& program,
                                          const std::string& customer) const {
  const std::string customer_key = CustomerKey(program, customer);
  if (std::optional<CustomerView> cached =
          customers_->Get(customer_key, ledger_->CustomerChangedAt(program, customer))) {
    return std::move(*cached);
  }
  uint64_t holds = 0;
  auto view = ledger_->Read(&holds);
  // The customer's record and balances in one read; the program only when there is no customer
  // (a customer exists only in a program that does), to tell which of the two is unknown.
  // Everything read here must be in a family CustomerOfKey covers, or the cache goes stale.
  const std::string accounts[] = {CustomerAccount(program, customer, acct::kAvailable),
                                  CustomerAccount(program, customer, acct::kPending),
                                  CustomerAccount(program, customer, acct::kReserved)};
  ASSIGN_OR_RETURN(std::vector<std::optional<std::string>> values,
                   view->MultiGet({{Cf::kCustomers, customer_key},
                                   {Cf::kBalances, accounts[0]},
                                   {Cf::kBalances, accounts[1]},
                                   {Cf::kBalances, accounts[2]}}));
  if (!values[0]) {
    RETURN_IF_ERROR(LoadProgram(*view, program).status());
    return Status::NotFound("no customer " + customer, "not_found");
  }
  ASSIGN_OR_RETURN(CustomerRecord rec, DecodeCustomer(*values[0]));
  CustomerView c;
  c.program = program;
  c.customer = customer;
  int64_t* balances[] = {&c.available, &c.pending, &c.reserved};
  for (size_t i = 0; i < 3; ++i) {
    const std::optional<std::string>& v = values[i + 1];
    if (v && v->size() != 8) return Status::DataLoss("bad integer value");
    *balances[i] = v ? DecodeI64(*v) : 0;
  }
  c.lifetime_earned = rec.lifetime_earned;
  c.lifetime_redeemed = rec.lifetime_redeemed;
  c.lifetime_expired = rec.lifetime_expired;
  c.referral_code = rec.referral_code;
  c.referred_by = rec.referred_by;
  // Lots sort soonest expiry first and never-expiring last: read only the first expiry's lots.
  std::string prefix = LotsPrefix(program, customer);
  Status decode;
  RETURN_IF_ERROR(view->Scan(Cf::kLots, prefix, PrefixEnd(prefix), false,
                             [&](std::string_view k, std::string_view v) {
                               uint64_t exp = DecodeU64(k.substr(prefix.size(), 8));
                               if (exp == UINT64_MAX) return false;
                               auto at = static_cast<int64_t>(exp);
                               if (c.next_expiry && c.next_expiry->first != at) return false;
                               auto lot = DecodeLot(v);
                               if (!lot.ok()) {
                                 decode = lot.status();
                                 return false;
                               }
                               if (!c.next_expiry) c.next_expiry = std::make_pair(at, int64_t{0});
                               c.next_expiry->second += lot->remaining;
                               return true;
                             }));
  RETURN_IF_ERROR(decode);
  customers_->Put(customer_key, holds, ledger_->CustomerChangedAt(program, customer), c);
  return c;
}

Result<Page<Entry>> Loyalty::CustomerEntries(const std::string& program,
                                             const std::string& customer, const std::string& cursor,
                                             size_t limit) const {
  limit = ClampLimit(limit);
  std::optional<uint64_t> before;
  if (!cursor.empty()) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(cursor.c_str(), &end, 10);
    if (*end != '\0' || cursor[0] < '0' || cursor[0] > '9') {
      return Status::InvalidArgument("bad cursor", "bad_request");
    }
    before = v;
  }
  {
    auto view = ledger_->Read();
    RETURN_IF_ERROR(LoadProgram(*view, program).status());
    ASSIGN_OR_RETURN(std::optional<CustomerRecord> rec, LoadCustomer(*view, program, customer));
    if (!rec) return Status::NotFound("no customer " + customer, "not_found");
  }
  ASSIGN_OR_RETURN(std::vector<Entry> entries,
                   ledger_->CustomerEntries(program, customer, before, limit + 1));
  Page<Entry> page;
  if (entries.size() > limit) {
    entries.pop_back();
    page.next_cursor = std::to_string(entries.back().id);
  }
  page.items = std::move(entries);
  return page;
}

Result<Page<LotView>> Loyalty::CustomerLots(const std::string& program, const std::string& customer,
                                            const std::string& cursor, size_t limit) const {
  auto view = ledger_->Read();
  RETURN_IF_ERROR(LoadProgram(*view, program).status());
  ASSIGN_OR_RETURN(std::optional<CustomerRecord> rec, LoadCustomer(*view, program, customer));
  if (!rec) return Status::NotFound("no customer " + customer, "not_found");
  std::string prefix = LotsPrefix(program, customer);
  return ScanPage<LotView>(*view, Cf::kLots, prefix, cursor, limit,
                           [&](std::string_view k, std::string_view v) -> Result<LotView> {
                             ASSIGN_OR_RETURN(LotRecord l, DecodeLot(v));
                             uint64_t exp = DecodeU64(k.substr(prefix.size(), 8));
                             LotView out;
                             out.entry_id = DecodeU64(k.substr(prefix.size() + 8));
                             out.points = l.points;
                             out.remaining = l.remaining;
                             out.expires_at_us = exp == UINT64_MAX ? 0 : static_cast<int64_t>(exp);
                             return out;
                           });
}

Result<HoldView> Loyalty::GetHold(const std::string& program, uint64_t entry_id) const {
  auto view = ledger_->Read();
  ASSIGN_OR_RETURN(std::optional<Entry> e, internal::LoadEntry(*view, entry_id));
  ASSIGN_OR_RETURN(std::optional<HoldRecord> h, internal::LoadHold(*view, entry_id));
  if (!e || !h || e->program != program) return Status::NotFound("no hold", "unknown_hold");
  return HoldView{entry_id, *h};
}

Result<std::optional<ApiKeyRecord>> Loyalty::Authenticate(std::string_view key) const {
  Hash h = Sha256(key);
  const std::string cache_key(AsBytes(h));
  if (std::optional<ApiKeyRecord> cached = api_keys_->Get(cache_key, ledger_->ApiKeysChangedAt())) {
    return cached;
  }
  uint64_t holds = 0;
  auto view = ledger_->Read(&holds);
  ASSIGN_OR_RETURN(std::optional<std::string> id,
                   view->Get(Cf::kObjects, ObjectKey(ObjectKind::kApiKeyHash, "", cache_key)));
  if (!id) return std::optional<ApiKeyRecord>();
  ASSIGN_OR_RETURN(std::optional<std::string> v,
                   view->Get(Cf::kObjects, ObjectKey(ObjectKind::kApiKey, "", *id)));
  if (!v) return Status::DataLoss("key index names a missing key");
  ASSIGN_OR_RETURN(ApiKeyRecord rec, DecodeApiKey(*v));
  if (rec.revoked || rec.key_hash != h) return std::optional<ApiKeyRecord>();
  api_keys_->Put(cache_key, holds, ledger_->ApiKeysChangedAt(), rec);
  return std::optional<ApiKeyRecord>(std::move(rec));
}

Result<Page<Entry>> Loyalty::ListEntries(const std::string& program, std::optional<EntryType> type,
                                         const std::string& cursor, size_t limit) const {
  limit = ClampLimit(limit);
  constexpr size_t kScanRowsMax = 20000;  // a page stops here even if the filter found little
  auto view = ledger_->Read();
  std::optional<uint64_t> before;
  if (!cursor.empty()) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(cursor.c_str(), &end, 10);
    if (*end != '\0' || cursor[0] < '0' || cursor[0] > '9') {
      return Status::InvalidArgument("bad cursor", "bad_request");
    }
    before = v;
  }
  Page<Entry> page;
  if (before && *before == 0) return page;
  std::vector<uint64_t> ids;
  size_t scanned = 0;
  uint64_t last_scanned = 0;
  auto visit = [&](uint64_t id, std::optional<EntryType> t) {
    ++scanned;
    last_scanned = id;
    if (!type || t == type) ids.push_back(id);
    return ids.size() <= limit && scanned < kScanRowsMax;
  };
  Status st;
  if (!program.empty()) {
    RETURN_IF_ERROR(LoadProgram(*view, program).status());
    std::string prefix = ProgramEntriesPrefix(program);
    std::string start = before ? ProgramEntryKey(program, *before - 1) : prefix;
    RETURN_IF_ERROR(view->Scan(Cf::kProgramEntries, start, PrefixEnd(prefix), false,
                               [&](std::string_view k, std::string_view v) {
                                 auto t = v.size() == 1
                                              ? std::optional(static_cast<EntryType>(v[0]))
                                              : std::nullopt;
                                 return visit(IdFromNewestFirstKey(k), t);
                               }));
  } else {
    std::string end = before ? EntryKey(*before) : "";
    RETURN_IF_ERROR(
        view->Scan(Cf::kEntries, "", end, true, [&](std::string_view k, std::string_view v) {
          auto e = DecodeEntry(v);
          if (!e.ok()) {
            st = e.status();
            return false;
          }
          return visit(DecodeU64(k), e->type);
        }));
  }
  RETURN_IF_ERROR(st);
  if (ids.size() > limit) {
    ids.pop_back();
    page.next_cursor = std::to_string(ids.back());
  } else if (scanned >= kScanRowsMax) {
    page.next_cursor = std::to_string(last_scanned);
  }
  for (uint64_t id : ids) {
    ASSIGN_OR_RETURN(std::optional<Entry> e, internal::LoadEntry(*view, id));
    if (!e) return Status::DataLoss("index names a missing entry");
    page.items.push_back(std::move(*e));
  }
  return page;
}

}  // namespace tally
