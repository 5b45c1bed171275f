#include "api/http_server.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>

namespace tally {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Clock = std::chrono::steady_clock;

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// Bytes asked for when waiting for the first bytes of a request, and per read when draining.
constexpr size_t kReadChunkBytes = 4096;
// A connection's input buffer holds at most request_header_bytes_max plus this. Beast's parser
// limits the header and the body but not a chunk-size line with its extensions, nor the trailer: a
// client could grow the buffer without end until the read timeout. With the cap, they fail with
// buffer_overflow (400).
constexpr size_t kBufferSlackBytes = 8192;
// A connection being closed after an error response is drained for at most this long (see
// Session::Linger), and for at most this long while the server is stopping.
constexpr std::chrono::milliseconds kLingerMax(5000);
constexpr std::chrono::milliseconds kLingerWhileStopping(500);
// How long accepting pauses after the process ran out of descriptors or memory.
constexpr std::chrono::milliseconds kAcceptBackoff(50);

std::string JsonQuote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

HttpResponse Problem(int status, std::string_view code, std::string_view title,
                     std::string_view detail) {
  HttpResponse res;
  res.status = status;
  res.close = true;
  res.headers.emplace_back("Content-Type", "application/problem+json");
  res.body = "{\"type\":\"about:blank\",\"title\":" + JsonQuote(title) +
             ",\"status\":" + std::to_string(status) + ",\"code\":" + JsonQuote(code) +
             ",\"detail\":" + JsonQuote(detail) + "}";
  return res;
}

HttpResponse BadRequest(std::string_view detail) {
  return Problem(400, "bad_request", "Bad Request", detail);
}

HttpResponse Internal(std::string_view detail) {
  return Problem(500, "internal", "Internal Server Error", detail);
}

bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

bool IsFieldValue(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

bool IsDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string_view TrimWhitespace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Returns why the request's framing is ambiguous or unsupported, or nullptr if it is fine. Beast
// alone is not enough: it reads "Transfer-Encoding: gzip" as "no body" and accepts comma lists
// and repeated equal values in Content-Length, each a request-smuggling vector when a proxy
// disagrees.
const char* FramingProblem(const http::request_parser<http::string_body>::value_type& req) {
  int content_lengths = 0;
  int transfer_encodings = 0;
  std::string_view transfer_encoding;
  for (const auto& field : req) {
    if (field.name() == http::field::content_length) {
      ++content_lengths;
      if (!IsDigits(TrimWhitespace(field.value()))) return "Content-Length must be one number";
    } else if (field.name() == http::field::transfer_encoding) {
      ++transfer_encodings;
      transfer_encoding = TrimWhitespace(field.value());
    }
  }
  if (content_lengths > 1) return "more than one Content-Length";
  if (transfer_encodings > 1) return "more than one Transfer-Encoding";
  if (transfer_encodings == 0) return nullptr;
  if (content_lengths > 0) return "both Content-Length and Transfer-Encoding";
  if (req.version() < 11) return "Transfer-Encoding in an HTTP/1.0 request";
  if (!beast::iequals(transfer_encoding, "chunked")) {
    return "Transfer-Encoding other than chunked";
  }
  return nullptr;
}

std::string AddressString(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_string();
  }
  return address.to_string();
}

class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  virtual ~SessionBase() = default;
  // Asks the session to close if it is not in the middle of a request. Thread-safe.
  virtual void Shutdown() = 0;
};

// Everything the sessions share with the server. (HttpServer::Impl, private to HttpServer, only
// adds a name.)
struct ServerState {
  ServerState(HttpServerOptions o, HttpHandler h)
      : options(std::move(o)),
        handler(std::move(h)),
        ioc(options.threads),
        acceptor(asio::make_strand(ioc)),
        accept_retry(acceptor.get_executor()) {}

  Status ConfigureTls();
  Status Listen();
  void DoAccept();
  void OnAccept(const error_code& ec, tcp::socket socket);
  template <class Stream, class... StreamArgs>
  void StartSession(std::string remote_address, StreamArgs&&... stream_args);

