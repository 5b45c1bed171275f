// fuzz_note: bytes -> the parsers of signed text and of stored records: ParseNote, VerifyNote
// under a fixed verifier, ParseCheckpoint, Verifier::FromVerifierKey, Base64Decode, and every
// record decoder of ledger/records.h. Each is strict, so what it accepts has exactly one
// encoding: a note is rebuilt from its text and signature lines, a checkpoint and a record are
// re-encoded, and each must give back exactly the input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ledger/base64.h"
#include "ledger/checkpoint.h"
#include "ledger/note.h"
#include "ledger/records.h"
#include "ledger/signer.h"
#include "tests/fuzz/fuzz_key.h"

namespace tally {
namespace {

[[noreturn]] void Fail(const char* why) {
  std::fprintf(stderr, "fuzz_note: %s\n", why);
  std::abort();
}

const Verifier& FixedVerifier() {
  static const Verifier* verifier = [] {
    Result<Signer> signer = Signer::FromPem(fuzz::kFuzzKeyPem, std::string(fuzz::kFuzzKeyName));
    if (!signer.ok()) Fail("the fixed key does not load");
    return new Verifier(signer->name(), signer->public_key());
  }();
  return *verifier;
}

std::string SignatureLine(const NoteSignature& sig) {
  std::string blob = {static_cast<char>(sig.key_id >> 24), static_cast<char>(sig.key_id >> 16),
                      static_cast<char>(sig.key_id >> 8), static_cast<char>(sig.key_id)};
  blob += sig.signature;
  return "\xE2\x80\x94 " + sig.name + " " + Base64Encode(blob) + "\n";
}

void CheckNote(std::string_view input) {
  auto note = ParseNote(input);
  std::string text;
  Status verified = VerifyNote(input, FixedVerifier(), &text);
  if (!note.ok()) {
    if (verified.ok()) Fail("a note that does not parse verifies");
    return;
  }
  const auto& [note_text, signatures] = *note;
  if (!IsValidNoteText(note_text)) Fail("a parsed note's text is not a note text");
  if (signatures.empty() || signatures.size() > kMaxNoteSignatures) Fail("signature count");
  std::string rebuilt = note_text + "\n";
  for (const NoteSignature& sig : signatures) {
    if (!IsValidKeyName(sig.name)) Fail("a parsed signature has an invalid key name");
    rebuilt += SignatureLine(sig);
  }
  if (rebuilt != input) Fail("a parsed note does not rebuild to the same bytes");
  if (verified.ok()) {
    if (text != note_text) Fail("VerifyNote's text differs from ParseNote's");
    if (auto checkpoint = ParseCheckpoint(text); checkpoint.ok()) {
      if (FormatCheckpoint(*checkpoint) != text) Fail("a signed checkpoint re-formats differently");
    }
  }
}

void CheckCheckpoint(std::string_view input) {
  auto checkpoint = ParseCheckpoint(input);
  if (checkpoint.ok() && FormatCheckpoint(*checkpoint) != input) {
    Fail("a checkpoint re-formats differently");
  }
}

template <typename T, typename Encode>
void RoundTrip(const Result<T>& decoded, std::string_view bytes, Encode encode, const char* what) {
  if (decoded.ok() && encode(*decoded) != bytes) Fail(what);
}

void CheckRecords(std::string_view b) {
  RoundTrip(DecodeProgram(b), b, EncodeProgram, "program record");
  RoundTrip(DecodeReward(b), b, EncodeReward, "reward record");
  RoundTrip(DecodeApiKey(b), b, EncodeApiKey, "api key record");
  RoundTrip(DecodeReferralCode(b), b, EncodeReferralCode, "referral code record");
  RoundTrip(DecodeSigningKey(b), b, EncodeSigningKey, "signing key record");
  RoundTrip(DecodeCustomer(b), b, EncodeCustomer, "customer record");
  RoundTrip(DecodeHold(b), b, EncodeHold, "hold record");
  RoundTrip(DecodeLot(b), b, EncodeLot, "lot record");
}

}  // namespace
}  // namespace tally

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tally;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckNote(input);
  CheckCheckpoint(input);
  // Verifier keys accept the key id in either case (as the reference implementation does), so
  // they round-trip through their canonical form rather than byte for byte.
  if (auto v = Verifier::FromVerifierKey(input); v.ok()) {
    auto again = Verifier::FromVerifierKey(VerifierKey(v->name(), v->public_key()));
    if (!again.ok() || again->name() != v->name() || again->public_key() != v->public_key() ||
        again->key_id() != v->key_id()) {
      Fail("a verifier key does not round-trip");
    }
  }
  if (auto raw = Base64Decode(input); raw.ok() && Base64Encode(*raw) != input) {
    Fail("base64 re-encodes differently");
  }
  CheckRecords(input);
  return 0;
}
