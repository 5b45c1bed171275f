#include "api/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "tests/test_util.h"

namespace tally {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::Eventually;

struct RawResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // Names lower-cased.
  std::string body;

  std::string Header(std::string_view lower_name) const {
    for (const auto& [name, value] : headers) {
      if (name == lower_name) return value;
    }
    return "";
  }
};

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A blocking loopback client over a raw socket, so that tests control every byte on the wire.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~Client() { ::close(fd_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  int fd() const { return fd_; }
  bool connected() const { return connected_; }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads one response framed by Content-Length (no Content-Length: no body).
  std::optional<RawResponse> ReadResponse(std::chrono::milliseconds timeout = 5s) {
    auto deadline = Clock::now() + timeout;
    size_t header_end;
    while ((header_end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (ReadMore(deadline) <= 0) return std::nullopt;
    }
    RawResponse res;
    std::string head = buf_.substr(0, header_end);
    size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) return std::nullopt;
    res.status = std::stoi(status_line.substr(9, 3));
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t end = head.find("\r\n", pos);
      if (end == std::string::npos) end = head.size();
      std::string line = head.substr(pos, end - pos);
      size_t colon = line.find(':');
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      res.headers.emplace_back(Lower(line.substr(0, colon)), value);
      pos = end + 2;
    }
    size_t length = 0;
    if (std::string cl = res.Header("content-length"); !cl.empty()) length = std::stoul(cl);
    size_t total = header_end + 4 + length;
    while (buf_.size() < total) {
      if (ReadMore(deadline) <= 0) return std::nullopt;
    }
    res.body = buf_.substr(header_end + 4, length);
    buf_.erase(0, total);
    return res;
  }

  // True if the server closes the connection (end of stream or reset) within `timeout`. Any bytes
  // received meanwhile are kept in buffered().
  bool WaitClosed(std::chrono::milliseconds timeout = 5s) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      int r = ReadMore(deadline);
      if (r == 0 || r == -1) return true;
      if (r == -2) return false;
    }
  }

  const std::string& buffered() const { return buf_; }

 private:
  // Returns 1 after reading some bytes, 0 at end of stream, -1 on error (reset), -2 on timeout.
  int ReadMore(Clock::time_point deadline) {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return -2;
      pollfd p{fd_, POLLIN, 0};
      int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0) return -2;
      char chunk[16384];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return -1;
      if (n == 0) return 0;
      buf_.append(chunk, static_cast<size_t>(n));
      return 1;
    }
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

// Answers "METHOD TARGET REMOTE_ADDRESS x-echo=VALUE|BODY" as text/plain.
HttpResponse Echo(const HttpRequest& req) {
  HttpResponse res;
  res.headers.emplace_back("Content-Type", "text/plain");
  const std::string* echo = req.Header("x-echo");
  res.body = req.method + " " + req.target + " " + req.remote_address +
             " x-echo=" + (echo ? *echo : "") + "|" + req.body;
  return res;
}

std::unique_ptr<HttpServer> StartServer(HttpServerOptions options, HttpHandler handler = Echo) {
  options.port = 0;
  auto server = HttpServer::Start(std::move(options), std::move(handler));
  INFO(server.status().ToString());
  REQUIRE(server.ok());
  return std::move(server).value();
}

// Starts an echo server that counts handler calls.
std::unique_ptr<HttpServer> StartCountingServer(HttpServerOptions options,
                                                std::atomic<int>& calls) {
  return StartServer(std::move(options), [&calls](const HttpRequest& req) {
    calls.fetch_add(1);
    return Echo(req);
  });
}

std::string Get(std::string_view target, std::string_view extra_headers = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: t\r\n" + std::string(extra_headers) +
         "\r\n";
}

std::string Post(std::string_view target, std::string_view body) {
  return "POST " + std::string(target) +
         " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
         std::string(body);
}

// Checks that `client` gets a 400 problem response and is then closed.
void ExpectRejected(Client& client, int status, const std::string& code) {
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->status == status);
  CHECK(res->Header("content-type") == "application/problem+json");
  CHECK(res->Header("connection") == "close");
  CHECK(res->body.find("\"code\":\"" + code + "\"") != std::string::npos);
  CHECK(res->body.find("\"status\":" + std::to_string(status)) != std::string::npos);
  CHECK(res->body.rfind("{\"type\":\"about:blank\",\"title\":", 0) == 0);
  CHECK(client.WaitClosed());
  CHECK(client.buffered().empty());  // Nothing after the error response.
}

}  // namespace

