// Base64 (RFC 4648 section 4, standard alphabet, padded) and hex encodings.
#ifndef TALLY_LEDGER_BASE64_H_
#define TALLY_LEDGER_BASE64_H_

#include <string>
#include <string_view>

#include "ledger/status.h"

namespace tally {

// Returns the padded standard base64 encoding of `data`.
std::string Base64Encode(std::string_view data);
// Appends the same encoding to *out, with no allocation beyond growing *out.
void AppendBase64(std::string_view data, std::string* out);

// Decodes padded standard base64, strictly: the length must be a multiple of 4, only the
// alphabet and at most two trailing '=' are allowed (no whitespace, no line breaks), and the
// unused bits of the last symbol must be zero, so every byte string has exactly one accepted
// encoding. Returns InvalidArgument otherwise. The empty string decodes to the empty string.
Result<std::string> Base64Decode(std::string_view text);

// Returns the lowercase hex encoding of `data` (two digits per byte).
std::string HexEncode(std::string_view data);

}  // namespace tally

#endif  // TALLY_LEDGER_BASE64_H_
