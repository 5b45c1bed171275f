// tally-bench: an HTTP/1.1 load generator for tallyd and the baseline server (docs/BENCHMARKS.md).
//
//   tally-bench --url http://127.0.0.1:PORT --key ADMINKEY [--connections 64] [--duration 10]
//               [--mix earn=70,redeem=10,referral=5,balance=15] [--customers 10000]
//               [--program bench] [--setup] [--threads 2] [--rate 0] [--path /healthz]
//               [--advocates 64] [--json]
//
// Each connection is a kept-alive HTTP/1.1 connection with one request in flight. Every thread
// drives its share of the connections with one epoll loop over non-blocking sockets. Every write
// carries its own Idempotency-Key. Without --rate the load is closed-loop: a connection sends its
// next request as soon as the previous answer arrives. With --rate R the requests are paced at R
// per second in total, and each latency runs from the request's scheduled time (so a stalled
// server is not hidden by requests that were never sent: no coordinated omission).
//
// --setup creates the program (referrals on, codes that never run out) if it is absent and earns
// 1000 points for every customer, so that redeems mostly succeed and balances exist. With referrals
// in the mix, referral codes are fetched (or created) for --advocates advocates before the run, and
// each referral refers a fresh friend. --path GETs one path with no other work (for the baseline).
//
// Latencies go into a log-bucketed histogram (7 significant bits, under 1% error).
// Exit codes: 0 when the run finished, 1 when it could not run, 2 for bad flags.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tally {
namespace {

// ---------------------------------------------------------------------------------------------
// Options.

enum Op { kEarn = 0, kRedeem, kReferral, kBalance, kGet, kOpCount };
constexpr const char* kOpNames[kOpCount] = {"earn", "redeem", "referral", "balance", "get"};

constexpr const char* kUsage =
    "usage: tally-bench --url http://HOST:PORT [--key KEY] [options]\n"
    "\n"
    "  --url URL            server to load (http only)\n"
    "  --key KEY            API key sent as Authorization: Bearer (admin or checkout; required\n"
    "                       unless --path)\n"
    "  --connections N      kept-alive connections, one request in flight each (default 64)\n"
    "  --duration S         seconds of load (default 10)\n"
    "  --mix LIST           op weights (default earn=70,redeem=10,referral=5,balance=15)\n"
    "  --customers N        customers c0..c(N-1) chosen uniformly (default 10000)\n"
    "  --program ID         program (default bench)\n"
    "  --setup              create the program if absent and pre-earn points for every customer\n"
    "  --advocates N        advocates whose referral codes referrals use (default 64)\n"
    "  --threads N          client threads, each an epoll loop (default 2)\n"
    "  --rate R             total requests per second, paced (default 0: as fast as possible)\n"
    "  --path PATH          only GET PATH, no key needed (the baseline)\n"
    "  --json               print one JSON line instead of the report\n";

struct Options {
  std::string url;
  std::string host;
  uint16_t port = 0;
  std::string key;
  int connections = 64;
  double duration_s = 10;
  std::array<int, kOpCount> weights = {70, 10, 5, 15, 0};
  int64_t customers = 10000;
  std::string program = "bench";
  bool setup = false;
  int advocates = 64;
  int threads = 2;
  double rate = 0;
  std::string path;
  bool json = false;
};

[[noreturn]] void Die(const std::string& message, int code = 1) {
  std::fprintf(stderr, "tally-bench: %s\n", message.c_str());
  std::exit(code);
}

[[noreturn]] void BadFlag(const std::string& message) { Die(message + " (see --help)", 2); }

int64_t ParseInt(std::string_view flag, std::string_view text, int64_t min, int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < min || v > max) {
    BadFlag(std::string(flag) + " must be an integer from " + std::to_string(min) + " to " +
            std::to_string(max));
  }
  return v;
}

double ParseDouble(std::string_view flag, std::string_view text, double min, double max) {
  std::string s(text);
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !(v >= min && v <= max)) {
    BadFlag(std::string(flag) + " must be a number from " + std::to_string(min) + " to " +
            std::to_string(max));
  }
  return v;
}

// "earn=70,redeem=10,...": ops not named get weight 0.
std::array<int, kOpCount> ParseMix(std::string_view text) {
  std::array<int, kOpCount> w{};
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) BadFlag("--mix items are OP=WEIGHT");
    std::string_view name = item.substr(0, eq);
    int op = -1;
    for (int i = 0; i < kGet; ++i) {
      if (name == kOpNames[i]) op = i;
    }
    if (op < 0) BadFlag("--mix: unknown op " + std::string(name));
    w[op] = static_cast<int>(ParseInt("a --mix weight", item.substr(eq + 1), 0, 1000000));
  }
  int sum = 0;
  for (int v : w) sum += v;
  if (sum == 0) BadFlag("--mix needs a positive weight");
  return w;
}

