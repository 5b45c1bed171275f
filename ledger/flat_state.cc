#include "ledger/flat_state.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <utility>

namespace tally {

namespace {

// Zeroed memory straight from mmap; from 2 MiB up in huge pages where the kernel allows it
// (transparent huge pages in "madvise" mode, Debian's default): big tables are probed at random
// over hundreds of megabytes, where 4 KiB pages cost a page walk per probe and a fault per page.
// Small tables (most column families of a small ledger) stay in plain 4 KiB pages.
class Pages {
 public:
  static constexpr size_t kPage = 4096;
  static constexpr size_t kHuge = size_t{2} << 20;
  Pages() = default;
  // huge = false: plain pages whatever the size.
  explicit Pages(size_t bytes, bool huge = true) {
    const size_t unit = huge && bytes >= kHuge ? kHuge : kPage;
    size_ = (std::max<size_t>(bytes, 1) + unit - 1) / unit * unit;
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    if (unit == kHuge) madvise(p, size_, MADV_HUGEPAGE);  // advice only: plain pages if refused
    data_ = static_cast<char*>(p);
  }
  ~Pages() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  Pages(Pages&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(o.size_) {}
  Pages& operator=(Pages&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
};

// Bytes handed out in 8-byte units from chunks of kChunkBytes, each mapped when first needed, so
// nothing handed out ever moves and a 32-bit reference (in units; 0 means none) finds it: its
// high bits name the chunk, its low bits the place in it. An allocation never spans two chunks:
// when one does not fit in what is left of a chunk, that rest is skipped, never written (so it
// reads as zero). Less than 2^32 units (32 GiB). Fresh bytes read as zero; running out throws
// std::bad_alloc. The first chunk stays in plain 4 KiB pages, so a small table costs only the
// pages it writes; the others may be huge pages.
class Arena {
 public:
  static constexpr size_t kUnit = 8;
  static constexpr int kChunkShift = 20;
  static constexpr size_t kChunkUnits = size_t{1} << kChunkShift;
  static constexpr size_t kChunkBytes = kChunkUnits * kUnit;  // 8 MiB

  // `bytes` rounded up to whole units.
  static size_t Round(size_t bytes) { return (bytes + kUnit - 1) / kUnit * kUnit; }

  // The reference of `bytes` fresh bytes (rounded up to whole units; at most a chunk).
  uint32_t Alloc(size_t bytes) {
    const size_t n = Round(bytes) / kUnit;
    TALLY_CHECK(n <= kChunkUnits);
    size_t at = used_;
    if ((at & (kChunkUnits - 1)) + n > kChunkUnits) at = NextChunk(at);
    // Keeps end() below 2^32, so that it fits a reference too.
    if (at + n >= (size_t{1} << 32)) throw std::bad_alloc();
    while (chunks_.size() <= (at >> kChunkShift))
      chunks_.emplace_back(kChunkBytes, !chunks_.empty());
    used_ = at + n;
    return static_cast<uint32_t>(at);
  }
  char* at(uint32_t ref) const {
    return chunks_[ref >> kChunkShift].data() + (ref & (kChunkUnits - 1)) * kUnit;
  }
  // Every reference handed out is below this.
  uint32_t end() const { return static_cast<uint32_t>(used_); }
  // The first reference of the chunk after the one `ref` is in.
  static size_t NextChunk(size_t ref) { return ((ref >> kChunkShift) + 1) << kChunkShift; }

 private:
  std::vector<Pages> chunks_;
  size_t used_ = 1;  // references handed out (and skipped) are below this; 0 means none
};

// A key and its value in a table's record arena: this header, the key's bytes, then the value's,
// rounded up to whole units; so the arena can be walked from record to record
// (Table::NextRecord). A key's value is overwritten in place while its record keeps its size;
// a value of another size gets the key a new record at the end of the arena, and the old one is
// marked superseded (Tally's derived values rarely change size).
// 0 is never a state: a record's header is never all zero, so the skipped, unwritten rest of
// an arena chunk (read as zero) is told apart from a record.
enum : uint8_t { kPresent = 1, kAbsent = 2, kSuperseded = 3 };
struct Record {
  uint16_t key_len;
  uint8_t state;  // kAbsent (deleted), kPresent, or kSuperseded: not its key's record any more
  uint8_t unused;
  uint32_t value_len;
  char* key() { return reinterpret_cast<char*>(this + 1); }
  const char* key() const { return reinterpret_cast<const char*>(this + 1); }
  std::string_view key_view() const { return std::string_view(key(), key_len); }
  char* value() { return key() + key_len; }
  std::string_view value_view() const { return std::string_view(key() + key_len, value_len); }
  static size_t SizeFor(size_t key_len, size_t value_len) {
    return Arena::Round(sizeof(Record) + key_len + value_len);
  }
  size_t size() const { return SizeFor(key_len, value_len); }
};
// One unit: whatever is left of a chunk has room for a header, so a header is never split.
static_assert(sizeof(Record) == Arena::kUnit);

// An index is an array of these over fresh mmap pages, taken as it is: the pages read as zero,
// which is an empty cell (reference 0), and a page is touched only when a key lands in it.
// Nothing is constructed there (a constructor would write every cell). `hash` is the low 32 bits
// of the key's hash: the index has at most 2^32 cells, so it is also where the key belongs.
struct Cell {
  uint32_t hash;
  uint32_t ref;  // the record, in the record arena; 0: empty
};

constexpr size_t kInitialCapacity = 512;  // power of two: one 4 KiB page of cells

uint64_t HashOf(std::string_view key) { return std::hash<std::string_view>{}(key); }

// The fingerprints of a family's keys (KeepOnlyDigest with reads; SetDigest::Fingerprint): an
// open-addressing set of 64-bit values over fresh pages (0: empty; a fingerprint of 0 is taken as
// 1), linearly probed, at most three quarters full. A set of fingerprints has no false negatives,
// so a shared fingerprint can only make a new key look like an earlier one, which sends the audit
// to its exact comparison: never a wrong answer. The fingerprints are keyed all the same, so that
// whoever chooses keys (an API client, its idempotency keys and order ids) cannot send every audit
// the slow way with two keys that share one.
class FingerprintSet {
 public:
  FingerprintSet() { Rehash(kInitialCapacity); }
  bool Contains(uint64_t fp) const { return slots_[Probe(Nonzero(fp))] != 0; }
  // False if it was there already.
  bool Insert(uint64_t fp) {
    fp = Nonzero(fp);
    const size_t i = Probe(fp);
    if (slots_[i] != 0) return false;
    slots_[i] = fp;
    if ((++count_) * 4 > capacity_ * 3) Rehash(capacity_ * 2);
    return true;
  }
  // Starts loading the slot where a probe for `fp` begins.
  void Prefetch(uint64_t fp) const {
    __builtin_prefetch(&slots_[static_cast<size_t>(Nonzero(fp)) & (capacity_ - 1)]);
  }
  void MakeRoom(size_t n) {
    size_t need = capacity_;
    while ((n + 1) * 4 > need * 3) need *= 2;
    if (need > capacity_) Rehash(need);
  }

 private:
  static uint64_t Nonzero(uint64_t fp) { return fp == 0 ? 1 : fp; }
  size_t Probe(uint64_t fp) const {
    const size_t mask = capacity_ - 1;
    size_t i = static_cast<size_t>(fp) & mask;
    while (slots_[i] != 0 && slots_[i] != fp) i = (i + 1) & mask;
    return i;
  }
  void Rehash(size_t capacity) {
    Pages fresh_pages(capacity * sizeof(uint64_t));
    auto* fresh = reinterpret_cast<uint64_t*>(fresh_pages.data());  // zeroed pages: empty
    for (size_t j = 0; j < capacity_; ++j) {
      const uint64_t fp = slots_[j];
      if (fp == 0) continue;
      size_t i = static_cast<size_t>(fp) & (capacity - 1);
      while (fresh[i] != 0) i = (i + 1) & (capacity - 1);
      fresh[i] = fp;
    }
    pages_ = std::move(fresh_pages);
    slots_ = fresh;
    capacity_ = capacity;
  }

  Pages pages_;
  uint64_t* slots_ = nullptr;
  size_t capacity_ = 0;  // a power of two
  size_t count_ = 0;
};

// A family kept only as a digest (FlatState::KeepOnlyDigest).
struct DigestOnly {
  DigestOnly(SetDigest d, bool r) : digest(std::move(d)), reads(r) {}
  SetDigest digest;
  bool reads = false;
  // With reads: every key's fingerprint, the last pair Put, and whether the digest lost track.
  FingerprintSet seen;
  std::string last_key, last_value;
  bool has_last = false;
  bool lost_track = false;
  std::string probe_key;  // FingerprintOf's last key and its fingerprint
  uint64_t probe_fingerprint = 0;
  bool has_probe = false;

  // The fingerprint of `key`, kept for a next call with the same key (a Get, then a Put).
  uint64_t FingerprintOf(std::string_view key) {
    if (!has_probe || key != probe_key) {
      probe_key.assign(key);
      probe_fingerprint = digest.Fingerprint(key);
      has_probe = true;
    }
    return probe_fingerprint;
  }

  void Put(std::string_view key, std::string_view value) {
    if (reads) {
      if (has_last && key == last_key) {
        digest.Remove(last_key, last_value);
      } else if (!seen.Insert(FingerprintOf(key))) {
        lost_track = true;  // an earlier key, whose value is not kept
      }
      last_key.assign(key);
      last_value.assign(value);
      has_last = true;
    }
    digest.Add(key, value);
  }
  // The value of `key` if it is the last key Put; nullopt if it was never Put (or cannot be
  // told: lost_track).
  std::optional<std::string_view> Get(std::string_view key) {
    TALLY_CHECK(reads);  // a family kept only as a digest, without reads, cannot be read
    if (has_last && key == last_key) return std::string_view(last_value);
    if (seen.Contains(FingerprintOf(key))) lost_track = true;
    return std::nullopt;
  }
  void Delete(std::string_view key) {
    // Deleting a key it holds cannot be followed (an earlier key: Get says so); deleting an
    // absent key changes nothing.
    if (Get(key)) lost_track = true;
  }
};

}  // namespace

// One column family. Until it is first read, Puts are only appended to the record arena (no
// hashing): column families that replay writes but never reads (indexes of entries) are indexed
// later, by whichever thread compares them, walking the arena. The index has power-of-two
// capacity, is linearly probed and at most three quarters full (records are never removed: a
// deleted key stays, marked absent). Eight cells share a cache line, so even a miss's longer
// probe (about eight cells on average when three quarters full) is a line or two, and a fuller
// index is fewer fresh pages for the kernel to zero: at 5M keys, 8M cells instead of 16M.
struct FlatState::Table {
  Pages index_pages;
  Cell* index = nullptr;
  size_t capacity = 0;  // cells in index: a power of two, at most 2^32
  Arena records;
  bool indexed = false;
  std::unique_ptr<DigestOnly> digest_only;  // KeepOnlyDigest: no records, only a digest
  size_t keys = 0;                          // records indexed
  size_t pending = 0;                       // Puts appended but not indexed yet
  size_t live = 0;                          // keys present

