// tallyd: the Tally server. Opens the ledger in a data directory, serves the HTTP API (API.md)
// and runs the background work (expiry, ends of pending windows) until SIGTERM or SIGINT.
//
//   tallyd --data DIR --listen HOST:PORT [--tls-cert FILE --tls-key FILE] [--threads N]
//          [--write-threads N] [--customer-cache N]
//          [--origin NAME] [--due-interval-ms N] [--read-timeout-ms N] [--min-free-bytes N]
//          [--background-write-rate N]
//          [--replicate URLS | --follow URLS] [--stream NAME] [--stream-replicas N]
//
// Exit codes: 0 after a clean shutdown, 1 when the server cannot run (data directory, ledger,
// port), 2 for bad flags.
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "api/http_server.h"
#include "api/nats_log.h"
#include "api/replication.h"
#include "api/router.h"
#include "ledger/files.h"
#include "ledger/hash.h"
#include "ledger/ledger.h"
#include "ledger/limits.h"
#include "ledger/loyalty.h"
#include "ledger/signer.h"

namespace tally {
namespace {

constexpr size_t kApiSecretBytes = 32;
// Reads run on the I/O threads, about one per core; writes wait for their durable commit on a pool
// of their own, which bounds how many requests one commit group can take (http_server.h).
// One I/O thread per core, and at least two.
int ThreadsDefault() { return std::max(2, static_cast<int>(std::thread::hardware_concurrency())); }
constexpr int kWriteThreadsDefault = 128;
constexpr int kThreadsMax = 1024;
constexpr int64_t kDueIntervalMsDefault = 1000;

constexpr const char* kUsage =
    "usage: tallyd --data DIR --listen HOST:PORT [--tls-cert FILE --tls-key FILE]\n"
    "              [--threads N] [--write-threads N] [--origin NAME] [--due-interval-ms N]\n"
    "              [--read-timeout-ms N] [--customer-cache N]\n"
    "              [--min-free-bytes N] [--background-write-rate N] [--backup-dir DIR]\n"
    "              [--replicate URLS | --follow URLS] [--stream NAME] [--stream-replicas N]\n"
    "       tallyd rotate-key --data DIR [--origin NAME] [--replicate URLS [--stream NAME]]\n"
    "                         (tallyd stopped; docs/operations.md)\n"
    "\n"
    "  --data DIR             data directory (created if missing)\n"
    "  --listen HOST:PORT     address to serve on; port 0 picks a free port\n"
    "  --tls-cert FILE        PEM certificate chain (with --tls-key: serve HTTPS)\n"
    "  --tls-key FILE         PEM private key\n"
    "  --threads N            HTTP I/O threads, which also answer reads (default: one per\n"
    "                         core, at least 2)\n"
    "  --write-threads N      threads that run writes other than the checkout writes (earn,\n"
    "                         redeem, capture, void, reversal) and wait for their commit: the\n"
    "                         most such writes in flight at once (default 128)\n"
    "  --customer-cache N     customer views kept in memory, each until that customer changes\n"
    "                         (default 65536; 0: off)\n"
    "  --origin NAME          checkpoint origin and signing key name (default tally.local/ledger)\n"
    "  --due-interval-ms N    how often expiry and pending windows are processed (default 1000)\n"
    "  --read-timeout-ms N    limit on reading a request's header, then its body; a client that\n"
    "                         sends too slowly is dropped (default 10000)\n"
    "  --min-free-bytes N     refuse writes (507 insufficient_storage) while the data directory's\n"
    "                         file system has less than N bytes free (default 268435456; 0: off)\n"
    "  --background-write-rate N\n"
    "                         bytes per second RocksDB's flushes and compactions may write\n"
    "                         together (default 33554432; at least 1048576; 0: no limit)\n"
    "  --backup-dir DIR       where POST /v1/admin/backups writes backups (default DATA/backups;\n"
    "                         on the data directory's file system the copy is hard links)\n"
    "  --replicate URLS       run as the primary of a NATS JetStream stream: publish every commit\n"
    "                         group to it before answering (URLS: nats://HOST:PORT[,...])\n"
    "  --follow URLS          run as a follower: apply the stream, serve reads, refuse writes\n"
    "                         (503 not_primary) until POST /v1/admin/promote\n"
    "  --stream NAME          the stream (default TALLY; created if absent)\n"
    "  --stream-replicas N    replicas of a stream this server creates (default 3; 1 for a\n"
    "                         single NATS server, for tests only)\n"
    "\n"
    "TALLY_ADMIN_KEY, when set, is accepted as an admin API key.\n";

struct Flags {
  bool help = false;
  std::string data;
  std::string host;
  uint16_t port = 0;
  std::string tls_cert, tls_key;
  int threads = ThreadsDefault();
  int write_threads = kWriteThreadsDefault;
  size_t customer_cache = kCustomerCacheEntriesDefault;
  std::string origin = LedgerOptions().origin;
  int64_t due_interval_ms = kDueIntervalMsDefault;
  int read_timeout_ms = kReadTimeoutMs;
  uint64_t min_free_bytes = kMinFreeBytesDefault;
  int64_t background_write_rate = kBackgroundWriteBytesPerSecDefault;
  std::string backup_dir;         // "": DATA/backups
  std::string replicate, follow;  // NATS URLs: a primary, or a follower; neither: standalone
  std::optional<std::string> stream;
  std::optional<int> stream_replicas;
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
  for (std::string_view flag :
       {"--data", "--listen", "--tls-cert", "--tls-key", "--threads", "--write-threads",
        "--customer-cache", "--origin", "--due-interval-ms", "--read-timeout-ms",
        "--min-free-bytes", "--background-write-rate", "--backup-dir", "--replicate", "--follow",
        "--stream", "--stream-replicas"}) {
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
  else if (name == "--backup-dir")
    f->backup_dir = std::string(value);
  else if (name == "--threads") {
    ASSIGN_OR_RETURN(int64_t n, ParseInt(name, value, 1, kThreadsMax));
    f->threads = static_cast<int>(n);
  } else if (name == "--write-threads") {
    ASSIGN_OR_RETURN(int64_t n, ParseInt(name, value, 1, kThreadsMax));
    f->write_threads = static_cast<int>(n);
  } else if (name == "--customer-cache") {
    ASSIGN_OR_RETURN(int64_t n, ParseInt(name, value, 0, 1 << 24));
    f->customer_cache = static_cast<size_t>(n);
  } else if (name == "--due-interval-ms") {
    ASSIGN_OR_RETURN(f->due_interval_ms, ParseInt(name, value, 1, 86'400'000));
  } else if (name == "--read-timeout-ms") {
    ASSIGN_OR_RETURN(int64_t ms, ParseInt(name, value, 1, 3'600'000));
    f->read_timeout_ms = static_cast<int>(ms);
  } else if (name == "--min-free-bytes") {
    ASSIGN_OR_RETURN(int64_t bytes, ParseInt(name, value, 0, std::numeric_limits<int64_t>::max()));
    f->min_free_bytes = static_cast<uint64_t>(bytes);
  } else if (name == "--background-write-rate") {
    ASSIGN_OR_RETURN(f->background_write_rate,
                     ParseInt(name, value, 0, kBackgroundWriteBytesPerSecMax));
    if (f->background_write_rate != 0 &&
        f->background_write_rate < kBackgroundWriteBytesPerSecMin) {
      return Bad("--background-write-rate must be 0 (no limit) or at least " +
                 std::to_string(kBackgroundWriteBytesPerSecMin) + " bytes per second");
    }
  } else if (name == "--replicate" || name == "--follow") {
    if (value.empty()) return Bad(std::string(name) + " needs nats://HOST:PORT[,...]");
    (name == "--replicate" ? f->replicate : f->follow) = std::string(value);
  } else if (name == "--stream") {
    if (!IsValidStreamName(std::string(value))) {
      return Bad("--stream must be 1 to 64 of A-Z a-z 0-9 - _");
    }
    f->stream = std::string(value);
  } else if (name == "--stream-replicas") {
    ASSIGN_OR_RETURN(int64_t n, ParseInt(name, value, 1, 5));
    f->stream_replicas = static_cast<int>(n);
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
  if (!f.replicate.empty() && !f.follow.empty()) {
    return Bad("--replicate and --follow exclude each other");
  }
  if ((f.stream || f.stream_replicas) && f.replicate.empty() && f.follow.empty()) {
    return Bad("--stream and --stream-replicas need --replicate or --follow");
  }
  return f;
}

Status Errno(const std::string& what) {
  return Status::Internal(what + ": " + std::strerror(errno));
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
  return SyncPath(dir);
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

// Without TALLY_ADMIN_KEY, a log without any API key gets one admin key, printed once on standard
// error: standard output carries only the line that says tallyd is ready (API.md).
Status BootstrapAdminKey(Loyalty* loyalty) {
  ASSIGN_OR_RETURN(Page<Entry> keys, loyalty->ListEntries("", EntryType::kApiKey, "", 1));
  if (!keys.items.empty()) return Status::Ok();
  WriteContext w{"", "bootstrap-admin", Sha256("bootstrap-admin")};
  ApiKeyRequest r;
  r.role = Role::kAdmin;
  r.name = "bootstrap admin";
  ASSIGN_OR_RETURN(ApiKeyCreated created, loyalty->CreateApiKey(w, r));
  std::fprintf(stderr, "tallyd admin key: %s\n", created.key.c_str());
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
      // A follower or a fenced primary writes nothing: the primary does this work.
      ReplicationRole role = loyalty_->ledger()->role();
      if (role == ReplicationRole::kFollower || role == ReplicationRole::kFenced) continue;
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
  o.blocking_threads = f.write_threads;
  o.may_block = [](const HttpRequest& r) { return r.method != "GET" && r.method != "HEAD"; };
  o.read_timeout_ms = f.read_timeout_ms;
  o.tls_cert_file = f.tls_cert;
  o.tls_key_file = f.tls_key;
  return o;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "tallyd: %s\n", message.c_str());
  return 1;
}

bool Replicated(const Flags& f) { return !f.replicate.empty() || !f.follow.empty(); }

// The stream of --replicate or --follow.
Result<std::unique_ptr<NatsGroupLog>> ConnectLog(const Flags& f) {
  NatsLogOptions o;
  o.urls = f.replicate.empty() ? f.follow : f.replicate;
  if (f.stream) o.stream = *f.stream;
  if (f.stream_replicas) o.replicas = *f.stream_replicas;
  return NatsGroupLog::Connect(o);
}

RouterOptions MakeRouterOptions(const Flags& f, NatsGroupLog* log,
                                const ReplicationWorker* worker) {
  const char* env_key = std::getenv("TALLY_ADMIN_KEY");
  RouterOptions o;
  std::error_code ec;
  o.backup_dir =
      std::filesystem::absolute(f.backup_dir.empty() ? f.data + "/backups" : f.backup_dir, ec)
          .lexically_normal()
          .string();
  if (ec) o.backup_dir.clear();
  o.admin_key = env_key == nullptr ? "" : env_key;
  if (log != nullptr) {
    o.ready = [worker] { return worker->Ready(); };
    o.stream = log->stream();
    o.primary_url = [log] { return log->LastPrimaryUrl(); };
  }
  return o;
}

// Without TALLY_ADMIN_KEY, a fresh standalone ledger or primary gets one admin key. A follower
// gets its keys from the stream. A primary that cannot publish yet starts without one.
Status Bootstrap(Loyalty* loyalty, const Flags& flags) {
  if (!flags.follow.empty()) return Status::Ok();
  Status s = BootstrapAdminKey(loyalty);
  if (!s.ok() && !flags.replicate.empty()) {
    std::fprintf(stderr, "tallyd: no bootstrap admin key (the stream refused it): %s\n",
                 s.ToString().c_str());
    return Status::Ok();
  }
  return s;
}

// Runs the server until `signals` arrive. Returns the exit code.
int Run(const Flags& flags, const sigset_t& signals) {
  std::error_code ec;
  std::filesystem::create_directories(flags.data, ec);
  if (ec) return Fail("cannot create the data directory " + flags.data + ": " + ec.message());
  std::unique_ptr<NatsGroupLog> log;  // outlives the ledger, which publishes to it
  if (Replicated(flags)) {
    Result<std::unique_ptr<NatsGroupLog>> connected = ConnectLog(flags);
    if (!connected.ok()) return Fail("replication: " + connected.status().message());
    log = std::move(connected).value();
  }
  LedgerOptions ledger_options;
  ledger_options.dir = flags.data;
  ledger_options.origin = flags.origin;
  ledger_options.min_free_bytes = flags.min_free_bytes;
  ledger_options.background_write_bytes_per_sec = flags.background_write_rate;
  ledger_options.group_log = log.get();
  ledger_options.follower = !flags.follow.empty();
  Result<std::unique_ptr<Ledger>> ledger = Ledger::Open(ledger_options);
  if (!ledger.ok()) return Fail("cannot open the ledger: " + ledger.status().ToString());
  if (!log && (*ledger)->stream_seq() > 0) {
    // Alone, it would write entries the stream and its followers never see.
    return Fail("this data directory is replicated (stream position " +
                std::to_string((*ledger)->stream_seq()) +
                "): start it with --replicate or --follow");
  }
  Result<std::string> secret = LoadOrCreateSecret(flags.data);
  if (!secret.ok()) return Fail("cannot load the API key secret: " + secret.status().ToString());
  auto loyalty =
      std::make_unique<Loyalty>(ledger->get(), LoyaltyOptions{*secret, flags.customer_cache});
  std::unique_ptr<ReplicationWorker> worker;
  if (log) worker = std::make_unique<ReplicationWorker>(ledger->get(), log.get());

  RouterOptions router_options = MakeRouterOptions(flags, log.get(), worker.get());
  const bool bootstrap = router_options.admin_key.empty();
  Router router(loyalty.get(), std::move(router_options));
  HttpServerOptions server_options = ServerOptions(flags);
  // Checkout writes wait for their commit without a thread (Router::Start); other writes wait
  // on one of the write threads.
  server_options.start = [&router](const HttpRequest& r, HttpResponder respond) {
    return router.Start(r, std::move(respond));
  };
  auto server = HttpServer::Start(std::move(server_options),
                                  [&router](const HttpRequest& r) { return router.Handle(r); });
  if (!server.ok()) return Fail(server.status().message());
  if (log) log->SetPrimaryUrl((*server)->url());
  // After binding, so that a start that cannot listen creates no key.
  Status s = bootstrap ? Bootstrap(loyalty.get(), flags) : Status::Ok();
  if (!s.ok()) return Fail("cannot create the bootstrap admin key: " + s.ToString());
  std::printf("tallyd listening on %s\n", (*server)->url().c_str());
  std::fflush(stdout);

  DueWorker due(loyalty.get(), std::chrono::milliseconds(flags.due_interval_ms));
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  (*server)->Stop();  // finishes in-flight requests
  if (worker) worker->Stop();
  due.Stop();
  loyalty.reset();
  ledger->reset();  // syncs and joins the writer
  return 0;
}

}  // namespace
}  // namespace tally

namespace tally {
namespace {

// `tallyd rotate-key --data DIR [--origin NAME] [--replicate URLS [--stream NAME]]`: replaces
// the checkpoint signing key through a signing_key entry endorsed by the current key
// (docs/operations.md). Needs tallyd stopped. A replicated primary's directory needs
// --replicate: the entry goes through the stream like every other.
constexpr const char* kRotateUsage =
    "tallyd: usage: tallyd rotate-key --data DIR [--origin NAME] [--replicate URLS "
    "[--stream NAME]]\n";

int RotateKey(int argc, char** argv) {
  Flags f;
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    bool known = arg == "--data" || arg == "--origin" || arg == "--replicate" || arg == "--stream";
    if (!known || i + 1 >= argc || !SetFlag(arg, argv[i + 1], &f).ok()) {
      std::fputs(kRotateUsage, stderr);
      return 2;
    }
    ++i;
  }
  if (f.data.empty()) {
    std::fprintf(stderr, "tallyd: rotate-key needs --data DIR\n");
    return 2;
  }
  std::unique_ptr<NatsGroupLog> log;
  if (!f.replicate.empty()) {
    auto connected = ConnectLog(f);
    if (!connected.ok()) return Fail("replication: " + connected.status().message());
    log = std::move(connected).value();
  }
  LedgerOptions options;
  options.dir = f.data;
  options.origin = f.origin;
  options.group_log = log.get();
  auto ledger = Ledger::Open(options);
  if (!ledger.ok()) return Fail(ledger.status().ToString());
  if (!log && (*ledger)->stream_seq() > 0) {
    return Fail("rotate-key: this data directory is replicated: pass --replicate URLS");
  }
  std::string old_key = VerifierKey(f.origin, (*ledger)->signer().public_key());
  auto r = (*ledger)->RotateSigningKey();
  if (!r.ok()) return Fail("rotate-key: " + r.status().ToString());
  std::printf("rotated signing key at entry %llu\n  old: %s\n  new: %s\n",
              static_cast<unsigned long long>(r->first_id), old_key.c_str(),
              VerifierKey(f.origin, (*ledger)->signer().public_key()).c_str());
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