// http://HOST:PORT (HOST an IPv4 address or a name; no path).
void ParseUrl(std::string_view url, Options* o) {
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme) BadFlag("--url must start with http://");
  std::string_view rest = url.substr(kScheme.size());
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) BadFlag("--url must be http://HOST:PORT");
  o->host = std::string(rest.substr(0, colon));
  o->port = static_cast<uint16_t>(ParseInt("the port of --url", rest.substr(colon + 1), 1, 65535));
  o->url = std::string(url);
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg == "--setup") {
      o.setup = true;
      continue;
    }
    if (arg == "--json") {
      o.json = true;
      continue;
    }
    size_t eq = arg.find('=');
    std::string_view name = arg.substr(0, eq);
    std::string_view value;
    if (eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      BadFlag(std::string(name) + " needs a value");
    }
    if (name == "--url") {
      ParseUrl(value, &o);
    } else if (name == "--key") {
      o.key = std::string(value);
    } else if (name == "--connections") {
      o.connections = static_cast<int>(ParseInt(name, value, 1, 10000));
    } else if (name == "--duration") {
      o.duration_s = ParseDouble(name, value, 0.1, 86400);
    } else if (name == "--mix") {
      o.weights = ParseMix(value);
    } else if (name == "--customers") {
      o.customers = ParseInt(name, value, 1, 1'000'000'000);
    } else if (name == "--program") {
      o.program = std::string(value);
    } else if (name == "--advocates") {
      o.advocates = static_cast<int>(ParseInt(name, value, 1, 100000));
    } else if (name == "--threads") {
      o.threads = static_cast<int>(ParseInt(name, value, 1, 256));
    } else if (name == "--rate") {
      o.rate = ParseDouble(name, value, 0, 1e9);
    } else if (name == "--path") {
      if (value.empty() || value.front() != '/') BadFlag("--path must start with /");
      o.path = std::string(value);
    } else {
      BadFlag("unknown flag " + std::string(name));
    }
  }
  if (o.url.empty()) BadFlag("--url is required");
  if (o.key.empty() && o.path.empty()) BadFlag("--key is required (or --path)");
  if (!o.path.empty()) o.weights = {0, 0, 0, 0, 1};
  o.threads = std::min(o.threads, o.connections);
  return o;
}

// ---------------------------------------------------------------------------------------------
// Clock, random numbers, histogram.

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

class Rng {  // xorshift64*
 public:
  explicit Rng(uint64_t seed) : s_(seed | 1) {}
  uint64_t Next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1DULL;
  }
  uint64_t Below(uint64_t n) { return Next() % n; }

 private:
  uint64_t s_;
};

// Nanosecond values in log buckets: exact below 128, then 64 buckets per power of two.
class Histogram {
 public:
  void Record(uint64_t v) {
    ++counts_[Index(v)];
    ++count_;
    sum_ += v;
    max_ = std::max(max_, v);
  }
  void Merge(const Histogram& h) {
    for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += h.counts_[i];
    count_ += h.count_;
    sum_ += h.sum_;
    max_ = std::max(max_, h.max_);
  }
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  double mean() const {
    return count_ == 0 ? 0 : static_cast<double>(sum_) / static_cast<double>(count_);
  }
  // The value at percentile p (0 to 100): the middle of its bucket, at most the maximum.
  uint64_t Percentile(double p) const {
    if (count_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(Middle(i), max_);
    }
    return max_;
  }

 private:
  static size_t Index(uint64_t v) {
    if (v < 128) return v;
    int shift = static_cast<int>(std::bit_width(v)) - 7;  // v >> shift is in [64, 128)
    return static_cast<size_t>(shift) * 64 + (v >> shift);
  }
  static uint64_t Middle(size_t i) {
    if (i < 128) return i;
    int shift = static_cast<int>(i / 64) - 1;
    uint64_t low = (i % 64 + 64) << shift;
    return low + ((uint64_t{1} << shift) >> 1);
  }

  std::array<uint64_t, 64 * 60> counts_{};
  uint64_t count_ = 0, sum_ = 0, max_ = 0;
};

struct Stats {
  Histogram all;
  std::array<Histogram, kOpCount> by_op;
  std::array<std::array<uint64_t, 600>, kOpCount> status{};  // [op][status code]
  uint64_t sent = 0;       // requests sent, answered or not (those in flight at the end are not)
  uint64_t io_errors = 0;  // connections lost with a request in flight, failed connects
  uint64_t bad_responses = 0;

  void Merge(const Stats& s) {
    all.Merge(s.all);
    for (int op = 0; op < kOpCount; ++op) {
      by_op[op].Merge(s.by_op[op]);
      for (size_t c = 0; c < 600; ++c) status[op][c] += s.status[op][c];
    }
    sent += s.sent;
    io_errors += s.io_errors;
    bad_responses += s.bad_responses;
  }
};

// ---------------------------------------------------------------------------------------------
// HTTP on the wire.