  const HttpServerOptions options;
  const HttpHandler handler;
  // Runs the handler for requests options.may_block picks (null without blocking_threads).
  std::unique_ptr<asio::thread_pool> blocking_pool;

  // Declared before `ioc`, so they outlive it: destroying an io_context destroys the handlers still
  // queued in it, and with one of them maybe the last reference to a session, whose destructor
  // uses these.
  std::atomic<bool> stopping{false};
  std::atomic<size_t> connections{0};
  std::mutex sessions_mu;
  std::list<std::weak_ptr<SessionBase>> sessions;  // Guarded by sessions_mu.
  std::optional<ssl::context> tls;                 // Set for HTTPS.

  asio::io_context ioc;
  tcp::acceptor acceptor;           // Used only on its strand, until the threads are joined.
  asio::steady_timer accept_retry;  // Same strand as the acceptor.
  uint16_t port = 0;
  std::string url;

  std::mutex stop_mu;
  bool stopped = false;  // Guarded by stop_mu.
  std::vector<std::thread> threads;
};

// One connection. The private member functions run on the connection's strand; the public ones are
// called from elsewhere (the acceptor's strand, Stop()). The session keeps itself alive by
// capturing shared_from_this() in every pending operation; when none is left it is destroyed, which
// closes the socket.
template <class Stream>
class Session final : public SessionBase {
 public:
  template <class... StreamArgs>
  Session(ServerState& server, std::string remote_address, StreamArgs&&... stream_args)
      : server_(server),
        stream_(std::forward<StreamArgs>(stream_args)...),
        remote_address_(std::move(remote_address)),
        buffer_(server.options.request_header_bytes_max + kBufferSlackBytes) {}

  ~Session() override {
    if (registered_) {
      std::lock_guard lock(server_.sessions_mu);
      server_.sessions.erase(registration_);
    }
    server_.connections.fetch_sub(1);
  }

  void Register() {
    std::lock_guard lock(server_.sessions_mu);
    registration_ = server_.sessions.insert(server_.sessions.end(), weak_from_this());
    registered_ = true;
  }

  void Run() {
    asio::dispatch(stream_.get_executor(), [self = Self()] { self->Begin(); });
  }

  void Shutdown() override {
    // A weak reference: if the io_context has already run out of work (every session ended), this
    // handler never runs, and it must not keep the session alive until the io_context is destroyed.
    asio::post(stream_.get_executor(), [weak = weak_from_this()] {
      if (auto self = weak.lock()) std::static_pointer_cast<Session>(self)->OnShutdown();
    });
  }

 private:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

  enum class Phase {
    kHandshake,  // TLS handshake.
    kIdle,       // Waiting for the first byte of a request; nothing of it buffered.
    kReading,    // Reading a request (or sending 100 Continue).
    kBusy,       // In the handler, or writing the response.
    kLingering,  // Response sent; draining input before closing.
    kClosed,
  };