  Table() { Rehash(kInitialCapacity); }

  Record* Rec(uint32_t ref) const { return reinterpret_cast<Record*>(records.at(ref)); }

  // The first record at or after `ref`, skipping the unwritten rest of a chunk; records.end()
  // if there is none.
  uint32_t RecordAt(size_t ref) const {
    if (ref < records.end() && StateAt(static_cast<uint32_t>(ref)) == 0) {
      ref = Arena::NextChunk(ref);
    }
    return static_cast<uint32_t>(std::min<size_t>(ref, records.end()));
  }
  // The state byte of the record at `ref`, or 0 in the skipped rest of a chunk, where no record
  // was ever made (so it is read as a byte, not through a Record).
  uint8_t StateAt(uint32_t ref) const {
    uint8_t state;
    std::memcpy(&state, records.at(ref) + offsetof(Record, state), 1);
    return state;
  }
  uint32_t FirstRecord() const { return RecordAt(1); }
  uint32_t NextRecord(uint32_t ref) const {
    return RecordAt(ref + Rec(ref)->size() / Arena::kUnit);
  }

  uint32_t NewRecord(std::string_view key, std::string_view value) {
    TALLY_CHECK(key.size() <= UINT16_MAX && value.size() <= UINT32_MAX);
    const uint32_t ref = records.Alloc(Record::SizeFor(key.size(), value.size()));
    char* p = records.at(ref);
    new (p)
        Record{static_cast<uint16_t>(key.size()), kPresent, 0, static_cast<uint32_t>(value.size())};
    if (!key.empty()) std::memcpy(p + sizeof(Record), key.data(), key.size());
    if (!value.empty()) std::memcpy(p + sizeof(Record) + key.size(), value.data(), value.size());
    return ref;
  }

