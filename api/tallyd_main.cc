// tallyd: the Tally server. Opens the ledger in a data directory, serves the HTTP API (API.md)
// and runs the background work (expiry, ends of pending windows) until SIGTERM or SIGINT.
//
//   tallyd --data DIR --listen HOST:PORT [--tls-cert FILE --tls-key FILE] [--threads N]
//          [--origin NAME] [--due-interval-ms N]
//
// Exit codes: 0 after a clean shutdown, 1 when the server cannot run (data directory, ledger,
// port), 2 for bad flags.
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "api/http_server.h"
#include "api/router.h"
#include "ledger/hash.h"
#include "ledger/ledger.h"
#include "ledger/loyalty.h"
#include "ledger/signer.h"

namespace tally {
namespace {

constexpr size_t kApiSecretBytes = 32;
constexpr int kThreadsDefault = 32;  // handlers block on durable commits; see http_server.h
constexpr int kThreadsMax = 1024;
constexpr int64_t kDueIntervalMsDefault = 1000;

constexpr const char* kUsage =
    "usage: tallyd --data DIR --listen HOST:PORT [--tls-cert FILE --tls-key FILE]\n"
    "              [--threads N] [--origin NAME] [--due-interval-ms N]\n"
    "       tallyd rotate-key --data DIR [--origin NAME]   (tallyd stopped; docs/operations.md)\n"
    "\n"
    "  --data DIR             data directory (created if missing)\n"
    "  --listen HOST:PORT     address to serve on; port 0 picks a free port\n"
    "  --tls-cert FILE        PEM certificate chain (with --tls-key: serve HTTPS)\n"
    "  --tls-key FILE         PEM private key\n"
    "  --threads N            HTTP worker threads (default 32)\n"
    "  --origin NAME          checkpoint origin and signing key name (default tally.local/ledger)\n"
    "  --due-interval-ms N    how often expiry and pending windows are processed (default 1000)\n"
    "\n"
    "TALLY_ADMIN_KEY, when set, is accepted as an admin API key.\n";

struct Flags {
  bool help = false;
  std::string data;
  std::string host;
  uint16_t port = 0;
  std::string tls_cert, tls_key;
  int threads = kThreadsDefault;
  std::string origin = LedgerOptions().origin;
  int64_t due_interval_ms = kDueIntervalMsDefault;
};

Status Bad(std::string message) { return Status::InvalidArgument(std::move(message)); }

Result<int64_t> ParseInt(std::string_view flag, std::string_view text, int64_t min, int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < min || v > max) {
    return Bad(std::string(flag) + " must be an integer from " + std::to_string(min) + " to " +
               std::to_string(max));
  }
  return v;
}

// HOST:PORT, HOST possibly a bracketed IPv6 address.
Status ParseListen(std::string_view text, Flags* f) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return Bad("--listen must be HOST:PORT");
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  ASSIGN_OR_RETURN(int64_t port,
                   ParseInt("the port of --listen", text.substr(colon + 1), 0, 65535));
  f->host = std::string(host);
  f->port = static_cast<uint16_t>(port);
  return Status::Ok();
}

bool IsFlag(std::string_view name) {
  for (std::string_view flag : {"--data", "--listen", "--tls-cert", "--tls-key", "--threads",
                                "--origin", "--due-interval-ms"}) {
    if (name == flag) return true;
  }
  return false;
}

Status SetFlag(std::string_view name, std::string_view value, Flags* f) {
  if (name == "--data")
    f->data = std::string(value);
  else if (name == "--listen")
    return ParseListen(value, f);
  else if (name == "--tls-cert")
    f->tls_cert = std::string(value);
  else if (name == "--tls-key")
    f->tls_key = std::string(value);
  else if (name == "--origin")
    f->origin = std::string(value);
  else if (name == "--threads") {
    ASSIGN_OR_RETURN(int64_t n, ParseInt(name, value, 1, kThreadsMax));
    f->threads = static_cast<int>(n);
  } else if (name == "--due-interval-ms") {
    ASSIGN_OR_RETURN(f->due_interval_ms, ParseInt(name, value, 1, 86'400'000));
  } else {
    return Bad("unknown flag " + std::string(name) + " (see --help)");
  }
  return Status::Ok();
}

