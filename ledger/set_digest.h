// SetDigest: an order-independent digest of a set of (key, value) pairs under a secret key, for
// comparing two sets without holding either: the sum, mod 2^128, of SipHash-2-4-128 of each pair
// (the additive multiset hash of Clarke et al., "Incremental Multiset Hash Functions and Their
// Application to Memory Integrity Checking", 2003, with SipHash as its keyed function), with the
// count and bytes of the pairs. Two digests under one key are equal when the sets are; for two
// different sets they are equal with probability about 2^-128, if the key is secret from whoever
// chose the sets (WithRandomKey: a fresh key per use, never stored or shown). A pair added twice
// counts twice, so it is a digest of sets only where each key is added once.
#ifndef TALLY_LEDGER_SET_DIGEST_H_
#define TALLY_LEDGER_SET_DIGEST_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace tally {

// SipHash-2-4 with a 128-bit output (Aumasson and Bernstein; the reference's 128-bit variant):
// the output's 16 bytes are {lo, hi}, each little-endian.
struct SipHash128Out {
  uint64_t lo = 0;
  uint64_t hi = 0;
};
SipHash128Out SipHash128(const std::array<uint8_t, 16>& key, std::string_view message);
// SipHash-2-4 with the reference's 64-bit output (for its published test vectors).
uint64_t SipHash64(const std::array<uint8_t, 16>& key, std::string_view message);
// SipHash-1-3, 64-bit output: one round per block and three to finish, the variant Rust's and
// Python's hash tables key theirs with against chosen collisions; about twice as fast.
uint64_t SipHash13(const std::array<uint8_t, 16>& key, std::string_view message);

class SetDigest {
 public:
  using Key = std::array<uint8_t, 16>;
  explicit SetDigest(const Key& key) : key_(key) {}
  // A digest under a fresh key from OpenSSL's random generator.
  static SetDigest WithRandomKey();
  // An empty digest under the same key.
  SetDigest Empty() const { return SetDigest(key_); }

  // Adds the pair: SipHash-2-4-128 of the key's length (4 bytes, little-endian), the key and the
  // value, so that no two pairs are one message.
  void Add(std::string_view key, std::string_view value);
  // Takes back a pair added before (when a key's value is replaced).
  void Remove(std::string_view key, std::string_view value);
  // A 64-bit fingerprint of `key` under the same secret key (SipHash13), so that whoever chooses
  // keys cannot make two of them share one.
  uint64_t Fingerprint(std::string_view key) const;

  // Pairs added and not taken back.
  uint64_t count() const { return count_; }
  // Bytes of the keys and values added (and not taken back).
  uint64_t bytes() const { return bytes_; }
  // The same key, and the same sum and count.
  bool operator==(const SetDigest& o) const {
    return key_ == o.key_ && sum_lo_ == o.sum_lo_ && sum_hi_ == o.sum_hi_ && count_ == o.count_;
  }

 private:
  Key key_;
  uint64_t sum_lo_ = 0;  // the sum mod 2^128: its low and high halves
  uint64_t sum_hi_ = 0;
  uint64_t count_ = 0;
  uint64_t bytes_ = 0;
  SipHash128Out Hash(std::string_view key, std::string_view value);
  std::string message_;  // the last pair's message, its memory kept for the next one
};

}  // namespace tally

#endif  // TALLY_LEDGER_SET_DIGEST_H_