  // The cell holding `key`, or the empty cell where it would go.
  size_t Probe(std::string_view key, uint64_t hash) const {
    const auto low = static_cast<uint32_t>(hash);
    const size_t mask = capacity - 1;
    for (size_t i = low & mask;; i = (i + 1) & mask) {
      const Cell& c = index[i];
      if (c.ref == 0) return i;
      if (c.hash == low && Rec(c.ref)->key_view() == key) return i;
    }
  }

  void Grow() { Rehash(capacity * 2); }

  // True while `n` keys fit `cells` cells at most three quarters full.
  static bool Fits(size_t n, size_t cells) { return n * 4 <= cells * 3; }

  // Makes the index big enough for `n` keys (never smaller).
  void MakeRoom(size_t n) {
    size_t need = capacity;
    while (!Fits(n + 1, need)) need *= 2;
    if (need > capacity) Rehash(need);
  }

  // Moves the index to one of `cells` cells (a power of two that Fits the records). If
  // the memory cannot be had (std::bad_alloc), the index is left as it was.
  void Rehash(size_t cells) {
    TALLY_CHECK(cells <= (size_t{1} << 32));
    Pages fresh_pages(cells * sizeof(Cell));
    Cell* fresh = reinterpret_cast<Cell*>(fresh_pages.data());  // zeroed pages: empty
    const size_t mask = cells - 1;
    for (size_t j = 0; j < capacity; ++j) {
      const Cell& c = index[j];
      if (c.ref == 0) continue;
      size_t i = c.hash & mask;
      while (fresh[i].ref != 0) i = (i + 1) & mask;
      fresh[i] = c;
    }
    index_pages = std::move(fresh_pages);
    index = fresh;
    capacity = cells;
  }

