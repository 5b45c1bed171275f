#include "api/metrics.h"

#include <charconv>
#include <span>

namespace tally {
namespace {

// A label value with \, " and newline escaped, as the text format requires.
std::string Escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// The shortest text that reads back as `v` ("0.0005", "1e-04", "2.5").
std::string Number(double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

void Header(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

// One histogram's series from per-bucket (not cumulative) counts; `labels` is "" or `k="v",`.
void Histogram(std::string* out, const std::string& name, const std::string& labels,
               std::span<const double> bounds, std::span<const uint64_t> counts, double sum) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    std::string le = i < bounds.size() ? Number(bounds[i]) : "+Inf";
    *out += name + "_bucket{" + labels + "le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  std::string braces = labels.empty() ? "" : "{" + labels.substr(0, labels.size() - 1) + "}";
  *out += name + "_sum" + braces + " " + Number(sum) + "\n";
  *out += name + "_count" + braces + " " + std::to_string(cumulative) + "\n";
}

}  // namespace

void Metrics::Observe(const std::string& route, int status, double seconds) {
  size_t bucket = 0;
  while (bucket < std::size(kRequestSecondsBounds) && seconds > kRequestSecondsBounds[bucket]) {
    ++bucket;
  }
  std::lock_guard<std::mutex> lock(mu_);
  Latency& l = latency_[{route, status}];
  ++l.counts[bucket];
  l.sum += seconds;
}

std::string Metrics::Render(const LedgerStats& stats) const {
  std::string out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto labels = [](const std::pair<std::string, int>& key) {
      return "route=\"" + Escape(key.first) + "\",status=\"" + std::to_string(key.second) + "\"";
    };
    Header(&out, "tally_http_requests_total", "counter", "HTTP requests by route and status.");
    for (const auto& [key, l] : latency_) {
      uint64_t n = 0;
      for (uint64_t c : l.counts) n += c;
      out += "tally_http_requests_total{" + labels(key) + "} " + std::to_string(n) + "\n";
    }
    Header(&out, "tally_http_request_seconds", "histogram",
           "HTTP request latency by route and status.");
    for (const auto& [key, l] : latency_) {
      Histogram(&out, "tally_http_request_seconds", labels(key) + ",", kRequestSecondsBounds,
                l.counts, l.sum);
    }
  }
  Header(&out, "tally_commit_group_entries", "histogram", "Entries per commit group.");
  Histogram(&out, "tally_commit_group_entries", "", kGroupSizeBounds, stats.group_size_counts,
            static_cast<double>(stats.group_entries_sum));
  Header(&out, "tally_entries_total", "counter", "Entries in the log.");
  out += "tally_entries_total " + std::to_string(stats.entries) + "\n";
  Header(&out, "tally_fsync_seconds", "histogram",
         "Per commit group: from its write to the end of the WAL sync that makes it durable.");
  Histogram(&out, "tally_fsync_seconds", "", kWriteSecondsBounds, stats.write_seconds_counts,
            stats.write_seconds_sum);
  Header(&out, "tally_background_write_limit_bytes_per_second", "gauge",
         "Limit on RocksDB's flush and compaction writes (0: none).");
  out += "tally_background_write_limit_bytes_per_second " +
         std::to_string(stats.background_write_limit) + "\n";
  Header(&out, "tally_background_write_bytes_total", "counter",
         "Bytes RocksDB's flushes and compactions wrote under that limit (0 without one).");
  out +=
      "tally_background_write_bytes_total " + std::to_string(stats.background_write_bytes) + "\n";
  return out;
}

}  // namespace tally