sockaddr_in Resolve(const Options& o) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(o.host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) Die("cannot resolve " + o.host + ": " + gai_strerror(rc));
  sockaddr_in addr = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  freeaddrinfo(res);
  addr.sin_port = htons(o.port);
  return addr;
}

// A connected TCP socket with TCP_NODELAY, non-blocking if asked; -1 on failure.
int Connect(const sockaddr_in& addr, bool nonblocking) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  if (nonblocking) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct Response {
  int status = 0;
  std::string body;  // the body, chunked framing removed
  bool close = false;
  size_t consumed = 0;  // bytes of the buffer this response took
};

enum class Parse { kIncomplete, kDone, kBad };

// Parses a chunked body starting at `p`; on success sets body and the end offset.
Parse ParseChunked(std::string_view buf, size_t p, std::string* body, size_t* end) {
  body->clear();
  for (;;) {
    size_t eol = buf.find("\r\n", p);
    if (eol == std::string_view::npos) return Parse::kIncomplete;
    uint64_t size = 0;
    std::string_view line = buf.substr(p, eol - p);
    auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), size, 16);
    if (ec != std::errc() || size > (64u << 20)) return Parse::kBad;
    (void)ptr;  // chunk extensions are ignored
    p = eol + 2;
    if (size == 0) {  // trailers, then an empty line
      for (;;) {
        size_t e = buf.find("\r\n", p);
        if (e == std::string_view::npos) return Parse::kIncomplete;
        bool empty = e == p;
        p = e + 2;
        if (empty) {
          *end = p;
          return Parse::kDone;
        }
      }
    }
    if (buf.size() < p + size + 2) return Parse::kIncomplete;
    body->append(buf.substr(p, size));
    p += size + 2;
  }
}

// Parses one response from the start of `buf`. `want_body`: copy the body out.
Parse ParseResponse(std::string_view buf, bool want_body, Response* r) {
  size_t header_end = buf.find("\r\n\r\n");
  if (header_end == std::string_view::npos) {
    return buf.size() > (64u << 10) ? Parse::kBad : Parse::kIncomplete;
  }
  std::string_view head = buf.substr(0, header_end);
  if (head.size() < 12 || head.substr(0, 5) != "HTTP/") return Parse::kBad;
  bool http10 = head.substr(0, 8) == "HTTP/1.0";
  int status = 0;
  auto [ptr, ec] = std::from_chars(head.data() + 9, head.data() + 12, status);
  if (ec != std::errc() || ptr != head.data() + 12 || status < 100 || status > 599) {
    return Parse::kBad;
  }
  std::optional<uint64_t> length;
  bool chunked = false, close = http10, keep_alive = false;
  size_t p = head.find("\r\n");
  while (p != std::string_view::npos && p < head.size()) {
    p += 2;
    size_t e = head.find("\r\n", p);
    std::string_view line = head.substr(p, e == std::string_view::npos ? head.size() - p : e - p);
    p = e;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon), value = Trim(line.substr(colon + 1));
    if (IEquals(name, "content-length")) {
      uint64_t n = 0;
      auto [q, ec2] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec2 != std::errc() || q != value.data() + value.size()) return Parse::kBad;
      length = n;
    } else if (IEquals(name, "transfer-encoding")) {
      chunked = IEquals(value, "chunked");
    } else if (IEquals(name, "connection")) {
      if (IEquals(value, "close")) close = true;
      if (IEquals(value, "keep-alive")) keep_alive = true;
    }
  }
  if (http10 && keep_alive) close = false;
  size_t body_start = header_end + 4;
  r->status = status;
  r->close = close;
  if (chunked) {
    std::string body;
    size_t end = 0;
    Parse res = ParseChunked(buf, body_start, &body, &end);
    if (res != Parse::kDone) return res;
    if (want_body) r->body = std::move(body);
    r->consumed = end;
    return Parse::kDone;
  }
  uint64_t n = (status == 204 || status == 304) ? 0 : length.value_or(0);
  if (!length && !(status == 204 || status == 304)) {
    return Parse::kBad;  // a body up to the close: not expected from these servers
  }
  if (buf.size() < body_start + n) return Parse::kIncomplete;
  if (want_body) r->body = std::string(buf.substr(body_start, n));
  r->consumed = body_start + n;
  return Parse::kDone;
}

// The value of a top-level JSON string field in a small, trusted body ("" if absent).
std::string JsonString(std::string_view body, std::string_view field) {
  std::string needle = "\"" + std::string(field) + "\"";
  size_t p = body.find(needle);
  if (p == std::string_view::npos) return "";
  p = body.find('"', body.find(':', p + needle.size()));
  if (p == std::string_view::npos) return "";
  size_t e = body.find('"', p + 1);
  return e == std::string_view::npos ? "" : std::string(body.substr(p + 1, e - p - 1));
}

