// tally-audit: offline checks and reports over a Tally data directory (DIR/db, DIR/signing.pub),
// using only the log and the ledger library. Every function here opens DIR/db as a RocksDB
// secondary (never taking the primary's lock), so it works on a stopped directory, a backup, or
// the directory of a running tallyd. docs/audit.md describes the commands.
#ifndef TALLY_TOOLS_AUDIT_H_
#define TALLY_TOOLS_AUDIT_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "ledger/loyalty.h"
#include "ledger/rebuild.h"
#include "ledger/status.h"

namespace tally {

// Exit codes of every command.
inline constexpr int kExitClean = 0;        // verified, or done
inline constexpr int kExitDiscrepancy = 1;  // something was found wrong (or a receipt is invalid)
inline constexpr int kExitCannotRun = 2;    // bad arguments, missing directory, unreadable store

// Runs the tally-audit command line (args without the program name), writing results to `out`
// and errors to `err`. Returns the exit code.
int RunAudit(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// ---- verify ----

struct VerifyOptions {
  std::string data_dir;
  // The FIRST signing key of the log (PEM). Empty: DIR/signing.pub, which is the current key,
  // accepted if it is the first key of the rotation chain or its latest.
  std::string public_key_path;
};

struct VerifyResult {
  int exit_code = kExitCannotRun;
  std::string error;  // why it could not run (exit code 2)
  std::vector<Discrepancy> discrepancies;
  uint64_t entries = 0;           // entries in the log
  uint64_t checkpoints = 0;       // stored checkpoints checked
  uint64_t derived_keys = 0;      // derived keys rebuilt and compared
  std::vector<std::string> keys;  // verifier keys of the chain, first key first
  // Whether a digest of the replay differed from the store's or lost track, so that the derived
  // state was compared again exactly, with a second replay (docs/audit.md).
  bool compared_exactly = false;
  double open_seconds = 0, log_seconds = 0, rebuild_seconds = 0, compare_seconds = 0,
         total_seconds = 0;
};

// Verifies everything through one snapshot: every entry decodes strictly with contiguous ids;
// every stored checkpoint parses, has one origin, the root of the log at its size, a signature
// by the key in force at that size, and is consistent with the one before it (an RFC 9162
// consistency proof over the rebuilt tree); the latest checkpoint in the default column family
// is the one of the full log; signing-key rotations chain from the first key; and every derived
// column family equals, byte for byte, the state rebuilt by replaying the log.
// exit_code: kExitClean, kExitDiscrepancy (discrepancies is not empty) or kExitCannotRun (error).
VerifyResult Verify(const VerifyOptions& options);

// The JSON report of a verification (counts, discrepancies, timings).
std::string VerifyReportJson(const VerifyOptions& options, const VerifyResult& result);

// ---- report ----

struct ReportOptions {
  std::string data_dir;
  std::string program;
  int64_t from_us = 0;
  int64_t to_us = 0;  // exclusive
};

// Remaining lot points by the UTC month their lots expire in; month "never" for lots without
// expiry.
struct ExpiryMonth {
  std::string month;  // "YYYY-MM" or "never"
  int64_t points = 0;
};

struct AuditReport {
  std::string program;
  Liability liability;
  std::vector<BalanceRow> balances;  // every customer with a posting before `to`
  std::vector<ExpiryMonth> expiry_schedule;
  uint64_t program_entry_id = 0;  // the program entry whose config is used (the latest one)
};

// The liability roll-forward of `program` for [from, to), from the log alone, with the same
// Classify and RollForward as Loyalty::LiabilityReport; balances and lots as of `to` (every
// entry before it). The currency and point value come from the program's latest program entry
// in the whole log, as the API does. NotFound if the program has no program entry;
// InvalidArgument if from > to; DataLoss if the log does not decode or replay.
Result<AuditReport> BuildReport(const ReportOptions& options);
std::string ReportJson(const AuditReport& report);
// The roll-forward line under a header, a blank line, the balances table, a blank line, the
// expiry schedule.
std::string ReportCsv(const AuditReport& report);

// ---- export ----

enum class ExportFormat { kJsonl, kLedger };

// Writes every entry of the log: one JSON object per line, or a ledger-cli journal (one
// transaction per entry with postings, account names unchanged, amounts in the commodity PTS).
// DataLoss if an entry does not decode.
Status Export(const std::string& data_dir, ExportFormat format, std::ostream& out);

// One entry as a JSON object (no trailing newline).
std::string EntryJsonLine(const Entry& e);
// One entry as a ledger-cli transaction, or a comment line for an entry without postings.
std::string LedgerTransaction(const Entry& e);

// ---- verify-receipt ----

struct ReceiptCheck {
  bool valid = false;
  std::string detail;  // what was verified, or why it is invalid
  uint64_t leaf_index = 0;
  uint64_t tree_size = 0;
  std::string key;  // verifier key that signed the checkpoint
};

// Checks a receipt (API.md) given as JSON text, or a write response {"entry", "receipt"}, with
// `first_key` the raw Ed25519 key trusted first. A "key_chain" of receipts of signing_key
// entries, in order, extends trust from `first_key` to later keys. InvalidArgument if the text
// is not a receipt at all (not JSON, a field missing or of the wrong JSON type: could not run);
// otherwise a ReceiptCheck, valid or not (bad base64 or hashes make it invalid).
Result<ReceiptCheck> VerifyReceipt(const std::string& json_text, const std::string& first_key);

// ---- scan ----

struct ScanResult {
  struct Family {
    std::string name;
    uint64_t keys = 0;
    uint64_t bytes = 0;  // keys and values
  };
  std::vector<Family> families;  // every column family, in Cf order
  double seconds = 0;            // opening included
};

// Reads every key and value of every column family once, two column families at a time, as
// verify does (RocksDB checks each block's checksum as it reads it): what no verifier that
// compares every stored byte can beat, and a quick check that every block is readable. DataLoss
// if a block is corrupt.
Result<ScanResult> ScanStore(const std::string& data_dir);

// ---- backup ----

// Copies DIR/db to out_dir/db as a consistent RocksDB checkpoint, and DIR/signing.pub (and, with
// with_secrets, DIR/signing.key and DIR/api.secret) into out_dir, through WriteBackup
// (ledger/backup.h). out_dir must not exist. Only for a stopped directory, whose lock it holds
// meanwhile: FailedPrecondition "store_in_use" while a tallyd runs on it (a running tallyd makes
// its own backups: POST /v1/admin/backups).
Status Backup(const std::string& data_dir, const std::string& out_dir, bool with_secrets);

}  // namespace tally

#endif  // TALLY_TOOLS_AUDIT_H_
