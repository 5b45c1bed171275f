// fuzz_seeds DIR: writes the seed corpora of the fuzz targets into DIR/<target>/ (normally
// tests/fuzz/corpus): API requests in the fuzz_http format and as raw HTTP, their JSON bodies,
// the canonical bytes of every entry those requests wrote, and notes, checkpoints and records.
// Each file is named by the SHA-256 of its content, so running it again adds nothing new.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "ledger/base64.h"
#include "ledger/checkpoint.h"
#include "ledger/entry.h"
#include "ledger/hash.h"
#include "ledger/note.h"
#include "ledger/records.h"
#include "ledger/signer.h"
#include "tests/fuzz/fuzz_key.h"
#include "tests/fuzz/fuzz_server.h"

namespace tally::fuzz {
namespace {

std::filesystem::path g_root;

void Write(const std::string& target, std::string_view content) {
  std::filesystem::path dir = g_root / target;
  std::filesystem::create_directories(dir);
  std::string name = HashToHex(Sha256(content)).substr(0, 20);
  std::ofstream(dir / name, std::ios::binary) << content;
}

struct Seed {
  Principal who;
  std::string text;  // "METHOD TARGET\n" headers "\n" body
};

// Requests over the whole API, in an order that works on the FuzzServer's state.
std::vector<Seed> Requests() {
  const auto A = Principal::kAdmin, C = Principal::kCheckout, F = Principal::kFinance,
             U = Principal::kAlice, N = Principal::kNone;
  return {
      {N, "GET /healthz\n\n"},
      {N, "GET /readyz\n\n"},
      {N, "GET /metrics\n\n"},
      {A,
       "POST /v1/programs\nContent-Type: application/json\n\n"
       R"({"id":"zeta","name":"Zeta","currency":"EUR","point_value_minor":2,)"
       R"("earn_rate":{"points":3,"per_amount_minor":200},"expiry_days":365,"pending_days":1,)"
       R"("negative_balance":"allow","referral":{"advocate_points":500,"friend_points":250,)"
       R"("max_uses":10,"code_ttl_days":90,"advocate_pending_days":30}})"},
      {A,
       "PATCH /v1/programs/zeta\n\n"
       R"({"name":"Zeta 2","pending_days":0,"referral":{"friend_points":300}})"},
      {A, "PATCH /v1/programs/zeta\nIdempotency-Key: patch-1\n\n{\"referral\":null}"},
      {C, "GET /v1/programs?limit=1\n\n"},
      {C, "GET /v1/programs/acme\n\n"},
      {C,
       "POST /v1/programs/acme/earn\n\n"
       R"({"customer":"carol","points":120,"order_id":"o-1001","description":"order"})"},
      {C,
       "POST /v1/programs/acme/earn\nIdempotency-Key: earn-2\n\n"
       R"({"customer":"carol","order_amount_minor":25000,"expires_at":"2027-01-01T00:00:00Z"})"},
      {C,
       "POST /v1/programs/acme/earn\n\n"
       R"({"customer":"dave","points":40,"pending_until":"2026-02-01T00:00:00.5Z"})"},
      {C, "POST /v1/programs/beta/earn\n\n{\"customer\":\"bob\",\"points\":7,\"pending_days\":0}"},
      {C, "POST /v1/programs/acme/redeem\n\n{\"customer\":\"carol\",\"points\":20}"},
      {C, "POST /v1/programs/acme/redeem\n\n{\"customer\":\"alice\",\"reward_id\":\"mug\"}"},
      {C,
       "POST /v1/programs/acme/redeem\n\n"
       R"({"customer":"alice","points":5,"hold":true,"order_id":"o-7"})"},
      {C, "POST /v1/programs/acme/holds/$HOLD/capture\n\n{}"},
      {C, "POST /v1/programs/acme/holds/$RESV/void\n\n"},
      {C,
       "POST /v1/programs/acme/reversals\n\n"
       R"({"entry_id":$EARN,"points":10,"reason":"refund"})"},
      {C, "POST /v1/programs/acme/reversals\n\n{\"entry_id\":$EARN}"},
      {A,
       "POST /v1/programs/acme/adjustments\n\n"
       R"({"customer":"alice","points":-5,"reason":"correction"})"},
      {A,
       "POST /v1/programs/beta/adjustments\n\n"
       R"({"customer":"bob","points":-500,"reason":"debt"})"},
      {A, "POST /v1/programs/acme/expire\n\n{}"},
      {A, "POST /v1/programs/acme/rewards\n\n{\"id\":\"hat\",\"name\":\"Hat\",\"points\":50}"},
      {U, "GET /v1/programs/acme/rewards?limit=5\n\n"},
      {C, "POST /v1/programs/acme/referral-codes\n\n{\"advocate\":\"dave\"}"},
      {U, "POST /v1/programs/acme/referral-codes\n\n{\"advocate\":\"alice\"}"},
      {U, "GET /v1/programs/acme/referral-codes/$CODE\n\n"},
      {C, "GET /v1/programs/acme/referral-codes/abcd-efgh-jkmn\n\n"},
      {C,
       "POST /v1/programs/acme/referrals\n\n"
       R"({"code":"$CODE","friend":"erin","order_id":"o-9"})"},
      {C, "POST /v1/programs/acme/referrals\n\n{\"code\":\"$CODE\",\"friend\":\"alice\"}"},
      {U, "GET /v1/programs/acme/customers/alice\n\n"},
      {U, "GET /v1/programs/acme/customers/alice/entries?limit=2\n\n"},
      {U, "GET /v1/programs/acme/customers/alice/lots\n\n"},
      {C, "GET /v1/programs/acme/customers/bob/entries?limit=1&cursor=AAAA\n\n"},
      {A, "POST /v1/api-keys\n\n{\"role\":\"finance\",\"name\":\"books\"}"},
      {A,
       "POST /v1/api-keys\n\n"
       R"({"role":"customer","name":"c","program":"acme","customer":"carol"})"},
      {A, "DELETE /v1/api-keys/no-such-key\n\n"},
      {C, "GET /v1/ledger/checkpoint\n\n"},
      {F, "GET /v1/ledger/entries?program=acme&type=earn&limit=3\n\n"},
      {C, "GET /v1/ledger/entries/3\n\n"},
      {C, "GET /v1/ledger/consistency?from=1&to=5\n\n"},
      {C, "GET /v1/ledger/public-key\n\n"},
      {F,
       "GET /v1/programs/acme/reports/liability?from=2026-01-01T00:00:00Z"
       "&to=2026-02-01T00:00:00%2B00:00\n\n"},
      {F, "GET /v1/programs/acme/reports/balances?as_of=2030-01-01T00:00:00Z&limit=2\n\n"},
      {F, "GET /v1/programs/acme/reports/activity?bucket=hour\n\n"},
      {F, "GET /v1/programs/acme/reports/activity?bucket=month&from=2026-01-01T00:00:00Z\n\n"},
      {A, "GET /v1/admin/replication\n\n"},
      {A, "POST /v1/admin/promote\n\n{}"},
      // Refused ones: the fuzzer starts from both sides of each check.
      {C, "POST /v1/programs/acme/earn\n\n{\"customer\":\"x\",\"points\":1.0}"},
      {C, "POST /v1/programs/acme/earn\n\n{\"customer\":\"x\",\"points\":1,\"points\":2}"},
      {C, "POST /v1/programs/acme/earn\n\n{\"customer\":\"x\",\"points\":1,\"balance\":9}"},
      {C, "POST /v1/programs/acme/redeem\n\n{\"customer\":\"x\",\"points\":{\"a\":[[[[1]]]]}}"},
      {C, "POST /v1/programs/acme/earn\nIdempotency-Key: \n\n{}"},
      {A, "PUT /v1/programs\n\n"},
      {F, "POST /v1/programs/acme/earn\n\n{\"customer\":\"x\",\"points\":1}"},
      {Principal::kRevoked, "GET /v1/programs\n\n"},
      {Principal::kBob, "GET /v1/programs/acme/customers/alice\n\n"},
      {Principal::kAsSent, "GET /v1/programs\nAuthorization: bearer fuzz-admin-key\n\n"},
      {C, "GET /v1/ledger/consistency?from=0&to=99999999999999999999\n\n"},
      {C, "GET /v1/programs?limit=501&x=%zz\n\n"},
  };
}

// The same requests as raw HTTP/1.1 (placeholders are not expanded on the wire, so requests
// with one are left out), and framing cases of every kind.
std::vector<std::string> WireRequests(const std::vector<Seed>& seeds) {
  std::vector<std::string> out;
  int n = 0;
  for (const Seed& s : seeds) {
    if (s.text.find('$') != std::string::npos) continue;
    size_t head_end = s.text.find("\n\n");
    std::string head = s.text.substr(0, head_end);
    std::string body = s.text.substr(head_end + 2);
    size_t eol = head.find('\n');
    std::string start = head.substr(0, eol);
    std::string raw = start + " HTTP/1.1\r\nHost: tally\r\n";
    if (eol != std::string::npos) {
      std::string rest = head.substr(eol + 1);
      for (size_t at; (at = rest.find('\n')) != std::string::npos;) rest.replace(at, 1, "\r\n");
      raw += rest + "\r\n";
    }
    raw += "Authorization: Bearer " + std::string(kAdminKey) + "\r\n";
    if (start.rfind("POST", 0) == 0) raw += "Idempotency-Key: wire-" + std::to_string(++n) + "\r\n";
    if (!body.empty()) raw += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    out.push_back(raw + "\r\n" + body);
  }
  const std::string auth = "Authorization: Bearer " + std::string(kAdminKey) + "\r\n";
  const std::string earn = R"({"customer":"wire","points":5})";
  out.push_back("POST /v1/programs/acme/earn HTTP/1.1\r\nHost: t\r\n" + auth +
                "Idempotency-Key: chunked-1\r\nTransfer-Encoding: chunked\r\n\r\n" + "a\r\n" +
                earn.substr(0, 10) + "\r\n" + "14\r\n" + earn.substr(10) + "\r\n0\r\n\r\n");
  out.push_back(
      "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /readyz HTTP/1.1\r\nHost: t\r\n\r\n"
      "GET /v1/programs HTTP/1.1\r\nHost: t\r\n" +
      auth + "Connection: close\r\n\r\n");
  out.push_back("GET /healthz HTTP/1.0\r\n\r\n");
  out.push_back("HEAD /v1/programs HTTP/1.1\r\nHost: t\r\n" + auth + "\r\n");
  out.push_back("POST /v1/programs/acme/earn HTTP/1.1\r\nHost: t\r\n" + auth +
                "Idempotency-Key: s-1\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n" +
                "0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n");
  out.push_back("POST /v1/programs/acme/earn HTTP/1.1\r\nHost: t\r\n" + auth +
                "Content-Length: 30\r\nContent-Length: 31\r\n\r\n" + earn);
  out.push_back("POST /v1/programs/acme/earn HTTP/1.1\r\nHost: t\r\n" + auth +
                "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  out.push_back("POST /v1/programs/acme/earn HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
  out.push_back("POST /v1/programs HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n");
  out.push_back("GET /healthz HTTP/1.1\r\nHost: t\r\nX: " + std::string(17000, 'a') + "\r\n\r\n");
  out.push_back("POST /v1/programs/acme/earn HTTP/1.1\r\nHost: t\r\n" + auth +
                "Idempotency-Key: e-1\r\nExpect: 100-continue\r\nContent-Length: " +
                std::to_string(earn.size()) + "\r\n\r\n" + earn);
  out.push_back("GET /\x01 HTTP/1.1\r\n\r\n");
  out.push_back("GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello");
  return out;
}

std::string Body(const std::string& text) {
  size_t at = text.find("\n\n");
  return at == std::string::npos ? "" : text.substr(at + 2);
}

}  // namespace
}  // namespace tally::fuzz

int main(int argc, char** argv) {
  using namespace tally;
  using namespace tally::fuzz;
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds DIR\n");
    return 2;
  }
  g_root = argv[1];
  FuzzServer& server = FuzzServer::Get();