// Flags as "--name value" or "--name=value".
Result<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      f.help = true;
      return f;
    }
    if (arg.substr(0, 2) != "--") return Bad("unexpected argument " + std::string(arg));
    size_t eq = arg.find('=');
    std::string_view name = arg.substr(0, eq);
    if (!IsFlag(name)) return Bad("unknown flag " + std::string(name) + " (see --help)");
    std::string_view value;
    if (eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return Bad(std::string(name) + " needs a value");
    }
    RETURN_IF_ERROR(SetFlag(name, value, &f));
  }
  if (f.data.empty()) return Bad("--data DIR is required");
  if (f.host.empty()) return Bad("--listen HOST:PORT is required");
  if (f.tls_cert.empty() != f.tls_key.empty()) return Bad("--tls-cert and --tls-key go together");
  return f;
}

Status Errno(const std::string& what) {
  return Status::Internal(what + ": " + std::strerror(errno));
}

Status SyncDirectory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("open " + dir);
  int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? Status::Ok() : Errno("fsync " + dir);
}

// Reads DIR/api.secret: a regular file of exactly 32 bytes that only its owner may access.
Result<std::optional<std::string>> ReadSecret(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return std::optional<std::string>();
  if (fd < 0) return Errno("open " + path);
  struct stat st;
  std::string secret(kApiSecretBytes + 1, '\0');
  ssize_t n = ::fstat(fd, &st) == 0 ? ::read(fd, secret.data(), secret.size()) : -1;
  ::close(fd);
  if (n < 0) return Errno("read " + path);
  if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
    return Status::FailedPrecondition(path + " must be a regular file of mode 0600");
  }
  if (static_cast<size_t>(n) != kApiSecretBytes) {
    return Status::DataLoss(path + " must hold exactly 32 bytes");
  }
  secret.resize(kApiSecretBytes);
  return std::optional<std::string>(std::move(secret));
}

Status WriteNewSecret(const std::string& dir, const std::string& path) {
  std::string secret(kApiSecretBytes, '\0');
  if (::getrandom(secret.data(), secret.size(), 0) != static_cast<ssize_t>(secret.size())) {
    return Errno("getrandom");
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("create " + path);
  bool ok = ::write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size()) &&
            ::fsync(fd) == 0;
  Status s = ok ? Status::Ok() : Errno("write " + path);
  ::close(fd);
  if (!s.ok()) return s;
  return SyncDirectory(dir);
}

// The secret API keys are derived from: DIR/api.secret, created on first start.
Result<std::string> LoadOrCreateSecret(const std::string& dir) {
  const std::string path = dir + "/api.secret";
  ASSIGN_OR_RETURN(std::optional<std::string> secret, ReadSecret(path));
  if (secret) return *secret;
  RETURN_IF_ERROR(WriteNewSecret(dir, path));
  ASSIGN_OR_RETURN(secret, ReadSecret(path));
  if (!secret) return Status::Internal(path + " vanished after it was written");
  return *secret;
}

// Without TALLY_ADMIN_KEY, a log without any API key gets one admin key, printed once.
Status BootstrapAdminKey(Loyalty* loyalty) {
  ASSIGN_OR_RETURN(Page<Entry> keys, loyalty->ListEntries("", EntryType::kApiKey, "", 1));
  if (!keys.items.empty()) return Status::Ok();
  WriteContext w{"", "bootstrap-admin", Sha256("bootstrap-admin")};
  ApiKeyRequest r;
  r.role = Role::kAdmin;
  r.name = "bootstrap admin";
  ASSIGN_OR_RETURN(ApiKeyCreated created, loyalty->CreateApiKey(w, r));
  std::printf("tallyd admin key: %s\n", created.key.c_str());
  std::fflush(stdout);
  return Status::Ok();
}

// Calls Loyalty::RunDueWork every interval on its own thread, as one more writer client.
class DueWorker {
 public:
  DueWorker(Loyalty* loyalty, std::chrono::milliseconds interval)
      : loyalty_(loyalty), interval_(interval), thread_([this] { Loop(); }) {}
  ~DueWorker() { Stop(); }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, interval_, [this] { return stop_; })) {
      lock.unlock();
      Report(loyalty_->RunDueWork());
      lock.lock();
    }
  }

  // Logs the first failure of a run of failures, and the recovery.
  void Report(const Result<uint64_t>& r) {
    if (!r.ok() && !failing_) {
      std::fprintf(stderr, "tallyd: background work failed: %s\n", r.status().ToString().c_str());
    }
    if (r.ok() && failing_) std::fprintf(stderr, "tallyd: background work recovered\n");
    failing_ = !r.ok();
  }

  Loyalty* loyalty_;
  std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  bool failing_ = false;
  std::thread thread_;  // last: starts after the members above exist
};

