// Receipts checked the way an outside verifier would: with a verifier written here from the RFC
// 9162 and C2SP texts (not the ledger's own), OpenSSL for Ed25519, and nothing but the public key.
#include <openssl/evp.h>

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
#include "tests/test_util.h"

namespace tally {
namespace {

using Bytes = std::string;

Bytes Sha(const Bytes& data) {
  unsigned char out[32];
  unsigned int len = 0;
  REQUIRE(EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr) == 1);
  return Bytes(reinterpret_cast<char*>(out), len);
}

// RFC 9162 section 2.1.3.2, step by step.
bool VerifyInclusionFromRfc(uint64_t leaf_index, uint64_t tree_size, const Bytes& leaf,
                            const std::vector<Bytes>& path, const Bytes& root) {
  if (leaf_index >= tree_size) return false;
  uint64_t fn = leaf_index, sn = tree_size - 1;
  Bytes r = Sha(Bytes(1, '\0') + leaf);
  for (const Bytes& p : path) {
    if (sn == 0) return false;
    if ((fn & 1) == 1 || fn == sn) {
      r = Sha(Bytes(1, '\1') + p + r);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = Sha(Bytes(1, '\1') + r + p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

struct ParsedNote {
  Bytes text, name, sig;
  uint32_t key_id = 0;
};

// C2SP signed-note: text, a blank line, "— name base64(keyid || sig)" lines.
bool ParseSignedNote(const Bytes& note, ParsedNote* out) {
  size_t split = note.find("\n\n");
  if (split == Bytes::npos) return false;
  out->text = note.substr(0, split + 1);
  Bytes line = note.substr(split + 2);
  const Bytes dash = "\xE2\x80\x94 ";
  if (line.compare(0, dash.size(), dash) != 0 || line.back() != '\n') return false;
  line = line.substr(dash.size(), line.size() - dash.size() - 1);
  size_t space = line.find(' ');
  if (space == Bytes::npos) return false;
  out->name = line.substr(0, space);
  auto blob = Base64Decode(line.substr(space + 1));
  if (!blob.ok() || blob->size() != 68) return false;
  out->key_id = (uint32_t(uint8_t((*blob)[0])) << 24) | (uint32_t(uint8_t((*blob)[1])) << 16) |
                (uint32_t(uint8_t((*blob)[2])) << 8) | uint32_t(uint8_t((*blob)[3]));
  out->sig = blob->substr(4);
  return true;
}

bool Ed25519Verify(const Bytes& pub, const Bytes& msg, const Bytes& sig) {
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(pub.data()), pub.size());
  if (!key) return false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  return ok;
}

uint32_t KeyIdFromSpec(const Bytes& name, const Bytes& pub) {
  Bytes h = Sha(name + "\n" + Bytes(1, '\x01') + pub);
  return (uint32_t(uint8_t(h[0])) << 24) | (uint32_t(uint8_t(h[1])) << 16) |
         (uint32_t(uint8_t(h[2])) << 8) | uint32_t(uint8_t(h[3]));
}

// A receipt is valid under `pub` when the leaf is included in the tree of the checkpoint's size
// with the checkpoint's root, and the checkpoint is signed by pub.
bool VerifyReceiptIndependently(const Receipt& r, const Bytes& pub) {
  ParsedNote note;
  if (!ParseSignedNote(r.checkpoint, &note)) return false;
  if (note.key_id != KeyIdFromSpec(note.name, pub)) return false;
  if (!Ed25519Verify(pub, note.text, note.sig)) return false;
  // tlog-checkpoint: origin, size, base64 root.
  size_t a = note.text.find('\n'), b = note.text.find('\n', a + 1);
  if (a == Bytes::npos || b == Bytes::npos) return false;
  uint64_t size = std::stoull(note.text.substr(a + 1, b - a - 1));
  auto root = Base64Decode(note.text.substr(b + 1, note.text.find('\n', b + 1) - b - 1));
  if (!root.ok() || size != r.tree_size) return false;
  std::vector<Bytes> path;
  for (const Hash& h : r.inclusion_proof) path.emplace_back(AsBytes(h));
  return VerifyInclusionFromRfc(r.leaf_index, size, r.entry, path, *root);
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
