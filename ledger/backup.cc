#include "ledger/backup.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <vector>

#include "ledger/coding.h"
#include "ledger/files.h"
#include "ledger/keys.h"
#include "ledger/store.h"

namespace tally {
namespace {

namespace fs = std::filesystem;

// A backup being written is ".NAME.partial-RANDOM" beside NAME: hidden, and never a name a backup
// can be given.
constexpr const char* kPartialInfix = ".partial-";

Status Errno(const std::string& what) {
  return Status::Unavailable(what + ": " + std::strerror(errno));
}

Status CopyInto(const std::string& from, const std::string& to, bool owner_only) {
  std::error_code ec;
  fs::copy_file(from, to, ec);
  if (ec) return Status::Unavailable("cannot copy " + from + ": " + ec.message());
  if (owner_only) {
    fs::permissions(to, fs::perms::owner_read | fs::perms::owner_write, ec);
    if (ec) return Status::Unavailable("cannot restrict " + to + ": " + ec.message());
  }
  return SyncPath(to);
}

// The tree size of the newest signed checkpoint in a copy of a store (0 if it has none).
Result<uint64_t> NewestCheckpointSize(const std::string& db_dir) {
  Store::Options o;
  o.mode = Store::Mode::kReadOnly;
  o.create_if_missing = false;
  ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(db_dir, o));
  uint64_t size = 0;
  RETURN_IF_ERROR(store->Scan(Cf::kCheckpoints, "", "", /*reverse=*/true, nullptr,
                              [&](std::string_view key, std::string_view) {
                                size = DecodeU64(key);
                                return false;
                              }));
  return size;
}

// Creates `dir` and its missing parents, syncing the directory each new one was made in.
Status CreateDirectories(const fs::path& dir) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return Status::Ok();
  fs::path parent = dir.has_parent_path() ? dir.parent_path() : fs::path(".");
  if (parent != dir) RETURN_IF_ERROR(CreateDirectories(parent));
  if (!fs::create_directory(dir, ec) && ec) {
    return Status::Unavailable("cannot create " + dir.string() + ": " + ec.message());
  }
  return SyncPath(parent.string());
}

Status FillBackup(const std::string& data_dir, const std::string& dir, const BackupOptions& options,
                  uint64_t* size) {
  RETURN_IF_ERROR(options.checkpoint(dir + "/db"));
  RETURN_IF_ERROR(CopyInto(data_dir + "/signing.pub", dir + "/signing.pub", false));
  if (options.with_secrets) {
    RETURN_IF_ERROR(CopyInto(data_dir + "/signing.key", dir + "/signing.key", true));
    std::error_code ec;
    if (fs::exists(data_dir + "/api.secret", ec)) {
      RETURN_IF_ERROR(CopyInto(data_dir + "/api.secret", dir + "/api.secret", true));
    }
  }
  ASSIGN_OR_RETURN(*size, NewestCheckpointSize(dir + "/db"));
  if (options.manifest) {
    RETURN_IF_ERROR(WriteSyncedFile(dir + "/backup.json", options.manifest(*size)));
  }
  return SyncPath(dir);
}

}  // namespace

Result<uint64_t> WriteBackup(const std::string& data_dir, const std::string& out_dir,
                             const BackupOptions& options) {
  fs::path out = fs::path(out_dir).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();  // "dir/" is "dir"
  std::string name = out.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return Status::InvalidArgument("a backup needs a directory name: " + out_dir);
  }
  std::error_code ec;
  if (fs::exists(out, ec)) {
    return Status::AlreadyExists(out.string() + " exists: a backup goes to a new directory",
                                 "backup_exists");
  }
  fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  RETURN_IF_ERROR(CreateDirectories(parent));
  std::random_device random;
  fs::path partial =
      parent / ("." + name + kPartialInfix + std::to_string(random()) + std::to_string(random()));
  if (!fs::create_directory(partial, ec)) {
    return Status::Unavailable("cannot create " + partial.string() + ": " +
                               (ec ? ec.message() : std::string("it exists")));
  }
  uint64_t size = 0;
  Status st = FillBackup(data_dir, partial.string(), options, &size);
  if (st.ok() &&
      ::renameat2(AT_FDCWD, partial.c_str(), AT_FDCWD, out.c_str(), RENAME_NOREPLACE) != 0) {
    st = errno == EEXIST
             ? Status::AlreadyExists(out.string() + " exists: a backup goes to a new directory",
                                     "backup_exists")
             : Errno("cannot rename " + partial.string() + " to " + out.string());
  }
  if (!st.ok()) {
    fs::remove_all(partial, ec);  // no half backup left behind
    return st;
  }
  if (Status synced = SyncPath(parent.string()); !synced.ok()) {
    fs::remove_all(out, ec);  // not known to be durable: not reported, so not left either
    return synced;
  }
  return size;
}

Status RemovePartialBackups(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> stale;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.size() > 1 && name[0] == '.' && name.find(kPartialInfix) != std::string::npos) {
      stale.push_back(it->path());
    }
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Status::Unavailable("cannot list " + dir + ": " + ec.message());
  }
  for (const fs::path& p : stale) {
    fs::remove_all(p, ec);
    if (ec) return Status::Unavailable("cannot remove " + p.string() + ": " + ec.message());
  }
  return Status::Ok();
}

Result<StoreLock> StoreLock::Acquire(const std::string& db_dir) {
  std::string path = db_dir + "/LOCK";
  // O_CREAT as RocksDB does: a backup or a restored directory has no LOCK file yet.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot open " + path);
  struct flock lock {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  if (::fcntl(fd, F_OFD_SETLK, &lock) != 0) {
    int saved = errno;
    ::close(fd);
    if (saved == EAGAIN || saved == EACCES) {
      return Status::FailedPrecondition(db_dir + " is in use by a running tallyd", "store_in_use");
    }
    errno = saved;
    return Errno("cannot lock " + path);
  }
  return StoreLock(fd);
}

StoreLock::~StoreLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace tally
