// Tests of the ledger's cryptographic formats: hash, base64, signer, note and checkpoint.
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ledger/base64.h"
#include "ledger/checkpoint.h"
#include "ledger/hash.h"
#include "ledger/note.h"
#include "ledger/set_digest.h"
#include "ledger/signer.h"

namespace tally {
namespace {

// Published vectors, used as data.
// c2sp.org/signed-note, the example of its "Verifier keys" section.
constexpr char kSpecVerifierKey[] =
    "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
constexpr char kSpecNote[] =
    "This is an example message.\n"
    "\n"
    "\xE2\x80\x94 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM="
    "\n";
// The example of the documentation of golang.org/x/mod/sumdb/note.
constexpr char kGoSignerKeySeed[] = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
constexpr char kGoVerifierKey[] =
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
constexpr char kEnochVerifierKey[] =
    "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
constexpr char kGoText[] =
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n";
constexpr char kPeterLine[] =
    "\xE2\x80\x94 PeterNeumann "
    "x08go/ZJkuBS9UG/"
    "SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
constexpr char kEnochLine[] =
    "\xE2\x80\x94 EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/"
    "5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";
constexpr char kEmDash[] = "\xE2\x80\x94";

std::string Unbase64(std::string_view b64) {
  Result<std::string> r = Base64Decode(b64);
  REQUIRE(r.ok());
  return *r;
}

// The PKCS#8 PEM of an Ed25519 seed: a fixed DER prefix (RFC 8410) and the 32 seed bytes.
std::string Pkcs8PemOfSeed(std::string_view seed) {
  std::string der("\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20", 16);
  der.append(seed);
  return "-----BEGIN PRIVATE KEY-----\n" + Base64Encode(der) + "\n-----END PRIVATE KEY-----\n";
}

Signer GoExampleSigner() {
  const std::string typed_seed = Unbase64(kGoSignerKeySeed);
  REQUIRE(typed_seed.size() == 33);
  Result<Signer> signer = Signer::FromPem(Pkcs8PemOfSeed(typed_seed.substr(1)), "PeterNeumann");
  REQUIRE(signer.ok());
  return std::move(signer).value();
}

Signer NewSigner(const std::string& name) {
  Result<Signer> signer = Signer::Generate(name);
  REQUIRE(signer.ok());
  return std::move(signer).value();
}

Verifier VerifierOf(const Signer& signer) { return Verifier(signer.name(), signer.public_key()); }

Verifier ParseVerifierKey(std::string_view vkey) {
  Result<Verifier> v = Verifier::FromVerifierKey(vkey);
  REQUIRE(v.ok());
  return *v;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fresh directory, removed with its contents at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "tally-crypto-XXXXXX").string();
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path_ = templ;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

unsigned ModeOf(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// ---------------------------------------------------------------------------------------------
// hash

TEST_CASE("SHA-256 matches the FIPS 180-2 examples", "[hash]") {
  CHECK(HashToHex(Sha256("abc")) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(HashToHex(Sha256("")) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(HashToHex(Sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("Multi-part SHA-256 equals the hash of the concatenation", "[hash]") {
  std::string data;
  for (int i = 0; i < 300; ++i) data.push_back(static_cast<char>(i * 31));
  for (size_t cut = 0; cut <= data.size(); cut += 7) {
    const std::string_view all(data);
    CHECK(Sha256({all.substr(0, cut), all.substr(cut)}) == Sha256(all));
    CHECK(Sha256({all.substr(0, cut / 2), "", all.substr(cut / 2)}) == Sha256(all));
  }
  CHECK(Sha256(std::initializer_list<std::string_view>{}) == Sha256(""));
}

TEST_CASE("AsBytes views the 32 bytes of a hash", "[hash]") {
  const Hash h = Sha256("x");
  const std::string_view bytes = AsBytes(h);
  REQUIRE(bytes.size() == 32);
  CHECK(static_cast<uint8_t>(bytes[0]) == h[0]);
  CHECK(static_cast<uint8_t>(bytes[31]) == h[31]);
  CHECK(HexEncode(bytes) == HashToHex(h));
}

// ---------------------------------------------------------------------------------------------
// base64 and hex

TEST_CASE("Base64 matches the RFC 4648 test vectors", "[base64]") {
  const std::pair<const char*, const char*> kVectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : kVectors) {
    CHECK(Base64Encode(plain) == encoded);
    std::string appended = "\"";
    AppendBase64(plain, &appended);
    CHECK(appended == std::string("\"") + encoded);
    Result<std::string> decoded = Base64Decode(encoded);
    REQUIRE(decoded.ok());
    CHECK(*decoded == plain);
  }
}

TEST_CASE("Base64 round-trips every byte value and length", "[base64]") {
  std::string data;
  for (int i = 0; i < 256; ++i) data.push_back(static_cast<char>(i));
  for (size_t len = 0; len <= data.size(); ++len) {
    const std::string_view slice = std::string_view(data).substr(data.size() - len);
    Result<std::string> back = Base64Decode(Base64Encode(slice));
    REQUIRE(back.ok());
    CHECK(*back == slice);
  }
}

TEST_CASE("Base64 decoding rejects every non-canonical or malformed input", "[base64]") {
  for (const char* bad :
       {"Zg", "Zg=", "Zg===", "Zh==", "Zm9=", "Zm8", "Zm9v\n", " Zm9v", "Zm 9v", "Zm9v\r\n", "=Zm9",
        "Zg==Zg==", "Z===", "====", "Zm9-", "Zm9_", "Zm9v====", "Zm=v", "\xC3\xA9\xC3\xA9"}) {
    INFO(bad);
    CHECK(Base64Decode(bad).status().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("Hex encoding is lowercase, two digits a byte", "[base64]") {
  CHECK(HexEncode("") == "");
  CHECK(HexEncode(std::string("\x00\x0f\xa0\xff", 4)) == "000fa0ff");
}

// ---------------------------------------------------------------------------------------------
// signer

TEST_CASE("Key ids and verifier keys match the published examples", "[signer]") {
  const Verifier spec = ParseVerifierKey(kSpecVerifierKey);
  CHECK(spec.name() == "example.com/foo");
  CHECK(spec.key_id() == 0x530d903a);
  CHECK(HexEncode(spec.public_key()) ==
        "e932791ae6e7a840a46164c904786426d5e7821dd8b29a00d61cae72afdd4da4");
  CHECK(NoteKeyId(spec.name(), spec.public_key()) == 0x530d903a);
  CHECK(VerifierKey(spec.name(), spec.public_key()) == kSpecVerifierKey);

  const Signer go = GoExampleSigner();
  CHECK(go.key_id() == 0xc74f20a3);
  CHECK(VerifierKey(go.name(), go.public_key()) == kGoVerifierKey);
}

TEST_CASE("Signing is deterministic Ed25519 and reproduces the Go example", "[signer]") {
  const Signer go = GoExampleSigner();
  const std::string sig = go.Sign(kGoText);
  REQUIRE(sig.size() == 64);
  const std::string line = kPeterLine;
  const std::string blob =
      Unbase64(line.substr(line.rfind(' ') + 1, line.size() - 1 - (line.rfind(' ') + 1)));
  CHECK(blob.substr(4) == sig);
}

TEST_CASE("A signature verifies under its key only, over its message only", "[signer]") {
  const Signer a = NewSigner("a.example/log");
  const Signer b = NewSigner("a.example/log");
  REQUIRE(a.public_key().size() == 32);
  CHECK(a.key_id() == NoteKeyId(a.name(), a.public_key()));
  CHECK(a.public_key() != b.public_key());
  const std::string sig = a.Sign("hello");
  CHECK(VerifierOf(a).Verify("hello", sig));
  CHECK_FALSE(VerifierOf(a).Verify("hello!", sig));
  CHECK_FALSE(VerifierOf(b).Verify("hello", sig));
  std::string bad = sig;
  bad[10] ^= 1;
  CHECK_FALSE(VerifierOf(a).Verify("hello", bad));
  CHECK_FALSE(VerifierOf(a).Verify("hello", sig.substr(0, 63)));
  CHECK_FALSE(VerifierOf(a).Verify("hello", ""));
}

TEST_CASE("Signers and verifiers refuse invalid key names", "[signer]") {
  // U+00A0 and U+3000 are Unicode spaces; 0xFF is not UTF-8.
  for (const char* bad : {"", "a b", "a+b", "a\tb", "a\u00A0b", "a\u3000b", "\xFF"}) {
    INFO(bad);
    CHECK(Signer::Generate(bad).status().code() == Code::kInvalidArgument);
  }
  CHECK(Signer::Generate("caf\xC3\xA9.example/log").ok());
}

TEST_CASE("Malformed verifier keys are rejected", "[signer]") {
  const std::string good = kSpecVerifierKey;
  for (const std::string& bad : std::vector<std::string>{
           "example.com/foo", "example.com/foo+530d903a",
           "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
           "example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
           "example.com/foo+530d903a0+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
           "example.com/foo+530d903g+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
           "example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
           "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
           "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",
           "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
           "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k+x",
           "example.com/foo+530d903a+" + Base64Encode(std::string("\x01", 1) + "short")}) {
    INFO(bad);
    CHECK(Verifier::FromVerifierKey(bad).status().code() == Code::kInvalidArgument);
  }
  CHECK(Verifier::FromVerifierKey(good).ok());
}

TEST_CASE("Public keys round-trip through PEM", "[signer]") {
  const Signer s = NewSigner("pem.example");
  const std::string pem = PublicKeyToPem(s.public_key());
  CHECK(pem.rfind("-----BEGIN PUBLIC KEY-----\n", 0) == 0);
  Result<std::string> raw = PublicKeyFromPem(pem);
  REQUIRE(raw.ok());
  CHECK(*raw == s.public_key());
  CHECK(PublicKeyFromPem("not a pem").status().code() == Code::kInvalidArgument);
  CHECK(Signer::FromPem(pem, "pem.example").status().code() == Code::kInvalidArgument);
}

TEST_CASE("LoadOrCreate creates a 0600 key and its public key, then reloads it", "[signer]") {
  TempDir dir;
  const std::string key = dir / "log.key", pub = dir / "log.pub";
  const mode_t old_umask = ::umask(0);  // the key must be 0600 whatever the umask
  Result<Signer> created = Signer::LoadOrCreate(key, pub, "tally.example/log");
  ::umask(old_umask);
  REQUIRE(created.ok());
  CHECK(ModeOf(key) == 0600);
  CHECK(ReadFile(key).rfind("-----BEGIN PRIVATE KEY-----\n", 0) == 0);
  CHECK(ReadFile(pub).rfind("-----BEGIN PUBLIC KEY-----\n", 0) == 0);
  Result<std::string> pub_raw = ReadPublicKeyPem(pub);
  REQUIRE(pub_raw.ok());
  CHECK(*pub_raw == created->public_key());
  CHECK_FALSE(std::filesystem::exists(pub + ".tmp"));

  Result<Signer> reloaded = Signer::LoadOrCreate(key, pub, "tally.example/log");
  REQUIRE(reloaded.ok());
  CHECK(reloaded->public_key() == created->public_key());
  CHECK(reloaded->key_id() == created->key_id());
  CHECK(VerifierOf(*created).Verify("m", reloaded->Sign("m")));
  Result<Signer> from_pem = Signer::FromPem(ReadFile(key), "tally.example/log");
  REQUIRE(from_pem.ok());
  CHECK(from_pem->public_key() == created->public_key());
}

TEST_CASE("LoadOrCreate rewrites a missing public key file", "[signer]") {
  TempDir dir;
  const std::string key = dir / "k", pub = dir / "k.pub";
  Result<Signer> created = Signer::LoadOrCreate(key, pub, "n");
  REQUIRE(created.ok());
  std::filesystem::remove(pub);
  REQUIRE(Signer::LoadOrCreate(key, pub, "n").ok());
  Result<std::string> pub_raw = ReadPublicKeyPem(pub);
  REQUIRE(pub_raw.ok());
  CHECK(*pub_raw == created->public_key());
}

TEST_CASE("LoadOrCreate refuses a key file that group or others can access", "[signer]") {
  TempDir dir;
  const std::string key = dir / "k", pub = dir / "k.pub";
  REQUIRE(Signer::LoadOrCreate(key, pub, "n").ok());
  for (unsigned mode : {0644u, 0640u, 0604u, 0620u}) {
    REQUIRE(::chmod(key.c_str(), mode) == 0);
    Result<Signer> loaded = Signer::LoadOrCreate(key, pub, "n");
    INFO(mode);
    CHECK(loaded.status().code() == Code::kFailedPrecondition);
  }
  REQUIRE(::chmod(key.c_str(), 0400) == 0);
  CHECK(Signer::LoadOrCreate(key, pub, "n").ok());
}

TEST_CASE("LoadOrCreate refuses inconsistent or corrupt key files", "[signer]") {
  TempDir dir;
  const std::string key = dir / "k", pub = dir / "k.pub";
  REQUIRE(Signer::LoadOrCreate(key, pub, "n").ok());
  const Signer other = NewSigner("n");
  std::ofstream(pub) << PublicKeyToPem(other.public_key());
  CHECK(Signer::LoadOrCreate(key, pub, "n").status().code() == Code::kFailedPrecondition);

  // A public key without its private key is a misconfiguration, not a first start.
  const std::string lone_key = dir / "lone", lone_pub = dir / "lone.pub";
  std::ofstream(lone_pub) << PublicKeyToPem(other.public_key());
  CHECK(Signer::LoadOrCreate(lone_key, lone_pub, "n").status().code() == Code::kFailedPrecondition);
  CHECK_FALSE(std::filesystem::exists(lone_key));

  const std::string bad = dir / "bad";
  std::ofstream(bad) << "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
  REQUIRE(::chmod(bad.c_str(), 0600) == 0);
  CHECK(Signer::LoadOrCreate(bad, dir / "bad.pub", "n").status().code() == Code::kInvalidArgument);
  CHECK(Signer::LoadOrCreate(dir / "x", dir / "x.pub", "bad name").status().code() ==
        Code::kInvalidArgument);
  CHECK(Signer::LoadOrCreate(dir / "no/such/dir", dir / "p", "n").status().code() ==
        Code::kInternal);
}

// ---------------------------------------------------------------------------------------------
// note

TEST_CASE("The C2SP signed-note example verifies", "[note]") {
  const Verifier v = ParseVerifierKey(kSpecVerifierKey);
  std::string text;
  REQUIRE(VerifyNote(kSpecNote, v, &text).ok());
  CHECK(text == "This is an example message.\n");
}

TEST_CASE("The Go note examples verify, one signature by each key", "[note]") {
  const std::string both = std::string(kGoText) + "\n" + kPeterLine + kEnochLine;
  for (const char* vkey : {kGoVerifierKey, kEnochVerifierKey}) {
    std::string text;
    INFO(vkey);
    REQUIRE(VerifyNote(both, ParseVerifierKey(vkey), &text).ok());
    CHECK(text == kGoText);
  }
  const std::string peter_only = std::string(kGoText) + "\n" + kPeterLine;
  CHECK(VerifyNote(peter_only, ParseVerifierKey(kGoVerifierKey), nullptr).ok());
  CHECK_FALSE(VerifyNote(peter_only, ParseVerifierKey(kEnochVerifierKey), nullptr).ok());
  CHECK(SignNote(kGoText, GoExampleSigner()) == peter_only);
}

TEST_CASE("Signed notes round-trip through ParseNote", "[note]") {
  const Signer s = NewSigner("tally.example/log");
  const std::string note = SignNote("line one\n\nline three\n", s);
  auto parsed = ParseNote(note);
  REQUIRE(parsed.ok());
  CHECK(parsed->first == "line one\n\nline three\n");
  REQUIRE(parsed->second.size() == 1);
  CHECK(parsed->second[0].name == s.name());
  CHECK(parsed->second[0].key_id == s.key_id());
  CHECK(parsed->second[0].signature == s.Sign("line one\n\nline three\n"));
  std::string text;
  REQUIRE(VerifyNote(note, VerifierOf(s), &text).ok());
  CHECK(text == "line one\n\nline three\n");
}

TEST_CASE("A note with a tampered text or signature does not verify", "[note]") {
  const Signer s = NewSigner("tally.example/log");
  std::string note = SignNote("size 10\n", s);
  std::string tampered_text = note;
  tampered_text[5] = '9';
  const Status text_status = VerifyNote(tampered_text, VerifierOf(s), nullptr);
  CHECK(text_status.code() == Code::kInvalidArgument);
  CHECK(text_status.message().find("does not verify") != std::string::npos);
  const Signer forger = NewSigner("tally.example/log");
  const std::string forged = SignNote("size 10\n", forger);
  // Same name, another key: a different key id, so the signature is ignored.
  const Status forged_status = VerifyNote(forged, VerifierOf(s), nullptr);
  CHECK(forged_status.code() == Code::kInvalidArgument);
  CHECK(forged_status.message().find("no signature") != std::string::npos);
}

TEST_CASE("Signatures by unknown keys are ignored, a bad known one is fatal", "[note]") {
  const Signer s = NewSigner("log.example");
  const Signer other = NewSigner("witness.example");
  const std::string text = "checkpoint\n";
  const std::string mine = SignNote(text, s);
  const std::string theirs = SignNote(text, other);
  const std::string my_line = mine.substr(text.size() + 1);
  const std::string their_line = theirs.substr(text.size() + 1);
  CHECK(VerifyNote(text + "\n" + their_line + my_line, VerifierOf(s), nullptr).ok());
  CHECK(VerifyNote(text + "\n" + my_line + their_line, VerifierOf(s), nullptr).ok());
  // A line with the known name and key id but a wrong signature rejects the note.
  std::string blob =
      Unbase64(my_line.substr(my_line.rfind(' ') + 1, my_line.size() - my_line.rfind(' ') - 2));
  blob[10] ^= 1;
  const std::string bad_line = std::string(kEmDash) + " log.example " + Base64Encode(blob) + "\n";
  CHECK_FALSE(VerifyNote(text + "\n" + my_line + bad_line, VerifierOf(s), nullptr).ok());
}

TEST_CASE("Malformed notes are rejected", "[note]") {
  const std::string sig = std::string(kSpecNote).substr(29);  // the signature line
  REQUIRE(sig.rfind(kEmDash, 0) == 0);
  const std::string text = "This is an example message.\n";
  for (const std::string& bad : {
           text,                                                   // no signatures
           text + "\n",                                            // blank line, no signatures
           text + sig,                                             // no blank line
           text + "\n" + sig.substr(0, sig.size() - 1),            // no final newline
           text + "\n" + sig + "\n",                               // trailing blank line
           text + "\n" + "- example.com/foo AAAAAAAA\n",           // hyphen, not em dash
           text + "\n" + kEmDash + "example.com/foo AAAAAAAA\n",   // no space after dash
           text + "\n" + kEmDash + " example.com/foo\n",           // no signature
           text + "\n" + kEmDash + " example.com/foo \n",          // empty signature
           text + "\n" + kEmDash + " example.com/foo AAAA\n",      // 3 bytes
           text + "\n" + kEmDash + " example.com/foo AAAAAA==\n",  // 4 bytes
           text + "\n" + kEmDash + " example.com/foo AAAAAAA\n",   // bad base64
           text + "\n" + kEmDash + " exa+mple AAAAAAAA\n",         // '+' in name
           text + "\n" + kEmDash + "  AAAAAAAA\n",                 // empty name
           text + "\n" + kEmDash + " a AAAAAAAA AAAA\n",           // extra field
           "text\twith tab\n\n" + sig,                             // control character
           "text\r\n\n" + sig,                                     // carriage return
           "bad \xFF utf8\n\n" + sig,                              // invalid UTF-8
           "overlong \xC0\xAF\n\n" + sig,                          // overlong encoding
           "surrogate \xED\xA0\x80\n\n" + sig,                     // UTF-16 surrogate
       }) {
    INFO(bad);
    CHECK(ParseNote(bad).status().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("A note may carry up to 100 signatures", "[note]") {
  const Signer s = NewSigner("log.example");
  const std::string text = "t\n";
  const std::string line = SignNote(text, s).substr(text.size() + 1);
  std::string note = text + "\n";
  for (int i = 0; i < 100; ++i) note += line;
  CHECK(ParseNote(note).ok());
  CHECK(VerifyNote(note, VerifierOf(s), nullptr).ok());
  note += line;
  CHECK(ParseNote(note).status().code() == Code::kInvalidArgument);
}

TEST_CASE("Note texts must be non-empty clean UTF-8 ending in a newline", "[note]") {
  CHECK(IsValidNoteText("a\n"));
  CHECK(IsValidNoteText("\n"));
  CHECK(IsValidNoteText("caf\xC3\xA9 \xF0\x9F\x98\x80\n"));
  CHECK_FALSE(IsValidNoteText(""));
  CHECK_FALSE(IsValidNoteText("a"));
  CHECK_FALSE(IsValidNoteText("a\tb\n"));
  CHECK_FALSE(IsValidNoteText("\xE2\x80\n"));
}

// ---------------------------------------------------------------------------------------------
// checkpoint

TEST_CASE("Checkpoints format as C2SP tlog-checkpoint bodies and parse back", "[checkpoint]") {
  Checkpoint cp{"tally.example/ledger", 20852163, Sha256("root"), {"ext one", "ext two"}};
  const std::string text = FormatCheckpoint(cp);
  CHECK(text == "tally.example/ledger\n20852163\n" + Base64Encode(AsBytes(cp.root)) +
                    "\next one\next two\n");
  Result<Checkpoint> back = ParseCheckpoint(text);
  REQUIRE(back.ok());
  CHECK(back->origin == cp.origin);
  CHECK(back->size == cp.size);
  CHECK(back->root == cp.root);
  CHECK(back->extensions == cp.extensions);
}

TEST_CASE("The C2SP tlog-checkpoint example parses", "[checkpoint]") {
  Result<Checkpoint> cp = ParseCheckpoint(
      "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n");
  REQUIRE(cp.ok());
  CHECK(cp->origin == "example.com/behind-the-sofa");
  CHECK(cp->size == 20852163);
  CHECK(Base64Encode(AsBytes(cp->root)) == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=");
  CHECK(cp->extensions.empty());
}

TEST_CASE("Checkpoint sizes are canonical 64-bit decimals", "[checkpoint]") {
  const std::string root = Base64Encode(AsBytes(Sha256("r")));
  auto parse_size = [&](const std::string& size) {
    return ParseCheckpoint("o\n" + size + "\n" + root + "\n");
  };
  CHECK(parse_size("0").ok());
  REQUIRE(parse_size("18446744073709551615").ok());
  CHECK(parse_size("18446744073709551615")->size == UINT64_MAX);
  for (const char* bad : {"", "00", "01", "+1", "-1", " 1", "1 ", "1e3", "0x10",
                          "18446744073709551616", "99999999999999999999"}) {
    INFO(bad);
    CHECK(parse_size(bad).status().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("Malformed checkpoints are rejected", "[checkpoint]") {
  const std::string root = Base64Encode(AsBytes(Sha256("r")));
  for (const std::string& bad : std::vector<std::string>{
           "",
           "o\n1\n" + root,                                       // no final newline
           "o\n1\n",                                              // no root
           "\n1\n" + root + "\n",                                 // empty origin
           "o\n1\n" + root + "\n\n",                              // empty extension
           "o\n1\n" + Base64Encode(std::string(31, 'x')) + "\n",  // 31-byte root
           "o\n1\n" + Base64Encode(std::string(33, 'x')) + "\n",  // 33-byte root
           "o\n1\n" + root.substr(0, 42) + "J=\n",                // non-canonical base64
           "o\n1\n " + root + "\n",                               // leading space
           "o\tx\n1\n" + root + "\n",                             // control character
       }) {
    INFO(bad);
    CHECK(ParseCheckpoint(bad).status().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("A signed checkpoint verifies and parses end to end", "[checkpoint][note]") {
  const Signer s = NewSigner("tally.example/ledger");
  const Checkpoint cp{"tally.example/ledger", 42, Sha256("root"), {}};
  const std::string note = SignNote(FormatCheckpoint(cp), s);
  std::string text;
  REQUIRE(VerifyNote(note, ParseVerifierKey(VerifierKey(s.name(), s.public_key())), &text).ok());
  Result<Checkpoint> back = ParseCheckpoint(text);
  REQUIRE(back.ok());
  CHECK(back->size == 42);
  CHECK(back->root == cp.root);
}

// SipHash-2-4 with the key 00 01 .. 0f over the messages 00 01 .. (n-1): the reference
// implementation's published 64-bit vectors, three of its 64.
TEST_CASE("SipHash-2-4 gives the reference vectors", "[siphash]") {
  std::array<uint8_t, 16> key;
  for (int i = 0; i < 16; ++i) key[i] = static_cast<uint8_t>(i);
  std::string m;
  for (int i = 0; i < 64; ++i) m.push_back(static_cast<char>(i));
  CHECK(SipHash64(key, m.substr(0, 0)) == 0x726fdb47dd0e0e31ULL);
  CHECK(SipHash64(key, m.substr(0, 15)) == 0xa129ca6149be45e5ULL);
  CHECK(SipHash64(key, m.substr(0, 63)) == 0x958a324ceb064572ULL);
}

// OpenSSL's SipHash-c-d (EVP_MAC "SIPHASH"): 8 or 16 bytes of output, little-endian words.
std::string OpenSslSipHash(const std::array<uint8_t, 16>& key, std::string_view m, size_t size,
                           unsigned int c = 2, unsigned int d = 4) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
  REQUIRE(mac != nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                         OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_C_ROUNDS, &c),
                         OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_D_ROUNDS, &d),
                         OSSL_PARAM_construct_end()};
  std::string out(size, '\0');
  size_t n = 0;
  const bool ok =
      EVP_MAC_init(ctx, key.data(), key.size(), params) == 1 &&
      EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(m.data()), m.size()) == 1 &&
      EVP_MAC_final(ctx, reinterpret_cast<unsigned char*>(out.data()), &n, size) == 1;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  REQUIRE(ok);
  REQUIRE(n == size);
  return out;
}

std::string LittleEndian(uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
  return s;
}

TEST_CASE("SipHash-2-4 (64 and 128 bits) and SipHash-1-3 agree with OpenSSL's", "[siphash]") {
  std::mt19937_64 rng(7);
  for (size_t len = 0; len < 80; ++len) {
    std::array<uint8_t, 16> key;
    for (uint8_t& b : key) b = static_cast<uint8_t>(rng());
    std::string m;
    for (size_t i = 0; i < len; ++i) m.push_back(static_cast<char>(rng()));
    INFO("length " << len);
    CHECK(LittleEndian(SipHash64(key, m)) == OpenSslSipHash(key, m, 8));
    const SipHash128Out h = SipHash128(key, m);
    CHECK(LittleEndian(h.lo) + LittleEndian(h.hi) == OpenSslSipHash(key, m, 16));
    CHECK(LittleEndian(SipHash13(key, m)) == OpenSslSipHash(key, m, 8, 1, 3));
  }
}

TEST_CASE("A set digest depends on the pairs, not their order", "[siphash]") {
  const SetDigest empty = SetDigest::WithRandomKey();
  auto of = [&](const std::vector<std::pair<std::string, std::string>>& pairs) {
    SetDigest d = empty.Empty();
    for (const auto& [k, v] : pairs) d.Add(k, v);
    return d;
  };
  const SetDigest abc = of({{"a", "1"}, {"b", "2"}, {"c", ""}});
  CHECK(abc == of({{"c", ""}, {"a", "1"}, {"b", "2"}}));
  CHECK(abc.count() == 3);
  CHECK(abc.bytes() == 5);
  CHECK_FALSE(abc == of({{"a", "1"}, {"b", "2"}}));             // a pair missing
  CHECK_FALSE(abc == of({{"a", "1"}, {"b", "3"}, {"c", ""}}));  // a value changed
  CHECK_FALSE(abc == of({{"a", "1"}, {"b", "2"}, {"d", ""}}));  // a key changed
  CHECK_FALSE(abc == of({{"a", "1"}, {"b2", ""}, {"c", ""}}));  // a byte moved to the key
  CHECK_FALSE(abc == of({{"a", "1"}, {"b", "2"}, {"c", ""}, {"c", ""}}));  // a pair twice
  CHECK_FALSE(abc == SetDigest::WithRandomKey());
  CHECK(empty.Empty() == empty);
  // A pair taken back, as when a key's value is replaced; the borrow between the sum's halves
  // is exercised by many pairs.
  SetDigest replaced = abc;
  replaced.Remove("b", "2");
  replaced.Add("b", "3");
  CHECK(replaced == of({{"a", "1"}, {"b", "3"}, {"c", ""}}));
  CHECK(replaced.count() == 3);
  SetDigest many = empty.Empty();
  for (int i = 0; i < 1000; ++i) many.Add(std::to_string(i), "v");
  for (int i = 0; i < 1000; ++i) many.Remove(std::to_string(i), "v");
  CHECK(many == empty.Empty());
  CHECK(many.bytes() == 0);
  // Another key: the same pairs, another digest.
  SetDigest other = SetDigest::WithRandomKey();
  for (const char* k : {"a", "b", "c"}) other.Add(k, "");
  CHECK_FALSE(other == of({{"a", ""}, {"b", ""}, {"c", ""}}));
}

}  // namespace
}  // namespace tally
