// End-to-end tests: the real tallyd binary in a temporary data directory, driven over HTTP/1.1 on
// loopback with plain POSIX sockets, its receipts checked with an independent verifier
// (tests/receipt_verifier.h) and its data directory with the real tally-audit.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/e2e/tallyd_process.h"
#include "tests/receipt_verifier.h"
#include "tests/test_util.h"

namespace tally {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using testing::Bytes;
using testing::TempDir;

const std::string kAdminKey = "e2e-admin-key-7f3c9a2b";
const std::string kNoIdempotencyKey = "<none>";

// ---------------------------------------------------------------------------------------------
// HTTP over a raw socket.

struct HttpResult {
  int status = 0;  // 0: no response (connection failed, closed or timed out)
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  // The first header named `lower_name`, or "".
  std::string Header(std::string_view lower_name) const {
    for (const auto& [name, value] : headers) {
      if (name == lower_name) return value;
    }
    return "";
  }
  bool HasHeader(std::string_view lower_name) const {
    for (const auto& [name, value] : headers) {
      if (name == lower_name) return true;
    }
    return false;
  }
  Json json() const { return Json::parse(body, nullptr, false); }
  // The problem code of an error response, or "".
  std::string code() const {
    Json j = json();
    return j.is_object() && j.contains("code") && j["code"].is_string()
               ? j["code"].get<std::string>()
               : "";
  }
  bool replayed() const { return Header("idempotency-replayed") == "true"; }
};

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A blocking loopback connection on which a test controls every byte.
class Connection {
 public:
  explicit Connection(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool connected() const { return connected_; }
  const std::string& buffered() const { return buf_; }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads one response framed by Content-Length (none: no body). Status 0 when none came.
  HttpResult ReadResponse(std::chrono::milliseconds timeout = 20s) {
    HttpResult res;
    auto deadline = Clock::now() + timeout;
    size_t header_end;
    while ((header_end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (ReadMore(deadline) <= 0) return res;
    }
    std::string head = buf_.substr(0, header_end);
    size_t line_end = std::min(head.find("\r\n"), head.size());
    std::string status_line = head.substr(0, line_end);
    if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) return res;
    int status = std::stoi(status_line.substr(9, 3));
    size_t pos = line_end + 2;
    while (pos < head.size()) {
      size_t end = std::min(head.find("\r\n", pos), head.size());
      std::string line = head.substr(pos, end - pos);
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        while (!value.empty() && value.back() == ' ') value.pop_back();
        res.headers.emplace_back(Lower(line.substr(0, colon)), value);
      }
      pos = end + 2;
    }
    size_t length = 0;
    if (std::string cl = res.Header("content-length"); !cl.empty()) length = std::stoul(cl);
    size_t total = header_end + 4 + length;
    while (buf_.size() < total) {
      if (ReadMore(deadline) <= 0) return HttpResult{};
    }
    res.body = buf_.substr(header_end + 4, length);
    res.status = status;
    buf_.erase(0, total);
    return res;
  }

  // True if the server closes the connection (end of stream or reset) within `timeout`; bytes
  // received meanwhile stay in buffered().
  bool WaitClosed(std::chrono::milliseconds timeout = 5s) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      int r = ReadMore(deadline);
      if (r == 0 || r == -1) return true;
      if (r == -2) return false;
    }
  }

 private:
  // 1 after reading some bytes, 0 at end of stream, -1 on error, -2 on timeout.
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

// A unique Idempotency-Key: unique across restarts of tallyd on the same data directory too.
std::string FreshIdempotencyKey() {
  static std::atomic<uint64_t> counter{0};
  static const std::string prefix =
      "auto-" + std::to_string(::getpid()) + "-" +
      std::to_string(std::chrono::system_clock::now().time_since_epoch().count()) + "-";
  return prefix + std::to_string(counter.fetch_add(1));
}

