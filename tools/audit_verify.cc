// tally-audit verify. Two threads read the same snapshot: the second reads the log, rehashes it
// into its own Merkle tree and decodes every entry for the first, which replays them into fresh
// derived state (Replayer), and checks checkpoint signatures while the replay is behind; the
// second then checks every stored checkpoint against its tree and the signing-key chain, and
// compares the tree column family with it. Then both compare the other derived column families
// with the replayed state, taking them one at a time (CompareDerivedCf; StoredMatchesDigest for
// the four kept as digests, kDigestCfs).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <memory>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ledger/base64.h"
#include "ledger/checkpoint.h"
#include "ledger/coding.h"
#include "ledger/entry.h"
#include "ledger/keys.h"
#include "ledger/merkle.h"
#include "ledger/note.h"
#include "ledger/rebuild.h"
#include "ledger/records.h"
#include "ledger/set_digest.h"
#include "ledger/signer.h"
#include "ledger/tree_store.h"
#include "tools/audit.h"
#include "tools/audit_internal.h"
#include "tools/bounded_queue.h"

namespace tally {
namespace {

using SteadyClock = std::chrono::steady_clock;

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// A key checkpoints may be signed with: the raw Ed25519 key and the signed-note key name its
// rotation record gives ("" for the first key, whose name is not recorded: any name whose key
// id matches the key).
struct TrustedKey {
  std::string name;
  std::string raw;
  bool operator==(const TrustedKey&) const = default;
};

struct StoredCheckpoint {
  uint64_t size = 0;  // from the column family key
  std::string note;
  std::optional<Hash> log_root;  // the rebuilt root at `size`, if the log is that long
  // Its signature checked ahead, under the given key as the first key (CheckSignatureAhead).
  std::optional<Status> signature_ahead;
};

// The Verifier last asked for: runs of checkpoints are signed by one key, and making a Verifier
// (OpenSSL's import of the key) costs about a fifth of checking one signature.
class VerifierCache {
 public:
  const Verifier& Get(const std::string& name, const std::string& raw) {
    if (!last_ || last_->name() != name || last_->public_key() != raw) last_.emplace(name, raw);
    return *last_;
  }

 private:
  std::optional<Verifier> last_;
};

struct Rotation {
  uint64_t leaf = 0;  // position of the signing_key entry in the log
  SigningKeyRecord record;
};

// What tests ask of a run (audit_internal.h): signatures all checked ahead, a fault injected.
struct RunHooks {
  bool all_signatures_ahead = false;
  std::optional<audit_internal::VerifyFault> fault;
  bool FailsAt(audit_internal::VerifyFault where) const { return fault == where; }
};

constexpr const char* kFailedInside = "failed_inside";  // Status reason: verify's own failure

// Memory running out (or any other exception) in either thread is turned into an error, so that
// verify exits 2 with a message instead of ending by std::terminate.
Status FromException(std::string_view where) {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted("out of memory in " + std::string(where), kFailedInside);
  } catch (const std::exception& e) {
    return Status::Internal(std::string(where) + " failed: " + e.what(), kFailedInside);
  }
}

// Decoded entries, handed from the thread that reads the log to the thread that replays it, a
// batch at a time; at most kBatches wait, so the log is never held in memory whole.
struct EntryItem {
  std::string key;
  Status decoded;  // DecodeEntryInto's result; `entry` holds the entry only if OK
  Entry entry;
};
using EntryBatch = std::vector<EntryItem>;
using EntryChannel = BoundedQueue<EntryBatch>;
constexpr size_t kBatchEntries = 128;
constexpr size_t kBatches = 64;

// Batches the replay is done with, handed back to the log thread, which decodes the next entries
// into them: their strings and vectors keep their memory, so that decoding a log allocates
// nothing per entry and the replay frees nothing. At most kBatches + 2 batches ever exist.
class SpareBatches {
 public:
  void Put(EntryBatch batch) {
    std::lock_guard lock(mu_);
    spares_.push_back(std::move(batch));
  }
  // A batch to fill: a spare (full of stale entries, overwritten in place) or a new one.
  EntryBatch Take() {
    {
      std::lock_guard lock(mu_);
      if (!spares_.empty()) {
        EntryBatch b = std::move(spares_.back());
        spares_.pop_back();
        return b;
      }
    }
    EntryBatch b;
    b.reserve(kBatchEntries);
    return b;
  }

