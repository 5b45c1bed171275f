// HttpServer: a small, reusable, asynchronous HTTP/1.1 server (plain or TLS) that knows nothing of
// Tally's business. Boost.Beast does the work in http_server.cc; no Boost type appears here.
//
// What the server guarantees on its own, before any handler sees a request:
//   - Requests are HTTP/1.0 or HTTP/1.1, with keep-alive and pipelining.
//   - Framing is unambiguous. A request is rejected with 400 and the connection closed if it has
//     more than one Content-Length, a Content-Length that is not a single decimal number, both
//     Content-Length and Transfer-Encoding, more than one Transfer-Encoding, a Transfer-Encoding
//     other than exactly "chunked" (any case), or a Transfer-Encoding in an HTTP/1.0 request. The
//     check runs after the header is read and before any body byte is read.
//   - Header over request_header_bytes_max: 431 and close. Body over request_body_bytes_max: 413
//     and close (sent as soon as a Content-Length shows it, without reading the body). Any other
//     malformed request: 400 and close. These bodies are application/problem+json:
//       {"type":"about:blank","title":"...","status":N,"code":"...","detail":"..."}
//     with code one of bad_request, payload_too_large, request_header_fields_too_large, internal.
//   - Every read of a request (its header, then its body) must finish within read_timeout_ms;
//     a connection that has sent nothing may wait idle_timeout_ms between requests (but only
//     read_timeout_ms for its first request). Every response write must finish within
//     write_timeout_ms. A connection that misses a deadline is closed without a response.
//   - At most connections_max connections are open; a connection beyond that is accepted and
//     closed at once, without a response.
//
// Threading: a fixed pool of `threads` threads runs all network I/O, and the handler is called on
// those same threads, one call per connection at a time (calls for different connections run
// concurrently), except for requests that `may_block` picks: with blocking_threads > 0, those are
// handed to a second pool of blocking_threads threads, and their responses written back by the
// I/O threads. A handler that blocks (for example on a durable commit) on an I/O thread holds it
// for that time: while all `threads` threads are inside the handler, no other connection makes
// progress (reads, writes, accepts and timeouts wait). So either size `threads` for the number of
// requests that may block at once, or keep `threads` near the number of cores and send the
// requests that block to the blocking pool, sized for how many may wait at once. A request that
// waits on something that calls back (a durable commit) holds no thread at all: `start` takes
// it, and its response is made and written on an I/O thread when it comes back.

#ifndef TALLY_API_HTTP_SERVER_H_
#define TALLY_API_HTTP_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ledger/status.h"

namespace tally {

// One complete request as read from the wire.
struct HttpRequest {
  std::string method;  // As sent, case-sensitive, e.g. "GET".
  std::string target;  // The request-target as sent: path plus query, not decoded.
  // Header fields in the order received. Names are lower-cased; a repeated field appears once per
  // occurrence.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;            // The body, with any chunked framing removed.
  std::string remote_address;  // The peer's IP address without port, e.g. "127.0.0.1" or "::1".

  // The value of the first header named `lower_name` (which must be lower-case), or nullptr.
  const std::string* Header(std::string_view lower_name) const;
};

// A response produced by a handler.
struct HttpResponse {
  int status = 200;  // 200..599. Anything else is replaced by a 500 problem response.
  // Extra header fields. Content-Type defaults to application/json when absent. The server owns
  // framing: Content-Length, Transfer-Encoding and Connection given here are ignored, and so is any
  // field whose name is not an HTTP token or whose value holds CR, LF or another control character.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;    // Dropped for 204 and 304, and for responses to HEAD.
  bool close = false;  // Close the connection after this response ("Connection: close").
};

// Produces the response to one request. Called concurrently from the pool threads (see above), so
// it must be thread-safe. An exception escaping it becomes a 500 problem response.
using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

// Hands the response to a request taken by HttpServerOptions::start back to the server: call it
// exactly once, from any thread, with a function that makes the response. The server runs that
// function on an I/O thread (an exception escaping it becomes a 500), then writes the response.
using HttpResponder = std::function<void(std::function<HttpResponse()> make)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";  // An IP address, or a host name resolved once at Start.
  uint16_t port = 8080;            // 0 picks a free port; see HttpServer::port().
  int threads = 2;                 // Fixed pool running I/O and handlers. At least 1.
  // Requests for which may_block returns true run on a pool of this many threads instead of the
  // I/O threads (0: no such pool, every request on the I/O threads). may_block is called on an
  // I/O thread and must be cheap and thread-safe.
  int blocking_threads = 0;
  std::function<bool(const HttpRequest& request)> may_block;
  // Optional, for requests that wait on something other than a thread (a commit): called on an
  // I/O thread for every request that may_block picks (every request if may_block is not set),
  // before it goes to the blocking pool; returns false to leave the request to the handler, or
  // true once it has taken it, and then calls `respond` (see HttpResponder). Until
  // then the connection reads nothing more and Stop waits. Must be thread-safe and must not
  // block; an exception escaping it becomes a 500.
  std::function<bool(const HttpRequest& request, HttpResponder respond)> start;
  size_t request_body_bytes_max = 1 << 20;     // Larger bodies get 413.
  size_t request_header_bytes_max = 16 << 10;  // Larger headers (start line included) get 431.
  int read_timeout_ms = 10000;  // Limit on each read: the header, then the body; TLS handshake.
  int idle_timeout_ms = 60000;  // Limit on waiting for the next request on a kept-alive connection.
  int write_timeout_ms = 10000;    // Limit on writing each response.
  size_t connections_max = 10000;  // Open connections beyond this are closed at once.
  // Both set: serve HTTPS (TLS 1.2 or later only) with this PEM certificate chain and PEM key.
  // Neither set: plain HTTP. Only one set is an error.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Optional. Called once per response, just before it is written, on the pool thread that
  // produced it: for every handler response and for every error response the server makes itself
  // (then `request` holds whatever was parsed, maybe nothing). `seconds` runs from the first byte
  // of the request to the response being ready. Must be thread-safe and fast; exceptions are
  // swallowed.
  std::function<void(const HttpRequest& request, const HttpResponse& response, double seconds)>
      on_response;
};

class HttpServer {
 public:
  // Validates the options, binds and listens, then starts serving on the pool threads. Fails with
  // one clear message when the address is bad or cannot be bound (for example the port is taken),
  // or the TLS files cannot be read or do not match.
  static Result<std::unique_ptr<HttpServer>> Start(HttpServerOptions options, HttpHandler handler);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();  // Calls Stop().

  // The bound port (the chosen one when options.port was 0).
  uint16_t port() const;
  // "http://ADDRESS:PORT" or "https://ADDRESS:PORT", ADDRESS being the bound numeric address in
  // URL form ("[::1]" for IPv6). A wildcard bind (0.0.0.0 or ::) gives the loopback address so
  // that the URL is usable by a local client.
  std::string url() const;
  // Connections currently open, including ones being closed.
  size_t connections() const;

  // Graceful stop; returns when done. Stops accepting; closes connections waiting for a request;
  // lets a request being read or handled finish, and writes its response with "Connection:
  // close"; then joins the pool threads. Bounded by the read and write timeouts, and by the
  // handlers and responders it waits for (a request taken by `start` is waited for until it is
  // answered). Idempotent. Must
  // not be called from a handler or from on_response (it would wait for itself).
  void Stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace tally

#endif  // TALLY_API_HTTP_SERVER_H_
