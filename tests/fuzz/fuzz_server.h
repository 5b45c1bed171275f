// The server that the HTTP fuzz targets talk to: a Router over a real Ledger and Loyalty in a
// temporary directory (under /dev/shm when it exists, so that the synced writes are cheap), made
// once per process and never destroyed, with programs, keys, customers, a referral code and
// holds already in it, so that fuzz inputs reach the handlers and not only the error paths.
//
// The clock is a ManualClock that only the fuzz input moves (forward).
//
// The state is shared by all the inputs of a run, so an input's outcome can depend on the inputs
// before it. A crash found this way is usually reproduced by its input alone; when it is not, run
// the target over the run's corpus (the inputs that led there).
#ifndef TALLY_TESTS_FUZZ_FUZZ_SERVER_H_
#define TALLY_TESTS_FUZZ_FUZZ_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "api/http_server.h"
#include "api/router.h"
#include "ledger/clock.h"
#include "ledger/ledger.h"
#include "ledger/loyalty.h"

namespace tally::fuzz {

// Who a fuzzed request authenticates as.
enum class Principal : uint8_t {
  kNone = 0,      // no Authorization header
  kAdmin = 1,     // the TALLY_ADMIN_KEY equivalent (kAdminKey)
  kCheckout = 2,  // a checkout key
  kFinance = 3,   // a finance key
  kAlice = 4,     // a customer key for acme/alice
  kRevoked = 5,   // a revoked checkout key
  kBob = 6,       // a customer key for beta/bob
  kAsSent = 7,    // only the headers the input itself carries
};

// The admin key of the fuzzed server (RouterOptions::admin_key).
inline constexpr std::string_view kAdminKey = "fuzz-admin-key";

class FuzzServer {
 public:
  // The process's server, made on first use. Aborts if it cannot be made.
  static FuzzServer& Get();

  Router& router() { return *router_; }
  Ledger& ledger() { return *ledger_; }
  ManualClock& clock() { return clock_; }

  // The bearer key of `p` ("" for kNone and kAsSent).
  const std::string& KeyOf(Principal p) const;

  // Replaces the placeholders that seeds use for values only known at run time: $CODE (alice's
  // referral code in acme), $EARN (an earn of alice in acme), $HOLD (a pending earn of bob in
  // acme), $RESV (a reserved redemption of alice in acme).
  std::string Expand(std::string_view text) const;

 private:
  FuzzServer();

  std::string dir_;
  ManualClock clock_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Loyalty> loyalty_;
  std::unique_ptr<Router> router_;
  std::string keys_[8];
  std::string code_, earn_, hold_, reserved_;
};

// Parses a fuzz input of the form
//   byte 0: bits 0-2 a Principal; bit 3 add a fresh Idempotency-Key when the input has none;
//           bits 4-5 advance the clock by 0, 1 s, 1 h or 31 days before the request.
//   then:   "METHOD TARGET\n", header lines "Name: value\n", an empty line, the body.
// into a request (header names lower-cased, as HttpServer gives them), expanding the
// placeholders. Returns false for an input too short to be one.
bool RequestFromFuzzInput(FuzzServer& server, std::string_view input, HttpRequest* request);

}  // namespace tally::fuzz

#endif  // TALLY_TESTS_FUZZ_FUZZ_SERVER_H_