TEST_CASE("A GET request is answered with the handler's response", "[http]") {
  auto server = StartServer({});
  CHECK(server->url() == "http://127.0.0.1:" + std::to_string(server->port()));
  Client client(server->port());
  REQUIRE(client.connected());
  REQUIRE(client.Send(Get("/hello?x=1&y=%20", "X-Echo: hi there\r\n")));
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->Header("content-type") == "text/plain");
  CHECK(res->body == "GET /hello?x=1&y=%20 127.0.0.1 x-echo=hi there|");
  CHECK(res->Header("content-length") == std::to_string(res->body.size()));
  CHECK(res->Header("connection").empty());
}

TEST_CASE("Two requests on one kept-alive connection are both answered", "[http]") {
  auto server = StartServer({});
  Client client(server->port());
  REQUIRE(client.Send(Get("/one")));
  auto first = client.ReadResponse();
  REQUIRE(first);
  CHECK(first->body.rfind("GET /one ", 0) == 0);
  REQUIRE(client.Send(Get("/two")));
  auto second = client.ReadResponse();
  REQUIRE(second);
  CHECK(second->body.rfind("GET /two ", 0) == 0);
  CHECK(server->connections() == 1);
}

TEST_CASE("Pipelined requests sent in one write are answered in order", "[http]") {
  auto server = StartServer({});
  Client client(server->port());
  REQUIRE(client.Send(Get("/a") + Post("/b", "body-b") + Get("/c")));
  for (std::string expected : {"GET /a ", "POST /b ", "GET /c "}) {
    auto res = client.ReadResponse();
    REQUIRE(res);
    CHECK(res->body.rfind(expected, 0) == 0);
  }
}

TEST_CASE("A POST body reaches the handler", "[http]") {
  auto server = StartServer({});
  Client client(server->port());
  std::string body = "{\"points\":100}";
  body += std::string(100000, 'x');
  REQUIRE(client.Send(Post("/earn", body)));
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == "POST /earn 127.0.0.1 x-echo=|" + body);
}

TEST_CASE("Default content type is JSON and the handler's status is sent", "[http]") {
  auto server = StartServer({}, [](const HttpRequest&) {
    HttpResponse res;
    res.status = 201;
    res.body = R"({"ok":true})";
    return res;
  });
  Client client(server->port());
  REQUIRE(client.Send(Get("/")));
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->status == 201);
  CHECK(res->Header("content-type") == "application/json");
  CHECK(res->body == R"({"ok":true})");
}

TEST_CASE("HTTP/1.0 closes by default and keeps alive on request", "[http]") {
  auto server = StartServer({});
  SECTION("without keep-alive the connection is closed after the response") {
    Client client(server->port());
    REQUIRE(client.Send("GET /old HTTP/1.0\r\n\r\n"));
    auto res = client.ReadResponse();
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->Header("connection") == "close");
    CHECK(client.WaitClosed());
  }
  SECTION("with keep-alive a second request is served") {
    Client client(server->port());
    REQUIRE(client.Send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto first = client.ReadResponse();
    REQUIRE(first);
    CHECK(Lower(first->Header("connection")) == "keep-alive");
    REQUIRE(client.Send("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    auto second = client.ReadResponse();
    REQUIRE(second);
    CHECK(second->body.rfind("GET /b ", 0) == 0);
  }
}

TEST_CASE("A handler asking to close gets Connection: close and the connection closed", "[http]") {
  auto server = StartServer({}, [](const HttpRequest&) {
    HttpResponse res;
    res.close = true;
    return res;
  });
  Client client(server->port());
  REQUIRE(client.Send(Get("/")));
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->Header("connection") == "close");
  CHECK(client.WaitClosed());
}

TEST_CASE("A body over the limit gets 413 and the connection is closed", "[http]") {
  std::atomic<int> calls{0};
  HttpServerOptions options;
  options.request_body_bytes_max = 1024;
  auto server = StartCountingServer(options, calls);
  Client client(server->port());

  SECTION("declared by Content-Length, with the body still being sent") {
    // Much more than the socket buffers: the server must drain it for the 413 to arrive.
    REQUIRE(client.Send(Post("/", std::string(4 << 20, 'x'))));
    ExpectRejected(client, 413, "payload_too_large");
    CHECK(calls == 0);
  }
  SECTION("exactly at the limit is accepted") {
    REQUIRE(client.Send(Post("/", std::string(1024, 'x'))));
    auto res = client.ReadResponse();
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(calls == 1);
  }
  SECTION("sent chunked") {
    std::string chunk(1000, 'x');
    std::string request = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 3; ++i) request += "3e8\r\n" + chunk + "\r\n";
    request += "0\r\n\r\n";
    REQUIRE(client.Send(request));
    ExpectRejected(client, 413, "payload_too_large");
    CHECK(calls == 0);
  }
}

