#include "ledger/set_digest.h"

#include <openssl/rand.h>

#include <bit>
#include <cstring>

#include "ledger/status.h"

namespace tally {

namespace {

uint64_t Load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

// SipHash's state, with `c` rounds per message block and `d` in finalization (SipHash-c-d).
template <int c, int d>
struct SipState {
  uint64_t v0, v1, v2, v3;

  void Round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }
  void Compress(uint64_t m) {
    v3 ^= m;
    for (int i = 0; i < c; ++i) Round();
    v0 ^= m;
  }
  uint64_t Finalize() {
    for (int i = 0; i < d; ++i) Round();
    return v0 ^ v1 ^ v2 ^ v3;
  }
};

// Initializes, and compresses every block of the message and its last (length) block.
template <int c, int d>
SipState<c, d> Absorb(const std::array<uint8_t, 16>& key, std::string_view m, bool wide) {
  const uint64_t k0 = Load64(reinterpret_cast<const char*>(key.data()));
  const uint64_t k1 = Load64(reinterpret_cast<const char*>(key.data()) + 8);
  SipState<c, d> s{k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL,
                   k0 ^ 0x6c7967656e657261ULL, k1 ^ 0x7465646279746573ULL};
  if (wide) s.v1 ^= 0xee;
  const size_t whole = m.size() / 8 * 8;
  for (size_t i = 0; i < whole; i += 8) s.Compress(Load64(m.data() + i));
  uint64_t last = static_cast<uint64_t>(m.size()) << 56;
  for (size_t i = whole; i < m.size(); ++i) {
    last |= static_cast<uint64_t>(static_cast<uint8_t>(m[i])) << (8 * (i - whole));
  }
  s.Compress(last);
  return s;
}

// The 64-bit output.
template <int c, int d>
uint64_t SipHash64With(const std::array<uint8_t, 16>& key, std::string_view message) {
  SipState<c, d> s = Absorb<c, d>(key, message, false);
  s.v2 ^= 0xff;
  return s.Finalize();
}

}  // namespace

SipHash128Out SipHash128(const std::array<uint8_t, 16>& key, std::string_view message) {
  SipState<2, 4> s = Absorb<2, 4>(key, message, true);
  SipHash128Out out;
  s.v2 ^= 0xee;
  out.lo = s.Finalize();
  s.v1 ^= 0xdd;
  out.hi = s.Finalize();
  return out;
}

uint64_t SipHash64(const std::array<uint8_t, 16>& key, std::string_view message) {
  return SipHash64With<2, 4>(key, message);
}

uint64_t SipHash13(const std::array<uint8_t, 16>& key, std::string_view message) {
  return SipHash64With<1, 3>(key, message);
}

SetDigest SetDigest::WithRandomKey() {
  Key key;
  TALLY_CHECK(RAND_bytes(key.data(), static_cast<int>(key.size())) == 1);
  return SetDigest(key);
}

SipHash128Out SetDigest::Hash(std::string_view key, std::string_view value) {
  TALLY_CHECK(key.size() <= UINT32_MAX);
  const auto n = static_cast<uint32_t>(key.size());
  message_.clear();
  for (int i = 0; i < 4; ++i) message_.push_back(static_cast<char>(n >> (8 * i)));
  message_.append(key);
  message_.append(value);
  return SipHash128(key_, message_);
}

void SetDigest::Add(std::string_view key, std::string_view value) {
  const SipHash128Out h = Hash(key, value);
  sum_lo_ += h.lo;
  sum_hi_ += h.hi + (sum_lo_ < h.lo ? 1 : 0);  // the carry out of the low half
  ++count_;
  bytes_ += key.size() + value.size();
}

void SetDigest::Remove(std::string_view key, std::string_view value) {
  const SipHash128Out h = Hash(key, value);
  sum_hi_ -= h.hi + (sum_lo_ < h.lo ? 1 : 0);  // the borrow into the low half
  sum_lo_ -= h.lo;
  --count_;
  bytes_ -= key.size() + value.size();
}

uint64_t SetDigest::Fingerprint(std::string_view key) const { return SipHash13(key_, key); }

}  // namespace tally
