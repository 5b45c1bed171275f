// RecentLog against a tree holding every node: for every receipt it gives, the same bytes, the
// checkpoint of the first group covering it, and the same inclusion proof, across window trims,
// a restart in the middle of the log, and entries bigger than the byte budget; and a receipt for
// each of the newest entries.
#include "ledger/recent_log.h"

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "ledger/merkle.h"

namespace tally {
namespace {

// Loads a level's first nodes from a tree holding every node, as the ledger does from the store.
RecentLog::LevelLoader LoaderOf(const MemoryNodeStore& all) {
  return [&all](int level, uint64_t count) -> Result<std::vector<Hash>> {
    std::vector<Hash> nodes;
    for (uint64_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(Hash h, all.GetNode(level, i));
      nodes.push_back(h);
    }
    return nodes;
  };
}

TEST_CASE("RecentLog receipts equal receipts from the whole tree", "[recent_log]") {
  std::mt19937 rng(7);
  MemoryNodeStore all;
  MerkleFrontier frontier;
  std::vector<std::string> entries;
  std::vector<uint64_t> group_end;  // tree size after each group
  std::vector<NodeWrite> writes;

  RecentLog recent(1024, 256 << 10);
  const uint64_t restart_at = 2500;
  REQUIRE(recent.Reset(0, LoaderOf(all)).ok());
  while (entries.size() < 9000) {
    if (entries.size() >= restart_at && (group_end.empty() || group_end.back() < restart_at + 1)) {
      // A restart: everything before is only in the store.
      REQUIRE(recent.Reset(entries.size(), LoaderOf(all)).ok());
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

  uint64_t held = 0, receipts = 0;
  for (uint64_t id = 0; id < entries.size(); ++id) {
    auto entry = recent.Entry(id);
    if (entry) {
      ++held;
      CHECK(*entry == entries[id]);
    }
    auto got = recent.Receipt(id);
    if (!got) continue;
    ++receipts;
    CHECK(entry.has_value());
    uint64_t size = *std::upper_bound(group_end.begin(), group_end.end(), id);
    CHECK(got->entry == entries[id]);
    CHECK(got->tree_size == size);
    CHECK(got->checkpoint == "note " + std::to_string(size));
    auto want = InclusionProof(all, id, size);
    REQUIRE(want.ok());
    CHECK(got->inclusion_proof == *want);
  }
  // Between the window and twice it (fewer when big entries pass the byte budget), the newest.
  CHECK(held >= 64);
  CHECK(held <= 2048);
  CHECK(receipts <= held);
  CHECK(recent.Entry(entries.size() - 1).has_value());
  CHECK_FALSE(recent.Entry(0).has_value());
  CHECK_FALSE(recent.Entry(entries.size()).has_value());
  // The newest entries get their receipts from memory alone.
  for (uint64_t id = entries.size() - 64; id < entries.size(); ++id) {
    CHECK(recent.Receipt(id).has_value());
  }
}

TEST_CASE("RecentLog after a restart holds what it can prove without the store", "[recent_log]") {
  MemoryNodeStore all;
  MerkleFrontier frontier;
  std::vector<NodeWrite> writes;
  std::vector<std::string> entries;
  auto append = [&](std::vector<NodeWrite>* group_nodes) {
    std::string e = "e" + std::to_string(entries.size());
    writes.clear();
    frontier.Append(LeafHash(e), &writes);
    for (const NodeWrite& w : writes) {
      all.Put(w);
      if (group_nodes) group_nodes->push_back(w);
    }
    entries.push_back(e);
    return e;
  };
  for (int i = 0; i < 3000; ++i) append(nullptr);
  RecentLog recent(1024, 1 << 20);
  REQUIRE(recent.Reset(entries.size(), LoaderOf(all)).ok());
  for (int g = 0; g < 200; ++g) {
    uint64_t first = entries.size();
    std::vector<NodeWrite> nodes;
    std::vector<std::string> group;
    for (int i = 0; i < 10; ++i) group.push_back(append(&nodes));
    recent.Add(first, group, nodes, "n" + std::to_string(entries.size()));
  }
  // Entry 3000's proof needs the level-3 node of leaves 2992..2999, completed before the
  // restart: not held, so no receipt from memory. From the next block of 1024 leaves (3072) on,
  // every node of every proof is held.
  CHECK(recent.Entry(3000).has_value());
  CHECK_FALSE(recent.Receipt(3000).has_value());
  for (uint64_t id = 3072; id < entries.size(); ++id) {
    auto got = recent.Receipt(id);
    REQUIRE(got.has_value());
    auto want = InclusionProof(all, id, got->tree_size);
    REQUIRE(want.ok());
    CHECK(got->inclusion_proof == *want);
  }
  // A loader that fails leaves nothing held.
  REQUIRE_FALSE(recent
                    .Reset(entries.size(),
                           [](int, uint64_t) -> Result<std::vector<Hash>> {
                             return Status::DataLoss("missing");
                           })
                    .ok());
  CHECK_FALSE(recent.Entry(entries.size() - 1).has_value());
}

TEST_CASE("RecentLog stops holding after a gap", "[recent_log]") {
  MemoryNodeStore all;
  RecentLog recent(1024, 1 << 20);
  REQUIRE(recent.Reset(0, LoaderOf(all)).ok());
  MerkleFrontier frontier;
  std::vector<NodeWrite> nodes;
  frontier.Append(LeafHash("a"), &nodes);
  recent.Add(0, {"a"}, nodes, "n1");
  CHECK(recent.Entry(0) == std::optional<std::string>("a"));
  recent.Add(5, {"f"}, {}, "n6");  // does not start at 1
  CHECK_FALSE(recent.Entry(0).has_value());
  CHECK_FALSE(recent.Receipt(0).has_value());
}

}  // namespace
}  // namespace tally