  std::shared_ptr<Session> Self() { return std::static_pointer_cast<Session>(shared_from_this()); }

  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }

  void Begin() {
    if (server_.stopping.load()) return Close();
    if constexpr (kTls) {
      phase_ = Phase::kHandshake;
      Tcp().expires_after(std::chrono::milliseconds(server_.options.read_timeout_ms));
      stream_.async_handshake(ssl::stream_base::server, [self = Self()](const error_code& ec) {
        if (ec) return self->Close();
        self->WaitForRequest();
      });
    } else {
      WaitForRequest();
    }
  }

  void OnShutdown() {
    // A request already started is allowed to finish; WaitForRequest sees `stopping` afterwards.
    if (phase_ == Phase::kHandshake || phase_ == Phase::kIdle || phase_ == Phase::kLingering) {
      Close();
    }
  }

  // Waits for the next request. The wait for its first byte is separate from reading it, so that
  // a kept-alive connection may sit idle for idle_timeout_ms while a started request must arrive
  // within read_timeout_ms.
  void WaitForRequest() {
    if (server_.stopping.load()) return Linger();
    if (buffer_.size() > 0) return ReadHeader();  // Pipelined.
    phase_ = Phase::kIdle;
    int timeout_ms =
        first_request_ ? server_.options.read_timeout_ms : server_.options.idle_timeout_ms;
    Tcp().expires_after(std::chrono::milliseconds(timeout_ms));
    stream_.async_read_some(buffer_.prepare(kReadChunkBytes),
                            [self = Self()](const error_code& ec, size_t n) {
                              if (ec || self->phase_ != Phase::kIdle) return self->Close();
                              self->buffer_.commit(n);
                              self->ReadHeader();
                            });
  }

  void ReadHeader() {
    phase_ = Phase::kReading;
    first_request_ = false;
    request_start_ = Clock::now();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<size_t>(server_.options.request_header_bytes_max, UINT32_MAX)));
    parser_->body_limit(server_.options.request_body_bytes_max);
    Tcp().expires_after(std::chrono::milliseconds(server_.options.read_timeout_ms));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = Self()](const error_code& ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(const error_code& ec) {
    if (ec) return OnReadError(ec);
    const auto& req = parser_->get();
    if (req.version() != 10 && req.version() != 11) {
      return SendError(BadRequest("only HTTP/1.0 and HTTP/1.1 are supported"));
    }
    if (const char* problem = FramingProblem(req)) return SendError(BadRequest(problem));
    if (parser_->is_done()) return Dispatch();
    if (req.version() == 11 && beast::iequals(req[http::field::expect], "100-continue")) {
      // Clients such as curl wait for this before sending a large body.
      continue_ = {};
      continue_.version(11);
      continue_.result(http::status::continue_);
      Tcp().expires_after(std::chrono::milliseconds(server_.options.write_timeout_ms));
      http::async_write(stream_, continue_, [self = Self()](const error_code& write_ec, size_t) {
        if (write_ec) return self->Close();
        self->ReadBody();
      });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    Tcp().expires_after(std::chrono::milliseconds(server_.options.read_timeout_ms));
    http::async_read(stream_, buffer_, *parser_, [self = Self()](const error_code& ec, size_t) {
      if (ec) return self->OnReadError(ec);
      self->Dispatch();
    });
  }

  void OnReadError(const error_code& ec) {
    if (ec == http::error::header_limit) {
      return SendError(
          Problem(431, "request_header_fields_too_large", "Request Header Fields Too Large",
                  "the request header is larger than " +
                      std::to_string(server_.options.request_header_bytes_max) + " bytes"));
    }
    if (ec == http::error::body_limit) {
      return SendError(Problem(413, "payload_too_large", "Payload Too Large",
                               "the request body is larger than " +
                                   std::to_string(server_.options.request_body_bytes_max) +
                                   " bytes"));
    }
    // The peer closed or stalled (then the socket is already closed), or the socket failed: there
    // is nobody to answer.
    if (ec.category() != http::make_error_code(http::error::end_of_stream).category() ||
        ec == http::error::end_of_stream || ec == http::error::partial_message) {
      return Close();
    }
    if (ec == http::error::buffer_overflow) {
      return SendError(BadRequest("a chunk-size line or the trailer is too long"));
    }
    SendError(BadRequest(ec.message()));
  }

  HttpRequest TakeRequest() {
    auto& msg = parser_->get();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    for (const auto& field : msg) {
      req.headers.emplace_back(Lower(field.name_string()), std::string(field.value()));
    }
    req.body = std::move(msg.body());
    req.remote_address = remote_address_;
    return req;
  }

  void Dispatch() {
    phase_ = Phase::kBusy;
    const auto& msg = parser_->get();
    const bool keep_alive = msg.keep_alive();
    const unsigned version = msg.version();
    const bool head = msg.method() == http::verb::head;
    HttpRequest req = TakeRequest();
    // Only a request that may block is offered to start (every request without may_block).
    const bool may_block = !server_.options.may_block || server_.options.may_block(req);
    if (server_.options.start && may_block && Start(req, version, keep_alive, head)) return;
    if (server_.blocking_pool && may_block) {
      // The handler runs on the blocking pool; the response comes back to this strand. The work
      // guard keeps the I/O threads running (Stop waits for them) until it has.
      asio::post(*server_.blocking_pool,
                 [self = Self(), req = std::move(req), version, keep_alive, head,
                  work = asio::make_work_guard(server_.ioc)]() mutable {
                   HttpResponse res = self->Call(req);
                   // The session moves to its strand: if the response ends it, it ends there.
                   auto strand = self->stream_.get_executor();
                   asio::post(strand, [self = std::move(self), req = std::move(req),
                                       res = std::move(res), version, keep_alive, head]() mutable {
                     self->Respond(req, std::move(res), version, keep_alive, head);
                   });
                 });
      return;
    }
    HttpResponse res = Call(req);
    Respond(req, std::move(res), version, keep_alive, head);
  }

  HttpResponse Call(const HttpRequest& req) {
    return Guarded([&] { return server_.handler(req); });
  }

  // A response made by `make`, or a 500 if it throws or gives a status out of range.
  template <typename Make>
  static HttpResponse Guarded(Make&& make) {
    HttpResponse res;
    try {
      res = make();
    } catch (const std::exception& e) {
      res = Internal(std::string("the request handler failed: ") + e.what());
    } catch (...) {
      res = Internal("the request handler failed");
    }
    if (res.status < 200 || res.status > 599) {
      res = Internal("the request handler returned status " + std::to_string(res.status));
    }
    return res;
  }

  // Offers the request to options.start. Once taken, the request waits in pending_ until the
  // responder's response comes back to this strand (it cannot come sooner: this handler holds
  // the strand until it returns). Until the response is posted, the responder holds the session
  // and a work guard that keeps the I/O threads running (Stop waits for them); a responder kept
  // after its use, or after start declined, holds neither.
  bool Start(HttpRequest& req, unsigned version, bool keep_alive, bool head) {
    struct Answer {
      Answer(std::shared_ptr<Session> s, asio::io_context& ioc)
          : self(std::move(s)), work(asio::make_work_guard(ioc)) {}
      std::atomic<bool> used{false};  // the first response only
      std::shared_ptr<Session> self;
      asio::executor_work_guard<asio::io_context::executor_type> work;
    };
    auto answer = std::make_shared<Answer>(Self(), server_.ioc);
    HttpResponder respond = [answer, version, keep_alive,
                             head](std::function<HttpResponse()> make) {
      if (answer->used.exchange(true)) return;
      std::shared_ptr<Session> self = std::move(answer->self);
      auto strand = self->stream_.get_executor();
      // The guard goes with the handler and ends on an I/O thread once it has run.
      asio::post(strand, [self = std::move(self), work = std::move(answer->work),
                          make = std::move(make), version, keep_alive, head] {
        HttpResponse res = Guarded(make);
        HttpRequest taken = std::move(self->pending_);
        self->Respond(taken, std::move(res), version, keep_alive, head);
      });
    };
    bool taken = false;
    try {
      taken = server_.options.start(req, respond);
    } catch (const std::exception& e) {
      std::string what = std::string("the request handler failed: ") + e.what();
      respond([what] { return Internal(what); });
      taken = true;
    } catch (...) {
      respond([] { return Internal("the request handler failed"); });
      taken = true;
    }
    if (taken) {
      pending_ = std::move(req);
    } else if (!answer->used.exchange(true)) {
      answer->self.reset();
      answer->work.reset();
    }
    return taken;
  }

  // Answers a request the server refuses itself, then closes.
  void SendError(HttpResponse res) {
    phase_ = Phase::kBusy;
    HttpRequest req;
    unsigned version = 11;
    bool head = false;
    if (parser_) {
      // Whatever of the start line was parsed; used for the response version and on_response.
      const auto& msg = parser_->get();
      req.method = std::string(msg.method_string());
      req.target = std::string(msg.target());
      if (msg.version() == 10) version = 10;
      head = msg.method() == http::verb::head;
    }
    req.remote_address = remote_address_;
    Respond(req, std::move(res), version, /*keep_alive=*/false, head);
  }

  void Respond(const HttpRequest& req, HttpResponse res, unsigned version, bool keep_alive,
               bool head) {
    if (server_.options.on_response) {
      double seconds = std::chrono::duration<double>(Clock::now() - request_start_).count();
      try {
        server_.options.on_response(req, res, seconds);
      } catch (...) {
        // Metrics and logging must not take the connection down.
      }
    }
    close_after_write_ = res.close || !keep_alive || server_.stopping.load();

    response_ = {};
    response_.version(version);
    response_.result(static_cast<unsigned>(res.status));
    bool has_content_type = false;
    for (const auto& [name, value] : res.headers) {
      if (!IsToken(name) || !IsFieldValue(value) || beast::iequals(name, "content-length") ||
          beast::iequals(name, "transfer-encoding") || beast::iequals(name, "connection")) {
        continue;
      }
      has_content_type = has_content_type || beast::iequals(name, "content-type");
      response_.insert(name, value);
    }
    if (!has_content_type) response_.set(http::field::content_type, "application/json");
    if (close_after_write_) {
      response_.set(http::field::connection, "close");
    } else if (version == 10) {
      response_.set(http::field::connection, "keep-alive");
    }
    // Content-Length is set by hand: prepare_payload() throws on a 204 with a body and would
    // describe the empty body of a HEAD response.
    if (res.status == 204 || res.status == 304) {
      res.body.clear();
    } else {
      response_.content_length(res.body.size());
      if (head) res.body.clear();
    }
    response_.body() = std::move(res.body);

    Tcp().expires_after(std::chrono::milliseconds(server_.options.write_timeout_ms));
    http::async_write(stream_, response_, [self = Self()](const error_code& ec, size_t) {
      if (ec) return self->Close();
      self->response_ = {};  // Frees the body now rather than at the next response.
      if (self->close_after_write_) return self->Linger();
      self->WaitForRequest();
    });
  }

  // Closes after a response. Closing a socket whose receive queue is not empty makes the kernel
  // send a reset, which can destroy the response before the client reads it (typical after a 413:
  // the client is still sending the body). So: end our side of the stream, then read and discard
  // until the client closes or a deadline passes.
  void Linger() {
    phase_ = Phase::kLingering;
    auto deadline = std::min<std::chrono::milliseconds>(
        std::chrono::milliseconds(server_.options.read_timeout_ms),
        server_.stopping.load() ? kLingerWhileStopping : kLingerMax);
    Tcp().expires_after(deadline);
    if constexpr (kTls) {
      // close_notify is the TLS end of stream; async_shutdown then waits for the peer's.
      stream_.async_shutdown([self = Self()](const error_code&) { self->Close(); });
    } else {
      error_code ignored;
      Tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
      Drain();
    }
  }

  void Drain() {
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(kReadChunkBytes),
                            [self = Self()](const error_code& ec, size_t) {
                              if (ec || self->phase_ != Phase::kLingering) return self->Close();
                              self->Drain();
                            });
  }

  void Close() {
    phase_ = Phase::kClosed;
    Tcp().close();
  }

  ServerState& server_;
  Stream stream_;
  const std::string remote_address_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  http::response<http::empty_body> continue_;
  HttpRequest pending_;  // a request options.start took, until its response is made
  Phase phase_ = Phase::kIdle;
  bool first_request_ = true;
  bool close_after_write_ = false;
  Clock::time_point request_start_ = Clock::now();
  bool registered_ = false;
  std::list<std::weak_ptr<SessionBase>>::iterator registration_;
};