// One request and its answer over a fresh blocking connection (setup only).
Response Call(const sockaddr_in& addr, const Options& o, std::string_view method,
              const std::string& path, const std::string& body, const std::string& idem_key) {
  std::string req = std::string(method) + " " + path + " HTTP/1.1\r\nHost: " + o.host +
                    "\r\nAuthorization: Bearer " + o.key + "\r\n";
  if (!idem_key.empty()) req += "Idempotency-Key: " + idem_key + "\r\n";
  if (method != "GET") {
    req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "Connection: close\r\n\r\n" + body;
  int fd = Connect(addr, false);
  if (fd < 0) Die("cannot connect to " + o.url + ": " + std::strerror(errno));
  for (size_t off = 0; off < req.size();) {
    ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) Die("cannot send to " + o.url + ": " + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  std::string in;
  Response r;
  char buf[16384];
  for (;;) {
    Parse p = ParseResponse(in, true, &r);
    if (p == Parse::kDone) break;
    if (p == Parse::kBad) Die("bad response from " + o.url);
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) Die("connection to " + o.url + " closed before the response");
    in.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return r;
}

// ---------------------------------------------------------------------------------------------
// What to send.

// Makes requests. Next and Done are called from every worker thread at once.
class Source {
 public:
  virtual ~Source() = default;
  // Appends the next request to *out and returns its op, or nullopt when there are no more.
  // `stream` and `seq` make the request's Idempotency-Key (and its order or friend id) unique
  // within the process: `stream` names the worker thread of one RunLoad, `seq` counts its
  // requests. `tag` is passed back to Done with the answer.
  virtual std::optional<Op> Next(int stream, uint64_t seq, Rng& rng, std::string* out,
                                 uint64_t* tag) = 0;
  virtual bool wants_body() const { return false; }
  virtual void Done(uint64_t /*tag*/, const Response& /*r*/) {}
};

// Builds requests for one target: fixed header parts computed once.
class RequestBuilder {
 public:
  RequestBuilder(const Options& o, std::string run_id) : run_id_(std::move(run_id)) {
    common_ = " HTTP/1.1\r\nHost: " + o.host + ":" + std::to_string(o.port) + "\r\n";
    if (!o.key.empty()) common_ += "Authorization: Bearer " + o.key + "\r\n";
    program_path_ = "/v1/programs/" + o.program;
  }
  const std::string& program_path() const { return program_path_; }
  const std::string& run_id() const { return run_id_; }

  void Get(std::string_view path, std::string* out) const {
    out->append("GET ").append(path).append(common_).append("\r\n");
  }
  // A POST with its own Idempotency-Key: run id, stream, sequence number.
  void Post(std::string_view path, std::string_view body, int stream, uint64_t seq,
            std::string* out) const {
    char key[64];
    int n = std::snprintf(key, sizeof(key), "%s-%d-%llu", run_id_.c_str(), stream,
                          static_cast<unsigned long long>(seq));
    char length[24];
    int m = std::snprintf(length, sizeof(length), "%zu", body.size());
    out->append("POST ").append(path).append(common_);
    out->append("Content-Type: application/json\r\nIdempotency-Key: ");
    out->append(key, static_cast<size_t>(n)).append("\r\nContent-Length: ");
    out->append(length, static_cast<size_t>(m)).append("\r\n\r\n").append(body);
  }

 private:
  std::string run_id_;
  std::string common_;
  std::string program_path_;
};

// The weighted mix of earn, redeem, referral and balance; or GETs of one path.
class MixSource : public Source {
 public:
  MixSource(const Options& o, const RequestBuilder& b, std::vector<std::string> codes)
      : o_(o), b_(b), codes_(std::move(codes)) {
    int sum = 0;
    for (int op = 0; op < kOpCount; ++op) {
      sum += o.weights[op];
      cumulative_[op] = sum;
    }
    earn_path_ = b.program_path() + "/earn";
    redeem_path_ = b.program_path() + "/redeem";
    referral_path_ = b.program_path() + "/referrals";
    customer_path_ = b.program_path() + "/customers/c";
  }

  std::optional<Op> Next(int stream, uint64_t seq, Rng& rng, std::string* out,
                         uint64_t* /*tag*/) override {
    int pick = static_cast<int>(rng.Below(static_cast<uint64_t>(cumulative_[kOpCount - 1])));
    Op op = kEarn;
    while (pick >= cumulative_[op]) op = static_cast<Op>(op + 1);
    char body[256];
    int n = 0;
    unsigned long long customer = rng.Below(static_cast<uint64_t>(o_.customers));
    switch (op) {
      case kEarn:
        n = std::snprintf(body, sizeof(body),
                          "{\"customer\":\"c%llu\",\"points\":10,\"order_id\":\"o%s-%d-%llu\"}",
                          customer, b_.run_id().c_str(), stream,
                          static_cast<unsigned long long>(seq));
        b_.Post(earn_path_, std::string_view(body, static_cast<size_t>(n)), stream, seq, out);
        break;
      case kRedeem:
        n = std::snprintf(body, sizeof(body), "{\"customer\":\"c%llu\",\"points\":%d}", customer,
                          static_cast<int>(1 + rng.Below(5)));
        b_.Post(redeem_path_, std::string_view(body, static_cast<size_t>(n)), stream, seq, out);
        break;
      case kReferral:
        n = std::snprintf(body, sizeof(body), "{\"code\":\"%s\",\"friend\":\"f%s-%d-%llu\"}",
                          codes_[rng.Below(codes_.size())].c_str(), b_.run_id().c_str(), stream,
                          static_cast<unsigned long long>(seq));
        b_.Post(referral_path_, std::string_view(body, static_cast<size_t>(n)), stream, seq, out);
        break;
      case kBalance: {
        char path[160];
        n = std::snprintf(path, sizeof(path), "%s%llu", customer_path_.c_str(), customer);
        b_.Get(std::string_view(path, static_cast<size_t>(n)), out);
        break;
      }
      default:
        b_.Get(o_.path, out);
        break;
    }
    return op;
  }

 private:
  const Options& o_;
  const RequestBuilder& b_;
  std::vector<std::string> codes_;
  std::array<int, kOpCount> cumulative_{};
  std::string earn_path_, redeem_path_, referral_path_, customer_path_;
};

// A fixed list of POSTs (setup), answered into `responses`.
class ListSource : public Source {
 public:
  struct Item {
    Op op;
    std::string path, body;
  };
  ListSource(const RequestBuilder& b, std::vector<Item> items)
      : b_(b), items_(std::move(items)), responses_(items_.size()) {}

  std::optional<Op> Next(int stream, uint64_t seq, Rng& /*rng*/, std::string* out,
                         uint64_t* tag) override {
    size_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= items_.size()) return std::nullopt;
    b_.Post(items_[i].path, items_[i].body, stream, seq, out);
    *tag = i;
    return items_[i].op;
  }
  bool wants_body() const override { return true; }
  void Done(uint64_t tag, const Response& r) override { responses_[tag] = r; }
  const std::vector<Response>& responses() const { return responses_; }

 private:
  const RequestBuilder& b_;
  std::vector<Item> items_;
  std::vector<Response> responses_;  // each slot written by the one thread that sent it
  std::atomic<size_t> next_{0};
};

// ---------------------------------------------------------------------------------------------
// The load engine: one epoll loop per thread.

struct Conn {
  int fd = -1;
  std::string out;
  size_t out_off = 0;
  std::string in;
  bool busy = false;
  bool want_write = false;
  Op op = kGet;
  uint64_t tag = 0;
  uint64_t start_ns = 0;  // when the request was sent, or scheduled (paced)
};

struct RunSpec {
  uint64_t start_ns = 0;  // every thread starts sending at this time
  uint64_t end_ns = 0;    // and stops here (UINT64_MAX: until the source runs out)
};

class Worker {
 public:
  Worker(const sockaddr_in& addr, Source* source, int index, int connections, double rate,
         uint64_t seed)
      : addr_(addr), source_(source), index_(index), rate_(rate), rng_(seed) {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) Die(std::string("epoll_create1: ") + std::strerror(errno));
    conns_.resize(static_cast<size_t>(connections));
    for (size_t i = 0; i < conns_.size(); ++i) {
      if (!Open(i)) Die("cannot connect: " + std::string(std::strerror(errno)));
    }
  }
  ~Worker() {
    for (Conn& c : conns_) {
      if (c.fd >= 0) ::close(c.fd);
    }
    ::close(epoll_);
  }

  void Run(const RunSpec& spec) {
    spec_ = spec;
    while (NowNs() < spec_.start_ns) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(spec_.start_ns - NowNs()));
    }
    const uint64_t interval_ns = rate_ > 0 ? static_cast<uint64_t>(1e9 / rate_) : 0;
    uint64_t next_due = spec_.start_ns;
    for (size_t i = 0; i < conns_.size(); ++i) idle_.push_back(i);
    epoll_event events[256];
    for (;;) {
      uint64_t now = NowNs();
      if (now >= spec_.end_ns) break;
      while (!idle_.empty() && !exhausted_ && (interval_ns == 0 || next_due <= now)) {
        size_t i = idle_.back();
        idle_.pop_back();
        if (!Send(i, interval_ns == 0 ? now : next_due)) idle_.push_back(i);
        next_due += interval_ns;
      }
      if (exhausted_ && idle_.size() == conns_.size()) break;
      uint64_t wait_until = spec_.end_ns;
      if (interval_ns != 0 && !idle_.empty()) wait_until = std::min(wait_until, next_due);
      now = NowNs();
      uint64_t wait_ns = wait_until > now ? wait_until - now : 0;
      wait_ns = std::min<uint64_t>(wait_ns, 100'000'000);
      timespec ts{static_cast<time_t>(wait_ns / 1'000'000'000),
                  static_cast<long>(wait_ns % 1'000'000'000)};
      int n = ::epoll_pwait2(epoll_, events, 256, &ts, nullptr);
      if (n < 0 && errno != EINTR) Die(std::string("epoll_pwait2: ") + std::strerror(errno));
      for (int k = 0; k < n; ++k) {
        size_t i = events[k].data.u64;
        if (events[k].events & EPOLLOUT) Flush(i);
        if (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) Receive(i);
      }
    }
  }

  const Stats& stats() const { return stats_; }

 private:
  bool Open(size_t i) {
    Conn& c = conns_[i];
    c.fd = Connect(addr_, true);
    if (c.fd < 0) return false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &ev);
    c.in.clear();
    c.want_write = false;
    return true;
  }

  // Closes the connection and opens another one in its place.
  void Reconnect(size_t i) {
    Conn& c = conns_[i];
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.fd = -1;
    if (!Open(i)) {
      ++stats_.io_errors;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (!Open(i)) Die("cannot reconnect: " + std::string(std::strerror(errno)));
    }
  }

  // Drops a broken connection, counting the request it had in flight as lost, and opens another
  // one. A connection without a request in flight is already in idle_.
  void Reopen(size_t i) {
    Conn& c = conns_[i];
    bool was_busy = c.busy;
    if (was_busy) ++stats_.io_errors;
    c.busy = false;
    Reconnect(i);
    if (was_busy) idle_.push_back(i);
  }

  bool Send(size_t i, uint64_t start_ns) {
    Conn& c = conns_[i];
    c.out.clear();
    c.out_off = 0;
    std::optional<Op> op = source_->Next(index_, seq_++, rng_, &c.out, &c.tag);
    if (!op) {
      exhausted_ = true;
      return false;
    }
    c.op = *op;
    c.busy = true;
    c.start_ns = start_ns;
    ++stats_.sent;
    Flush(i);
    return true;
  }

  void Flush(size_t i) {
    Conn& c = conns_[i];
    while (c.out_off < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!c.want_write) SetWrite(i, true);
        return;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        Reopen(i);
        return;
      }
    }
    if (c.want_write) SetWrite(i, false);
  }

  void SetWrite(size_t i, bool on) {
    Conn& c = conns_[i];
    epoll_event ev{};
    ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
    ev.data.u64 = i;
    ::epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
    c.want_write = on;
  }

  void Receive(size_t i) {
    Conn& c = conns_[i];
    for (;;) {
      ssize_t n = ::recv(c.fd, buf_, sizeof(buf_), 0);
      if (n > 0) {
        c.in.append(buf_, static_cast<size_t>(n));
        if (static_cast<size_t>(n) < sizeof(buf_)) break;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {  // closed or failed
        Reopen(i);
        return;
      }
    }
    Response r;
    Parse p = ParseResponse(c.in, source_->wants_body(), &r);
    if (p == Parse::kIncomplete) return;
    if (p == Parse::kBad || !c.busy) {
      ++stats_.bad_responses;
      Reopen(i);
      return;
    }
    uint64_t now = NowNs();
    uint64_t latency = now - c.start_ns;
    if (now < spec_.end_ns) {
      stats_.all.Record(latency);
      stats_.by_op[c.op].Record(latency);
      ++stats_.status[c.op][r.status];
    }
    source_->Done(c.tag, r);
    c.busy = false;
    c.in.erase(0, r.consumed);
    if (r.close) Reconnect(i);
    if (rate_ == 0 && !exhausted_) {
      if (!Send(i, now)) idle_.push_back(i);
    } else {
      idle_.push_back(i);
    }
  }

  const sockaddr_in addr_;
  Source* source_;
  int index_;
  double rate_;
  RunSpec spec_;
  Rng rng_;
  int epoll_ = -1;
  std::vector<Conn> conns_;
  std::vector<size_t> idle_;
  bool exhausted_ = false;
  uint64_t seq_ = 0;
  Stats stats_;
  char buf_[65536];
};

