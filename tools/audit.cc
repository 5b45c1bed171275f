// tally-audit's command line, the secondary store every command reads through, backups, and
// times.
#include "tools/audit.h"

#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "ledger/backup.h"
#include "ledger/rfc3339.h"
#include "ledger/signer.h"
#include "tools/audit_internal.h"

namespace tally {
namespace audit_internal {

Result<std::string> MakeTempDir() {
  std::error_code ec;
  std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) return Status::Unavailable("no temporary directory: " + ec.message());
  std::string tmpl = (base / "tally-audit-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    return Status::Unavailable("cannot create a temporary directory in " + base.string());
  }
  return tmpl;
}

Result<std::unique_ptr<SecondaryStore>> SecondaryStore::Open(const std::string& data_dir) {
  std::string db = data_dir + "/db";
  std::error_code ec;
  if (!std::filesystem::is_directory(db, ec)) {
    return Status::InvalidArgument("no Tally store at " + db);
  }
  ASSIGN_OR_RETURN(std::string temp, MakeTempDir());
  std::unique_ptr<SecondaryStore> s(new SecondaryStore());
  s->temp_dir_ = std::move(temp);
  Store::Options options;
  options.mode = Store::Mode::kSecondary;
  options.create_if_missing = false;
  options.secondary_dir = s->temp_dir_;
  ASSIGN_OR_RETURN(s->store_, Store::Open(db, options));
  return s;
}

SecondaryStore::~SecondaryStore() {
  store_.reset();  // close before its files go
  std::error_code ec;
  std::filesystem::remove_all(temp_dir_, ec);
}

}  // namespace audit_internal

// ---- backup ----

Status Backup(const std::string& data_dir, const std::string& out_dir, bool with_secrets) {
  std::string db = data_dir + "/db";
  std::error_code ec;
  if (!std::filesystem::is_directory(db, ec)) {
    return Status::InvalidArgument("no Tally store at " + db);
  }
  // A secondary cannot keep a running tallyd from deleting the files it copies: only a stopped
  // directory is backed up here, and the lock keeps tallyd from starting on it meanwhile.
  Result<StoreLock> lock = StoreLock::Acquire(db);
  if (!lock.ok() && lock.status().reason() == "store_in_use") {
    return Status::FailedPrecondition(
        data_dir + " is in use by a running tallyd: ask it for the backup (POST " +
            "/v1/admin/backups, docs/operations.md), or stop it first",
        "store_in_use");
  }
  RETURN_IF_ERROR(lock.status());
  ASSIGN_OR_RETURN(auto source, audit_internal::SecondaryStore::Open(data_dir));
  BackupOptions o;
  o.checkpoint = [&](const std::string& db_dir) {
    return source->store().CreateCheckpoint(db_dir);
  };
  o.with_secrets = with_secrets;
  return WriteBackup(data_dir, out_dir, o).status();
}

// ---- command line ----

namespace {

constexpr const char* kUsage =
    "usage:\n"
    "  tally-audit verify --data DIR [--public-key FILE] [--report FILE]\n"
    "  tally-audit report --data DIR --program P [--from T] [--to T] [--format json|csv]\n"
    "  tally-audit export --data DIR [--format jsonl|ledger]\n"
    "  tally-audit verify-receipt --receipt FILE --public-key FILE\n"
    "  tally-audit backup --data DIR --out DIR2 [--with-key]\n"
    "  tally-audit scan --data DIR\n"
    "exit codes: 0 clean, 1 discrepancy (or invalid receipt), 2 could not run\n";

struct Flags {
  std::map<std::string, std::string> values;
  std::set<std::string> switches;
  std::string Get(const std::string& name, const std::string& fallback = {}) const {
    auto it = values.find(name);
    return it == values.end() ? fallback : it->second;
  }
};

// Parses "--name value" pairs and bare "--switch"es after the command. Every name in
// `required` must be given.
Result<Flags> ParseFlags(const std::vector<std::string>& args, const std::set<std::string>& known,
                         const std::set<std::string>& switches,
                         const std::set<std::string>& required) {
  Flags f;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (switches.count(a)) {
      f.switches.insert(a);
    } else if (!known.count(a)) {
      return Status::InvalidArgument("unknown flag " + a);
    } else if (i + 1 == args.size()) {
      return Status::InvalidArgument(a + " needs a value");
    } else if (!f.values.emplace(a, args[++i]).second) {
      return Status::InvalidArgument(a + " given twice");
    }
  }
  for (const std::string& r : required) {
    if (!f.values.count(r)) return Status::InvalidArgument(r + " is required");
  }
  return f;
}

int CannotRun(std::ostream& err, const std::string& why) {
  err << "tally-audit: " << why << "\n";
  return kExitCannotRun;
}

// A command that failed: data that does not decode or add up is a discrepancy (1), anything else
// means it could not run (2).
int Failed(std::ostream& err, const Status& st) {
  err << "tally-audit: " << st.message() << "\n";
  return st.code() == Code::kDataLoss ? kExitDiscrepancy : kExitCannotRun;
}

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  return f ? Status::Ok() : Status::Unavailable("cannot write " + path);
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::NotFound("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int RunVerify(const Flags& f, std::ostream& out, std::ostream& err) {
  VerifyOptions o{f.Get("--data"), f.Get("--public-key")};
  VerifyResult r = Verify(o);
  if (r.exit_code == kExitCannotRun) return CannotRun(err, r.error);
  for (const Discrepancy& d : r.discrepancies) out << "DISCREPANCY " << d.ToString() << "\n";
  char rate[64];
  std::snprintf(rate, sizeof(rate), "%.0f entries/s (%.2f s)",
                r.total_seconds > 0 ? static_cast<double>(r.entries) / r.total_seconds : 0.0,
                r.total_seconds);
  out << (r.discrepancies.empty()
              ? "verify: clean"
              : "verify: " + std::to_string(r.discrepancies.size()) + " discrepancies")
      << ": " << r.entries << " entries, " << r.checkpoints << " checkpoints, " << r.derived_keys
      << " derived keys compared, " << rate << "\n";
  if (f.values.count("--report")) {
    Status st = WriteFile(f.Get("--report"), VerifyReportJson(o, r));
    if (!st.ok()) return CannotRun(err, st.message());
  }
  return r.exit_code;
}

