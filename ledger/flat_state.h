// FlatState: derived state in memory, one open-addressing hash table per column family. What
// Rebuild replays the log into: a Get or Put costs one hash and usually one probe, and a million
// keys cost no allocation of their own (the sorted MemoryState costs a tree walk and two
// allocations per key). Each family's records (an 8-byte header, the key and the value) are
// appended to an arena of 8 MiB chunks, so records never move and a 32-bit reference names one;
// the index holds 8-byte cells (part of the hash and a reference). A new value of another size
// than the old gets its key a new record. A key and value take at most a chunk together (Tally's
// derived values are a few KiB at most; a larger one is a fatal error). A column family's Puts are
// only appended until it is first read, so families that replay writes and never reads are hashed
// later, by whoever reads them. Unordered: Scan sorts the range it is asked for, so it is only
// for small ranges (replay never scans).
//
// Not thread-safe, except that different column families may be read from different threads at
// once (each has its own table).
#ifndef TALLY_LEDGER_FLAT_STATE_H_
#define TALLY_LEDGER_FLAT_STATE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ledger/keys.h"
#include "ledger/set_digest.h"
#include "ledger/state.h"

namespace tally {

class FlatState final : public StateWriter {
 public:
  FlatState();
  ~FlatState() override;
  FlatState(FlatState&&) noexcept;
  FlatState& operator=(FlatState&&) noexcept;

  Result<std::optional<std::string>> Get(Cf cf, std::string_view key) const override;
  Status Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
              const ScanFn& fn) const override;
  void Put(Cf cf, std::string_view key, std::string_view value) override;
  void Delete(Cf cf, std::string_view key) override;

  // A hint: makes room for `keys` distinct keys in `cf` at once, so that the table does not
  // regrow (rehashing, and touching fresh memory at every doubling) as they come. Memory the
  // hint asks for and cannot get is not an error: the table then grows as it would have.
  void Reserve(Cf cf, uint64_t keys);

  // Direct access for comparisons. Each key ever Put in `cf` has one record, named by a Ref
  // below ref_end(cf); a deleted key keeps its record, marked absent. A Put may give its key a
  // new record, so a Ref holds until the next Put. Only the Refs that Find, FindMany and ForEach
  // give name records: ref_end is a bound (the records take several units of the numbering
  // each, so a vector<bool> of ref_end is several bits per key), not a count.
  using Ref = uint32_t;
  struct Item {
    std::string_view key;
    std::string_view value;
    bool present = false;
  };
  size_t ref_end(Cf cf) const;
  Item At(Cf cf, Ref ref) const;
  // The record of `key` (present or deleted), or nullopt if it was never Put.
  std::optional<Ref> Find(Cf cf, std::string_view key) const;
  // Find for n keys at once: out[i] is the record of keys[i], or 0 if it was never Put (no
  // record is 0). Faster than one Find after another on a big table: the keys' memory loads
  // overlap.
  void FindMany(Cf cf, const std::string_view* keys, size_t n, Ref* out) const;
  // A hint that `key` is about to be read or written in `cf`: starts loading its index cell.
  // Does nothing in a table still buffering its Puts.
  void Prefetch(Cf cf, std::string_view key) const;
  // Calls fn for every key's record in `cf`, in the order the records were made: the order
  // the keys were first Put, except that a key whose record was replaced comes where its new
  // record was made.
  void ForEach(Cf cf, const std::function<void(Ref, const Item&)>& fn) const;
  // Keys present in `cf` (a family kept as a digest: pairs added to it).
  size_t size(Cf cf) const;
  // Bytes of memory the records of `cf` take (keys, values, headers): what reading them all
  // costs, roughly; a hint that costs nothing. A family kept as a digest: the bytes of the
  // pairs added to it.
  size_t record_bytes(Cf cf) const;

  // From now on `cf` keeps no records: each Put adds its key and value to `digest` instead, and
  // the family can only be compared with a set of pairs as a whole (digest()). It saves the memory
  // of the records and the look-ups of a compare, for a family that need not be located in a
  // difference at once. Only before its first Put. Two kinds:
  // - reads = false, for a family that is only written, each key once (the indexes of entries,
  //   whose keys name their entry). Reading it (Get, Delete, Scan, Find, FindMany, At, ForEach,
  //   ref_end) is a fatal error; Reserve and Prefetch do nothing.
  // - reads = true, for a family whose reads are of keys never written (a miss) or of the key
  //   written last, and whose writes are of new keys or again of the key written last (idempotency
  //   keys, whose entries are consecutive; business keys). It keeps a 64-bit fingerprint of each
  //   key (SetDigest::Fingerprint) and the last key and value. A Get or Put of an earlier key, or a
  //   Delete of a key it holds, cannot be followed: the Get answers "absent", and lost_track() says
  //   so from then on; what was replayed must then be replayed again keeping records. A key never
  //   written that shares a fingerprint with one that was is taken for an earlier key (lost track),
  //   never for an absent one. Scan, Find, FindMany, At, ForEach and ref_end are fatal errors;
  //   Reserve sizes the fingerprints and Prefetch starts loading one.
  void KeepOnlyDigest(Cf cf, SetDigest digest, bool reads = false);
  // The digest of `cf`'s pairs, or null if it keeps records.
  const SetDigest* digest(Cf cf) const;
  // Whether `cf`, kept as a digest with reads, met a read or write it could not follow.
  bool lost_track(Cf cf) const;

 private:
  struct Table;
  Table& Readable(Cf cf) const;  // the table of a family that keeps records
  std::unique_ptr<Table[]> tables_;
};

}  // namespace tally

#endif  // TALLY_LEDGER_FLAT_STATE_H_