struct RunResult {
  Stats stats;
  double seconds = 0;
};

// Runs `source` over `connections` connections split between `threads` threads, for `duration_s`
// seconds (0: until the source runs out). `rate`: total requests per second (0: closed loop).
RunResult RunLoad(const sockaddr_in& addr, Source* source, int connections, int threads,
                  double rate, double duration_s) {
  static int runs = 0;  // the streams of each run are distinct: runs * 1000 + thread
  const int first_stream = 1000 * runs++;
  RunSpec spec;
  threads = std::max(1, std::min(threads, connections));
  std::vector<std::unique_ptr<Worker>> workers;
  uint64_t seed_base = NowNs();
  // Connections are opened first; the clock starts once all of them are up.
  for (int t = 0; t < threads; ++t) {
    int share = connections / threads + (t < connections % threads ? 1 : 0);
    workers.push_back(std::make_unique<Worker>(addr, source, first_stream + t, share,
                                               rate / threads,
                                               seed_base + 0x9E3779B97F4A7C15ULL * (t + 1)));
  }
  spec.start_ns = NowNs() + 20'000'000;
  spec.end_ns =
      duration_s > 0 ? spec.start_ns + static_cast<uint64_t>(duration_s * 1e9) : UINT64_MAX;
  std::vector<std::thread> running;
  for (auto& w : workers) {
    running.emplace_back([&w, spec] { w->Run(spec); });
  }
  for (auto& th : running) th.join();
  RunResult result;
  uint64_t end = std::min(NowNs(), spec.end_ns);
  result.seconds = static_cast<double>(end - spec.start_ns) / 1e9;
  for (auto& w : workers) result.stats.Merge(w->stats());
  return result;
}

