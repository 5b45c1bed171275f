#include "ledger/ledger.h"

#include <pthread.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>

#include "ledger/apply.h"
#include "ledger/backup.h"
#include "ledger/checkpoint.h"
#include "ledger/coding.h"
#include "ledger/group_log.h"
#include "ledger/keys.h"
#include "ledger/merkle.h"
#include "ledger/note.h"
#include "ledger/points.h"
#include "ledger/recent_log.h"
#include "ledger/records.h"
#include "ledger/signer.h"
#include "ledger/store.h"
#include "ledger/tree_store.h"

namespace tally {
namespace {

// A request queued for the writer, owned by the queue, then by its commit group (Written) until
// the syncer has called its `done`.
struct Pending {
  AppendRequest request;
  AppendDone done;
  Result<AppendResult> result = Status::Internal("undecided");
};

// A commit group the writer has decided and handed to the syncer, which answers its requests
// once the group is durable (Ledger::Impl::SyncLoop). Owns its requests.
struct Written {
  std::vector<Pending*> requests;
  // Whether the group wrote entries, the last of them size - 1; a group of replays and refusals
  // only writes nothing, and is answered once every group before it is durable (its answers may
  // rest on them). size is the tree size the group's answers name either way.
  bool wrote = false;
  uint64_t size = 0;
  std::vector<std::string> entries;
  std::vector<NodeWrite> nodes;  // the tree nodes the group completes
  bool rotated = false;          // it holds a signing_key entry
  CheckpointInfo cp;
  std::shared_ptr<const Snapshot> snapshot;  // taken just after its write: what readers may see
  std::chrono::steady_clock::time_point start;
  // The writer failed the group itself (its write failed, or nothing could be written): the
  // requests hold their answers already.
  bool failed = false;
};

// What every write gets once the ledger has stopped (fail-stop).
Status LedgerStopped() {
  return Status::Unavailable("ledger stopped after a failed write", "ledger_stopped");
}

// What the writes of the group whose write or sync failed get: the failure that stopped the
// ledger. A group that only found the ledger stopped keeps LedgerStopped's answer.
Status StoppedBy(const Status& cause) {
  if (cause.reason() == "ledger_stopped") return cause;
  return Status::Unavailable("write failed, ledger stopped: " + cause.message(), "ledger_stopped");
}

}  // namespace

struct Ledger::Impl {
  LedgerOptions options;
  SystemClock system_clock;
  const Clock* clock = nullptr;
  std::unique_ptr<Store> store;
  // Every key this process signed with; the last signs new checkpoints. Kept so that references
  // handed out by signer() stay valid across a rotation. Guarded by mu.
  std::vector<std::unique_ptr<Signer>> signers;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Pending*> queue;  // guarded by mu
  bool shutting_down = false;  // guarded by mu
  CheckpointInfo latest;       // guarded by mu
  LedgerStats stats;           // guarded by mu
  std::atomic<uint64_t> committed_size{0};
  std::atomic<bool> stopped{false};
  // Ledger::CustomerChangedAt, per slot (CustomerSlot), and Ledger::ApiKeysChangedAt; raised by
  // MarkChanges. make_unique value-initializes: every mark starts at 0.
  std::unique_ptr<std::atomic<uint64_t>[]> customer_marks =
      std::make_unique<std::atomic<uint64_t>[]>(kCustomerMarkSlots);
  std::atomic<uint64_t> api_keys_mark{0};
  std::thread writer;

  // The sync stage (SyncLoop). The writer writes each group without syncing it and goes on to
  // the next; the syncer syncs the WAL, which makes every group written before it durable, then
  // shows those groups to readers and answers their requests, in order.
  std::mutex sync_mu;
  std::condition_variable sync_cv;                // the syncer: a group to answer, or stop
  std::condition_variable answered_cv;            // the writer: groups were answered
  std::deque<std::unique_ptr<Written>> unsynced;  // guarded by sync_mu
  size_t unanswered = 0;  // groups handed over, not yet answered; guarded by sync_mu
  // The tree size after the last group written to the store, durable or not (raised just before
  // the write).
  std::atomic<uint64_t> written_size{0};
  bool sync_stop = false;  // guarded by sync_mu
  std::thread syncer;

  // The disk-full guard: whether the data directory's file system was below min_free_bytes at
  // the last look, and when (steady clock, ns) the next look is due. Any thread may look.
  std::atomic<bool> storage_low{false};
  std::atomic<int64_t> next_space_check_ns{0};

  // Replication. role and stream_seq are read by other threads; changed under apply_mu.
  std::atomic<ReplicationRole> role{ReplicationRole::kStandalone};
  std::atomic<uint64_t> stream_seq{0};
  std::mutex apply_mu;           // one of: the writer's publish and catch-up, a follower's apply
  bool catch_up_needed = false;  // writer thread: the log may hold groups we lack
  uint64_t writer_id = 0;        // random, tells this primary's groups from another's

  // Owned by the writer thread (or, on a follower, by whoever holds apply_mu).
  bool rotated_in_group = false;
  std::vector<NodeWrite> group_nodes;  // the tree nodes the current group completes
  MerkleFrontier frontier;
  uint64_t next_id = 0;
  int64_t last_time_us = 0;

  Status Load();
  Status LoadTail();      // next_id, last_time_us and frontier from the store's committed state
  Status LoadWriterId();  // replication: writer_id, kept by a primary across restarts
  Status ApplyCommitGroup(const CommitGroup& g, uint64_t seq);  // REQUIRES: apply_mu held
  Status ApplyClaim(const CommitGroup& g, uint64_t seq);        // REQUIRES: apply_mu held
  // Primary: applies the log's groups after stream_seq; with `fence`, sets role kFenced if
  // another primary wrote any of them. REQUIRES: apply_mu held.
  Status CatchUp(bool fence);
  // Promotion: catches up and claims the end of the log. REQUIRES: apply_mu held.
  Status TakeOver();
  Status Publish(uint64_t first_id, const std::vector<std::string>& entries,
                 const CheckpointInfo& cp, StoreBatch* batch);
  bool StorageLow();
  void WriterLoop();
  void RunGroup(Written& w);
  void Decide(Pending& p, OverlayState& overlay, std::vector<std::string>& group_entries);
  // Writes the group without syncing it and fills in what the syncer needs to answer it.
  Status Commit(OverlayState& overlay, std::vector<std::string>& group_entries,
                uint64_t group_first, Written& w);
  // The writer hands a group to the syncer; and waits until at most `most` groups are unanswered.
  void HandOver(std::unique_ptr<Written> w);
  void WaitAnswered(size_t most);
  // Waits until every group up to tree size `size` is durable; Unavailable if the ledger stops
  // first.
  Status WaitDurable(uint64_t size);
  void SyncLoop();
  // The syncer: the group is durable (st OK) or cannot be (the ledger stops); shows it and
  // answers its requests.
  void Answer(Written& w, const Status& st);
  CheckpointInfo SignCheckpoint(uint64_t size, const Hash& root) const;
  const Signer& CurrentSigner() const;  // REQUIRES: mu held, or the writer thread
  std::string KeyPath(const std::string& suffix = "") const {
    return options.dir + "/signing.key" + suffix;
  }
  Status CheckSigningKey();
  Status FinishRotation(uint64_t entry_id);
  // Read through `view`, or the latest state (the writer's, and at open) if null.
  Result<std::vector<SigningKeyRecord>> Rotations(const Snapshot* view = nullptr) const;
  void RecordGroup(size_t entries, double seconds);  // REQUIRES: mu held

