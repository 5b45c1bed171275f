// RecentLog: the newest entries of the log, their checkpoints and the tree nodes their proofs
// need, in memory, so that the receipt every write returns costs no store reads (from the store
// it costs one read per proof node: about twenty). Only durable commits are added, so it never
// holds what the store does not; a receipt it cannot build whole is built from the store as
// before, and a receipt is the same bytes either way.
//
// What it holds: the entry bytes and every commit group's checkpoint for a window of the newest
// entries (between `window` and twice that many, the window starting at a multiple of 1024, and
// fewer if their bytes would pass `bytes_max`), the
// tree nodes below level 10 for that window, and every node from level 10 up (loaded at open:
// about one key per 512 entries, 64 bytes per 1024 entries of memory). A proof for an entry in
// the window reads below level 10 only inside its own aligned block of 1024 leaves or to its
// right (the tree's right edge), so all of it is here once the window starts at such a block;
// just after open, entries whose block began before it need the store.
//
// Thread-safe: one thread adds (the ledger's writer, or a follower's apply), any thread reads.
#ifndef TALLY_LEDGER_RECENT_LOG_H_
#define TALLY_LEDGER_RECENT_LOG_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "ledger/hash.h"
#include "ledger/merkle.h"
#include "ledger/status.h"

namespace tally {

class RecentLog {
 public:
  static constexpr int kHighLevel = 10;  // levels from here up are held whole

  RecentLog(uint64_t window, size_t bytes_max);

  // Forgets everything and starts over at a tree of `size` leaves, loading its nodes from level
  // kHighLevel up with `load` (level, count): the first `count` nodes of the level, in order. On
  // an error nothing is held until the next Reset.
  using LevelLoader = std::function<Result<std::vector<Hash>>(int level, uint64_t count)>;
  Status Reset(uint64_t size, const LevelLoader& load);

  // After the durable commit of one group: entries [first, first + entries.size()), every tree
  // node the group completed (any order), and the group's checkpoint note, signed at size
  // first + entries.size(). A group that does not start where the last one ended (never, if
  // every commit is added) empties the window and stops the node levels: later look-ups fall
  // back to the store until the next Reset.
  void Add(uint64_t first, const std::vector<std::string>& entries,
           const std::vector<NodeWrite>& nodes, const std::string& note);

  // An entry's bytes, if held.
  std::optional<std::string> Entry(uint64_t id) const;

  struct Proof {
    std::string entry;
    std::string checkpoint;  // the note of the first group covering the entry
    uint64_t tree_size = 0;
    std::vector<Hash> inclusion_proof;
  };
  // The entry, its group's checkpoint and its inclusion proof at that size, if the entry is in
  // the window and every node of its proof is held (nullopt otherwise: never a partial answer,
  // and never a store read while readers hold the lock the writer's Add waits for).
  std::optional<Proof> Receipt(uint64_t id) const;

 private:
  class Reader;
  struct Level {
    uint64_t base = 0;  // index of nodes.front()
    std::deque<Hash> nodes;
  };
  void Stop();  // holds nothing until the next Reset. REQUIRES: mu_ held exclusively
  void Trim();  // REQUIRES: mu_ held exclusively

  const uint64_t window_;
  const size_t bytes_max_;
  mutable std::shared_mutex mu_;
  bool broken_ = false;  // a gap: hold nothing until Reset
  uint64_t first_ = 0;   // entries_[0] is entry first_
  uint64_t end_ = 0;     // the tree size reached
  std::deque<std::string> entries_;
  size_t bytes_ = 0;                                          // of entries_
  std::deque<std::pair<uint64_t, std::string>> checkpoints_;  // (size, note), ascending
  Level levels_[64];
};

}  // namespace tally

#endif  // TALLY_LEDGER_RECENT_LOG_H_