  // Sets the value of the key in cell `i` (present from now on): in its record if the record
  // keeps its size, else in a new record that the cell then names. If the memory cannot be had
  // (std::bad_alloc), nothing changes.
  void SetValue(size_t i, std::string_view value) {
    Record* r = Rec(index[i].ref);
    const bool was_present = r->state == kPresent;
    if (Record::SizeFor(r->key_len, value.size()) == r->size()) {
      if (!value.empty()) std::memcpy(r->value(), value.data(), value.size());
      r->value_len = static_cast<uint32_t>(value.size());
      r->state = kPresent;
    } else {
      const uint32_t ref = NewRecord(r->key_view(), value);
      r->state = kSuperseded;
      index[i].ref = ref;
    }
    if (!was_present) ++live;
  }

  // Indexes the record at `ref` (its key's hash: `hash`). A key's Puts are buffered in order, so
  // a record of a key indexed already is the later one: it becomes the key's record.
  void Insert(uint32_t ref, uint64_t hash) {
    Record* r = Rec(ref);
    // Replaced already, or indexed already, by an earlier IndexPending that did not finish.
    if (r->state == kSuperseded) return;
    const size_t i = Probe(r->key_view(), hash);
    if (index[i].ref == ref) return;
    if (index[i].ref != 0) {
      Rec(index[i].ref)->state = kSuperseded;
      index[i].ref = ref;
      return;
    }
    AddCell(i, hash, ref);
  }

  void AddCell(size_t i, uint64_t hash, uint32_t ref) {
    index[i] = Cell{static_cast<uint32_t>(hash), ref};
    ++keys;
    ++live;
    if (!Fits(keys, capacity)) Grow();
  }

  // The cell where a key of this hash starts probing, asked for ahead of its use: a big
  // table's cells are rarely in cache, and several loads in flight at once overlap.
  void PrefetchCell(uint64_t hash) const {
    __builtin_prefetch(&index[static_cast<uint32_t>(hash) & (capacity - 1)]);
  }

