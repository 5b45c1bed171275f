#include "ledger/signer.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "ledger/base64.h"
#include "ledger/hash.h"
#include "ledger/note.h"

namespace tally {
namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

constexpr size_t kMaxPemSize = 64 * 1024;

// Returns the oldest queued OpenSSL error and empties the thread's queue: a stale entry would
// otherwise be blamed on a later, unrelated TLS call on this thread.
std::string TakeOpenSslError() {
  const unsigned long code = ERR_peek_error();
  char buf[256] = "unknown OpenSSL error";
  if (code != 0) ERR_error_string_n(code, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// Refuses encrypted PEM: the default callback would prompt on the terminal.
int NoPassphrase(char*, int, int, void*) { return -1; }

Result<BioPtr> MemBio(std::string_view data) {
  if (data.size() > kMaxPemSize) return Status::InvalidArgument("PEM input too large");
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) return Status::Internal("BIO_new_mem_buf: " + TakeOpenSslError());
  return bio;
}

std::string BioContents(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

Result<PkeyPtr> ParsePrivatePem(std::string_view pem) {
  ASSIGN_OR_RETURN(BioPtr bio, MemBio(pem));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) {
    return Status::InvalidArgument("not an unencrypted PEM private key: " + TakeOpenSslError());
  }
  if (EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) {
    return Status::InvalidArgument("private key is not an Ed25519 key");
  }
  return key;
}

std::string RawPublicKey(const EVP_PKEY* key) {
  std::string raw(kEd25519PublicKeySize, '\0');
  size_t len = raw.size();
  TALLY_CHECK(
      EVP_PKEY_get_raw_public_key(key, reinterpret_cast<unsigned char*>(raw.data()), &len) == 1 &&
      len == kEd25519PublicKeySize);
  return raw;
}

std::string PrivateKeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  TALLY_CHECK(bio != nullptr);
  TALLY_CHECK(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  return BioContents(bio.get());
}

// ---------------------------------------------------------------------------------------------
// Files

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

Status WriteAllAndSync(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::Internal(Errno("write", path));
    data.remove_prefix(static_cast<size_t>(n));
  }
  if (::fsync(fd) != 0) return Status::Internal(Errno("fsync", path));
  return Status::Ok();
}

Result<std::string> ReadAll(int fd, const std::string& path) {
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::Internal(Errno("read", path));
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxPemSize) return Status::InvalidArgument(path + ": file too large");
  }
}

bool FileExists(const std::string& path, Status* error) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return true;
  if (errno != ENOENT) *error = Status::Internal(Errno("stat", path));
  return false;
}

// Makes a new directory entry durable: fsync of the file alone does not persist its name.
Status SyncParentDir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Status::Internal(Errno("open directory", dir));
  if (::fsync(fd.get()) != 0) return Status::Internal(Errno("fsync directory", dir));
  return Status::Ok();
}

// Reads the private key file, refusing one that others could read or replace.
Result<std::string> ReadKeyFile(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::Internal(Errno("fstat", path));
  if (!S_ISREG(st.st_mode)) {
    return Status::FailedPrecondition("key file " + path + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::FailedPrecondition("key file " + path + " has mode " + mode +
                                      ": it must not be accessible by group or others (chmod 600)");
  }
  return ReadAll(fd, path);
}

// Writes the public key PEM via a temporary file and a rename, so the file is never partial.
Status WritePublicKeyFile(const std::string& path, std::string_view raw_public_key) {
  const std::string tmp = path + ".tmp";
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) return Status::Internal(Errno("create", tmp));
    RETURN_IF_ERROR(WriteAllAndSync(fd.get(), PublicKeyToPem(raw_public_key), tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::Internal(Errno("rename", tmp));
  return SyncParentDir(path);
}

// Loading: an existing public key file must match; a missing one is written.
Status EnsurePublicKeyFile(const std::string& path, std::string_view raw_public_key) {
  Status error;
  if (!FileExists(path, &error)) {
    RETURN_IF_ERROR(error);
    return WritePublicKeyFile(path, raw_public_key);
  }
  ASSIGN_OR_RETURN(std::string existing, ReadPublicKeyPem(path));
  if (existing != raw_public_key) {
    return Status::FailedPrecondition("public key file " + path +
                                      " does not match the private key");
  }
  return Status::Ok();
}

Status WriteNewKeyFile(const std::string& path, std::string_view pem) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0 && errno == EEXIST) {
    return Status::Unavailable("key file " + path + " appeared while being created; retry");
  }
  if (fd.get() < 0) return Status::Internal(Errno("create", path));
  RETURN_IF_ERROR(WriteAllAndSync(fd.get(), pem, path));
  return SyncParentDir(path);
}

