// Small files written durably, and read back whole.
#ifndef TALLY_LEDGER_FILES_H_
#define TALLY_LEDGER_FILES_H_

#include <string>

#include "ledger/status.h"

namespace tally {

// fsync of a file or a directory (a directory: so that the names made in it last). Unavailable
// if it cannot be opened or synced.
Status SyncPath(const std::string& path);

// Writes `contents` to `path` (created or truncated) and syncs it; the caller syncs the directory
// if the name is new.
Status WriteSyncedFile(const std::string& path, const std::string& contents);

// The whole of a file; NotFound if it does not exist, Unavailable if it cannot be read.
Result<std::string> ReadWholeFile(const std::string& path);

}  // namespace tally

#endif  // TALLY_LEDGER_FILES_H_
