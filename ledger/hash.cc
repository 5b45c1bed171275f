#include "ledger/hash.h"

#include <openssl/evp.h>

#include "ledger/base64.h"
#include "ledger/status.h"

namespace tally {
namespace {

// Fetched once: an implicit fetch by name on every digest costs a lock and a lookup.
// Deliberately never freed; it lives as long as the process.
const EVP_MD* Sha256Md() {
  static EVP_MD* const md = [] {
    EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    TALLY_CHECK(fetched != nullptr);
    return fetched;
  }();
  return md;
}

// One digest context per thread. Re-initialising a context that already holds SHA-256 with a
// null type reuses it, which skips the per-call context allocation that dominates the cost of
// hashing the short inputs of the Merkle tree (a third less time than EVP_Digest for 65 bytes).
class ThreadDigest {
 public:
  ThreadDigest() : ctx_(EVP_MD_CTX_new()) {
    TALLY_CHECK(ctx_ != nullptr);
    TALLY_CHECK(EVP_DigestInit_ex2(ctx_, Sha256Md(), nullptr) == 1);
  }
  ~ThreadDigest() { EVP_MD_CTX_free(ctx_); }
  ThreadDigest(const ThreadDigest&) = delete;
  ThreadDigest& operator=(const ThreadDigest&) = delete;

  EVP_MD_CTX* Begin() {
    TALLY_CHECK(EVP_DigestInit_ex2(ctx_, nullptr, nullptr) == 1);
    return ctx_;
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace

Hash Sha256(std::initializer_list<std::string_view> parts) {
  thread_local ThreadDigest digest;
  EVP_MD_CTX* ctx = digest.Begin();
  for (std::string_view part : parts) {
    TALLY_CHECK(EVP_DigestUpdate(ctx, part.data(), part.size()) == 1);
  }
  Hash out;
  unsigned int len = 0;
  TALLY_CHECK(EVP_DigestFinal_ex(ctx, out.data(), &len) == 1 && len == out.size());
  return out;
}

Hash Sha256(std::string_view data) { return Sha256({data}); }

std::string HashToHex(const Hash& hash) { return HexEncode(AsBytes(hash)); }

}  // namespace tally
