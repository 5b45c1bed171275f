// Tampering by someone who can write the data directory but does not hold the signing key:
// adding to the log or to derived state. tally-audit verify, given the first public key, must
// find each (docs/SECURITY.md, "A dishonest operator"). audit_test.cc covers altered and
// removed bytes.
#include <rocksdb/db.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ledger/apply.h"
#include "ledger/base64.h"
#include "ledger/checkpoint.h"
#include "ledger/clock.h"
#include "ledger/coding.h"
#include "ledger/entry.h"
#include "ledger/flat_state.h"
#include "ledger/keys.h"
#include "ledger/ledger.h"
#include "ledger/loyalty.h"
#include "ledger/merkle.h"
#include "ledger/note.h"
#include "ledger/signer.h"
#include "ledger/state.h"
#include "ledger/store.h"
#include "tests/test_util.h"
#include "tools/audit.h"

namespace tally {
namespace {

using testing::TempDir;

template <typename T>
T Ok(Result<T> r) {
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return std::move(r).value();
}

// A closed data directory with a program, earns and a redemption; returns its entry count.
uint64_t WriteLedger(const std::string& data) {
  ManualClock clock(1'790'000'000'000'000);
  LedgerOptions o;
  o.dir = data;
  o.clock = &clock;
  std::unique_ptr<Ledger> ledger = Ok(Ledger::Open(o));
  Loyalty loyalty(ledger.get(), LoyaltyOptions{std::string(32, 's')});
  int n = 0;
  auto next = [&n] {
    std::string key = "idem-" + std::to_string(++n);
    return WriteContext{"till", key, Sha256(key)};
  };
  ProgramConfig acme;
  acme.id = "acme";
  acme.name = "Acme";
  Ok(loyalty.CreateProgram(next(), acme));
  for (const char* customer : {"alice", "bob", "carol"}) {
    EarnRequest earn;
    earn.customer = customer;
    earn.points = 100;
    earn.order_id = std::string("order-") + customer;
    Ok(loyalty.Earn(next(), "acme", earn));
    clock.Advance(kMicrosPerSecond);
  }
  RedeemRequest redeem;
  redeem.customer = "alice";
  redeem.points = 30;
  Ok(loyalty.Redeem(next(), "acme", redeem));
  return ledger->size();
}

// An earn of 1,000,000 points for mallory as entry `id`, well formed: it decodes like any entry.
std::string ForgedEntry(Store& store, uint64_t id) {
  Entry e = Ok(DecodeEntry(Ok(store.Get(Cf::kEntries, EntryKey(id - 1))).value()));
  e.id = id;
  e.type = EntryType::kEarn;
  e.customer = "mallory";
  e.order_id.clear();
  e.ref.reset();
  e.holds = false;
  e.lots.clear();
  e.description = "forged";
  e.payload.clear();
  e.idempotency_key = "forged-1";
  e.postings = {{"acme:customer:mallory:available", 1'000'000, 1'000'000},
                {"acme:issued", -1'000'000, -1'000'300}};
  REQUIRE(ValidateEntry(e).ok());
  return EncodeEntry(e);
}

void Put(Store& store, Cf cf, std::string_view key, const std::string& value) {
  StoreBatch b(store);
  b.Put(cf, key, value);
  REQUIRE(store.Write(b).ok());
}

VerifyResult VerifyWithFirstKey(const TempDir& t, const std::string& data) {
  return Verify(VerifyOptions{data, t / "first.pub"});
}

std::string Lines(const VerifyResult& r) {
  std::string s = r.error;
  for (const Discrepancy& d : r.discrepancies) s += "\n" + d.ToString();
  return s;
}

bool Mentions(const VerifyResult& r, std::string_view text) {
  for (const Discrepancy& d : r.discrepancies) {
    if (d.ToString().find(text) != std::string::npos) return true;
  }
  return false;
}

// A ledger written and closed, with a copy of its first public key beside it.
struct Fixture {
  TempDir t;
  std::string data = t / "data";
  uint64_t size = WriteLedger(data);
  Fixture() {
    std::filesystem::copy_file(data + "/signing.pub", t / "first.pub");
    VerifyResult clean = VerifyWithFirstKey(t, data);
    INFO(Lines(clean));
    REQUIRE(clean.exit_code == kExitClean);
    REQUIRE_FALSE(clean.compared_exactly);  // every digest of the replay matched the store's
  }
  std::unique_ptr<Store> Open() { return Ok(Store::Open(data + "/db", Store::Options{})); }
};

}  // namespace

TEST_CASE("Verify finds an entry added after the last checkpoint", "[audit][tamper]") {
  Fixture f;
  {
    auto store = f.Open();
    Put(*store, Cf::kEntries, EntryKey(f.size), ForgedEntry(*store, f.size));
  }
  VerifyResult r = VerifyWithFirstKey(f.t, f.data);
  INFO(Lines(r));
  CHECK(r.exit_code == kExitDiscrepancy);
  CHECK(r.entries == f.size + 1);
  CHECK_FALSE(r.discrepancies.empty());
}

// Verify's replay keeps idempotency and business keys only as digests with fingerprints, which
// cannot tell an earlier key's value; an entry that reuses one sends it to its exact comparison,
// whose replay names the reuse.
TEST_CASE("Verify names an added entry that reuses an idempotency key or a business key",
          "[audit][tamper]") {
  for (bool reuse_order : {false, true}) {
    INFO((reuse_order ? "business key" : "idempotency key"));
    Fixture f;
    {
      auto store = f.Open();
      Entry e = Ok(DecodeEntry(ForgedEntry(*store, f.size)));
      if (reuse_order) {
        e.order_id = "order-bob";  // bob's earn, entry 2
      } else {
        e.idempotency_key = "idem-2";  // alice's earn, entry 1
      }
      Put(*store, Cf::kEntries, EntryKey(f.size), EncodeEntry(e));
    }
    VerifyResult r = VerifyWithFirstKey(f.t, f.data);
    INFO(Lines(r));
    CHECK(r.exit_code == kExitDiscrepancy);
    CHECK(Mentions(
        r, reuse_order ? "claims a business key of entry 2" : "reuses idempotency key of entry 1"));
    CHECK(r.compared_exactly);
  }
}

// State that forgets one key of one family, as verify's digest with reads does for an earlier key
// when it loses track: a Get of it answers absent.
class Forgetting final : public StateWriter {
 public:
  Forgetting(FlatState* state, Cf cf, std::string key)
      : state_(state), cf_(cf), key_(std::move(key)) {}
  Result<std::optional<std::string>> Get(Cf cf, std::string_view key) const override {
    if (cf == cf_ && key == key_) return std::optional<std::string>();
    return state_->Get(cf, key);
  }
  Status Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
              const ScanFn& fn) const override {
    return state_->Scan(cf, start, end, reverse, fn);
  }
  void Put(Cf cf, std::string_view key, std::string_view value) override {
    state_->Put(cf, key, value);
  }
  void Delete(Cf cf, std::string_view key) override { state_->Delete(cf, key); }