  // The newest entries, checkpoints and tree nodes in memory, for receipts (recent_log.h).
  RecentLog recent{kRecentLogEntries, kRecentLogBytes};
  // The signing-key rotations, read from the store once and again after a commit holding a
  // signing_key entry (the generation tells a read that raced such a commit).
  mutable std::mutex rotations_mu;
  mutable std::optional<std::vector<SigningKeyRecord>> rotations_cache;  // guarded by rotations_mu
  mutable uint64_t rotations_generation = 0;                             // guarded by rotations_mu
  Result<std::vector<SigningKeyRecord>> CachedRotations() const;

  // What readers see: a snapshot holding exactly the durable groups up to `snapshot_size`,
  // taken just after the last of them was written (the store's latest state may hold groups
  // written and not yet synced, which no reader may see). Shown before committed_size rises.
  mutable std::mutex snapshot_mu;
  std::shared_ptr<const Snapshot> snapshot;  // guarded by snapshot_mu
  uint64_t snapshot_size = 0;                // guarded by snapshot_mu
  // *holds (if not null): the tree size the snapshot holds, every commit group up to it.
  std::shared_ptr<const Snapshot> CurrentSnapshot(uint64_t* holds = nullptr) const;
  void Show(std::shared_ptr<const Snapshot> s, uint64_t size);
  // Before a group is written: raises the change mark of every customer it changes, and the API
  // keys' mark if it changes any key, to `size`, the tree size after it.
  void MarkChanges(const OverlayState& changes, uint64_t size);
  // After a durable commit: the group goes into `recent`; a rotation in it (`rotated`: the
  // group holds a signing_key entry) drops the cache.
  void Committed(uint64_t first, const std::vector<std::string>& entries,
                 const std::vector<NodeWrite>& nodes, const std::string& note, bool rotated);
};

Result<std::vector<SigningKeyRecord>> Ledger::Impl::CachedRotations() const {
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(rotations_mu);
    if (rotations_cache) return *rotations_cache;
    generation = rotations_generation;
  }
  // The snapshot is read after the generation: a commit's rotation is shown before the cache
  // is dropped (Answer), so a read that missed it cannot be kept.
  std::shared_ptr<const Snapshot> view = CurrentSnapshot();
  ASSIGN_OR_RETURN(std::vector<SigningKeyRecord> r, Rotations(view.get()));
  std::lock_guard<std::mutex> lock(rotations_mu);
  if (generation == rotations_generation) rotations_cache = r;
  return r;
}

std::shared_ptr<const Snapshot> Ledger::Impl::CurrentSnapshot(uint64_t* holds) const {
  std::lock_guard<std::mutex> lock(snapshot_mu);
  if (holds) *holds = snapshot_size;
  return snapshot;
}

void Ledger::Impl::Show(std::shared_ptr<const Snapshot> s, uint64_t size) {
  {
    std::lock_guard<std::mutex> lock(snapshot_mu);
    if (snapshot && size < snapshot_size) return;
    std::swap(snapshot, s);
    snapshot_size = size;
  }
  // `s` now holds the snapshot replaced, released here (it takes RocksDB's own lock) rather
  // than while readers wait for snapshot_mu.
}

namespace {

size_t CustomerSlot(std::string_view program, std::string_view customer) {
  std::hash<std::string_view> h;
  return (h(program) * 0x9e3779b97f4a7c15u ^ h(customer)) & (kCustomerMarkSlots - 1);
}

}  // namespace

void Ledger::Impl::MarkChanges(const OverlayState& changes, uint64_t size) {
  auto raise = [size](std::atomic<uint64_t>& mark) {
    uint64_t old = mark.load();
    while (old < size && !mark.compare_exchange_weak(old, size)) {
    }
  };
  // Every posting to a customer also rewrites the customer's record today (ApplyCustomers); the
  // balances and lots are marked as well so that the caches do not depend on that.
  for (Cf cf : {Cf::kCustomers, Cf::kBalances, Cf::kLots}) {
    changes.ForEachChangedKey(cf, [&](std::string_view key) {
      std::string_view program, customer;
      if (CustomerOfKey(cf, key, &program, &customer)) {
        raise(customer_marks[CustomerSlot(program, customer)]);
      }
    });
  }
  changes.ForEachChangedKey(Cf::kObjects, [&](std::string_view key) {
    if (IsApiKeyObject(key)) raise(api_keys_mark);
  });
}

void Ledger::Impl::Committed(uint64_t first, const std::vector<std::string>& entries,
                             const std::vector<NodeWrite>& nodes, const std::string& note,
                             bool rotated) {
  recent.Add(first, entries, nodes, note);
  if (!rotated) return;
  std::lock_guard<std::mutex> lock(rotations_mu);
  rotations_cache.reset();
  ++rotations_generation;
}

void Ledger::Impl::RecordGroup(size_t entries, double seconds) {
  auto bucket = [](const auto& bounds, double v) {
    size_t i = 0;
    while (i < std::size(bounds) && v > bounds[i]) ++i;
    return i;
  };
  ++stats.groups;
  stats.group_entries_sum += entries;
  ++stats.group_size_counts[bucket(kGroupSizeBounds, static_cast<double>(entries))];
  ++stats.write_seconds_counts[bucket(kWriteSecondsBounds, seconds)];
  stats.write_seconds_sum += seconds;
}

namespace {

// The writer's DecideContext for one request.
class WriterContext final : public DecideContext {
 public:
  WriterContext(const AppendRequest& req, OverlayState* overlay, uint64_t first_id, int64_t now)
      : req_(req), overlay_(overlay), next_id_(first_id), now_(now) {}

  const StateReader& state() const override { return *overlay_; }
  int64_t now_us() const override { return now_; }
  uint64_t next_id() const override { return next_id_; }

