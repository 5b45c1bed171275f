// The fixed Ed25519 key whose verifier fuzz_note checks notes with, and with which the seed
// generator signs the notes of its corpus. A test key, public on purpose: it signs nothing real.
#ifndef TALLY_TESTS_FUZZ_FUZZ_KEY_H_
#define TALLY_TESTS_FUZZ_FUZZ_KEY_H_

#include <string_view>

namespace tally::fuzz {

inline constexpr std::string_view kFuzzKeyName = "fuzz.tally.test/ledger";
inline constexpr std::string_view kFuzzKeyPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIAVI2fS/07wyJwdUVyFihPJ3h1n2JypJkb4mS2lOEVn/\n"
    "-----END PRIVATE KEY-----\n";

}  // namespace tally::fuzz

#endif  // TALLY_TESTS_FUZZ_FUZZ_KEY_H_
