// fuzz_http_wire: raw bytes -> a loopback TCP connection to a real HttpServer (Beast parsing,
// framing and smuggling checks, limits) whose handler is the Router of fuzz_http. Each input is
// written on a fresh connection, the write side is shut, and the response is read until the
// server closes. The server must close every such connection promptly (it has seen the end of
// the input), and its first response, if any, must be an HTTP/1.x status line other than 500.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sanitizer/lsan_interface.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "api/http_server.h"
#include "tests/fuzz/fuzz_server.h"

namespace tally::fuzz {
namespace {

// `detail`: the response so far, or the error.
[[noreturn]] void Fail(const char* why, std::string_view detail) {
  std::fprintf(stderr, "fuzz_http_wire: %s\n%.*s\n", why,
               static_cast<int>(std::min<size_t>(detail.size(), 2000)), detail.data());
  std::abort();
}

HttpServer& Server() {
  static HttpServer* server = [] {
    HttpServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.threads = 2;
    o.read_timeout_ms = 2000;
    o.idle_timeout_ms = 2000;
    o.write_timeout_ms = 2000;
    Router* router = &FuzzServer::Get().router();
    auto started =
        HttpServer::Start(o, [router](const HttpRequest& r) { return router->Handle(r); });
    if (!started.ok()) Fail("the server does not start", started.status().ToString());
    return std::move(started).value().release();
  }();
  return *server;
}

// Waits until the server has let go of every connection, so that the work of one input (its
// coverage, its memory) ends before the next input begins.
void WaitForIdle(const HttpServer& server) {
  for (int i = 0; i < 50'000 && server.connections() != 0; ++i) usleep(100);
  if (server.connections() != 0) Fail("the server kept a connection 5 s after its close", "");
}

std::string Exchange(uint16_t port, std::string_view input) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) Fail("socket failed", std::strerror(errno));
  // The client sends its FIN first, so each connection leaves a TIME_WAIT behind on this side
  // for a minute: from one source address, a run at 1000 inputs a second would use up the
  // ephemeral ports. Each connection comes from another address of 127.0.0.0/8 instead.
  static uint32_t source = 0;
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7F000000u | (0x10000u + source++ % 0xEF0000u));
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) {
    Fail("bind failed", std::strerror(errno));
  }
  timeval timeout{8, 0};  // the server's own read timeout is 2 s; libFuzzer's -timeout 10 s
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // libFuzzer's timers interrupt system calls (EINTR) now and then: every call here retries.
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINTR) Fail("connect failed", std::strerror(errno));
    // An interrupted connect goes on by itself; wait until it is done.
    pollfd p{fd, POLLOUT, 0};
    int ready = 0;
    do {
      ready = poll(&p, 1, 8000);
    } while (ready < 0 && errno == EINTR);
    int error = 0;
    socklen_t len = sizeof error;
    if (ready != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0 || error != 0) {
      Fail("connect failed", std::strerror(ready == 1 ? error : ETIMEDOUT));
    }
  }
  // The server may answer early (413, 431, 400) and close before taking all of the input: a
  // failed send is then expected.
  while (!input.empty()) {
    ssize_t n = send(fd, input.data(), input.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    input.remove_prefix(static_cast<size_t>(n));
  }
  shutdown(fd, SHUT_WR);
  std::string response;
  char buf[16384];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      response.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      close(fd);
      Fail("the server kept the connection open after the input ended", response);
    }
    break;  // closed (or reset after an early answer)
  }
  close(fd);
  return response;
}

// libFuzzer's leak check per input (-detect_leaks=1) cannot work here: the server keeps work in
// flight from one input to the next (the next accept is always pending), so every input looks
// like it leaked and triggers a full leak check, which runs at a few inputs a second. scripts/
// fuzz.sh runs this target with -detect_leaks=0, and the target checks for leaks itself, every
// so many inputs and at exit: anything unreachable then is a real leak.
void CheckLeaks() {
  if (__lsan_do_recoverable_leak_check() != 0) Fail("memory leaked (see the report above)", "");
}

void CheckLeaksNowAndThen() {
  static uint64_t inputs = 0;
  if (inputs++ == 0) std::atexit(CheckLeaks);
  if (inputs % 4096 == 0) CheckLeaks();
}

}  // namespace
}  // namespace tally::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tally::fuzz;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  tally::HttpServer& server = Server();
  std::string response = Exchange(server.port(), input);
  WaitForIdle(server);
  CheckLeaksNowAndThen();
  if (response.empty()) return 0;
  if (response.compare(0, 7, "HTTP/1.") != 0 || response.size() < 12) {
    Fail("not an HTTP/1.x response", response);
  }
  if (response.compare(9, 3, "500") == 0) Fail("internal error", response);
  return 0;
}