  Result<Entry> Emit(Entry e) override {
    if (encoded_.size() >= kRequestEntriesMax) {
      return Status::ResourceExhausted("too many entries in one request");
    }
    e.id = next_id_;
    e.time_us = now_;
    e.actor = req_.actor;
    e.idempotency_key = req_.idempotency_key;
    e.request_hash = req_.request_hash;
    for (Posting& p : e.postings) {
      ASSIGN_OR_RETURN(int64_t before, overlay_->GetI64(Cf::kBalances, p.account));
      if (!CheckedAdd(before, p.points, &p.balance_after)) {
        return Status::InvalidArgument("balance of " + p.account + " would overflow");
      }
    }
    RETURN_IF_ERROR(ValidateEntry(e));
    if (auto claim = BusinessKeyOf(e)) {
      ASSIGN_OR_RETURN(std::optional<std::string> prior,
                       overlay_->Get(Cf::kBusinessKeys, claim->key));
      if (prior) {
        return Status::AlreadyExists(
            "already claimed by entry " + std::to_string(DecodeU64(*prior)), claim->reason);
      }
    }
    RETURN_IF_ERROR(ApplyEntry(e, overlay_));
    if (e.type == EntryType::kSigningKey) rotated_ = true;
    std::string bytes = EncodeEntry(e);
    // In the overlay, so that later decisions of the group can read the entry back.
    overlay_->Put(Cf::kEntries, EntryKey(e.id), bytes);
    encoded_.push_back(std::move(bytes));
    ++next_id_;
    return e;
  }

  std::vector<std::string>& encoded() { return encoded_; }
  bool rotated() const { return rotated_; }

 private:
  const AppendRequest& req_;
  OverlayState* overlay_;
  uint64_t next_id_;
  int64_t now_;
  std::vector<std::string> encoded_;
  bool rotated_ = false;
};

}  // namespace

Status Ledger::Impl::Load() {
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return Status::InvalidArgument("cannot create " + options.dir + ": " + ec.message());
  ASSIGN_OR_RETURN(Signer s, Signer::LoadOrCreate(options.dir + "/signing.key",
                                                  options.dir + "/signing.pub", options.origin));
  signers.push_back(std::make_unique<Signer>(std::move(s)));
  Store::Options store_options;
  store_options.background_write_bytes_per_sec = options.background_write_bytes_per_sec;
  ASSIGN_OR_RETURN(store, Store::Open(options.dir + "/db", store_options));
  RETURN_IF_ERROR(UpgradeStorageFormat(*store));

  RETURN_IF_ERROR(LoadTail());
  // Not fatal: without it receipts come from the store, which reports a missing node itself.
  static_assert(RecentLog::kHighLevel >= kTreeStoredFromLevel, "RecentLog loads stored levels");
  Status recent_loaded =
      recent.Reset(next_id, [this](int level, uint64_t count) -> Result<std::vector<Hash>> {
        std::vector<Hash> nodes;
        Status bad;
        RETURN_IF_ERROR(store->Scan(Cf::kTree, TreeKey(level, 0), TreeKey(level, count), false,
                                    nullptr, [&](std::string_view k, std::string_view v) {
                                      if (v.size() != 32 || k != TreeKey(level, nodes.size())) {
                                        bad = Status::DataLoss("tree level has a gap");
                                        return false;
                                      }
                                      nodes.emplace_back();
                                      std::copy(v.begin(), v.end(), nodes.back().begin());
                                      return true;
                                    }));
        RETURN_IF_ERROR(bad);
        return nodes;
      });
  (void)recent_loaded;

  ASSIGN_OR_RETURN(std::optional<std::string> note, store->Get(Cf::kMeta, kMetaCheckpoint));
  if (next_id == 0) {
    latest = SignCheckpoint(0, frontier.Root());
  } else {
    // The stored checkpoint was written in the same batch as the newest entries: it must match
    // the tree rebuilt from them, or the store is not what this ledger wrote.
    if (!note) return Status::DataLoss("entries without a checkpoint");
    ASSIGN_OR_RETURN(auto parsed, ParseNote(*note));
    ASSIGN_OR_RETURN(Checkpoint cp, ParseCheckpoint(parsed.first));
    if (cp.size != next_id || cp.root != frontier.Root()) {
      return Status::DataLoss("stored checkpoint does not match the log");
    }
    latest = CheckpointInfo{cp.origin, cp.size, cp.root, *note};
  }
  Show(store->NewSnapshot(), next_id);
  written_size = next_id;
  committed_size = next_id;
  ASSIGN_OR_RETURN(std::optional<std::string> seq, store->Get(Cf::kMeta, kMetaStreamSeq));
  stream_seq = seq && seq->size() == 8 ? DecodeU64(*seq) : 0;
  if (options.group_log) {
    role = options.follower ? ReplicationRole::kFollower : ReplicationRole::kPrimary;
    catch_up_needed = !options.follower;
    RETURN_IF_ERROR(LoadWriterId());
  }
  Status key = CheckSigningKey();
  // A follower verifies every group with the key the log says is in force, and signs nothing
  // until promoted (TakeOver refuses a stale key), so a key rotated since its signing.key was
  // copied does not stop it.
  if (key.code() == Code::kDataLoss && options.group_log && options.follower) return Status::Ok();
  return key;
}

// A primary keeps its writer id across restarts: a group it published just before it stopped,
// and did not write here, is its own when it catches up, not another primary's (which would
// fence it). A follower takes a new id at every open, so that a follower seeded from a copy of
// the primary's directory, once promoted, still fences the primary it replaces.
Status Ledger::Impl::LoadWriterId() {
  ASSIGN_OR_RETURN(std::optional<std::string> id, store->Get(Cf::kMeta, kMetaWriterId));
  if (!options.follower && id && id->size() == 8) {
    writer_id = DecodeU64(*id);
    return Status::Ok();
  }
  std::random_device rd;
  writer_id = (static_cast<uint64_t>(rd()) << 32) | rd();
  StoreBatch batch(*store);
  batch.Put(Cf::kMeta, kMetaWriterId, EncodeU64(writer_id));
  return store->Write(batch);
}

Status Ledger::Impl::LoadTail() {
  std::optional<Entry> last;
  Status decode_status;
  RETURN_IF_ERROR(
      store->Scan(Cf::kEntries, "", "", true, nullptr, [&](std::string_view, std::string_view v) {
        auto e = DecodeEntry(v);
        if (e.ok())
          last = std::move(e).value();
        else
          decode_status = e.status();
        return false;
      }));
  RETURN_IF_ERROR(decode_status);
  next_id = last ? last->id + 1 : 0;
  last_time_us = last ? last->time_us : 0;
  StoreNodeReader nodes(store.get(), nullptr, kTreeStoredFromLevel);
  ASSIGN_OR_RETURN(frontier, MerkleFrontier::Load(nodes, next_id));

  return Status::Ok();
}

