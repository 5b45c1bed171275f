// Receipts checked the way an outside verifier would: with a verifier written from the RFC 9162 and
// C2SP texts (tests/receipt_verifier.h, not the ledger's own), OpenSSL for Ed25519, and nothing
// but the public key.
#include <catch2/catch.hpp>
#include <set>
#include <thread>

#include "ledger/base64.h"
#include "ledger/hash.h"
#include "ledger/ledger.h"
#include "ledger/merkle.h"
#include "ledger/records.h"
#include "ledger/signer.h"
#include "tests/ledger/ledger_test_util.h"
#include "tests/receipt_verifier.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using testing::Bytes;
using testing::Ed25519Verify;
using testing::ParsedNote;
using testing::ParseSignedNote;

// The independent verifier (tests/receipt_verifier.h) applied to the ledger's Receipt.
bool VerifyReceiptIndependently(const Receipt& r, const Bytes& pub) {
  std::vector<Bytes> path;
  for (const Hash& h : r.inclusion_proof) path.emplace_back(AsBytes(h));
  return testing::VerifyReceiptBytes(r.leaf_index, r.entry, path, r.checkpoint, pub, r.tree_size);
}

std::unique_ptr<Ledger> Open(const std::string& dir) {
  LedgerOptions o;
  o.dir = dir;
  auto l = Ledger::Open(o);
  REQUIRE(l.ok());
  return std::move(l).value();
}

void AppendConcurrently(Ledger& ledger, int threads, int each, const std::string& tag) {
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < each; ++i) {
        auto r =
            ledger.Append(testing::Transfer("acme", "c" + std::to_string(i % 13), 1 + i % 5,
                                            tag + std::to_string(t) + "-" + std::to_string(i)));
        REQUIRE(r.ok());
      }
    });
  }
  for (auto& t : ts) t.join();
}

}  // namespace

TEST_CASE("Every receipt of a 1000-entry ledger verifies with only the public key", "[receipt]") {
  testing::TempDir dir;
  auto ledger = Open(dir.path());
  AppendConcurrently(*ledger, 8, 125, "k");
  REQUIRE(ledger->size() == 1000);
  auto pub = ReadPublicKeyPem(dir / "signing.pub");
  REQUIRE(pub.ok());
  std::set<uint64_t> sizes;
  for (uint64_t id = 0; id < 1000; ++id) {
    auto r = ledger->GetReceipt(id);
    REQUIRE(r.ok());
    REQUIRE(VerifyReceiptIndependently(*r, *pub));
    sizes.insert(r->tree_size);
  }
  CHECK(sizes.size() > 1);  // many commit groups, each with its own checkpoint

  auto r = ledger->GetReceipt(417);
  REQUIRE(r.ok());
  SECTION("a one-bit change to the entry fails") {
    r->entry[r->entry.size() / 2] ^= 0x01;
    CHECK_FALSE(VerifyReceiptIndependently(*r, *pub));
  }
  SECTION("a one-bit change to a proof hash fails") {
    REQUIRE_FALSE(r->inclusion_proof.empty());
    r->inclusion_proof.back()[31] ^= 0x01;
    CHECK_FALSE(VerifyReceiptIndependently(*r, *pub));
  }
  SECTION("a one-bit change to the signature fails") {
    size_t at = r->checkpoint.rfind(' ') + 10;
    r->checkpoint[at] = r->checkpoint[at] == 'A' ? 'B' : 'A';
    CHECK_FALSE(VerifyReceiptIndependently(*r, *pub));
  }
  SECTION("another key fails") {
    auto other = Signer::Generate("tally.local/ledger");
    REQUIRE(other.ok());
    CHECK_FALSE(VerifyReceiptIndependently(*r, other->public_key()));
  }
}

TEST_CASE("After a restart the tree continues and old receipts still verify", "[receipt]") {
  testing::TempDir dir;
  std::vector<Receipt> old;
  CheckpointInfo before;
  std::string key_before;
  {
    auto ledger = Open(dir.path());
    AppendConcurrently(*ledger, 4, 50, "a");
    for (uint64_t id = 0; id < ledger->size(); id += 7) old.push_back(*ledger->GetReceipt(id));
    before = ledger->LatestCheckpoint();
    key_before = ledger->signer().public_key();
  }
  auto ledger = Open(dir.path());
  CHECK(ledger->signer().public_key() == key_before);
  CHECK(ledger->size() == before.size);
  AppendConcurrently(*ledger, 4, 50, "b");
  CheckpointInfo after = ledger->LatestCheckpoint();
  CHECK(after.size == before.size + 200);
  for (const Receipt& r : old) {
    CHECK(VerifyReceiptIndependently(r, key_before));
    auto again = ledger->GetReceipt(r.leaf_index);
    REQUIRE(again.ok());
    CHECK(again->checkpoint == r.checkpoint);  // receipts are deterministic
    // Consistency from the old checkpoint to the newest.
    auto proof = ledger->GetConsistencyProof(r.tree_size, after.size);
    REQUIRE(proof.ok());
    ParsedNote note;
    REQUIRE(ParseSignedNote(r.checkpoint, &note));
    size_t b = note.text.find('\n', note.text.find('\n') + 1);
    auto old_root = Base64Decode(note.text.substr(b + 1, note.text.size() - b - 2));
    REQUIRE(old_root.ok());
    Hash h1;
    std::copy(old_root->begin(), old_root->end(), h1.begin());
    CHECK(VerifyConsistency(r.tree_size, after.size, *proof, h1, after.root).ok());
  }
}

TEST_CASE("After a key rotation receipts signed by either key verify through the chain",
          "[receipt][rotation]") {
  testing::TempDir dir;
  std::string first_key;
  Receipt before_rotation;
  {
    auto ledger = Open(dir.path());
    first_key = ledger->signer().public_key();
    AppendConcurrently(*ledger, 2, 20, "a");
    before_rotation = *ledger->GetReceipt(5);
    auto rot = ledger->RotateSigningKey();
    REQUIRE(rot.ok());
    CHECK(ledger->signer().public_key() != first_key);
    AppendConcurrently(*ledger, 2, 20, "b");
  }
  auto ledger = Open(dir.path());  // reopens with the new key
  CHECK(ledger->signer().public_key() != first_key);
  AppendConcurrently(*ledger, 2, 5, "c");
  int chained = 0;
  for (uint64_t id = 0; id < ledger->size(); ++id) {
    auto r = ledger->GetReceipt(id);
    REQUIRE(r.ok());
    // Follow the chain from the first key: each link is a signing_key entry whose receipt is
    // signed by the key in force, and whose payload names the next key.
    std::string key = first_key;
    for (const Receipt& link : r->key_chain) {
      REQUIRE(VerifyReceiptIndependently(link, key));
      auto e = DecodeEntry(link.entry);
      REQUIRE(e.ok());
      REQUIRE(e->type == EntryType::kSigningKey);
      auto rec = DecodeSigningKey(e->payload);
      REQUIRE(rec.ok());
      REQUIRE(rec->previous_key == key);
      REQUIRE(Ed25519Verify(key, EndorsementMessage(rec->name, rec->public_key), rec->endorsement));
      key = rec->public_key;
    }
    if (!r->key_chain.empty()) ++chained;
    INFO("entry " << id);
    CHECK(VerifyReceiptIndependently(*r, key));
  }
  CHECK(chained >= 50);
  CHECK(VerifyReceiptIndependently(before_rotation, first_key));
}

}  // namespace tally
