// The ledger's Merkle tree: RFC 6962 / RFC 9162 hashing, proofs and their verification.
//
// Storage model: the ledger stores the hash of every complete aligned subtree. Node
// (level, index) covers the leaves [index << level, (index + 1) << level); level 0 holds the leaf
// hashes. Every hash the proofs need is either such a node or the fold of a few of them, so
// proofs cost O(log n) node reads and the tree never needs rehashing.
#ifndef TALLY_LEDGER_MERKLE_H_
#define TALLY_LEDGER_MERKLE_H_

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "ledger/hash.h"
#include "ledger/status.h"

namespace tally {

// SHA-256(0x00 || leaf): the hash of a leaf (RFC 9162 section 2.1.1).
Hash LeafHash(std::string_view leaf);

// SHA-256(0x01 || left || right): the hash of an interior node.
Hash NodeHash(const Hash& left, const Hash& right);

// SHA-256(""): the root of the empty tree.
Hash EmptyTreeRoot();

// Read access to the stored complete nodes of a tree.
class NodeReader {
 public:
  virtual ~NodeReader() = default;
  // Returns the stored hash of complete node (level, index); NotFound/DataLoss if absent.
  virtual Result<Hash> GetNode(int level, uint64_t index) const = 0;
};

// A node to store: the hash of complete node (level, index).
struct NodeWrite {
  int level;
  uint64_t index;
  Hash hash;
};

// The right edge of the tree: for each set bit L of size(), the hash of the complete node at
// level L that ends the tree's leaves at that bit. Enough to append and to compute the root.
// Held in memory by the single writer; copyable; not thread-safe for concurrent mutation.
class MerkleFrontier {
 public:
  // An empty tree.
  MerkleFrontier() = default;

  // Rebuilds the frontier of the first `size` leaves of the tree in `reader` with popcount(size)
  // reads. Returns the reader's error if a node is missing.
  static Result<MerkleFrontier> Load(const NodeReader& reader, uint64_t size);

  uint64_t size() const { return size_; }

  // Appends a leaf (the LeafHash of the entry). Pushes onto `writes` the leaf node and then every
  // node this append completed, bottom up. Performs no allocation other than writes->push_back;
  // reserving is the caller's job. Precondition: size() < 2^64 - 1.
  void Append(const Hash& leaf_hash, std::vector<NodeWrite>* writes);

  // Returns the root hash of the tree of size() leaves (EmptyTreeRoot() for size 0).
  Hash Root() const;

  // Equal iff same size and same frontier nodes.
  bool operator==(const MerkleFrontier& other) const;

 private:
  uint64_t size_ = 0;
  std::array<Hash, 64> nodes_{};  // nodes_[L] is meaningful iff bit L of size_ is set
};

// The functions below read a tree of at least the given size(s) through `reader` and make
// O(log n) reads. They return InvalidArgument for bad arguments and the reader's error for a
// missing node.

// Returns the root of the tree of the first `size` leaves (EmptyTreeRoot() for 0).
Result<Hash> RootAt(const NodeReader& reader, uint64_t size);

// Returns the inclusion proof of leaf `index` in the tree of `size` leaves: PATH(index, D[size])
// of RFC 9162 section 2.1.3.1, bottom up. InvalidArgument unless index < size.
Result<std::vector<Hash>> InclusionProof(const NodeReader& reader, uint64_t index, uint64_t size);

// Returns the consistency proof between the trees of `size1` and `size2` leaves: PROOF(size1,
// D[size2]) of RFC 9162 section 2.1.4.1 (empty when size1 == size2). InvalidArgument unless
// 0 < size1 <= size2: a proof from the empty tree is meaningless.
Result<std::vector<Hash>> ConsistencyProof(const NodeReader& reader, uint64_t size1,
                                           uint64_t size2);

// Verifies an inclusion proof per RFC 9162 section 2.1.3.2. Returns OK, or InvalidArgument
// saying why (index out of range, wrong proof length, root mismatch).
Status VerifyInclusion(uint64_t index, uint64_t size, const Hash& leaf_hash,
                       const std::vector<Hash>& proof, const Hash& root);

// Verifies a consistency proof per RFC 9162 section 2.1.4.2. Returns OK, or InvalidArgument
// saying why. Edge cases: size1 > size2 is an error; size1 == size2 requires an empty proof and
// root1 == root2; size1 == 0 is an error (nothing can be proven about the empty tree; the
// transparency-dev/merkle test vectors require this rejection).
Status VerifyConsistency(uint64_t size1, uint64_t size2, const std::vector<Hash>& proof,
                         const Hash& root1, const Hash& root2);

// An in-memory NodeReader, for tests and tools. Stores nodes densely per level, so it suits
// trees built by MerkleFrontier (nodes arrive in index order).
class MemoryNodeStore : public NodeReader {
 public:
  // Stores (or overwrites) a node. Precondition: 0 <= level < 64.
  void Put(const NodeWrite& write);

  // Returns the node, or NotFound if it was never Put.
  Result<Hash> GetNode(int level, uint64_t index) const override;

 private:
  std::vector<std::vector<Hash>> hashes_;   // [level][index]
  std::vector<std::vector<bool>> present_;  // [level][index]
};

}  // namespace tally

#endif  // TALLY_LEDGER_MERKLE_H_