Status CheckReadable(const std::string& path, const char* what) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return Status::InvalidArgument(std::string("cannot read TLS ") + what + " file '" + path +
                                   "': " + std::strerror(errno));
  }
  std::fclose(f);
  return Status::Ok();
}

Status ServerState::ConfigureTls() {
  const std::string& cert = options.tls_cert_file;
  const std::string& key = options.tls_key_file;
  RETURN_IF_ERROR(CheckReadable(cert, "certificate"));
  RETURN_IF_ERROR(CheckReadable(key, "key"));
  tls.emplace(ssl::context::tls_server);
  error_code ec;
  tls->set_options(ssl::context::default_workarounds | ssl::context::no_compression |
                       ssl::context::no_sslv2 | ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                       ssl::context::no_tlsv1_1,
                   ec);
  // The version floor again, directly: the no_* options alone are deprecated in OpenSSL 3.
  if (ec || SSL_CTX_set_min_proto_version(tls->native_handle(), TLS1_2_VERSION) != 1) {
    return Status::Internal("cannot restrict TLS to version 1.2 or later");
  }
  tls->use_certificate_chain_file(cert, ec);
  if (ec) {
    return Status::InvalidArgument("cannot load TLS certificate chain '" + cert +
                                   "': " + ec.message());
  }
  tls->use_private_key_file(key, ssl::context::pem, ec);
  if (ec) return Status::InvalidArgument("cannot load TLS key '" + key + "': " + ec.message());
  if (SSL_CTX_check_private_key(tls->native_handle()) != 1) {
    return Status::InvalidArgument("TLS key '" + key + "' does not match certificate '" + cert +
                                   "'");
  }
  return Status::Ok();
}

