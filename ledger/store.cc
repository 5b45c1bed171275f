#include "ledger/store.h"

#include <fcntl.h>
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/perf_level.h>
#include <rocksdb/rate_limiter.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <vector>

namespace tally {
namespace {

constexpr size_t kBlockCacheBytes = 256 << 20;
constexpr size_t kInfoLogFilesKept = 4;  // LOG and the newest LOG.old.* before it

// RocksDB's info log (DIR/db/LOG), written by this class rather than RocksDB's own logger.
// Debian's librocksdb is built with assertions on, and its logger asserts when it writes after
// one of its writes failed: a full disk (or any write error on LOG) would abort tallyd at the
// next log line instead of letting the ledger fail-stop. This logger never fails: a line that
// cannot be written is dropped.
class InfoLog final : public rocksdb::Logger {
 public:
  // Moves an existing LOG to LOG.old.<micros> (keeping the newest few) and opens a new one.
  // If LOG cannot be created, a logger that drops every line (never RocksDB's own).
  static std::shared_ptr<rocksdb::Logger> Open(const std::string& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(dir, ec);
    const fs::path log = fs::path(dir) / "LOG";
    if (fs::exists(log, ec)) {
      timeval tv{};
      ::gettimeofday(&tv, nullptr);
      uint64_t micros = static_cast<uint64_t>(tv.tv_sec) * 1'000'000 + tv.tv_usec;
      fs::rename(log, fs::path(dir) / ("LOG.old." + std::to_string(micros)), ec);
    }
    std::vector<fs::path> old;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().filename().string().rfind("LOG.old.", 0) == 0) old.push_back(it->path());
    }
    std::sort(old.begin(), old.end());  // same-length micros: oldest first
    for (size_t i = 0; i + kInfoLogFilesKept - 1 < old.size(); ++i) fs::remove(old[i], ec);
    return std::make_shared<InfoLog>(
        ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  }

  explicit InfoLog(int fd)  // -1: drop every line
      : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL), fd_(fd) {}
  ~InfoLog() override {
    if (fd_ >= 0) ::close(fd_);
  }

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    if (fd_ < 0) return;
    timeval tv{};
    ::gettimeofday(&tv, nullptr);
    tm t{};
    ::gmtime_r(&tv.tv_sec, &t);
    char stamp[96];
    std::snprintf(stamp, sizeof stamp, "%04d/%02d/%02d-%02d:%02d:%02d.%06ld ", t.tm_year + 1900,
                  t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                  static_cast<long>(tv.tv_usec));
    std::string line = stamp;
    va_list copy;
    va_copy(copy, ap);
    int n = std::vsnprintf(nullptr, 0, format, copy);
    va_end(copy);
    if (n < 0) return;
    size_t at = line.size();
    line.resize(at + static_cast<size_t>(n) + 1);
    std::vsnprintf(line.data() + at, static_cast<size_t>(n) + 1, format, ap);
    line.back() = '\n';
    // One write per line (O_APPEND keeps concurrent lines whole); a failure is ignored.
    ssize_t written = ::write(fd_, line.data(), line.size());
    (void)written;
  }

 private:
  int fd_;
};

