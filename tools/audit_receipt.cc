// tally-audit verify-receipt: a receipt checked offline against a trusted public key, with an
// optional chain of signing-key rotations extending the trust to later keys.
#include <nlohmann/json.hpp>

#include "ledger/base64.h"
#include "ledger/checkpoint.h"
#include "ledger/entry.h"
#include "ledger/merkle.h"
#include "ledger/note.h"
#include "ledger/records.h"
#include "ledger/signer.h"
#include "tools/audit.h"
#include "tools/entry_json.h"

namespace tally {
namespace {

using Json = nlohmann::json;

constexpr size_t kKeyChainMax = 100;  // rotations a receipt may carry
constexpr size_t kProofHashesMax = 64;

// A receipt's fields, typed but not yet decoded: bad base64 makes a receipt invalid, while a
// missing or mistyped field makes it not a receipt at all.
struct ParsedReceipt {
  uint64_t leaf_index = 0;
  std::string entry_base64;
  std::vector<std::string> proof_base64;
  std::string checkpoint;
  std::optional<uint64_t> tree_size;
  const Json* entry_view = nullptr;  // a write response's "entry" object, if any
};

// A key in the chain: its name ("" for the first key: any name whose key id matches) and the
// tree size from which it signs (checkpoints larger than `after`).
struct ChainKey {
  std::string name;
  std::string raw;
  uint64_t after = 0;
};

Status Bad(const std::string& why) { return Status::InvalidArgument(why); }

Result<std::vector<Hash>> ProofHashes(const std::vector<std::string>& proof) {
  std::vector<Hash> out;
  for (const std::string& text : proof) {
    ASSIGN_OR_RETURN(std::string raw, Base64Decode(text));
    if (raw.size() != kHashSize) return Bad("inclusion_proof holds a hash that is not 32 bytes");
    out.emplace_back();
    std::copy(raw.begin(), raw.end(), out.back().begin());
  }
  return out;
}

// The fields of one receipt object (API.md), strictly typed.
Result<ParsedReceipt> ParseReceipt(const Json& j) {
  if (!j.is_object()) return Bad("a receipt is a JSON object");
  ParsedReceipt r;
  auto li = j.find("leaf_index");
  auto en = j.find("entry");
  auto pr = j.find("inclusion_proof");
  auto cp = j.find("checkpoint");
  if (li == j.end() || !li->is_number_unsigned()) return Bad("leaf_index: an integer is required");
  if (en == j.end() || !en->is_string()) return Bad("entry: base64 text is required");
  if (pr == j.end() || !pr->is_array() || pr->size() > kProofHashesMax) {
    return Bad("inclusion_proof: an array of base64 hashes is required");
  }
  if (cp == j.end() || !cp->is_string()) return Bad("checkpoint: the signed note is required");
  r.leaf_index = li->get<uint64_t>();
  r.entry_base64 = en->get<std::string>();
  for (const Json& h : *pr) {
    if (!h.is_string()) return Bad("inclusion_proof: an array of base64 hashes is required");
    r.proof_base64.push_back(h.get<std::string>());
  }
  r.checkpoint = cp->get<std::string>();
  auto ts = j.find("tree_size");
  if (ts != j.end()) {
    if (!ts->is_number_unsigned()) return Bad("tree_size: an integer is required");
    r.tree_size = ts->get<uint64_t>();
  }
  return r;
}

// The verifier key of the signature by `key` that the checkpoint note carries, if valid.
Result<std::string> CheckSignature(std::string_view note, const std::vector<NoteSignature>& sigs,
                                   const ChainKey& key) {
  for (const NoteSignature& s : sigs) {
    if (!key.name.empty() && s.name != key.name) continue;
    if (s.key_id != NoteKeyId(s.name, key.raw)) continue;
    RETURN_IF_ERROR(VerifyNote(note, Verifier(s.name, key.raw), nullptr));
    return VerifierKey(s.name, key.raw);
  }
  return Bad("the checkpoint carries no signature by " +
             (key.name.empty() ? "key " + Base64Encode(key.raw) : VerifierKey(key.name, key.raw)));
}

struct Included {
  std::string entry;  // the entry's canonical bytes
  Checkpoint checkpoint;
  std::vector<NoteSignature> signatures;  // not verified yet
};

// The entry and checkpoint of a receipt, once its inclusion proof holds.
Result<Included> CheckInclusion(const ParsedReceipt& r) {
  ASSIGN_OR_RETURN(std::string entry, Base64Decode(r.entry_base64));
  ASSIGN_OR_RETURN(std::vector<Hash> proof, ProofHashes(r.proof_base64));
  ASSIGN_OR_RETURN(auto note, ParseNote(r.checkpoint));
  ASSIGN_OR_RETURN(Checkpoint cp, ParseCheckpoint(note.first));
  if (r.tree_size && *r.tree_size != cp.size) return Bad("tree_size is not the checkpoint's size");
  if (r.entry_view != nullptr && r.entry_view->is_object()) {
    auto id = r.entry_view->find("id");
    if (id != r.entry_view->end() && id->is_number_unsigned() &&
        id->get<uint64_t>() != r.leaf_index) {
      return Bad("the entry's id is not leaf_index");
    }
  }
  if (r.leaf_index >= cp.size) {
    return Bad("leaf_index " + std::to_string(r.leaf_index) + " is not in a tree of size " +
               std::to_string(cp.size));
  }
  RETURN_IF_ERROR(VerifyInclusion(r.leaf_index, cp.size, LeafHash(entry), proof, cp.root));
  return Included{std::move(entry), std::move(cp), std::move(note.second)};
}

// A write response's entry view against the entry the receipt proves: every field of API.md's
// entry shape that the view holds must say what the signed bytes say, so that a view edited
// after the fact does not pass as verified. "hold" is the hold's state, which the bytes do not
// carry: it may appear only on an entry that holds points, with a state API.md names. Fields
// API.md does not define are not checked.
Status CheckEntryView(const Json& view, const Result<Entry>& decoded) {
  if (!view.is_object()) return Bad("the write response's entry is not an object");
  if (!decoded.ok()) {
    return Bad("the receipt's entry does not decode: " + decoded.status().message());
  }
  const Entry& e = *decoded;
  const Json expected = EntryJsonOf<Json>(e, std::nullopt);
  for (const char* name : {"id", "type", "program", "customer", "points", "created_at", "order_id",
                           "description", "refs", "postings"}) {
    auto it = view.find(name);
    if (it == view.end()) continue;
    auto want = expected.find(name);  // "refs" is absent on an entry without one
    if (want == expected.end() || *it != *want) {
      return Bad(std::string("the entry's \"") + name + "\" is not what the receipt's entry says");
    }
  }
  auto hold = view.find("hold");
  if (hold != view.end()) {
    auto state = hold->is_object() ? hold->find("state") : hold->end();
    const bool named = hold->is_object() && state != hold->end() &&
                       (*state == HoldStateName(HoldState::kPending) ||
                        *state == HoldStateName(HoldState::kCaptured) ||
                        *state == HoldStateName(HoldState::kVoided));
    if (!e.holds || !named) return Bad("the entry's \"hold\" is not what the receipt's entry says");
  }
  return Status::Ok();
}

// Extends the chain by one rotation receipt, signed by the chain's last key.
Status ExtendChain(const ParsedReceipt& r, std::vector<ChainKey>* chain) {
  ASSIGN_OR_RETURN(Included in, CheckInclusion(r));
  const ChainKey& head = chain->back();
  if (in.checkpoint.size <= head.after) return Bad("key_chain is not in log order");
  RETURN_IF_ERROR(CheckSignature(r.checkpoint, in.signatures, head).status());
  ASSIGN_OR_RETURN(Entry e, DecodeEntry(in.entry));
  if (e.type != EntryType::kSigningKey)
    return Bad("a key_chain receipt is not a signing_key entry");
  ASSIGN_OR_RETURN(SigningKeyRecord k, DecodeSigningKey(e.payload));
  if (k.previous_key != head.raw)
    return Bad("a key_chain entry does not replace the key before it");
  if (!IsValidKeyName(k.name)) return Bad("a key_chain entry names an invalid key");
  // Only the raw key verifies an endorsement; the name given to the Verifier is not used.
  if (!Verifier("endorsement", head.raw)
           .Verify(EndorsementMessage(k.name, k.public_key), k.endorsement)) {
    return Bad("a key_chain endorsement does not verify");
  }
  chain->push_back({k.name, k.public_key, in.checkpoint.size});
  return Status::Ok();
}

// The receipt object and its key chain, from a receipt or a write response.
Result<std::pair<ParsedReceipt, std::vector<ParsedReceipt>>> ParseDocument(const Json& doc) {
  const Json* receipt = &doc;
  const Json* entry_view = nullptr;
  if (doc.is_object() && doc.contains("receipt")) {
    receipt = &doc["receipt"];
    auto e = doc.find("entry");
    if (e != doc.end()) entry_view = &*e;
  }
  ASSIGN_OR_RETURN(ParsedReceipt r, ParseReceipt(*receipt));
  r.entry_view = entry_view;
  std::vector<ParsedReceipt> chain;
  auto kc = receipt->find("key_chain");
  if (kc != receipt->end()) {
    if (!kc->is_array() || kc->size() > kKeyChainMax) return Bad("key_chain: an array of receipts");
    for (const Json& link : *kc) {
      ASSIGN_OR_RETURN(ParsedReceipt l, ParseReceipt(link));
      chain.push_back(std::move(l));
    }
  }
  return std::make_pair(std::move(r), std::move(chain));
}

// Checks a parsed receipt; InvalidArgument says why it is not valid.
Status Check(const ParsedReceipt& r, const std::vector<ParsedReceipt>& links,
             const std::string& first_key, ReceiptCheck* out) {
  std::vector<ChainKey> chain{{"", first_key, 0}};
  for (const ParsedReceipt& link : links) RETURN_IF_ERROR(ExtendChain(link, &chain));
  ASSIGN_OR_RETURN(Included in, CheckInclusion(r));
  const Checkpoint& cp = in.checkpoint;
  // The key in force at this size: the last one whose rotation a smaller checkpoint covered.
  size_t k = 0;
  while (k + 1 < chain.size() && chain[k + 1].after < cp.size) ++k;
  ASSIGN_OR_RETURN(out->key, CheckSignature(r.checkpoint, in.signatures, chain[k]));
  const Result<Entry> e = DecodeEntry(in.entry);
  if (r.entry_view != nullptr) RETURN_IF_ERROR(CheckEntryView(*r.entry_view, e));
  out->leaf_index = r.leaf_index;
  out->tree_size = cp.size;
  out->detail = "entry " + std::to_string(r.leaf_index) +
                (e.ok() ? std::string(" (") + EntryTypeName(e->type) + ")" : "") + " is leaf " +
                std::to_string(r.leaf_index) + " of the tree of size " + std::to_string(cp.size) +
                " of " + cp.origin + ", root " + HashToHex(cp.root) + ", checkpoint signed by " +
                out->key + (k > 0 ? " (key " + std::to_string(k) + " of the chain)" : "") +
                (r.entry_view != nullptr ? "; the entry shown agrees with it" : "");
  return Status::Ok();
}

}  // namespace

Result<ReceiptCheck> VerifyReceipt(const std::string& json_text, const std::string& first_key) {
  Json doc = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Bad("the receipt is not JSON");
  ASSIGN_OR_RETURN(auto parsed, ParseDocument(doc));
  ReceiptCheck out;
  Status st = Check(parsed.first, parsed.second, first_key, &out);
  out.valid = st.ok();
  if (!st.ok()) out.detail = st.message();
  return out;
}

}  // namespace tally