Status ServerState::Listen() {
  error_code ec;
  asio::ip::address address = asio::ip::make_address(options.host, ec);
  if (ec) {
    tcp::resolver resolver(ioc);
    auto results = resolver.resolve(options.host, std::to_string(options.port), ec);
    if (ec || results.empty()) {
      return Status::InvalidArgument("invalid listen address '" + options.host +
                                     "': " + (ec ? ec.message() : "no address"));
    }
    address = results.begin()->endpoint().address();
  }
  const tcp::endpoint endpoint(address, options.port);
  const std::string where =
      (address.is_v6() ? "[" + address.to_string() + "]" : address.to_string()) + ":" +
      std::to_string(options.port);
  auto fail = [&](const error_code& e) {
    return Status::Unavailable("cannot listen on " + where + ": " + e.message());
  };
  acceptor.open(endpoint.protocol(), ec);
  if (ec) return fail(ec);
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) return fail(ec);
  acceptor.bind(endpoint, ec);
  if (ec) return fail(ec);
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec);
  port = acceptor.local_endpoint(ec).port();
  if (ec) return fail(ec);

  asio::ip::address url_address = address;
  if (address.is_unspecified()) {
    url_address = address.is_v6() ? asio::ip::address(asio::ip::address_v6::loopback())
                                  : asio::ip::address(asio::ip::address_v4::loopback());
  }
  url = std::string(tls ? "https" : "http") + "://" +
        (url_address.is_v6() ? "[" + url_address.to_string() + "]" : url_address.to_string()) +
        ":" + std::to_string(port);
  return Status::Ok();
}

