#include "tests/fuzz/fuzz_server.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

namespace tally::fuzz {
namespace {

using Json = nlohmann::json;

constexpr int64_t kStart = 1'767'225'600 * kMicrosPerSecond;  // 2026-01-01T00:00:00Z

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "fuzz server setup: %s\n", why.c_str());
  std::abort();
}

std::string MakeTempDir() {
  std::error_code ec;
  std::filesystem::path base =
      std::filesystem::is_directory("/dev/shm", ec) && access("/dev/shm", W_OK) == 0
          ? std::filesystem::path("/dev/shm")
          : std::filesystem::temp_directory_path();
  std::string tmpl = (base / "tally-fuzz-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp failed");
  return tmpl;
}

// The directory to remove at exit (the server itself is never destroyed).
std::string* g_dir = nullptr;

void RemoveDir() {
  std::error_code ec;
  if (g_dir != nullptr) std::filesystem::remove_all(*g_dir, ec);
}

std::atomic<uint64_t> g_requests{0};

}  // namespace

FuzzServer& FuzzServer::Get() {
  static FuzzServer* server = new FuzzServer();
  return *server;
}

FuzzServer::FuzzServer() : dir_(MakeTempDir()), clock_(kStart) {
  g_dir = new std::string(dir_);
  std::atexit(RemoveDir);
  LedgerOptions o;
  o.dir = dir_;
  o.clock = &clock_;
  auto ledger = Ledger::Open(o);
  if (!ledger.ok()) Die(ledger.status().ToString());
  ledger_ = std::move(ledger).value();
  loyalty_ = std::make_unique<Loyalty>(ledger_.get(), LoyaltyOptions{std::string(32, 'f')});
  RouterOptions ro;
  ro.admin_key = std::string(kAdminKey);
  router_ = std::make_unique<Router>(loyalty_.get(), ro);

  keys_[static_cast<int>(Principal::kAdmin)] = std::string(kAdminKey);
  auto send = [this](const std::string& method, const std::string& target, const Json& body,
                     int want) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body.is_null() ? "" : body.dump();
    r.remote_address = "127.0.0.1";
    r.headers.emplace_back("authorization", "Bearer " + std::string(kAdminKey));
    r.headers.emplace_back("idempotency-key", "setup-" + std::to_string(++g_requests));
    HttpResponse resp = router_->Handle(r);
    if (resp.status != want) {
      Die(method + " " + target + ": " + std::to_string(resp.status) + " " + resp.body);
    }
    return resp.body.empty() ? Json() : Json::parse(resp.body);
  };
  auto key = [&](const Json& body) { return send("POST", "/v1/api-keys", body, 201)["key"]; };

  send("POST", "/v1/programs",
       {{"id", "acme"},
        {"name", "Acme"},
        {"expiry_days", 30},
        {"referral", {{"max_uses", 3}, {"advocate_pending_days", 7}}}},
       201);
  send("POST", "/v1/programs",
       {{"id", "beta"}, {"name", "Beta"}, {"negative_balance", "allow"}, {"pending_days", 2}}, 201);
  keys_[static_cast<int>(Principal::kCheckout)] = key({{"role", "checkout"}, {"name", "checkout"}});
  keys_[static_cast<int>(Principal::kFinance)] = key({{"role", "finance"}, {"name", "finance"}});
  keys_[static_cast<int>(Principal::kAlice)] =
      key({{"role", "customer"}, {"name", "alice"}, {"program", "acme"}, {"customer", "alice"}});
  keys_[static_cast<int>(Principal::kBob)] =
      key({{"role", "customer"}, {"name", "bob"}, {"program", "beta"}, {"customer", "bob"}});
  Json revoked = send("POST", "/v1/api-keys", {{"role", "checkout"}, {"name", "old"}}, 201);
  keys_[static_cast<int>(Principal::kRevoked)] = revoked["key"];
  send("DELETE", "/v1/api-keys/" + revoked["id"].get<std::string>(), Json(), 204);

  auto entry_id = [](const Json& written) {
    return std::to_string(written["entry"]["id"].get<uint64_t>());
  };
  earn_ = entry_id(
      send("POST", "/v1/programs/acme/earn", {{"customer", "alice"}, {"points", 1000}}, 201));
  send("POST", "/v1/programs/beta/earn", {{"customer", "bob"}, {"points", 300}}, 201);
  hold_ = entry_id(send("POST", "/v1/programs/acme/earn",
                        {{"customer", "bob"}, {"points", 50}, {"pending_days", 3}}, 201));
  reserved_ = entry_id(send("POST", "/v1/programs/acme/redeem",
                            {{"customer", "alice"}, {"points", 10}, {"hold", true}}, 201));
  send("POST", "/v1/programs/acme/rewards",
       {{"id", "mug"}, {"name", "Mug"}, {"points", 100}, {"stock", 5}}, 201);
  code_ = send("POST", "/v1/programs/acme/referral-codes", {{"advocate", "alice"}}, 201)["code"];
}

