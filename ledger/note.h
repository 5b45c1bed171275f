// C2SP signed notes (https://c2sp.org/signed-note): a text followed by a blank line and
// signature lines "— <name> <base64(4-byte key id || signature)>".
#ifndef TALLY_LEDGER_NOTE_H_
#define TALLY_LEDGER_NOTE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ledger/signer.h"
#include "ledger/status.h"

namespace tally {

// Notes with more signature lines than this are rejected.
inline constexpr size_t kMaxNoteSignatures = 100;

// One signature line of a note, not verified.
struct NoteSignature {
  std::string name;
  uint32_t key_id = 0;
  std::string signature;  // raw bytes after the key id
};

// True iff `name` is a valid key name: non-empty valid UTF-8 without Unicode spaces, '+' or
// control characters.
bool IsValidKeyName(std::string_view name);

// True iff `text` can be a note text: non-empty, ends in '\n', valid UTF-8 without control
// characters other than '\n'.
bool IsValidNoteText(std::string_view text);

// Returns the note of `text` with one signature line by `signer`.
// Precondition (checked): IsValidNoteText(text).
std::string SignNote(std::string_view text, const Signer& signer);

// Splits a note into its text and signature lines (none verified), strictly: the whole note
// must be valid UTF-8 without control characters other than '\n'; the text ends at the last
// blank line; every following line must be a well-formed signature line (valid key name,
// strict base64 of at least 5 bytes); there must be 1 to kMaxNoteSignatures of them.
// InvalidArgument otherwise.
Result<std::pair<std::string, std::vector<NoteSignature>>> ParseNote(std::string_view note);

// Returns OK iff `note` parses and carries a signature line with the name and key id of
// `verifier` that verifies over the text; then sets *text_out (if not null) to the text.
// Signatures by other keys are ignored. InvalidArgument if the note is malformed, if a
// signature by the verifier's name and key id fails, or if there is none.
Status VerifyNote(std::string_view note, const Verifier& verifier, std::string* text_out);

}  // namespace tally

#endif  // TALLY_LEDGER_NOTE_H_