void ServerState::DoAccept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](const error_code& ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void ServerState::OnAccept(const error_code& ec, tcp::socket socket) {
  if (stopping.load() || !acceptor.is_open()) return;  // Stop(); `socket` closes as it goes.
  if (ec) {
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
        ec == asio::error::no_memory || ec == boost::system::errc::too_many_files_open_in_system) {
      // Accepting again at once would spin: the pending connection stays pending.
      accept_retry.expires_after(kAcceptBackoff);
      accept_retry.async_wait([this](const error_code& wait_ec) {
        if (!wait_ec && !stopping.load()) DoAccept();
      });
      return;
    }
    return DoAccept();  // The client went away before we accepted it.
  }
  error_code ignored;
  tcp::endpoint remote = socket.remote_endpoint(ignored);
  if (ignored || connections.load() >= options.connections_max) {
    socket.close(ignored);
    return DoAccept();
  }
  socket.set_option(tcp::no_delay(true), ignored);
  connections.fetch_add(1);  // Only this strand adds, so the cap holds.
  if (tls) {
    StartSession<TlsStream>(AddressString(remote.address()), std::move(socket), *tls);
  } else {
    StartSession<PlainStream>(AddressString(remote.address()), std::move(socket));
  }
  DoAccept();
}

template <class Stream, class... StreamArgs>
void ServerState::StartSession(std::string remote_address, StreamArgs&&... stream_args) {
  auto session = std::make_shared<Session<Stream>>(*this, std::move(remote_address),
                                                   std::forward<StreamArgs>(stream_args)...);
  // Registered before Run, and Stop sets `stopping` before it looks at the registry: a session
  // either is seen by Stop, or sees `stopping` when it begins.
  session->Register();
  session->Run();
}

}  // namespace

