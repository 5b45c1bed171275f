// An independent receipt verifier for the tests: written from the RFC 9162 and C2SP texts, with
// OpenSSL (EVP) for SHA-256, base64 and Ed25519, and none of the ledger's own code, so that a
// receipt that passes here would pass for an outside client holding only the public key.
#ifndef TALLY_TESTS_RECEIPT_VERIFIER_H_
#define TALLY_TESTS_RECEIPT_VERIFIER_H_

#include <openssl/evp.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tally::testing {

using Bytes = std::string;

// SHA-256 of `data`.
inline Bytes Sha256Evp(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr) != 1) return "";
  return Bytes(reinterpret_cast<char*>(out), len);
}

// Standard padded base64 (RFC 4648 section 4); nullopt when `text` is not exactly that.
inline std::optional<Bytes> Base64DecodeEvp(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  for (char c : text) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '=';
    if (!ok) return std::nullopt;
  }
  Bytes out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  size_t padding = 0;
  if (!text.empty() && text.back() == '=') ++padding;
  if (text.size() >= 2 && text[text.size() - 2] == '=') ++padding;
  out.resize(static_cast<size_t>(n) - padding);
  return out;
}

// RFC 9162 section 2.1.3.2: verifies that `leaf` (the entry bytes, not yet hashed) is at
// `leaf_index` in the tree of `tree_size` leaves whose root is `root`.
inline bool VerifyInclusionFromRfc(uint64_t leaf_index, uint64_t tree_size, const Bytes& leaf,
                                   const std::vector<Bytes>& path, const Bytes& root) {
  if (leaf_index >= tree_size) return false;
  uint64_t fn = leaf_index, sn = tree_size - 1;
  Bytes r = Sha256Evp(Bytes(1, '\0') + leaf);
  for (const Bytes& p : path) {
    if (sn == 0) return false;
    if ((fn & 1) == 1 || fn == sn) {
      r = Sha256Evp(Bytes(1, '\1') + p + r);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = Sha256Evp(Bytes(1, '\1') + r + p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

// RFC 9162 section 2.1.4.2: verifies that the tree of `second` leaves with root `second_root`
// extends the tree of `first` leaves with root `first_root`.
inline bool VerifyConsistencyFromRfc(uint64_t first, uint64_t second, std::vector<Bytes> path,
                                     const Bytes& first_root, const Bytes& second_root) {
  if (first == 0 || first > second) return false;
  if (first == second) return path.empty() && first_root == second_root;
  if (path.empty()) return false;
  if ((first & (first - 1)) == 0) path.insert(path.begin(), first_root);
  uint64_t fn = first - 1, sn = second - 1;
  while ((fn & 1) == 1) {
    fn >>= 1;
    sn >>= 1;
  }
  Bytes fr = path[0], sr = path[0];
  for (size_t i = 1; i < path.size(); ++i) {
    const Bytes& c = path[i];
    if (sn == 0) return false;
    if ((fn & 1) == 1 || fn == sn) {
      fr = Sha256Evp(Bytes(1, '\1') + c + fr);
      sr = Sha256Evp(Bytes(1, '\1') + c + sr);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = Sha256Evp(Bytes(1, '\1') + sr + c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return fr == first_root && sr == second_root && sn == 0;
}

struct ParsedNote {
  Bytes text, name, sig;
  uint32_t key_id = 0;
};

// C2SP signed-note with one signature: text, a blank line, "— name base64(keyid || sig)\n".
inline bool ParseSignedNote(const Bytes& note, ParsedNote* out) {
  size_t split = note.find("\n\n");
  if (split == Bytes::npos) return false;
  out->text = note.substr(0, split + 1);
  Bytes line = note.substr(split + 2);
  const Bytes dash = "\xE2\x80\x94 ";
  if (line.compare(0, dash.size(), dash) != 0 || line.empty() || line.back() != '\n') return false;
  line = line.substr(dash.size(), line.size() - dash.size() - 1);
  size_t space = line.find(' ');
  if (space == Bytes::npos) return false;
  out->name = line.substr(0, space);
  std::optional<Bytes> blob = Base64DecodeEvp(line.substr(space + 1));
  if (!blob || blob->size() != 68) return false;
  out->key_id = (uint32_t(uint8_t((*blob)[0])) << 24) | (uint32_t(uint8_t((*blob)[1])) << 16) |
                (uint32_t(uint8_t((*blob)[2])) << 8) | uint32_t(uint8_t((*blob)[3]));
  out->sig = blob->substr(4);
  return true;
}

inline bool Ed25519Verify(const Bytes& pub, const Bytes& msg, const Bytes& sig) {
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(pub.data()), pub.size());
  if (key == nullptr) return false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx != nullptr && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  return ok;
}

// The C2SP signed-note key id of an Ed25519 key: the first 4 bytes of
// SHA-256(name || "\n" || 0x01 || public key), big-endian.
inline uint32_t KeyIdFromSpec(const Bytes& name, const Bytes& pub) {
  Bytes h = Sha256Evp(name + "\n" + Bytes(1, '\x01') + pub);
  return (uint32_t(uint8_t(h[0])) << 24) | (uint32_t(uint8_t(h[1])) << 16) |
         (uint32_t(uint8_t(h[2])) << 8) | uint32_t(uint8_t(h[3]));
}

// The body of a C2SP tlog-checkpoint: origin, tree size, base64 root, then optional lines.
struct ParsedCheckpoint {
  Bytes origin;
  uint64_t size = 0;
  Bytes root;
};

inline bool ParseCheckpointBody(const Bytes& text, ParsedCheckpoint* out) {
  size_t a = text.find('\n');
  size_t b = a == Bytes::npos ? Bytes::npos : text.find('\n', a + 1);
  size_t c = b == Bytes::npos ? Bytes::npos : text.find('\n', b + 1);
  if (c == Bytes::npos) return false;
  out->origin = text.substr(0, a);
  Bytes size = text.substr(a + 1, b - a - 1);
  if (size.empty() || size.size() > 19 || (size.size() > 1 && size[0] == '0')) return false;
  for (char ch : size) {
    if (ch < '0' || ch > '9') return false;
  }
  out->size = std::stoull(size);
  std::optional<Bytes> root = Base64DecodeEvp(text.substr(b + 1, c - b - 1));
  if (!root || root->size() != 32) return false;
  out->root = *root;
  return true;
}

// Checks a signed checkpoint note under the raw Ed25519 key `pub` and parses its body.
inline bool VerifyCheckpointNote(const Bytes& note, const Bytes& pub, ParsedCheckpoint* out) {
  ParsedNote parsed;
  if (!ParseSignedNote(note, &parsed)) return false;
  if (parsed.key_id != KeyIdFromSpec(parsed.name, pub)) return false;
  if (!Ed25519Verify(pub, parsed.text, parsed.sig)) return false;
  return ParseCheckpointBody(parsed.text, out);
}

// A receipt is valid under `pub` when the leaf is included in the tree of the checkpoint's size
// with the checkpoint's root, and the checkpoint is signed by pub. `tree_size`, when given, must
// be the checkpoint's size.
inline bool VerifyReceiptBytes(uint64_t leaf_index, const Bytes& entry,
                               const std::vector<Bytes>& inclusion_proof, const Bytes& checkpoint,
                               const Bytes& pub, std::optional<uint64_t> tree_size = std::nullopt) {
  ParsedCheckpoint cp;
  if (!VerifyCheckpointNote(checkpoint, pub, &cp)) return false;
  if (tree_size && *tree_size != cp.size) return false;
  return VerifyInclusionFromRfc(leaf_index, cp.size, entry, inclusion_proof, cp.root);
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_RECEIPT_VERIFIER_H_