const Signer& Ledger::Impl::CurrentSigner() const { return *signers.back(); }

Result<std::vector<SigningKeyRecord>> Ledger::Impl::Rotations(const Snapshot* view) const {
  std::vector<SigningKeyRecord> out;
  std::string prefix = ObjectPrefix(ObjectKind::kSigningKey, "");
  Status st;
  RETURN_IF_ERROR(store->Scan(Cf::kObjects, prefix, PrefixEnd(prefix), false, view,
                              [&](std::string_view, std::string_view v) {
                                auto r = DecodeSigningKey(v);
                                if (!r.ok()) st = r.status();
                                if (r.ok()) out.push_back(std::move(r).value());
                                return r.ok();
                              }));
  RETURN_IF_ERROR(st);
  return out;
}

// The key file must hold the key the log says is current. A rotation interrupted between its
// durable entry and the renaming of the key files is finished here.
Status Ledger::Impl::CheckSigningKey() {
  ASSIGN_OR_RETURN(std::vector<SigningKeyRecord> rotations, Rotations());
  if (rotations.empty() || rotations.back().public_key == CurrentSigner().public_key()) {
    return Status::Ok();
  }
  std::error_code ec;
  if (!std::filesystem::exists(KeyPath(".next"), ec)) {
    return Status::DataLoss("signing.key is not the key the log rotated to");
  }
  std::string prefix = ObjectPrefix(ObjectKind::kSigningKey, "");
  uint64_t id = 0;
  RETURN_IF_ERROR(store->Scan(Cf::kObjects, prefix, PrefixEnd(prefix), true, nullptr,
                              [&](std::string_view k, std::string_view) {
                                id = DecodeU64(k.substr(prefix.size()));
                                return false;
                              }));
  RETURN_IF_ERROR(FinishRotation(id));
  if (rotations.back().public_key != CurrentSigner().public_key()) {
    return Status::DataLoss("signing.key.next is not the key the log rotated to");
  }
  return Status::Ok();
}

// Moves the new key into place: signing.key -> signing.key.<id>.old, signing.key.next ->
// signing.key (and the same for .pub), then signs with it.
Status Ledger::Impl::FinishRotation(uint64_t entry_id) {
  std::error_code ec;
  std::string pub = options.dir + "/signing.pub";
  std::filesystem::rename(KeyPath(), KeyPath("." + std::to_string(entry_id) + ".old"), ec);
  if (!ec) std::filesystem::rename(KeyPath(".next"), KeyPath(), ec);
  if (!ec) std::filesystem::rename(pub + ".next", pub, ec);
  if (ec) return Status::Internal("rotating key files: " + ec.message());
  ASSIGN_OR_RETURN(Signer s, Signer::LoadOrCreate(KeyPath(), pub, options.origin));
  std::lock_guard<std::mutex> lock(mu);
  signers.push_back(std::make_unique<Signer>(std::move(s)));
  return Status::Ok();
}

CheckpointInfo Ledger::Impl::SignCheckpoint(uint64_t size, const Hash& root) const {
  Checkpoint cp{options.origin, size, root, {}};
  std::string note = SignNote(FormatCheckpoint(cp), CurrentSigner());
  return CheckpointInfo{options.origin, size, root, std::move(note)};
}

void Ledger::Impl::WriterLoop() {
  for (;;) {
    auto w = std::make_unique<Written>();
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return !queue.empty() || shutting_down; });
      if (queue.empty()) return;
      while (!queue.empty() && w->requests.size() < options.commit_group_requests_max) {
        w->requests.push_back(queue.front());
        queue.pop_front();
      }
    }
    RunGroup(*w);
    const bool rotated = w->wrote && w->rotated;
    HandOver(std::move(w));
    // A rotation takes effect once its group is durable (Answer moves the key files): the next
    // group's checkpoint, signed before that group waits for this one, must use the new key.
    if (rotated) WaitAnswered(0);
  }
}

void Ledger::Impl::HandOver(std::unique_ptr<Written> w) {
  {
    std::lock_guard<std::mutex> lock(sync_mu);
    unsynced.push_back(std::move(w));
    ++unanswered;
  }
  sync_cv.notify_one();
}

void Ledger::Impl::WaitAnswered(size_t most) {
  std::unique_lock<std::mutex> lock(sync_mu);
  answered_cv.wait(lock, [&] { return unanswered <= most; });
}

Status Ledger::Impl::WaitDurable(uint64_t size) {
  std::unique_lock<std::mutex> lock(sync_mu);
  answered_cv.wait(lock, [&] { return committed_size >= size || stopped; });
  if (committed_size >= size) return Status::Ok();
  return LedgerStopped();
}

// One sync covers every group written before it, so the syncer takes all that are waiting.
// After a failed write or sync nothing later is answered as durable: a second fsync can succeed
// after the kernel dropped the pages the first one failed to write.
void Ledger::Impl::SyncLoop() {
  for (;;) {
    std::deque<std::unique_ptr<Written>> groups;
    {
      std::unique_lock<std::mutex> lock(sync_mu);
      sync_cv.wait(lock, [&] { return !unsynced.empty() || sync_stop; });
      if (unsynced.empty()) return;
      groups.swap(unsynced);
    }
    Status st;
    if (stopped) {
      st = LedgerStopped();
    } else if (std::any_of(groups.begin(), groups.end(), [](auto& w) { return w->wrote; })) {
      st = options.before_sync ? options.before_sync() : Status::Ok();
      if (st.ok()) st = store->SyncLog();
      if (!st.ok()) {
        stopped = true;
        st = StoppedBy(st);
      }
    }
    for (auto& w : groups) Answer(*w, st);
    {
      std::lock_guard<std::mutex> lock(sync_mu);
      unanswered -= groups.size();
    }
    answered_cv.notify_all();
  }
}

void Ledger::Impl::Answer(Written& w, const Status& st) {
  if (!w.failed && !st.ok()) {
    for (Pending* p : w.requests) p->result = st;
  } else if (!w.failed && w.wrote) {
    // Readers see the group before the rotation cache is dropped (CachedRotations) and before
    // committed_size names it (GetReceipt, GetEntryBytes).
    Show(std::move(w.snapshot), w.size);
    Committed(w.size - w.entries.size(), w.entries, w.nodes, w.cp.note, w.rotated);
    // Before committed_size names the group: a backup waiting for it (Backup) then copies the
    // new public key.
    Status rotation = w.rotated ? FinishRotation(w.size - 1) : Status::Ok();
    {
      std::lock_guard<std::mutex> lock(mu);
      latest = std::move(w.cp);
      committed_size = w.size;
      RecordGroup(
          w.entries.size(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - w.start).count());
    }
    if (!rotation.ok()) {
      stopped = true;
      for (Pending* p : w.requests) {
        p->result = StoppedBy(rotation);
      }
    }
  }
  for (Pending* p : w.requests) {
    std::unique_ptr<Pending> owned(p);
    if (owned->result.ok()) owned->result->tree_size = w.size;
    try {
      owned->done(std::move(owned->result));
    } catch (...) {
      // Only memory running out gets here (a completion hands its work to another thread).
      // Its caller gets no answer (an HTTP client sees its connection closed); the rest of the
      // group go on: the group is durable either way.
    }
  }
  w.requests.clear();
}

