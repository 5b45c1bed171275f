// Finance reports over one program's entries, oldest first, through one snapshot.
#include <algorithm>
#include <ctime>

#include "ledger/accounts.h"
#include "ledger/clock.h"
#include "ledger/coding.h"
#include "ledger/keys.h"
#include "ledger/limits.h"
#include "ledger/loyalty.h"
#include "ledger/loyalty_internal.h"
#include "ledger/points.h"
#include "ledger/report.h"

namespace tally {
namespace {

// Visits the program's entries oldest first while fn returns true.
Status ForEachProgramEntry(const StateReader& s, const std::string& program,
                           const std::function<bool(const Entry&)>& fn) {
  std::string prefix = ProgramEntriesPrefix(program);
  Status st;
  RETURN_IF_ERROR(s.Scan(Cf::kProgramEntries, prefix, PrefixEnd(prefix), true,
                         [&](std::string_view k, std::string_view) {
                           auto e = internal::LoadEntry(s, IdFromNewestFirstKey(k));
                           if (!e.ok() || !*e) {
                             st = e.ok() ? Status::DataLoss("index names a missing entry")
                                         : e.status();
                             return false;
                           }
                           return fn(**e);
                         }));
  return st;
}

// The start of the bucket after `t` (UTC calendar months for kMonth).
int64_t NextBucket(int64_t t, Bucket b) {
  if (b == Bucket::kHour) return (t / (3600 * kMicrosPerSecond) + 1) * 3600 * kMicrosPerSecond;
  if (b == Bucket::kDay) return (t / kMicrosPerDay + 1) * kMicrosPerDay;
  std::time_t secs = static_cast<std::time_t>(t / kMicrosPerSecond);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  tm.tm_mon += 1;
  tm.tm_mday = 1;
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  return static_cast<int64_t>(timegm(&tm)) * kMicrosPerSecond;
}

int64_t BucketStart(int64_t t, Bucket b) {
  if (b == Bucket::kHour) return t / (3600 * kMicrosPerSecond) * 3600 * kMicrosPerSecond;
  if (b == Bucket::kDay) return t / kMicrosPerDay * kMicrosPerDay;
  std::time_t secs = static_cast<std::time_t>(t / kMicrosPerSecond);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  tm.tm_mday = 1;
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  return static_cast<int64_t>(timegm(&tm)) * kMicrosPerSecond;
}

}  // namespace

Result<Liability> Loyalty::LiabilityReport(const std::string& program, int64_t from_us,
                                           int64_t to_us) const {
  if (from_us > to_us) return Status::InvalidArgument("from is after to", "bad_request");
  auto view = ledger_->Read();
  ASSIGN_OR_RETURN(ProgramConfig p, internal::LoadProgram(*view, program));
  Liability out;
  out.from_us = from_us;
  out.to_us = to_us;
  Flows flows;
  RollForward roll;
  RETURN_IF_ERROR(ForEachProgramEntry(*view, program, [&](const Entry& e) {
    if (e.time_us >= to_us) return false;
    Movement m = Classify(e);
    if (e.time_us < from_us) {
      out.opening += m.liability;
    } else {
      flows.Add(m.flows);
    }
    roll.Add(e, m);
    return true;
  }));
  out.earned = flows.earned;
  out.referral = flows.referral;
  out.adjusted = flows.adjusted;
  out.redeemed = flows.redeemed;
  out.expired = flows.expired;
  out.reversed = flows.reversed;
  out.closing = roll.liability();
  TALLY_CHECK(out.opening + flows.Net() == out.closing);
  out.pending = roll.pending();
  out.currency = p.currency;
  out.point_value_minor = p.point_value_minor;
  if (!CheckedMul(out.closing, p.point_value_minor, &out.closing_value_minor)) {
    return Status::InvalidArgument("closing value overflows", "bad_request");
  }
  return out;
}

Result<Page<BalanceRow>> Loyalty::BalancesAsOf(const std::string& program, int64_t as_of_us,
                                               const std::string& cursor, size_t limit) const {
  limit = std::clamp<size_t>(limit, 1, kPageItemsMax);
  auto view = ledger_->Read();
  RETURN_IF_ERROR(internal::LoadProgram(*view, program).status());
  RollForward roll;
  RETURN_IF_ERROR(ForEachProgramEntry(*view, program, [&](const Entry& e) {
    if (e.time_us > as_of_us) return false;
    roll.Add(e, Classify(e));
    return true;
  }));
  Page<BalanceRow> page;
  auto it = cursor.empty() ? roll.balances().begin() : roll.balances().upper_bound(cursor);
  for (; it != roll.balances().end(); ++it) {
    if (page.items.size() == limit) {
      page.next_cursor = page.items.back().customer;
      break;
    }
    auto get = [&](std::string_view kind) {
      auto k = it->second.find(std::string(kind));
      return k == it->second.end() ? int64_t{0} : k->second;
    };
    page.items.push_back(
        BalanceRow{it->first, get(acct::kAvailable), get(acct::kPending), get(acct::kReserved)});
  }
  return page;
}

Result<std::vector<ActivityBucket>> Loyalty::Activity(const std::string& program, int64_t from_us,
                                                      int64_t to_us, Bucket bucket) const {
  if (from_us > to_us) return Status::InvalidArgument("from is after to", "bad_request");
  auto view = ledger_->Read();
  RETURN_IF_ERROR(internal::LoadProgram(*view, program).status());
  std::vector<ActivityBucket> out;
  int64_t start = BucketStart(from_us, bucket);
  for (int64_t t = start; t < to_us; t = NextBucket(t, bucket)) {
    if (static_cast<int64_t>(out.size()) >= kActivityBucketsMax) {
      return Status::InvalidArgument("too many buckets: choose a wider bucket", "bad_request");
    }
    out.push_back(ActivityBucket{t});
  }
  int64_t liability = 0;
  size_t i = 0;
  RETURN_IF_ERROR(ForEachProgramEntry(*view, program, [&](const Entry& e) {
    if (e.time_us >= to_us) return false;
    Movement m = Classify(e);
    while (i < out.size() && e.time_us >= NextBucket(out[i].start_us, bucket)) {
      out[i].closing = liability;
      ++i;
    }
    liability += m.liability;
    if (i < out.size() && e.time_us >= out[i].start_us) {
      ActivityBucket& b = out[i];
      b.earned += m.flows.earned;
      b.referral += m.flows.referral;
      b.adjusted += m.flows.adjusted;
      b.redeemed += m.flows.redeemed;
      b.expired += m.flows.expired;
      b.reversed += m.flows.reversed;
    }
    return true;
  }));
  for (; i < out.size(); ++i) out[i].closing = liability;
  return out;
}

}  // namespace tally
