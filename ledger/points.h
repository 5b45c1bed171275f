// Checked arithmetic on points. Points are whole int64 numbers; no floating point near them.
#ifndef TALLY_LEDGER_POINTS_H_
#define TALLY_LEDGER_POINTS_H_

#include <cstdint>

namespace tally {

// Returns false (and leaves *out unspecified) on overflow.
[[nodiscard]] inline bool CheckedAdd(int64_t a, int64_t b, int64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}
[[nodiscard]] inline bool CheckedSub(int64_t a, int64_t b, int64_t* out) {
  return !__builtin_sub_overflow(a, b, out);
}
[[nodiscard]] inline bool CheckedMul(int64_t a, int64_t b, int64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

}  // namespace tally

#endif  // TALLY_LEDGER_POINTS_H_
