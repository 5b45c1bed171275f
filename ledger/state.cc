#include "ledger/state.h"

#include "ledger/coding.h"

namespace tally {

Result<std::vector<std::optional<std::string>>> StateReader::MultiGet(
    const std::vector<std::pair<Cf, std::string_view>>& keys) const {
  std::vector<std::optional<std::string>> out;
  out.reserve(keys.size());
  for (const auto& [cf, key] : keys) {
    ASSIGN_OR_RETURN(std::optional<std::string> v, Get(cf, key));
    out.push_back(std::move(v));
  }
  return out;
}

Result<std::vector<std::optional<std::string>>> StoreReader::MultiGet(
    const std::vector<std::pair<Cf, std::string_view>>& keys) const {
  return store_->MultiGet(keys, snapshot_.get());
}

Result<int64_t> StateReader::GetI64(Cf cf, std::string_view key) const {
  ASSIGN_OR_RETURN(std::optional<std::string> v, Get(cf, key));
  if (!v) return int64_t{0};
  if (v->size() != 8) return Status::DataLoss("bad integer value");
  return DecodeI64(*v);
}

Result<std::optional<std::string>> StoreReader::Get(Cf cf, std::string_view key) const {
  return store_->Get(cf, key, snapshot_.get());
}

Status StoreReader::Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
                         const ScanFn& fn) const {
  return store_->Scan(cf, start, end, reverse, snapshot_.get(), fn);
}

Result<std::optional<std::string>> MemoryState::Get(Cf cf, std::string_view key) const {
  const Map& m = map(cf);
  auto it = m.find(key);
  if (it == m.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

Status MemoryState::Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
                         const ScanFn& fn) const {
  const Map& m = map(cf);
  auto lo = m.lower_bound(start);
  auto hi = end.empty() ? m.end() : m.lower_bound(end);
  if (!reverse) {
    for (auto it = lo; it != hi; ++it) {
      if (!fn(it->first, it->second)) break;
    }
    return Status::Ok();
  }
  for (auto it = hi; it != lo;) {
    --it;
    if (!fn(it->first, it->second)) break;
  }
  return Status::Ok();
}

void MemoryState::Put(Cf cf, std::string_view key, std::string_view value) {
  maps_[static_cast<size_t>(cf)].insert_or_assign(std::string(key), std::string(value));
}

void MemoryState::Delete(Cf cf, std::string_view key) {
  Map& m = maps_[static_cast<size_t>(cf)];
  auto it = m.find(key);
  if (it != m.end()) m.erase(it);
}

Result<std::optional<std::string>> OverlayState::Get(Cf cf, std::string_view key) const {
  Key k(static_cast<uint8_t>(cf), std::string(key));
  auto it = changes_.find(k);
  if (it != changes_.end()) return it->second;
  auto read = base_reads_.find(k);
  if (read != base_reads_.end()) return read->second;
  ASSIGN_OR_RETURN(std::optional<std::string> v, base_->Get(cf, key));
  base_reads_.emplace(std::move(k), v);
  return v;
}

Status OverlayState::Scan(Cf cf, std::string_view start, std::string_view end, bool reverse,
                          const ScanFn& fn) const {
  std::map<std::string, std::string, std::less<>> merged;
  RETURN_IF_ERROR(base_->Scan(cf, start, end, false, [&](std::string_view k, std::string_view v) {
    merged.emplace(std::string(k), std::string(v));
    return true;
  }));
  auto c = static_cast<uint8_t>(cf);
  for (auto it = changes_.lower_bound(Key(c, std::string(start)));
       it != changes_.end() && it->first.first == c && (end.empty() || it->first.second < end);
       ++it) {
    if (it->second) {
      merged.insert_or_assign(it->first.second, *it->second);
    } else {
      merged.erase(it->first.second);
    }
  }
  if (!reverse) {
    for (const auto& [k, v] : merged) {
      if (!fn(k, v)) break;
    }
  } else {
    for (auto it = merged.rbegin(); it != merged.rend(); ++it) {
      if (!fn(it->first, it->second)) break;
    }
  }
  return Status::Ok();
}

void OverlayState::Set(Cf cf, std::string_view key, std::optional<std::string> value) {
  Key k(static_cast<uint8_t>(cf), std::string(key));
  auto it = changes_.find(k);
  if (it == changes_.end()) {
    undo_.emplace_back(k, std::nullopt);
    changes_.emplace(std::move(k), std::move(value));
  } else {
    undo_.emplace_back(k, it->second);
    it->second = std::move(value);
  }
}

void OverlayState::Put(Cf cf, std::string_view key, std::string_view value) {
  Set(cf, key, std::string(value));
}

void OverlayState::Delete(Cf cf, std::string_view key) { Set(cf, key, std::nullopt); }

void OverlayState::RollbackTo(size_t savepoint) {
  TALLY_CHECK(savepoint <= undo_.size());
  while (undo_.size() > savepoint) {
    auto& [key, previous] = undo_.back();
    if (previous) {
      changes_[key] = std::move(*previous);
    } else {
      changes_.erase(key);
    }
    undo_.pop_back();
  }
}

void OverlayState::AddTo(StoreBatch* batch) const {
  for (const auto& [k, v] : changes_) {
    auto cf = static_cast<Cf>(k.first);
    if (v) {
      batch->Put(cf, k.second, *v);
    } else {
      batch->Delete(cf, k.second);
    }
  }
}

}  // namespace tally