  std::vector<Seed> seeds = Requests();
  int refused = 0;
  for (const Seed& s : seeds) {
    std::string input(1, static_cast<char>(static_cast<uint8_t>(s.who) | 8));
    input += s.text;
    Write("fuzz_http", input);
    HttpRequest request;
    RequestFromFuzzInput(server, input, &request);
    HttpResponse response = server.router().Handle(request);
    if (response.status >= 400) {
      ++refused;
      std::printf("%d %s %s: %s\n", response.status, request.method.c_str(), request.target.c_str(),
                  response.body.c_str());
    }
    std::string body = Body(s.text);
    if (!body.empty() && body.find('$') == std::string::npos) Write("fuzz_json_request", body);
  }
  for (const std::string& raw : WireRequests(seeds)) Write("fuzz_http_wire", raw);
  for (const char* body : {"{}", "", "[]", "null", R"({"a":"\ud800"})", "{\"points\":-0}",
                           R"({"points":9223372036854775808})", R"({"points":1e3})"}) {
    Write("fuzz_json_request", body);
  }

  // Every entry the requests wrote, and the payload records among them.
  Ledger& ledger = server.ledger();
  for (uint64_t id = 0; id < ledger.size(); ++id) {
    auto bytes = ledger.GetEntryBytes(id);
    if (!bytes.ok()) return 1;
    Write("fuzz_entry", *bytes);
    auto e = DecodeEntry(*bytes);
    if (e.ok() && !e->payload.empty()) Write("fuzz_note", e->payload);
    if (auto cp = ledger.GetCheckpoint(id + 1); cp.ok() && *cp) Write("fuzz_note", **cp);
  }
  // Notes signed by the fixed key, checkpoints, derived records.
  auto signer = Signer::FromPem(kFuzzKeyPem, std::string(kFuzzKeyName));
  auto other = Signer::Generate("other.example/log");
  if (!signer.ok() || !other.ok()) return 1;
  Checkpoint cp{std::string(kFuzzKeyName), 42, Sha256("root"), {}};
  std::string text = FormatCheckpoint(cp);
  Write("fuzz_note", text);
  Write("fuzz_note", SignNote(text, *signer));
  std::string two = SignNote(text, *other);
  two += SignNote(text, *signer).substr(text.size() + 1);
  Write("fuzz_note", two);
  cp.extensions = {"ext one", "— ext two"};
  Write("fuzz_note", SignNote(FormatCheckpoint(cp), *signer));
  Write("fuzz_note", VerifierKey(signer->name(), signer->public_key()));
  Write("fuzz_note", EncodeCustomer({120, 20, 5, "ABCDEFGHJK01", "alice", 7}));
  Write("fuzz_note", EncodeHold({HoldKind::kRedeem, HoldState::kPending, "alice", 10, 10, 0,
                                 1'800'000'000'000'000, 0, "mug"}));
  Write("fuzz_note", EncodeLot({100, 40}));
  std::printf("wrote seeds for %zu requests (%d refused), %llu entries\n", seeds.size(), refused,
              static_cast<unsigned long long>(ledger.size()));
  return 0;
}