// RocksDB errors are converted once, here, at the boundary.
Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNotFound()) return Status::NotFound(msg);
  if (s.IsCorruption()) return Status::DataLoss(msg);
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return Status::Unavailable(msg, "locked");
  }
  if (s.IsIOError()) return Status::Unavailable(msg, "io_error");
  if (s.IsInvalidArgument()) return Status::InvalidArgument(msg);
  return Status::Internal(msg);
}

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
std::string_view ToView(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

class RocksSnapshot final : public Snapshot {
 public:
  RocksSnapshot(rocksdb::DB* db, const rocksdb::Snapshot* snap) : db_(db), snap_(snap) {}
  ~RocksSnapshot() override { db_->ReleaseSnapshot(snap_); }
  const rocksdb::Snapshot* get() const { return snap_; }

 private:
  rocksdb::DB* db_;
  const rocksdb::Snapshot* snap_;
};

// Every read. Tally writes range deletions in the tree column family only (the storage format
// upgrade, StoreBatch::DeleteRange), so the serving store skips looking for range tombstones in
// each memtable and file it visits in every other family. Other modes (the audit reads a
// secondary) keep RocksDB's full semantics: a range deletion written by anything else then hides
// what it covers, and verify reports those keys missing.
// Reads through `snapshot` when given, else the latest state.
rocksdb::ReadOptions ReadOpts(Store::Mode mode, const Snapshot* snapshot, bool tree) {
  rocksdb::ReadOptions ro;
  ro.ignore_range_deletions = mode == Store::Mode::kReadWrite && !tree;
  if (snapshot) ro.snapshot = static_cast<const RocksSnapshot*>(snapshot)->get();
  return ro;
}

// The background write limit while it must not pace anything.
constexpr int64_t kUnpacedBytesPerSec = kBackgroundWriteBytesPerSecMax;

rocksdb::DBOptions MakeDbOptions(const Store::Options& o) {
  rocksdb::DBOptions opt;
  opt.create_if_missing = o.mode == Store::Mode::kReadWrite && o.create_if_missing;
  opt.create_missing_column_families = o.mode == Store::Mode::kReadWrite;
  // Every acknowledged write was synced. kTolerateCorruptedTailRecords drops only an incomplete
  // record at the very end of the WAL (a write torn by a crash before a sync covered it, so
  // never acknowledged) and refuses to open on corruption anywhere else.
  // The default, kPointInTimeRecovery, would instead stop replay at a corrupted record in the
  // middle and silently drop every acknowledged write after it.
  opt.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  // Verify checksums and file sizes eagerly; a corrupted store fails to open or to read rather
  // than serving wrong balances.
  opt.paranoid_checks = true;
  opt.max_background_jobs = 2;
  opt.keep_log_file_num = 4;
  // Column families written rarely would otherwise pin old WAL files for ever (gigabytes after
  // millions of entries, all replayed at the next open); past this size RocksDB flushes them.
  opt.max_total_wal_size = 64 << 20;
  if (o.mode == Store::Mode::kSecondary) opt.max_open_files = -1;
  // Flushes and compactions are paced (limits.h, kBackgroundWriteBytesPerSecDefault): RocksDB
  // hands them write tokens every 20 ms (its default, 100 ms, lets a compaction write a tenth of
  // a second's worth at once), flushes first. The WAL, which every acknowledged write waits
  // for, is not limited. The limiter starts unpaced, so that the flush of what the WAL replay
  // recovered after a crash does not hold up the open; Store::Open sets the limit once the
  // database is open. (RocksDB never refills less than 100 bytes a period: 5,000 bytes/s.)
  if (o.mode == Store::Mode::kReadWrite && o.background_write_bytes_per_sec > 0) {
    constexpr int64_t kRefillPeriodUs = 20'000;
    constexpr int32_t kFairness = 10;  // RocksDB's default: compactions now and then go first
    opt.rate_limiter.reset(rocksdb::NewGenericRateLimiter(
        kUnpacedBytesPerSec, kRefillPeriodUs, kFairness, rocksdb::RateLimiter::Mode::kWritesOnly,
        /*auto_tuned=*/false));
  }
  // Files being written are synced every MiB as they grow, so that the kernel writes a flush's
  // or compaction's output back steadily rather than all at once at its end. RocksDB turns this
  // on by itself whenever a rate limiter is set; set here, it does not depend on the limit.
  opt.bytes_per_sync = 1 << 20;
  return opt;
}

rocksdb::ColumnFamilyOptions MakeCfOptions(const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions cf;
  rocksdb::BlockBasedTableOptions table;
  table.format_version = 5;
  table.block_cache = cache;
  // The writer looks up many keys that do not exist yet (idempotency keys, business keys, new
  // customers): bloom filters answer those without reading data blocks.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // A family flushes when its memtable reaches this size (RocksDB's default: 64 MiB), and every
  // family with data in the oldest WAL file flushes when the WAL reaches max_total_wal_size.
  // With the default the WAL limit always came first, and every family flushed at once, a dozen
  // flushes competing with the writer for two cores; at 8 MiB the log and the largest indexes
  // flush on their own in between. The p99 of earns paced at half of full load fell from about
  // 20 ms to about 10 ms (docs/BENCHMARKS.md, "8 MiB memtables").
  cf.write_buffer_size = 8 << 20;
  // Up to two full memtables may wait for their flush before writes stop (RocksDB's default is
  // one): a flush is paced by the background write limit and must not stop every write.
  cf.max_write_buffer_number = 3;
  cf.memtable_prefix_bloom_size_ratio = 0.05;
  cf.memtable_whole_key_filtering = true;
  cf.compression = rocksdb::kLZ4Compression;
  cf.bottommost_compression = rocksdb::kZSTD;
  return cf;
}

// RocksDB counts each operation's work in thread-local counters by default (PerfLevel
// kEnableCount): a thread-local access for every key comparison, block read and memtable look-up,
// on the thread that calls it, and nothing in Tally reads them. Every Store call that reads or
// writes turns counting off for its thread first (one thread-local store).
void CountNothing() { rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable); }

