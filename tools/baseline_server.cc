// baseline_server: serves {"ok":true} to every request through HttpServer, with no ledger behind
// it. Benchmarks compare tallyd against it: it is the ceiling the HTTP layer allows on this
// machine.
//
//   baseline_server [--listen HOST:PORT] [--threads N] [--body-bytes N]
//
// --body-bytes N answers every request with a JSON string of exactly N bytes instead (N >= 2).
// Sent the same POSTs as tallyd's earns, with N the size of tallyd's earn answer, it is an
// earn-shaped ceiling: the same request and answer bytes through the same HTTP layer, with no
// ledger work, so that a benchmark can tell the HTTP share of an earn's cost from the ledger's.
//
// HOST may be an IPv6 address in brackets ("[::1]:8080"). Runs until SIGINT or SIGTERM, then stops
// gracefully.

#include <pthread.h>
#include <signal.h>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include "api/http_server.h"

namespace tally {
namespace {

int Usage(const char* message) {
  std::fprintf(stderr,
               "baseline_server: %s\nusage: baseline_server [--listen HOST:PORT] [--threads N] "
               "[--body-bytes N]\n",
               message);
  return 2;
}

// Parses "HOST:PORT" or "[V6]:PORT".
bool ParseListen(std::string_view s, std::string& host, uint16_t& port) {
  size_t colon = s.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == s.size()) return false;
  std::string_view h = s.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty()) return false;
  unsigned long p = 0;
  for (char c : s.substr(colon + 1)) {
    if (c < '0' || c > '9') return false;
    p = p * 10 + static_cast<unsigned long>(c - '0');
    if (p > 65535) return false;
  }
  host = std::string(h);
  port = static_cast<uint16_t>(p);
  return true;
}

// A whole decimal number, nothing before or after it.
bool ParseNumber(std::string_view s, long& n) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  return ec == std::errc() && end == s.data() + s.size();
}

int Main(int argc, char** argv) {
  HttpServerOptions options;
  std::string body = R"({"ok":true})";
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (i + 1 >= argc) return Usage("missing value after an option");
    std::string_view value = argv[++i];
    if (arg == "--listen") {
      if (!ParseListen(value, options.host, options.port)) return Usage("bad --listen HOST:PORT");
    } else if (arg == "--threads") {
      long n = 0;
      if (!ParseNumber(value, n) || n < 1 || n > 1024) return Usage("bad --threads N");
      options.threads = static_cast<int>(n);
    } else if (arg == "--body-bytes") {
      long n = 0;
      if (!ParseNumber(value, n) || n < 2 || n > (64 << 20)) return Usage("bad --body-bytes N");
      // A JSON string: quotes around N - 2 letters.
      body.assign(static_cast<size_t>(n), 'x');
      body.front() = '"';
      body.back() = '"';
    } else {
      return Usage("unknown option");
    }
  }

  // Blocked before Start so that the server threads inherit the mask and sigwait gets the signal.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = HttpServer::Start(options, [&body](const HttpRequest&) {
    HttpResponse res;
    res.body = body;
    return res;
  });
  if (!server.ok()) {
    std::fprintf(stderr, "baseline_server: %s\n", server.status().message().c_str());
    return 1;
  }
  std::printf("baseline listening on %s\n", (*server)->url().c_str());
  std::fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  (*server)->Stop();
  return 0;
}

}  // namespace
}  // namespace tally

int main(int argc, char** argv) { return tally::Main(argc, argv); }