 private:
  std::mutex mu_;
  std::vector<EntryBatch> spares_;
};

// OK iff the note carries a valid signature by `key` (by its name, if it has one).
Status VerifySignature(std::string_view note, const std::vector<NoteSignature>& sigs,
                       const TrustedKey& key, VerifierCache* verifiers) {
  for (const NoteSignature& s : sigs) {
    if (!key.name.empty() && s.name != key.name) continue;
    if (s.key_id != NoteKeyId(s.name, key.raw)) continue;
    return VerifyNote(note, verifiers->Get(s.name, key.raw), nullptr);
  }
  return Status::InvalidArgument("no signature line by the key");
}

// Checkpoint signatures checked ahead of CheckChain, under the given key taken as the first key
// (what CheckChain asks of every checkpoint of a log whose key never rotated), by whichever
// thread would otherwise wait: the log thread while the replay is behind (the channel full),
// the replay thread while the log thread is behind (the channel empty). Each checkpoint is
// claimed by one thread; Finish stops the claims and waits for those in flight.
class SignaturesAhead {
 public:
  explicit SignaturesAhead(TrustedKey key) : key_(std::move(key)) {}

  // What the signatures are checked under: the given key, as first key.
  const TrustedKey& key() const { return key_; }

  // Opens the work on `checkpoints` (the log thread, once they are loaded); from here on only
  // their log_root may change, and only signature_ahead is written here.
  void Start(std::vector<StoredCheckpoint>* checkpoints) {
    checkpoints_ = checkpoints;
    done_ = std::make_unique<std::atomic<bool>[]>(checkpoints->size());
    started_.store(true, std::memory_order_release);
  }

  // Checks one more signature; false once none is left to claim (or before Start).
  bool CheckOne(VerifierCache* verifiers) {
    if (!started_.load(std::memory_order_acquire)) return false;
    const size_t i = next_.fetch_add(1);
    if (i >= checkpoints_->size()) return false;
    // Marked done however the check ends, so that Finish never waits for ever.
    struct MarkDone {
      std::atomic<bool>& done;
      ~MarkDone() { done.store(true, std::memory_order_release); }
    } mark{done_[i]};
    StoredCheckpoint& c = (*checkpoints_)[i];
    auto parsed = ParseNote(c.note);
    if (parsed.ok()) c.signature_ahead = VerifySignature(c.note, parsed->second, key_, verifiers);
    return true;
  }

  // No more claims; waits for the checks in flight (the log thread, before CheckChain). Then
  // every signature_ahead is final.
  void Finish() {
    if (!started_.load(std::memory_order_acquire)) return;
    const size_t claimed = std::min(next_.exchange(checkpoints_->size()), checkpoints_->size());
    for (size_t i = 0; i < claimed; ++i) {
      while (!done_[i].load(std::memory_order_acquire)) std::this_thread::yield();
    }
  }

