#include "ledger/merkle.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

namespace tally {
namespace {

// Largest power of two strictly below n: the split point k of RFC 9162. Precondition: n >= 2.
uint64_t SplitPoint(uint64_t n) { return std::bit_floor(n - 1); }

// Hash of the leaves [begin, begin + count): MTH of that range as a subtree of the tree. Every
// range the RFC recursion visits starts at a multiple of bit_ceil(count), so the range splits
// into complete aligned nodes, one per set bit of count, largest first; MTH is their fold from
// the right. Precondition: count >= 1.
Result<Hash> RangeHash(const NodeReader& reader, uint64_t begin, uint64_t count) {
  Hash acc{};
  bool first = true;
  // Lowest bit first: that is the rightmost node, which the fold starts from.
  for (uint64_t rest = count; rest != 0; rest &= rest - 1) {
    const int level = std::countr_zero(rest);
    const uint64_t start = begin + (rest & (rest - 1));  // the higher bits come before it
    ASSIGN_OR_RETURN(Hash node, reader.GetNode(level, start >> level));
    acc = first ? node : NodeHash(node, acc);
    first = false;
  }
  return acc;
}

Status ProofError(const std::string& what) { return Status::InvalidArgument(what); }

std::string Sizes(uint64_t a, uint64_t b) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ")";
}

// One step of the RFC 9162 verification loops: after hashing a left sibling, climb past the
// levels where the node is the last one of the tree and has no right sibling.
void SkipRightEdge(uint64_t* fn, uint64_t* sn) {
  while ((*fn & 1) == 0 && *fn != 0) {
    *fn >>= 1;
    *sn >>= 1;
  }
}

}  // namespace

Hash LeafHash(std::string_view leaf) {
  static constexpr char kLeafPrefix[1] = {0x00};
  return Sha256({std::string_view(kLeafPrefix, 1), leaf});
}

Hash NodeHash(const Hash& left, const Hash& right) {
  // One contiguous update is measurably cheaper than three for such a short input.
  char buf[1 + 2 * kHashSize];
  buf[0] = 0x01;
  std::memcpy(buf + 1, left.data(), kHashSize);
  std::memcpy(buf + 1 + kHashSize, right.data(), kHashSize);
  return Sha256(std::string_view(buf, sizeof(buf)));
}

Hash EmptyTreeRoot() {
  static const Hash kRoot = Sha256(std::string_view());
  return kRoot;
}

// ---------------------------------------------------------------------------------------------
// MerkleFrontier

Result<MerkleFrontier> MerkleFrontier::Load(const NodeReader& reader, uint64_t size) {
  MerkleFrontier frontier;
  for (uint64_t rest = size; rest != 0; rest &= rest - 1) {
    const int level = std::countr_zero(rest);
    ASSIGN_OR_RETURN(frontier.nodes_[level], reader.GetNode(level, (size >> level) - 1));
  }
  frontier.size_ = size;
  return frontier;
}

void MerkleFrontier::Append(const Hash& leaf_hash, std::vector<NodeWrite>* writes) {
  TALLY_CHECK(size_ != UINT64_MAX);
  writes->push_back(NodeWrite{0, size_, leaf_hash});
  Hash hash = leaf_hash;
  uint64_t index = size_;
  int level = 0;
  // Each set low bit of size_ is a complete left sibling waiting for this subtree.
  while ((size_ >> level) & 1) {
    hash = NodeHash(nodes_[level], hash);
    index >>= 1;
    ++level;
    writes->push_back(NodeWrite{level, index, hash});
  }
  nodes_[level] = hash;
  ++size_;
}

Hash MerkleFrontier::Root() const {
  if (size_ == 0) return EmptyTreeRoot();
  Hash acc{};
  bool first = true;
  for (uint64_t rest = size_; rest != 0; rest &= rest - 1) {
    const int level = std::countr_zero(rest);
    acc = first ? nodes_[level] : NodeHash(nodes_[level], acc);
    first = false;
  }
  return acc;
}

