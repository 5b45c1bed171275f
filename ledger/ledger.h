// Ledger: the append-only, double-entry log with its derived state, Merkle tree and signed
// checkpoints. One writer thread (the sequencer) decides and commits appends in groups: one
// RocksDB WriteBatch and one signed checkpoint per group. A second thread (the syncer) syncs the
// WAL while the writer goes on to the next group; a group is answered, and shown to readers,
// only once a sync covers it. Reads go through a snapshot of the durable groups and never wait
// for the writer.
#ifndef TALLY_LEDGER_LEDGER_H_
#define TALLY_LEDGER_LEDGER_H_

#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ledger/clock.h"
#include "ledger/entry.h"
#include "ledger/hash.h"
#include "ledger/limits.h"
#include "ledger/state.h"
#include "ledger/status.h"

namespace tally {

class GroupLog;
class Signer;
struct CommitGroup;

// How a ledger takes part in replication (DESIGN.md, "Beyond one machine").
enum class ReplicationRole {
  kStandalone,  // no replicated log: the default
  kPrimary,     // publishes every commit group to the log before writing it locally
  kFollower,    // applies the log's groups, refuses appends
  kFenced,      // was primary, another primary took over: refuses appends
};
const char* ReplicationRoleName(ReplicationRole role);

struct LedgerOptions {
  // The data directory: RocksDB in DIR/db, the signing key in DIR/signing.key (created on first
  // open, mode 0600) and its public key in DIR/signing.pub.
  std::string dir;
  // The checkpoint origin line and the signed-note key name.
  std::string origin = "tally.local/ledger";
  // The clock; null means the system clock. Must outlive the Ledger.
  const Clock* clock = nullptr;
  // Requests decided in one commit group at the most.
  size_t commit_group_requests_max = kCommitGroupRequestsMax;
  // Fault injection for tests: called before each group's write; a non-OK status is treated as
  // a failed write. Null in production.
  std::function<Status()> before_write;
  // Fault injection for tests: called on the sync thread before each sync of the WAL; a non-OK
  // status is treated as a failed sync. Null in production.
  std::function<Status()> before_sync;
  // Disk-full guard: while the file system holding `dir` has fewer bytes free for unprivileged
  // use than this (statvfs f_bavail * f_frsize, looked at most once a second), Append refuses
  // every request with ResourceExhausted "insufficient_storage" before it reaches RocksDB, so
  // the disk never fills under the WAL (a failed write would fail-stop the ledger). Reads keep
  // working; writes resume by themselves once space is freed. 0 disables the guard.
  uint64_t min_free_bytes = kMinFreeBytesDefault;
  // RocksDB's flushes and compactions together write at most this many bytes per second; 0 for
  // no limit (Store::Options::background_write_bytes_per_sec).
  int64_t background_write_bytes_per_sec = kBackgroundWriteBytesPerSecDefault;
  // Replication: the log groups are published to (null: standalone). Must outlive the Ledger.
  GroupLog* group_log = nullptr;
  // With group_log: open as a follower (apply the log, refuse appends) rather than a primary.
  bool follower = false;
};

// What the writer hands a request's decider: the state as of every earlier decision (including
// those of earlier requests in the same commit group), the time, and a way to append entries.
class DecideContext {
 public:
  virtual ~DecideContext() = default;
  virtual const StateReader& state() const = 0;
  // The time given to every entry of this request: never less than any earlier entry's.
  virtual int64_t now_us() const = 0;
  // The id the next emitted entry will get.
  virtual uint64_t next_id() const = 0;
  // Appends an entry. The writer fills in id, time_us, actor, idempotency_key, request_hash and
  // every posting's balance_after; applies it, so later decisions see it; and refuses it with
  // AlreadyExists (reason from BusinessKeyOf) if its business key is taken, InvalidArgument if
  // it is malformed or a balance would overflow. Returns the entry as appended.
  virtual Result<Entry> Emit(Entry e) = 0;
};

// Decides a request against current state: emits zero or more entries, or fails. A failure
// rolls back everything the request emitted. Runs on the writer thread: keep it short, and
// never block in it.
using Decider = std::function<Status(DecideContext& ctx)>;

struct AppendRequest {
  std::string actor;            // API key id ("" for the system)
  std::string idempotency_key;  // "" for none; else the request is recorded under (actor, key)
  Hash request_hash{};          // identifies the request body for replays
  Decider decide;
};

struct AppendResult {
  uint64_t first_id = 0;  // the entries written (or replayed): [first_id, first_id + count)
  uint32_t count = 0;
  bool replayed = false;   // an earlier request with the same key and hash; nothing written
  uint64_t tree_size = 0;  // the tree size of the checkpoint covering the entries
};

// Called once with the outcome of a submitted request (Ledger::Submit).
using AppendDone = std::function<void(Result<AppendResult>)>;

struct Receipt {
  uint64_t leaf_index = 0;
  std::string entry;  // canonical bytes
  std::vector<Hash> inclusion_proof;
  std::string checkpoint;  // signed note
  uint64_t tree_size = 0;
  // When the checkpoint is signed by a rotated key: receipts of the signing_key entries that
  // introduced each key since the first, in order. A verifier holding only the first public key
  // checks each link under the key in force, then this receipt under the last.
  std::vector<Receipt> key_chain;
};

struct CheckpointInfo {
  std::string origin;
  uint64_t size = 0;
  Hash root{};
  std::string note;  // the signed note text
};

// Counters for /metrics. Histogram buckets are cumulative-ready: counts per bucket, with the
// upper bounds in kGroupSizeBounds and kWriteSecondsBounds (a last, unbounded bucket follows).
inline constexpr double kGroupSizeBounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
inline constexpr double kWriteSecondsBounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                 0.005,  0.01,    0.025,  0.05,  0.1};
struct LedgerStats {
  uint64_t entries = 0;  // entries in the log
  uint64_t groups = 0;   // commit groups written since open
  uint64_t group_size_counts[std::size(kGroupSizeBounds) + 1] = {};
  uint64_t write_seconds_counts[std::size(kWriteSecondsBounds) + 1] = {};
  double write_seconds_sum = 0;
  uint64_t group_entries_sum = 0;
  // RocksDB's flushes and compactions: their write limit in bytes per second (0: none), and the
  // bytes they wrote through it since open (0 without a limit).
  int64_t background_write_limit = 0;
  int64_t background_write_bytes = 0;
};