// Compactions run at nice 19, so that the writer, the HTTP threads and the flushes come first
// when the machine is busy. On two cores at half of full earn load, tallyd and its client keep
// the machine about 75% busy; a compaction then takes a whole core for up to a second and a
// half, commits fall behind the arrivals and requests queue. At nice 19 a compaction runs in the
// time the others leave idle. Measured, the effect is smaller than the run-to-run spread of the
// p99: better in 23 of 34 paired runs, full-load throughput and stalls unchanged
// (docs/BENCHMARKS.md, "Compactions at nice 19"). Flushes keep their priority: a memtable that
// cannot flush stops every write. RocksDB's thread pools belong to the process, so this holds
// for every store the process opens.
void LowerCompactionPriority() {
  rocksdb::Env::Default()
      ->LowerThreadPoolCPUPriority(rocksdb::Env::LOW, rocksdb::CpuPriority::kLow)
      .PermitUncheckedError();  // NotSupported on other platforms: compactions then keep theirs
}

}  // namespace

// RocksDB's background errors other than compactions'. A flush first syncs the WAL files it
// closed (with several column families, RocksDB's SyncClosedLogs); if that sync fails, RocksDB
// only records a background error, and a later SyncWAL of the same file can succeed after the
// kernel dropped the pages. Store::SyncLog reports such an error as a failed sync.
class BackgroundErrors final : public rocksdb::EventListener {
 public:
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* error) override {
    if (reason != rocksdb::BackgroundErrorReason::kCompaction && error && !error->ok()) {
      failed_ = true;
    }
  }
  bool failed() const { return failed_; }

 private:
  std::atomic<bool> failed_{false};
};

struct Store::Rep {
  std::unique_ptr<rocksdb::DB> db;
  std::shared_ptr<BackgroundErrors> background_errors = std::make_shared<BackgroundErrors>();
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  Mode mode = Mode::kReadWrite;
  std::shared_ptr<rocksdb::RateLimiter> rate_limiter;  // kReadWrite with a background write limit

  ~Rep() {
    // A clean close flushes the memtables, so the next open has no WAL to replay (a restart
    // after a long run would otherwise re-insert every write since the last flush). Nothing
    // competes with that flush any more: it is not paced.
    if (rate_limiter) rate_limiter->SetBytesPerSecond(kUnpacedBytesPerSec);
    if (mode == Mode::kReadWrite && db) {
      rocksdb::FlushOptions fo;
      fo.wait = true;
      db->Flush(fo, handles).PermitUncheckedError();
    }
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    handles.clear();
    db.reset();
  }
  rocksdb::ColumnFamilyHandle* cf(Cf c) const { return handles[static_cast<size_t>(c)]; }
};

struct StoreBatch::Rep {
  rocksdb::WriteBatch batch;
  const Store::Rep* store = nullptr;
};

StoreBatch::StoreBatch(const Store& store) : rep_(std::make_unique<Rep>()) {
  rep_->store = store.rep_.get();
}
StoreBatch::~StoreBatch() = default;

