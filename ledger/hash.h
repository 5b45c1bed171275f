// SHA-256 hashing: the one hash function of the ledger (entries, Merkle tree, key ids).
#ifndef TALLY_LEDGER_HASH_H_
#define TALLY_LEDGER_HASH_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace tally {

// A SHA-256 digest.
using Hash = std::array<uint8_t, 32>;

inline constexpr size_t kHashSize = 32;

// Returns SHA-256(data). Thread-safe.
Hash Sha256(std::string_view data);

// Returns SHA-256 of the concatenation of `parts`, without copying them. Thread-safe.
Hash Sha256(std::initializer_list<std::string_view> parts);

// Returns the 64 lowercase hex digits of `hash`.
std::string HashToHex(const Hash& hash);

// Returns a view of the 32 bytes of `hash` as chars. The view lives as long as `hash`.
inline std::string_view AsBytes(const Hash& hash) {
  return std::string_view(reinterpret_cast<const char*>(hash.data()), hash.size());
}

}  // namespace tally

#endif  // TALLY_LEDGER_HASH_H_
