// Micro-benchmark of the Merkle tree on one thread:
//   1. LeafHash + MerkleFrontier::Append of N 120-byte entries (the ledger's write path);
//   2. receipts: InclusionProof over a MemoryNodeStore of that tree, then VerifyInclusion.
// Usage: bench_merkle [N]   (default 2,000,000)
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ledger/merkle.h"

namespace tally {
namespace {

constexpr size_t kEntrySize = 120;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A distinct 120-byte entry per index.
void FillEntry(uint64_t i, std::string* entry) { std::memcpy(entry->data(), &i, sizeof(i)); }

// Times the write path; the writes are dropped, as a writer would hand them to storage.
Hash BenchAppend(uint64_t n) {
  std::string entry(kEntrySize, 'e');
  std::vector<NodeWrite> writes;
  writes.reserve(64);
  MerkleFrontier frontier;
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) {
    FillEntry(i, &entry);
    writes.clear();
    frontier.Append(LeafHash(entry), &writes);
  }
  const double secs = SecondsSince(start);
  std::printf("append:   %llu leaves in %.3f s = %.0f leaves/s (LeafHash + Append)\n",
              static_cast<unsigned long long>(n), secs, static_cast<double>(n) / secs);
  return frontier.Root();
}

Hash BuildStore(uint64_t n, MemoryNodeStore* store) {
  std::string entry(kEntrySize, 'e');
  std::vector<NodeWrite> writes;
  writes.reserve(64);
  MerkleFrontier frontier;
  for (uint64_t i = 0; i < n; ++i) {
    FillEntry(i, &entry);
    writes.clear();
    frontier.Append(LeafHash(entry), &writes);
    for (const NodeWrite& w : writes) store->Put(w);
  }
  return frontier.Root();
}

// Times proof construction plus verification at pseudo-random indices.
bool BenchReceipts(const MemoryNodeStore& store, uint64_t n, const Hash& root) {
  const uint64_t receipts = n < 200000 ? n : 200000;
  std::string entry(kEntrySize, 'e');
  uint64_t x = 0x9E3779B97F4A7C15u;
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t r = 0; r < receipts; ++r) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const uint64_t index = x % n;
    Result<std::vector<Hash>> proof = InclusionProof(store, index, n);
    FillEntry(index, &entry);
    if (!proof.ok() || !VerifyInclusion(index, n, LeafHash(entry), *proof, root).ok()) {
      std::fprintf(stderr, "receipt %llu failed\n", static_cast<unsigned long long>(index));
      return false;
    }
  }
  const double secs = SecondsSince(start);
  std::printf("receipts: %llu in %.3f s = %.0f receipts/s (InclusionProof + VerifyInclusion)\n",
              static_cast<unsigned long long>(receipts), secs,
              static_cast<double>(receipts) / secs);
  return true;
}

}  // namespace
}  // namespace tally

int main(int argc, char** argv) {
  const uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2000000;
  if (n == 0) {
    std::fprintf(stderr, "usage: bench_merkle [N > 0]\n");
    return 2;
  }
  const tally::Hash root = tally::BenchAppend(n);
  tally::MemoryNodeStore store;
  if (tally::BuildStore(n, &store) != root) {
    std::fprintf(stderr, "roots differ\n");
    return 1;
  }
  std::printf("root:     %s\n", tally::HashToHex(root).c_str());
  return tally::BenchReceipts(store, n, root) ? 0 : 1;
}