  void IndexPending() {
    if (indexed) return;
    MakeRoom(keys + pending);
    // The records are walked in order; each is hashed (and its cell prefetched) kAhead records
    // before it is inserted.
    constexpr size_t kAhead = 16;
    uint32_t refs[kAhead];
    uint64_t hashes[kAhead];
    size_t head = 0, count = 0;
    uint32_t next = FirstRecord();
    for (;;) {
      for (; count < kAhead && next < records.end(); ++count) {
        const size_t slot = (head + count) % kAhead;
        refs[slot] = next;
        hashes[slot] = HashOf(Rec(next)->key_view());
        PrefetchCell(hashes[slot]);
        next = NextRecord(next);
      }
      if (count == 0) break;
      Insert(refs[head], hashes[head]);
      head = (head + 1) % kAhead;
      --count;
    }
    pending = 0;
    indexed = true;
  }

  // out[i] = the record of wanted[i], or 0. The keys are hashed and their cells prefetched first,
  // then the first record each cell names, then the probes run.
  void FindMany(const std::string_view* wanted, size_t n, uint32_t* out) {
    IndexPending();
    constexpr size_t kBatch = 32;
    uint64_t hashes[kBatch];
    for (size_t base = 0; base < n; base += kBatch) {
      const size_t m = std::min(kBatch, n - base);
      for (size_t j = 0; j < m; ++j) {
        hashes[j] = HashOf(wanted[base + j]);
        PrefetchCell(hashes[j]);
      }
      for (size_t j = 0; j < m; ++j) {
        const Cell& c = index[static_cast<uint32_t>(hashes[j]) & (capacity - 1)];
        if (c.ref != 0) __builtin_prefetch(records.at(c.ref));
      }
      for (size_t j = 0; j < m; ++j) out[base + j] = index[Probe(wanted[base + j], hashes[j])].ref;
    }
  }

  // The record of `key`, or 0.
  uint32_t FindRef(std::string_view key) {
    IndexPending();
    return index[Probe(key, HashOf(key))].ref;
  }
  Record* Find(std::string_view key) {
    const uint32_t ref = FindRef(key);
    return ref == 0 ? nullptr : Rec(ref);
  }

  void Put(std::string_view key, std::string_view value) {
    if (!indexed) {
      NewRecord(key, value);
      ++pending;
      return;
    }
    const uint64_t hash = HashOf(key);
    const size_t i = Probe(key, hash);
    if (index[i].ref != 0) {
      SetValue(i, value);
      return;
    }
    AddCell(i, hash, NewRecord(key, value));
  }

  void Delete(std::string_view key) {
    Record* r = Find(key);
    if (r == nullptr || r->state != kPresent) return;
    r->state = kAbsent;
    --live;
  }

  // Every key's record, in the order the records were made.
  template <typename Fn>
  void ForEach(Fn&& fn) {
    IndexPending();
    for (uint32_t ref = FirstRecord(); ref < records.end(); ref = NextRecord(ref)) {
      const Record* r = Rec(ref);
      if (r->state != kSuperseded) fn(ref, r);
    }
  }

  FlatState::Item ItemOf(const Record* r) const {
    return FlatState::Item{r->key_view(), r->value_view(), r->state == kPresent};
  }
};

FlatState::FlatState() : tables_(std::make_unique<Table[]>(kCfCount)) {}
FlatState::~FlatState() = default;
FlatState::FlatState(FlatState&&) noexcept = default;
FlatState& FlatState::operator=(FlatState&&) noexcept = default;

FlatState::Table& FlatState::Readable(Cf cf) const {
  Table& t = tables_[static_cast<size_t>(cf)];
  TALLY_CHECK(!t.digest_only);  // a family kept only as a digest has no records to read
  return t;
}

Result<std::optional<std::string>> FlatState::Get(Cf cf, std::string_view key) const {
  Table& u = tables_[static_cast<size_t>(cf)];
  if (u.digest_only) {
    std::optional<std::string_view> v = u.digest_only->Get(key);
    if (!v) return std::optional<std::string>();
    return std::optional<std::string>(std::in_place, v->data(), v->size());
  }
  Table& t = Readable(cf);
  const Record* r = t.Find(key);
  if (r == nullptr || r->state != kPresent) return std::optional<std::string>();
  std::string_view v = r->value_view();
  return std::optional<std::string>(std::in_place, v.data(), v.size());
}

Status FlatState::Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
                       const ScanFn& fn) const {
  std::vector<Item> items;
  Table& t = Readable(cf);
  t.ForEach([&](uint32_t, const Record* r) {
    Item item = t.ItemOf(r);
    if (item.present && item.key >= start && (end.empty() || item.key < end)) items.push_back(item);
  });
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.key < b.key; });
  if (reverse) std::reverse(items.begin(), items.end());
  for (const Item& item : items) {
    if (!fn(item.key, item.value)) break;
  }
  return Status::Ok();
}

