// Tests of ledger/tree_store: the tree column family from level 4 up, lower nodes from the log.
#include "ledger/tree_store.h"

#include <catch2/catch.hpp>

#include "ledger/coding.h"
#include "ledger/keys.h"
#include "ledger/ledger.h"
#include "ledger/merkle.h"
#include "tests/ledger/ledger_test_util.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using testing::TempDir;
using testing::Transfer;

std::unique_ptr<Ledger> OpenLedger(const std::string& dir) {
  LedgerOptions o;
  o.dir = dir;
  auto l = Ledger::Open(o);
  REQUIRE(l.ok());
  return std::move(l).value();
}

}  // namespace

TEST_CASE("The store keeps tree levels from 4 up and hashes lower nodes from the entries",
          "[ledger][tree]") {
  TempDir dir;
  constexpr uint64_t kSize = 100;
  auto ledger = OpenLedger(dir.path());
  for (uint64_t i = 0; i < kSize; ++i) {
    REQUIRE(ledger->Append(Transfer("acme", "alice", 1, std::to_string(i))).ok());
  }
  const Store& store = *ledger->store();
  CHECK(*ReadStorageFormat(store, nullptr) == 2);

  // Exactly the complete nodes from level 4 up: 6 + 3 + 1 of a 100-leaf tree.
  std::vector<std::string> keys;
  REQUIRE(store
              .Scan(Cf::kTree, "", "", false, nullptr,
                    [&](std::string_view k, std::string_view) {
                      keys.emplace_back(k);
                      return true;
                    })
              .ok());
  std::vector<std::string> want;
  for (int level = kTreeStoredFromLevel; (kSize >> level) > 0; ++level) {
    for (uint64_t i = 0; i < (kSize >> level); ++i) want.push_back(TreeKey(level, i));
  }
  CHECK(keys == want);

  // Every complete node, stored or hashed from the log, is the node of the tree of the entries.
  MemoryNodeStore expected;
  MerkleFrontier frontier;
  std::vector<NodeWrite> writes;
  for (uint64_t id = 0; id < kSize; ++id) {
    frontier.Append(LeafHash(*ledger->GetEntryBytes(id)), &writes);
  }
  for (const NodeWrite& w : writes) expected.Put(w);
  StoreNodeReader reader(&store, nullptr, kTreeStoredFromLevel);
  for (int level = 0; (kSize >> level) > 0; ++level) {
    for (uint64_t i = 0; i < (kSize >> level); ++i) {
      INFO("node " << level << "/" << i);
      auto got = reader.GetNode(level, i);
      REQUIRE(got.ok());
      CHECK(*got == *expected.GetNode(level, i));
    }
  }
  // Proofs through the store verify against the root, for every leaf and every older size.
  const Hash root = frontier.Root();
  for (uint64_t i = 0; i < kSize; ++i) {
    auto proof = InclusionProof(reader, i, kSize);
    REQUIRE(proof.ok());
    CHECK(VerifyInclusion(i, kSize, *expected.GetNode(0, i), *proof, root).ok());
  }
  for (uint64_t m = 1; m <= kSize; ++m) {
    auto old_root = RootAt(reader, m);
    REQUIRE(old_root.ok());
    auto consistency = ledger->GetConsistencyProof(m, kSize);
    REQUIRE(consistency.ok());
    CHECK(VerifyConsistency(m, kSize, *consistency, *old_root, root).ok());
  }

  SECTION("a node over a missing entry is reported, stored nodes are not affected") {
    StoreBatch b(store);
    b.Delete(Cf::kEntries, EntryKey(37));
    REQUIRE(ledger->store()->Write(b).ok());
    for (auto [level, index] : {std::pair{0, 37}, {1, 18}, {2, 9}, {3, 4}}) {
      auto got = reader.GetNode(level, index);
      REQUIRE_FALSE(got.ok());
      CHECK(got.status().code() == Code::kDataLoss);
    }
    CHECK(reader.GetNode(3, 5).ok());
    CHECK(reader.GetNode(4, 2).ok());
  }
}

TEST_CASE("A reopened ledger rebuilds its frontier from stored and hashed nodes",
          "[ledger][tree]") {
  for (uint64_t size : {1, 15, 16, 17, 31, 47}) {
    INFO("size " << size);
    CheckpointInfo before;
    {
      TempDir d;
      {
        auto ledger = OpenLedger(d.path());
        for (uint64_t i = 0; i < size; ++i) {
          REQUIRE(ledger->Append(Transfer("acme", "alice", 1, std::to_string(i))).ok());
        }
        before = ledger->LatestCheckpoint();
      }
      auto ledger = OpenLedger(d.path());
      CHECK(ledger->LatestCheckpoint().root == before.root);
      // The next append extends the same tree: its checkpoint's root matches one built afresh.
      REQUIRE(ledger->Append(Transfer("acme", "alice", 1, "next")).ok());
      MerkleFrontier frontier;
      std::vector<NodeWrite> writes;
      for (uint64_t id = 0; id <= size; ++id) {
        frontier.Append(LeafHash(*ledger->GetEntryBytes(id)), &writes);
      }
      CHECK(ledger->LatestCheckpoint().root == frontier.Root());
    }
  }
}

}  // namespace tally
