// Store: the ledger's storage, RocksDB behind the library's own interface. No RocksDB type
// appears here; column families are named by Cf (keys.h).
#ifndef TALLY_LEDGER_STORE_H_
#define TALLY_LEDGER_STORE_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ledger/keys.h"
#include "ledger/limits.h"
#include "ledger/status.h"

namespace tally {

// A consistent read view of the store. Reads through it agree with each other.
class Snapshot {
 public:
  virtual ~Snapshot() = default;
};

// A set of writes applied atomically by Store::Write.
class Store;
class StoreBatch {
 public:
  explicit StoreBatch(const Store& store);
  ~StoreBatch();
  StoreBatch(const StoreBatch&) = delete;
  StoreBatch& operator=(const StoreBatch&) = delete;

  void Put(Cf cf, std::string_view key, std::string_view value);
  void Delete(Cf cf, std::string_view key);
  // Deletes every key in [begin, end) with one range tombstone. The tree column family only:
  // reads of the others skip range tombstones (cheaper, and they never hold one).
  void DeleteRange(Cf cf, std::string_view begin, std::string_view end);
  size_t bytes() const;
  size_t count() const;

 private:
  friend class Store;
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

// Visits one key and value; returns false to stop the scan.
using ScanFn = std::function<bool(std::string_view key, std::string_view value)>;

class Store {
 public:
  enum class Mode {
    kReadWrite,  // the primary: holds the lock, writes
    kReadOnly,   // a stopped directory or backup; fails if a writer holds it? no: never writes
    kSecondary,  // a running primary's directory, followed from another process
  };
  struct Options {
    Mode mode = Mode::kReadWrite;
    bool create_if_missing = true;  // kReadWrite only
    std::string secondary_dir;      // kSecondary: where the secondary keeps its own files
    // kReadWrite: flushes and compactions together write at most this many bytes per second
    // (RocksDB's rate limiter); 0 for no limit. Writes of the log itself are never limited.
    int64_t background_write_bytes_per_sec = kBackgroundWriteBytesPerSecDefault;
  };

  // Opens the RocksDB database in `dir` with every column family of keys.h.
  // Errors: Unavailable if locked by another process, DataLoss on corruption, InvalidArgument
  // for a directory that is not a Tally store.
  static Result<std::unique_ptr<Store>> Open(const std::string& dir, const Options& options);
  ~Store();

  // Returns the value, or nullopt if absent. snapshot may be null (latest state).
  Result<std::optional<std::string>> Get(Cf cf, std::string_view key,
                                         const Snapshot* snapshot = nullptr) const;

  // Visits keys in [start, end) in ascending order, or descending with reverse. An empty end
  // means no upper bound. Returns the iterator's status at the end.
  Status Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
              const Snapshot* snapshot, const ScanFn& fn) const;
  // Several point reads in one call (cheaper than one Get each), values in the keys' order.
  Result<std::vector<std::optional<std::string>>> MultiGet(
      const std::vector<std::pair<Cf, std::string_view>>& keys, const Snapshot* snapshot) const;

  // Writes the batch atomically with sync=true: on OK it is durable in the WAL, together with
  // every write before it.
  Status Write(StoreBatch& batch);
  // Writes the batch atomically to the WAL and the memtables without syncing: a later Write or
  // SyncLog makes it durable. Reads of the latest state, and snapshots taken after it, see it at
  // once: callers that must show only durable state read through a snapshot taken before it
  // until the sync (Ledger does).
  Status WriteUnsynced(StoreBatch& batch);
  // Syncs the WAL: every write made before the call is durable when it returns OK. May run
  // while another thread writes (RocksDB's SyncWAL). Fails as well once RocksDB has reported a
  // background error other than a compaction's (a flush syncs the WAL files it closes).
  Status SyncLog();

  std::shared_ptr<const Snapshot> NewSnapshot() const;

  // A consistent copy of the database (RocksDB Checkpoint) in a new directory.
  Status CreateCheckpoint(const std::string& dir) const;

  // kSecondary: catch up with the primary's latest writes.
  Status CatchUp();

  // Compacts the keys in [begin, end) of `cf` down to the last level, dropping deleted keys
  // and their tombstones (after a range deletion: the space comes back now, not whenever
  // compaction would reach those files).
  Status CompactRange(Cf cf, std::string_view begin, std::string_view end);

  // Bytes of live SST and WAL files (for the disk-usage report).
  Result<uint64_t> LiveBytes() const;

  // The limit on flush and compaction writes in bytes per second (0: none), and the bytes they
  // have written through it since open (0 without a limit).
  struct BackgroundWrites {
    int64_t limit_bytes_per_sec = 0;
    int64_t bytes = 0;
  };
  BackgroundWrites background_writes() const;

  // RocksDB's estimate of the number of keys in `cf` (rocksdb.estimate-num-keys), 0 if it has
  // none. For sizing memory only: it can be off either way.
  uint64_t EstimateKeys(Cf cf) const;

 private:
  friend class StoreBatch;
  Status WriteWith(StoreBatch& batch, bool sync);  // Write and WriteUnsynced
  struct Rep;
  explicit Store(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

}  // namespace tally

#endif  // TALLY_LEDGER_STORE_H_
