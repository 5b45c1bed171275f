// Ed25519 signing keys of the ledger, and verifiers of C2SP signed-note keys.
//
// Key files are PEM: the private key as PKCS#8 ("BEGIN PRIVATE KEY", mode 0600) and the public
// key as SubjectPublicKeyInfo ("BEGIN PUBLIC KEY"). Raw public keys are the 32 bytes of RFC 8032.
#ifndef TALLY_LEDGER_SIGNER_H_
#define TALLY_LEDGER_SIGNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "ledger/status.h"

namespace tally {

inline constexpr size_t kEd25519PublicKeySize = 32;
inline constexpr size_t kEd25519SignatureSize = 64;

// The C2SP signed-note key id of an Ed25519 key: the first 4 bytes, big-endian, of
// SHA-256(name || 0x0A || 0x01 || raw_public_key).
uint32_t NoteKeyId(std::string_view name, std::string_view raw_public_key);

// The C2SP verifier key "<name>+<8 lowercase hex key id>+<base64(0x01 || raw_public_key)>".
std::string VerifierKey(std::string_view name, std::string_view raw_public_key);

// Reads a SubjectPublicKeyInfo PEM file holding an Ed25519 key; returns the raw 32 bytes.
// NotFound if the file is absent, InvalidArgument if it is not such a key.
Result<std::string> ReadPublicKeyPem(const std::string& path);

// Parses a SubjectPublicKeyInfo PEM Ed25519 public key; returns the raw 32 bytes.
// InvalidArgument if it is not one.
Result<std::string> PublicKeyFromPem(std::string_view pem);

// Returns the SubjectPublicKeyInfo PEM of a raw Ed25519 public key. Precondition: 32 bytes.
std::string PublicKeyToPem(std::string_view raw_public_key);

// An Ed25519 private key with its signed-note key name. Movable, not copyable. Sign() is const
// and thread-safe.
class Signer {
 public:
  // Loads the PKCS#8 PEM private key at `key_path`, or creates one if the file does not exist:
  // a new key is written with mode 0600 (exclusive create, fsync), then its public key to
  // `pub_path`, then the directories are fsynced. When loading, a missing `pub_path` is
  // written; an existing one must hold the same key.
  // Errors: InvalidArgument for an invalid `name` (see IsValidKeyName in note.h) or a file that
  // is not an Ed25519 key (an encrypted key is refused); FailedPrecondition if the key file is
  // not a regular file, grants any permission to group or others, or disagrees with `pub_path`;
  // Unavailable if the key file appeared while being created; Internal for I/O failures.
  static Result<Signer> LoadOrCreate(const std::string& key_path, const std::string& pub_path,
                                     const std::string& name);

  // Parses an unencrypted PKCS#8 PEM Ed25519 private key. InvalidArgument on any other input or
  // an invalid name.
  static Result<Signer> FromPem(std::string_view pem, std::string name);

  // A fresh random key (for tests and tools). InvalidArgument for an invalid name.
  static Result<Signer> Generate(std::string name);

  Signer(Signer&&) noexcept;
  Signer& operator=(Signer&&) noexcept;
  ~Signer();

  // The signed-note key name.
  const std::string& name() const { return name_; }
  // The raw 32-byte public key.
  std::string public_key() const { return public_key_; }
  // NoteKeyId(name(), public_key()).
  uint32_t key_id() const { return key_id_; }

  // Returns the 64-byte Ed25519 signature of `msg`.
  std::string Sign(std::string_view msg) const;

 private:
  struct Impl;
  Signer(std::string name, std::unique_ptr<Impl> impl);

  std::string name_;
  std::string public_key_;
  uint32_t key_id_ = 0;
  std::unique_ptr<Impl> impl_;
};

// An Ed25519 public key with its signed-note name. Copyable (shares immutable state) and
// thread-safe.
class Verifier {
 public:
  // Parses a C2SP verifier key "<name>+<hex key id>+<base64(0x01 || key)>". InvalidArgument
  // unless the name is valid, the id is 8 hex digits, the key is an Ed25519 one (type 0x01, 32
  // bytes, strict base64) and the id is the one the name and key determine.
  static Result<Verifier> FromVerifierKey(std::string_view vkey);

  // Preconditions (checked): IsValidKeyName(name) and raw_public_key.size() == 32.
  Verifier(std::string name, std::string raw_public_key);

  const std::string& name() const { return name_; }
  uint32_t key_id() const { return key_id_; }
  const std::string& public_key() const { return public_key_; }

  // True iff `sig` is a valid Ed25519 signature of `msg` by this key.
  bool Verify(std::string_view msg, std::string_view sig) const;

 private:
  struct Impl;

  std::string name_;
  std::string public_key_;
  uint32_t key_id_ = 0;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace tally

#endif  // TALLY_LEDGER_SIGNER_H_