 private:
  FlatState* state_;
  Cf cf_;
  std::string key_;
};

// An entry that reuses an earlier idempotency key, with all derived state rewritten to what a
// replay blind to the reuse makes. Verify's replay keeps idempotency keys only as a digest with
// fingerprints, which holds no earlier value: it loses track of the reused key, and its digest
// cannot take the key's earlier pair back, so it differs from the store's. Either sends verify
// to its exact comparison, whose replay names the reuse.
TEST_CASE("Verify names a reused key with the derived state rewritten to hide it",
          "[audit][tamper]") {
  Fixture f;
  {
    auto store = f.Open();
    Entry e = Ok(DecodeEntry(ForgedEntry(*store, f.size)));
    e.idempotency_key = "idem-2";  // alice's earn, entry 1
    Put(*store, Cf::kEntries, EntryKey(f.size), EncodeEntry(e));
    FlatState replayed;
    Forgetting view(&replayed, Cf::kIdempotency, IdempotencyKey(e.actor, e.idempotency_key));
    for (uint64_t id = 0; id <= f.size; ++id) {
      Entry each = Ok(DecodeEntry(Ok(store->Get(Cf::kEntries, EntryKey(id))).value()));
      REQUIRE(ApplyEntry(each, &view).ok());
    }
    StoreBatch b(*store);
    for (int i = 0; i < kCfCount; ++i) {
      const auto cf = static_cast<Cf>(i);
      if (!IsDerivedCf(cf) || cf == Cf::kTree) continue;
      REQUIRE(store
                  ->Scan(cf, "", "", false, nullptr,
                         [&](std::string_view k, std::string_view) {
                           b.Delete(cf, k);
                           return true;
                         })
                  .ok());
      replayed.ForEach(cf, [&](FlatState::Ref, const FlatState::Item& item) {
        if (item.present) b.Put(cf, item.key, item.value);
      });
    }
    REQUIRE(store->Write(b).ok());
  }
  VerifyResult r = VerifyWithFirstKey(f.t, f.data);
  INFO(Lines(r));
  CHECK(r.exit_code == kExitDiscrepancy);
  CHECK(Mentions(r, "reuses idempotency key of entry 1"));
  CHECK(r.compared_exactly);
}

TEST_CASE("Verify finds an entry added with a checkpoint signed by another key",
          "[audit][tamper]") {
  Fixture f;
  {
    auto store = f.Open();
    std::string forged = ForgedEntry(*store, f.size);
    // The right root of the longer log, signed under the ledger's key name by another key.
    MerkleFrontier tree;
    std::vector<NodeWrite> ignored;
    for (uint64_t id = 0; id < f.size; ++id) {
      tree.Append(LeafHash(Ok(store->Get(Cf::kEntries, EntryKey(id))).value()), &ignored);
    }
    tree.Append(LeafHash(forged), &ignored);
    std::string latest = Ok(store->Get(Cf::kMeta, kMetaCheckpoint)).value();
    auto note = Ok(ParseNote(latest));
    Checkpoint cp = Ok(ParseCheckpoint(note.first));
    cp.size = f.size + 1;
    cp.root = tree.Root();
    Signer other = Ok(Signer::Generate(note.second.front().name));
    std::string signed_cp = SignNote(FormatCheckpoint(cp), other);
    StoreBatch b(*store);
    b.Put(Cf::kEntries, EntryKey(f.size), forged);
    b.Put(Cf::kCheckpoints, CheckpointKey(f.size + 1), signed_cp);
    b.Put(Cf::kMeta, kMetaCheckpoint, signed_cp);
    REQUIRE(store->Write(b).ok());
  }
  VerifyResult r = VerifyWithFirstKey(f.t, f.data);
  INFO(Lines(r));
  CHECK(r.exit_code == kExitDiscrepancy);
  CHECK(Mentions(r, "not signed by the key in force"));
}

TEST_CASE("Verify finds an added derived key", "[audit][tamper]") {
  Fixture f;
  {
    auto store = f.Open();
    Put(*store, Cf::kBalances, "acme:customer:mallory:available", EncodeI64(1'000'000));
  }
  VerifyResult r = VerifyWithFirstKey(f.t, f.data);
  INFO(Lines(r));
  CHECK(r.exit_code == kExitDiscrepancy);
  REQUIRE(r.discrepancies.size() == 1);
  CHECK(r.discrepancies[0].cf == kCfNames[static_cast<int>(Cf::kBalances)]);
}

// The indexes of entries are compared through a set digest, then, when it differs, key by key:
// the findings are those of any other family.
TEST_CASE("Verify names an added key and a changed value in the indexes of entries",
          "[audit][tamper]") {
  for (Cf cf : {Cf::kCustomerEntries, Cf::kProgramEntries}) {
    INFO("column family " << CfName(cf));
    Fixture f;
    std::string first_key, first_value;
    {
      auto store = f.Open();
      REQUIRE(store
                  ->Scan(cf, "", "", false, nullptr,
                         [&](std::string_view k, std::string_view v) {
                           first_key = std::string(k);
                           first_value = std::string(v);
                           return false;
                         })
                  .ok());
      REQUIRE(!first_key.empty());
      Put(*store, cf, first_key + "x", first_value);  // a key of no entry
      Put(*store, cf, first_key, first_value + "x");  // another value
    }
    VerifyResult r = VerifyWithFirstKey(f.t, f.data);
    INFO(Lines(r));
    CHECK(r.exit_code == kExitDiscrepancy);
    CHECK(r.compared_exactly);
    REQUIRE(r.discrepancies.size() == 2);
    for (const Discrepancy& d : r.discrepancies) CHECK(d.cf == CfName(cf));
    CHECK(r.discrepancies[0].what == "derived value differs");
    CHECK(r.discrepancies[0].key == HexEncode(first_key));
    CHECK(r.discrepancies[1].what == "derived key not explained by the log");
    CHECK(r.discrepancies[1].key == HexEncode(first_key + "x"));
  }
}

TEST_CASE("Verify finds a deleted derived key in each column family", "[audit][tamper]") {
  int checked = 0;
  for (int i = 0; i < kCfCount; ++i) {
    const auto cf = static_cast<Cf>(i);
    if (!IsDerivedCf(cf)) continue;
    INFO("column family " << kCfNames[i]);
    Fixture f;
    std::string key;
    {
      auto store = f.Open();
      REQUIRE(store
                  ->Scan(cf, "", "", false, nullptr,
                         [&](std::string_view k, std::string_view) {
                           key = std::string(k);
                           return false;
                         })
                  .ok());
      if (key.empty()) continue;  // nothing of this kind in the fixture's ledger
      StoreBatch b(*store);
      b.Delete(cf, key);
      REQUIRE(store->Write(b).ok());
    }
    VerifyResult r = VerifyWithFirstKey(f.t, f.data);
    INFO(Lines(r));
    CHECK(r.exit_code == kExitDiscrepancy);
    REQUIRE(r.discrepancies.size() == 1);
    CHECK(r.discrepancies[0].what == "derived key missing");
    CHECK(r.discrepancies[0].cf == kCfNames[i]);
    CHECK(r.discrepancies[0].key == HexEncode(key));
    ++checked;
  }
  CHECK(checked >= 8);
}

// A range deletion, which Tally never writes (its serving reads skip range tombstones), written
// into the log with RocksDB itself: verify reads with RocksDB's full semantics, so the entries it
// hides are missing.
TEST_CASE("Verify finds entries hidden by a range deletion", "[audit][tamper]") {
  Fixture f;
  REQUIRE(f.size >= 4);
  {
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (int i = 0; i < kCfCount; ++i)
      cfs.emplace_back(kCfNames[i], rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::DBOptions(), f.data + "/db", cfs, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    const std::string from = EntryKey(1), to = EntryKey(3);
    REQUIRE(db->DeleteRange(wo, handles[static_cast<int>(Cf::kEntries)], from, to).ok());
    for (auto* h : handles) REQUIRE(db->DestroyColumnFamilyHandle(h).ok());
    REQUIRE(db->Close().ok());
  }
  VerifyResult r = VerifyWithFirstKey(f.t, f.data);
  INFO(Lines(r));
  CHECK(r.exit_code == kExitDiscrepancy);
  CHECK(r.entries == f.size - 2);
  CHECK(Mentions(r, "entry missing or out of order [cf entries]"));
}

}  // namespace tally