Result<PkeyPtr> GenerateKey() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return Status::Internal("Ed25519 key generation failed: " + TakeOpenSslError());
  return key;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Status CheckName(std::string_view name) {
  if (!IsValidKeyName(name)) {
    return Status::InvalidArgument("invalid key name \"" + std::string(name) + "\"");
  }
  return Status::Ok();
}

// Creating: a public key file without its private key means a misconfigured path, not a fresh
// start, so it is refused rather than overwritten with a new identity.
Status CheckNoStalePublicKey(const std::string& pub_path, const std::string& key_path) {
  Status error;
  if (FileExists(pub_path, &error)) {
    return Status::FailedPrecondition("public key file " + pub_path + " exists but key file " +
                                      key_path + " does not");
  }
  return error;
}

// Generates a key and writes it to the new file `key_path`.
Result<PkeyPtr> CreateKeyFile(const std::string& key_path, const std::string& pub_path) {
  RETURN_IF_ERROR(CheckNoStalePublicKey(pub_path, key_path));
  ASSIGN_OR_RETURN(PkeyPtr key, GenerateKey());
  RETURN_IF_ERROR(WriteNewKeyFile(key_path, PrivateKeyToPem(key.get())));
  return key;
}

Result<PkeyPtr> LoadKeyFile(int fd, const std::string& key_path) {
  ASSIGN_OR_RETURN(std::string pem, ReadKeyFile(fd, key_path));
  Result<PkeyPtr> key = ParsePrivatePem(pem);
  if (!key.ok()) return Status::InvalidArgument(key_path + ": " + key.status().message());
  return key;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Free functions

uint32_t NoteKeyId(std::string_view name, std::string_view raw_public_key) {
  static constexpr char kSuffix[2] = {'\n', 0x01};
  const Hash h = Sha256({name, std::string_view(kSuffix, 2), raw_public_key});
  return static_cast<uint32_t>(h[0]) << 24 | static_cast<uint32_t>(h[1]) << 16 |
         static_cast<uint32_t>(h[2]) << 8 | h[3];
}

std::string VerifierKey(std::string_view name, std::string_view raw_public_key) {
  char id[9];
  std::snprintf(id, sizeof(id), "%08x", NoteKeyId(name, raw_public_key));
  std::string typed_key = "\x01";
  typed_key.append(raw_public_key);
  return std::string(name) + "+" + id + "+" + Base64Encode(typed_key);
}

Result<std::string> PublicKeyFromPem(std::string_view pem) {
  ASSIGN_OR_RETURN(BioPtr bio, MemBio(pem));
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, NoPassphrase, nullptr));
  if (!key) return Status::InvalidArgument("not a PEM public key: " + TakeOpenSslError());
  if (EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) {
    return Status::InvalidArgument("public key is not an Ed25519 key");
  }
  return RawPublicKey(key.get());
}

Result<std::string> ReadPublicKeyPem(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0 && errno == ENOENT) return Status::NotFound("no public key file " + path);
  if (fd.get() < 0) return Status::Internal(Errno("open", path));
  ASSIGN_OR_RETURN(std::string pem, ReadAll(fd.get(), path));
  Result<std::string> raw = PublicKeyFromPem(pem);
  if (!raw.ok()) return Status::InvalidArgument(path + ": " + raw.status().message());
  return raw;
}

std::string PublicKeyToPem(std::string_view raw_public_key) {
  TALLY_CHECK(raw_public_key.size() == kEd25519PublicKeySize);
  PkeyPtr key(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(raw_public_key.data()),
      raw_public_key.size()));
  TALLY_CHECK(key != nullptr);
  BioPtr bio(BIO_new(BIO_s_mem()));
  TALLY_CHECK(bio != nullptr && PEM_write_bio_PUBKEY(bio.get(), key.get()) == 1);
  return BioContents(bio.get());
}

// ---------------------------------------------------------------------------------------------
// Signer

struct Signer::Impl {
  PkeyPtr key;
};

Signer::Signer(std::string name, std::unique_ptr<Impl> impl)
    : name_(std::move(name)),
      public_key_(RawPublicKey(impl->key.get())),
      key_id_(NoteKeyId(name_, public_key_)),
      impl_(std::move(impl)) {}

Signer::Signer(Signer&&) noexcept = default;
Signer& Signer::operator=(Signer&&) noexcept = default;
Signer::~Signer() = default;

Result<Signer> Signer::FromPem(std::string_view pem, std::string name) {
  RETURN_IF_ERROR(CheckName(name));
  ASSIGN_OR_RETURN(PkeyPtr key, ParsePrivatePem(pem));
  return Signer(std::move(name), std::unique_ptr<Impl>(new Impl{std::move(key)}));
}