class Ledger {
 public:
  // Opens (creating if missing) the data directory and starts the writer thread.
  static Result<std::unique_ptr<Ledger>> Open(const LedgerOptions& options);
  // Stops the writer after the queued requests are done.
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Queues a request and waits until it is durable (synced) or refused. A repeat of an earlier
  // request (same actor, key and hash) returns the original ids with replayed set and writes
  // nothing; the same key with another hash is FailedPrecondition "idempotency_key_reused".
  // After a failed write, every append is Unavailable ("ledger_stopped") until reopened; while
  // the disk has less than min_free_bytes free, ResourceExhausted ("insufficient_storage").
  // Thread-safe.
  Result<AppendResult> Append(AppendRequest request);
  // The same without waiting: `done` gets what Append would return. It is called on the
  // ledger's sync thread once the request's group is durable (or refused), or at once on this
  // thread when the request is refused before it is queued. It must be quick, must not throw, and
  // must not wait on the ledger (hand longer work to another thread). Thread-safe.
  void Submit(AppendRequest request, AppendDone done);

  // A consistent read view of the current state; with `holds`, also a tree size whose every
  // commit group is in the view (for caches: see CustomerChangedAt). Thread-safe.
  std::unique_ptr<StateReader> Read(uint64_t* holds = nullptr) const;
  // The tree size after the last commit group that changed the customer's record, balances or
  // lots (keys.h CustomerOfKey), 0 if none since open. A view read holding size S is current
  // while this is at most S. It is raised before the group is written, so it covers every
  // acknowledged change. Customers share the slots of a fixed table: another customer's change
  // can make a view look changed (a needless re-read), never the reverse. Thread-safe.
  uint64_t CustomerChangedAt(std::string_view program, std::string_view customer) const;
  // The same for API keys as a whole: the tree size after the last commit group that created,
  // changed or revoked any API key (0 if none since open).
  uint64_t ApiKeysChangedAt() const;

