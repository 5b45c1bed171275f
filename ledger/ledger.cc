#include "ledger/ledger.h"

#include <pthread.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "ledger/apply.h"
#include "ledger/checkpoint.h"
#include "ledger/coding.h"
#include "ledger/keys.h"
#include "ledger/merkle.h"
#include "ledger/note.h"
#include "ledger/points.h"
#include "ledger/records.h"
#include "ledger/signer.h"
#include "ledger/store.h"

namespace tally {
namespace {

// Complete Merkle subtrees as stored in the tree column family.
class StoreNodeReader final : public NodeReader {
 public:
  explicit StoreNodeReader(const Store* store) : store_(store) {}
  Result<Hash> GetNode(int level, uint64_t index) const override {
    ASSIGN_OR_RETURN(std::optional<std::string> v, store_->Get(Cf::kTree, TreeKey(level, index)));
    if (!v || v->size() != 32) {
      return Status::DataLoss("missing tree node " + std::to_string(level) + "/" +
                              std::to_string(index));
    }
    Hash h;
    std::copy(v->begin(), v->end(), h.begin());
    return h;
  }

 private:
  const Store* store_;
};

struct Pending {
  AppendRequest request;
  std::promise<Result<AppendResult>> promise;
  Result<AppendResult> result = Status::Internal("undecided");
};

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
  std::thread writer;

  // Owned by the writer thread.
  bool rotated_in_group = false;
  MerkleFrontier frontier;
  uint64_t next_id = 0;
  int64_t last_time_us = 0;

  Status Load();
  void WriterLoop();
  void RunGroup(std::vector<Pending*>& group);
  void Decide(Pending& p, OverlayState& overlay, std::vector<std::string>& group_entries);
  Status Commit(OverlayState& overlay, const std::vector<std::string>& group_entries,
                uint64_t group_first);
  CheckpointInfo SignCheckpoint(uint64_t size, const Hash& root) const;
  const Signer& CurrentSigner() const;  // REQUIRES: mu held, or the writer thread
  std::string KeyPath(const std::string& suffix = "") const {
    return options.dir + "/signing.key" + suffix;
  }
  Status CheckSigningKey();
  Status FinishRotation(uint64_t entry_id);
  Result<std::vector<SigningKeyRecord>> Rotations() const;
  void RecordGroup(size_t entries, double seconds);  // REQUIRES: mu held
};

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
  ASSIGN_OR_RETURN(store, Store::Open(options.dir + "/db", Store::Options{}));

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
  StoreNodeReader nodes(store.get());
  ASSIGN_OR_RETURN(frontier, MerkleFrontier::Load(nodes, next_id));

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
  committed_size = next_id;
  return CheckSigningKey();
}

const Signer& Ledger::Impl::CurrentSigner() const { return *signers.back(); }

Result<std::vector<SigningKeyRecord>> Ledger::Impl::Rotations() const {
  std::vector<SigningKeyRecord> out;
  std::string prefix = ObjectPrefix(ObjectKind::kSigningKey, "");
  Status st;
  RETURN_IF_ERROR(store->Scan(Cf::kObjects, prefix, PrefixEnd(prefix), false, nullptr,
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
  std::vector<Pending*> group;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return !queue.empty() || shutting_down; });
      if (queue.empty()) return;
      while (!queue.empty() && group.size() < options.commit_group_requests_max) {
        group.push_back(queue.front());
        queue.pop_front();
      }
    }
    RunGroup(group);
    for (Pending* p : group) p->promise.set_value(std::move(p->result));
    group.clear();
  }
}

void Ledger::Impl::RunGroup(std::vector<Pending*>& group) {
  if (stopped) {
    for (Pending* p : group) {
      p->result = Status::Unavailable("ledger stopped after a failed write", "ledger_stopped");
    }
    return;
  }
  // The writer is the only one writing, so the latest state is stable during the group.
  StoreReader base(store.get(), nullptr);
  OverlayState overlay(&base);
  std::vector<std::string> group_entries;
  uint64_t group_first = next_id;
  for (Pending* p : group) Decide(*p, overlay, group_entries);
  if (group_entries.empty()) {
    for (Pending* p : group) {
      if (p->result.ok()) p->result->tree_size = next_id;
    }
    return;
  }

  Status st = Commit(overlay, group_entries, group_first);
  if (st.ok() && rotated_in_group) st = FinishRotation(next_id - 1);
  rotated_in_group = false;
  if (!st.ok()) {
    stopped = true;
    for (Pending* p : group) {
      p->result =
          Status::Unavailable("write failed, ledger stopped: " + st.message(), "ledger_stopped");
    }
    return;
  }
  for (Pending* p : group) {
    if (p->result.ok()) p->result->tree_size = next_id;
  }
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
    for (const NodeWrite& n : nodes)
      overlay.Put(Cf::kTree, TreeKey(n.level, n.index), AsBytes(n.hash));
    group_entries.push_back(std::move(bytes));
  }
  next_id += ctx.encoded().size();
  if (!ctx.encoded().empty()) last_time_us = now;
  p.result = AppendResult{first, static_cast<uint32_t>(ctx.encoded().size()), false, 0};
}