namespace {
void FailAll(std::vector<Pending*>& group, const Status& st) {
  for (Pending* p : group) p->result = st;
}
Status NotPrimary() { return Status::Unavailable("this ledger is not the primary", "not_primary"); }
}  // namespace

void Ledger::Impl::RunGroup(Written& w) {
  std::vector<Pending*>& group = w.requests;
  w.size = next_id;
  auto fail = [&](const Status& st) {
    w.failed = true;
    FailAll(group, st);
  };
  if (stopped) {
    return fail(LedgerStopped());
  }
  std::unique_lock<std::mutex> apply_lock(apply_mu, std::defer_lock);
  if (options.group_log) {
    apply_lock.lock();
    if (role != ReplicationRole::kPrimary) return fail(NotPrimary());
    if (catch_up_needed) {
      // The log's groups are applied with synced writes, each shown at once: every group of
      // ours before them must have been answered first.
      WaitAnswered(0);
      if (stopped) {
        return fail(LedgerStopped());
      }
      Status st = CatchUp(/*fence=*/true);
      if (!st.ok()) return fail(st);
      if (role != ReplicationRole::kPrimary) return fail(NotPrimary());
    }
  }
  // The writer is the only one writing, so the latest state is stable during the group. It
  // holds every group written so far, durable or not: decisions build on all of them.
  StoreReader base(store.get(), nullptr);
  OverlayState overlay(&base);
  std::vector<std::string> group_entries;
  uint64_t group_first = next_id;
  group_nodes.clear();
  for (Pending* p : group) Decide(*p, overlay, group_entries);
  w.size = next_id;
  if (group_entries.empty()) return;

  Status st = Commit(overlay, group_entries, group_first, w);
  rotated_in_group = false;
  if (!st.ok() && (st.reason() == "not_primary" || st.reason() == "replication")) {
    // Nothing was written here: forget the group's decisions and learn from the log what it
    // holds before deciding again.
    catch_up_needed = true;
    Status reload = LoadTail();
    if (!reload.ok()) stopped = true;
    return fail(st);
  }
  if (!st.ok()) {
    stopped = true;
    return fail(StoppedBy(st));
  }
}

// Publishes the group before it is written here: a group is acknowledged only once the
// replicated log holds it, so a follower promoted later has every acknowledged write.
Status Ledger::Impl::Publish(uint64_t first_id, const std::vector<std::string>& entries,
                             const CheckpointInfo& cp, StoreBatch* batch) {
  CommitGroup g{writer_id, first_id, entries, cp.note};
  Result<uint64_t> seq = options.group_log->Publish(g, stream_seq);
  if (!seq.ok()) {
    if (seq.status().reason() == "wrong_last_seq") {
      return Status::Unavailable("the log moved on: " + seq.status().message(), "not_primary");
    }
    return Status::Unavailable("replicated log: " + seq.status().message(), "replication");
  }
  batch->Put(Cf::kMeta, kMetaStreamSeq, EncodeU64(*seq));
  stream_seq = *seq;
  return Status::Ok();
}

Status Ledger::Impl::CatchUp(bool fence) {
  for (;;) {
    auto groups = options.group_log->ReadAfter(stream_seq, kReplicationReadGroupsMax);
    if (!groups.ok()) {
      return Status::Unavailable("replicated log: " + groups.status().message(), "replication");
    }
    if (groups->empty()) break;
    for (const auto& [seq, g] : *groups) {
      RETURN_IF_ERROR(ApplyCommitGroup(g, seq));
      // A group by another writer: a newer primary took over.
      if (fence && g.writer != writer_id) role = ReplicationRole::kFenced;
    }
  }
  catch_up_needed = false;
  return Status::Ok();
}

Status Ledger::Impl::ApplyCommitGroup(const CommitGroup& g, uint64_t seq) {
  if (seq <= stream_seq) return Status::Ok();  // already held
  if (g.entries.empty()) return ApplyClaim(g, seq);
  if (g.first_id != next_id) {
    return Status::DataLoss("group at sequence " + std::to_string(seq) + " starts at entry " +
                            std::to_string(g.first_id) + ", expected " + std::to_string(next_id));
  }
  StoreReader base(store.get(), nullptr);
  OverlayState overlay(&base);
  std::vector<NodeWrite> nodes, all_nodes;
  int64_t last_time = last_time_us;
  bool rotated = false;
  for (size_t i = 0; i < g.entries.size(); ++i) {
    ASSIGN_OR_RETURN(Entry e, DecodeEntry(g.entries[i]));
    if (e.id != g.first_id + i || e.time_us < last_time) {
      return Status::DataLoss("entry " + std::to_string(e.id) + " out of order in the log");
    }
    last_time = e.time_us;
    rotated = rotated || e.type == EntryType::kSigningKey;
    RETURN_IF_ERROR(ApplyEntry(e, &overlay));
    overlay.Put(Cf::kEntries, EntryKey(e.id), g.entries[i]);
    nodes.clear();
    frontier.Append(LeafHash(g.entries[i]), &nodes);
    PutStoredTreeNodes(nodes, &overlay);
    all_nodes.insert(all_nodes.end(), nodes.begin(), nodes.end());
  }
  uint64_t size = g.first_id + g.entries.size();
  Status st = [&]() -> Status {
    ASSIGN_OR_RETURN(auto note, ParseNote(g.checkpoint));
    ASSIGN_OR_RETURN(Checkpoint cp, ParseCheckpoint(note.first));
    if (cp.size != size || cp.root != frontier.Root()) {
      return Status::DataLoss("group checkpoint does not match the entries");
    }
    // Signed by the key in force before this group: the last one rotated to, else our own.
    ASSIGN_OR_RETURN(std::vector<SigningKeyRecord> rotations, CachedRotations());
    Verifier v(options.origin,
               rotations.empty() ? CurrentSigner().public_key() : rotations.back().public_key);
    RETURN_IF_ERROR(VerifyNote(g.checkpoint, v, nullptr));
    StoreBatch batch(*store);
    overlay.AddTo(&batch);
    MarkChanges(overlay, size);
    batch.Put(Cf::kCheckpoints, CheckpointKey(size), g.checkpoint);
    batch.Put(Cf::kMeta, kMetaCheckpoint, g.checkpoint);
    batch.Put(Cf::kMeta, kMetaStreamSeq, EncodeU64(seq));
    RETURN_IF_ERROR(store->Write(batch));
    written_size = size;
    Show(store->NewSnapshot(), size);
    Committed(g.first_id, g.entries, all_nodes, g.checkpoint, rotated);
    std::lock_guard<std::mutex> lock(mu);
    latest = CheckpointInfo{cp.origin, cp.size, cp.root, g.checkpoint};
    committed_size = size;
    return Status::Ok();
  }();
  if (!st.ok()) {
    RETURN_IF_ERROR(LoadTail());
    return st;
  }
  next_id = size;
  last_time_us = last_time;
  stream_seq = seq;
  return Status::Ok();
}