 private:
  std::atomic<bool> started_{false};
  std::vector<StoredCheckpoint>* checkpoints_ = nullptr;
  const TrustedKey key_;
  std::atomic<size_t> next_{0};
  std::unique_ptr<std::atomic<bool>[]> done_;
};

// The second thread's work and findings.
struct LogPass {
  EntryChannel* channel = nullptr;            // where the decoded entries go, for the replay
  SpareBatches* spares = nullptr;             // batches to decode into, back from the replay
  SignaturesAhead* ahead = nullptr;           // shared with the replay thread
  const RunHooks* hooks = nullptr;            // what tests ask of the run
  std::vector<StoredCheckpoint> checkpoints;  // ascending size
  std::vector<Rotation> rotations;            // log order
  int lowest_tree_level = 0;                  // what the store keeps of the tree (StoredTreeLevels)
  MemoryNodeStore nodes;  // the rebuilt tree's complete nodes from lowest_tree_level up
  MerkleFrontier frontier;
  std::vector<Discrepancy> found;
  std::vector<std::string> keys;  // verifier keys of the chain, first key first
  VerifierCache verifiers;        // the log thread's, for checkpoint signatures
};

Discrepancy At(Cf cf, std::string_view key, std::optional<uint64_t> entry, std::string what,
               std::string expected, std::string found) {
  Discrepancy d;
  d.what = std::move(what);
  d.cf = CfName(cf);
  d.key = HexEncode(key);
  d.entry_id = entry;
  d.expected = std::move(expected);
  d.found = std::move(found);
  return d;
}

Discrepancy AtCheckpoint(std::string what, uint64_t size, std::string expected = {},
                         std::string found = {}) {
  return At(Cf::kCheckpoints, CheckpointKey(size), std::nullopt, std::move(what),
            std::move(expected), std::move(found));
}

Discrepancy AtEntry(std::string what, uint64_t id, std::string expected = {},
                    std::string found = {}) {
  return At(Cf::kEntries, EntryKey(id), id, std::move(what), std::move(expected), std::move(found));
}

Discrepancy AtMeta(std::string what, std::string_view key, std::string expected = {},
                   std::string found = {}) {
  return At(Cf::kMeta, key, std::nullopt, std::move(what), std::move(expected), std::move(found));
}

Status LoadCheckpoints(const Store& store, const Snapshot* snap, LogPass* pass) {
  return store.Scan(Cf::kCheckpoints, "", "", false, snap,
                    [&](std::string_view k, std::string_view v) {
                      if (k.size() == 8) {
                        pass->checkpoints.push_back({DecodeU64(k), std::string(v), {}, {}});
                      } else {
                        pass->found.push_back(At(Cf::kCheckpoints, k, std::nullopt,
                                                 "checkpoint key is not an 8-byte size", "", ""));
                      }
                      return true;
                    });
}

// Records a signing_key entry of the log (the replay reports entries that do not decode).
void NoteRotation(const Entry& e, uint64_t leaf, LogPass* pass) {
  if (e.type != EntryType::kSigningKey) return;
  auto record = DecodeSigningKey(e.payload);
  if (!record.ok()) {
    pass->found.push_back(
        AtEntry("signing key record does not decode: " + record.status().message(), leaf));
    return;
  }
  pass->rotations.push_back({leaf, std::move(record).value()});
}

// Rehashes the log, keeping every node, and notes the root at each checkpointed size; decodes
// every entry for the replay.
Status HashLog(const Store& store, const Snapshot* snap, LogPass* pass) {
  auto& cps = pass->checkpoints;
  size_t next = 0;
  for (; next < cps.size() && cps[next].size == 0; ++next) cps[next].log_root = EmptyTreeRoot();
  std::vector<NodeWrite> writes;
  EntryBatch batch = pass->spares->Take();
  size_t n = 0;  // entries of this batch so far (a spare holds stale ones beyond)
  auto hand_over = [&] {
    batch.resize(n);  // only the last batch can be short
    pass->channel->Push(std::move(batch),
                        [pass] { return pass->ahead->CheckOne(&pass->verifiers); });
    batch = pass->spares->Take();
    n = 0;
  };
  Status st =
      store.Scan(Cf::kEntries, "", "", false, snap, [&](std::string_view k, std::string_view v) {
        if (pass->hooks->FailsAt(audit_internal::VerifyFault::kLogThread)) throw std::bad_alloc();
        uint64_t leaf = pass->frontier.size();
        writes.clear();
        pass->frontier.Append(LeafHash(v), &writes);
        for (const NodeWrite& w : writes) {
          if (w.level >= pass->lowest_tree_level) pass->nodes.Put(w);
        }
        for (; next < cps.size() && cps[next].size == pass->frontier.size(); ++next) {
          cps[next].log_root = pass->frontier.Root();
        }
        if (n == batch.size()) batch.emplace_back();
        EntryItem& item = batch[n++];
        item.key.assign(k);
        item.decoded = DecodeEntryInto(v, &item.entry);
        if (item.decoded.ok()) NoteRotation(item.entry, leaf, pass);
        if (n == kBatchEntries) hand_over();
        return true;
      });
  if (n > 0) hand_over();
  return st;
}

std::string Signers(const std::vector<NoteSignature>& sigs) {
  std::string s;
  for (const NoteSignature& sig : sigs) {
    char id[9];
    std::snprintf(id, sizeof(id), "%08x", sig.key_id);
    s += (s.empty() ? "" : ", ") + sig.name + "+" + id;
  }
  return s;
}

// The verifier key, or for the first key (whose name the log does not record) the raw key.
std::string Describe(const TrustedKey& key) {
  return key.name.empty() ? "key " + Base64Encode(key.raw) : VerifierKey(key.name, key.raw);
}

// Checks one stored checkpoint on its own; returns it parsed, or nullopt if it does not parse.
// The signature checked ahead is taken when `key` is the one it was checked under.
std::optional<Checkpoint> CheckCheckpoint(const StoredCheckpoint& c, const TrustedKey& key,
                                          const TrustedKey& ahead_key, std::string* origin,
                                          VerifierCache* verifiers,
                                          std::vector<Discrepancy>* found) {
  auto parsed = ParseNote(c.note);
  if (!parsed.ok()) {
    found->push_back(
        AtCheckpoint("checkpoint note does not parse: " + parsed.status().message(), c.size));
    return std::nullopt;
  }
  auto cp = ParseCheckpoint(parsed->first);
  if (!cp.ok()) {
    found->push_back(AtCheckpoint("checkpoint does not parse: " + cp.status().message(), c.size));
    return std::nullopt;
  }
  if (cp->size != c.size) {
    found->push_back(AtCheckpoint("checkpoint size differs from its key", c.size,
                                  std::to_string(c.size), std::to_string(cp->size)));
  }
  if (origin->empty()) *origin = cp->origin;
  if (cp->origin != *origin) {
    found->push_back(AtCheckpoint("checkpoint origin differs", c.size, *origin, cp->origin));
  }
  if (!c.log_root) {
    found->push_back(AtCheckpoint("checkpoint is beyond the end of the log", c.size));
  } else if (cp->root != *c.log_root) {
    found->push_back(AtCheckpoint("checkpoint root is not the log's root at its size", c.size,
                                  HashToHex(*c.log_root), HashToHex(cp->root)));
  }
  const bool ahead = c.signature_ahead && key == ahead_key;
  Status sig = ahead ? *c.signature_ahead : VerifySignature(c.note, parsed->second, key, verifiers);
  if (!sig.ok()) {
    found->push_back(AtCheckpoint("checkpoint is not signed by the key in force: " + sig.message(),
                                  c.size, Describe(key), Signers(parsed->second)));
  }
  return std::move(cp).value();
}

// RFC 9162 consistency of two successive checkpoints. A consistency proof computed from the
// rebuilt log verifies exactly when both roots are the log's roots at their sizes (verifying it
// recomputes those two roots from it), so with the whole log at hand the roots decide and no proof
// is built. CheckCheckpoint reports each root that is not the log's; this names the pair.
void CheckConsistency(const Checkpoint& older, const std::optional<Hash>& older_log_root,
                      const Checkpoint& newer, const std::optional<Hash>& newer_log_root,
                      LogPass* pass) {
  if (older.size == 0 || !older_log_root || !newer_log_root) return;
  if (older.root == *older_log_root && newer.root == *newer_log_root) return;
  pass->found.push_back(AtCheckpoint("checkpoint is not consistent with the checkpoint of size " +
                                         std::to_string(older.size) + ": " +
                                         (older.root != *older_log_root ? "that" : "this") +
                                         " checkpoint's root is not the log's",
                                     newer.size));
}

// Checks that a rotation is endorsed by the chain's head, then makes its key the head.
void LinkRotation(const Rotation& rot, TrustedKey* head, LogPass* pass) {
  const SigningKeyRecord& r = rot.record;
  bool named = IsValidKeyName(r.name);
  if (!named) pass->found.push_back(AtEntry("signing key name is not valid", rot.leaf));
  if (r.previous_key != head->raw) {
    pass->found.push_back(AtEntry("signing key does not replace the key in force", rot.leaf,
                                  HexEncode(head->raw), HexEncode(r.previous_key)));
  } else {
    // Only the raw key verifies an endorsement; the name given to the Verifier is not used.
    Verifier previous("endorsement", head->raw);
    if (!previous.Verify(EndorsementMessage(r.name, r.public_key), r.endorsement)) {
      pass->found.push_back(AtEntry("signing key endorsement does not verify", rot.leaf));
    }
  }
  // Follow the log's chain even past a broken link, so that one fault is reported once.
  *head = TrustedKey{named ? r.name : "", r.public_key};
  pass->keys.push_back(named ? VerifierKey(r.name, r.public_key) : HexEncode(r.public_key));
}

// The first key of the chain. An explicit --public-key is the first key. DIR/signing.pub is
// the current key: the first one, or the latest of the chain, whose first key is then the one
// the first rotation replaced.
TrustedKey FirstKey(const std::string& given, bool explicit_key, LogPass* pass) {
  const auto& rots = pass->rotations;
  if (explicit_key || rots.empty() || rots.front().record.previous_key == given) {
    return TrustedKey{"", given};
  }
  if (rots.back().record.public_key == given) {
    return TrustedKey{"", rots.front().record.previous_key};
  }
  pass->found.push_back(AtEntry("signing.pub is neither the first nor the latest key of the log",
                                rots.back().leaf, HexEncode(rots.back().record.public_key),
                                HexEncode(given)));
  return TrustedKey{"", given};
}

// Walks checkpoints and rotations in log order. The checkpoint that first covers a rotation
// entry is signed by the key it replaces; later checkpoints by the new key.
void CheckChain(const TrustedKey& first, LogPass* pass) {
  pass->keys.push_back(Describe(first));
  TrustedKey head = first, signing = first;
  bool rotated = false;
  size_t next_rotation = 0;
  std::string origin;
  std::optional<Checkpoint> previous;
  std::optional<Hash> previous_log_root;
  for (const StoredCheckpoint& c : pass->checkpoints) {
    for (; next_rotation < pass->rotations.size() && pass->rotations[next_rotation].leaf < c.size;
         ++next_rotation) {
      LinkRotation(pass->rotations[next_rotation], &head, pass);
      rotated = true;
    }
    std::optional<Checkpoint> cp =
        CheckCheckpoint(c, signing, pass->ahead->key(), &origin, &pass->verifiers, &pass->found);
    if (cp && previous) CheckConsistency(*previous, previous_log_root, *cp, c.log_root, pass);
    if (cp) {
      previous = std::move(cp);
      previous_log_root = c.log_root;
    }
    if (rotated) signing = head;
    rotated = false;
  }
  for (; next_rotation < pass->rotations.size(); ++next_rotation) {
    LinkRotation(pass->rotations[next_rotation], &head, pass);
  }
}

// The default column family holds the latest checkpoint: the stored one of the full log (and,
// replicated, the stream position and writer id, which the log does not determine).
Status CheckMeta(const Store& store, const Snapshot* snap, LogPass* pass) {
  std::optional<std::string> latest;
  RETURN_IF_ERROR(
      store.Scan(Cf::kMeta, "", "", false, snap, [&](std::string_view k, std::string_view v) {
        if (k == kMetaCheckpoint) {
          latest = std::string(v);
        } else if (k != kMetaFormat && k != kMetaStreamSeq && k != kMetaWriterId) {
          pass->found.push_back(AtMeta("unknown key in the default column family", k));
        }
        return true;
      }));
  uint64_t size = pass->frontier.size();
  const StoredCheckpoint* full = nullptr;
  for (const StoredCheckpoint& c : pass->checkpoints) {
    if (c.size == size) full = &c;
  }
  if (size > 0 && full == nullptr) {
    pass->found.push_back(AtCheckpoint("no stored checkpoint covers the whole log", size));
  }
  if (!latest) {
    if (size > 0) pass->found.push_back(AtMeta("latest checkpoint is missing", kMetaCheckpoint));
  } else if (full == nullptr || *latest != full->note) {
    pass->found.push_back(AtMeta("latest checkpoint is not the checkpoint of the whole log (size " +
                                     std::to_string(size) + ")",
                                 kMetaCheckpoint, full ? full->note : "a checkpoint of that size",
                                 *latest));
  }
  return Status::Ok();
}

Status RunLogPass(const Store& store, const Snapshot* snap, const std::string& key,
                  bool explicit_key, LogPass* pass) {
  Status st = LoadCheckpoints(store, snap, pass);
  if (st.ok()) {
    pass->ahead->Start(&pass->checkpoints);
    st = HashLog(store, snap, pass);
  }
  pass->channel->Close();  // the replay ends here, whether or not the log could be read
  if (pass->hooks->all_signatures_ahead) {
    while (pass->ahead->CheckOne(&pass->verifiers)) {
    }
  }
  pass->ahead->Finish();
  RETURN_IF_ERROR(st);
  CheckChain(FirstKey(key, explicit_key, pass), pass);
  return CheckMeta(store, snap, pass);
}

// Names the entry a derived key belongs to where the key says it: a leaf hash of the tree, a
// hold, or a customer's or program's index of entries (which keep ~id at their end).
void NameEntries(std::vector<Discrepancy>* found) {
  for (Discrepancy& d : *found) {
    if (d.entry_id || d.key.size() < 16) continue;
    uint64_t tail = std::strtoull(d.key.substr(d.key.size() - 16).c_str(), nullptr, 16);
    if (d.cf == CfName(Cf::kTree) && d.key.size() == 18 && d.key.starts_with("00")) {
      d.entry_id = tail;
    } else if (d.cf == CfName(Cf::kHolds) && d.key.size() == 16) {
      d.entry_id = tail;
    } else if (d.cf == CfName(Cf::kCustomerEntries) || d.cf == CfName(Cf::kProgramEntries)) {
      d.entry_id = ~tail;
    }
  }
}

// The derived column families the replay rebuilds into its FlatState: all but the tree, which the
// log thread rehashes.
const std::vector<Cf>& ReplayedCfs() {
  static const std::vector<Cf> cfs = [] {
    std::vector<Cf> out;
    for (int i = 0; i < kCfCount; ++i) {
      const auto cf = static_cast<Cf>(i);
      if (IsDerivedCf(cf) && cf != Cf::kTree) out.push_back(cf);
    }
    return out;
  }();
  return cfs;
}

// Room in the replay's tables for as many keys as the store holds, so that they do not regrow
// (rehashing, and touching fresh memory at every doubling) as the replay fills them.
void ReserveAsStored(const Store& store, FlatState* state) {
  for (Cf cf : ReplayedCfs()) state->Reserve(cf, store.EstimateKeys(cf));
}

uint64_t CountDerivedKeys(const FlatState& state, uint64_t tree_size, int lowest_tree_level) {
  uint64_t n = 0;
  for (Cf cf : ReplayedCfs()) n += state.size(cf);
  for (int level = lowest_tree_level; level < 64 && (tree_size >> level) > 0; ++level) {
    n += tree_size >> level;
  }
  return n;
}

// The lowest level the tree column family holds: what the storage format key says (format 1, no
// key: every level; format 2: from kTreeStoredFromLevel), checked against the tree itself, whose
// first key is below kTreeStoredFromLevel only in format 1. A key that is not a known format or
// disagrees with the tree is a discrepancy, and the tree decides.
Result<int> StoredTreeLevels(const Store& store, const Snapshot* snap,
                             std::vector<Discrepancy>* found) {
  std::optional<int> first_level;
  RETURN_IF_ERROR(
      store.Scan(Cf::kTree, "", "", false, snap, [&](std::string_view k, std::string_view) {
        if (!k.empty()) first_level = static_cast<uint8_t>(k[0]);
        return false;
      }));
  std::optional<int> by_tree;
  if (first_level) by_tree = *first_level < kTreeStoredFromLevel ? 0 : kTreeStoredFromLevel;
  ASSIGN_OR_RETURN(std::optional<std::string> key, store.Get(Cf::kMeta, kMetaFormat, snap));
  Result<uint64_t> format = ParseStorageFormat(key);
  if (!format.ok()) {
    found->push_back(AtMeta(
        "storage format is not one this build reads: " + format.status().message(), kMetaFormat,
        "1 to " + std::to_string(kStorageFormat), key ? HexEncode(*key) : "nothing"));
    return by_tree.value_or(kTreeStoredFromLevel);
  }
  const int by_key = LowestStoredTreeLevel(*format);
  if (by_tree && *by_tree != by_key) {
    found->push_back(AtMeta("storage format disagrees with the tree column family", kMetaFormat,
                            *by_tree == 0 ? "format 1 (no key): the tree keeps level 0"
                                          : "format 2: the tree keeps no level below " +
                                                std::to_string(kTreeStoredFromLevel),
                            key ? HexEncode(*key) : "nothing"));
    return *by_tree;
  }
  return by_key;
}

// The families the replay keeps only a set digest of (FlatState::KeepOnlyDigest), which the
// compare checks against the stored family in one scan with no look-ups: the indexes of entries,
// which the replay only writes, each key once (each names its entry); and idempotency and business
// keys, which it reads only to find a key new (or, for idempotency, the key of the entry just
// before), and so follows with a fingerprint of each key and the last pair. Together they are
// four of the six derived keys each earn adds: at 5M entries, about 1.1 GB of records and
// index the replay does not make. If a digest differs from the store's, or lost track of a read,
// the derived state is compared again exactly (CompareExactly), so that findings name their keys
// (docs/audit.md).
struct DigestCf {
  Cf cf;
  bool reads;
};
constexpr DigestCf kDigestCfs[] = {{Cf::kCustomerEntries, false},
                                   {Cf::kProgramEntries, false},
                                   {Cf::kIdempotency, true},
                                   {Cf::kBusinessKeys, true}};

// The derived column families (all but the tree) still to compare, largest first (by the memory
// their replayed records take, or the bytes a digest was made of: what comparing them costs), so
// that the last one taken, which one thread compares while the other has nothing left, is a
// small one; either thread takes the next one when it has nothing else to do.
class CompareQueue {
 public:
  explicit CompareQueue(const FlatState& state)
      : state_(state), cfs_(ReplayedCfs()), digest_differs_(kCfCount) {
    std::stable_sort(cfs_.begin(), cfs_.end(),
                     [&](Cf a, Cf b) { return state.record_bytes(a) > state.record_bytes(b); });
  }
  // Compares column families until none is left; each one's findings go to found[cf].
  Status Drain(const Store& store, const Snapshot* snap,
               std::vector<std::vector<Discrepancy>>* found) {
    for (size_t i = next_++; i < cfs_.size(); i = next_++) {
      Cf cf = cfs_[i];
      if (const SetDigest* digest = state_.digest(cf)) {
        ASSIGN_OR_RETURN(const bool same, StoredMatchesDigest(store, snap, cf, *digest));
        digest_differs_[static_cast<size_t>(cf)] = !same;  // each family's by one thread
        continue;
      }
      RETURN_IF_ERROR(
          CompareDerivedCf(store, snap, cf, state_, &(*found)[static_cast<size_t>(cf)]));
    }
    return Status::Ok();
  }
  // The families whose digest differs from the store's (once both threads are done).
  std::vector<Cf> DigestsDiffering() const {
    std::vector<Cf> out;
    for (int i = 0; i < kCfCount; ++i) {
      if (digest_differs_[static_cast<size_t>(i)]) out.push_back(static_cast<Cf>(i));
    }
    return out;
  }