// ---------------------------------------------------------------------------------------------
// Setup.

std::string RunId() {
  uint64_t r = 0;
  if (::getrandom(&r, sizeof(r), 0) != sizeof(r)) r = NowNs() ^ static_cast<uint64_t>(::getpid());
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(r));
  return out;
}

// Creates the program with referrals on (codes that never expire nor run out) if it is absent.
void EnsureProgram(const sockaddr_in& addr, const Options& o, const RequestBuilder& b) {
  Response got = Call(addr, o, "GET", b.program_path(), "", "");
  if (got.status == 200) {
    if (got.body.find("\"referral\"") == std::string::npos ||
        got.body.find("\"referral\":null") != std::string::npos) {
      std::fprintf(stderr, "tally-bench: program %s exists without referrals\n", o.program.c_str());
    }
    return;
  }
  if (got.status != 404) {
    Die("GET " + b.program_path() + " answered " + std::to_string(got.status) + ": " + got.body);
  }
  std::string body = "{\"id\":\"" + o.program +
                     "\",\"name\":\"tally-bench\",\"referral\":{\"advocate_points\":500,"
                     "\"friend_points\":250,\"max_uses\":1000000000000,\"code_ttl_days\":0,"
                     "\"advocate_pending_days\":30}}";
  Response made = Call(addr, o, "POST", "/v1/programs", body, b.run_id() + "-program");
  if (made.status != 201 && made.status != 409) {
    Die("POST /v1/programs answered " + std::to_string(made.status) + ": " + made.body);
  }
}

