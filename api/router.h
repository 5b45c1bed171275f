// Router: Tally's HTTP API (API.md) as a pure function from a request to a response. It knows
// nothing of sockets: HttpServer calls Handle on its pool threads, and tests call it directly.
//
// For every request, in this order: the route is matched (404 not_found, 405
// method_not_allowed); unless the route is public (operations, the OpenAPI document), the
// bearer key is authenticated (401 unauthorized) and the role checked against the route (403
// forbidden; a customer key asking about another program or customer gets 404); a POST needs a
// valid Idempotency-Key (400 idempotency_key_required); query parameters are checked (400); then
// the handler runs. Every error is an application/problem+json body whose status and code come
// from one mapping (ErrorFor in router.cc).
//
// Idempotency: POST requires the header; PATCH accepts it (without one, the change is not
// recorded for replay); DELETE /v1/api-keys/{id} derives its key from the id, so a repeat by the
// same caller answers 204 again. The request hash covers method, path (without query) and body.
//
// Replication (tallyd --replicate / --follow) lives in the ledger: GET /v1/admin/replication
// reports Ledger::role(), POST /v1/admin/promote calls Ledger::Promote (409 not_a_follower unless
// a follower), and writes a follower or fenced primary refuses answer 503 not_primary.
//
// Write responses are built only from the log (the entries a write appended, their receipts, the
// records in their payloads), so a replayed request gets the same status and the same bytes as
// the first time, plus "Idempotency-Replayed: true".
//
// Thread-safe: Handle may be called concurrently.
#ifndef TALLY_API_ROUTER_H_
#define TALLY_API_ROUTER_H_

#include <functional>
#include <optional>
#include <string>

#include "api/http_server.h"
#include "api/metrics.h"
#include "ledger/hash.h"
#include "ledger/loyalty.h"

namespace tally {

struct RouterOptions {
  // The value of TALLY_ADMIN_KEY: accepted as an admin key whose actor id is "env-admin".
  // "" (the default) accepts no such key.
  std::string admin_key;
  // For GET /readyz: not OK while the server does not take writes for a reason of its own (a
  // follower, a fenced primary); the status becomes the 503's detail and code. Null (the
  // default): no such reason. Either way /readyz also answers 503 while the ledger refuses
  // writes (Ledger::Writable: fail-stop, disk below min_free_bytes).
  std::function<Status()> ready;
  // Replication: the stream's name for GET /v1/admin/replication (nullopt: standalone).
  std::optional<std::string> stream;
  // Replication: where the primary is (its HTTP URL, "" when unknown), named in the detail of
  // 503 not_primary answers. Null: never named.
  std::function<std::string()> primary_url;
  // POST /v1/admin/backups writes each backup in a new directory here (an absolute path on the
  // file system of the data directory, so the copy can be hard links). "": backups answer 503.
  std::string backup_dir;
};

class Router {
 public:
  // REQUIRES: loyalty outlives the Router.
  Router(Loyalty* loyalty, RouterOptions options);
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Answers one request. Never throws.
  HttpResponse Handle(const HttpRequest& request);

  // For HttpServerOptions::start: takes a checkout write (earn, redeem, capture, void,
  // reversal) and answers it through `respond` once its commit is durable, without holding a
  // thread while it waits; the response is what Handle would give, made on the server's thread.
  // Returns false, having done nothing, for every other request. Errors (and exceptions in
  // the checks) are answered through `respond` like any response; only memory running out
  // before that can throw, which the server answers with a 500 of its own.
  bool Start(const HttpRequest& request, HttpResponder respond);

  // The request counters and latencies that GET /metrics renders (Handle records every
  // response it makes).
  const Metrics& metrics() const { return metrics_; }

 private:
  // Answers the request and names the route that matched (for the metrics).
  HttpResponse Dispatch(const HttpRequest& request, std::string* route);

  Loyalty* loyalty_;
  RouterOptions options_;
  std::optional<Hash> admin_key_hash_;  // SHA-256 of options_.admin_key, when set
  Metrics metrics_;
};

}  // namespace tally

#endif  // TALLY_API_ROUTER_H_
