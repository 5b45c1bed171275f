// Big-endian fixed-width integers and length-prefixed strings: the primitives of every on-disk
// encoding (entries, payloads, keys). Big-endian so that byte order equals numeric order in keys.
#ifndef TALLY_LEDGER_CODING_H_
#define TALLY_LEDGER_CODING_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tally {

inline void PutU8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }
inline void PutU16(std::string* out, uint16_t v) {
  PutU8(out, static_cast<uint8_t>(v >> 8));
  PutU8(out, static_cast<uint8_t>(v));
}
inline void PutU32(std::string* out, uint32_t v) {
  PutU16(out, static_cast<uint16_t>(v >> 16));
  PutU16(out, static_cast<uint16_t>(v));
}
inline void PutU64(std::string* out, uint64_t v) {
  PutU32(out, static_cast<uint32_t>(v >> 32));
  PutU32(out, static_cast<uint32_t>(v));
}
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

  bool ReadU8(uint8_t* v);
  bool ReadU16(uint16_t* v);
  bool ReadU32(uint32_t* v);
  bool ReadU64(uint64_t* v);
  bool ReadI64(int64_t* v);
  // Length-prefixed strings; a length above max_bytes is an error.
  bool ReadStr8(std::string* s, size_t max_bytes);
  bool ReadStr16(std::string* s, size_t max_bytes);
  bool ReadStr32(std::string* s, size_t max_bytes);
  bool ReadBytes(size_t n, std::string* s);

  bool ok() const { return ok_; }
  bool empty() const { return data_.empty(); }
  size_t remaining() const { return data_.size(); }
  void Fail() { ok_ = false; }

 private:
  bool Take(size_t n, std::string_view* out);
  std::string_view data_;
  bool ok_ = true;
};

// Decodes an 8-byte big-endian integer. REQUIRES: s.size() >= 8.
uint64_t DecodeU64(std::string_view s);
inline int64_t DecodeI64(std::string_view s) { return static_cast<int64_t>(DecodeU64(s)); }

}  // namespace tally

#endif  // TALLY_LEDGER_CODING_H_