  Result<Entry> GetEntry(uint64_t id) const;
  Result<std::string> GetEntryBytes(uint64_t id) const;
  // The entry's canonical bytes, its inclusion proof, and the checkpoint of the commit group
  // that first covered it. Deterministic: the same receipt every time.
  Result<Receipt> GetReceipt(uint64_t id) const;
  // A consistency proof between two sizes of the tree (0 < from <= to <= size).
  Result<std::vector<Hash>> GetConsistencyProof(uint64_t from, uint64_t to) const;
  CheckpointInfo LatestCheckpoint() const;
  // The signed checkpoint stored for a tree size, if a commit group ended there.
  Result<std::optional<std::string>> GetCheckpoint(uint64_t size) const;

  // A customer's entries, newest first, starting below `before_id` (exclusive; nullopt for the
  // newest). Returns at most `limit` entries.
  Result<std::vector<Entry>> CustomerEntries(const std::string& program,
                                             const std::string& customer,
                                             std::optional<uint64_t> before_id, size_t limit) const;

  uint64_t size() const;  // entries in the log
  LedgerStats Stats() const;
  bool stopped() const;  // true after a failed write (fail-stop)
  // Whether Append would take a request now: OK, Unavailable "ledger_stopped" after a failed
  // write, or ResourceExhausted "insufficient_storage" below min_free_bytes (for /readyz).
  Status Writable() const;
  const Signer& signer() const;
  const Clock& clock() const;
  const LedgerOptions& options() const;
  Store* store() const;

  // Key rotation: makes a new signing key (DIR/signing.key.next until it takes over), appends a
  // signing_key entry endorsed by the current key (the checkpoint covering it is still signed by
  // the current key), then signs every later checkpoint with the new key. The old key is kept as
  // DIR/signing.key.<entry id>.old. See docs/operations.md.
  Result<AppendResult> RotateSigningKey();

  // Replication. A follower applies each group of the log, in order: the entries are decoded
  // strictly and applied exactly as Rebuild does (no rule is re-run), the tree is extended, and
  // the group's checkpoint must carry the same size and root and a valid signature of the
  // ledger's key, or DataLoss. Groups already held are skipped. Not for standalone ledgers.
  Status ApplyGroup(const CommitGroup& group, uint64_t seq);
  // A follower becomes primary: it reads the log to its end, applies what it lacks, and from
  // then on publishes after the last group. The old primary is fenced by the log itself.
  Status Promote();
  ReplicationRole role() const;
  uint64_t stream_seq() const;  // the log sequence of the last group held (0: none)

  // Writes a backup of the data directory to `out` (ledger/backup.h, WriteBackup): a RocksDB
  // checkpoint of the store made by this process, so that RocksDB keeps every file it copies,
  // and signing.pub. Writes go on meanwhile; the copy holds every write acknowledged before the
  // call. Returns the tree size of the copy's newest signed checkpoint. `manifest`, if set,
  // makes OUT/backup.json from that size (BackupOptions::manifest).
  Result<uint64_t> Backup(const std::string& out,
                          std::function<std::string(uint64_t size)> manifest = nullptr) const;

 private:
  struct Impl;
  explicit Ledger(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally

#endif  // TALLY_LEDGER_LEDGER_H_