Result<Signer> Signer::Generate(std::string name) {
  RETURN_IF_ERROR(CheckName(name));
  ASSIGN_OR_RETURN(PkeyPtr key, GenerateKey());
  return Signer(std::move(name), std::unique_ptr<Impl>(new Impl{std::move(key)}));
}

Result<Signer> Signer::LoadOrCreate(const std::string& key_path, const std::string& pub_path,
                                    const std::string& name) {
  RETURN_IF_ERROR(CheckName(name));
  Fd fd(::open(key_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0 && errno == ENOENT) {
    ASSIGN_OR_RETURN(PkeyPtr key, CreateKeyFile(key_path, pub_path));
    Signer signer(name, std::unique_ptr<Impl>(new Impl{std::move(key)}));
    RETURN_IF_ERROR(WritePublicKeyFile(pub_path, signer.public_key()));
    return signer;
  }
  if (fd.get() < 0) return Status::Internal(Errno("open", key_path));
  ASSIGN_OR_RETURN(PkeyPtr key, LoadKeyFile(fd.get(), key_path));
  Signer signer(name, std::unique_ptr<Impl>(new Impl{std::move(key)}));
  RETURN_IF_ERROR(EnsurePublicKeyFile(pub_path, signer.public_key()));
  return signer;
}

std::string Signer::Sign(std::string_view msg) const {
  // A context per call: EVP_MD_CTX is not shareable between threads, the key is.
  MdCtxPtr ctx(EVP_MD_CTX_new());
  TALLY_CHECK(ctx != nullptr);
  TALLY_CHECK(EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, impl_->key.get()) == 1);
  std::string sig(kEd25519SignatureSize, '\0');
  size_t len = sig.size();
  TALLY_CHECK(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                             reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) == 1);
  TALLY_CHECK(len == kEd25519SignatureSize);
  return sig;
}

// ---------------------------------------------------------------------------------------------
// Verifier

struct Verifier::Impl {
  PkeyPtr key;
};

Verifier::Verifier(std::string name, std::string raw_public_key)
    : name_(std::move(name)), public_key_(std::move(raw_public_key)) {
  TALLY_CHECK(IsValidKeyName(name_));
  TALLY_CHECK(public_key_.size() == kEd25519PublicKeySize);
  key_id_ = NoteKeyId(name_, public_key_);
  PkeyPtr key(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(public_key_.data()),
      public_key_.size()));
  TALLY_CHECK(key != nullptr);  // OpenSSL accepts any 32 bytes; bad points fail to verify
  impl_ = std::shared_ptr<const Impl>(new Impl{std::move(key)});
}

Result<Verifier> Verifier::FromVerifierKey(std::string_view vkey) {
  const size_t plus1 = vkey.find('+');
  const size_t plus2 = plus1 == std::string_view::npos ? plus1 : vkey.find('+', plus1 + 1);
  if (plus2 == std::string_view::npos) {
    return Status::InvalidArgument("verifier key: expected <name>+<key id>+<key>");
  }
  const std::string_view name = vkey.substr(0, plus1);
  const std::string_view id_hex = vkey.substr(plus1 + 1, plus2 - plus1 - 1);
  RETURN_IF_ERROR(CheckName(name));
  uint32_t id = 0;
  for (char c : id_hex) {
    const int digit = HexDigit(c);
    if (digit < 0) return Status::InvalidArgument("verifier key: key id is not hex");
    id = id << 4 | static_cast<uint32_t>(digit);
  }
  if (id_hex.size() != 8) return Status::InvalidArgument("verifier key: key id is not 8 digits");
  Result<std::string> typed_key = Base64Decode(vkey.substr(plus2 + 1));
  if (!typed_key.ok()) return Status::InvalidArgument("verifier key: key is not base64");
  if (typed_key->size() != 1 + kEd25519PublicKeySize || (*typed_key)[0] != 0x01) {
    return Status::InvalidArgument("verifier key: not an Ed25519 (type 0x01) key");
  }
  std::string raw = typed_key->substr(1);
  if (NoteKeyId(name, raw) != id) {
    return Status::InvalidArgument("verifier key: key id does not match name and key");
  }
  return Verifier(std::string(name), std::move(raw));
}

bool Verifier::Verify(std::string_view msg, std::string_view sig) const {
  if (sig.size() != kEd25519SignatureSize) return false;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  TALLY_CHECK(ctx != nullptr);
  TALLY_CHECK(EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, impl_->key.get()) == 1);
  const int rc =
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                       reinterpret_cast<const unsigned char*>(msg.data()), msg.size());
  if (rc != 1) ERR_clear_error();  // a bad signature queues an error; see TakeOpenSslError
  return rc == 1;
}

}  // namespace tally
