// What tallyd keeps of each backup it made (POST /v1/admin/backups): rendered by json_view.h,
// parsed back by json_request.h.
#ifndef TALLY_API_BACKUP_RECORD_H_
#define TALLY_API_BACKUP_RECORD_H_

#include <cstdint>
#include <string>

namespace tally {

struct BackupRecord {
  std::string name;        // the directory's name in the backup directory
  std::string path;        // the backup's absolute path on tallyd's machine
  uint64_t size = 0;       // the tree size of the newest signed checkpoint in the copy
  std::string created_at;  // RFC 3339
  // Kept, not answered: who asked, so that a repeat of the request answers the same. Hex SHA-256
  // of the API key's id and the Idempotency-Key, and of the request (method, path, body).
  std::string idempotency, request;
};

}  // namespace tally

#endif  // TALLY_API_BACKUP_RECORD_H_