Status Ledger::Impl::Commit(OverlayState& overlay, const std::vector<std::string>& group_entries,
                            uint64_t group_first) {
  TALLY_CHECK(frontier.size() == next_id);
  TALLY_CHECK(group_first + group_entries.size() == next_id);
  StoreBatch batch(*store);
  overlay.AddTo(&batch);  // the entries, their tree nodes and all derived state
  // The tree only grows, from the frontier verified against the last signed checkpoint at open,
  // so this checkpoint is consistent with every one signed before it.
  CheckpointInfo cp = SignCheckpoint(next_id, frontier.Root());
  TALLY_CHECK(cp.size > committed_size.load());
  batch.Put(Cf::kCheckpoints, CheckpointKey(cp.size), cp.note);
  batch.Put(Cf::kMeta, kMetaCheckpoint, cp.note);
  auto start = std::chrono::steady_clock::now();
  Status st = options.before_write ? options.before_write() : Status::Ok();
  if (st.ok()) st = store->Write(batch);
  if (!st.ok()) return st;
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard<std::mutex> lock(mu);
  latest = std::move(cp);
  committed_size = next_id;
  RecordGroup(group_entries.size(), seconds);
  return Status::Ok();
}

Ledger::Ledger(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Ledger>> Ledger::Open(const LedgerOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->clock = options.clock ? options.clock : &impl->system_clock;
  RETURN_IF_ERROR(impl->Load());
  Impl* raw = impl.get();
  raw->writer = std::thread([raw] {
    pthread_setname_np(pthread_self(), "tally-writer");
    raw->WriterLoop();
  });
  return std::unique_ptr<Ledger>(new Ledger(std::move(impl)));
}

Ledger::~Ledger() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->shutting_down = true;
  }
  impl_->cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
}

Result<AppendResult> Ledger::Append(AppendRequest request) {
  if (impl_->stopped) {
    return Status::Unavailable("ledger stopped after a failed write", "ledger_stopped");
  }
  Pending p{std::move(request), {}, Status::Internal("undecided")};
  auto future = p.promise.get_future();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->shutting_down) return Status::Unavailable("ledger is shutting down");
    if (impl_->queue.size() >= kWriterQueueRequestsMax) {
      return Status::ResourceExhausted("writer queue full", "overloaded");
    }
    impl_->queue.push_back(&p);
  }
  impl_->cv.notify_one();
  return future.get();
}

std::unique_ptr<StateReader> Ledger::Read() const {
  return std::make_unique<StoreReader>(impl_->store.get(), impl_->store->NewSnapshot());
}

Result<std::string> Ledger::GetEntryBytes(uint64_t id) const {
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
  ASSIGN_OR_RETURN(r.entry, GetEntryBytes(id));
  RETURN_IF_ERROR(impl_->store->Scan(Cf::kCheckpoints, CheckpointKey(id + 1), "", false, nullptr,
                                     [&](std::string_view k, std::string_view v) {
                                       r.tree_size = DecodeU64(k);
                                       r.checkpoint = std::string(v);
                                       return false;
                                     }));
  if (r.checkpoint.empty())
    return Status::DataLoss("no checkpoint covers entry " + std::to_string(id));
  StoreNodeReader nodes(impl_->store.get());
  ASSIGN_OR_RETURN(r.inclusion_proof, InclusionProof(nodes, id, r.tree_size));
  ASSIGN_OR_RETURN(std::vector<SigningKeyRecord> rotations, impl_->Rotations());
  if (rotations.empty()) return r;
  // Which key signed it, and the rotations that lead there from the first key.
  ASSIGN_OR_RETURN(auto note, ParseNote(r.checkpoint));
  if (note.second.empty()) return Status::DataLoss("unsigned checkpoint");
  uint32_t signed_by = note.second.front().key_id;
  std::string key = rotations.front().previous_key;
  std::string prefix = ObjectPrefix(ObjectKind::kSigningKey, "");
  std::vector<uint64_t> ids;
  RETURN_IF_ERROR(impl_->store->Scan(Cf::kObjects, prefix, PrefixEnd(prefix), false, nullptr,
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
  StoreNodeReader nodes(impl_->store.get());
  return ConsistencyProof(nodes, from, to);
}

CheckpointInfo Ledger::LatestCheckpoint() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->latest;
}

Result<std::optional<std::string>> Ledger::GetCheckpoint(uint64_t size) const {
  return impl_->store->Get(Cf::kCheckpoints, CheckpointKey(size));
}

Result<std::vector<Entry>> Ledger::CustomerEntries(const std::string& program,
                                                   const std::string& customer,
                                                   std::optional<uint64_t> before_id,
                                                   size_t limit) const {
  std::vector<Entry> out;
  if (before_id && *before_id == 0) return out;
  auto snapshot = impl_->store->NewSnapshot();
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
  std::lock_guard<std::mutex> lock(impl_->mu);
  LedgerStats s = impl_->stats;
  s.entries = impl_->committed_size;
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

Status Ledger::Backup(const std::string& dir) const { return impl_->store->CreateCheckpoint(dir); }

}  // namespace tally