HttpServerOptions ServerOptions(const Flags& f) {
  HttpServerOptions o;
  o.host = f.host;
  o.port = f.port;
  o.threads = f.threads;
  o.tls_cert_file = f.tls_cert;
  o.tls_key_file = f.tls_key;
  return o;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "tallyd: %s\n", message.c_str());
  return 1;
}

// Runs the server until `signals` arrive. Returns the exit code.
int Run(const Flags& flags, const sigset_t& signals) {
  std::error_code ec;
  std::filesystem::create_directories(flags.data, ec);
  if (ec) return Fail("cannot create the data directory " + flags.data + ": " + ec.message());
  LedgerOptions ledger_options;
  ledger_options.dir = flags.data;
  ledger_options.origin = flags.origin;
  Result<std::unique_ptr<Ledger>> ledger = Ledger::Open(ledger_options);
  if (!ledger.ok()) return Fail("cannot open the ledger: " + ledger.status().ToString());
  Result<std::string> secret = LoadOrCreateSecret(flags.data);
  if (!secret.ok()) return Fail("cannot load the API key secret: " + secret.status().ToString());
  auto loyalty = std::make_unique<Loyalty>(ledger->get(), LoyaltyOptions{*secret});

  const char* env_key = std::getenv("TALLY_ADMIN_KEY");
  RouterOptions router_options;
  router_options.admin_key = env_key == nullptr ? "" : env_key;
  const bool bootstrap = router_options.admin_key.empty();
  Router router(loyalty.get(), std::move(router_options));
  auto server = HttpServer::Start(ServerOptions(flags),
                                  [&router](const HttpRequest& r) { return router.Handle(r); });
  if (!server.ok()) return Fail(server.status().message());
  // After binding, so that a start that cannot listen creates no key.
  Status s = bootstrap ? BootstrapAdminKey(loyalty.get()) : Status::Ok();
  if (!s.ok()) return Fail("cannot create the bootstrap admin key: " + s.ToString());
  std::printf("tallyd listening on %s\n", (*server)->url().c_str());
  std::fflush(stdout);

  DueWorker due(loyalty.get(), std::chrono::milliseconds(flags.due_interval_ms));
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  (*server)->Stop();  // finishes in-flight requests
  due.Stop();
  loyalty.reset();
  ledger->reset();  // syncs and joins the writer
  return 0;
}

}  // namespace
}  // namespace tally

namespace tally {
namespace {

// `tallyd rotate-key --data DIR [--origin NAME]`: replaces the checkpoint signing key through a
// signing_key entry endorsed by the current key (docs/operations.md). Needs tallyd stopped.
int RotateKey(int argc, char** argv) {
  std::string data, origin = LedgerOptions().origin;
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    if ((arg == "--data" || arg == "--origin") && i + 1 < argc) {
      (arg == "--data" ? data : origin) = argv[++i];
    } else {
      std::fprintf(stderr, "tallyd: usage: tallyd rotate-key --data DIR [--origin NAME]\n");
      return 2;
    }
  }
  if (data.empty()) {
    std::fprintf(stderr, "tallyd: rotate-key needs --data DIR\n");
    return 2;
  }
  LedgerOptions options;
  options.dir = data;
  options.origin = origin;
  auto ledger = Ledger::Open(options);
  if (!ledger.ok()) {
    std::fprintf(stderr, "tallyd: %s\n", ledger.status().ToString().c_str());
    return 1;
  }
  std::string old_key = VerifierKey(origin, (*ledger)->signer().public_key());
  auto r = (*ledger)->RotateSigningKey();
  if (!r.ok()) {
    std::fprintf(stderr, "tallyd: rotate-key: %s\n", r.status().ToString().c_str());
    return 1;
  }
  std::printf("rotated signing key at entry %llu\n  old: %s\n  new: %s\n",
              static_cast<unsigned long long>(r->first_id), old_key.c_str(),
              VerifierKey(origin, (*ledger)->signer().public_key()).c_str());
  return 0;
}

}  // namespace
}  // namespace tally

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "rotate-key") return tally::RotateKey(argc, argv);
  tally::Result<tally::Flags> flags = tally::ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "tallyd: %s\n", flags.status().message().c_str());
    return 2;
  }
  if (flags->help) {
    std::fputs(tally::kUsage, stdout);
    return 0;
  }
  // Block the shutdown signals before any thread starts, so that every thread inherits the mask
  // and only sigwait in Run receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  return tally::Run(*flags, signals);
}
