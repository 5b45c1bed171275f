// Metrics: the counters behind GET /metrics, rendered in the Prometheus text format 0.0.4.
#ifndef TALLY_API_METRICS_H_
#define TALLY_API_METRICS_H_

#include <cstdint>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "ledger/ledger.h"

namespace tally {

// Upper bounds of the request latency histogram, in seconds (a last, unbounded bucket follows).
inline constexpr double kRequestSecondsBounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                   0.05,   0.1,   0.25,   0.5,   1,    2.5};

// Request counts and latency histograms by (route, status). Routes are templates such as
// "/v1/programs/{p}/earn", so the label sets stay bounded. Thread-safe.
class Metrics {
 public:
  // Counts one response.
  void Observe(const std::string& route, int status, double seconds);

  // The whole exposition: tally_http_requests_total{route,status}, tally_http_request_seconds
  // {route,status}, and from `stats` tally_commit_group_entries, tally_entries_total,
  // tally_fsync_seconds, tally_background_write_limit_bytes_per_second and
  // tally_background_write_bytes_total.
  std::string Render(const LedgerStats& stats) const;

 private:
  struct Latency {
    uint64_t counts[std::size(kRequestSecondsBounds) + 1] = {};
    double sum = 0;
  };

  mutable std::mutex mu_;
  // By (route, status); the request counter is each histogram's count.
  std::map<std::pair<std::string, int>, Latency> latency_;  // guarded by mu_
};

}  // namespace tally

#endif  // TALLY_API_METRICS_H_
