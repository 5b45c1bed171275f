// Helpers shared by the reliability tests (tests/crash/): a tallyd that is killed and restarted
// on one data directory while clients keep going, paging through lists, the canonical entry's
// leading fields, and receipts checked with the independent verifier.
#ifndef TALLY_TESTS_CRASH_CRASH_UTIL_H_
#define TALLY_TESTS_CRASH_CRASH_UTIL_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/crash/http_client.h"
#include "tests/e2e/tallyd_process.h"
#include "tests/receipt_verifier.h"

namespace tally::testing {

using Json = nlohmann::json;

// A positive integer from the environment, or `fallback`.
inline int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int n = v == nullptr ? 0 : std::atoi(v);
  return n > 0 ? n : fallback;
}

// The tallyd under test: started, killed and restarted on one data directory. Client threads
// read port(): 0 while it is down.
class RestartingTallyd {
 public:
  RestartingTallyd(std::string binary, std::string data_dir, std::string admin_key,
                   std::string log_file, std::vector<std::string> args = {})
      : binary_(std::move(binary)),
        data_dir_(std::move(data_dir)),
        admin_key_(std::move(admin_key)),
        log_file_(std::move(log_file)),
        args_(std::move(args)) {}

  // Starts a new process (the previous one must be gone). False if it did not come up.
  bool Start() {
    proc_ = std::make_unique<TallydProcess>(binary_, data_dir_, admin_key_, log_file_, args_,
                                            start_timeout_);
    if (!proc_->started()) return false;
    port_ = proc_->port();
    return true;
  }
  // SIGKILL: the port reads 0 first, so clients wait for the next start.
  int Kill() {
    port_ = 0;
    return proc_ ? proc_->Kill() : -1;
  }
  // SIGTERM; tallyd should exit 0.
  int Stop() {
    port_ = 0;
    return proc_ ? proc_->Stop() : -1;
  }
  // How long Start waits for the "tallyd listening on" line (default 30 s).
  void set_start_timeout(std::chrono::milliseconds t) { start_timeout_ = t; }
  uint16_t port() const { return port_; }
  pid_t pid() const { return proc_ ? proc_->pid() : -1; }
  bool running() const { return proc_ && proc_->running(); }
  std::string log() const { return ReadWholeFile(log_file_); }

 private:
  std::string binary_, data_dir_, admin_key_, log_file_;
  std::vector<std::string> args_;
  std::chrono::milliseconds start_timeout_ = std::chrono::seconds(30);
  std::unique_ptr<TallydProcess> proc_;
  std::atomic<uint16_t> port_{0};
};

