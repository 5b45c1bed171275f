#include "api/router.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "api/json_request.h"
#include "api/json_view.h"
#include "api/openapi.h"
#include "ledger/backup.h"
#include "ledger/clock.h"
#include "ledger/entry.h"
#include "ledger/files.h"
#include "ledger/hash.h"
#include "ledger/limits.h"
#include "ledger/rfc3339.h"
#include "ledger/signer.h"

namespace tally {
namespace {

// ---------------------------------------------------------------------------------------------
// Errors: the one mapping from a Status to an HTTP status and an error code (API.md).

struct ErrorCode {
  std::string_view reason;  // Status::reason()
  int status;
  std::string_view code;
};

constexpr ErrorCode kErrorCodes[] = {
    {"bad_request", 400, "bad_request"},
    {"idempotency_key_required", 400, "idempotency_key_required"},
    {"unauthorized", 401, "unauthorized"},
    {"forbidden", 403, "forbidden"},
    {"not_found", 404, "not_found"},
    {"unknown_reward", 404, "unknown_reward"},
    {"unknown_hold", 404, "unknown_hold"},
    {"unknown_code", 404, "unknown_code"},
    {"method_not_allowed", 405, "method_not_allowed"},
    {"program_exists", 409, "program_exists"},
    {"order_already_awarded", 409, "order_already_awarded"},
    {"out_of_stock", 409, "out_of_stock"},
    {"hold_already_resolved", 409, "hold_already_resolved"},
    {"already_referred", 409, "already_referred"},
    {"reward_exists", 409, "reward_exists"},
    {"not_a_follower", 409, "not_a_follower"},
    {"api_key_exists", 409, "api_key_exists"},
    {"backup_exists", 409, "backup_exists"},
    {"backup_in_progress", 409, "backup_in_progress"},
    {"insufficient_points", 422, "insufficient_points"},
    {"exceeds_reversible", 422, "exceeds_reversible"},
    {"not_reversible", 422, "not_reversible"},
    {"referrals_disabled", 422, "referrals_disabled"},
    {"code_expired", 422, "code_expired"},
    {"code_exhausted", 422, "code_exhausted"},
    {"self_referral", 422, "self_referral"},
    {"not_a_new_customer", 422, "not_a_new_customer"},
    {"idempotency_key_reused", 422, "idempotency_key_reused"},
    {"rate_limited", 429, "rate_limited"},
    {"ledger_stopped", 503, "unavailable"},
    {"overloaded", 503, "unavailable"},
    {"not_primary", 503, "not_primary"},
    {"insufficient_storage", 507, "insufficient_storage"},
};

struct HttpError {
  int status;
  std::string code;
};

// Known reasons first, then the status code. 409 and 422 without a known reason keep the
// reason as their code (it is the ledger's stable word) or fall back to a generic one.
HttpError ErrorFor(const Status& s) {
  for (const ErrorCode& e : kErrorCodes) {
    if (s.reason() == e.reason) return {e.status, std::string(e.code)};
  }
  const std::string& reason = s.reason();
  switch (s.code()) {
    case Code::kInvalidArgument:
      return {400, "bad_request"};
    case Code::kNotFound:
      return {404, "not_found"};
    case Code::kAlreadyExists:
      return {409, reason.empty() ? "conflict" : reason};
    case Code::kFailedPrecondition:
      return {422, reason.empty() ? "unprocessable" : reason};
    case Code::kResourceExhausted:
      return {429, "rate_limited"};
    case Code::kUnavailable:
      return {503, "unavailable"};
    default:
      return {500, "internal"};
  }
}

const char* Title(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 503:
      return "Service Unavailable";
    case 507:
      return "Insufficient Storage";
    default:
      return "Internal Server Error";
  }
}

HttpResponse Problem(const Status& s) {
  HttpError e = ErrorFor(s);
  std::string detail = s.message();
  if (e.status == 500) {
    // Internal details go to the log, not to the client.
    std::fprintf(stderr, "tallyd: internal error: %s\n", s.ToString().c_str());
    detail = "internal error";
  }
  HttpResponse r;
  r.status = e.status;
  r.headers.emplace_back("Content-Type", "application/problem+json");
  if (e.status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  if (e.status == 429) r.headers.emplace_back("Retry-After", "60");
  r.body = RenderProblem(e.status, Title(e.status), e.code, detail);
  return r;
}

// A not_primary refusal names the primary, when this server knows where it is.
Status NamePrimary(const Status& s, const std::function<std::string()>& primary_url) {
  if (s.reason() != "not_primary" || !primary_url) return s;
  std::string url = primary_url();
  if (url.empty()) return s;
  return Status(s.code(), s.message() + "; the primary is at " + url, s.reason());
}

// An error the router itself decides; its reason is one of kErrorCodes.
Status Reject(std::string reason, std::string message) {
  return Status(Code::kInvalidArgument, std::move(message), std::move(reason));
}

Status BadRequest(std::string message) { return Reject("bad_request", std::move(message)); }
Status NotFound(std::string message = "not found") {
  return Status::NotFound(std::move(message), "not_found");
}

// ---------------------------------------------------------------------------------------------
// Requests: the target, query parameters, keys.

struct PathParams {
  std::string program;   // {p}
  std::string customer;  // {c}
  std::string code;      // {code}
  std::string id;        // {id}, {entry_id}
};

using Query = std::map<std::string, std::string, std::less<>>;

struct Principal {
  Role role = Role::kAdmin;
  std::string key_id;
  std::string program;   // role customer only
  std::string customer;  // role customer only
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes a query component ('+' stays '+': times like "...+00:00" pass unencoded).
Result<std::string> PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    int hi = i + 2 < s.size() ? HexValue(s[i + 1]) : -1;
    int lo = hi >= 0 ? HexValue(s[i + 2]) : -1;
    if (lo < 0) return BadRequest("bad percent-encoding in the query");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

bool NameIn(std::string_view name, std::string_view names) {
  while (!names.empty()) {
    size_t end = names.find(' ');
    if (names.substr(0, end) == name) return true;
    names.remove_prefix(end == std::string_view::npos ? names.size() : end + 1);
  }
  return false;
}

// Parses "a=1&b=2", allowing only the space-separated `allowed` names, each at most once.
Result<Query> ParseQuery(std::string_view text, std::string_view allowed) {
  Query q;
  while (!text.empty()) {
    size_t amp = text.find('&');
    std::string_view pair = text.substr(0, amp);
    text.remove_prefix(amp == std::string_view::npos ? text.size() : amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    ASSIGN_OR_RETURN(std::string name, PercentDecode(pair.substr(0, eq)));
    ASSIGN_OR_RETURN(std::string value,
                     PercentDecode(eq == std::string_view::npos ? "" : pair.substr(eq + 1)));
    if (!NameIn(name, allowed)) return BadRequest("unknown query parameter \"" + name + "\"");
    if (!q.emplace(name, std::move(value)).second) {
      return BadRequest("query parameter \"" + name + "\" given twice");
    }
  }
  return q;
}

// A decimal number without sign, or nullopt.
std::optional<uint64_t> ParseDecimal(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

const std::string* QueryValue(const Query& q, std::string_view name) {
  auto it = q.find(name);
  return it == q.end() ? nullptr : &it->second;
}

bool IsAsciiSpace(char c) { return c == ' ' || c == '\t'; }

// The key of "Bearer KEY" (scheme in any case), or "" when the header is not of that form.
std::string_view BearerKey(std::string_view header) {
  constexpr std::string_view kScheme = "bearer";
  if (header.size() <= kScheme.size() || !IsAsciiSpace(header[kScheme.size()])) return {};
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if ((header[i] | 0x20) != kScheme[i]) return {};
  }
  header.remove_prefix(kScheme.size());
  while (!header.empty() && IsAsciiSpace(header.front())) header.remove_prefix(1);
  while (!header.empty() && IsAsciiSpace(header.back())) header.remove_suffix(1);
  return header;
}

bool ConstantTimeEqual(const Hash& a, const Hash& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = static_cast<uint8_t>(diff | (a[i] ^ b[i]));
  return diff == 0;
}

Result<Principal> Authenticate(const HttpRequest& req, const Loyalty& loyalty,
                               const std::optional<Hash>& admin_key_hash) {
  const std::string* header = req.Header("authorization");
  std::string_view key = header == nullptr ? std::string_view() : BearerKey(*header);
  if (key.empty()) return Reject("unauthorized", "an Authorization: Bearer key is required");
  if (admin_key_hash && ConstantTimeEqual(Sha256(key), *admin_key_hash)) {
    return Principal{Role::kAdmin, "env-admin", "", ""};
  }
  ASSIGN_OR_RETURN(std::optional<ApiKeyRecord> record, loyalty.Authenticate(key));
  if (!record) return Reject("unauthorized", "unknown or revoked API key");
  return Principal{record->role, record->id, record->program, record->customer};
}

// The Idempotency-Key header: a key the entry format takes (IsValidIdempotencyKey: printable
// ASCII, 0x20 to 0x7E; HTTP drops spaces before and after a header value, so a space can only be
// inside), and not empty. "" when absent and not required.
Result<std::string> IdempotencyKey(const HttpRequest& req, bool required) {
  const std::string* key = nullptr;
  for (const auto& [name, value] : req.headers) {
    if (name != "idempotency-key") continue;
    if (key != nullptr) return Reject("idempotency_key_required", "Idempotency-Key given twice");
    key = &value;
  }
  if (key == nullptr) {
    if (!required) return std::string();
    return Reject("idempotency_key_required", "a POST requires an Idempotency-Key header");
  }
  if (key->empty() || !IsValidIdempotencyKey(*key)) {
    return Reject("idempotency_key_required",
                  "Idempotency-Key must be 1 to 255 printable ASCII characters");
  }
  return *key;
}

Hash RequestHash(std::string_view method, std::string_view path, std::string_view body) {
  constexpr std::string_view kNul("\0", 1);
  return Sha256({method, kNul, path, kNul, body});
}

// ---------------------------------------------------------------------------------------------
// The context of one call, and responses.

struct Call {
  const HttpRequest& request;
  std::string_view path;
  PathParams params;
  Query query;
  Principal who;
  std::string idempotency_key;
  Loyalty* loyalty;
  const RouterOptions& options;
  const Metrics& metrics;

  Ledger* ledger() const { return loyalty->ledger(); }
  bool IsCustomer() const { return who.role == Role::kCustomer; }
  WriteContext Write() const {
    return WriteContext{who.key_id, idempotency_key,
                        RequestHash(request.method, path, request.body)};
  }
};

HttpResponse Respond(int status, std::string body,
                     std::string_view content_type = "application/json") {
  HttpResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", std::string(content_type));
  r.body = std::move(body);
  return r;
}

HttpResponse Replayable(bool replayed, HttpResponse r) {
  if (replayed) r.headers.emplace_back("Idempotency-Replayed", "true");
  return r;
}

// The first entry a write appended (or, replayed, appended the first time).
Result<Entry> FirstEntry(const Ledger& ledger, const WriteResult& w) {
  if (w.count == 0) return Status::Internal("a write appended no entry");
  return ledger.GetEntry(w.first_id);
}
Result<Entry> FirstEntry(const Call& c, const WriteResult& w) { return FirstEntry(*c.ledger(), w); }

// An entry as it was written: a holding entry's hold was pending then.
EntryView AsWritten(Entry e) {
  std::optional<HoldState> hold;
  if (e.holds) hold = HoldState::kPending;
  return EntryView{std::move(e), hold};
}

// An entry with its hold's current state.
Result<EntryView> AsNow(const Call& c, Entry e) {
  if (!e.holds) return EntryView{std::move(e), std::nullopt};
  ASSIGN_OR_RETURN(HoldView hold, c.loyalty->GetHold(e.program, e.id));
  return EntryView{std::move(e), hold.record.state};
}

Result<Page<EntryView>> AsNow(const Call& c, Page<Entry> page) {
  Page<EntryView> out;
  out.next_cursor = std::move(page.next_cursor);
  for (Entry& e : page.items) {
    ASSIGN_OR_RETURN(EntryView v, AsNow(c, std::move(e)));
    out.items.push_back(std::move(v));
  }
  return out;
}

// 201 {"entry", "receipt"} for the first entry of a write, built from the log only.
Result<HttpResponse> EntryWritten(const Ledger& ledger, const Result<WriteResult>& w) {
  if (!w.ok()) return w.status();
  ASSIGN_OR_RETURN(Entry e, FirstEntry(ledger, *w));
  ASSIGN_OR_RETURN(Receipt receipt, ledger.GetReceipt(e.id));
  return Replayable(w->replayed,
                    Respond(201, RenderEntryWithReceipt(AsWritten(std::move(e)), receipt)));
}
Result<HttpResponse> EntryWritten(const Call& c, const Result<WriteResult>& w) {
  return EntryWritten(*c.ledger(), w);
}

Result<HttpResponse> ProgramWritten(const Call& c, const Result<WriteResult>& w, int status) {
  if (!w.ok()) return w.status();
  ASSIGN_OR_RETURN(Entry e, FirstEntry(c, *w));
  ASSIGN_OR_RETURN(ProgramConfig program, DecodeProgram(e.payload));
  return Replayable(w->replayed, Respond(status, RenderProgram(program)));
}

struct PageArgs {
  std::string cursor;
  size_t limit = kPageItemsDefault;
};

Result<PageArgs> PageOf(const Call& c) {
  PageArgs args;
  if (const std::string* cursor = QueryValue(c.query, "cursor")) args.cursor = *cursor;
  if (const std::string* limit = QueryValue(c.query, "limit")) {
    std::optional<uint64_t> n = ParseDecimal(*limit);
    if (!n || *n < 1 || *n > kPageItemsMax) {
      return BadRequest("limit must be an integer from 1 to " + std::to_string(kPageItemsMax));
    }
    args.limit = static_cast<size_t>(*n);
  }
  return args;
}

// The time query parameter `name`, or `fallback` when absent.
Result<int64_t> TimeParam(const Call& c, std::string_view name, int64_t fallback) {
  const std::string* text = QueryValue(c.query, name);
  if (text == nullptr) return fallback;
  Result<int64_t> us = ParseRfc3339(*text);
  if (!us.ok()) return BadRequest(std::string(name) + ": " + us.status().message());
  return us;
}

struct Period {
  int64_t from_us = 0, to_us = 0;
};

// from and to, defaulting to the beginning and to now; from <= to.
Result<Period> PeriodOf(const Call& c) {
  Period p;
  ASSIGN_OR_RETURN(p.from_us, TimeParam(c, "from", 0));
  ASSIGN_OR_RETURN(p.to_us, TimeParam(c, "to", c.ledger()->clock().NowMicros()));
  if (p.from_us > p.to_us) return BadRequest("from must not be after to");
  return p;
}

// An entry id in a path; NotFound with `reason` when it is not a number.
Result<uint64_t> PathEntryId(const Call& c, const char* reason) {
  std::optional<uint64_t> id = ParseDecimal(c.params.id);
  if (!id) return Status::NotFound("no entry " + c.params.id, reason);
  return *id;
}

// ---------------------------------------------------------------------------------------------
// Handlers: one per route. Each parses, calls the business layer, renders.

using Handler = Result<HttpResponse> (*)(Call&);
using Prepare = Result<AppendRequest> (*)(Call&);  // a checkout write (below)

Result<HttpResponse> Health(Call&) { return Respond(200, RenderHealth("ok")); }

// 503 while writes are refused: on a follower or a fenced primary, after a failed write
// (fail-stop) and while the disk is below the ledger's min_free_bytes (writes answer 507 then,
// but readiness is a yes or no).
Result<HttpResponse> Ready(Call& c) {
  if (c.options.ready) RETURN_IF_ERROR(c.options.ready());
  if (Status w = c.ledger()->Writable(); !w.ok()) {
    return Status::Unavailable("not accepting writes: " + w.message(), "ledger_stopped");
  }
  return Respond(200, RenderHealth("ready"));
}

Result<HttpResponse> MetricsText(Call& c) {
  return Respond(200, c.metrics.Render(c.ledger()->Stats()), "text/plain; version=0.0.4");
}

Result<HttpResponse> OpenApi(Call&) { return Respond(200, std::string(OpenApiJson())); }

Result<HttpResponse> CreateProgram(Call& c) {
  ASSIGN_OR_RETURN(ProgramConfig config, ParseProgramCreate(c.request.body));
  return ProgramWritten(c, c.loyalty->CreateProgram(c.Write(), config), 201);
}

Result<HttpResponse> PatchProgram(Call& c) {
  ASSIGN_OR_RETURN(ProgramPatch patch, ParseProgramPatch(c.request.body));
  auto apply = [patch](ProgramConfig* config) {
    ApplyProgramPatch(patch, config);
    return ValidateProgram(*config);
  };
  return ProgramWritten(c, c.loyalty->UpdateProgram(c.Write(), c.params.program, apply), 200);
}

Result<HttpResponse> GetProgram(Call& c) {
  ASSIGN_OR_RETURN(ProgramConfig program, c.loyalty->GetProgram(c.params.program));
  return Respond(200, RenderProgram(program));
}

Result<HttpResponse> ListPrograms(Call& c) {
  ASSIGN_OR_RETURN(PageArgs page, PageOf(c));
  ASSIGN_OR_RETURN(Page<ProgramConfig> programs, c.loyalty->ListPrograms(page.cursor, page.limit));
  return Respond(200, RenderProgramPage(programs));
}

Result<HttpResponse> GetCustomer(Call& c) {
  ASSIGN_OR_RETURN(CustomerView view, c.loyalty->GetCustomer(c.params.program, c.params.customer));
  return Respond(200, RenderCustomer(view));
}

Result<HttpResponse> CustomerEntries(Call& c) {
  ASSIGN_OR_RETURN(PageArgs page, PageOf(c));
  ASSIGN_OR_RETURN(
      Page<Entry> entries,
      c.loyalty->CustomerEntries(c.params.program, c.params.customer, page.cursor, page.limit));
  ASSIGN_OR_RETURN(Page<EntryView> views, AsNow(c, std::move(entries)));
  return Respond(200, RenderEntryPage(views));
}

Result<HttpResponse> CustomerLots(Call& c) {
  ASSIGN_OR_RETURN(PageArgs page, PageOf(c));
  ASSIGN_OR_RETURN(Page<LotView> lots, c.loyalty->CustomerLots(c.params.program, c.params.customer,
                                                               page.cursor, page.limit));
  return Respond(200, RenderLotPage(lots));
}

// The checkout writes are prepared here and answered by EntryWritten: Router::Handle waits for
// the commit, Router::Start does not.
Result<AppendRequest> Earn(Call& c) {
  ASSIGN_OR_RETURN(EarnRequest r, ParseEarn(c.request.body));
  return c.loyalty->PrepareEarn(c.Write(), c.params.program, r);
}

Result<AppendRequest> Redeem(Call& c) {
  ASSIGN_OR_RETURN(RedeemRequest r, ParseRedeem(c.request.body));
  return c.loyalty->PrepareRedeem(c.Write(), c.params.program, r);
}

Result<AppendRequest> Capture(Call& c) {
  RETURN_IF_ERROR(ParseEmpty(c.request.body));
  ASSIGN_OR_RETURN(uint64_t id, PathEntryId(c, "unknown_hold"));
  return c.loyalty->PrepareCapture(c.Write(), c.params.program, id);
}

Result<AppendRequest> Void(Call& c) {
  RETURN_IF_ERROR(ParseEmpty(c.request.body));
  ASSIGN_OR_RETURN(uint64_t id, PathEntryId(c, "unknown_hold"));
  return c.loyalty->PrepareVoid(c.Write(), c.params.program, id);
}

Result<AppendRequest> Reverse(Call& c) {
  ASSIGN_OR_RETURN(ReversalRequest r, ParseReversal(c.request.body));
  return c.loyalty->PrepareReverse(c.Write(), c.params.program, r);
}

Result<HttpResponse> Adjust(Call& c) {
  ASSIGN_OR_RETURN(AdjustmentBody r, ParseAdjustment(c.request.body));
  return EntryWritten(
      c, c.loyalty->Adjust(c.Write(), c.params.program, r.customer, r.points, r.reason));
}

// 200 {"entries", "points"}: the points are summed from the entries written, so that a replay
// answers the same.
Result<HttpResponse> Expire(Call& c) {
  RETURN_IF_ERROR(ParseEmpty(c.request.body));
  ASSIGN_OR_RETURN(ExpireResult r, c.loyalty->Expire(c.Write(), c.params.program));
  int64_t points = 0;
  for (uint64_t id = r.write.first_id; id < r.write.first_id + r.write.count; ++id) {
    ASSIGN_OR_RETURN(Entry e, c.ledger()->GetEntry(id));
    points += EntryPoints(e);
  }
  return Replayable(r.write.replayed, Respond(200, RenderExpired(r.write.count, points)));
}

Result<HttpResponse> AddReward(Call& c) {
  ASSIGN_OR_RETURN(RewardRecord reward, ParseReward(c.request.body));
  ASSIGN_OR_RETURN(WriteResult w, c.loyalty->AddReward(c.Write(), c.params.program, reward));
  ASSIGN_OR_RETURN(Entry e, FirstEntry(c, w));
  ASSIGN_OR_RETURN(RewardRecord written, DecodeReward(e.payload));
  return Replayable(w.replayed, Respond(201, RenderReward(written)));
}

Result<HttpResponse> ListRewards(Call& c) {
  ASSIGN_OR_RETURN(PageArgs page, PageOf(c));
  ASSIGN_OR_RETURN(Page<RewardRecord> rewards,
                   c.loyalty->ListRewards(c.params.program, page.cursor, page.limit));
  return Respond(200, RenderRewardPage(rewards));
}

// 201 with a new code (from the log), or 200 with the advocate's live code (nothing written).
Result<HttpResponse> CreateCode(Call& c) {
  ASSIGN_OR_RETURN(std::string advocate, ParseCodeRequest(c.request.body));
  if (c.IsCustomer() && advocate != c.who.customer) return NotFound();
  ASSIGN_OR_RETURN(CodeResult r, c.loyalty->GetOrCreateCode(c.Write(), c.params.program, advocate));
  if (r.write.count == 0) return Respond(200, RenderCode(r.code));
  ASSIGN_OR_RETURN(Entry e, FirstEntry(c, r.write));
  ASSIGN_OR_RETURN(ReferralCodeRecord code, DecodeReferralCode(e.payload));
  return Replayable(r.write.replayed, Respond(201, RenderCode(code)));
}

// A customer key sees only its own code; another's answers as an unknown code would.
Result<HttpResponse> GetCode(Call& c) {
  ASSIGN_OR_RETURN(ReferralCodeRecord code,
                   c.loyalty->GetCode(c.who.key_id, c.params.program, c.params.code));
  if (c.IsCustomer() && code.advocate != c.who.customer) {
    return Status::NotFound("unknown referral code", "unknown_code");
  }
  return Respond(200, RenderCode(code));
}

Result<HttpResponse> Refer(Call& c) {
  ASSIGN_OR_RETURN(ReferralBody r, ParseReferral(c.request.body));
  return EntryWritten(
      c, c.loyalty->Refer(c.Write(), c.params.program, r.code, r.friend_id, r.order_id));
}

Result<HttpResponse> CreateApiKey(Call& c) {
  ASSIGN_OR_RETURN(ApiKeyRequest r, ParseApiKey(c.request.body));
  ASSIGN_OR_RETURN(ApiKeyCreated created, c.loyalty->CreateApiKey(c.Write(), r));
  ASSIGN_OR_RETURN(Entry e, FirstEntry(c, created.write));
  ASSIGN_OR_RETURN(ApiKeyRecord record, DecodeApiKey(e.payload));
  return Replayable(created.write.replayed, Respond(201, RenderApiKeyCreated(record, created.key)));
}

// DELETE carries no Idempotency-Key, and the entry gets none: revoking is idempotent by itself (a
// key already revoked answers 204 and writes nothing). A key made up by the server would share
// the caller's key space, where a client's own Idempotency-Key could already hold it.
Result<HttpResponse> RevokeApiKey(Call& c) {
  WriteContext w = c.Write();
  w.idempotency_key.clear();
  RETURN_IF_ERROR(c.loyalty->RevokeApiKey(w, c.params.id).status());
  return Respond(204, "");
}

Result<HttpResponse> LedgerCheckpoint(Call& c) {
  return Respond(200, RenderCheckpoint(c.ledger()->LatestCheckpoint()));
}

Result<HttpResponse> LedgerEntries(Call& c) {
  ASSIGN_OR_RETURN(PageArgs page, PageOf(c));
  const std::string* program = QueryValue(c.query, "program");
  const std::string* type_name = QueryValue(c.query, "type");
  if (program != nullptr && !IsValidId(*program)) return BadRequest("program is not a valid id");
  std::optional<EntryType> type;
  if (type_name != nullptr) {
    type = EntryTypeFromName(*type_name);
    if (!type) return BadRequest("type is not an entry type");
  }
  ASSIGN_OR_RETURN(Page<Entry> entries,
                   c.loyalty->ListEntries(program ? *program : "", type, page.cursor, page.limit));
  ASSIGN_OR_RETURN(Page<EntryView> views, AsNow(c, std::move(entries)));
  return Respond(200, RenderEntryPage(views));
}

Result<HttpResponse> LedgerEntry(Call& c) {
  ASSIGN_OR_RETURN(uint64_t id, PathEntryId(c, "not_found"));
  if (id >= c.ledger()->size()) return NotFound("no entry " + std::to_string(id));
  ASSIGN_OR_RETURN(Entry e, c.ledger()->GetEntry(id));
  ASSIGN_OR_RETURN(Receipt receipt, c.ledger()->GetReceipt(id));
  ASSIGN_OR_RETURN(EntryView view, AsNow(c, std::move(e)));
  return Respond(200, RenderEntryWithReceipt(view, receipt));
}

Result<HttpResponse> LedgerConsistency(Call& c) {
  const std::string* from_text = QueryValue(c.query, "from");
  const std::string* to_text = QueryValue(c.query, "to");
  std::optional<uint64_t> from = from_text ? ParseDecimal(*from_text) : std::nullopt;
  std::optional<uint64_t> to = to_text ? ParseDecimal(*to_text) : std::nullopt;
  if (!from || !to || *from == 0 || *from > *to || *to > c.ledger()->size()) {
    return BadRequest("from and to must be integers with 0 < from <= to <= the tree size");
  }
  ASSIGN_OR_RETURN(std::vector<Hash> proof, c.ledger()->GetConsistencyProof(*from, *to));
  return Respond(200, RenderConsistency(*from, *to, proof));
}

Result<HttpResponse> LedgerPublicKey(Call& c) {
  const Signer& signer = c.ledger()->signer();
  return Respond(200, RenderPublicKey(signer.name(), signer.key_id(), signer.public_key()));
}

Result<HttpResponse> LiabilityReport(Call& c) {
  ASSIGN_OR_RETURN(Period p, PeriodOf(c));
  ASSIGN_OR_RETURN(Liability l, c.loyalty->LiabilityReport(c.params.program, p.from_us, p.to_us));
  return Respond(200, RenderLiability(l));
}

Result<HttpResponse> BalancesReport(Call& c) {
  ASSIGN_OR_RETURN(PageArgs page, PageOf(c));
  ASSIGN_OR_RETURN(int64_t as_of, TimeParam(c, "as_of", c.ledger()->clock().NowMicros()));
  ASSIGN_OR_RETURN(Page<BalanceRow> rows,
                   c.loyalty->BalancesAsOf(c.params.program, as_of, page.cursor, page.limit));
  return Respond(200, RenderBalancePage(rows));
}

Result<Bucket> BucketOf(const Call& c) {
  const std::string* name = QueryValue(c.query, "bucket");
  if (name == nullptr || *name == "day") return Bucket::kDay;
  if (*name == "hour") return Bucket::kHour;
  if (*name == "month") return Bucket::kMonth;
  return BadRequest("bucket must be hour, day or month");
}

// The shortest length of a bucket, in microseconds.
int64_t BucketMicrosMin(Bucket b) {
  if (b == Bucket::kHour) return 3600 * kMicrosPerSecond;
  return b == Bucket::kDay ? kMicrosPerDay : 28 * kMicrosPerDay;
}

Result<HttpResponse> ActivityReport(Call& c) {
  ASSIGN_OR_RETURN(Bucket bucket, BucketOf(c));
  int64_t span = kActivityBucketsDefault * BucketMicrosMin(bucket);
  ASSIGN_OR_RETURN(int64_t to, TimeParam(c, "to", c.ledger()->clock().NowMicros()));
  ASSIGN_OR_RETURN(int64_t from, TimeParam(c, "from", std::max<int64_t>(0, to - span)));
  if (from > to) return BadRequest("from must not be after to");
  if ((to - from) / BucketMicrosMin(bucket) >= kActivityBucketsMax) {
    return BadRequest("at most " + std::to_string(kActivityBucketsMax) + " buckets per report");
  }
  ASSIGN_OR_RETURN(std::vector<ActivityBucket> buckets,
                   c.loyalty->Activity(c.params.program, from, to, bucket));
  return Respond(200, RenderActivity(buckets));
}

Result<HttpResponse> Replication(Call& c) {
  return Respond(200, RenderReplication(ReplicationRoleName(c.ledger()->role()), c.options.stream,
                                        c.ledger()->size()));
}

// A backup record kept in `file`, if it is there and parses.
std::optional<BackupRecord> ReadBackupRecord(const std::string& file) {
  Result<std::string> text = ReadWholeFile(file);
  if (!text.ok()) return std::nullopt;
  Result<BackupRecord> b = ParseBackupRecord(*text);
  if (!b.ok()) return std::nullopt;
  return *std::move(b);
}

// The backup made for this idempotency hash, if any: its record in DIR/.requests, or, if tallyd
// stopped between making the backup and keeping the record, the backup.json of a backup in DIR.
Result<std::optional<BackupRecord>> FindBackup(const std::string& dir,
                                               const std::string& idempotency) {
  std::optional<BackupRecord> kept = ReadBackupRecord(dir + "/.requests/" + idempotency + ".json");
  if (kept && kept->idempotency == idempotency) return kept;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (it->path().filename().string().front() == '.') continue;  // .requests, partial backups
    std::optional<BackupRecord> b = ReadBackupRecord((it->path() / "backup.json").string());
    if (b && b->idempotency == idempotency) return b;
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Status::Unavailable("cannot list " + dir + ": " + ec.message());
  }
  return std::optional<BackupRecord>();
}

// "backup-2026-11-24T020000.000000Z": the time, always with microseconds, without colons.
std::string DefaultBackupName(int64_t now_us) {
  int64_t fraction = now_us % kMicrosPerSecond;
  std::string seconds = FormatRfc3339(now_us - fraction);  // "...T02:00:00Z"
  seconds.pop_back();
  seconds.erase(std::remove(seconds.begin(), seconds.end(), ':'), seconds.end());
  char micros[16];
  std::snprintf(micros, sizeof(micros), ".%06lldZ", static_cast<long long>(fraction));
  return "backup-" + seconds + micros;
}

// POST /v1/admin/backups: tallyd's own backup of its data directory (Ledger::Backup) in
// options.backup_dir/NAME, with NAME/backup.json. One at a time: another request meanwhile is 409
// backup_in_progress. The answer is kept in BACKUP_DIR/.requests/HASH.json, so a repeat of the
// request (same API key and Idempotency-Key) answers the same even once the backup is gone; the
// same key with another body is 422 idempotency_key_reused. These keys are apart from the
// ledger's: a key once used for a ledger write is not refused here.
Result<HttpResponse> CreateBackup(Call& c) {
  ASSIGN_OR_RETURN(std::optional<std::string> name, ParseBackupRequest(c.request.body));
  const std::string& dir = c.options.backup_dir;
  if (dir.empty()) return Status::Unavailable("this server has no backup directory");
  // Never wait: each waiting request would hold a write thread through a whole backup.
  static std::mutex one_at_a_time;  // one per process, as there is one ledger
  std::unique_lock<std::mutex> lock(one_at_a_time, std::try_to_lock);
  if (!lock.owns_lock()) {
    return Status::AlreadyExists("another backup is being made; ask again when it is done",
                                 "backup_in_progress");
  }
  constexpr std::string_view kNul("\0", 1);
  BackupRecord b;
  b.idempotency = HashToHex(Sha256({c.who.key_id, kNul, c.idempotency_key}));
  b.request = HashToHex(RequestHash(c.request.method, c.path, c.request.body));
  ASSIGN_OR_RETURN(std::optional<BackupRecord> earlier, FindBackup(dir, b.idempotency));
  if (earlier && earlier->request != b.request) {
    return Status(Code::kFailedPrecondition,
                  "Idempotency-Key was used for backup " + earlier->name + " with another body",
                  "idempotency_key_reused");
  }
  if (earlier) return Replayable(true, Respond(201, RenderBackup(*earlier)));
  RETURN_IF_ERROR(RemovePartialBackups(dir));  // left by a crash; none is being written now
  int64_t now = c.ledger()->clock().NowMicros();
  b.created_at = FormatRfc3339(now);
  b.name = name ? *name : DefaultBackupName(now);
  b.path = dir + "/" + b.name;
  std::string record;  // rendered once: the backup's backup.json, and the kept answer
  ASSIGN_OR_RETURN(b.size, c.ledger()->Backup(b.path, [&b, &record](uint64_t size) {
    BackupRecord with_size = b;
    with_size.size = size;
    record = RenderBackupRecord(with_size);
    return record;
  }));
  std::error_code ec;
  std::filesystem::create_directories(dir + "/.requests", ec);
  Status recorded = ec ? Status::Unavailable("cannot create " + dir + "/.requests: " + ec.message())
                       : WriteSyncedFile(dir + "/.requests/" + b.idempotency + ".json", record);
  // The backup is made either way; without this record a repeat still finds its backup.json.
  if (!recorded.ok()) {
    std::fprintf(stderr, "tallyd: backup record: %s\n", recorded.ToString().c_str());
  }
  std::fprintf(stderr, "tallyd: backup %s written (size %llu)\n", b.path.c_str(),
               static_cast<unsigned long long>(b.size));
  return Respond(201, RenderBackup(b));
}

// Ledger::Promote catches up to the end of the stream and claims it; the old primary is fenced
// by the stream. Standalone, primary or fenced: 409 not_a_follower.
Result<HttpResponse> Promote(Call& c) {
  RETURN_IF_ERROR(ParseEmpty(c.request.body));
  RETURN_IF_ERROR(c.ledger()->Promote());
  std::fprintf(stderr, "tallyd: promoted to primary at entry %llu\n",
               static_cast<unsigned long long>(c.ledger()->size()));
  return Respond(200, RenderPromoted(ReplicationRoleName(c.ledger()->role()), c.ledger()->size()));
}

// ---------------------------------------------------------------------------------------------
// Routes.

// Who may call a route, besides admin keys (which may call every route).
enum Access : unsigned {
  kAdminOnly = 0,
  kCheckout = 1u << 0,
  kFinance = 1u << 1,
  kCustomerSelf = 1u << 2,     // a customer key, about its own program and customer
  kCustomerProgram = 1u << 3,  // a customer key, about its own program (handler checks more)
  kPublic = 1u << 4,           // anyone, without a key
};
constexpr unsigned kStaff = kCheckout | kFinance;

struct Route {
  std::string_view method;
  std::string_view pattern;  // also the route's name in the metrics
  unsigned access;
  std::string_view query;  // the query parameters allowed, space-separated
  Handler handler;         // null for a checkout write, which has:
  Prepare prepare;         // null for every other route
};

constexpr std::string_view kPaging = "limit cursor";

const Route kRoutes[] = {
    {"GET", "/healthz", kPublic, "", Health, nullptr},
    {"GET", "/readyz", kPublic, "", Ready, nullptr},
    {"GET", "/metrics", kPublic, "", MetricsText, nullptr},
    {"GET", "/v1/openapi.json", kPublic, "", OpenApi, nullptr},
    {"POST", "/v1/programs", kAdminOnly, "", CreateProgram, nullptr},
    {"GET", "/v1/programs", kStaff, kPaging, ListPrograms, nullptr},
    {"GET", "/v1/programs/{p}", kStaff, "", GetProgram, nullptr},
    {"PATCH", "/v1/programs/{p}", kAdminOnly, "", PatchProgram, nullptr},
    {"GET", "/v1/programs/{p}/customers/{c}", kStaff | kCustomerSelf, "", GetCustomer, nullptr},
    {"GET", "/v1/programs/{p}/customers/{c}/entries", kStaff | kCustomerSelf, kPaging,
     CustomerEntries, nullptr},
    {"GET", "/v1/programs/{p}/customers/{c}/lots", kStaff | kCustomerSelf, kPaging, CustomerLots,
     nullptr},
    {"POST", "/v1/programs/{p}/earn", kCheckout, "", nullptr, Earn},
    {"POST", "/v1/programs/{p}/redeem", kCheckout, "", nullptr, Redeem},
    {"POST", "/v1/programs/{p}/holds/{entry_id}/capture", kCheckout, "", nullptr, Capture},
    {"POST", "/v1/programs/{p}/holds/{entry_id}/void", kCheckout, "", nullptr, Void},
    {"POST", "/v1/programs/{p}/reversals", kCheckout, "", nullptr, Reverse},
    {"POST", "/v1/programs/{p}/adjustments", kAdminOnly, "", Adjust, nullptr},
    {"POST", "/v1/programs/{p}/expire", kAdminOnly, "", Expire, nullptr},
    {"POST", "/v1/programs/{p}/rewards", kAdminOnly, "", AddReward, nullptr},
    {"GET", "/v1/programs/{p}/rewards", kCheckout | kCustomerProgram, kPaging, ListRewards,
     nullptr},
    {"POST", "/v1/programs/{p}/referral-codes", kCheckout | kCustomerProgram, "", CreateCode,
     nullptr},
    {"GET", "/v1/programs/{p}/referral-codes/{code}", kCheckout | kCustomerProgram, "", GetCode,
     nullptr},
    {"POST", "/v1/programs/{p}/referrals", kCheckout, "", Refer, nullptr},
    {"GET", "/v1/programs/{p}/reports/liability", kFinance, "from to", LiabilityReport, nullptr},
    {"GET", "/v1/programs/{p}/reports/balances", kFinance, "as_of limit cursor", BalancesReport,
     nullptr},
    {"GET", "/v1/programs/{p}/reports/activity", kFinance, "from to bucket", ActivityReport,
     nullptr},
    {"POST", "/v1/api-keys", kAdminOnly, "", CreateApiKey, nullptr},
    {"DELETE", "/v1/api-keys/{id}", kAdminOnly, "", RevokeApiKey, nullptr},
    {"GET", "/v1/ledger/checkpoint", kStaff, "", LedgerCheckpoint, nullptr},
    {"GET", "/v1/ledger/entries", kFinance, "program type limit cursor", LedgerEntries, nullptr},
    {"GET", "/v1/ledger/entries/{id}", kStaff, "", LedgerEntry, nullptr},
    {"GET", "/v1/ledger/consistency", kStaff, "from to", LedgerConsistency, nullptr},
    {"GET", "/v1/ledger/public-key", kStaff, "", LedgerPublicKey, nullptr},
    {"GET", "/v1/admin/replication", kAdminOnly, "", Replication, nullptr},
    {"POST", "/v1/admin/promote", kAdminOnly, "", Promote, nullptr},
    {"POST", "/v1/admin/backups", kAdminOnly, "", CreateBackup, nullptr},
};

void SetParam(std::string_view placeholder, std::string_view value, PathParams* params) {
  std::string v(value);
  if (placeholder == "{p}") params->program = std::move(v);
  if (placeholder == "{c}") params->customer = std::move(v);
  if (placeholder == "{code}") params->code = std::move(v);
  if (placeholder == "{id}" || placeholder == "{entry_id}") params->id = std::move(v);
}

// Removes and returns the segment after the leading '/' of *s.
std::string_view NextSegment(std::string_view* s) {
  s->remove_prefix(1);
  size_t end = std::min(s->find('/'), s->size());
  std::string_view segment = s->substr(0, end);
  s->remove_prefix(end);
  return segment;
}

// Matches a path ("/a/b") against a pattern ("/a/{x}"); a placeholder takes one non-empty
// segment.
bool Match(std::string_view pattern, std::string_view path, PathParams* params) {
  if (path.empty() || path.front() != '/') return false;
  while (!pattern.empty() && !path.empty()) {
    std::string_view want = NextSegment(&pattern);
    std::string_view got = NextSegment(&path);
    if (!want.empty() && want.front() == '{') {
      if (got.empty()) return false;
      SetParam(want, got, params);
    } else if (want != got) {
      return false;
    }
  }
  return pattern.empty() && path.empty();
}

struct RouteMatch {
  const Route* route = nullptr;
  PathParams params;
  std::string allow;  // the methods of the path, when none matched the request's
};

RouteMatch FindRoute(std::string_view method, std::string_view path) {
  RouteMatch m;
  for (const Route& r : kRoutes) {
    PathParams params;
    if (!Match(r.pattern, path, &params)) continue;
    if (r.method == method) {
      m.route = &r;
      m.params = std::move(params);
      return m;
    }
    m.allow += (m.allow.empty() ? "" : ", ") + std::string(r.method);
  }
  return m;
}

// The role table of API.md; a customer key is confined to its program (and customer).
Status CheckAccess(const Principal& who, const Route& route, const PathParams& params) {
  bool allowed = who.role == Role::kAdmin ||
                 (who.role == Role::kCheckout && (route.access & kCheckout)) ||
                 (who.role == Role::kFinance && (route.access & kFinance));
  if (allowed) return Status::Ok();
  unsigned customer_access = route.access & (kCustomerSelf | kCustomerProgram);
  if (who.role != Role::kCustomer || customer_access == 0) {
    return Reject("forbidden", std::string("role ") + RoleName(who.role) + " may not do this");
  }
  bool own = params.program == who.program &&
             (customer_access == kCustomerProgram || params.customer == who.customer);
  return own ? Status::Ok() : NotFound();
}

// Ids in the path that cannot exist name nothing.
Status CheckPathIds(const PathParams& p) {
  for (const std::string* id : {&p.program, &p.customer, &p.code, &p.id}) {
    if (!id->empty() && !IsValidId(*id)) return NotFound();
  }
  return Status::Ok();
}

// Checks what every route checks before its handler: the key and its role, the ids in the path,
// the Idempotency-Key, the query. Fills in call->who, idempotency_key and query.
Status Admit(const Route& route, std::string_view query, const Loyalty& loyalty,
             const std::optional<Hash>& admin_key_hash, Call* call) {
  const HttpRequest& request = call->request;
  if (!(route.access & kPublic)) {
    ASSIGN_OR_RETURN(call->who, Authenticate(request, loyalty, admin_key_hash));
    RETURN_IF_ERROR(CheckAccess(call->who, route, call->params));
    RETURN_IF_ERROR(CheckPathIds(call->params));
  }
  if (request.method == "POST" || request.method == "PATCH") {
    ASSIGN_OR_RETURN(call->idempotency_key, IdempotencyKey(request, request.method == "POST"));
  }
  ASSIGN_OR_RETURN(call->query, ParseQuery(query, route.query));
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Router::Router(Loyalty* loyalty, RouterOptions options)
    : loyalty_(loyalty), options_(std::move(options)) {
  TALLY_CHECK(loyalty_ != nullptr);
  if (!options_.admin_key.empty()) admin_key_hash_ = Sha256(options_.admin_key);
}

namespace {

struct Target {
  std::string_view path, query;
};
Target SplitTarget(std::string_view target) {
  size_t question = std::min(target.find('?'), target.size());
  return {target.substr(0, question), target.substr(std::min(question + 1, target.size()))};
}

// The answer to an exception escaping the router.
HttpResponse Thrown() {
  try {
    throw;
  } catch (const std::exception& e) {
    return Problem(Status::Internal(std::string("exception: ") + e.what()));
  } catch (...) {
    return Problem(Status::Internal("unknown exception"));
  }
}

// make(&route) answers a request and names its route; the answer (a 500 if make throws) is
// counted for the metrics from `start`.
template <typename Make>
HttpResponse Counted(Metrics& metrics, std::chrono::steady_clock::time_point start, Make&& make) {
  std::string route = "unmatched";
  HttpResponse response;
  try {
    response = make(&route);
  } catch (...) {
    response = Thrown();
  }
  std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
  metrics.Observe(route, response.status, seconds.count());
  return response;
}

// A handler's result as the response: an error as a problem, naming the primary if it is one
// of not being the primary.
HttpResponse Answered(Result<HttpResponse> r, const RouterOptions& options) {
  if (r.ok()) return std::move(r).value();
  return Problem(NamePrimary(r.status(), options.primary_url));
}

}  // namespace

HttpResponse Router::Handle(const HttpRequest& request) {
  return Counted(metrics_, std::chrono::steady_clock::now(),
                 [&](std::string* route) { return Dispatch(request, route); });
}

bool Router::Start(const HttpRequest& request, HttpResponder respond) {
  auto start = std::chrono::steady_clock::now();
  Target t = SplitTarget(request.target);
  RouteMatch m = FindRoute(request.method, t.path);
  if (m.route == nullptr || m.route->prepare == nullptr) return false;
  const Route& route = *m.route;
  // Answers through the server; the response is made, and the request counted, on its thread.
  auto answer = [this, start, name = route.pattern,
                 respond = std::move(respond)](std::function<HttpResponse()> make) {
    respond([this, start, name, make = std::move(make)] {
      return Counted(metrics_, start, [&](std::string* counted_as) {
        *counted_as = name;
        return make();
      });
    });
  };
  std::optional<Result<AppendRequest>> prepared;
  try {
    Call call{request, t.path, std::move(m.params), {}, {}, {}, loyalty_, options_, metrics_};
    Status admitted = Admit(route, t.query, *loyalty_, admin_key_hash_, &call);
    if (!admitted.ok()) {
      answer([admitted] { return Problem(admitted); });
      return true;
    }
    prepared = route.prepare(call);
  } catch (...) {
    HttpResponse thrown = Thrown();
    answer([thrown] { return thrown; });
    return true;
  }
  loyalty_->Submit(std::move(*prepared), [this, answer](Result<WriteResult> w) {
    answer([this, w = std::move(w)] {
      return Answered(EntryWritten(*loyalty_->ledger(), w), options_);
    });
  });
  return true;
}

HttpResponse Router::Dispatch(const HttpRequest& request, std::string* route_name) {
  auto [path, query] = SplitTarget(request.target);
  RouteMatch m = FindRoute(request.method, path);
  if (m.route == nullptr && m.allow.empty()) return Problem(NotFound("no such path"));
  if (m.route == nullptr) {
    HttpResponse r = Problem(Reject("method_not_allowed", request.method + " is not allowed"));
    r.headers.emplace_back("Allow", m.allow);
    return r;
  }
  const Route& route = *m.route;
  *route_name = std::string(route.pattern);

  Call call{request, path, std::move(m.params), {}, {}, {}, loyalty_, options_, metrics_};
  Status admitted = Admit(route, query, *loyalty_, admin_key_hash_, &call);
  if (!admitted.ok()) return Problem(admitted);
  return Answered(route.prepare ? EntryWritten(call, loyalty_->Write(route.prepare(call)))
                                : route.handler(call),
                  options_);
}

}  // namespace tally