// Runs a list of POSTs over the configured connections; dies if any answer is not expected.
std::vector<Response> RunList(const sockaddr_in& addr, const Options& o, const RequestBuilder& b,
                              std::vector<ListSource::Item> items, const char* what) {
  ListSource source(b, std::move(items));
  RunResult r = RunLoad(addr, &source, o.connections, o.threads, 0, 0);
  if (r.stats.io_errors + r.stats.bad_responses > 0) {
    Die(std::string(what) + ": connections failed during setup");
  }
  if (!o.json) {
    std::fprintf(stderr, "setup: %s: %zu requests in %.2f s\n", what, source.responses().size(),
                 r.seconds);
  }
  return source.responses();
}

// Every customer earns 1000 points, so that redeems mostly succeed and balances exist.
void PreEarn(const sockaddr_in& addr, const Options& o, const RequestBuilder& b) {
  std::vector<ListSource::Item> items;
  items.reserve(static_cast<size_t>(o.customers));
  for (int64_t c = 0; c < o.customers; ++c) {
    items.push_back({kEarn, b.program_path() + "/earn",
                     "{\"customer\":\"c" + std::to_string(c) + "\",\"points\":1000}"});
  }
  std::vector<Response> answers = RunList(addr, o, b, std::move(items), "pre-earn");
  for (const Response& a : answers) {
    if (a.status != 201) Die("pre-earn answered " + std::to_string(a.status) + ": " + a.body);
  }
}

// The referral codes of advocates adv0..adv(N-1), created when they have none.
std::vector<std::string> Codes(const sockaddr_in& addr, const Options& o, const RequestBuilder& b) {
  std::vector<ListSource::Item> items;
  for (int a = 0; a < o.advocates; ++a) {
    items.push_back({kReferral, b.program_path() + "/referral-codes",
                     "{\"advocate\":\"adv" + std::to_string(a) + "\"}"});
  }
  std::vector<std::string> codes;
  for (const Response& a : RunList(addr, o, b, std::move(items), "referral codes")) {
    if (a.status != 200 && a.status != 201) {
      Die("POST referral-codes answered " + std::to_string(a.status) + ": " + a.body +
          " (try --setup)");
    }
    std::string code = JsonString(a.body, "code");
    if (code.empty()) Die("no code in the referral-codes answer: " + a.body);
    codes.push_back(code);
  }
  return codes;
}

// ---------------------------------------------------------------------------------------------
// Report.

double Ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

