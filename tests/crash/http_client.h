// A small HTTP/1.1 client for the reliability tests (tests/crash/): one kept-alive loopback
// connection per client, reopened after any failure, with a deadline per request. A request
// that got no complete answer (refused, reset, closed, timed out) reports status 0: its outcome
// is unknown, and the tests retry it with the same Idempotency-Key.
#ifndef TALLY_TESTS_CRASH_HTTP_CLIENT_H_
#define TALLY_TESTS_CRASH_HTTP_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tally::testing {

struct HttpReply {
  int status = 0;                                            // 0: no complete answer
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  std::string Header(std::string_view lower_name) const {
    for (const auto& [name, value] : headers) {
      if (name == lower_name) return value;
    }
    return "";
  }
  bool replayed() const { return Header("idempotency-replayed") == "true"; }
};

class HttpClient {
 public:
  explicit HttpClient(std::string bearer) : bearer_(std::move(bearer)) {}
  ~HttpClient() { Close(); }
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request to 127.0.0.1:port. `idempotency_key` empty: no header.
  HttpReply Send(uint16_t port, const std::string& method, const std::string& target,
                 const std::string& body = "", const std::string& idempotency_key = "",
                 std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    if (fd_ >= 0 && port != port_) Close();
    if (fd_ < 0 && !Connect(port)) return {};
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    if (!bearer_.empty()) req += "Authorization: Bearer " + bearer_ + "\r\n";
    if (!idempotency_key.empty()) req += "Idempotency-Key: " + idempotency_key + "\r\n";
    if (!body.empty() || method == "POST" || method == "PATCH") {
      req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\n";
    }
    req += "\r\n" + body;
    HttpReply r;
    if (!SendAll(req) || !ReadReply(deadline, &r)) {
      Close();
      return {};
    }
    if (Lower(r.Header("connection")) == "close") Close();
    return r;
  }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buf_.clear();
  }

 private:
  static std::string Lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

  bool Connect(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      Close();
      return false;
    }
    port_ = port;
    return true;
  }

  bool SendAll(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // false at end of stream, on error or at the deadline.
  bool ReadMore(std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return false;
      char chunk[16384];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      buf_.append(chunk, static_cast<size_t>(n));
      return true;
    }
  }

  // One response framed by Content-Length (absent: no body).
  bool ReadReply(std::chrono::steady_clock::time_point deadline, HttpReply* r) {
    size_t header_end;
    while ((header_end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!ReadMore(deadline)) return false;
    }
    std::string head = buf_.substr(0, header_end);
    if (head.rfind("HTTP/1.", 0) != 0 || head.size() < 12) return false;
    int status = std::atoi(head.c_str() + 9);
    size_t pos = head.find("\r\n");
    while (pos != std::string::npos && pos < head.size()) {
      pos += 2;
      size_t end = head.find("\r\n", pos);
      std::string line = head.substr(pos, end == std::string::npos ? end : end - pos);
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        size_t v = line.find_first_not_of(' ', colon + 1);
        r->headers.emplace_back(Lower(line.substr(0, colon)),
                                v == std::string::npos ? "" : line.substr(v));
      }
      pos = end;
    }
    size_t length = std::strtoul(r->Header("content-length").c_str(), nullptr, 10);
    size_t total = header_end + 4 + length;
    while (buf_.size() < total) {
      if (!ReadMore(deadline)) return false;
    }
    r->body = buf_.substr(header_end + 4, length);
    r->status = status;
    buf_.erase(0, total);
    return true;
  }

  std::string bearer_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::string buf_;
};

}  // namespace tally::testing

#endif  // TALLY_TESTS_CRASH_HTTP_CLIENT_H_