struct HttpServer::Impl : ServerState {
  using ServerState::ServerState;
};

const std::string* HttpRequest::Header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return &value;
  }
  return nullptr;
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                      HttpHandler handler) {
  if (!handler) return Status::InvalidArgument("HttpServer needs a handler");
  if (options.threads < 1) return Status::InvalidArgument("HttpServer threads must be at least 1");
  if (options.read_timeout_ms <= 0 || options.idle_timeout_ms <= 0 ||
      options.write_timeout_ms <= 0) {
    return Status::InvalidArgument("HttpServer timeouts must be positive");
  }
  if (options.request_header_bytes_max == 0 || options.connections_max == 0) {
    return Status::InvalidArgument(
        "HttpServer request_header_bytes_max and connections_max must be positive");
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return Status::InvalidArgument("HTTPS needs both tls_cert_file and tls_key_file");
  }
  if (options.blocking_threads < 0 || (options.blocking_threads > 0 && !options.may_block)) {
    return Status::InvalidArgument("HttpServer blocking_threads needs may_block");
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(handler));
  if (impl->options.blocking_threads > 0) {
    impl->blocking_pool =
        std::make_unique<asio::thread_pool>(static_cast<size_t>(impl->options.blocking_threads));
  }
  if (!impl->options.tls_cert_file.empty()) RETURN_IF_ERROR(impl->ConfigureTls());
  RETURN_IF_ERROR(impl->Listen());

  // The pending accept keeps io_context::run() going; once Stop() closes the acceptor and every
  // session has ended, run() returns by itself, so no work guard and no io_context::stop() (which
  // would abandon responses half written).
  impl->DoAccept();
  ServerState* raw = impl.get();
  for (int i = 0; i < raw->options.threads; ++i) {
    raw->threads.emplace_back([raw] {
      for (;;) {
        try {
          raw->ioc.run();
          return;
        } catch (const std::exception& e) {
          // Only allocation failures and the like get here; the connection concerned is gone.
          std::fprintf(stderr, "http_server: exception on an I/O thread: %s\n", e.what());
        }
      }
    });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

uint16_t HttpServer::port() const { return impl_->port; }

std::string HttpServer::url() const { return impl_->url; }

size_t HttpServer::connections() const { return impl_->connections.load(); }

void HttpServer::Stop() {
  std::lock_guard stop_lock(impl_->stop_mu);
  if (impl_->stopped) return;
  TALLY_CHECK(!impl_->ioc.get_executor().running_in_this_thread());
  impl_->stopped = true;
  impl_->stopping.store(true);
  ServerState* impl = impl_.get();
  asio::post(impl->acceptor.get_executor(), [impl] {
    error_code ignored;
    impl->acceptor.close(ignored);
    impl->accept_retry.cancel();
  });
  std::vector<std::shared_ptr<SessionBase>> live;
  {
    std::lock_guard lock(impl->sessions_mu);
    for (const auto& weak : impl->sessions) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
  }
  for (const auto& session : live) session->Shutdown();
  // If this drops the last reference, the session had no operation pending: destroying it here,
  // off its strand, races with nothing.
  live.clear();
  // Every request handed to the blocking pool holds a work guard until its response is posted
  // back, so the I/O threads end only after the pool has nothing left of theirs.
  for (auto& thread : impl->threads) thread.join();
  impl->threads.clear();
  if (impl->blocking_pool) impl->blocking_pool->join();
  // Again, now from this thread: the posted close does not run if the io_context ran out of work
  // first, and until closed the kernel keeps completing connections into the backlog.
  error_code ignored;
  impl->acceptor.close(ignored);
}

}  // namespace tally
