#include "ledger/note.h"

#include <cstdio>

#include "ledger/base64.h"
#include "ledger/utf8.h"

namespace tally {
namespace {

constexpr std::string_view kSigPrefix = "\xE2\x80\x94 ";  // em dash U+2014, space
// Unicode White_Space, as Go's unicode.IsSpace (the reference implementation's name rule).
bool IsUnicodeSpace(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Valid UTF-8 with no control character other than newline.
bool IsCleanUtf8(std::string_view s) {
  while (!s.empty()) {
    const int32_t cp = NextCodePoint(&s);
    if (cp == kBadUtf8 || (cp < 0x20 && cp != '\n')) return false;
  }
  return true;
}

Status Malformed(const std::string& why) {
  return Status::InvalidArgument("malformed note: " + why);
}

uint32_t ReadBigEndian32(std::string_view b) {
  return static_cast<uint32_t>(static_cast<uint8_t>(b[0])) << 24 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[1])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[2])) << 8 | static_cast<uint8_t>(b[3]);
}

// Parses one signature line, without its newline.
Result<NoteSignature> ParseSignatureLine(std::string_view line) {
  if (line.substr(0, kSigPrefix.size()) != kSigPrefix) {
    return Malformed("signature line does not start with an em dash and a space");
  }
  line.remove_prefix(kSigPrefix.size());
  const size_t space = line.find(' ');
  if (space == std::string_view::npos) return Malformed("signature line has no signature");
  const std::string_view name = line.substr(0, space);
  if (!IsValidKeyName(name)) return Malformed("invalid key name in signature line");
  Result<std::string> blob = Base64Decode(line.substr(space + 1));
  if (!blob.ok() || blob->size() < 5) return Malformed("signature is not base64 of 5+ bytes");
  return NoteSignature{std::string(name), ReadBigEndian32(*blob), blob->substr(4)};
}

std::string KeyLabel(const Verifier& verifier) {
  char id[9];
  std::snprintf(id, sizeof(id), "%08x", verifier.key_id());
  return verifier.name() + "+" + id;
}

}  // namespace

bool IsValidKeyName(std::string_view name) {
  if (name.empty()) return false;
  while (!name.empty()) {
    const int32_t cp = NextCodePoint(&name);
    if (cp == kBadUtf8 || cp < 0x20 || cp == '+' || IsUnicodeSpace(cp)) return false;
  }
  return true;
}

bool IsValidNoteText(std::string_view text) {
  return !text.empty() && text.back() == '\n' && IsCleanUtf8(text);
}

std::string SignNote(std::string_view text, const Signer& signer) {
  TALLY_CHECK(IsValidNoteText(text));
  const uint32_t id = signer.key_id();
  std::string blob = {static_cast<char>(id >> 24), static_cast<char>(id >> 16),
                      static_cast<char>(id >> 8), static_cast<char>(id)};
  blob += signer.Sign(text);
  std::string note(text);
  note += '\n';
  note += kSigPrefix;
  note += signer.name();
  note += ' ';
  note += Base64Encode(blob);
  note += '\n';
  return note;
}

Result<std::pair<std::string, std::vector<NoteSignature>>> ParseNote(std::string_view note) {
  if (!IsCleanUtf8(note)) return Malformed("invalid UTF-8 or control character");
  const size_t split = note.rfind("\n\n");
  if (split == std::string_view::npos) return Malformed("no blank line before signatures");
  std::string_view sigs = note.substr(split + 2);
  if (sigs.empty() || sigs.back() != '\n') return Malformed("no signature lines");
  std::vector<NoteSignature> signatures;
  while (!sigs.empty()) {
    if (signatures.size() == kMaxNoteSignatures) return Malformed("too many signatures");
    const size_t eol = sigs.find('\n');
    ASSIGN_OR_RETURN(NoteSignature sig, ParseSignatureLine(sigs.substr(0, eol)));
    signatures.push_back(std::move(sig));
    sigs.remove_prefix(eol + 1);
  }
  return std::make_pair(std::string(note.substr(0, split + 1)), std::move(signatures));
}

Status VerifyNote(std::string_view note, const Verifier& verifier, std::string* text_out) {
  ASSIGN_OR_RETURN(auto parsed, ParseNote(note));
  bool verified = false;
  for (const NoteSignature& sig : parsed.second) {
    if (sig.name != verifier.name() || sig.key_id != verifier.key_id()) continue;
    if (!verifier.Verify(parsed.first, sig.signature)) {
      return Status::InvalidArgument("note: the signature by " + KeyLabel(verifier) +
                                     " does not verify");
    }
    verified = true;
  }
  if (!verified) return Status::InvalidArgument("note: no signature by " + KeyLabel(verifier));
  if (text_out != nullptr) *text_out = std::move(parsed.first);
  return Status::Ok();
}

}  // namespace tally
