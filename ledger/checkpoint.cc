#include "ledger/checkpoint.h"

#include <algorithm>
#include <cstring>

#include "ledger/base64.h"

namespace tally {
namespace {

bool IsControl(char c) { return static_cast<unsigned char>(c) < 0x20; }

// A line the parser accepts back: non-empty, no newline or other control character.
bool IsValidLine(std::string_view line) {
  return !line.empty() && std::none_of(line.begin(), line.end(), IsControl);
}

Status Bad(const std::string& why) { return Status::InvalidArgument("checkpoint: " + why); }

Result<uint64_t> ParseSize(std::string_view digits) {
  if (digits.empty() || (digits.size() > 1 && digits[0] == '0')) {
    return Bad("size is not canonical decimal");
  }
  uint64_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return Bad("size is not decimal");
    const auto digit = static_cast<uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return Bad("size overflows 64 bits");
    value = value * 10 + digit;
  }
  return value;
}

Result<Hash> ParseRoot(std::string_view b64) {
  Result<std::string> raw = Base64Decode(b64);
  if (!raw.ok() || raw->size() != kHashSize) return Bad("root is not base64 of 32 bytes");
  Hash root;
  std::memcpy(root.data(), raw->data(), kHashSize);
  return root;
}

// Splits text into its lines; every line must end in '\n'.
Result<std::vector<std::string_view>> SplitLines(std::string_view text) {
  if (text.empty() || text.back() != '\n') return Bad("does not end in a newline");
  if (std::any_of(text.begin(), text.end(), [](char c) { return IsControl(c) && c != '\n'; })) {
    return Bad("control character");
  }
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    lines.push_back(text.substr(0, eol));
    text.remove_prefix(eol + 1);
  }
  return lines;
}

}  // namespace

std::string FormatCheckpoint(const Checkpoint& checkpoint) {
  TALLY_CHECK(IsValidLine(checkpoint.origin));
  std::string out = checkpoint.origin + "\n" + std::to_string(checkpoint.size) + "\n" +
                    Base64Encode(AsBytes(checkpoint.root)) + "\n";
  for (const std::string& extension : checkpoint.extensions) {
    TALLY_CHECK(IsValidLine(extension));
    out += extension;
    out += '\n';
  }
  return out;
}

Result<Checkpoint> ParseCheckpoint(std::string_view text) {
  ASSIGN_OR_RETURN(std::vector<std::string_view> lines, SplitLines(text));
  if (lines.size() < 3) return Bad("fewer than three lines");
  Checkpoint checkpoint;
  if (lines[0].empty()) return Bad("empty origin");
  checkpoint.origin = std::string(lines[0]);
  ASSIGN_OR_RETURN(checkpoint.size, ParseSize(lines[1]));
  ASSIGN_OR_RETURN(checkpoint.root, ParseRoot(lines[2]));
  for (size_t i = 3; i < lines.size(); ++i) {
    if (lines[i].empty()) return Bad("empty extension line");
    checkpoint.extensions.emplace_back(lines[i]);
  }
  return checkpoint;
}

}  // namespace tally
