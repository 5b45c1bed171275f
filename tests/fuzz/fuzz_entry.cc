// fuzz_entry: bytes -> DecodeEntry. What decodes must re-encode to exactly the same bytes (every
// entry has one encoding: the bytes are its Merkle leaf), and its payload goes to the record
// decoder of its type, whose accepted records must re-encode exactly too. DecodeEntryInto, into
// an entry that still holds whatever the inputs before left in it, must agree with DecodeEntry.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ledger/entry.h"
#include "ledger/records.h"

namespace tally {
namespace {

[[noreturn]] void Fail(const char* why) {
  std::fprintf(stderr, "fuzz_entry: %s\n", why);
  std::abort();
}

template <typename T, typename Encode>
void RoundTrip(const Result<T>& decoded, std::string_view bytes, Encode encode) {
  if (decoded.ok() && encode(*decoded) != bytes) Fail("a payload record re-encodes differently");
}

void CheckPayload(const Entry& e) {
  switch (e.type) {
    case EntryType::kProgram:
      RoundTrip(DecodeProgram(e.payload), e.payload, EncodeProgram);
      break;
    case EntryType::kApiKey:
      RoundTrip(DecodeApiKey(e.payload), e.payload, EncodeApiKey);
      break;
    case EntryType::kReward:
      RoundTrip(DecodeReward(e.payload), e.payload, EncodeReward);
      break;
    case EntryType::kReferralCode:
      RoundTrip(DecodeReferralCode(e.payload), e.payload, EncodeReferralCode);
      break;
    case EntryType::kSigningKey:
      RoundTrip(DecodeSigningKey(e.payload), e.payload, EncodeSigningKey);
      break;
    default:
      break;
  }
}

}  // namespace
}  // namespace tally

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tally;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Result<Entry> e = DecodeEntry(bytes);
  static Entry reused;  // what the inputs before decoded into it, or left of a failed decode
  const Status into = DecodeEntryInto(bytes, &reused);
  if (into.ok() != e.ok()) Fail("DecodeEntryInto and DecodeEntry disagree on success");
  if (e.ok() && !(reused == *e)) Fail("DecodeEntryInto decodes differently from DecodeEntry");
  if (!e.ok()) return 0;
  if (!ValidateEntry(*e).ok()) Fail("a decoded entry does not validate");
  if (EncodeEntry(*e) != bytes) Fail("a decoded entry re-encodes to other bytes");
  Result<Entry> again = DecodeEntry(EncodeEntry(*e));
  if (!again.ok() || !(*again == *e)) Fail("a re-encoded entry decodes differently");
  CheckPayload(*e);
  return 0;
}
