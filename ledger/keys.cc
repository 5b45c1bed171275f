#include "ledger/keys.h"

#include <limits>

#include "ledger/accounts.h"
#include "ledger/coding.h"
#include "ledger/status.h"

namespace tally {

const char* const kCfNames[kCfCount] = {
    "default",         "entries",     "checkpoints",   "tree", "balances", "customer_entries",
    "program_entries", "idempotency", "business_keys", "lots", "holds",    "objects",
    "customers",       "schedule"};

bool IsDerivedCf(Cf cf) { return cf != Cf::kMeta && cf != Cf::kEntries && cf != Cf::kCheckpoints; }

namespace {

std::string Join(std::string_view a, std::string_view b) {
  std::string k;
  k.reserve(a.size() + b.size() + 2);
  k.append(a);
  k.push_back('\0');
  k.append(b);
  k.push_back('\0');
  return k;
}

}  // namespace

std::string EntryKey(uint64_t id) { return EncodeU64(id); }
std::string CheckpointKey(uint64_t size) { return EncodeU64(size); }

std::string TreeKey(int level, uint64_t index) {
  TALLY_CHECK(level >= 0 && level < 64);
  std::string k;
  PutU8(&k, static_cast<uint8_t>(level));
  PutU64(&k, index);
  return k;
}

std::string CustomerEntriesPrefix(std::string_view program, std::string_view customer) {
  return Join(program, customer);
}

std::string CustomerEntryKey(std::string_view program, std::string_view customer, uint64_t id) {
  std::string k = CustomerEntriesPrefix(program, customer);
  PutU64(&k, ~id);
  return k;
}

std::string ProgramEntriesPrefix(std::string_view program) {
  std::string k(program);
  k.push_back('\0');
  return k;
}

std::string ProgramEntryKey(std::string_view program, uint64_t id) {
  std::string k = ProgramEntriesPrefix(program);
  PutU64(&k, ~id);
  return k;
}

uint64_t IdFromNewestFirstKey(std::string_view key) {
  TALLY_CHECK(key.size() >= 8);
  return ~DecodeU64(key.substr(key.size() - 8));
}

std::string IdempotencyKey(std::string_view actor, std::string_view key) {
  std::string k(actor);
  k.push_back('\0');
  k.append(key);
  return k;
}

std::string BusinessKey(BusinessKind kind, std::string_view program, std::string_view id) {
  std::string k;
  PutU8(&k, static_cast<uint8_t>(kind));
  k.append(program);
  k.push_back('\0');
  k.append(id);
  return k;
}

std::string LotsPrefix(std::string_view program, std::string_view customer) {
  return Join(program, customer);
}

std::string LotKey(std::string_view program, std::string_view customer, int64_t expires_at_us,
                   uint64_t lot) {
  std::string k = LotsPrefix(program, customer);
  PutU64(&k, expires_at_us == 0 ? std::numeric_limits<uint64_t>::max()
                                : static_cast<uint64_t>(expires_at_us));
  PutU64(&k, lot);
  return k;
}

std::string HoldKey(uint64_t entry_id) { return EncodeU64(entry_id); }

std::string ObjectPrefix(ObjectKind kind, std::string_view program) {
  std::string k;
  PutU8(&k, static_cast<uint8_t>(kind));
  k.append(program);
  k.push_back('\0');
  return k;
}

std::string ObjectKey(ObjectKind kind, std::string_view program, std::string_view id) {
  std::string k = ObjectPrefix(kind, program);
  k.append(id);
  return k;
}

std::string SchedulePrefix(ScheduleKind kind, std::string_view program) {
  std::string k;
  PutU8(&k, static_cast<uint8_t>(kind));
  k.append(program);
  k.push_back('\0');
  return k;
}

std::string LotExpiryKey(std::string_view program, int64_t expires_at_us, std::string_view customer,
                         uint64_t lot) {
  std::string k = SchedulePrefix(ScheduleKind::kLotExpiry, program);
  PutI64(&k, expires_at_us);
  k.append(customer);
  k.push_back('\0');
  PutU64(&k, lot);
  return k;
}

std::string HoldActivationKey(std::string_view program, int64_t until_us, uint64_t entry_id) {
  std::string k = SchedulePrefix(ScheduleKind::kHoldActivation, program);
  PutI64(&k, until_us);
  PutU64(&k, entry_id);
  return k;
}

std::string CustomerPrefix(std::string_view program) { return ProgramEntriesPrefix(program); }

std::string CustomerKey(std::string_view program, std::string_view customer) {
  std::string k = CustomerPrefix(program);
  k.append(customer);
  return k;
}

bool CustomerOfKey(Cf cf, std::string_view key, std::string_view* program,
                   std::string_view* customer) {
  switch (cf) {
    case Cf::kCustomers:
    case Cf::kLots: {  // program NUL customer, then (lots) NUL expiry lot
      size_t a = key.find('\0');
      if (a == std::string_view::npos) return false;
      size_t b = cf == Cf::kLots ? key.find('\0', a + 1) : key.size();
      if (b == std::string_view::npos) return false;
      *program = key.substr(0, a);
      *customer = key.substr(a + 1, b - a - 1);
      return true;
    }
    case Cf::kBalances: {
      AccountName name;
      if (!ParseAccount(key, &name) || name.customer.empty()) return false;
      *program = name.program;
      *customer = name.customer;
      return true;
    }
    default:
      return false;
  }
}

bool IsApiKeyObject(std::string_view key) {
  if (key.empty()) return false;
  auto kind = static_cast<ObjectKind>(static_cast<uint8_t>(key[0]));
  return kind == ObjectKind::kApiKey || kind == ObjectKind::kApiKeyHash;
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto c = static_cast<unsigned char>(end.back());
    if (c != 0xff) {
      end.back() = static_cast<char>(c + 1);
      return end;
    }
    end.pop_back();
  }
  return end;
}

}  // namespace tally
