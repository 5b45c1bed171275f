// Backups of a data directory: a RocksDB checkpoint of the store and the public key, written so
// that a backup's directory never holds half a backup.
//
// Who makes the checkpoint matters. A running tallyd makes its own (Ledger::Backup): RocksDB
// then keeps every file the copy needs until it is made. Another process can only follow a
// running tallyd as a secondary, which cannot stop it from deleting the WAL and table files it
// is copying; so tally-audit backs up only a stopped directory, holding its lock meanwhile
// (StoreLock) so that no tallyd starts on it. See docs/operations.md.
#ifndef TALLY_LEDGER_BACKUP_H_
#define TALLY_LEDGER_BACKUP_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "ledger/status.h"

namespace tally {

struct BackupOptions {
  // Writes the store's copy into a directory that does not exist yet (Store::CreateCheckpoint).
  std::function<Status(const std::string& db_dir)> checkpoint;
  // Also copy DIR/signing.key and DIR/api.secret (if present), mode 0600.
  bool with_secrets = false;
  // If set: called with the copy's size (below) once it is made; what it returns is written to
  // OUT/backup.json, before the backup gets its name.
  std::function<std::string(uint64_t size)> manifest;
};

// Writes a backup of the data directory `data_dir` to `out_dir`, a directory that must not exist
// (AlreadyExists "backup_exists"); its parents are created. OUT/db comes from options.checkpoint,
// then OUT/signing.pub, the secrets if asked, and the manifest if any. The backup is written
// beside OUT as ".NAME.partial-RANDOM", synced, and renamed to OUT (never replacing anything)
// only once complete; on error nothing is left behind, except after a crash: then the partial
// directory stays until RemovePartialBackups. Returns the tree size of the newest signed
// checkpoint in the copy (read back from it).
Result<uint64_t> WriteBackup(const std::string& data_dir, const std::string& out_dir,
                             const BackupOptions& options);

// Removes what backups interrupted by a crash left in `dir` (".NAME.partial-*"). Only for a
// directory where no backup is being written meanwhile.
Status RemovePartialBackups(const std::string& dir);

// Holds a stopped store's lock (DIR/db/LOCK, the lock RocksDB takes) while alive, so that no
// tallyd opens the store meanwhile. It is an open file description lock (F_OFD_SETLK), which
// conflicts with RocksDB's lock even within one process. Closing it also drops the process's own
// RocksDB lock on that file (POSIX record locks go with any close): never take it in a process
// that has the same store open.
class StoreLock {
 public:
  // FailedPrecondition "store_in_use" if another process (a running tallyd) holds the lock;
  // Unavailable if the lock file cannot be opened.
  static Result<StoreLock> Acquire(const std::string& db_dir);
  StoreLock(StoreLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  StoreLock& operator=(StoreLock&&) = delete;
  StoreLock(const StoreLock&) = delete;
  ~StoreLock();

 private:
  explicit StoreLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace tally

#endif  // TALLY_LEDGER_BACKUP_H_
