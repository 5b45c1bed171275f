// Status and Result<T>: the ledger's error values. Errors are returned, never thrown.
#ifndef TALLY_LEDGER_STATUS_H_
#define TALLY_LEDGER_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace tally {

// The canonical error codes. Values are stable: do not change.
enum class Code : int {
  kOk = 0,
  kInvalidArgument = 1,
  kNotFound = 2,
  kAlreadyExists = 3,
  kFailedPrecondition = 4,
  kResourceExhausted = 5,
  kUnavailable = 6,
  kDataLoss = 7,
  kInternal = 8,
};

const char* CodeName(Code code);

// A Status is OK, or a code with a message. A `reason` is an optional stable, machine-readable
// word (for example "insufficient_points") that the API layer maps to its error code.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message, std::string reason = {})
      : code_(code), message_(std::move(message)), reason_(std::move(reason)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m, std::string r = {}) {
    return Status(Code::kInvalidArgument, std::move(m), std::move(r));
  }
  static Status NotFound(std::string m, std::string r = {}) {
    return Status(Code::kNotFound, std::move(m), std::move(r));
  }
  static Status AlreadyExists(std::string m, std::string r = {}) {
    return Status(Code::kAlreadyExists, std::move(m), std::move(r));
  }
  static Status FailedPrecondition(std::string m, std::string r = {}) {
    return Status(Code::kFailedPrecondition, std::move(m), std::move(r));
  }
  static Status ResourceExhausted(std::string m, std::string r = {}) {
    return Status(Code::kResourceExhausted, std::move(m), std::move(r));
  }
  static Status Unavailable(std::string m, std::string r = {}) {
    return Status(Code::kUnavailable, std::move(m), std::move(r));
  }
  static Status DataLoss(std::string m, std::string r = {}) {
    return Status(Code::kDataLoss, std::move(m), std::move(r));
  }
  static Status Internal(std::string m, std::string r = {}) {
    return Status(Code::kInternal, std::move(m), std::move(r));
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::string& reason() const { return reason_; }
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
  std::string reason_;
};

// Result<T> holds a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok());
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace tally

#define TALLY_CONCAT_INNER(a, b) a##b
#define TALLY_CONCAT(a, b) TALLY_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if it is not OK.
#define RETURN_IF_ERROR(expr)     \
  do {                            \
    ::tally::Status _st = (expr); \
    if (!_st.ok()) return _st;    \
  } while (0)

// Declares `lhs` from a Result expression, returning its status on error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(TALLY_CONCAT(_result_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

// Invariant checks: always on, in every build. For programmer errors, never for user input.
#define TALLY_CHECK(cond)                                         \
  do {                                                            \
    if (!(cond)) ::tally::CheckFailed(__FILE__, __LINE__, #cond); \
  } while (0)

namespace tally {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond);
}  // namespace tally

#endif  // TALLY_LEDGER_STATUS_H_