TEST_CASE("A header over the limit gets 431 and the connection is closed", "[http]") {
  std::atomic<int> calls{0};
  HttpServerOptions options;
  options.request_header_bytes_max = 1024;
  auto server = StartCountingServer(options, calls);
  Client client(server->port());
  REQUIRE(client.Send(Get("/", "X-Big: " + std::string(2000, 'a') + "\r\n")));
  ExpectRejected(client, 431, "request_header_fields_too_large");
  CHECK(calls == 0);
}

TEST_CASE("A Transfer-Encoding other than chunked gets 400 and the connection is closed",
          "[http]") {
  std::atomic<int> calls{0};
  auto server = StartCountingServer({}, calls);
  Client client(server->port());
  // Each is followed by what would be a second, smuggled request if the body were misread.
  std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
  std::string encoding;
  SECTION("gzip") { encoding = "gzip"; }
  SECTION("identity") { encoding = "identity"; }
  SECTION("gzip, chunked") { encoding = "gzip, chunked"; }
  SECTION("chunked, gzip") { encoding = "chunked, gzip"; }
  SECTION("chunked twice in one field") { encoding = "chunked, chunked"; }
  SECTION("chunked in two fields") { encoding = "chunked\r\nTransfer-Encoding: chunked"; }
  SECTION("gzip then chunked in two fields") { encoding = "gzip\r\nTransfer-Encoding: chunked"; }
  REQUIRE(client.Send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + encoding +
                      "\r\n\r\n0\r\n\r\n" + smuggled));
  ExpectRejected(client, 400, "bad_request");
  CHECK(calls == 0);
}