void PrintReport(const Options& o, const RunResult& r) {
  const Stats& s = r.stats;
  double rps = static_cast<double>(s.all.count()) / r.seconds;
  std::printf("target     %s%s\n", o.url.c_str(), o.path.empty() ? "" : o.path.c_str());
  std::printf(
      "load       %d connections, %d threads, %.1f s, %s\n", o.connections, o.threads, r.seconds,
      o.rate > 0 ? ("paced at " + std::to_string(static_cast<int64_t>(o.rate)) + " req/s").c_str()
                 : "closed loop");
  std::printf("requests   %llu answered, %.1f req/s\n",
              static_cast<unsigned long long>(s.all.count()), rps);
  std::printf(
      "latency    p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  "
      "mean %.3f ms\n",
      Ms(s.all.Percentile(50)), Ms(s.all.Percentile(90)), Ms(s.all.Percentile(99)),
      Ms(s.all.Percentile(99.9)), Ms(s.all.max()), s.all.mean() / 1e6);
  std::printf("status    ");
  for (int c = 0; c < 600; ++c) {
    uint64_t n = 0;
    for (int op = 0; op < kOpCount; ++op) n += s.status[op][c];
    if (n > 0) std::printf(" %d: %llu", c, static_cast<unsigned long long>(n));
  }
  std::printf("\n");
  for (int op = 0; op < kOpCount; ++op) {
    const Histogram& h = s.by_op[op];
    if (h.count() == 0) continue;
    std::printf("%-10s %llu (%.1f req/s)  p50 %.3f ms  p99 %.3f ms  status", kOpNames[op],
                static_cast<unsigned long long>(h.count()),
                static_cast<double>(h.count()) / r.seconds, Ms(h.Percentile(50)),
                Ms(h.Percentile(99)));
    for (int c = 0; c < 600; ++c) {
      if (s.status[op][c] > 0) {
        std::printf(" %d: %llu", c, static_cast<unsigned long long>(s.status[op][c]));
      }
    }
    std::printf("\n");
  }
  std::printf("errors     %llu lost (connection closed or failed), %llu bad responses\n",
              static_cast<unsigned long long>(s.io_errors),
              static_cast<unsigned long long>(s.bad_responses));
}

void PrintJson(const Options& o, const RunResult& r) {
  const Stats& s = r.stats;
  auto latency = [](const Histogram& h) {
    char out[256];
    std::snprintf(out, sizeof(out),
                  "{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f,"
                  "\"mean\":%.3f}",
                  Ms(h.Percentile(50)), Ms(h.Percentile(90)), Ms(h.Percentile(99)),
                  Ms(h.Percentile(99.9)), Ms(h.max()), h.mean() / 1e6);
    return std::string(out);
  };
  auto statuses = [](const std::array<uint64_t, 600>* rows, int count) {
    std::string out = "{";
    for (int c = 0; c < 600; ++c) {
      uint64_t n = 0;
      for (int k = 0; k < count; ++k) n += rows[k][c];
      if (n == 0) continue;
      if (out.size() > 1) out += ",";
      out += "\"" + std::to_string(c) + "\":" + std::to_string(n);
    }
    return out + "}";
  };
  std::string out = "{\"url\":\"" + o.url + "\"";
  if (!o.path.empty()) out += ",\"path\":\"" + o.path + "\"";
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                ",\"connections\":%d,\"threads\":%d,\"rate\":%.1f,\"seconds\":%.3f,"
                "\"requests\":%llu,\"rps\":%.1f",
                o.connections, o.threads, o.rate, r.seconds,
                static_cast<unsigned long long>(s.all.count()),
                static_cast<double>(s.all.count()) / r.seconds);
  out += buf;
  out += ",\"latency_ms\":" + latency(s.all);
  out += ",\"status\":" + statuses(s.status.data(), kOpCount);
  out += ",\"ops\":{";
  bool first = true;
  for (int op = 0; op < kOpCount; ++op) {
    if (s.by_op[op].count() == 0) continue;
    if (!first) out += ",";
    first = false;
    out += "\"" + std::string(kOpNames[op]) +
           "\":{\"count\":" + std::to_string(s.by_op[op].count()) +
           ",\"latency_ms\":" + latency(s.by_op[op]) + ",\"status\":" + statuses(&s.status[op], 1) +
           "}";
  }
  out += "},\"sent\":" + std::to_string(s.sent) + ",\"lost\":" + std::to_string(s.io_errors) +
         ",\"bad_responses\":" + std::to_string(s.bad_responses) + "}";
  std::printf("%s\n", out.c_str());
}

int Main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  Options o = ParseFlags(argc, argv);
  sockaddr_in addr = Resolve(o);
  RequestBuilder builder(o, RunId());
  std::vector<std::string> codes;
  if (o.path.empty()) {
    if (o.setup) {
      EnsureProgram(addr, o, builder);
      PreEarn(addr, o, builder);
    }
    if (o.weights[kReferral] > 0) codes = Codes(addr, o, builder);
  }
  MixSource source(o, builder, std::move(codes));
  RunResult r = RunLoad(addr, &source, o.connections, o.threads, o.rate, o.duration_s);
  if (o.json) {
    PrintJson(o, r);
  } else {
    PrintReport(o, r);
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace
}  // namespace tally

int main(int argc, char** argv) { return tally::Main(argc, argv); }
