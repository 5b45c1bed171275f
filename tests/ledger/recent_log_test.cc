// RecentLog against a tree holding every node: for every entry it holds, the same bytes, the
// checkpoint of the first group covering it, and the same inclusion proof, across window trims,
// a restart in the middle of the log, and entries bigger than the byte budget.
#include "ledger/recent_log.h"

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "ledger/merkle.h"

namespace tally {
namespace {

// Counts the reads that reach it, to show which receipts needed the store.
class CountingReader final : public NodeReader {
 public:
  explicit CountingReader(const MemoryNodeStore& all) : all_(all) {}
  Result<Hash> GetNode(int level, uint64_t index) const override {
    ++reads;
    return all_.GetNode(level, index);
  }
  mutable uint64_t reads = 0;

 private:
  const MemoryNodeStore& all_;
};

TEST_CASE("RecentLog receipts equal receipts from the whole tree", "[recent_log]") {
  std::mt19937 rng(7);
  MemoryNodeStore all;
  MerkleFrontier frontier;
  std::vector<std::string> entries;
  std::vector<uint64_t> group_end;  // tree size after each group
  std::vector<NodeWrite> writes;

  RecentLog recent(1024, 256 << 10);
  CountingReader fallback(all);
  const uint64_t restart_at = 2500;
  REQUIRE(recent.Reset(fallback, 0).ok());
  while (entries.size() < 9000) {
    if (entries.size() >= restart_at && (group_end.empty() || group_end.back() < restart_at + 1)) {
      // A restart: everything before is only in the store.
      REQUIRE(recent.Reset(fallback, entries.size()).ok());
    }
    uint64_t first = entries.size();
    std::vector<std::string> group;
    std::vector<NodeWrite> nodes;
    size_t n = 1 + rng() % 40;
    for (size_t i = 0; i < n; ++i) {
      // Mostly small entries; now and then one bigger than a quarter of the byte budget.
      std::string e = "entry " + std::to_string(entries.size());
      if (rng() % 500 == 0) e += std::string(70 << 10, 'x');
      writes.clear();
      frontier.Append(LeafHash(e), &writes);
      for (const NodeWrite& w : writes) {
        all.Put(w);
        nodes.push_back(w);
      }
      entries.push_back(e);
      group.push_back(e);
    }
    group_end.push_back(entries.size());
    recent.Add(first, group, nodes, "note " + std::to_string(entries.size()));
  }

  uint64_t held = 0;
  for (uint64_t id = 0; id < entries.size(); ++id) {
    auto got = recent.Receipt(id, fallback);
    auto entry = recent.Entry(id);
    CHECK(got.has_value() == entry.has_value());
    if (!got) continue;
    ++held;
    REQUIRE(got->ok());
    uint64_t size = *std::upper_bound(group_end.begin(), group_end.end(), id);
    CHECK((*got)->entry == entries[id]);
    CHECK(*entry == entries[id]);
    CHECK((*got)->tree_size == size);
    CHECK((*got)->checkpoint == "note " + std::to_string(size));
    auto want = InclusionProof(all, id, size);
    REQUIRE(want.ok());
    CHECK((*got)->inclusion_proof == *want);
  }
  // Between the window and twice it (fewer when big entries pass the byte budget), the newest.
  CHECK(held >= 64);
  CHECK(held <= 2048);
  CHECK(recent.Entry(entries.size() - 1).has_value());
  CHECK_FALSE(recent.Entry(0).has_value());
  CHECK_FALSE(recent.Entry(entries.size()).has_value());

  // Receipts of the newest entries read nothing from the store.
  fallback.reads = 0;
  for (uint64_t id = entries.size() - 64; id < entries.size(); ++id) {
    REQUIRE(recent.Receipt(id, fallback).has_value());
  }
  CHECK(fallback.reads == 0);
}

TEST_CASE("RecentLog stops holding after a gap", "[recent_log]") {
  MemoryNodeStore all;
  RecentLog recent(1024, 1 << 20);
  REQUIRE(recent.Reset(all, 0).ok());
  MerkleFrontier frontier;
  std::vector<NodeWrite> nodes;
  frontier.Append(LeafHash("a"), &nodes);
  recent.Add(0, {"a"}, nodes, "n1");
  CHECK(recent.Entry(0) == std::optional<std::string>("a"));
  recent.Add(5, {"f"}, {}, "n6");  // does not start at 1
  CHECK_FALSE(recent.Entry(0).has_value());
  CHECK_FALSE(recent.Receipt(0, all).has_value());
}

}  // namespace
}  // namespace tally
