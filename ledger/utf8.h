// Strict UTF-8 decoding (RFC 3629), shared by the signed-note parser and the JSON writer.
#ifndef TALLY_LEDGER_UTF8_H_
#define TALLY_LEDGER_UTF8_H_

#include <cstdint>
#include <string_view>

namespace tally {

inline constexpr int32_t kBadUtf8 = -1;

// Decodes the code point at (*s)[0] and advances *s past it. Returns kBadUtf8 (and leaves *s)
// for a truncated, overlong or surrogate sequence or one beyond U+10FFFF. Precondition:
// !s->empty().
inline int32_t NextCodePoint(std::string_view* s) {
  const auto b0 = static_cast<uint8_t>((*s)[0]);
  int len = 0;
  int32_t cp = 0, min = 0;
  if (b0 < 0x80) {
    s->remove_prefix(1);
    return b0;
  } else if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return kBadUtf8;
  }
  if (s->size() < static_cast<size_t>(len)) return kBadUtf8;
  for (int i = 1; i < len; ++i) {
    const auto b = static_cast<uint8_t>((*s)[i]);
    if ((b & 0xC0) != 0x80) return kBadUtf8;
    cp = cp << 6 | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return kBadUtf8;
  s->remove_prefix(static_cast<size_t>(len));
  return cp;
}

}  // namespace tally

#endif  // TALLY_LEDGER_UTF8_H_