bool MerkleFrontier::operator==(const MerkleFrontier& other) const {
  if (size_ != other.size_) return false;
  for (uint64_t rest = size_; rest != 0; rest &= rest - 1) {
    const int level = std::countr_zero(rest);
    if (nodes_[level] != other.nodes_[level]) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Proofs from stored nodes

Result<Hash> RootAt(const NodeReader& reader, uint64_t size) {
  if (size == 0) return EmptyTreeRoot();
  return RangeHash(reader, 0, size);
}

// Walks PATH(index, D[size]) top down and reverses. Only the first right sibling can be an
// incomplete range; below it every sibling is a single complete node, hence O(log n) reads.
Result<std::vector<Hash>> InclusionProof(const NodeReader& reader, uint64_t index, uint64_t size) {
  if (index >= size) {
    return ProofError("inclusion proof: index " + std::to_string(index) +
                      " out of range for tree size " + std::to_string(size));
  }
  std::vector<Hash> proof;
  uint64_t begin = 0, end = size;
  while (end - begin > 1) {
    const uint64_t k = SplitPoint(end - begin);
    if (index < begin + k) {
      ASSIGN_OR_RETURN(Hash right, RangeHash(reader, begin + k, end - begin - k));
      proof.push_back(right);
      end = begin + k;
    } else {
      ASSIGN_OR_RETURN(Hash left, RangeHash(reader, begin, k));
      proof.push_back(left);
      begin += k;
    }
  }
  std::reverse(proof.begin(), proof.end());
  return proof;
}

// Walks SUBPROOF(size1, D[size2], true) top down and reverses; `m` counts the old leaves inside
// the current range [begin, end), and `whole` is the RFC's flag b.
Result<std::vector<Hash>> ConsistencyProof(const NodeReader& reader, uint64_t size1,
                                           uint64_t size2) {
  if (size1 == 0 || size1 > size2) {
    return ProofError("consistency proof: invalid sizes " + Sizes(size1, size2));
  }
  std::vector<Hash> proof;
  uint64_t begin = 0, end = size2, m = size1;
  bool whole = true;
  while (m != end - begin) {
    const uint64_t k = SplitPoint(end - begin);
    if (m <= k) {
      ASSIGN_OR_RETURN(Hash right, RangeHash(reader, begin + k, end - begin - k));
      proof.push_back(right);
      end = begin + k;
    } else {
      ASSIGN_OR_RETURN(Hash left, RangeHash(reader, begin, k));
      proof.push_back(left);
      begin += k;
      m -= k;
      whole = false;
    }
  }
  if (!whole) {
    ASSIGN_OR_RETURN(Hash node, RangeHash(reader, begin, m));
    proof.push_back(node);
  }
  std::reverse(proof.begin(), proof.end());
  return proof;
}

// ---------------------------------------------------------------------------------------------
// Verification

Status VerifyInclusion(uint64_t index, uint64_t size, const Hash& leaf_hash,
                       const std::vector<Hash>& proof, const Hash& root) {
  if (index >= size) {
    return ProofError("inclusion proof: index " + std::to_string(index) +
                      " out of range for tree size " + std::to_string(size));
  }
  uint64_t fn = index, sn = size - 1;
  Hash r = leaf_hash;
  for (const Hash& p : proof) {
    if (sn == 0) return ProofError("inclusion proof: too many hashes");
    if ((fn & 1) != 0 || fn == sn) {
      r = NodeHash(p, r);
      SkipRightEdge(&fn, &sn);
    } else {
      r = NodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) return ProofError("inclusion proof: too few hashes");
  if (r != root) return ProofError("inclusion proof: computed root does not match");
  return Status::Ok();
}

namespace {

// RFC 9162 section 2.1.4.2 steps 2 to 7, for 0 < size1 < size2 and a non-empty proof.
Status ChainConsistency(uint64_t size1, uint64_t size2, const std::vector<Hash>& proof,
                        const Hash& root1, const Hash& root2) {
  // A power-of-two size1 is a complete node whose hash is root1, so the proof omits it.
  size_t i = 0;
  const Hash& seed = std::has_single_bit(size1) ? root1 : proof[i++];
  Hash fr = seed, sr = seed;
  uint64_t fn = size1 - 1, sn = size2 - 1;
  while ((fn & 1) != 0) {
    fn >>= 1;
    sn >>= 1;
  }
  for (; i < proof.size(); ++i) {
    if (sn == 0) return ProofError("consistency proof: too many hashes");
    if ((fn & 1) != 0 || fn == sn) {
      fr = NodeHash(proof[i], fr);
      sr = NodeHash(proof[i], sr);
      SkipRightEdge(&fn, &sn);
    } else {
      sr = NodeHash(sr, proof[i]);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) return ProofError("consistency proof: too few hashes");
  if (fr != root1) return ProofError("consistency proof: computed old root does not match");
  if (sr != root2) return ProofError("consistency proof: computed new root does not match");
  return Status::Ok();
}

}  // namespace

Status VerifyConsistency(uint64_t size1, uint64_t size2, const std::vector<Hash>& proof,
                         const Hash& root1, const Hash& root2) {
  if (size1 > size2) {
    return ProofError("consistency proof: old size exceeds new size " + Sizes(size1, size2));
  }
  if (size1 == 0) {
    return ProofError("consistency proof: a proof from the empty tree is meaningless");
  }
  if (size1 == size2) {
    if (!proof.empty()) return ProofError("consistency proof: sizes are equal, proof not empty");
    if (root1 != root2) return ProofError("consistency proof: sizes are equal, roots differ");
    return Status::Ok();
  }
  if (proof.empty()) return ProofError("consistency proof: empty proof for different sizes");
  return ChainConsistency(size1, size2, proof, root1, root2);
}

// ---------------------------------------------------------------------------------------------
// MemoryNodeStore

void MemoryNodeStore::Put(const NodeWrite& write) {
  TALLY_CHECK(write.level >= 0 && write.level < 64);
  const auto level = static_cast<size_t>(write.level);
  if (level >= hashes_.size()) {
    hashes_.resize(level + 1);
    present_.resize(level + 1);
  }
  if (write.index >= hashes_[level].size()) {
    hashes_[level].resize(write.index + 1);
    present_[level].resize(write.index + 1);
  }
  hashes_[level][write.index] = write.hash;
  present_[level][write.index] = true;
}

Result<Hash> MemoryNodeStore::GetNode(int level, uint64_t index) const {
  if (level < 0 || static_cast<size_t>(level) >= hashes_.size() || index >= hashes_[level].size() ||
      !present_[level][index]) {
    return Status::NotFound("merkle node (" + std::to_string(level) + ", " + std::to_string(index) +
                            ") not stored");
  }
  return hashes_[level][index];
}

}  // namespace tally
