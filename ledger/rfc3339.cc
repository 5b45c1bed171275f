#include "ledger/rfc3339.h"

#include <cstdio>

#include "ledger/clock.h"

namespace tally {
namespace {

// Days from 1970-01-01 to the civil date (proleptic Gregorian), after H. Hinnant.
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = y / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

struct Civil {
  int64_t year, month, day;
};

Civil CivilFromDays(int64_t z) {
  z += 719468;
  const int64_t era = z / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t day = doy - (153 * mp + 2) / 5 + 1;
  const int64_t month = mp < 10 ? mp + 3 : mp - 9;
  return Civil{yoe + era * 400 + (month <= 2 ? 1 : 0), month, day};
}

bool IsLeap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int64_t DaysInMonth(int64_t y, int64_t m) {
  static constexpr int64_t kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

// Reads `n` decimal digits at *pos into *out; false if they are not all digits.
bool Digits(std::string_view s, size_t* pos, size_t n, int64_t* out) {
  if (s.size() < *pos + n) return false;
  int64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[*pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *pos += n;
  *out = v;
  return true;
}

bool Expect(std::string_view s, size_t* pos, std::string_view what) {
  if (s.substr(*pos, what.size()) != what) return false;
  *pos += what.size();
  return true;
}

bool ExpectEither(std::string_view s, size_t* pos, char a, char b) {
  if (*pos >= s.size() || (s[*pos] != a && s[*pos] != b)) return false;
  ++*pos;
  return true;
}

// The fraction after '.', as microseconds (truncated). False without at least one digit.
bool Fraction(std::string_view s, size_t* pos, int64_t* micros) {
  size_t start = *pos;
  int64_t v = 0;
  while (*pos < s.size() && s[*pos] >= '0' && s[*pos] <= '9') {
    if (*pos - start < 6) v = v * 10 + (s[*pos] - '0');
    ++*pos;
  }
  size_t n = *pos - start;
  if (n == 0) return false;
  for (size_t i = n; i < 6; ++i) v *= 10;
  *micros = v;
  return true;
}

Status Bad(std::string_view text) {
  return Status::InvalidArgument(
      "not an RFC 3339 UTC time: \"" + std::string(text.substr(0, 64)) + "\"", "bad_request");
}

}  // namespace

Result<int64_t> ParseRfc3339(std::string_view s) {
  size_t pos = 0;
  int64_t y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, micros = 0;
  bool ok = Digits(s, &pos, 4, &y) && Expect(s, &pos, "-") && Digits(s, &pos, 2, &mo) &&
            Expect(s, &pos, "-") && Digits(s, &pos, 2, &d) && ExpectEither(s, &pos, 'T', 't') &&
            Digits(s, &pos, 2, &h) && Expect(s, &pos, ":") && Digits(s, &pos, 2, &mi) &&
            Expect(s, &pos, ":") && Digits(s, &pos, 2, &sec);
  if (ok && pos < s.size() && s[pos] == '.') {
    ++pos;
    ok = Fraction(s, &pos, &micros);
  }
  if (!ok) return Bad(s);
  std::string_view zone = s.substr(pos);
  if (zone != "Z" && zone != "z" && zone != "+00:00") return Bad(s);
  if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > DaysInMonth(y, mo) || h > 23 || mi > 59 ||
      sec > 59) {
    return Bad(s);
  }
  int64_t seconds = DaysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
  return seconds * kMicrosPerSecond + micros;
}

std::string FormatRfc3339(int64_t us) {
  TALLY_CHECK(us >= 0);
  int64_t seconds = us / kMicrosPerSecond;
  int64_t micros = us % kMicrosPerSecond;
  int64_t days = seconds / 86400;
  int64_t rest = seconds % 86400;
  Civil c = CivilFromDays(days);
  char buf[40];
  int n = std::snprintf(buf, sizeof(buf), "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld",
                        static_cast<long long>(c.year), static_cast<long long>(c.month),
                        static_cast<long long>(c.day), static_cast<long long>(rest / 3600),
                        static_cast<long long>(rest / 60 % 60), static_cast<long long>(rest % 60));
  std::string out(buf, static_cast<size_t>(n));
  if (micros != 0) {
    std::snprintf(buf, sizeof(buf), ".%06lld", static_cast<long long>(micros));
    out += buf;
  }
  return out + "Z";
}

}  // namespace tally
