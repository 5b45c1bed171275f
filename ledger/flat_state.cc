#include "ledger/flat_state.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <new>
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
  explicit Pages(size_t bytes) {
    const size_t unit = bytes >= kHuge ? kHuge : kPage;
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

// A key and its value, in the table's blocks: this header, then the key's bytes, then the first
// value's bytes. A larger later value moves to fresh bytes of the blocks.
struct Record {
  uint32_t key_len;
  uint32_t value_len;
  uint32_t value_cap;
  uint32_t present;
  uint32_t slot;  // position in Table::order, once indexed
  char* value;
  const char* key() const { return reinterpret_cast<const char*>(this + 1); }
  std::string_view key_view() const { return std::string_view(key(), key_len); }
};

// An index is an array of these over fresh mmap pages, taken as it is: the pages read as zero,
// which is an empty cell (hash 0, null record), and a page is touched only when a key lands in
// it. Nothing is constructed there (a constructor would write every cell).
struct Cell {
  uint64_t hash;
  Record* record;  // null: empty
};

constexpr size_t kBlockBytesFirst = size_t{64} << 10;
constexpr size_t kBlockBytesMax = size_t{64} << 20;
constexpr size_t kInitialCapacity = 64;  // power of two

uint64_t HashOf(std::string_view key) { return std::hash<std::string_view>{}(key); }

}  // namespace

// One column family. Until it is first read, Puts are only appended to `pending` (no hashing):
// column families that replay writes but never reads (indexes of entries) are indexed later, by
// whichever thread compares them. The index has power-of-two capacity, is linearly probed and
// at most half full (records are never removed: a deleted key stays, marked absent).
struct FlatState::Table {
  Pages index_pages;
  Cell* index = nullptr;
  size_t capacity = 0;           // cells in index: a power of two
  std::vector<Record*> order;    // indexed records, in the order their keys were first Put
  std::vector<Record*> pending;  // Puts not indexed yet, in order
  bool indexed = false;
  size_t live = 0;
  std::vector<Pages> blocks;  // from kBlockBytesFirst, each twice the one before, to the max
  char* free = nullptr;
  size_t free_bytes = 0;

  Table() { Rehash(kInitialCapacity); }

  char* Alloc(size_t n) {
    n = (n + 7) & ~size_t{7};  // keeps every Record 8-byte aligned
    if (n > free_bytes) {
      size_t size =
          blocks.empty() ? kBlockBytesFirst : std::min(blocks.back().size() * 2, kBlockBytesMax);
      blocks.emplace_back(std::max(n, size));
      free = blocks.back().data();
      free_bytes = blocks.back().size();
    }
    char* p = free;
    free += n;
    free_bytes -= n;
    return p;
  }

  Record* NewRecord(std::string_view key, std::string_view value) {
    TALLY_CHECK(key.size() <= UINT32_MAX && value.size() <= UINT32_MAX);
    char* p = Alloc(sizeof(Record) + key.size() + value.size());
    auto* r = new (p) Record{static_cast<uint32_t>(key.size()),
                             static_cast<uint32_t>(value.size()),
                             static_cast<uint32_t>(value.size()),
                             1,
                             0,
                             p + sizeof(Record) + key.size()};
    if (!key.empty()) std::memcpy(p + sizeof(Record), key.data(), key.size());
    if (!value.empty()) std::memcpy(r->value, value.data(), value.size());
    return r;
  }