std::string RequestText(const std::string& method, const std::string& target,
                        const std::string& key, const std::string& body,
                        const std::string& idempotency_key) {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (!key.empty()) r += "Authorization: Bearer " + key + "\r\n";
  if (method == "POST" && idempotency_key != kNoIdempotencyKey) {
    r += "Idempotency-Key: " + (idempotency_key.empty() ? FreshIdempotencyKey() : idempotency_key) +
         "\r\n";
  }
  if (method == "POST" || method == "PATCH" || !body.empty()) {
    r +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return r + "\r\n" + body;
}

// A client of the API with one key; each request on a fresh connection.
class Api {
 public:
  Api(uint16_t port, std::string key) : port_(port), key_(std::move(key)) {}

  // POST requests get a fresh Idempotency-Key unless one is given (kNoIdempotencyKey: none).
  HttpResult Send(const std::string& method, const std::string& target,
                  const std::string& body = "", const std::string& idempotency_key = "") const {
    Connection c(port_);
    if (!c.connected() || !c.Send(RequestText(method, target, key_, body, idempotency_key))) {
      return HttpResult{};
    }
    return c.ReadResponse();
  }
  HttpResult Get(const std::string& target) const { return Send("GET", target); }
  HttpResult Post(const std::string& target, const std::string& body,
                  const std::string& idempotency_key = "") const {
    return Send("POST", target, body, idempotency_key);
  }
  HttpResult Post(const std::string& target, const char* body,
                  const std::string& idempotency_key = "") const {
    return Send("POST", target, body, idempotency_key);
  }
  HttpResult Post(const std::string& target, const Json& body,
                  const std::string& idempotency_key = "") const {
    return Send("POST", target, body.dump(), idempotency_key);
  }
  HttpResult Delete(const std::string& target) const { return Send("DELETE", target); }

  uint16_t port() const { return port_; }
  const std::string& key() const { return key_; }

 private:
  uint16_t port_;
  std::string key_;
};

// ---------------------------------------------------------------------------------------------
// A tallyd on a temporary data directory.

class Server {
 public:
  std::string data() const { return dir_ / "data"; }
  std::string log_file() const { return dir_ / "tallyd.log"; }
  const TempDir& dir() const { return dir_; }

  // Starts tallyd (again) on the same data directory.
  void Start(const std::vector<std::string>& extra_args = {}) {
    tallyd_.reset();
    tallyd_ = std::make_unique<testing::TallydProcess>(TALLYD_PATH, data(), kAdminKey, log_file(),
                                                       extra_args);
    INFO("tallyd log:\n" << tallyd_->log());
    REQUIRE(tallyd_->started());
  }
  int Stop() { return tallyd_->Stop(); }
  int Kill() { return tallyd_->Kill(); }
  uint16_t port() const { return tallyd_->port(); }
  testing::TallydProcess& process() { return *tallyd_; }

  Api As(const std::string& key) const { return Api(port(), key); }
  Api Admin() const { return As(kAdminKey); }
  Api Anonymous() const { return As(""); }

  // Creates an API key with the admin key; returns the response.
  Json MakeKey(const Json& body) const {
    HttpResult r = Admin().Post("/v1/api-keys", body);
    INFO(r.body);
    REQUIRE(r.status == 201);
    Json j = r.json();
    REQUIRE(j["key"].is_string());
    CHECK(j["role"] == body["role"]);
    CHECK_FALSE(j["key"].get<std::string>().empty());
    return j;
  }
  Api MakeClient(const std::string& role, const std::string& program = "",
                 const std::string& customer = "") const {
    Json body = {{"role", role}, {"name", role + " key"}};
    if (!program.empty()) body["program"] = program;
    if (!customer.empty()) body["customer"] = customer;
    return As(MakeKey(body)["key"].get<std::string>());
  }

 private:
  TempDir dir_;
  std::unique_ptr<testing::TallydProcess> tallyd_;
};

testing::CommandResult Audit(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {TALLY_AUDIT_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::RunCommand(argv, 120s);
}

// ---------------------------------------------------------------------------------------------
// Helpers over JSON.

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int64_t Points(const Json& customer, const char* field) { return customer[field].get<int64_t>(); }

// The raw Ed25519 key in a PEM public key file (DIR/signing.pub), read with OpenSSL.
Bytes RawKeyFromPem(const std::string& path) {
  std::string pem = testing::ReadWholeFile(path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = bio == nullptr ? nullptr : PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  Bytes raw(32, '\0');
  size_t len = raw.size();
  bool ok = key != nullptr && EVP_PKEY_get_raw_public_key(
                                  key, reinterpret_cast<unsigned char*>(raw.data()), &len) == 1;
  EVP_PKEY_free(key);
  BIO_free(bio);
  return ok && len == 32 ? raw : Bytes();
}

// GET /v1/ledger/public-key, checked, as the raw key.
Bytes PublicKey(const Api& api) {
  HttpResult r = api.Get("/v1/ledger/public-key");
  REQUIRE(r.status == 200);
  Json j = r.json();
  std::optional<Bytes> pub = testing::Base64DecodeEvp(j["public_key"].get<std::string>());
  REQUIRE(pub);
  REQUIRE(pub->size() == 32);
  std::string name = j["name"];
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", testing::KeyIdFromSpec(name, *pub));
  CHECK(j["key_id"] == hex);
  CHECK(j["verifier_key"].get<std::string>().rfind(name + "+" + hex + "+", 0) == 0);
  return *pub;
}

// Decodes a list of base64 32-byte hashes.
std::vector<Bytes> Hashes(const Json& list) {
  std::vector<Bytes> out;
  for (const Json& h : list) {
    std::optional<Bytes> bytes = testing::Base64DecodeEvp(h.get<std::string>());
    REQUIRE(bytes);
    REQUIRE(bytes->size() == 32);
    out.push_back(*bytes);
  }
  return out;
}

// Checks {"entry", "receipt"} offline with only the public key: the leaf is the entry bytes, the
// inclusion proof leads to the checkpoint's root, and the checkpoint is signed by `pub`.
void CheckReceipt(const Json& written, const Bytes& pub) {
  const Json& entry = written["entry"];
  const Json& receipt = written["receipt"];
  INFO("entry " << entry.dump());
  REQUIRE(receipt.is_object());
  std::optional<Bytes> bytes = testing::Base64DecodeEvp(receipt["entry"].get<std::string>());
  REQUIRE(bytes);
  uint64_t leaf_index = receipt["leaf_index"];
  CHECK(leaf_index == entry["id"].get<uint64_t>());
  CHECK(testing::VerifyReceiptBytes(leaf_index, *bytes, Hashes(receipt["inclusion_proof"]),
                                    receipt["checkpoint"].get<std::string>(), pub,
                                    receipt["tree_size"].get<uint64_t>()));
  // The entry bytes hold the program and customer ids as plain bytes.
  CHECK(bytes->find(entry["program"].get<std::string>()) != Bytes::npos);
  if (entry["customer"].is_string()) {
    CHECK(bytes->find(entry["customer"].get<std::string>()) != Bytes::npos);
  }
}

// The root of a receipt's checkpoint, whose signature is checked under `pub`.
Bytes ReceiptRoot(const Json& receipt, const Bytes& pub) {
  testing::ParsedCheckpoint cp;
  REQUIRE(testing::VerifyCheckpointNote(receipt["checkpoint"].get<std::string>(), pub, &cp));
  return cp.root;
}

// Follows next_cursor from `target` (which has a query) to the end; all items in order.
std::vector<Json> AllPages(const Api& api, const std::string& target, int limit) {
  std::vector<Json> items;
  std::string cursor;
  for (int page = 0; page < 1000; ++page) {
    std::string url = target + "&limit=" + std::to_string(limit);
    if (!cursor.empty()) url += "&cursor=" + cursor;
    HttpResult r = api.Get(url);
    INFO(url << " -> " << r.body);
    REQUIRE(r.status == 200);
    Json j = r.json();
    REQUIRE(j["items"].size() <= static_cast<size_t>(limit));
    for (const Json& item : j["items"]) items.push_back(item);
    if (j["next_cursor"].is_null()) return items;
    cursor = j["next_cursor"].get<std::string>();
    // Cursors are opaque; encode the few characters that would break a query.
    std::string encoded;
    for (char c : cursor) {
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
          c == '~') {
        encoded += c;
      } else {
        char hex[4];
        std::snprintf(hex, sizeof hex, "%%%02X", static_cast<unsigned char>(c));
        encoded += hex;
      }
    }
    cursor = encoded;
  }
  FAIL("pagination did not end");
  return items;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 1, 6, 7: the whole flow, every receipt, tally-audit on the running and on the stopped server.

TEST_CASE("A whole loyalty flow over HTTP answers as API.md says, and every receipt verifies",
          "[e2e]") {
  Server s;
  // Expiry runs only when asked (POST expire), so that the test decides when lots expire.
  s.Start({"--due-interval-ms", "3600000"});
  Api admin = s.Admin();
  const std::string p = "/v1/programs/acme";
  std::vector<Json> written;  // every 201 {"entry", "receipt"}
  auto write = [&written](const HttpResult& r) -> Json {
    INFO(r.status << " " << r.body);
    REQUIRE(r.status == 201);
    CHECK(r.Header("content-type") == "application/json");
    CHECK_FALSE(r.replayed());
    Json j = r.json();
    REQUIRE(j["entry"].is_object());
    REQUIRE(j["receipt"].is_object());
    written.push_back(j);
    return j["entry"];
  };
  auto customer = [&](const Api& api, const std::string& c) {
    HttpResult r = api.Get(p + "/customers/" + c);
    INFO(r.body);
    REQUIRE(r.status == 200);
    return r.json();
  };

  // A program with referrals.
  Json program_body = {{"id", "acme"},
                       {"name", "Acme Rewards"},
                       {"earn_rate", {{"points", 1}, {"per_amount_minor", 100}}},
                       {"referral",
                        {{"advocate_points", 500},
                         {"friend_points", 250},
                         {"max_uses", 10},
                         {"code_ttl_days", 90},
                         {"advocate_pending_days", 30}}}};
  HttpResult created = admin.Post("/v1/programs", program_body, "create-acme");
  REQUIRE(created.status == 201);
  Json program = created.json();
  CHECK(program["id"] == "acme");
  CHECK(program["name"] == "Acme Rewards");
  CHECK(program["currency"] == "USD");
  CHECK(program["expiry_days"] == 0);
  CHECK(program["negative_balance"] == "deny");
  CHECK(program["referral"] == program_body["referral"]);
  CHECK(admin.Post("/v1/programs", program_body).code() == "program_exists");
  CHECK(admin.Get(p).json() == program);

  // Keys for every role, made by the admin key.
  Api checkout = s.MakeClient("checkout");
  Api finance = s.MakeClient("finance");
  Api alice_key = s.MakeClient("customer", "acme", "alice");
  CHECK(checkout.Get("/v1/programs?limit=10").json()["items"][0]["id"] == "acme");

  // A catalog reward.
  HttpResult reward =
      admin.Post(p + "/rewards", R"({"id":"mug","name":"Mug","points":300,"stock":2})");
  REQUIRE(reward.status == 201);
  CHECK(reward.json() == Json::parse(R"({"id":"mug","name":"Mug","points":300,"stock":2})"));

  // Earn points, and points for an order amount.
  Json earn = write(checkout.Post(
      p + "/earn", R"({"customer":"alice","points":1000,"order_id":"o-1","description":"first"})"));
  CHECK(earn["type"] == "earn");
  CHECK(earn["program"] == "acme");
  CHECK(earn["customer"] == "alice");
  CHECK(earn["points"] == 1000);
  CHECK(earn["order_id"] == "o-1");
  CHECK(earn["description"] == "first");
  CHECK_FALSE(earn.contains("hold"));
  REQUIRE(earn["postings"].size() == 2);
  CHECK(earn["postings"][0]["account"] == "acme:customer:alice:available");
  CHECK(earn["postings"][0]["points"] == 1000);
  CHECK(earn["postings"][1]["account"] == "acme:issued");
  CHECK(earn["postings"][1]["points"] == -1000);
  CHECK(checkout.Post(p + "/earn", R"({"customer":"alice","points":5,"order_id":"o-1"})").code() ==
        "order_already_awarded");
  Json by_amount =
      write(checkout.Post(p + "/earn", R"({"customer":"alice","order_amount_minor":12345})"));
  CHECK(by_amount["points"] == 123);

  // A pending earn captured, another voided.
  Json pending =
      write(checkout.Post(p + "/earn", R"({"customer":"bob","points":200,"pending_days":7})"));
  const std::string pending_id = std::to_string(pending["id"].get<uint64_t>());
  CHECK(pending["hold"]["state"] == "pending");
  CHECK(pending["postings"][0]["account"] == "acme:customer:bob:pending");
  Json bob = customer(checkout, "bob");
  CHECK(Points(bob, "pending") == 200);
  CHECK(Points(bob, "available") == 0);
  Json captured = write(checkout.Post(p + "/holds/" + pending_id + "/capture", "{}"));
  CHECK(captured["type"] == "capture");
  CHECK(captured["points"] == 200);
  CHECK(captured["refs"]["entry_id"] == pending["id"]);
  CHECK(checkout.Post(p + "/holds/" + pending_id + "/capture", "{}").code() ==
        "hold_already_resolved");
  CHECK(checkout.Get("/v1/ledger/entries/" + pending_id).json()["entry"]["hold"]["state"] ==
        "captured");
  Json pending2 =
      write(checkout.Post(p + "/earn", R"({"customer":"bob","points":50,"pending_days":7})"));
  Json voided = write(checkout.Post(
      p + "/holds/" + std::to_string(pending2["id"].get<uint64_t>()) + "/void", "{}"));
  CHECK(voided["type"] == "void");
  CHECK(voided["refs"]["entry_id"] == pending2["id"]);
  bob = customer(checkout, "bob");
  CHECK(Points(bob, "pending") == 0);
  CHECK(Points(bob, "available") == 200);
  CHECK(checkout.Post(p + "/holds/" + std::to_string(earn["id"].get<uint64_t>()) + "/void", "{}")
            .code() == "unknown_hold");

  // Redemptions: points, a reward, a reservation captured and one voided.
  Json redeem = write(checkout.Post(p + "/redeem", R"({"customer":"alice","points":100})"));
  CHECK(redeem["type"] == "redeem");
  CHECK(redeem["points"] == 100);
  Json redeem_mug =
      write(checkout.Post(p + "/redeem", R"({"customer":"alice","reward_id":"mug"})"));
  CHECK(redeem_mug["points"] == 300);
  CHECK(checkout.Post(p + "/redeem", R"({"customer":"alice","reward_id":"hat"})").code() ==
        "unknown_reward");
  HttpResult too_much = checkout.Post(p + "/redeem", R"({"customer":"alice","points":1000000})");
  CHECK(too_much.status == 422);
  CHECK(too_much.code() == "insufficient_points");
  CHECK(too_much.Header("content-type") == "application/problem+json");
  Json reserve =
      write(checkout.Post(p + "/redeem", R"({"customer":"alice","points":50,"hold":true})"));
  CHECK(reserve["hold"]["state"] == "pending");
  CHECK(Points(customer(checkout, "alice"), "reserved") == 50);
  write(checkout.Post(p + "/holds/" + std::to_string(reserve["id"].get<uint64_t>()) + "/capture",
                      "{}"));
  Json reserve2 =
      write(checkout.Post(p + "/redeem", R"({"customer":"alice","points":20,"hold":true})"));
  write(checkout.Post(p + "/holds/" + std::to_string(reserve2["id"].get<uint64_t>()) + "/void",
                      "{}"));
  Json alice = customer(checkout, "alice");
  CHECK(Points(alice, "available") == 1000 + 123 - 100 - 300 - 50);
  CHECK(Points(alice, "reserved") == 0);

  // Reversals: a claw-back of part of an earn, a give-back of a whole redemption.
  Json claw = write(
      checkout.Post(p + "/reversals",
                    Json{{"entry_id", earn["id"]}, {"points", 100}, {"reason", "partial refund"}}));
  CHECK(claw["type"] == "reversal");
  CHECK(claw["refs"]["entry_id"] == earn["id"]);
  CHECK(Points(customer(checkout, "alice"), "available") == 573);
  Json give = write(checkout.Post(p + "/reversals", Json{{"entry_id", redeem["id"]}}));
  CHECK(give["refs"]["entry_id"] == redeem["id"]);
  CHECK(Points(customer(checkout, "alice"), "available") == 673);
  CHECK(checkout.Post(p + "/reversals", Json{{"entry_id", redeem["id"]}}).code() ==
        "exceeds_reversible");

  // An adjustment, by the admin only.
  Json adjustment = write(
      admin.Post(p + "/adjustments", R"({"customer":"alice","points":25,"reason":"goodwill"})"));
  CHECK(adjustment["type"] == "adjustment");
  CHECK(adjustment["points"] == 25);
  CHECK(checkout.Post(p + "/adjustments", R"({"customer":"alice","points":25,"reason":"x"})")
            .status == 403);

  // A lot that expires in a few seconds, expired by POST expire.
  auto expires =
      std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now()) + 3s;
  write(checkout.Post(
      p + "/earn", Json{{"customer", "carol"}, {"points", 40}, {"expires_at", Rfc3339(expires)}}));
  Json carol_lots = checkout.Get(p + "/customers/carol/lots").json();
  REQUIRE(carol_lots["items"].size() == 1);
  CHECK(carol_lots["items"][0]["expires_at"] == Rfc3339(expires));
  CHECK(customer(checkout, "carol")["next_expiry"]["points"] == 40);
  std::this_thread::sleep_until(expires + 300ms);
  HttpResult expired = admin.Post(p + "/expire", "{}");
  REQUIRE(expired.status == 200);
  CHECK(expired.json() == Json::parse(R"({"entries":1,"points":40})"));
  Json carol = customer(checkout, "carol");
  CHECK(Points(carol, "available") == 0);
  CHECK(Points(carol, "lifetime_expired") == 40);
  CHECK(carol["next_expiry"].is_null());

  // A referral code (asked twice) and a referral.
  HttpResult code_made = checkout.Post(p + "/referral-codes", R"({"advocate":"alice"})");
  REQUIRE(code_made.status == 201);
  Json code = code_made.json();
  const std::string code_text = code["code"];
  CHECK(code_text.size() >= 10);
  CHECK(code["advocate"] == "alice");
  CHECK(code["max_uses"] == 10);
  CHECK(code["uses"] == 0);
  CHECK(code["expires_at"].is_string());
  HttpResult code_again = checkout.Post(p + "/referral-codes", R"({"advocate":"alice"})");
  CHECK(code_again.status == 200);
  CHECK(code_again.json()["code"] == code_text);
  CHECK(alice_key.Get(p + "/referral-codes/" + code_text).json()["code"] == code_text);
  Json referral = write(checkout.Post(
      p + "/referrals", Json{{"code", code_text}, {"friend", "dave"}, {"order_id", "o-9"}}));
  CHECK(referral["type"] == "referral");
  CHECK(checkout.Get(p + "/referral-codes/" + code_text).json()["uses"] == 1);
  CHECK(checkout.Post(p + "/referrals", Json{{"code", code_text}, {"friend", "dave"}}).code() ==
        "already_referred");
  CHECK(checkout.Post(p + "/referrals", Json{{"code", code_text}, {"friend", "alice"}}).code() ==
        "self_referral");
  CHECK(checkout.Post(p + "/referrals", Json{{"code", code_text}, {"friend", "bob"}}).code() ==
        "not_a_new_customer");
  CHECK(
      checkout.Post(p + "/referrals", Json{{"code", "0000000000AB"}, {"friend", "erin"}}).code() ==
      "unknown_code");
  Json dave = customer(checkout, "dave");
  CHECK(Points(dave, "available") == 250);
  CHECK(dave["referred_by"] == "alice");

  // The customer's own view, through the customer key.
  alice = customer(alice_key, "alice");
  CHECK(alice["program"] == "acme");
  CHECK(alice["customer"] == "alice");
  CHECK(Points(alice, "available") == 698);
  CHECK(Points(alice, "pending") == 500);  // the advocate's reward, pending 30 days
  CHECK(Points(alice, "reserved") == 0);
  CHECK(Points(alice, "lifetime_earned") == 1000 + 123 - 100);
  CHECK(Points(alice, "lifetime_redeemed") == 100 + 300 + 50 - 100);
  CHECK(Points(alice, "lifetime_expired") == 0);
  CHECK(alice["referral_code"] == code_text);
  CHECK(alice["referred_by"].is_null());

  // Entries, newest first, page by page: the same as one page.
  std::vector<Json> paged = AllPages(alice_key, p + "/customers/alice/entries?", 2);
  HttpResult one_page = alice_key.Get(p + "/customers/alice/entries?limit=500");
  REQUIRE(one_page.status == 200);
  Json all_alice = one_page.json()["items"];
  CHECK(one_page.json()["next_cursor"].is_null());
  REQUIRE(paged.size() == all_alice.size());
  std::set<uint64_t> alice_ids;
  for (size_t i = 0; i < paged.size(); ++i) {
    CHECK(paged[i] == all_alice[i]);
    if (i > 0) CHECK(paged[i]["id"].get<uint64_t>() < paged[i - 1]["id"].get<uint64_t>());
    alice_ids.insert(paged[i]["id"].get<uint64_t>());
  }
  for (const Json& w : written) {
    if (w["entry"]["customer"] == "alice") CHECK(alice_ids.count(w["entry"]["id"]) == 1);
  }
  CHECK(alice_ids.count(earn["id"]) == 1);
  CHECK(alice_ids.count(adjustment["id"]) == 1);

  // Lots: what is left of them is the available balance.
  int64_t remaining = 0;
  for (const Json& lot : AllPages(alice_key, p + "/customers/alice/lots?", 1)) {
    CHECK(lot["remaining"].get<int64_t>() > 0);
    CHECK(lot["remaining"].get<int64_t>() <= lot["points"].get<int64_t>());
    remaining += lot["remaining"].get<int64_t>();
  }
  CHECK(remaining == 698);

  // Rewards, read with the customer key: one mug left.
  Json rewards = alice_key.Get(p + "/rewards").json();
  REQUIRE(rewards["items"].size() == 1);
  CHECK(rewards["items"][0] == Json::parse(R"({"id":"mug","name":"Mug","points":300,"stock":1})"));

  // Finance reports.
  HttpResult liability_r = finance.Get(p + "/reports/liability");
  REQUIRE(liability_r.status == 200);
  Json l = liability_r.json();
  INFO("liability " << l.dump());
  auto get = [&l](const char* f) { return l[f].get<int64_t>(); };
  CHECK(get("opening") + get("earned") + get("referral") + get("adjusted") - get("redeemed") -
            get("expired") - get("reversed") ==
        get("closing"));
  CHECK(get("opening") == 0);
  CHECK(get("earned") == 1000 + 123 + 200 + 40);
  CHECK(get("referral") == 250);
  CHECK(get("adjusted") == 25);
  CHECK(get("redeemed") == 100 + 300 + 50);
  CHECK(get("expired") == 40);
  CHECK(get("reversed") == 0);  // 100 clawed back, 100 given back
  CHECK(get("closing") == 698 + 200 + 250);
  CHECK(get("pending") == 500);
  CHECK(l["currency"] == "USD");
  CHECK(get("closing_value_minor") == get("closing"));
  int64_t balances = 0;
  std::set<std::string> rows;
  for (const Json& row : AllPages(finance, p + "/reports/balances?", 2)) {
    balances += row["available"].get<int64_t>() + row["reserved"].get<int64_t>();
    rows.insert(row["customer"].get<std::string>());
  }
  CHECK(balances == get("closing"));
  CHECK(rows.count("alice") == 1);
  CHECK(rows.count("dave") == 1);
  HttpResult activity = finance.Get(p + "/reports/activity?bucket=hour");
  REQUIRE(activity.status == 200);
  int64_t earned = 0, redeemed = 0;
  Json buckets = activity.json()["buckets"];
  REQUIRE_FALSE(buckets.empty());
  for (const Json& b : buckets) {
    earned += b["earned"].get<int64_t>();
    redeemed += b["redeemed"].get<int64_t>();
  }
  CHECK(earned == get("earned"));
  CHECK(redeemed == get("redeemed"));
  CHECK(buckets.back()["closing"] == get("closing"));
  CHECK(finance.Post(p + "/earn", R"({"customer":"alice","points":1})").status == 403);

  // The ledger: public key (the one in DIR/signing.pub), checkpoint, entries, proofs.
  Bytes pub = PublicKey(finance);
  CHECK(pub == RawKeyFromPem(s.data() + "/signing.pub"));
  HttpResult checkpoint_r = finance.Get("/v1/ledger/checkpoint");
  REQUIRE(checkpoint_r.status == 200);
  Json checkpoint = checkpoint_r.json();
  testing::ParsedCheckpoint cp;
  REQUIRE(testing::VerifyCheckpointNote(checkpoint["checkpoint"].get<std::string>(), pub, &cp));
  CHECK(cp.size == checkpoint["size"].get<uint64_t>());
  CHECK(cp.origin == checkpoint["origin"].get<std::string>());
  CHECK(testing::Base64DecodeEvp(checkpoint["root"].get<std::string>()) == cp.root);
  CHECK(cp.size > written.back()["entry"]["id"].get<uint64_t>());

  std::vector<Json> earns = AllPages(finance, "/v1/ledger/entries?program=acme&type=earn", 2);
  CHECK(earns.size() == 5);
  for (const Json& e : earns) CHECK(e["type"] == "earn");

  // Every receipt returned by a write verifies, and so does the same entry read back by id; the
  // tree of each receipt is consistent with today's.
  REQUIRE(written.size() == 17);
  std::vector<Json> read_back;  // the same entries by id, with their holds' states of now
  for (const Json& w : written) {
    CheckReceipt(w, pub);
    const std::string id = std::to_string(w["entry"]["id"].get<uint64_t>());
    HttpResult by_id = checkout.Get("/v1/ledger/entries/" + id);
    REQUIRE(by_id.status == 200);
    Json again = by_id.json();
    CHECK(again["entry"]["id"] == w["entry"]["id"]);
    CHECK(again["entry"]["postings"] == w["entry"]["postings"]);
    CHECK(again["receipt"]["entry"] == w["receipt"]["entry"]);
    CheckReceipt(again, pub);
    read_back.push_back(again);

    uint64_t from = w["receipt"]["tree_size"];
    HttpResult proof = finance.Get("/v1/ledger/consistency?from=" + std::to_string(from) +
                                   "&to=" + std::to_string(cp.size));
    REQUIRE(proof.status == 200);
    Json j = proof.json();
    CHECK(j["from"] == from);
    CHECK(j["to"] == cp.size);
    CHECK(testing::VerifyConsistencyFromRfc(from, cp.size, Hashes(j["proof"]),
                                            ReceiptRoot(w["receipt"], pub), cp.root));
  }
  // The verifier is not vacuous: one changed bit anywhere fails it.
  {
    const Json& w = written.front();
    std::optional<Bytes> entry = testing::Base64DecodeEvp(w["receipt"]["entry"].get<std::string>());
    REQUIRE(entry);
    std::vector<Bytes> proof = Hashes(w["receipt"]["inclusion_proof"]);
    const std::string note = w["receipt"]["checkpoint"];
    const uint64_t index = w["receipt"]["leaf_index"];
    REQUIRE(testing::VerifyReceiptBytes(index, *entry, proof, note, pub));
    Bytes changed = *entry;
    changed[changed.size() / 2] ^= 0x01;
    CHECK_FALSE(testing::VerifyReceiptBytes(index, changed, proof, note, pub));
    if (!proof.empty()) {
      std::vector<Bytes> bad_proof = proof;
      bad_proof.back()[0] ^= 0x01;
      CHECK_FALSE(testing::VerifyReceiptBytes(index, *entry, bad_proof, note, pub));
    }
    CHECK_FALSE(testing::VerifyReceiptBytes(index + 1, *entry, proof, note, pub));
    std::string bad_note = note;
    bad_note[bad_note.find('\n') + 1] ^= 0x01;  // the tree size
    CHECK_FALSE(testing::VerifyReceiptBytes(index, *entry, proof, bad_note, pub));
    Bytes other_key = pub;
    other_key[0] ^= 0x01;
    CHECK_FALSE(testing::VerifyReceiptBytes(index, *entry, proof, note, other_key));
  }
  // The real tally-audit takes each answer with only the public key file, and refuses it once
  // its entry says other than the signed bytes do.
  for (const std::vector<Json>* answers : {&written, &read_back}) {
    for (const Json& w : *answers) {
      const std::string file = s.dir() / "answer.json";
      auto verify = [&](const Json& answer) {
        std::ofstream(file, std::ios::trunc) << answer.dump();
        return Audit(
            {"verify-receipt", "--receipt", file, "--public-key", s.data() + "/signing.pub"});
      };
      testing::CommandResult ok = verify(w);
      INFO(w.dump() << "\n" << ok.output);
      CHECK(ok.exit_code == 0);
      Json edited = w;
      edited["entry"]["points"] = w["entry"]["points"].get<int64_t>() + 1;
      testing::CommandResult bad = verify(edited);
      INFO(bad.output);
      CHECK(bad.exit_code == 1);
    }
  }
  // Every entry of the log, the program and API keys included, has a receipt that verifies.
  for (uint64_t id = 0; id < cp.size; ++id) {
    HttpResult r = admin.Get("/v1/ledger/entries/" + std::to_string(id));
    REQUIRE(r.status == 200);
    CheckReceipt(r.json(), pub);
  }
  CHECK(admin.Get("/v1/ledger/entries/" + std::to_string(cp.size + 100)).status == 404);

  // tally-audit on the directory of the running server, then on the stopped one.
  testing::CommandResult live = Audit({"verify", "--data", s.data()});
  INFO(live.output);
  CHECK(live.exit_code == 0);
  CHECK(s.Stop() == 0);
  testing::CommandResult stopped = Audit({"verify", "--data", s.data()});
  INFO(stopped.output);
  CHECK(stopped.exit_code == 0);
}

TEST_CASE("tallyd expires lots and captures pending earns by itself when their time comes",
          "[e2e]") {
  Server s;
  s.Start({"--due-interval-ms", "200"});
  Api admin = s.Admin();
  REQUIRE(admin.Post("/v1/programs", R"({"id":"shop","name":"Shop"})").status == 201);
  auto soon =
      std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now()) + 3s;
  REQUIRE(admin
              .Post("/v1/programs/shop/earn",
                    Json{{"customer", "ann"}, {"points", 40}, {"expires_at", Rfc3339(soon)}})
              .status == 201);
  HttpResult held =
      admin.Post("/v1/programs/shop/earn",
                 Json{{"customer", "ben"}, {"points", 15}, {"pending_until", Rfc3339(soon)}});
  REQUIRE(held.status == 201);
  CHECK(held.json()["entry"]["hold"]["state"] == "pending");
  Json ann, ben;
  auto deadline = Clock::now() + 15s;
  do {
    std::this_thread::sleep_for(200ms);
    ann = admin.Get("/v1/programs/shop/customers/ann").json();
    ben = admin.Get("/v1/programs/shop/customers/ben").json();
  } while ((ann["lifetime_expired"] != 40 || ben["available"] != 15) && Clock::now() < deadline);
  CHECK(ann["available"] == 0);
  CHECK(ann["lifetime_expired"] == 40);
  CHECK(ben["available"] == 15);
  CHECK(ben["pending"] == 0);
  Json expiries = admin.Get("/v1/ledger/entries?type=expiry").json();
  REQUIRE(expiries["items"].size() == 1);
  CHECK(expiries["items"][0]["customer"] == "ann");
  CHECK(s.Stop() == 0);
}

// ---------------------------------------------------------------------------------------------
// 2: idempotency.

TEST_CASE("Idempotent replays over HTTP return the same status and bytes and write nothing",
          "[e2e]") {
  Server s;
  s.Start();
  Api admin = s.Admin();
  REQUIRE(admin.Post("/v1/programs", R"({"id":"shop","name":"Shop"})").status == 201);
  Api checkout = s.MakeClient("checkout");
  const std::string earn = "/v1/programs/shop/earn";
  auto available = [&](const std::string& c) {
    return admin.Get("/v1/programs/shop/customers/" + c).json()["available"].get<int64_t>();
  };
  auto entries_of = [&](const std::string& c) {
    return admin.Get("/v1/programs/shop/customers/" + c + "/entries?limit=500")
        .json()["items"]
        .size();
  };

  const std::string body = R"({"customer":"ann","points":10,"order_id":"o-1"})";
  HttpResult first = checkout.Post(earn, body, "earn-1");
  REQUIRE(first.status == 201);
  CHECK_FALSE(first.HasHeader("idempotency-replayed"));
  HttpResult replay = checkout.Post(earn, body, "earn-1");
  CHECK(replay.status == 201);
  CHECK(replay.body == first.body);
  CHECK(replay.Header("idempotency-replayed") == "true");
  CHECK(available("ann") == 10);
  CHECK(entries_of("ann") == 1);

  HttpResult reused =
      checkout.Post(earn, R"({"customer":"ann","points":11,"order_id":"o-1"})", "earn-1");
  CHECK(reused.status == 422);
  CHECK(reused.code() == "idempotency_key_reused");
  CHECK(reused.Header("content-type") == "application/problem+json");
  HttpResult missing = checkout.Post(earn, body, kNoIdempotencyKey);
  CHECK(missing.status == 400);
  CHECK(missing.code() == "idempotency_key_required");
  // A space is printable ASCII: the key is accepted, and the order is already awarded.
  CHECK(checkout.Post(earn, body, "two words").code() == "order_already_awarded");
  CHECK(checkout.Post(earn, body, std::string(256, 'k')).code() == "idempotency_key_required");
  CHECK(available("ann") == 10);

  // Keys are scoped to the API key: the same one from another key is another request (here
  // refused because the order was awarded).
  CHECK(admin.Post(earn, body, "earn-1").code() == "order_already_awarded");
  HttpResult other_key = admin.Post(earn, R"({"customer":"ann","points":10})", "earn-1");
  CHECK(other_key.status == 201);
  CHECK_FALSE(other_key.replayed());
  CHECK(available("ann") == 20);

  // A failed request stores nothing: the same key and body succeed later.
  const std::string redeem = R"({"customer":"ann","points":50})";
  CHECK(checkout.Post("/v1/programs/shop/redeem", redeem, "redeem-1").code() ==
        "insufficient_points");
  REQUIRE(checkout.Post(earn, R"({"customer":"ann","points":40})").status == 201);
  HttpResult later = checkout.Post("/v1/programs/shop/redeem", redeem, "redeem-1");
  CHECK(later.status == 201);
  CHECK_FALSE(later.replayed());
  CHECK(available("ann") == 10);

  // Other writes replay too: a program, an API key (the same key again), an expiry run.
  HttpResult program = admin.Post("/v1/programs", R"({"id":"shop2","name":"Shop 2"})", "prog-2");
  HttpResult program_again =
      admin.Post("/v1/programs", R"({"id":"shop2","name":"Shop 2"})", "prog-2");
  CHECK(program.status == 201);
  CHECK(program_again.status == 201);
  CHECK(program_again.body == program.body);
  CHECK(program_again.replayed());
  HttpResult key = admin.Post("/v1/api-keys", R"({"role":"finance","name":"books"})", "key-1");
  HttpResult key_again =
      admin.Post("/v1/api-keys", R"({"role":"finance","name":"books"})", "key-1");
  CHECK(key.status == 201);
  CHECK(key_again.body == key.body);
  CHECK(key_again.replayed());

  // 16 concurrent duplicates: one entry, 16 identical answers.
  constexpr int kThreads = 16;
  const std::string dup_body = R"({"customer":"conc","points":7})";
  std::vector<HttpResult> results(kThreads);
  std::vector<std::unique_ptr<Connection>> connections;
  for (int i = 0; i < kThreads; ++i) {
    connections.push_back(std::make_unique<Connection>(s.port()));
    REQUIRE(connections.back()->connected());
  }
  std::mutex mu;
  std::condition_variable cv;
  int waiting = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      {
        std::unique_lock<std::mutex> lock(mu);
        if (++waiting == kThreads) cv.notify_all();
        cv.wait(lock, [&] { return waiting == kThreads; });
      }
      if (connections[i]->Send(RequestText("POST", earn, checkout.key(), dup_body, "dup-1"))) {
        results[i] = connections[i]->ReadResponse();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  int fresh = 0;
  for (const HttpResult& r : results) {
    INFO(r.status << " " << r.body);
    CHECK(r.status == 201);
    CHECK(r.body == results[0].body);
    if (!r.replayed()) ++fresh;
  }
  CHECK(fresh == 1);
  CHECK(available("conc") == 7);
  CHECK(entries_of("conc") == 1);
  CHECK(admin.Get("/v1/ledger/entries?program=shop&type=earn&limit=500").json()["items"].size() ==
        4);
  CHECK(s.Stop() == 0);
}

// ---------------------------------------------------------------------------------------------
// 3: roles and keys.

TEST_CASE("Over HTTP each role gets 2xx exactly where the role table allows it", "[e2e]") {
  Server s;
  s.Start();
  Api admin = s.Admin();
  REQUIRE(admin.Post("/v1/programs", R"({"id":"acme","name":"Acme","referral":{}})").status == 201);
  REQUIRE(admin.Post("/v1/programs/acme/earn", R"({"customer":"alice","points":100})").status ==
          201);
  std::map<std::string, Api> roles = {{"admin", admin},
                                      {"checkout", s.MakeClient("checkout")},
                                      {"finance", s.MakeClient("finance")},
                                      {"customer", s.MakeClient("customer", "acme", "alice")}};
  struct Probe {
    std::string method, target, body;
    std::set<std::string> allowed;
  };
  const std::vector<Probe> probes = {
      {"POST", "/v1/programs", R"({"id":"p-ROLE","name":"x"})", {"admin"}},
      {"GET", "/v1/programs/acme", "", {"admin", "checkout", "finance"}},
      {"GET",
       "/v1/programs/acme/customers/alice",
       "",
       {"admin", "checkout", "finance", "customer"}},
      {"GET",
       "/v1/programs/acme/customers/alice/lots",
       "",
       {"admin", "checkout", "finance", "customer"}},
      {"POST",
       "/v1/programs/acme/earn",
       R"({"customer":"alice","points":1})",
       {"admin", "checkout"}},
      {"POST",
       "/v1/programs/acme/redeem",
       R"({"customer":"alice","points":1})",
       {"admin", "checkout"}},
      {"POST",
       "/v1/programs/acme/adjustments",
       R"({"customer":"alice","points":1,"reason":"r"})",
       {"admin"}},
      {"POST", "/v1/programs/acme/rewards", R"({"id":"r-ROLE","name":"x","points":5})", {"admin"}},
      {"GET", "/v1/programs/acme/rewards", "", {"admin", "checkout", "customer"}},
      {"POST",
       "/v1/programs/acme/referral-codes",
       R"({"advocate":"alice"})",
       {"admin", "checkout", "customer"}},
      {"GET", "/v1/programs/acme/reports/liability", "", {"admin", "finance"}},
      {"POST", "/v1/api-keys", R"({"role":"finance","name":"ROLE"})", {"admin"}},
      {"GET", "/v1/ledger/checkpoint", "", {"admin", "checkout", "finance"}},
      {"GET", "/v1/ledger/entries", "", {"admin", "finance"}},
      {"GET", "/v1/admin/replication", "", {"admin"}},
  };
  for (const Probe& probe : probes) {
    for (const auto& [role, api] : roles) {
      std::string body = probe.body;
      if (size_t at = body.find("ROLE"); at != std::string::npos) body.replace(at, 4, role);
      HttpResult r = api.Send(probe.method, probe.target, body);
      INFO(role << " " << probe.method << " " << probe.target << " -> " << r.status << " "
                << r.body);
      if (probe.allowed.count(role) != 0) {
        CHECK(r.status / 100 == 2);
      } else {
        CHECK(r.status == 403);
        CHECK(r.code() == "forbidden");
      }
    }
    HttpResult anonymous = s.Anonymous().Send(probe.method, probe.target, probe.body);
    CHECK(anonymous.status == 401);
    CHECK(anonymous.code() == "unauthorized");
    CHECK(anonymous.Header("www-authenticate") == "Bearer");
    CHECK(s.As("no-such-key").Send(probe.method, probe.target, probe.body).status == 401);
  }
  CHECK(s.Stop() == 0);
}

TEST_CASE("Over HTTP a customer key sees nothing of other customers, and revoked keys are 401",
          "[e2e]") {
  Server s;
  s.Start();
  Api admin = s.Admin();
  for (const char* id : {"acme", "other"}) {
    REQUIRE(admin.Post("/v1/programs", Json{{"id", id}, {"name", id}, {"referral", Json::object()}})
                .status == 201);
  }
  for (const char* c : {"alice", "bob"}) {
    REQUIRE(admin.Post("/v1/programs/acme/earn", Json{{"customer", c}, {"points", 100}}).status ==
            201);
  }
  REQUIRE(admin.Post("/v1/programs/other/earn", R"({"customer":"alice","points":100})").status ==
          201);
  HttpResult bob_code = admin.Post("/v1/programs/acme/referral-codes", R"({"advocate":"bob"})");
  REQUIRE(bob_code.status == 201);
  const std::string bob_code_text = bob_code.json()["code"];
  Api alice = s.MakeClient("customer", "acme", "alice");

  const std::string p = "/v1/programs/acme";
  for (const std::string& own :
       {p + "/customers/alice", p + "/customers/alice/entries", p + "/customers/alice/lots"}) {
    INFO(own);
    CHECK(alice.Get(own).status == 200);
  }
  CHECK(alice.Post(p + "/referral-codes", R"({"advocate":"alice"})").status == 201);
  for (const std::string& theirs :
       {p + "/customers/bob", p + "/customers/bob/entries", p + "/customers/bob/lots",
        p + "/referral-codes/" + bob_code_text, std::string("/v1/programs/other/customers/alice"),
        std::string("/v1/programs/other/customers/alice/lots")}) {
    INFO(theirs);
    HttpResult r = alice.Get(theirs);
    CHECK(r.status == 404);
  }
  CHECK(alice.Post(p + "/referral-codes", R"({"advocate":"bob"})").status == 404);
  CHECK(alice.Post("/v1/programs/other/referral-codes", R"({"advocate":"alice"})").status == 404);

  // Revocation takes effect at once, even on a connection opened before it.
  Json made = s.MakeKey({{"role", "checkout"}, {"name", "till 3"}});
  const std::string key = made["key"], id = made["id"];
  Connection open(s.port());
  REQUIRE(open.Send(RequestText("GET", "/v1/programs/acme", key, "", "")));
  CHECK(open.ReadResponse().status == 200);
  CHECK(admin.Delete("/v1/api-keys/" + id).status == 204);
  REQUIRE(open.Send(RequestText("GET", "/v1/programs/acme", key, "", "")));
  HttpResult refused = open.ReadResponse();
  CHECK(refused.status == 401);
  CHECK(refused.code() == "unauthorized");
  CHECK(s.As(key).Post(p + "/earn", R"({"customer":"alice","points":1})").status == 401);
  CHECK(admin.Delete("/v1/api-keys/" + id).status == 204);
  CHECK(s.MakeClient("checkout").Delete("/v1/api-keys/" + id).status == 403);
  CHECK(s.Stop() == 0);
}

// ---------------------------------------------------------------------------------------------
// 4: hardening, over raw sockets.

// Sends `request` on a new connection; expects `status` with `code` and then the close.
void ExpectRejectedAndClosed(uint16_t port, const std::string& request, int status,
                             const std::string& code) {
  Connection c(port);
  REQUIRE(c.connected());
  c.Send(request);  // may fail part way: the server may answer and close early
  HttpResult r = c.ReadResponse(10s);
  INFO(request.substr(0, 200) << " -> " << r.status << " " << r.body);
  CHECK(r.status == status);
  CHECK(r.code() == code);
  CHECK(r.Header("content-type") == "application/problem+json");
  CHECK(c.WaitClosed(5s));
}

TEST_CASE("tallyd rejects oversized, ambiguous and malformed requests over raw sockets", "[e2e]") {
  Server s;
  s.Start({"--read-timeout-ms", "1000"});
  Api admin = s.Admin();
  REQUIRE(admin.Post("/v1/programs", R"({"id":"shop","name":"Shop"})").status == 201);
  const std::string head =
      "POST /v1/programs/shop/earn HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + kAdminKey +
      "\r\nIdempotency-Key: raw-1\r\nContent-Type: application/json\r\n";

  // A body over 1 MiB: 413 as soon as Content-Length shows it, body unread.
  ExpectRejectedAndClosed(s.port(), head + "Content-Length: 1048577\r\n\r\n", 413,
                          "payload_too_large");
  {
    // Exactly 1 MiB passes the framing (and fails as JSON: the description is too long).
    std::string body = R"({"customer":"a","points":1,"description":")";
    body += std::string((1 << 20) - body.size() - 2, 'x') + "\"}";
    REQUIRE(body.size() == (1u << 20));
    Connection c(s.port());
    REQUIRE(c.Send(head + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
    HttpResult r = c.ReadResponse(10s);
    CHECK(r.status == 400);
  }
  // Headers over 16 KiB.
  ExpectRejectedAndClosed(
      s.port(),
      "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: " + std::string(17000, 'a') + "\r\n\r\n", 431,
      "request_header_fields_too_large");
  // Framing: gzip, Content-Length with Transfer-Encoding, two Content-Lengths.
  ExpectRejectedAndClosed(s.port(), head + "Transfer-Encoding: gzip\r\n\r\n", 400, "bad_request");
  ExpectRejectedAndClosed(s.port(),
                          head + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                          400, "bad_request");
  ExpectRejectedAndClosed(s.port(), head + "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400,
                          "bad_request");

  // Bodies that are not acceptable JSON: 400 problem+json.
  auto post_body = [&](const std::string& body) {
    return admin.Post("/v1/programs/shop/earn", body);
  };
  for (const std::string& bad :
       {std::string(R"({"customer":"a","points":1)"),
        std::string(R"({"customer":"a","points":1,})"), std::string("not json"), std::string("")}) {
    INFO(bad);
    HttpResult r = post_body(bad);
    CHECK(r.status == 400);
    CHECK(r.code() == "bad_request");
    CHECK(r.Header("content-type") == "application/problem+json");
  }
  std::string deep = R"({"customer":"a","points":1,"description":)" + std::string(64, '[') +
                     std::string(64, ']') + "}";
  HttpResult too_deep = post_body(deep);
  CHECK(too_deep.status == 400);
  CHECK(too_deep.Header("content-type") == "application/problem+json");
  CHECK_THAT(too_deep.body, Catch::Contains("nested"));
  HttpResult bad_utf8 =
      post_body("{\"customer\":\"a\",\"points\":1,\"description\":\"caf\xC3\x28\"}");
  CHECK(bad_utf8.status == 400);
  CHECK(bad_utf8.code() == "bad_request");
  HttpResult overlong = post_body("{\"customer\":\"a\",\"points\":1,\"description\":\"\xC0\xAF\"}");
  CHECK(overlong.status == 400);

  // A slow client (half a header, then nothing) is dropped within the 1 s read timeout.
  {
    Connection slow(s.port());
    REQUIRE(slow.Send("GET /healthz HTTP/1.1\r\nHost: t\r\n"));
    auto start = Clock::now();
    CHECK(slow.WaitClosed(5s));
    auto elapsed = Clock::now() - start;
    CHECK(elapsed >= 800ms);
    CHECK(elapsed < 3s);
    CHECK(slow.buffered().empty());
  }
  {
    Connection silent(s.port());
    auto start = Clock::now();
    CHECK(silent.WaitClosed(5s));
    CHECK(Clock::now() - start < 3s);
  }
  // Nothing written by any of the above; the server still serves.
  CHECK(admin.Get("/v1/programs/shop/customers/a").status == 404);
  CHECK(admin.Get("/healthz").status == 200);
  CHECK(s.Stop() == 0);
}

TEST_CASE("A new client of tallyd is served while 300 idle connections are open", "[e2e]") {
  Server s;
  s.Start();
  std::vector<std::unique_ptr<Connection>> idle;
  for (int i = 0; i < 300; ++i) {
    idle.push_back(std::make_unique<Connection>(s.port()));
    REQUIRE(idle.back()->connected());
  }
  // Some kept alive after a request, the rest never sent a byte.
  for (int i = 0; i < 10; ++i) {
    REQUIRE(idle[i]->Send(RequestText("GET", "/healthz", "", "", "")));
    REQUIRE(idle[i]->ReadResponse(5s).status == 200);
  }
  auto start = Clock::now();
  HttpResult fresh = s.Admin().Get("/v1/programs");
  CHECK(fresh.status == 200);
  CHECK(Clock::now() - start < 2s);
  // The idle connections are still usable.
  REQUIRE(idle[299]->Send(RequestText("GET", "/readyz", "", "", "")));
  CHECK(idle[299]->ReadResponse(5s).status == 200);
  idle.clear();
  CHECK(s.Stop() == 0);
}

TEST_CASE("tallyd allocates with tcmalloc, except in sanitizer builds", "[e2e]") {
  Server s;
  s.Start();
  std::string maps = testing::ReadWholeFile("/proc/" + std::to_string(s.process().pid()) + "/maps");
  REQUIRE_FALSE(maps.empty());
  bool tcmalloc = maps.find("/libtcmalloc_minimal.so") != std::string::npos;
#ifdef TALLYD_TCMALLOC
  CHECK(tcmalloc);
#else
  CHECK_FALSE(tcmalloc);  // the sanitizer runtime's allocator
#endif
  CHECK(s.Stop() == 0);
}

// ---------------------------------------------------------------------------------------------
// 5: restarts.

TEST_CASE("After SIGTERM and a restart balances, idempotency keys and the key pair are kept",
          "[e2e]") {
  Server s;
  s.Start();
  Api admin = s.Admin();
  REQUIRE(admin.Post("/v1/programs", R"({"id":"shop","name":"Shop","expiry_days":30})").status ==
          201);
  Json checkout_key = s.MakeKey({{"role", "checkout"}, {"name", "till"}});
  const std::string body = R"({"customer":"ann","points":120,"order_id":"o-1"})";
  HttpResult first = s.As(checkout_key["key"]).Post("/v1/programs/shop/earn", body, "restart-1");
  REQUIRE(first.status == 201);
  REQUIRE(s.As(checkout_key["key"])
              .Post("/v1/programs/shop/redeem", R"({"customer":"ann","points":20})")
              .status == 201);
  HttpResult ann_before = admin.Get("/v1/programs/shop/customers/ann");
  HttpResult key_before = admin.Get("/v1/ledger/public-key");
  HttpResult checkpoint_before = admin.Get("/v1/ledger/checkpoint");
  REQUIRE(ann_before.status == 200);
  REQUIRE(key_before.status == 200);
  std::string signing_key = testing::ReadWholeFile(s.data() + "/signing.key");

  CHECK(s.Stop() == 0);
  s.Start();
  admin = s.Admin();                         // the new port
  Api checkout = s.As(checkout_key["key"]);  // API keys survive too
  HttpResult ann_after = checkout.Get("/v1/programs/shop/customers/ann");
  CHECK(ann_after.status == 200);
  CHECK(ann_after.body == ann_before.body);
  CHECK(ann_after.json()["available"] == 100);
  HttpResult replay = checkout.Post("/v1/programs/shop/earn", body, "restart-1");
  CHECK(replay.status == 201);
  CHECK(replay.body == first.body);
  CHECK(replay.Header("idempotency-replayed") == "true");
  CHECK(checkout.Post("/v1/programs/shop/earn", R"({"customer":"ann","points":1})", "restart-1")
            .code() == "idempotency_key_reused");
  CHECK(admin.Get("/v1/ledger/public-key").body == key_before.body);
  CHECK(admin.Get("/v1/ledger/checkpoint").body == checkpoint_before.body);
  CHECK(testing::ReadWholeFile(s.data() + "/signing.key") == signing_key);
  CheckReceipt(first.json(), PublicKey(admin));
  CHECK(s.Stop() == 0);
  testing::CommandResult audit = Audit({"verify", "--data", s.data()});
  INFO(audit.output);
  CHECK(audit.exit_code == 0);
}

TEST_CASE("After SIGKILL during writes and a restart every acknowledged write is there", "[e2e]") {
  Server s;
  s.Start();
  Api admin = s.Admin();
  REQUIRE(admin.Post("/v1/programs", R"({"id":"shop","name":"Shop"})").status == 201);
  Api checkout = s.MakeClient("checkout");

  struct Acked {
    std::string idempotency_key, body;
    HttpResult response;
  };
  constexpr int kThreads = 8;
  std::mutex mu;
  std::vector<Acked> acked;
  std::atomic<int> acked_count{0};
  std::atomic<bool> killed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000 && !killed.load(); ++i) {
        std::string key = "kill-" + std::to_string(t) + "-" + std::to_string(i);
        std::string body = Json{{"customer", "c" + std::to_string(t)}, {"points", i + 1}}.dump();
        HttpResult r = checkout.Post("/v1/programs/shop/earn", body, key);
        if (r.status == 0) break;  // tallyd is gone
        if (r.status == 201) {
          std::lock_guard<std::mutex> lock(mu);
          acked.push_back({key, body, r});
          acked_count.fetch_add(1);
        }
      }
    });
  }
  // Kill while the writers are busy.
  auto deadline = Clock::now() + 30s;
  while (acked_count.load() < 200 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  int code = s.Kill();
  killed = true;
  for (std::thread& t : threads) t.join();
  CHECK(code == 128 + SIGKILL);
  REQUIRE(acked.size() >= 200);
  INFO(acked.size() << " writes acknowledged before the kill");

  s.Start();
  checkout = s.As(checkout.key());
  Api admin2 = s.Admin();
  Bytes pub = PublicKey(admin2);
  std::map<std::string, int64_t> acked_points;
  for (const Acked& a : acked) {
    INFO(a.idempotency_key << " " << a.response.body);
    Json written = a.response.json();
    CheckReceipt(written, pub);
    const std::string id = std::to_string(written["entry"]["id"].get<uint64_t>());
    HttpResult stored = admin2.Get("/v1/ledger/entries/" + id);
    REQUIRE(stored.status == 200);
    CHECK(stored.json()["receipt"]["entry"] == written["receipt"]["entry"]);
    acked_points[written["entry"]["customer"]] += written["entry"]["points"].get<int64_t>();
  }
  // Replays answer the acknowledged bytes (a few, to keep the test short).
  for (size_t i = 0; i < acked.size(); i += acked.size() / 10) {
    const Acked& a = acked[i];
    HttpResult replay = checkout.Post("/v1/programs/shop/earn", a.body, a.idempotency_key);
    CHECK(replay.status == 201);
    CHECK(replay.body == a.response.body);
    CHECK(replay.replayed());
  }
  for (const auto& [c, points] : acked_points) {
    Json view = admin2.Get("/v1/programs/shop/customers/" + c).json();
    CHECK(view["available"].get<int64_t>() >= points);  // unacknowledged writes may be there too
  }
  CHECK(s.Stop() == 0);
  testing::CommandResult audit = Audit({"verify", "--data", s.data()});
  INFO(audit.output);
  CHECK(audit.exit_code == 0);
}