Result<ReportOptions> ReportOptionsFrom(const Flags& f) {
  ReportOptions o{f.Get("--data"), f.Get("--program"), 0, 0};
  if (f.values.count("--from")) {
    ASSIGN_OR_RETURN(o.from_us, ParseRfc3339(f.Get("--from")));
  }
  if (f.values.count("--to")) {
    ASSIGN_OR_RETURN(o.to_us, ParseRfc3339(f.Get("--to")));
  } else {
    o.to_us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  }
  return o;
}

int RunReport(const Flags& f, std::ostream& out, std::ostream& err) {
  std::string format = f.Get("--format", "json");
  if (format != "json" && format != "csv") return CannotRun(err, "--format is json or csv");
  auto o = ReportOptionsFrom(f);
  if (!o.ok()) return CannotRun(err, o.status().message());
  auto report = BuildReport(*o);
  if (!report.ok()) return Failed(err, report.status());
  out << (format == "json" ? ReportJson(*report) : ReportCsv(*report));
  return kExitClean;
}

int RunExport(const Flags& f, std::ostream& out, std::ostream& err) {
  std::string format = f.Get("--format", "jsonl");
  if (format != "jsonl" && format != "ledger") return CannotRun(err, "--format is jsonl or ledger");
  Status st = Export(f.Get("--data"),
                     format == "jsonl" ? ExportFormat::kJsonl : ExportFormat::kLedger, out);
  return st.ok() ? kExitClean : Failed(err, st);
}

int RunVerifyReceipt(const Flags& f, std::ostream& out, std::ostream& err) {
  auto text = ReadFile(f.Get("--receipt"));
  if (!text.ok()) return CannotRun(err, text.status().message());
  auto key = ReadPublicKeyPem(f.Get("--public-key"));
  if (!key.ok()) return CannotRun(err, "public key: " + key.status().message());
  auto check = VerifyReceipt(*text, *key);
  if (!check.ok()) return CannotRun(err, check.status().message());
  out << (check->valid ? "valid: " : "invalid: ") << check->detail << "\n";
  return check->valid ? kExitClean : kExitDiscrepancy;
}

int RunBackup(const Flags& f, std::ostream& out, std::ostream& err) {
  std::string to = f.Get("--out");
  Status st = Backup(f.Get("--data"), to, f.switches.count("--with-key") > 0);
  if (!st.ok()) return CannotRun(err, "backup: " + st.message());
  out << "backup written to " << to << "; verifying it\n";
  return RunVerify(Flags{{{"--data", to}}, {}}, out, err);
}

int RunScan(const Flags& f, std::ostream& out, std::ostream& err) {
  auto r = ScanStore(f.Get("--data"));
  if (!r.ok()) return Failed(err, r.status());
  uint64_t keys = 0, bytes = 0;
  for (const ScanResult::Family& family : r->families) {
    out << "  " << family.name << ": " << family.keys << " keys, " << family.bytes << " bytes\n";
    keys += family.keys;
    bytes += family.bytes;
  }
  char line[160];
  std::snprintf(line, sizeof(line), "scan: %llu keys, %llu bytes read in %.2f s (%.0f keys/s)\n",
                static_cast<unsigned long long>(keys), static_cast<unsigned long long>(bytes),
                r->seconds, r->seconds > 0 ? static_cast<double>(keys) / r->seconds : 0.0);
  out << line;
  return kExitClean;
}

}  // namespace

int RunAudit(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  using Runner = int (*)(const Flags&, std::ostream&, std::ostream&);
  struct Command {
    std::set<std::string> known, switches, required;
    Runner run;
  };
  static const std::map<std::string, Command> kCommands = {
      {"verify", {{"--data", "--public-key", "--report"}, {}, {"--data"}, RunVerify}},
      {"report",
       {{"--data", "--program", "--from", "--to", "--format"},
        {},
        {"--data", "--program"},
        RunReport}},
      {"export", {{"--data", "--format"}, {}, {"--data"}, RunExport}},
      {"verify-receipt",
       {{"--receipt", "--public-key"}, {}, {"--receipt", "--public-key"}, RunVerifyReceipt}},
      {"backup", {{"--data", "--out"}, {"--with-key"}, {"--data", "--out"}, RunBackup}},
      {"scan", {{"--data"}, {}, {"--data"}, RunScan}},
  };
  if (args.empty() || args[0] == "--help" || args[0] == "help") {
    (args.empty() ? err : out) << kUsage;
    return args.empty() ? kExitCannotRun : kExitClean;
  }
  auto it = kCommands.find(args[0]);
  if (it == kCommands.end()) return CannotRun(err, "unknown command " + args[0] + "\n" + kUsage);
  auto flags = ParseFlags(args, it->second.known, it->second.switches, it->second.required);
  if (!flags.ok()) return CannotRun(err, flags.status().message() + "\n" + kUsage);
  return it->second.run(*flags, out, err);
}

}  // namespace tally
