#include "ledger/coding.h"

#include "ledger/status.h"

namespace tally {

void PutStr8(std::string* out, std::string_view s) {
  TALLY_CHECK(s.size() <= 0xff);
  PutU8(out, static_cast<uint8_t>(s.size()));
  out->append(s);
}

void PutStr16(std::string* out, std::string_view s) {
  TALLY_CHECK(s.size() <= 0xffff);
  PutU16(out, static_cast<uint16_t>(s.size()));
  out->append(s);
}

void PutStr32(std::string* out, std::string_view s) {
  TALLY_CHECK(s.size() <= 0xffffffffu);
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}

bool Reader::ReadBytes(size_t n, std::string* s) {
  std::string_view b;
  if (!Take(n, &b)) return false;
  s->assign(b);
  return true;
}

bool Reader::ReadStr8(std::string* s, size_t max_bytes) {
  uint8_t n = 0;
  if (!ReadU8(&n)) return false;
  if (n > max_bytes) ok_ = false;
  return ReadBytes(n, s);
}

bool Reader::ReadStr16(std::string* s, size_t max_bytes) {
  uint16_t n = 0;
  if (!ReadU16(&n)) return false;
  if (n > max_bytes) ok_ = false;
  return ReadBytes(n, s);
}

bool Reader::ReadStr32(std::string* s, size_t max_bytes) {
  uint32_t n = 0;
  if (!ReadU32(&n)) return false;
  if (n > max_bytes) ok_ = false;
  return ReadBytes(n, s);
}

uint64_t DecodeU64(std::string_view s) {
  TALLY_CHECK(s.size() >= 8);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(s[i]);
  return v;
}

}  // namespace tally