void StoreBatch::Put(Cf cf, std::string_view key, std::string_view value) {
  TALLY_CHECK(rep_->batch.Put(rep_->store->cf(cf), ToSlice(key), ToSlice(value)).ok());
}
void StoreBatch::Delete(Cf cf, std::string_view key) {
  TALLY_CHECK(rep_->batch.Delete(rep_->store->cf(cf), ToSlice(key)).ok());
}
void StoreBatch::DeleteRange(Cf cf, std::string_view begin, std::string_view end) {
  TALLY_CHECK(cf == Cf::kTree);  // ReadOpts: the other families' reads skip range tombstones
  TALLY_CHECK(rep_->batch.DeleteRange(rep_->store->cf(cf), ToSlice(begin), ToSlice(end)).ok());
}
size_t StoreBatch::count() const { return rep_->batch.Count(); }
size_t StoreBatch::bytes() const { return rep_->batch.GetDataSize(); }

Store::Store(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir, const Options& options) {
  rocksdb::DBOptions db_opt = MakeDbOptions(options);
  std::error_code ec;
  if (options.mode == Mode::kReadWrite &&
      (options.create_if_missing || std::filesystem::exists(dir, ec))) {
    db_opt.info_log = InfoLog::Open(dir);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  // One block cache shared by every column family.
  // Four shards of 64 MiB: a large table's filter block (several MiB) must fit in one shard, or
  // it is evicted as soon as it is read and every look-up reads it from disk again.
  std::shared_ptr<rocksdb::Cache> cache = rocksdb::NewLRUCache(kBlockCacheBytes, 2);
  for (int i = 0; i < kCfCount; ++i) cfs.emplace_back(kCfNames[i], MakeCfOptions(cache));
  auto rep = std::make_unique<Rep>();
  rep->mode = options.mode;
  db_opt.listeners.push_back(rep->background_errors);
  rep->rate_limiter = db_opt.rate_limiter;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s;
  switch (options.mode) {
    case Mode::kReadWrite:
      LowerCompactionPriority();
      s = rocksdb::DB::Open(db_opt, dir, cfs, &rep->handles, &raw);
      break;
    case Mode::kReadOnly:
      s = rocksdb::DB::OpenForReadOnly(db_opt, dir, cfs, &rep->handles, &raw);
      break;
    case Mode::kSecondary:
      s = rocksdb::DB::OpenAsSecondary(db_opt, dir, options.secondary_dir, cfs, &rep->handles,
                                       &raw);
      break;
  }
  if (!s.ok()) return FromRocks(s, "open " + dir);
  rep->db.reset(raw);
  if (rep->rate_limiter)
    rep->rate_limiter->SetBytesPerSecond(options.background_write_bytes_per_sec);
  return std::unique_ptr<Store>(new Store(std::move(rep)));
}

Result<std::optional<std::string>> Store::Get(Cf cf, std::string_view key,
                                              const Snapshot* snapshot) const {
  CountNothing();
  rocksdb::ReadOptions ro = ReadOpts(rep_->mode, snapshot, cf == Cf::kTree);
  std::string value;
  rocksdb::Status s = rep_->db->Get(ro, rep_->cf(cf), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, "get");
  return std::optional<std::string>(std::move(value));
}

Result<std::vector<std::optional<std::string>>> Store::MultiGet(
    const std::vector<std::pair<Cf, std::string_view>>& keys, const Snapshot* snapshot) const {
  CountNothing();
  bool tree = false;
  for (const auto& [cf, key] : keys) tree = tree || cf == Cf::kTree;
  rocksdb::ReadOptions ro = ReadOpts(rep_->mode, snapshot, tree);
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  std::vector<rocksdb::Slice> slices;
  cfs.reserve(keys.size());
  slices.reserve(keys.size());
  for (const auto& [cf, key] : keys) {
    cfs.push_back(rep_->cf(cf));
    slices.push_back(ToSlice(key));
  }
  // The batched form (one look-up pass per column family and file), not the per-key loop.
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  rep_->db->MultiGet(ro, keys.size(), cfs.data(), slices.data(), values.data(), statuses.data());
  std::vector<std::optional<std::string>> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    if (!statuses[i].ok()) return FromRocks(statuses[i], "multiget");
    out[i] = values[i].ToString();
  }
  return out;
}

