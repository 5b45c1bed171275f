// Helpers shared by the tally-audit files. Not part of tools/audit.h.
#ifndef TALLY_TOOLS_AUDIT_INTERNAL_H_
#define TALLY_TOOLS_AUDIT_INTERNAL_H_

#include <memory>
#include <string>

#include "ledger/status.h"
#include "ledger/store.h"
#include "tools/audit.h"

namespace tally::audit_internal {

// DIR/db opened as a RocksDB secondary with its own files in a fresh temporary directory, which
// is removed when this object goes away. Never takes the primary's lock, never writes to DIR.
class SecondaryStore {
 public:
  // InvalidArgument if DIR/db is not a directory; the store's error if it does not open.
  static Result<std::unique_ptr<SecondaryStore>> Open(const std::string& data_dir);
  ~SecondaryStore();
  SecondaryStore(const SecondaryStore&) = delete;
  SecondaryStore& operator=(const SecondaryStore&) = delete;

  const Store& store() const { return *store_; }
  // The snapshot to read through: null, since RocksDB secondaries do not support snapshots. None
  // is needed: a secondary's view moves only when it catches up with the primary, which this
  // class never does, so every read sees the state as of Open, consistent at batch boundaries.
  const Snapshot* snapshot() const { return nullptr; }

 private:
  SecondaryStore() = default;
  std::string temp_dir_;
  std::unique_ptr<Store> store_;
};

// Verify as if the replay were always behind the log: every checkpoint signature is checked
// ahead (under the given key as the first key) before the key chain is walked, which verify
// otherwise does only while the log thread waits for the replay. For tests: the findings must
// be the same.
VerifyResult VerifyWithAllSignaturesAhead(const VerifyOptions& options);

// Where VerifyWithFault throws std::bad_alloc, as if memory ran out there: in the log thread
// (at its first entry), in the replay (at its first batch), or in the compare (in both
// threads, before their first column family).
enum class VerifyFault { kLogThread, kReplay, kCompare };
// For tests: verify must then exit 2 (kExitCannotRun) with the error, and both threads end.
VerifyResult VerifyWithFault(const VerifyOptions& options, VerifyFault fault);

// Creates a fresh private temporary directory "tally-audit-XXXXXX"; returns its path.
Result<std::string> MakeTempDir();

}  // namespace tally::audit_internal

#endif  // TALLY_TOOLS_AUDIT_INTERNAL_H_