void Ledger::Impl::Decide(Pending& p, OverlayState& overlay,
                          std::vector<std::string>& group_entries) {
  const AppendRequest& req = p.request;
  if (!req.idempotency_key.empty()) {
    auto v = overlay.Get(Cf::kIdempotency, IdempotencyKey(req.actor, req.idempotency_key));
    if (!v.ok()) {
      p.result = v.status();
      return;
    }
    if (*v) {
      auto rec = DecodeIdempotencyRecord(**v);
      if (!rec.ok()) {
        p.result = rec.status();
      } else if (rec->request_hash != req.request_hash) {
        p.result = Status::FailedPrecondition("idempotency key used for another request",
                                              "idempotency_key_reused");
      } else {
        p.result = AppendResult{rec->first_id, rec->count, true, 0};
      }
      return;
    }
  }
  size_t savepoint = overlay.Savepoint();
  int64_t now = std::max(clock->NowMicros(), last_time_us);
  WriterContext ctx(req, &overlay, next_id, now);
  Status st = req.decide(ctx);
  if (!st.ok()) {
    overlay.RollbackTo(savepoint);
    p.result = st;
    return;
  }
  uint64_t first = next_id;
  rotated_in_group = rotated_in_group || ctx.rotated();
  std::vector<NodeWrite> nodes;
  for (std::string& bytes : ctx.encoded()) {
    nodes.clear();
    frontier.Append(LeafHash(bytes), &nodes);
    PutStoredTreeNodes(nodes, &overlay);
    group_nodes.insert(group_nodes.end(), nodes.begin(), nodes.end());
    group_entries.push_back(std::move(bytes));
  }
  next_id += ctx.encoded().size();
  if (!ctx.encoded().empty()) last_time_us = now;
  p.result = AppendResult{first, static_cast<uint32_t>(ctx.encoded().size()), false, 0};
}

Status Ledger::Impl::Commit(OverlayState& overlay, std::vector<std::string>& group_entries,
                            uint64_t group_first, Written& w) {
  TALLY_CHECK(frontier.size() == next_id);
  TALLY_CHECK(group_first + group_entries.size() == next_id);
  StoreBatch batch(*store);
  overlay.AddTo(&batch);  // the entries, their tree nodes and all derived state
  MarkChanges(overlay, next_id);
  // The tree only grows, from the frontier verified against the last signed checkpoint at open,
  // so this checkpoint is consistent with every one signed before it.
  CheckpointInfo cp = SignCheckpoint(next_id, frontier.Root());
  TALLY_CHECK(cp.size > committed_size.load());
  batch.Put(Cf::kCheckpoints, CheckpointKey(cp.size), cp.note);
  batch.Put(Cf::kMeta, kMetaCheckpoint, cp.note);
  // The group was decided (and its batch built and signed) while the one before it synced; it is
  // published and written only once that one is answered. So the WAL never holds more than one
  // group not yet synced (the one a crash can tear), and nothing is published or written after a
  // failed sync.
  WaitAnswered(0);
  if (stopped) return LedgerStopped();
  if (options.group_log) RETURN_IF_ERROR(Publish(group_first, group_entries, cp, &batch));
  w.start = std::chrono::steady_clock::now();
  // Raised before the write, so that a backup that finds the group in its copy waits for it.
  written_size = next_id;
  Status st = options.before_write ? options.before_write() : Status::Ok();
  if (st.ok()) st = store->WriteUnsynced(batch);
  if (!st.ok()) return st;
  // Before the next group's write: the snapshot holds exactly the groups up to this one.
  w.snapshot = store->NewSnapshot();
  w.wrote = true;
  w.entries = std::move(group_entries);
  w.nodes = std::move(group_nodes);
  w.rotated = rotated_in_group;
  w.cp = std::move(cp);
  return Status::Ok();
}

// At most one statvfs per interval, by whichever thread claims it; the others use the last
// answer. A statvfs that fails leaves the last answer (the guard must not stop writes itself).
bool Ledger::Impl::StorageLow() {
  if (options.min_free_bytes == 0) return false;
  int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count();
  int64_t due = next_space_check_ns.load(std::memory_order_relaxed);
  if (now >= due &&
      next_space_check_ns.compare_exchange_strong(due, now + kFreeSpaceCheckIntervalMs * 1'000'000,
                                                  std::memory_order_relaxed)) {
    struct statvfs fs;
    if (::statvfs(options.dir.c_str(), &fs) == 0) {
      uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
      storage_low.store(free_bytes < options.min_free_bytes, std::memory_order_relaxed);
    }
  }
  return storage_low.load(std::memory_order_relaxed);
}

Ledger::Ledger(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Ledger>> Ledger::Open(const LedgerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->clock = options.clock ? options.clock : &impl->system_clock;
  RETURN_IF_ERROR(impl->Load());
  Impl* raw = impl.get();
  // The Ledger first: if a thread cannot be started, its destructor stops the one that was.
  std::unique_ptr<Ledger> ledger(new Ledger(std::move(impl)));
  try {
    raw->syncer = std::thread([raw] {
      pthread_setname_np(pthread_self(), "tally-sync");
      raw->SyncLoop();
    });
    raw->writer = std::thread([raw] {
      pthread_setname_np(pthread_self(), "tally-writer");
      raw->WriterLoop();
    });
  } catch (const std::system_error& e) {
    return Status::Internal(std::string("starting the ledger's threads: ") + e.what());
  }
  return ledger;
}

Ledger::~Ledger() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->shutting_down = true;
  }
  impl_->cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
  {
    std::lock_guard<std::mutex> lock(impl_->sync_mu);
    impl_->sync_stop = true;
  }
  impl_->sync_cv.notify_all();
  if (impl_->syncer.joinable()) impl_->syncer.join();
}

Status Ledger::Writable() const {
  if (impl_->stopped) {
    return LedgerStopped();
  }
  if (impl_->StorageLow()) {
    return Status::ResourceExhausted("less than " + std::to_string(impl_->options.min_free_bytes) +
                                         " bytes free for the ledger: writes are refused",
                                     "insufficient_storage");
  }
  return Status::Ok();
}