// GET until an answer that is not "no answer" or 503, for up to `patience`.
inline HttpReply GetAnswered(HttpClient& client, const RestartingTallyd& server,
                             const std::string& target,
                             std::chrono::milliseconds patience = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  for (;;) {
    uint16_t port = server.port();
    HttpReply r;
    if (port != 0) r = client.Send(port, "GET", target);
    if ((r.status != 0 && r.status != 503) || std::chrono::steady_clock::now() > deadline) return r;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Every item of a paginated list (`target` without limit and cursor). nullopt if a page failed.
inline std::optional<std::vector<Json>> GetAllPages(HttpClient& client,
                                                    const RestartingTallyd& server,
                                                    const std::string& target) {
  std::vector<Json> items;
  std::string cursor;
  const char sep = target.find('?') == std::string::npos ? '?' : '&';
  for (;;) {
    std::string t = target + sep + "limit=500";
    if (!cursor.empty()) t += "&cursor=" + cursor;
    HttpReply r = GetAnswered(client, server, t);
    if (r.status != 200) return std::nullopt;
    Json j = Json::parse(r.body, nullptr, false);
    if (!j.is_object() || !j["items"].is_array()) return std::nullopt;
    for (Json& item : j["items"]) items.push_back(std::move(item));
    if (!j["next_cursor"].is_string()) return items;
    cursor = j["next_cursor"].get<std::string>();
  }
}

// The leading fields of a canonical entry (docs/format.md, version 1), decoded independently
// of the ledger's code: enough to tie every entry to the request that wrote it.
struct EntryHead {
  uint64_t id = 0;
  int64_t time_us = 0;
  int type = 0;
  std::string program, actor, idempotency_key, customer, order_id;
};

inline std::optional<EntryHead> DecodeEntryHead(std::string_view b) {
  size_t at = 0;
  auto u64 = [&](int bytes) -> std::optional<uint64_t> {
    if (b.size() - at < static_cast<size_t>(bytes)) return std::nullopt;
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(b[at++]);
    return v;
  };
  auto str8 = [&]() -> std::optional<std::string> {
    auto n = u64(1);
    if (!n || b.size() - at < *n) return std::nullopt;
    std::string s(b.substr(at, *n));
    at += *n;
    return s;
  };
  EntryHead h;
  auto version = u64(1);
  auto id = u64(8);
  auto time = u64(8);
  auto type = u64(1);
  if (!version || *version != 1 || !id || !time || !type) return std::nullopt;
  h.id = *id;
  h.time_us = static_cast<int64_t>(*time);
  h.type = static_cast<int>(*type);
  auto program = str8(), actor = str8(), key = str8();
  if (!program || !actor || !key || b.size() - at < 32) return std::nullopt;
  at += 32;  // request hash
  auto customer = str8(), order = str8();
  if (!customer || !order) return std::nullopt;
  h.program = *program;
  h.actor = *actor;
  h.idempotency_key = *key;
  h.customer = *customer;
  h.order_id = *order;
  return h;
}

// Checks a receipt as JSON (API.md) under the raw Ed25519 key `pub` with the independent
// verifier; on success stores the decoded entry bytes in `entry_bytes`.
inline bool VerifyReceiptJson(const Json& receipt, const Bytes& pub, std::string* entry_bytes) {
  if (!receipt.is_object() || !receipt["leaf_index"].is_number_unsigned() ||
      !receipt["entry"].is_string() || !receipt["inclusion_proof"].is_array() ||
      !receipt["checkpoint"].is_string()) {
    return false;
  }
  std::optional<Bytes> entry = Base64DecodeEvp(receipt["entry"].get<std::string>());
  if (!entry) return false;
  std::vector<Bytes> proof;
  for (const Json& p : receipt["inclusion_proof"]) {
    if (!p.is_string()) return false;
    std::optional<Bytes> h = Base64DecodeEvp(p.get<std::string>());
    if (!h || h->size() != 32) return false;
    proof.push_back(*h);
  }
  std::optional<uint64_t> tree_size;
  if (receipt.contains("tree_size")) tree_size = receipt["tree_size"].get<uint64_t>();
  if (!VerifyReceiptBytes(receipt["leaf_index"].get<uint64_t>(), *entry, proof,
                          receipt["checkpoint"].get<std::string>(), pub, tree_size)) {
    return false;
  }
  *entry_bytes = std::move(*entry);
  return true;
}

// The ledger's raw public key from GET /v1/ledger/public-key, or "".
inline Bytes FetchPublicKey(HttpClient& client, const RestartingTallyd& server) {
  HttpReply r = GetAnswered(client, server, "/v1/ledger/public-key");
  Json j = Json::parse(r.body, nullptr, false);
  if (r.status != 200 || !j.is_object() || !j["public_key"].is_string()) return "";
  return Base64DecodeEvp(j["public_key"].get<std::string>()).value_or("");
}

// Thread-safe list of failures found by client threads, reported by the test at the end.
class Failures {
 public:
  void Add(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (list_.size() < 50) list_.push_back(std::move(what));
    ++count_;
  }
  std::vector<std::string> list() const {
    std::lock_guard<std::mutex> lock(mu_);
    return list_;
  }
  size_t count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> list_;
  size_t count_ = 0;
};

}  // namespace tally::testing

#endif  // TALLY_TESTS_CRASH_CRASH_UTIL_H_
