// Tests of ledger/merkle: RFC 6962 / RFC 9162 trees, proofs and verification.
#include "ledger/merkle.h"

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ledger/base64.h"
#include "ledger/hash.h"

namespace tally {
namespace {

// ---------------------------------------------------------------------------------------------
// Reference: the RFC 9162 definitions (sections 2.1.1, 2.1.3.1, 2.1.4.1) written as directly as
// possible, over the full list of leaf hashes. MTH is memoised so exhaustive tests stay fast.

uint64_t LargestPowerOfTwoBelow(uint64_t n) {
  uint64_t k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

class Reference {
 public:
  explicit Reference(std::vector<Hash> leaf_hashes) : leaves_(std::move(leaf_hashes)) {}

  // MTH(D[begin:end]).
  Hash Mth(uint64_t begin, uint64_t end) {
    const uint64_t n = end - begin;
    if (n == 0) return Sha256("");
    if (n == 1) return leaves_[begin];
    auto it = memo_.find({begin, end});
    if (it != memo_.end()) return it->second;
    const uint64_t k = LargestPowerOfTwoBelow(n);
    const Hash h = NodeHash(Mth(begin, begin + k), Mth(begin + k, end));
    memo_[{begin, end}] = h;
    return h;
  }

  // PATH(m, D[begin:end]), m relative to begin.
  std::vector<Hash> Path(uint64_t m, uint64_t begin, uint64_t end) {
    const uint64_t n = end - begin;
    if (n == 1) return {};
    const uint64_t k = LargestPowerOfTwoBelow(n);
    std::vector<Hash> out;
    if (m < k) {
      out = Path(m, begin, begin + k);
      out.push_back(Mth(begin + k, end));
    } else {
      out = Path(m - k, begin + k, end);
      out.push_back(Mth(begin, begin + k));
    }
    return out;
  }

  // SUBPROOF(m, D[begin:end], b), m relative to begin.
  std::vector<Hash> Subproof(uint64_t m, uint64_t begin, uint64_t end, bool b) {
    const uint64_t n = end - begin;
    if (m == n) return b ? std::vector<Hash>{} : std::vector<Hash>{Mth(begin, end)};
    const uint64_t k = LargestPowerOfTwoBelow(n);
    std::vector<Hash> out;
    if (m <= k) {
      out = Subproof(m, begin, begin + k, b);
      out.push_back(Mth(begin + k, end));
    } else {
      out = Subproof(m - k, begin + k, end, false);
      out.push_back(Mth(begin, begin + k));
    }
    return out;
  }

 private:
  std::vector<Hash> leaves_;
  std::map<std::pair<uint64_t, uint64_t>, Hash> memo_;
};

// A NodeReader that counts reads, to check the O(log n) bounds.
class CountingReader : public NodeReader {
 public:
  explicit CountingReader(const NodeReader& inner) : inner_(inner) {}
  Result<Hash> GetNode(int level, uint64_t index) const override {
    ++reads_;
    return inner_.GetNode(level, index);
  }
  uint64_t reads() const { return reads_; }
  void Reset() { reads_ = 0; }

 private:
  const NodeReader& inner_;
  mutable uint64_t reads_ = 0;
};

Hash TestLeafHash(uint64_t i) { return LeafHash("entry " + std::to_string(i)); }

// A tree of n leaves built through MerkleFrontier, with the frontier after every append.
struct BuiltTree {
  MemoryNodeStore store;
  std::vector<Hash> leaf_hashes;
  std::vector<MerkleFrontier> frontiers;  // frontiers[s] has s leaves
};

BuiltTree BuildTree(uint64_t n) {
  BuiltTree tree;
  MerkleFrontier frontier;
  tree.frontiers.push_back(frontier);
  std::vector<NodeWrite> writes;
  for (uint64_t i = 0; i < n; ++i) {
    tree.leaf_hashes.push_back(TestLeafHash(i));
    writes.clear();
    frontier.Append(tree.leaf_hashes.back(), &writes);
    for (const NodeWrite& w : writes) tree.store.Put(w);
    tree.frontiers.push_back(frontier);
  }
  return tree;
}

Hash Flip(Hash h, int bit) {
  h[static_cast<size_t>(bit / 8) % h.size()] ^= static_cast<uint8_t>(1u << (bit % 8));
  return h;
}

std::string Hex(const Hash& h) { return HashToHex(h); }

Hash FromHex(std::string_view hex) {
  Hash h{};
  REQUIRE(hex.size() == 64);
  for (size_t i = 0; i < 32; ++i) {
    h[i] = static_cast<uint8_t>(std::stoi(std::string(hex.substr(2 * i, 2)), nullptr, 16));
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the exhaustive and the larger tests.

void CheckInclusion(const BuiltTree& tree, Reference& ref, uint64_t index, uint64_t size) {
  INFO("inclusion of " << index << " in " << size);
  CountingReader reader(tree.store);
  Result<std::vector<Hash>> proof = InclusionProof(reader, index, size);
  REQUIRE(proof.ok());
  CHECK(*proof == ref.Path(index, 0, size));
  CHECK(reader.reads() <= 2 * std::bit_width(size));
  const Hash root = ref.Mth(0, size);
  const Hash leaf = tree.leaf_hashes[index];
  REQUIRE(VerifyInclusion(index, size, leaf, *proof, root).ok());
  CHECK_FALSE(VerifyInclusion(index, size, Flip(leaf, 3), *proof, root).ok());
  CHECK_FALSE(VerifyInclusion(index, size, leaf, *proof, Flip(root, 200)).ok());
  if (size > 1) CHECK_FALSE(VerifyInclusion(index ^ 1, size, leaf, *proof, root).ok());
  for (size_t i = 0; i < proof->size(); ++i) {
    std::vector<Hash> bad = *proof;
    bad[i] = Flip(bad[i], static_cast<int>(i * 37 % 256));
    CHECK_FALSE(VerifyInclusion(index, size, leaf, bad, root).ok());
  }
  std::vector<Hash> longer = *proof;
  longer.push_back(root);
  CHECK_FALSE(VerifyInclusion(index, size, leaf, longer, root).ok());
  if (!proof->empty()) {
    std::vector<Hash> shorter(proof->begin(), proof->end() - 1);
    CHECK_FALSE(VerifyInclusion(index, size, leaf, shorter, root).ok());
  }
}

void CheckConsistency(const BuiltTree& tree, Reference& ref, uint64_t size1, uint64_t size2) {
  INFO("consistency " << size1 << " -> " << size2);
  CountingReader reader(tree.store);
  Result<std::vector<Hash>> proof = ConsistencyProof(reader, size1, size2);
  REQUIRE(proof.ok());
  CHECK(*proof == ref.Subproof(size1, 0, size2, true));
  CHECK(reader.reads() <= 2 * std::bit_width(size2));
  const Hash root1 = ref.Mth(0, size1);
  const Hash root2 = ref.Mth(0, size2);
  REQUIRE(VerifyConsistency(size1, size2, *proof, root1, root2).ok());
  CHECK_FALSE(VerifyConsistency(size1, size2, *proof, Flip(root1, 9), root2).ok());
  CHECK_FALSE(VerifyConsistency(size1, size2, *proof, root1, Flip(root2, 9)).ok());
  for (size_t i = 0; i < proof->size(); ++i) {
    std::vector<Hash> bad = *proof;
    bad[i] = Flip(bad[i], static_cast<int>(i * 41 % 256));
    CHECK_FALSE(VerifyConsistency(size1, size2, bad, root1, root2).ok());
  }
  std::vector<Hash> longer = *proof;
  longer.push_back(root2);
  CHECK_FALSE(VerifyConsistency(size1, size2, longer, root1, root2).ok());
  if (size1 < size2) {
    std::vector<Hash> shorter(proof->begin(), proof->end() - 1);
    CHECK_FALSE(VerifyConsistency(size1, size2, shorter, root1, root2).ok());
  }
}

// ---------------------------------------------------------------------------------------------
// The transparency-dev/merkle JSON vectors.

std::string DecodeField(const nlohmann::json& value) {
  Result<std::string> bytes = Base64Decode(value.get<std::string>());
  REQUIRE(bytes.ok());
  return *bytes;
}

// The vectors model garbage with hashes of the wrong length, which a Hash cannot hold. Such a
// root or proof hash becomes a stand-in that is distinct per byte string and never a real
// tree hash, so the verifier still decides the case; a leaf hash of the wrong length is
// rejected before verification, as the reference implementation does.
Hash ToHashOrStandIn(const std::string& bytes) {
  Hash h;
  if (bytes.size() == kHashSize) {
    std::memcpy(h.data(), bytes.data(), kHashSize);
    return h;
  }
  return Sha256({"test stand-in for a hash of the wrong length:", bytes});
}

std::vector<Hash> DecodeProof(const nlohmann::json& proof) {
  std::vector<Hash> out;
  if (proof.is_null()) return out;
  for (const auto& item : proof) out.push_back(ToHashOrStandIn(DecodeField(item)));
  return out;
}

std::vector<std::filesystem::path> VectorFiles(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

nlohmann::json ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

bool InclusionVectorPasses(const nlohmann::json& v) {
  const std::string leaf = DecodeField(v["leafHash"]);
  if (leaf.size() != kHashSize) return false;
  return VerifyInclusion(v["leafIdx"].get<uint64_t>(), v["treeSize"].get<uint64_t>(),
                         ToHashOrStandIn(leaf), DecodeProof(v["proof"]),
                         ToHashOrStandIn(DecodeField(v["root"])))
      .ok();
}

bool ConsistencyVectorPasses(const nlohmann::json& v) {
  return VerifyConsistency(v["size1"].get<uint64_t>(), v["size2"].get<uint64_t>(),
                           DecodeProof(v["proof"]), ToHashOrStandIn(DecodeField(v["root1"])),
                           ToHashOrStandIn(DecodeField(v["root2"])))
      .ok();
}

// The leaves of the RFC 6962 test tree used by the certificate-transparency implementations.
std::vector<std::string> Rfc6962TestLeaves() {
  return {std::string(),
          std::string("\x00", 1),
          "\x10",
          "\x20\x21",
          "\x30\x31",
          "\x40\x41\x42\x43",
          "\x50\x51\x52\x53\x54\x55\x56\x57",
          "\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"};
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("Leaf, node and empty-tree hashes follow RFC 6962", "[merkle]") {
  CHECK(Hex(EmptyTreeRoot()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(Hex(LeafHash("")) == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
  const Hash a = LeafHash("a"), b = LeafHash("b");
  std::string concat = "\x01";
  concat.append(AsBytes(a));
  concat.append(AsBytes(b));
  CHECK(NodeHash(a, b) == Sha256(concat));
  CHECK(NodeHash(a, b) != NodeHash(b, a));
}

TEST_CASE("Roots of the RFC 6962 test tree match the published values", "[merkle]") {
  const char* const kRoots[] = {
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
      "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
      "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
      "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
      "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
      "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
  };
  MerkleFrontier frontier;
  MemoryNodeStore store;
  std::vector<NodeWrite> writes;
  const std::vector<std::string> leaves = Rfc6962TestLeaves();
  for (size_t i = 0; i < leaves.size(); ++i) {
    writes.clear();
    frontier.Append(LeafHash(leaves[i]), &writes);
    for (const NodeWrite& w : writes) store.Put(w);
    CHECK(Hex(frontier.Root()) == kRoots[i]);
  }
  for (size_t i = 0; i < leaves.size(); ++i) {
    Result<Hash> root = RootAt(store, i + 1);
    REQUIRE(root.ok());
    CHECK(*root == FromHex(kRoots[i]));
  }
}

TEST_CASE("Append reports the leaf and every node it completes, in order", "[merkle]") {
  MerkleFrontier frontier;
  std::vector<NodeWrite> writes;
  for (uint64_t i = 0; i < 7; ++i) frontier.Append(TestLeafHash(i), &writes);
  writes.clear();
  frontier.Append(TestLeafHash(7), &writes);
  REQUIRE(writes.size() == 4);
  CHECK((writes[0].level == 0 && writes[0].index == 7 && writes[0].hash == TestLeafHash(7)));
  CHECK((writes[1].level == 1 && writes[1].index == 3));
  CHECK((writes[2].level == 2 && writes[2].index == 1));
  CHECK((writes[3].level == 3 && writes[3].index == 0));
  CHECK(writes[3].hash == frontier.Root());
  CHECK(NodeHash(writes[2].hash, writes[1].hash) != writes[3].hash);  // left child is (2, 0)
}

TEST_CASE("An empty frontier has the empty-tree root", "[merkle]") {
  MerkleFrontier frontier;
  CHECK(frontier.size() == 0);
  CHECK(frontier.Root() == EmptyTreeRoot());
  MemoryNodeStore store;
  Result<Hash> root = RootAt(store, 0);
  REQUIRE(root.ok());
  CHECK(*root == EmptyTreeRoot());
  Result<MerkleFrontier> loaded = MerkleFrontier::Load(store, 0);
  REQUIRE(loaded.ok());
  CHECK(*loaded == frontier);
}

TEST_CASE("Every inclusion and consistency proof of trees up to 64 leaves is right", "[merkle]") {
  for (uint64_t n = 1; n <= 64; ++n) {
    const BuiltTree tree = BuildTree(n);
    Reference ref(tree.leaf_hashes);
    REQUIRE(tree.frontiers[n].Root() == ref.Mth(0, n));
    Result<Hash> root = RootAt(tree.store, n);
    REQUIRE(root.ok());
    CHECK(*root == ref.Mth(0, n));
    for (uint64_t i = 0; i < n; ++i) CheckInclusion(tree, ref, i, n);
    for (uint64_t m = 1; m <= n; ++m) CheckConsistency(tree, ref, m, n);
  }
}

TEST_CASE("Proofs stay right and cheap in larger trees", "[merkle]") {
  const BuiltTree tree = BuildTree(1100);
  Reference ref(tree.leaf_hashes);
  for (uint64_t n : {511, 512, 513, 777, 1023, 1024, 1025, 1100}) {
    for (uint64_t i = 0; i < n; i += 7) CheckInclusion(tree, ref, i, n);
    CheckInclusion(tree, ref, n - 1, n);
    for (uint64_t m = 1; m <= n; m += 5) CheckConsistency(tree, ref, m, n);
  }
}

TEST_CASE("A frontier loaded from the store equals the one that built it", "[merkle]") {
  const BuiltTree tree = BuildTree(300);
  for (uint64_t n = 0; n <= 300; ++n) {
    CountingReader reader(tree.store);
    Result<MerkleFrontier> loaded = MerkleFrontier::Load(reader, n);
    REQUIRE(loaded.ok());
    CHECK(reader.reads() == static_cast<uint64_t>(std::popcount(n)));
    CHECK(loaded->size() == n);
    CHECK(*loaded == tree.frontiers[n]);
    CHECK(loaded->Root() == tree.frontiers[n].Root());
    if (n < 300) {
      std::vector<NodeWrite> a, b;
      MerkleFrontier original = tree.frontiers[n];
      original.Append(TestLeafHash(n), &a);
      loaded->Append(TestLeafHash(n), &b);
      REQUIRE(a.size() == b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        CHECK((a[i].level == b[i].level && a[i].index == b[i].index && a[i].hash == b[i].hash));
      }
    }
  }
}

TEST_CASE("Frontiers of different trees are not equal", "[merkle]") {
  BuiltTree tree = BuildTree(5);
  MerkleFrontier other;
  std::vector<NodeWrite> writes;
  for (uint64_t i = 0; i < 5; ++i) other.Append(LeafHash("other " + std::to_string(i)), &writes);
  CHECK_FALSE(other == tree.frontiers[5]);
  CHECK_FALSE(tree.frontiers[4] == tree.frontiers[5]);
}

TEST_CASE("Proof requests with bad arguments are rejected", "[merkle]") {
  const BuiltTree tree = BuildTree(10);
  CHECK(InclusionProof(tree.store, 10, 10).status().code() == Code::kInvalidArgument);
  CHECK(InclusionProof(tree.store, 0, 0).status().code() == Code::kInvalidArgument);
  CHECK(ConsistencyProof(tree.store, 0, 5).status().code() == Code::kInvalidArgument);
  CHECK(ConsistencyProof(tree.store, 6, 5).status().code() == Code::kInvalidArgument);
  Result<std::vector<Hash>> same = ConsistencyProof(tree.store, 5, 5);
  REQUIRE(same.ok());
  CHECK(same->empty());
}

TEST_CASE("Reading past the stored tree reports the store's error", "[merkle]") {
  const BuiltTree tree = BuildTree(10);
  CHECK(RootAt(tree.store, 11).status().code() == Code::kNotFound);
  CHECK(InclusionProof(tree.store, 3, 12).status().code() == Code::kNotFound);
  CHECK(ConsistencyProof(tree.store, 3, 16).status().code() == Code::kNotFound);
  CHECK(MerkleFrontier::Load(tree.store, 11).status().code() == Code::kNotFound);
  CHECK(tree.store.GetNode(0, 10).status().code() == Code::kNotFound);
  CHECK(tree.store.GetNode(40, 0).status().code() == Code::kNotFound);
  CHECK(tree.store.GetNode(-1, 0).status().code() == Code::kNotFound);
}

TEST_CASE("Verification edge cases follow transparency-dev/merkle", "[merkle]") {
  const Hash a = LeafHash("a"), b = LeafHash("b");
  CHECK(VerifyInclusion(0, 0, a, {}, a).code() == Code::kInvalidArgument);
  CHECK(VerifyInclusion(0, 1, a, {}, a).ok());
  CHECK_FALSE(VerifyInclusion(0, 1, a, {}, b).ok());
  CHECK_FALSE(VerifyInclusion(0, 1, a, {b}, a).ok());
  CHECK(VerifyConsistency(3, 3, {}, a, a).ok());
  CHECK_FALSE(VerifyConsistency(3, 3, {}, a, b).ok());
  CHECK_FALSE(VerifyConsistency(3, 3, {a}, a, a).ok());
  CHECK_FALSE(VerifyConsistency(4, 3, {}, a, a).ok());
  CHECK_FALSE(VerifyConsistency(0, 0, {}, EmptyTreeRoot(), EmptyTreeRoot()).ok());
  CHECK_FALSE(VerifyConsistency(0, 3, {}, EmptyTreeRoot(), a).ok());
  CHECK_FALSE(VerifyConsistency(1, 2, {}, a, b).ok());
  const Status s = VerifyConsistency(0, 3, {}, EmptyTreeRoot(), a);
  CHECK(s.code() == Code::kInvalidArgument);
  CHECK(s.message().find("empty tree") != std::string::npos);
}

TEST_CASE("Every transparency-dev inclusion vector gives the expected verdict", "[merkle]") {
  const auto files = VectorFiles(std::string(TALLY_TESTDATA_DIR) + "/merkle/inclusion");
  REQUIRE(files.size() == 98);
  for (const auto& path : files) {
    const nlohmann::json v = ReadJson(path);
    INFO(path.string() << ": " << v["desc"].get<std::string>());
    CHECK(InclusionVectorPasses(v) == !v["wantErr"].get<bool>());
  }
}

TEST_CASE("Every transparency-dev consistency vector gives the expected verdict", "[merkle]") {
  const auto files = VectorFiles(std::string(TALLY_TESTDATA_DIR) + "/merkle/consistency");
  REQUIRE(files.size() == 98);
  for (const auto& path : files) {
    const nlohmann::json v = ReadJson(path);
    INFO(path.string() << ": " << v["desc"].get<std::string>());
    CHECK(ConsistencyVectorPasses(v) == !v["wantErr"].get<bool>());
  }
}

TEST_CASE("Happy-path vectors are the proofs this implementation produces", "[merkle]") {
  MerkleFrontier frontier;
  MemoryNodeStore store;
  std::vector<NodeWrite> writes;
  for (const std::string& leaf : Rfc6962TestLeaves()) frontier.Append(LeafHash(leaf), &writes);
  for (const NodeWrite& w : writes) store.Put(w);
  for (const char* dir : {"inclusion", "consistency"}) {
    for (const auto& path : VectorFiles(std::string(TALLY_TESTDATA_DIR) + "/merkle/" + dir)) {
      if (path.filename() != "happy-path.json") continue;
      const nlohmann::json v = ReadJson(path);
      INFO(path.string());
      const bool inclusion = v.contains("leafIdx");
      Result<std::vector<Hash>> proof =
          inclusion
              ? InclusionProof(store, v["leafIdx"].get<uint64_t>(), v["treeSize"].get<uint64_t>())
              : ConsistencyProof(store, v["size1"].get<uint64_t>(), v["size2"].get<uint64_t>());
      REQUIRE(proof.ok());
      CHECK(*proof == DecodeProof(v["proof"]));
    }
  }
}

}  // namespace
}  // namespace tally