void Ledger::Submit(AppendRequest request, AppendDone done) {
  Status st = Writable();
  if (st.ok()) {
    auto p = std::make_unique<Pending>(
        Pending{std::move(request), std::move(done), Status::Internal("undecided")});
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      if (impl_->shutting_down) {
        st = Status::Unavailable("ledger is shutting down");
      } else if (impl_->queue.size() >= kWriterQueueRequestsMax) {
        st = Status::ResourceExhausted("writer queue full", "overloaded");
      } else {
        impl_->queue.push_back(p.get());
        p.release();  // owned by the queue
      }
    }
    if (st.ok()) {
      impl_->cv.notify_one();
      return;
    }
    done = std::move(p->done);
  }
  done(std::move(st));
}

Result<AppendResult> Ledger::Append(AppendRequest request) {
  // Shared with the writer, which may still be inside set_value when get returns.
  auto promise = std::make_shared<std::promise<Result<AppendResult>>>();
  auto future = promise->get_future();
  Submit(std::move(request),
         [promise](Result<AppendResult> r) { promise->set_value(std::move(r)); });
  return future.get();
}

std::unique_ptr<StateReader> Ledger::Read(uint64_t* holds) const {
  return std::make_unique<StoreReader>(impl_->store.get(), impl_->CurrentSnapshot(holds));
}

uint64_t Ledger::CustomerChangedAt(std::string_view program, std::string_view customer) const {
  return impl_->customer_marks[CustomerSlot(program, customer)].load();
}

uint64_t Ledger::ApiKeysChangedAt() const { return impl_->api_keys_mark.load(); }

Result<std::string> Ledger::GetEntryBytes(uint64_t id) const {
  // The store may hold later entries, written and not yet durable.
  if (id >= impl_->committed_size) return Status::NotFound("no entry " + std::to_string(id));
  if (std::optional<std::string> held = impl_->recent.Entry(id)) return std::move(*held);
  ASSIGN_OR_RETURN(std::optional<std::string> v, impl_->store->Get(Cf::kEntries, EntryKey(id)));
  if (!v) return Status::NotFound("no entry " + std::to_string(id));
  return std::move(*v);
}

Result<Entry> Ledger::GetEntry(uint64_t id) const {
  ASSIGN_OR_RETURN(std::string bytes, GetEntryBytes(id));
  return DecodeEntry(bytes);
}

Result<Receipt> Ledger::GetReceipt(uint64_t id) const {
  if (id >= impl_->committed_size) return Status::NotFound("no entry " + std::to_string(id));
  Receipt r;
  r.leaf_index = id;
  if (std::optional<RecentLog::Proof> held = impl_->recent.Receipt(id)) {
    r.entry = std::move(held->entry);
    r.checkpoint = std::move(held->checkpoint);
    r.tree_size = held->tree_size;
    r.inclusion_proof = std::move(held->inclusion_proof);
  } else {
    StoreNodeReader nodes(impl_->store.get(), nullptr, kTreeStoredFromLevel);
    ASSIGN_OR_RETURN(r.entry, GetEntryBytes(id));
    RETURN_IF_ERROR(impl_->store->Scan(Cf::kCheckpoints, CheckpointKey(id + 1), "", false, nullptr,
                                       [&](std::string_view k, std::string_view v) {
                                         r.tree_size = DecodeU64(k);
                                         r.checkpoint = std::string(v);
                                         return false;
                                       }));
    if (r.checkpoint.empty())
      return Status::DataLoss("no checkpoint covers entry " + std::to_string(id));
    ASSIGN_OR_RETURN(r.inclusion_proof, InclusionProof(nodes, id, r.tree_size));
  }
  ASSIGN_OR_RETURN(std::vector<SigningKeyRecord> rotations, impl_->CachedRotations());
  if (rotations.empty()) return r;
  // Which key signed it, and the rotations that lead there from the first key.
  ASSIGN_OR_RETURN(auto note, ParseNote(r.checkpoint));
  if (note.second.empty()) return Status::DataLoss("unsigned checkpoint");
  uint32_t signed_by = note.second.front().key_id;
  std::string key = rotations.front().previous_key;
  std::string prefix = ObjectPrefix(ObjectKind::kSigningKey, "");
  std::vector<uint64_t> ids;
  std::shared_ptr<const Snapshot> view = impl_->CurrentSnapshot();
  RETURN_IF_ERROR(impl_->store->Scan(Cf::kObjects, prefix, PrefixEnd(prefix), false, view.get(),
                                     [&](std::string_view k, std::string_view) {
                                       ids.push_back(DecodeU64(k.substr(prefix.size())));
                                       return true;
                                     }));
  for (size_t i = 0; i < rotations.size(); ++i) {
    if (NoteKeyId(impl_->options.origin, key) == signed_by) break;
    ASSIGN_OR_RETURN(Receipt link, GetReceipt(ids[i]));
    link.key_chain.clear();
    r.key_chain.push_back(std::move(link));
    key = rotations[i].public_key;
  }
  if (NoteKeyId(impl_->options.origin, key) != signed_by) {
    return Status::DataLoss("checkpoint signed by a key outside the rotation chain");
  }
  return r;
}

Result<std::vector<Hash>> Ledger::GetConsistencyProof(uint64_t from, uint64_t to) const {
  if (from == 0 || from > to || to > impl_->committed_size) {
    return Status::InvalidArgument("need 0 < from <= to <= tree size");
  }
  StoreNodeReader nodes(impl_->store.get(), nullptr, kTreeStoredFromLevel);
  return ConsistencyProof(nodes, from, to);
}

CheckpointInfo Ledger::LatestCheckpoint() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->latest;
}

Result<std::optional<std::string>> Ledger::GetCheckpoint(uint64_t size) const {
  if (size > impl_->committed_size) return std::optional<std::string>();
  return impl_->store->Get(Cf::kCheckpoints, CheckpointKey(size));
}

Result<std::vector<Entry>> Ledger::CustomerEntries(const std::string& program,
                                                   const std::string& customer,
                                                   std::optional<uint64_t> before_id,
                                                   size_t limit) const {
  std::vector<Entry> out;
  if (before_id && *before_id == 0) return out;
  std::shared_ptr<const Snapshot> snapshot = impl_->CurrentSnapshot();
  std::string prefix = CustomerEntriesPrefix(program, customer);
  std::string start = before_id ? CustomerEntryKey(program, customer, *before_id - 1) : prefix;
  std::vector<uint64_t> ids;
  RETURN_IF_ERROR(impl_->store->Scan(Cf::kCustomerEntries, start, PrefixEnd(prefix), false,
                                     snapshot.get(), [&](std::string_view k, std::string_view) {
                                       ids.push_back(IdFromNewestFirstKey(k));
                                       return ids.size() < limit;
                                     }));
  for (uint64_t id : ids) {
    ASSIGN_OR_RETURN(std::optional<std::string> v,
                     impl_->store->Get(Cf::kEntries, EntryKey(id), snapshot.get()));
    if (!v) return Status::DataLoss("index names a missing entry " + std::to_string(id));
    ASSIGN_OR_RETURN(Entry e, DecodeEntry(*v));
    out.push_back(std::move(e));
  }
  return out;
}

