#include "ledger/base64.h"

#include <array>
#include <cstdint>

namespace tally {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr int8_t kInvalid = -1;

constexpr std::array<int8_t, 256> MakeDecodeTable() {
  std::array<int8_t, 256> table{};
  for (auto& v : table) v = kInvalid;
  for (int i = 0; i < 64; ++i) table[static_cast<uint8_t>(kAlphabet[i])] = static_cast<int8_t>(i);
  return table;
}

constexpr std::array<int8_t, 256> kDecode = MakeDecodeTable();

// Decodes one group of four symbols, `pad` of which (0 to 2, at the end) are '='.
bool DecodeQuad(std::string_view quad, int pad, std::string* out) {
  uint32_t bits = 0;
  for (int i = 0; i < 4 - pad; ++i) {
    int8_t v = kDecode[static_cast<uint8_t>(quad[i])];
    if (v == kInvalid) return false;
    bits |= static_cast<uint32_t>(v) << (18 - 6 * i);
  }
  // Canonical form: the bits of the last symbol that fall past the final byte must be zero.
  const uint32_t unused_mask = pad == 2 ? 0xFFFFu : (pad == 1 ? 0xFFu : 0u);
  if ((bits & unused_mask) != 0) return false;
  out->push_back(static_cast<char>(bits >> 16));
  if (pad < 2) out->push_back(static_cast<char>((bits >> 8) & 0xFF));
  if (pad < 1) out->push_back(static_cast<char>(bits & 0xFF));
  return true;
}

int PaddingOf(std::string_view text) {
  if (text.empty() || text.back() != '=') return 0;
  return text[text.size() - 2] == '=' ? 2 : 1;
}

}  // namespace

void AppendBase64(std::string_view data, std::string* out) {
  const size_t start = out->size();
  out->resize(start + (data.size() + 2) / 3 * 4);
  char* p = out->data() + start;
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t bits = static_cast<uint32_t>(static_cast<uint8_t>(data[i])) << 16 |
                    static_cast<uint32_t>(static_cast<uint8_t>(data[i + 1])) << 8 |
                    static_cast<uint8_t>(data[i + 2]);
    *p++ = kAlphabet[(bits >> 18) & 63];
    *p++ = kAlphabet[(bits >> 12) & 63];
    *p++ = kAlphabet[(bits >> 6) & 63];
    *p++ = kAlphabet[bits & 63];
  }
  const size_t rest = data.size() - i;
  if (rest == 0) return;
  uint32_t bits = static_cast<uint32_t>(static_cast<uint8_t>(data[i])) << 16;
  if (rest == 2) bits |= static_cast<uint32_t>(static_cast<uint8_t>(data[i + 1])) << 8;
  *p++ = kAlphabet[(bits >> 18) & 63];
  *p++ = kAlphabet[(bits >> 12) & 63];
  *p++ = rest == 2 ? kAlphabet[(bits >> 6) & 63] : '=';
  *p = '=';
}

std::string Base64Encode(std::string_view data) {
  std::string out;
  AppendBase64(data, &out);
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return Status::InvalidArgument("base64: length is not a multiple of 4");
  }
  const int pad = PaddingOf(text);
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    if (!DecodeQuad(text.substr(i, 4), last ? pad : 0, &out)) {
      return Status::InvalidArgument("base64: invalid character, padding or trailing bits");
    }
  }
  return out;
}

std::string HexEncode(std::string_view data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (char c : data) {
    const auto byte = static_cast<uint8_t>(c);
    out.push_back(kDigits[byte >> 4]);
    out.push_back(kDigits[byte & 0x0F]);
  }
  return out;
}

}  // namespace tally