 private:
  const FlatState& state_;
  std::vector<Cf> cfs_;
  std::atomic<size_t> next_{0};
  std::vector<char> digest_differs_;  // by column family
};

// The derived state compared exactly, as if no family were kept as a digest: the log replayed
// once more, on this thread, into state that keeps every family's records (what that replay finds
// goes to `replay_found`), and every derived column family but the tree compared key by key (into
// found[cf]); `derived_keys` is then counted from it. Run only when a digest differs from the
// store's or lost track of a read, so a clean ledger never pays for it. `differing`: the families
// whose digest differed; unless a digest lost track, each of them must show a difference here, and
// one that does not is reported all the same, never passed over.
Status CompareExactly(const Store& store, const Snapshot* snap, const std::vector<Cf>& differing,
                      bool lost_track, uint64_t tree_size, int lowest_tree_level,
                      std::vector<Discrepancy>* replay_found,
                      std::vector<std::vector<Discrepancy>>* found, uint64_t* derived_keys) {
  RebuildResult again;
  ReserveAsStored(store, &again.state);
  Replayer replayer(&again, replay_found);
  Entry entry;
  RETURN_IF_ERROR(
      store.Scan(Cf::kEntries, "", "", false, snap, [&](std::string_view k, std::string_view v) {
        replayer.Apply(k, DecodeEntryInto(v, &entry), entry);
        return true;
      }));
  for (Cf cf : ReplayedCfs()) {
    RETURN_IF_ERROR(
        CompareDerivedCf(store, snap, cf, again.state, &(*found)[static_cast<size_t>(cf)]));
  }
  for (Cf cf : differing) {
    std::vector<Discrepancy>& cf_found = (*found)[static_cast<size_t>(cf)];
    if (lost_track || !cf_found.empty()) continue;
    cf_found.push_back(At(cf, "", std::nullopt,
                          "column family differs from the replay's set digest, though every key "
                          "and value matches",
                          "", ""));
  }
  *derived_keys = CountDerivedKeys(again.state, tree_size, lowest_tree_level);
  return Status::Ok();
}

// Two threads over one snapshot. The other reads the log, rehashes it, decodes each entry and
// hands it over; checks checkpoints and keys; and compares the tree column family with its tree.
// This one replays the decoded entries into fresh derived state. Then both compare the other
// derived column families with the replayed state. An exception in either thread ends its work
// with an error and releases the other: the log thread closes the channel, the replay abandons
// it; the compare runs only after a complete replay.
Status RunBoth(const Store& store, const Snapshot* snap, const std::string& key, bool explicit_key,
               const RunHooks& hooks, VerifyResult* r) {
  using audit_internal::VerifyFault;
  std::vector<std::vector<Discrepancy>> found(kCfCount);
  ASSIGN_OR_RETURN(const int lowest_tree_level,
                   StoredTreeLevels(store, snap, &found[static_cast<size_t>(Cf::kMeta)]));
  EntryChannel channel(kBatches);
  SignaturesAhead ahead(TrustedKey{"", key});
  SpareBatches spares;
  LogPass pass;
  pass.ahead = &ahead;
  pass.spares = &spares;
  pass.hooks = &hooks;
  pass.channel = &channel;
  pass.lowest_tree_level = lowest_tree_level;
  RebuildResult rebuilt;
  std::optional<CompareQueue> queue;
  std::latch rebuilt_latch(1);
  // Where both threads end: comparing column families until none is left, once the replay is
  // complete.
  auto drain = [&]() -> Status {
    try {
      if (!queue) return Status::Ok();
      if (hooks.FailsAt(VerifyFault::kCompare)) throw std::bad_alloc();
      return queue->Drain(store, snap, &found);
    } catch (...) {
      return FromException("the compare");
    }
  };
  Status log_status, log_compare_status;
  std::thread log_thread([&] {
    auto start = SteadyClock::now();
    try {
      log_status = RunLogPass(store, snap, key, explicit_key, &pass);
      if (log_status.ok()) {
        log_status = CompareTree(store, snap, pass.nodes, pass.frontier.size(), lowest_tree_level,
                                 &found[static_cast<size_t>(Cf::kTree)]);
      }
    } catch (...) {
      log_status = FromException("the log thread");
      channel.Close();
    }
    r->log_seconds = SecondsSince(start);
    rebuilt_latch.wait();
    log_compare_status = drain();
  });
  auto start = SteadyClock::now();
  Status replay_status;
  try {
    // The families kept as digests (kDigestCfs), under a key made for this run.
    const SetDigest digest = SetDigest::WithRandomKey();
    for (const DigestCf& d : kDigestCfs)
      rebuilt.state.KeepOnlyDigest(d.cf, digest.Empty(), d.reads);
    ReserveAsStored(store, &rebuilt.state);
    Replayer replayer(&rebuilt, &r->discrepancies);
    VerifierCache verifiers;  // the replay thread's, for signatures checked while it waits
    // Each entry's likely misses are prefetched a few entries before it is applied (from the
    // fifth entry of each batch of 128 on).
    constexpr size_t kPrefetchAhead = 4;
    while (std::optional<EntryBatch> batch =
               channel.Pop([&] { return ahead.CheckOne(&verifiers); })) {
      if (hooks.FailsAt(VerifyFault::kReplay)) throw std::bad_alloc();
      const EntryBatch& b = *batch;
      for (size_t i = 0; i < b.size(); ++i) {
        if (i + kPrefetchAhead < b.size() && b[i + kPrefetchAhead].decoded.ok()) {
          replayer.Prefetch(b[i + kPrefetchAhead].entry);
        }
        replayer.Apply(b[i].key, b[i].decoded, b[i].entry);
      }
      spares.Put(std::move(*batch));
    }
    queue.emplace(rebuilt.state);
  } catch (...) {
    replay_status = FromException("the replay");
    channel.Abandon();
  }
  r->rebuild_seconds = SecondsSince(start);
  start = SteadyClock::now();
  rebuilt_latch.count_down();
  Status st = drain();
  log_thread.join();
  RETURN_IF_ERROR(replay_status);
  RETURN_IF_ERROR(log_status);
  RETURN_IF_ERROR(st);
  RETURN_IF_ERROR(log_compare_status);
  TALLY_CHECK(rebuilt.entries == pass.frontier.size());  // both read the same snapshot
  r->entries = rebuilt.entries;
  r->checkpoints = pass.checkpoints.size();
  r->derived_keys = CountDerivedKeys(rebuilt.state, pass.frontier.size(), lowest_tree_level);
  bool lost_track = false;
  for (const DigestCf& d : kDigestCfs) lost_track = lost_track || rebuilt.state.lost_track(d.cf);
  if (std::vector<Cf> differing = queue->DigestsDiffering(); lost_track || !differing.empty()) {
    // The first replay's findings, and those of every family compared against it, give way to
    // the exact comparison's.
    r->compared_exactly = true;
    queue.reset();
    rebuilt = RebuildResult();  // its memory back before the second replay takes more
    r->discrepancies.clear();
    for (Cf cf : ReplayedCfs()) found[static_cast<size_t>(cf)].clear();
    try {
      RETURN_IF_ERROR(CompareExactly(store, snap, differing, lost_track, pass.frontier.size(),
                                     lowest_tree_level, &r->discrepancies, &found,
                                     &r->derived_keys));
    } catch (...) {
      return FromException("the exact comparison");
    }
  }
  r->compare_seconds = SecondsSince(start);
  r->keys = std::move(pass.keys);
  for (auto& cf_found : found) {
    for (Discrepancy& d : cf_found) r->discrepancies.push_back(std::move(d));
  }
  for (Discrepancy& d : pass.found) r->discrepancies.push_back(std::move(d));
  NameEntries(&r->discrepancies);
  return Status::Ok();
}

VerifyResult VerifyImpl(const VerifyOptions& options, const RunHooks& hooks) {
  auto start = SteadyClock::now();
  VerifyResult r;
  auto opened = audit_internal::SecondaryStore::Open(options.data_dir);
  if (!opened.ok()) {
    r.error = opened.status().message();
    return r;
  }
  bool explicit_key = !options.public_key_path.empty();
  std::string key_path = explicit_key ? options.public_key_path : options.data_dir + "/signing.pub";
  auto key = ReadPublicKeyPem(key_path);
  if (!key.ok()) {
    r.error = "cannot read the public key " + key_path + ": " + key.status().message();
    return r;
  }
  r.open_seconds = SecondsSince(start);
  Status st = RunBoth((*opened)->store(), (*opened)->snapshot(), *key, explicit_key, hooks, &r);
  if (!st.ok()) {
    r.error =
        st.reason() == kFailedInside ? st.message() : "cannot read the store: " + st.message();
    return r;
  }
  r.total_seconds = SecondsSince(start);
  r.exit_code = r.discrepancies.empty() ? kExitClean : kExitDiscrepancy;
  return r;
}

}  // namespace