  // The cell holding `key`, or the empty cell where it would go.
  size_t Probe(std::string_view key, uint64_t hash) const {
    const size_t mask = capacity - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
      const Cell& c = index[i];
      if (c.record == nullptr) return i;
      if (c.hash == hash && c.record->key_view() == key) return i;
    }
  }

  void Grow() { Rehash(capacity * 2); }

  // Makes the index big enough for `keys` keys at most half full (never smaller).
  void MakeRoom(size_t keys) {
    size_t need = capacity;
    while (need < keys * 2 + 2) need *= 2;
    if (need > capacity) Rehash(need);
  }

  // Moves the index to one of `cells` cells (a power of two, more than twice the records). If
  // the memory cannot be had (std::bad_alloc), the index is left as it was.
  void Rehash(size_t cells) {
    Pages fresh_pages(cells * sizeof(Cell));
    Cell* fresh = reinterpret_cast<Cell*>(fresh_pages.data());  // zeroed pages: empty
    const size_t mask = cells - 1;
    for (size_t j = 0; j < capacity; ++j) {
      const Cell& c = index[j];
      if (c.record == nullptr) continue;
      size_t i = c.hash & mask;
      while (fresh[i].record != nullptr) i = (i + 1) & mask;
      fresh[i] = c;
    }
    index_pages = std::move(fresh_pages);
    index = fresh;
    capacity = cells;
  }

  void SetValue(Record* r, std::string_view value) {
    if (value.size() > r->value_cap) {
      r->value = Alloc(value.size());
      r->value_cap = static_cast<uint32_t>(value.size());
    }
    if (!value.empty()) std::memcpy(r->value, value.data(), value.size());
    r->value_len = static_cast<uint32_t>(value.size());
    if (!r->present) ++live;
    r->present = 1;
  }

  void Append(Record* r) {
    TALLY_CHECK(order.size() < UINT32_MAX);
    r->slot = static_cast<uint32_t>(order.size());
    order.push_back(r);
  }

  // Indexes `fresh`, a new record holding the value to store, unless its key is indexed already:
  // then the value is copied there (and `fresh` is left unused).
  void Insert(Record* fresh) {
    std::string_view key = fresh->key_view();
    uint64_t hash = HashOf(key);
    size_t i = Probe(key, hash);
    if (index[i].record != nullptr) {
      SetValue(index[i].record, std::string_view(fresh->value, fresh->value_len));
      return;
    }
    index[i] = Cell{hash, fresh};
    Append(fresh);
    ++live;
    if (order.size() * 2 > capacity) Grow();
  }

  void IndexPending() {
    if (indexed) return;
    MakeRoom(pending.size());
    order.reserve(pending.size());
    for (Record* r : pending) Insert(r);
    std::vector<Record*>().swap(pending);  // frees it (assigning {} would keep the capacity)
    indexed = true;
  }

  Record* Find(std::string_view key) {
    IndexPending();
    return index[Probe(key, HashOf(key))].record;
  }

  void Put(std::string_view key, std::string_view value) {
    if (!indexed) {
      pending.push_back(NewRecord(key, value));
      return;
    }
    uint64_t hash = HashOf(key);
    size_t i = Probe(key, hash);
    if (index[i].record != nullptr) {
      SetValue(index[i].record, value);
      return;
    }
    Record* r = NewRecord(key, value);
    index[i] = Cell{hash, r};
    Append(r);
    ++live;
    if (order.size() * 2 > capacity) Grow();
  }

  void Delete(std::string_view key) {
    Record* r = Find(key);
    if (r == nullptr || !r->present) return;
    r->present = 0;
    --live;
  }
};

FlatState::FlatState() : tables_(std::make_unique<Table[]>(kCfCount)) {}
FlatState::~FlatState() = default;
FlatState::FlatState(FlatState&&) noexcept = default;
FlatState& FlatState::operator=(FlatState&&) noexcept = default;

Result<std::optional<std::string>> FlatState::Get(Cf cf, std::string_view key) const {
  const Record* r = tables_[static_cast<size_t>(cf)].Find(key);
  if (r == nullptr || !r->present) return std::optional<std::string>();
  return std::optional<std::string>(std::in_place, r->value, r->value_len);
}

Status FlatState::Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
                       const ScanFn& fn) const {
  std::vector<Item> items;
  for (size_t i = 0; i < slots(cf); ++i) {
    Item item = At(cf, i);
    if (item.present && item.key >= start && (end.empty() || item.key < end)) items.push_back(item);
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.key < b.key; });
  if (reverse) std::reverse(items.begin(), items.end());
  for (const Item& item : items) {
    if (!fn(item.key, item.value)) break;
  }
  return Status::Ok();
}

void FlatState::Put(Cf cf, std::string_view key, std::string_view value) {
  tables_[static_cast<size_t>(cf)].Put(key, value);
}

void FlatState::Delete(Cf cf, std::string_view key) {
  tables_[static_cast<size_t>(cf)].Delete(key);
}

void FlatState::Reserve(Cf cf, uint64_t keys) {
  // No table comes near 2^31 keys (it holds fewer than UINT32_MAX); a larger hint is nonsense
  // and ignored, which also keeps the sizes below far from overflow.
  if (keys > (uint64_t{1} << 31)) return;
  Table& t = tables_[static_cast<size_t>(cf)];
  try {
    t.MakeRoom(keys);
    // Both: Puts before the first read go to `pending`, and indexing them (or a Put after it)
    // appends to `order`. Reserved capacity that is never written is mostly address space.
    t.order.reserve(keys);
    if (!t.indexed) t.pending.reserve(keys);
  } catch (const std::bad_alloc&) {
    // A hint only: the table keeps what it had and grows as before.
  }
}

size_t FlatState::slots(Cf cf) const {
  Table& t = tables_[static_cast<size_t>(cf)];
  t.IndexPending();
  return t.order.size();
}

size_t FlatState::written(Cf cf) const {
  const Table& t = tables_[static_cast<size_t>(cf)];
  return t.order.size() + t.pending.size();
}

FlatState::Item FlatState::At(Cf cf, size_t slot) const {
  Table& t = tables_[static_cast<size_t>(cf)];
  t.IndexPending();
  const Record* r = t.order[slot];
  return Item{r->key_view(), std::string_view(r->value, r->value_len), r->present != 0};
}

std::optional<size_t> FlatState::Find(Cf cf, std::string_view key) const {
  const Record* r = tables_[static_cast<size_t>(cf)].Find(key);
  if (r == nullptr) return std::nullopt;
  return r->slot;
}

size_t FlatState::size(Cf cf) const {
  Table& t = tables_[static_cast<size_t>(cf)];
  t.IndexPending();
  return t.live;
}

}  // namespace tally