uint64_t Ledger::size() const { return impl_->committed_size; }

LedgerStats Ledger::Stats() const {
  Store::BackgroundWrites bg = impl_->store->background_writes();  // not under mu: its own lock
  std::lock_guard<std::mutex> lock(impl_->mu);
  LedgerStats s = impl_->stats;
  s.entries = impl_->committed_size;
  s.background_write_limit = bg.limit_bytes_per_sec;
  s.background_write_bytes = bg.bytes;
  return s;
}
bool Ledger::stopped() const { return impl_->stopped; }
const Signer& Ledger::signer() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->CurrentSigner();
}
const Clock& Ledger::clock() const { return *impl_->clock; }
const LedgerOptions& Ledger::options() const { return impl_->options; }
Store* Ledger::store() const { return impl_->store.get(); }

Result<AppendResult> Ledger::RotateSigningKey() {
  ASSIGN_OR_RETURN(Signer next, Signer::LoadOrCreate(impl_->KeyPath(".next"),
                                                     impl_->options.dir + "/signing.pub.next",
                                                     impl_->options.origin));
  const Signer& current = signer();
  SigningKeyRecord rec;
  rec.name = impl_->options.origin;
  rec.public_key = next.public_key();
  rec.previous_key = current.public_key();
  rec.endorsement = current.Sign(EndorsementMessage(rec.name, rec.public_key));
  AppendRequest req;
  req.decide = [rec](DecideContext& ctx) -> Status {
    Entry e;
    e.type = EntryType::kSigningKey;
    e.payload = EncodeSigningKey(rec);
    ASSIGN_OR_RETURN(Entry done, ctx.Emit(std::move(e)));
    (void)done;
    return Status::Ok();
  };
  return Append(std::move(req));
}

const char* ReplicationRoleName(ReplicationRole role) {
  switch (role) {
    case ReplicationRole::kStandalone:
      return "standalone";
    case ReplicationRole::kPrimary:
      return "primary";
    case ReplicationRole::kFollower:
      return "follower";
    case ReplicationRole::kFenced:
      return "fenced";
  }
  return "unknown";
}

Status Ledger::ApplyGroup(const CommitGroup& group, uint64_t seq) {
  std::lock_guard<std::mutex> lock(impl_->apply_mu);
  if (impl_->role != ReplicationRole::kFollower) {
    return Status::FailedPrecondition("only a follower applies groups from the log");
  }
  return impl_->ApplyCommitGroup(group, seq);
}

Status Ledger::Promote() {
  std::lock_guard<std::mutex> lock(impl_->apply_mu);
  if (impl_->role != ReplicationRole::kFollower) {
    return Status::FailedPrecondition("only a follower can be promoted", "not_a_follower");
  }
  // The role stays kFollower until the claim is in the log: a follower's applier that sees
  // kPrimary knows the promotion succeeded.
  Status st = impl_->TakeOver();
  if (st.ok()) impl_->role = ReplicationRole::kPrimary;
  return st;
}

// Catching up to the end of the log is not enough: the old primary, if it still runs, may
// publish after the end we read, and its group would then fence us. So the new primary claims
// the log with a group of its own: no entries and no checkpoint (it changes no state; it only
// carries the writer id). Once the log holds the claim, the old primary's next publish is
// refused and the claim, read in its catch-up, fences it. The claim goes at the end of the log
// as it is found, before anything is applied: a follower that applies more slowly than a
// running primary writes would never reach the end, and racing it group by group could lose
// every time. What the old primary published before the claim is applied afterwards, in order.
Status Ledger::Impl::TakeOver() {
  ASSIGN_OR_RETURN(std::vector<SigningKeyRecord> rotations, Rotations());
  if (!rotations.empty() && rotations.back().public_key != CurrentSigner().public_key()) {
    return Status::FailedPrecondition(
        "signing.key is not the key the log rotated to: copy the primary's signing.key and "
        "signing.pub here and restart before promoting");
  }
  const CommitGroup claim{writer_id, 0, {}, ""};
  uint64_t end = stream_seq;
  for (int attempt = 0;; ++attempt) {
    if (attempt == kPromoteClaimAttemptsMax) {
      return Status::Unavailable("the log kept moving while claiming it; promote again",
                                 "replication");
    }
    Result<uint64_t> last = options.group_log->LastSeq(end);
    if (!last.ok()) {
      return Status::Unavailable("replicated log: " + last.status().message(), "replication");
    }
    end = *last;
    Result<uint64_t> seq = options.group_log->Publish(claim, end);
    if (seq.ok()) break;
    if (seq.status().reason() != "wrong_last_seq") {
      return Status::Unavailable("replicated log: " + seq.status().message(), "replication");
    }
  }
  return CatchUp(/*fence=*/false);  // the old primary's last groups, then the claim
}

// A claim (TakeOver) changes nothing but the stream position.
Status Ledger::Impl::ApplyClaim(const CommitGroup& g, uint64_t seq) {
  if (g.first_id != 0 || !g.checkpoint.empty()) {
    return Status::DataLoss("group at sequence " + std::to_string(seq) +
                            " has no entries but is not a claim");
  }
  StoreBatch batch(*store);
  batch.Put(Cf::kMeta, kMetaStreamSeq, EncodeU64(seq));
  RETURN_IF_ERROR(store->Write(batch));
  stream_seq = seq;
  return Status::Ok();
}

ReplicationRole Ledger::role() const { return impl_->role; }
uint64_t Ledger::stream_seq() const { return impl_->stream_seq; }

Result<uint64_t> Ledger::Backup(const std::string& out,
                                std::function<std::string(uint64_t size)> manifest) const {
  BackupOptions o;
  o.manifest = std::move(manifest);
  // The copy can hold a group written and not yet durable here: the backup waits for it to be
  // durable (and fails if the ledger stops first), so the copy never holds what this ledger
  // could lose, and signing.pub, copied afterwards, is the key of its newest checkpoint.
  o.checkpoint = [this](const std::string& db_dir) {
    RETURN_IF_ERROR(impl_->store->CreateCheckpoint(db_dir));
    return impl_->WaitDurable(impl_->written_size);
  };
  return WriteBackup(impl_->options.dir, out, o);
}

}  // namespace tally