VerifyResult Verify(const VerifyOptions& options) { return VerifyImpl(options, RunHooks{}); }

namespace audit_internal {
VerifyResult VerifyWithAllSignaturesAhead(const VerifyOptions& options) {
  return VerifyImpl(options, RunHooks{.all_signatures_ahead = true, .fault = std::nullopt});
}
VerifyResult VerifyWithFault(const VerifyOptions& options, VerifyFault fault) {
  return VerifyImpl(options, RunHooks{.all_signatures_ahead = false, .fault = fault});
}
}  // namespace audit_internal

std::string VerifyReportJson(const VerifyOptions& options, const VerifyResult& r) {
  using Json = nlohmann::ordered_json;
  Json found = Json::array();
  for (const Discrepancy& d : r.discrepancies) {
    Json j;
    j["what"] = d.what;
    j["cf"] = d.cf;
    j["key"] = d.key;
    j["entry_id"] = d.entry_id ? Json(*d.entry_id) : Json(nullptr);
    j["expected"] = d.expected;
    j["found"] = d.found;
    found.push_back(std::move(j));
  }
  Json j;
  j["data"] = options.data_dir;
  j["public_key"] =
      options.public_key_path.empty() ? options.data_dir + "/signing.pub" : options.public_key_path;
  j["exit_code"] = r.exit_code;
  if (!r.error.empty()) j["error"] = r.error;
  j["entries"] = r.entries;
  j["tree_size"] = r.entries;
  j["checkpoints"] = r.checkpoints;
  j["derived_keys"] = r.derived_keys;
  j["keys"] = r.keys;
  j["exact_comparison"] = r.compared_exactly;
  j["discrepancy_count"] = r.discrepancies.size();
  j["discrepancies"] = std::move(found);
  j["seconds"] = Json{{"open", r.open_seconds},
                      {"log", r.log_seconds},
                      {"rebuild", r.rebuild_seconds},
                      {"compare", r.compare_seconds},
                      {"total", r.total_seconds}};
  j["entries_per_second"] =
      r.total_seconds > 0 ? static_cast<double>(r.entries) / r.total_seconds : 0.0;
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace tally