TEST_CASE("A request with both Content-Length and Transfer-Encoding gets 400", "[http]") {
  std::atomic<int> calls{0};
  auto server = StartCountingServer({}, calls);
  Client client(server->port());
  SECTION("Content-Length first") {
    REQUIRE(client.Send(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n"));
  }
  SECTION("Transfer-Encoding first") {
    REQUIRE(client.Send(
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        "0\r\n\r\n"));
  }
  SECTION("Transfer-Encoding gzip with Content-Length") {
    REQUIRE(client.Send(
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n"
        "hello"));
  }
  ExpectRejected(client, 400, "bad_request");
  CHECK(calls == 0);
}

TEST_CASE("Two Content-Length headers or a list in one get 400", "[http]") {
  std::atomic<int> calls{0};
  auto server = StartCountingServer({}, calls);
  Client client(server->port());
  SECTION("equal values") {
    REQUIRE(client.Send(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"));
  }
  SECTION("different values") {
    REQUIRE(client.Send(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nhello"));
  }
  SECTION("a list of equal values") {
    REQUIRE(client.Send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello"));
  }
  SECTION("a signed value") {
    REQUIRE(client.Send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello"));
  }
  ExpectRejected(client, 400, "bad_request");
  CHECK(calls == 0);
}

TEST_CASE("Transfer-Encoding in an HTTP/1.0 request gets 400", "[http]") {
  std::atomic<int> calls{0};
  auto server = StartCountingServer({}, calls);
  Client client(server->port());
  REQUIRE(client.Send("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
  ExpectRejected(client, 400, "bad_request");
  CHECK(calls == 0);
}

TEST_CASE("A malformed request gets 400 and the connection is closed", "[http]") {
  std::atomic<int> calls{0};
  auto server = StartCountingServer({}, calls);
  Client client(server->port());
  SECTION("garbage request line") { REQUIRE(client.Send("HELLO\r\n\r\n")); }
  SECTION("unsupported version") { REQUIRE(client.Send("GET / HTTP/2.0\r\n\r\n")); }
  SECTION("bad chunk size") {
    REQUIRE(
        client.Send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
                    "chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"));
  }
  SECTION("control character in a header value") {
    REQUIRE(
        client.Send(std::string("GET / HTTP/1.1\r\nX-A: a\x01"
                                "b\r\n\r\n")));
  }
  ExpectRejected(client, 400, "bad_request");
  CHECK(calls == 0);
}

TEST_CASE("An endless chunk extension or trailer gets 400 instead of filling memory", "[http]") {
  std::atomic<int> calls{0};
  auto server = StartCountingServer({}, calls);
  Client client(server->port());
  std::string request = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  SECTION("chunk extension") { request += "1;ext=" + std::string(1 << 20, 'a'); }
  SECTION("trailer") {
    request += "1\r\na\r\n0\r\n";
    for (int i = 0; i < 20000; ++i) request += "X-T" + std::to_string(i) + ": " + "v\r\n";
  }
  REQUIRE(client.Send(request));
  ExpectRejected(client, 400, "bad_request");
  CHECK(calls == 0);
}

TEST_CASE("A chunked body is decoded and accepted", "[http]") {
  auto server = StartServer({});
  Client client(server->port());
  std::string encoding;
  SECTION("lower case") { encoding = "chunked"; }
  SECTION("upper case") { encoding = "CHUNKED"; }
  REQUIRE(client.Send("POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + encoding +
                      "\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"));
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == "POST /c 127.0.0.1 x-echo=|hello world");
  // Still kept alive.
  REQUIRE(client.Send(Get("/next")));
  auto next = client.ReadResponse();
  REQUIRE(next);
  CHECK(next->status == 200);
}

TEST_CASE("Expect: 100-continue gets an interim response before the body", "[http]") {
  auto server = StartServer({});
  Client client(server->port());
  REQUIRE(client.Send(
      "POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"));
  auto interim = client.ReadResponse();
  REQUIRE(interim);
  CHECK(interim->status == 100);
  REQUIRE(client.Send("hello"));
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == "POST /e 127.0.0.1 x-echo=|hello");
}

TEST_CASE("A slow client is dropped within the read timeout", "[http]") {
  HttpServerOptions options;
  options.read_timeout_ms = 300;
  auto server = StartServer(options);
  Client client(server->port());
  auto start = Clock::now();
  SECTION("half a header, then nothing") {
    REQUIRE(client.Send("GET / HTTP/1.1\r\nHost: t\r\n"));
    CHECK(client.WaitClosed(3s));
  }
  SECTION("a header byte every 100 ms") {
    std::string request = Get("/") + std::string(100, ' ');
    bool closed = false;
    for (char c : request) {
      if (!client.Send(std::string_view(&c, 1)) || client.WaitClosed(100ms)) {
        closed = true;
        break;
      }
    }
    CHECK(closed);
  }
  SECTION("half a body, then nothing") {
    REQUIRE(client.Send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello"));
    CHECK(client.WaitClosed(3s));
  }
  SECTION("connected, nothing sent") { CHECK(client.WaitClosed(3s)); }
  auto elapsed = Clock::now() - start;
  CHECK(elapsed >= 250ms);
  CHECK(elapsed < 1500ms);
  CHECK(client.buffered().empty());
  CHECK(Eventually([&] { return server->connections() == 0; }));
}

TEST_CASE("An idle kept-alive connection is closed after the idle timeout", "[http]") {
  HttpServerOptions options;
  options.idle_timeout_ms = 300;
  auto server = StartServer(options);
  Client client(server->port());
  REQUIRE(client.Send(Get("/")));
  REQUIRE(client.ReadResponse());
  auto start = Clock::now();
  CHECK(client.WaitClosed(3s));
  auto elapsed = Clock::now() - start;
  CHECK(elapsed >= 250ms);
  CHECK(elapsed < 1500ms);
}

TEST_CASE("A new client is served while 300 idle connections are open", "[http]") {
  auto server = StartServer({});
  std::vector<std::unique_ptr<Client>> idle;
  for (int i = 0; i < 300; ++i) {
    idle.push_back(std::make_unique<Client>(server->port()));
    REQUIRE(idle.back()->connected());
  }
  // A few of them kept alive after a request, the rest never sent anything.
  for (int i = 0; i < 10; ++i) {
    REQUIRE(idle[i]->Send(Get("/warm")));
    REQUIRE(idle[i]->ReadResponse());
  }
  REQUIRE(Eventually([&] { return server->connections() == 300; }));
  Client client(server->port());
  REQUIRE(client.Send(Get("/fresh")));
  auto res = client.ReadResponse(2s);
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(server->connections() == 301);
}

TEST_CASE("Connections beyond the cap are closed at once", "[http]") {
  HttpServerOptions options;
  options.connections_max = 2;
  auto server = StartServer(options);
  auto first = std::make_unique<Client>(server->port());
  Client second(server->port());
  REQUIRE(first->Send(Get("/1")));
  REQUIRE(first->ReadResponse());
  REQUIRE(second.Send(Get("/2")));
  REQUIRE(second.ReadResponse());
  CHECK(server->connections() == 2);

  Client over(server->port());
  over.Send(Get("/3"));  // May fail: the server may have closed it already.
  CHECK(over.WaitClosed(2s));
  CHECK(over.buffered().empty());
  CHECK(server->connections() == 2);

  first.reset();
  REQUIRE(Eventually([&] { return server->connections() == 1; }));
  Client again(server->port());
  REQUIRE(again.Send(Get("/4")));
  auto res = again.ReadResponse();
  REQUIRE(res);
  CHECK(res->status == 200);
}

TEST_CASE("Stop() while a slow handler runs still delivers that response", "[http]") {
  std::promise<void> entered;
  auto server = StartServer({}, [&entered](const HttpRequest& req) {
    if (req.target == "/slow") {
      entered.set_value();
      std::this_thread::sleep_for(400ms);
    }
    HttpResponse res;
    res.body = "done " + req.target;
    return res;
  });
  uint16_t port = server->port();
  Client idle(port);  // Kept alive and idle: must not delay Stop().
  REQUIRE(idle.Send(Get("/warm")));
  REQUIRE(idle.ReadResponse());
  Client slow(port);
  REQUIRE(slow.Send(Get("/slow")));
  REQUIRE(entered.get_future().wait_for(5s) == std::future_status::ready);

  auto start = Clock::now();
  std::thread stopper([&] { server->Stop(); });
  auto res = slow.ReadResponse();
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == "done /slow");
  CHECK(res->Header("connection") == "close");
  CHECK(slow.WaitClosed());
  CHECK(idle.WaitClosed(2s));
  stopper.join();
  CHECK(Clock::now() - start < 3s);
  CHECK(server->connections() == 0);

  server->Stop();  // Idempotent.
  Client late(port);
  CHECK_FALSE(late.connected());
}

TEST_CASE("Requests that may block run on their own pool; reads keep being answered", "[http]") {
  HttpServerOptions options;
  options.threads = 1;
  options.blocking_threads = 4;
  options.may_block = [](const HttpRequest& req) { return req.method == "POST"; };
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> waiting{0};
  auto server = StartServer(options, [&](const HttpRequest& req) {
    if (req.method == "POST") {
      waiting.fetch_add(1);
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return release; });
    }
    return Echo(req);
  });
  // Three writes wait at once, more than the one I/O thread could hold...
  std::vector<std::unique_ptr<Client>> writers;
  for (int i = 0; i < 3; ++i) {
    writers.push_back(std::make_unique<Client>(server->port()));
    REQUIRE(writers.back()->Send(Post("/w" + std::to_string(i), "b" + std::to_string(i))));
  }
  REQUIRE(Eventually([&] { return waiting.load() == 3; }));
  // ...while a read on the I/O thread is answered, and pipelined requests keep their order.
  Client reader(server->port());
  REQUIRE(reader.Send(Get("/r")));
  auto read = reader.ReadResponse();
  REQUIRE(read);
  CHECK(read->body == "GET /r 127.0.0.1 x-echo=|");
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  for (int i = 0; i < 3; ++i) {
    auto res = writers[i]->ReadResponse();
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->body == "POST /w" + std::to_string(i) + " 127.0.0.1 x-echo=|b" + std::to_string(i));
  }
  Client pipelined(server->port());
  REQUIRE(pipelined.Send(Post("/a", "1") + Get("/b") + Post("/c", "3")));
  for (std::string want : {"POST /a", "GET /b", "POST /c"}) {
    auto res = pipelined.ReadResponse();
    REQUIRE(res);
    CHECK(res->body.rfind(want, 0) == 0);
  }
}

TEST_CASE("Stop() waits for a request on the blocking pool and delivers its response", "[http]") {
  HttpServerOptions options;
  options.blocking_threads = 2;
  options.may_block = [](const HttpRequest&) { return true; };
  std::promise<void> entered;
  auto server = StartServer(options, [&entered](const HttpRequest& req) {
    entered.set_value();
    std::this_thread::sleep_for(300ms);
    HttpResponse res;
    res.body = "done " + req.target;
    return res;
  });
  Client slow(server->port());
  REQUIRE(slow.Send(Get("/slow")));
  REQUIRE(entered.get_future().wait_for(5s) == std::future_status::ready);
  std::thread stopper([&] { server->Stop(); });
  auto res = slow.ReadResponse();
  REQUIRE(res);
  CHECK(res->body == "done /slow");
  CHECK(res->Header("connection") == "close");
  stopper.join();
  CHECK(server->connections() == 0);
}

TEST_CASE("Requests taken by start are answered later from another thread, in order", "[http]") {
  HttpServerOptions options;
  options.threads = 1;
  std::mutex mu;
  std::vector<std::pair<std::string, HttpResponder>> taken;  // guarded by mu
  options.start = [&](const HttpRequest& req, HttpResponder respond) {
    if (req.method != "POST") return false;
    std::lock_guard lock(mu);
    taken.emplace_back(req.target + " " + req.body, std::move(respond));
    return true;
  };
  auto server = StartServer(options, Echo);
  // Three writes wait at once without holding the one I/O thread...
  std::vector<std::unique_ptr<Client>> writers;
  for (int i = 0; i < 3; ++i) {
    writers.push_back(std::make_unique<Client>(server->port()));
    REQUIRE(writers.back()->Send(Post("/w" + std::to_string(i), "b" + std::to_string(i))));
  }
  REQUIRE(Eventually([&] {
    std::lock_guard lock(mu);
    return taken.size() == 3;
  }));
  // ...while a read goes to the handler and is answered.
  Client reader(server->port());
  REQUIRE(reader.Send(Get("/r")));
  auto read = reader.ReadResponse();
  REQUIRE(read);
  CHECK(read->body == "GET /r 127.0.0.1 x-echo=|");
  // Answered from another thread; a second answer to the same request is ignored.
  std::thread answerer([&] {
    std::lock_guard lock(mu);
    for (auto& [what, respond] : taken) {
      respond([what] {
        HttpResponse res;
        res.status = 201;
        res.body = "later " + what;
        return res;
      });
      respond([] { return HttpResponse{}; });
    }
    taken.clear();
  });
  answerer.join();
  for (int i = 0; i < 3; ++i) {
    auto res = writers[i]->ReadResponse();
    REQUIRE(res);
    CHECK(res->status == 201);
    CHECK(res->body == "later /w" + std::to_string(i) + " b" + std::to_string(i));
  }
  // Pipelined: each taken request is answered before the next one is read.
  std::thread pipeline_answerer([&] {
    for (int answered = 0; answered < 2;) {
      std::this_thread::sleep_for(10ms);
      std::lock_guard lock(mu);
      for (auto& [what, respond] : taken) {
        respond([what] {
          HttpResponse res;
          res.body = "later " + what;
          return res;
        });
        ++answered;
      }
      taken.clear();
    }
  });
  Client pipelined(server->port());
  REQUIRE(pipelined.Send(Post("/a", "1") + Get("/b") + Post("/c", "3")));
  for (std::string want : {"later /a 1", "GET /b 127.0.0.1 x-echo=|", "later /c 3"}) {
    auto res = pipelined.ReadResponse();
    REQUIRE(res);
    CHECK(res->body == want);
  }
  pipeline_answerer.join();
}

TEST_CASE("A response made by a responder that throws, or a start that throws, is a 500",
          "[http]") {
  HttpServerOptions options;
  options.start = [](const HttpRequest& req, HttpResponder respond) {
    if (req.target == "/start-throws") throw std::runtime_error("start <failed>");
    respond([]() -> HttpResponse { throw std::runtime_error("make failed"); });
    return true;
  };
  auto server = StartServer(options, Echo);
  for (std::string target : {"/make-throws", "/start-throws"}) {
    Client client(server->port());  // the server's own errors close the connection
    REQUIRE(client.Send(Get(target)));
    auto res = client.ReadResponse();
    REQUIRE(res);
    CHECK(res->status == 500);
    CHECK(res->Header("content-type") == "application/problem+json");
  }
}

TEST_CASE("Stop() waits for a request taken by start and delivers its response", "[http]") {
  HttpServerOptions options;
  std::promise<HttpResponder> taken;
  options.start = [&taken](const HttpRequest&, HttpResponder respond) {
    taken.set_value(std::move(respond));
    return true;
  };
  auto server = StartServer(options, Echo);
  Client slow(server->port());
  REQUIRE(slow.Send(Get("/slow")));
  auto future = taken.get_future();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  HttpResponder respond = future.get();
  std::thread stopper([&] { server->Stop(); });
  std::this_thread::sleep_for(200ms);
  CHECK(server->connections() == 1);  // still waiting for the response
  respond([] {
    HttpResponse res;
    res.body = "done";
    return res;
  });
  auto res = slow.ReadResponse();
  REQUIRE(res);
  CHECK(res->body == "done");
  CHECK(res->Header("connection") == "close");
  stopper.join();
  CHECK(server->connections() == 0);
}

TEST_CASE("A blocking pool without may_block is refused", "[http]") {
  HttpServerOptions options;
  options.port = 0;
  options.blocking_threads = 2;
  CHECK_FALSE(HttpServer::Start(options, Echo).ok());
}

TEST_CASE("Stop() lets a request being read finish", "[http]") {
  auto server = StartServer({});
  Client client(server->port());
  REQUIRE(client.Send("POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello"));
  REQUIRE(Eventually([&] { return server->connections() == 1; }));
  std::this_thread::sleep_for(50ms);  // Let the server read the header.
  std::thread stopper([&] { server->Stop(); });
  std::this_thread::sleep_for(100ms);
  REQUIRE(client.Send("world"));
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->body == "POST /p 127.0.0.1 x-echo=|helloworld");
  CHECK(res->Header("connection") == "close");
  stopper.join();
}

TEST_CASE("A handler exception becomes a 500 problem with an escaped detail", "[http]") {
  auto server = StartServer({}, [](const HttpRequest&) -> HttpResponse {
    throw std::runtime_error("bad \"quote\" \\ \n\x01");
  });
  Client client(server->port());
  REQUIRE(client.Send(Get("/")));
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->status == 500);
  CHECK(res->Header("content-type") == "application/problem+json");
  CHECK(res->body ==
        R"({"type":"about:blank","title":"Internal Server Error","status":500,"code":"internal",)"
        R"("detail":"the request handler failed: bad \"quote\" \\ \n\u0001"})");
}

TEST_CASE("Response headers that would break framing are dropped", "[http]") {
  auto server = StartServer({}, [](const HttpRequest&) {
    HttpResponse res;
    res.headers = {{"X-Split", "a\r\nInjected: 1"}, {"Bad Name", "v"},
                   {"Content-Length", "999"},       {"Transfer-Encoding", "chunked"},
                   {"Connection", "close"},         {"X-Good", "yes"}};
    res.body = "abc";
    return res;
  });
  Client client(server->port());
  REQUIRE(client.Send(Get("/")));
  auto res = client.ReadResponse();
  REQUIRE(res);
  CHECK(res->body == "abc");
  CHECK(res->Header("content-length") == "3");
  CHECK(res->Header("x-good") == "yes");
  CHECK(res->Header("x-split").empty());
  CHECK(res->Header("injected").empty());
  CHECK(res->Header("transfer-encoding").empty());
  CHECK(res->Header("connection").empty());
  // Kept alive.
  REQUIRE(client.Send(Get("/")));
  CHECK(client.ReadResponse());
}

TEST_CASE("on_response sees handler responses and the server's own errors", "[http]") {
  std::mutex mu;
  std::vector<std::tuple<int, std::string, std::string>> seen;
  HttpServerOptions options;
  bool seconds_ok = true;
  // Runs on server threads: records only; Catch assertions are not thread-safe.
  options.on_response = [&](const HttpRequest& req, const HttpResponse& res, double seconds) {
    std::lock_guard lock(mu);
    seen.emplace_back(res.status, req.method, req.target);
    seconds_ok = seconds_ok && seconds >= 0 && seconds < 5;
  };
  auto server = StartServer(options);
  Client good(server->port());
  REQUIRE(good.Send(Get("/ok")));
  REQUIRE(good.ReadResponse());
  Client bad(server->port());
  REQUIRE(bad.Send("POST /bad HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"));
  REQUIRE(bad.ReadResponse());
  server->Stop();
  std::lock_guard lock(mu);
  CHECK(seconds_ok);
  CHECK(seen == std::vector<std::tuple<int, std::string, std::string>>{{200, "GET", "/ok"},
                                                                       {400, "POST", "/bad"}});
}

TEST_CASE("Start fails with a clear message when it cannot listen", "[http]") {
  auto first = StartServer({});
  HttpServerOptions options;
  SECTION("port taken") {
    options.port = first->port();
    auto second = HttpServer::Start(options, Echo);
    REQUIRE_FALSE(second.ok());
    CHECK(second.status().message() ==
          "cannot listen on 127.0.0.1:" + std::to_string(first->port()) +
              ": Address already in use");
  }
  SECTION("address not on this machine") {
    options.host = "192.0.2.1";
    options.port = 0;
    auto second = HttpServer::Start(options, Echo);
    REQUIRE_FALSE(second.ok());
    CHECK(second.status().message().rfind("cannot listen on 192.0.2.1:0: ", 0) == 0);
  }
  SECTION("bad options") {
    options.threads = 0;
    CHECK_FALSE(HttpServer::Start(options, Echo).ok());
    options.threads = 1;
    CHECK_FALSE(HttpServer::Start(options, nullptr).ok());
  }
}

TEST_CASE("Start fails when the TLS files are missing, bad or half given", "[http]") {
  HttpServerOptions options;
  options.port = 0;
  SECTION("missing certificate") {
    options.tls_cert_file = "/nonexistent/cert.pem";
    options.tls_key_file = TALLY_TESTDATA_DIR "/http_server_test_key.pem";
    auto server = HttpServer::Start(options, Echo);
    REQUIRE_FALSE(server.ok());
    CHECK(server.status().message() ==
          "cannot read TLS certificate file '/nonexistent/cert.pem': No such file or directory");
  }
  SECTION("certificate file that is not a certificate") {
    options.tls_cert_file = TALLY_TESTDATA_DIR "/http_server_test_key.pem";
    options.tls_key_file = TALLY_TESTDATA_DIR "/http_server_test_key.pem";
    auto server = HttpServer::Start(options, Echo);
    REQUIRE_FALSE(server.ok());
    CHECK(server.status().message().rfind("cannot load TLS certificate chain", 0) == 0);
  }
  SECTION("only one given") {
    options.tls_cert_file = TALLY_TESTDATA_DIR "/http_server_test_cert.pem";
    CHECK_FALSE(HttpServer::Start(options, Echo).ok());
  }
}

TEST_CASE("HTTPS serves requests over TLS 1.2 or later and refuses TLS 1.1", "[http]") {
  HttpServerOptions options;
  options.tls_cert_file = TALLY_TESTDATA_DIR "/http_server_test_cert.pem";
  options.tls_key_file = TALLY_TESTDATA_DIR "/http_server_test_key.pem";
  auto server = StartServer(options);
  CHECK(server->url() == "https://127.0.0.1:" + std::to_string(server->port()));

  SECTION("a request over TLS") {
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                          SSL_CTX_free);
    Client client(server->port());
    std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
    SSL_set_fd(ssl.get(), client.fd());
    REQUIRE(SSL_connect(ssl.get()) == 1);
    CHECK(SSL_version(ssl.get()) >= TLS1_2_VERSION);
    std::string request = Post("/tls", "secret");
    REQUIRE(SSL_write(ssl.get(), request.data(), static_cast<int>(request.size())) ==
            static_cast<int>(request.size()));
    std::string response;
    char buf[4096];
    while (response.find("secret") == std::string::npos) {
      int n = SSL_read(ssl.get(), buf, sizeof buf);
      if (n <= 0) break;
      response.append(buf, static_cast<size_t>(n));
    }
    CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(response.find("POST /tls 127.0.0.1 x-echo=|secret") != std::string::npos);
  }
  SECTION("a TLS 1.1 client is refused") {
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                          SSL_CTX_free);
    SSL_CTX_set_security_level(ctx.get(), 0);
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx.get(), TLS1_1_VERSION);
    Client client(server->port());
    std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
    SSL_set_fd(ssl.get(), client.fd());
    CHECK(SSL_connect(ssl.get()) != 1);
  }
  SECTION("a plain HTTP request on the TLS port is dropped") {
    Client client(server->port());
    REQUIRE(client.Send(Get("/")));
    CHECK(client.WaitClosed(2s));
  }
}

}  // namespace tally