const std::string& FuzzServer::KeyOf(Principal p) const { return keys_[static_cast<int>(p) & 7]; }

std::string FuzzServer::Expand(std::string_view text) const {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    size_t at = text.find('$');
    out.append(text.substr(0, at));
    if (at == std::string_view::npos) break;
    text.remove_prefix(at);
    if (text.substr(0, 5) == "$CODE") {
      out += code_;
    } else if (text.substr(0, 5) == "$HOLD") {
      out += hold_;
    } else if (text.substr(0, 5) == "$RESV") {
      out += reserved_;
    } else if (text.substr(0, 5) == "$EARN") {
      out += earn_;
    } else {
      out += '$';
      text.remove_prefix(1);
      continue;
    }
    text.remove_prefix(5);
  }
  return out;
}

bool RequestFromFuzzInput(FuzzServer& server, std::string_view input, HttpRequest* request) {
  if (input.size() < 2) return false;
  const auto control = static_cast<uint8_t>(input[0]);
  input.remove_prefix(1);
  constexpr int64_t kAdvance[] = {0, kMicrosPerSecond, 3600 * kMicrosPerSecond, 31 * kMicrosPerDay};
  // The clock stops a century after the start: a run of millions of inputs would otherwise
  // carry it past any time a request can name.
  if (server.clock().NowMicros() < kStart + 36'500 * kMicrosPerDay) {
    server.clock().Advance(kAdvance[(control >> 4) & 3]);
  }

  auto next_line = [&input]() {
    size_t end = input.find('\n');
    std::string_view line = input.substr(0, end);
    input.remove_prefix(end == std::string_view::npos ? input.size() : end + 1);
    return line;
  };
  std::string_view start = next_line();
  size_t space = start.find(' ');
  request->method = std::string(start.substr(0, space));
  request->target = space == std::string_view::npos ? "/" : server.Expand(start.substr(space + 1));
  request->remote_address = "127.0.0.1";
  bool has_idempotency_key = false;
  while (!input.empty()) {
    std::string_view line = next_line();
    if (line.empty()) break;
    size_t colon = line.find(':');
    std::string name(line.substr(0, colon));
    for (char& c : name) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    has_idempotency_key = has_idempotency_key || name == "idempotency-key";
    request->headers.emplace_back(std::move(name), server.Expand(value));
  }
  request->body = server.Expand(input);

  const auto principal = static_cast<Principal>(control & 7);
  if (principal != Principal::kNone && principal != Principal::kAsSent) {
    request->headers.emplace_back("authorization", "Bearer " + server.KeyOf(principal));
  }
  if ((control & 8) != 0 && !has_idempotency_key) {
    request->headers.emplace_back("idempotency-key", "fuzz-" + std::to_string(++g_requests));
  }
  return true;
}

}  // namespace tally::fuzz