Status Store::Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
                   const Snapshot* snapshot, const ScanFn& fn) const {
  CountNothing();
  rocksdb::ReadOptions ro = ReadOpts(rep_->mode, snapshot, cf == Cf::kTree);
  rocksdb::Slice lower = ToSlice(start), upper = ToSlice(end);
  ro.iterate_lower_bound = &lower;
  if (!end.empty()) ro.iterate_upper_bound = &upper;
  if (rep_->mode == Mode::kSecondary) {
    // Only the audit opens a secondary, and it scans whole column families once: caching their
    // blocks would only make them evict each other, and reading ahead in large steps saves a read
    // per block.
    ro.fill_cache = false;
    ro.readahead_size = size_t{2} << 20;
  }
  std::unique_ptr<rocksdb::Iterator> it(rep_->db->NewIterator(ro, rep_->cf(cf)));
  if (reverse) {
    end.empty() ? it->SeekToLast() : it->SeekForPrev(upper);
    // SeekForPrev lands on `end` itself when present; the range excludes it.
    if (it->Valid() && !end.empty() && ToView(it->key()) >= end) it->Prev();
  } else {
    it->Seek(lower);
  }
  for (; it->Valid(); reverse ? it->Prev() : it->Next()) {
    if (!fn(ToView(it->key()), ToView(it->value()))) break;
  }
  return FromRocks(it->status(), "scan");
}

Status Store::Write(StoreBatch& batch) { return WriteWith(batch, /*sync=*/true); }

Status Store::WriteUnsynced(StoreBatch& batch) { return WriteWith(batch, /*sync=*/false); }

Status Store::WriteWith(StoreBatch& batch, bool sync) {
  TALLY_CHECK(batch.rep_->store == rep_.get());
  if (rep_->mode != Mode::kReadWrite) return Status::FailedPrecondition("store is read-only");
  CountNothing();
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return FromRocks(rep_->db->Write(wo, &batch.rep_->batch), "write");
}

Status Store::SyncLog() {
  if (rep_->mode != Mode::kReadWrite) return Status::FailedPrecondition("store is read-only");
  RETURN_IF_ERROR(FromRocks(rep_->db->SyncWAL(), "sync log"));
  if (rep_->background_errors->failed()) {
    return Status::Unavailable("RocksDB reported a background error: the log may not be durable");
  }
  return Status::Ok();
}

std::shared_ptr<const Snapshot> Store::NewSnapshot() const {
  return std::make_shared<RocksSnapshot>(rep_->db.get(), rep_->db->GetSnapshot());
}

Status Store::CreateCheckpoint(const std::string& dir) const {
  rocksdb::Checkpoint* raw = nullptr;
  RETURN_IF_ERROR(FromRocks(rocksdb::Checkpoint::Create(rep_->db.get(), &raw), "checkpoint"));
  std::unique_ptr<rocksdb::Checkpoint> cp(raw);
  // log_size_for_flush = 0: flush memtables first so the copy holds every synced write.
  return FromRocks(cp->CreateCheckpoint(dir, 0), "checkpoint " + dir);
}

Status Store::CompactRange(Cf cf, std::string_view begin, std::string_view end) {
  if (rep_->mode != Mode::kReadWrite) return Status::FailedPrecondition("store is read-only");
  rocksdb::CompactRangeOptions o;
  o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  rocksdb::Slice b = ToSlice(begin), e = ToSlice(end);
  return FromRocks(rep_->db->CompactRange(o, rep_->cf(cf), &b, &e), "compact");
}

Status Store::CatchUp() {
  return FromRocks(rep_->db->TryCatchUpWithPrimary(), "catch up with primary");
}

Result<uint64_t> Store::LiveBytes() const {
  uint64_t total = 0;
  for (auto* h : rep_->handles) {
    uint64_t v = 0;
    if (rep_->db->GetIntProperty(h, "rocksdb.live-sst-files-size", &v)) total += v;
    if (rep_->db->GetIntProperty(h, "rocksdb.size-all-mem-tables", &v)) total += v;
  }
  return total;
}

Store::BackgroundWrites Store::background_writes() const {
  BackgroundWrites out;
  if (rep_->rate_limiter) {
    out.limit_bytes_per_sec = rep_->rate_limiter->GetBytesPerSecond();
    out.bytes = rep_->rate_limiter->GetTotalBytesThrough();
  }
  return out;
}

uint64_t Store::EstimateKeys(Cf cf) const {
  uint64_t v = 0;
  if (!rep_->db->GetIntProperty(rep_->cf(cf), "rocksdb.estimate-num-keys", &v)) return 0;
  return v;
}

}  // namespace tally