void FlatState::Put(Cf cf, std::string_view key, std::string_view value) {
  Table& t = tables_[static_cast<size_t>(cf)];
  if (t.digest_only) {
    t.digest_only->Put(key, value);
  } else {
    t.Put(key, value);
  }
}

void FlatState::Delete(Cf cf, std::string_view key) {
  Table& t = tables_[static_cast<size_t>(cf)];
  if (t.digest_only) {
    TALLY_CHECK(t.digest_only->reads);  // a family kept only as a digest, without reads
    t.digest_only->Delete(key);
  } else {
    t.Delete(key);
  }
}

void FlatState::KeepOnlyDigest(Cf cf, SetDigest digest, bool reads) {
  Table& t = tables_[static_cast<size_t>(cf)];
  TALLY_CHECK(!t.digest_only && t.records.end() == 1);  // nothing Put yet
  t.digest_only = std::make_unique<DigestOnly>(std::move(digest), reads);
}

const SetDigest* FlatState::digest(Cf cf) const {
  const Table& t = tables_[static_cast<size_t>(cf)];
  return t.digest_only ? &t.digest_only->digest : nullptr;
}

bool FlatState::lost_track(Cf cf) const {
  const Table& t = tables_[static_cast<size_t>(cf)];
  return t.digest_only && t.digest_only->lost_track;
}

void FlatState::Reserve(Cf cf, uint64_t keys) {
  // A table holds fewer than 2^31 keys (a record takes at least two of the 2^32 units its
  // references reach); a larger hint is nonsense and ignored, which also keeps the index at most
  // 2^32 cells.
  if (keys >= (uint64_t{1} << 31)) return;
  Table& t = tables_[static_cast<size_t>(cf)];
  try {
    if (t.digest_only) {
      if (t.digest_only->reads) t.digest_only->seen.MakeRoom(keys);
      return;
    }
    t.MakeRoom(keys);
  } catch (const std::bad_alloc&) {
    // A hint only: the table keeps what it had and grows as before.
  }
}

size_t FlatState::ref_end(Cf cf) const {
  Table& t = Readable(cf);
  t.IndexPending();
  return t.records.end();
}

size_t FlatState::record_bytes(Cf cf) const {
  const Table& t = tables_[static_cast<size_t>(cf)];
  if (t.digest_only) return t.digest_only->digest.bytes();
  return size_t{t.records.end()} * Arena::kUnit;
}

FlatState::Item FlatState::At(Cf cf, Ref ref) const {
  Table& t = Readable(cf);
  t.IndexPending();
  TALLY_CHECK(ref != 0 && ref < t.records.end());
  return t.ItemOf(t.Rec(ref));
}

std::optional<FlatState::Ref> FlatState::Find(Cf cf, std::string_view key) const {
  const uint32_t ref = Readable(cf).FindRef(key);
  if (ref == 0) return std::nullopt;
  return ref;
}

void FlatState::Prefetch(Cf cf, std::string_view key) const {
  const Table& t = tables_[static_cast<size_t>(cf)];
  if (t.digest_only) {
    const DigestOnly& d = *t.digest_only;
    if (d.reads) d.seen.Prefetch(d.digest.Fingerprint(key));
  } else if (t.indexed) {
    t.PrefetchCell(HashOf(key));
  }
}

void FlatState::FindMany(Cf cf, const std::string_view* keys, size_t n, Ref* out) const {
  Readable(cf).FindMany(keys, n, out);
}

void FlatState::ForEach(Cf cf, const std::function<void(Ref, const Item&)>& fn) const {
  Table& t = Readable(cf);
  t.ForEach([&](uint32_t ref, const Record* r) { fn(ref, t.ItemOf(r)); });
}

size_t FlatState::size(Cf cf) const {
  Table& t = tables_[static_cast<size_t>(cf)];
  if (t.digest_only) return t.digest_only->digest.count();
  t.IndexPending();
  return t.live;
}

}  // namespace tally