TEST_CASE("Backups asked of tallyd under write load verify, and hold every acknowledged write",
          "[e2e]") {
  Server s;
  s.Start();
  Api admin = s.Admin();
  REQUIRE(admin.Post("/v1/programs", R"({"id":"shop","name":"Shop"})").status == 201);
  Api checkout = s.MakeClient("checkout");
  const int64_t base = admin.Get("/v1/ledger/checkpoint").json()["size"].get<int64_t>();
  constexpr int kThreads = 8;
  std::atomic<int> acked{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        Json body = {{"customer", "c" + std::to_string(t)}, {"points", 1}};
        if (checkout.Post("/v1/programs/shop/earn", body).status == 201) acked.fetch_add(1);
      }
    });
  }
  // tally-audit cannot copy a running tallyd's files safely, so it refuses.
  testing::CommandResult refused = Audit({"backup", "--data", s.data(), "--out", s.dir() / "cli"});
  INFO(refused.output);
  CHECK(refused.exit_code == 2);
  CHECK(refused.output.find("POST /v1/admin/backups") != std::string::npos);

  struct Made {
    int acked_before;
    HttpResult response;
  };
  std::vector<Made> made;
  for (int i = 0; i < 4; ++i) {
    int before = acked.load();
    auto deadline = Clock::now() + 30s;
    while (acked.load() < before + 100 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
    int acked_before = acked.load();
    made.push_back({acked_before, admin.Post("/v1/admin/backups", "{}")});
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  CHECK(s.Stop() == 0);
  for (const Made& m : made) {
    INFO(m.response.body);
    REQUIRE(m.response.status == 201);
    Json b = m.response.json();
    CHECK(b["size"].get<int64_t>() >= base + m.acked_before);
    testing::CommandResult audit = Audit({"verify", "--data", b["path"].get<std::string>(),
                                          "--public-key", s.data() + "/signing.pub"});
    INFO(audit.output);
    CHECK(audit.exit_code == 0);
    CHECK(audit.output.find(std::to_string(b["size"].get<int64_t>()) + " entries") !=
          std::string::npos);
  }
  // Stopped, the directory is the audit tool's to back up.
  testing::CommandResult stopped =
      Audit({"backup", "--data", s.data(), "--out", s.dir() / "stopped"});
  INFO(stopped.output);
  CHECK(stopped.exit_code == 0);
}

// ---------------------------------------------------------------------------------------------
// The process itself.

TEST_CASE("tallyd exits 0 on SIGINT, 2 on bad flags and 1 when its port is taken", "[e2e]") {
  Server s;
  s.Start();
  testing::CommandResult help = testing::RunCommand({TALLYD_PATH, "--help"});
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.output, Catch::Contains("--read-timeout-ms"));
  for (std::vector<std::string> args :
       {std::vector<std::string>{TALLYD_PATH, "--bogus", "1"},
        std::vector<std::string>{TALLYD_PATH, "--data", s.dir() / "x", "--listen", "127.0.0.1:0",
                                 "--read-timeout-ms", "0"},
        std::vector<std::string>{TALLYD_PATH, "--listen", "127.0.0.1:0"}}) {
    testing::CommandResult bad = testing::RunCommand(args);
    INFO(bad.output);
    CHECK(bad.exit_code == 2);
    CHECK(bad.output.rfind("tallyd: ", 0) == 0);
    CHECK(bad.output.find('\n') == bad.output.size() - 1);
  }
  testing::CommandResult taken =
      testing::RunCommand({TALLYD_PATH, "--data", s.dir() / "other", "--listen",
                           "127.0.0.1:" + std::to_string(s.port())});
  INFO(taken.output);
  CHECK(taken.exit_code == 1);
  CHECK(taken.output.find('\n') == taken.output.size() - 1);
  CHECK(s.process().Signal(SIGINT, 30s) == 0);
}

}  // namespace tally
