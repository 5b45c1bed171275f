#include "ledger/status.h"

#include <cstdio>
#include <cstdlib>

namespace tally {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kInvalidArgument:
      return "InvalidArgument";
    case Code::kNotFound:
      return "NotFound";
    case Code::kAlreadyExists:
      return "AlreadyExists";
    case Code::kFailedPrecondition:
      return "FailedPrecondition";
    case Code::kResourceExhausted:
      return "ResourceExhausted";
    case Code::kUnavailable:
      return "Unavailable";
    case Code::kDataLoss:
      return "DataLoss";
    case Code::kInternal:
      return "Internal";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(code_);
  if (!reason_.empty()) s += " (" + reason_ + ")";
  s += ": " + message_;
  return s;
}

void CheckFailed(const char* file, int line, const char* cond) {
  std::fprintf(stderr, "tally: invariant failed at %s:%d: %s\n", file, line, cond);
  std::abort();
}

}  // namespace tally
