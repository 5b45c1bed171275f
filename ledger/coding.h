// Big-endian fixed-width integers and length-prefixed strings: the primitives of every on-disk
// encoding (entries, payloads, keys). Big-endian so that byte order equals numeric order in keys.
#ifndef TALLY_LEDGER_CODING_H_
#define TALLY_LEDGER_CODING_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tally {

inline void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }
// N bytes of v, most significant first, appended at once (one capacity check, not one per byte;
// the compiler turns the loop into a byte swap and a store).
template <int N>
inline void PutBigEndian(std::string* out, uint64_t v) {
  char bytes[N];
  for (int i = 0; i < N; ++i) bytes[i] = static_cast<char>(v >> (8 * (N - 1 - i)));
  out->append(bytes, N);
}
inline void PutU16(std::string* out, uint16_t v) { PutBigEndian<2>(out, v); }
inline void PutU32(std::string* out, uint32_t v) { PutBigEndian<4>(out, v); }
inline void PutU64(std::string* out, uint64_t v) { PutBigEndian<8>(out, v); }
inline void PutI64(std::string* out, int64_t v) { PutU64(out, static_cast<uint64_t>(v)); }

// A string with a one-byte length. REQUIRES: s.size() <= 255.
void PutStr8(std::string* out, std::string_view s);
// A string with a two-byte length. REQUIRES: s.size() <= 65535.
void PutStr16(std::string* out, std::string_view s);
// A string with a four-byte length.
void PutStr32(std::string* out, std::string_view s);

inline std::string EncodeU64(uint64_t v) {
  std::string s;
  PutU64(&s, v);
  return s;
}
inline std::string EncodeI64(int64_t v) { return EncodeU64(static_cast<uint64_t>(v)); }

// Reads the primitives back. Every read is bounds-checked: after the first failure the reader is
// in error and every later read fails too, so a decoder checks ok() once at the end.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool ReadU8(uint8_t* v) { return ReadBigEndian<1>(v); }
  bool ReadU16(uint16_t* v) { return ReadBigEndian<2>(v); }
  bool ReadU32(uint32_t* v) { return ReadBigEndian<4>(v); }
  bool ReadU64(uint64_t* v) { return ReadBigEndian<8>(v); }
  bool ReadI64(int64_t* v) {
    uint64_t u = 0;
    if (!ReadU64(&u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  }
  // Length-prefixed strings; a length above max_bytes is an error.
  bool ReadStr8(std::string* s, size_t max_bytes);
  bool ReadStr16(std::string* s, size_t max_bytes);
  bool ReadStr32(std::string* s, size_t max_bytes);
  bool ReadBytes(size_t n, std::string* s);
  // The next n bytes, as a view into the data being read (no copy).
  bool ReadView(size_t n, std::string_view* v) { return Take(n, v); }

  bool ok() const { return ok_; }
  bool empty() const { return data_.empty(); }
  size_t remaining() const { return data_.size(); }
  void Fail() { ok_ = false; }

 private:
  bool Take(size_t n, std::string_view* out) {
    if (!ok_ || data_.size() < n) {
      ok_ = false;
      return false;
    }
    *out = data_.substr(0, n);
    data_.remove_prefix(n);
    return true;
  }
  // N bytes, most significant first, taken at once.
  template <int N, typename T>
  bool ReadBigEndian(T* v) {
    std::string_view b;
    if (!Take(N, &b)) return false;
    uint64_t x = 0;
    for (int i = 0; i < N; ++i) x = (x << 8) | static_cast<uint8_t>(b[i]);
    *v = static_cast<T>(x);
    return true;
  }
  std::string_view data_;
  bool ok_ = true;
};

// Decodes an 8-byte big-endian integer. REQUIRES: s.size() >= 8.
uint64_t DecodeU64(std::string_view s);
inline int64_t DecodeI64(std::string_view s) { return static_cast<int64_t>(DecodeU64(s)); }

}  // namespace tally

#endif  // TALLY_LEDGER_CODING_H_
