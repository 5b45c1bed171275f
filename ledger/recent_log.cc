#include "ledger/recent_log.h"

#include <algorithm>
#include <mutex>

namespace tally {

// Reads held nodes only; NotFound for any other. Used with mu_ held (shared).
class RecentLog::Reader final : public NodeReader {
 public:
  explicit Reader(const RecentLog& log) : log_(log) {}
  Result<Hash> GetNode(int level, uint64_t index) const override {
    if (level >= 0 && level < 64) {
      const Level& l = log_.levels_[level];
      if (index >= l.base && index - l.base < l.nodes.size()) return l.nodes[index - l.base];
    }
    return Status::NotFound("node not held");
  }

 private:
  const RecentLog& log_;
};

RecentLog::RecentLog(uint64_t window, size_t bytes_max)
    : window_(std::max<uint64_t>(window, 1024)), bytes_max_(bytes_max) {}

Status RecentLog::Reset(uint64_t size, const LevelLoader& load) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  Stop();
  first_ = end_ = size;
  for (int level = 0; level < 64; ++level) {
    Level& l = levels_[level];
    // Below kHighLevel, the next node a commit completes at this level is the first held; from
    // kHighLevel up, every complete node is held.
    l.base = level < kHighLevel ? size >> level : 0;
    if (level < kHighLevel || (size >> level) == 0) continue;
    ASSIGN_OR_RETURN(std::vector<Hash> nodes, load(level, size >> level));
    if (nodes.size() != (size >> level)) return Status::DataLoss("tree level incomplete");
    l.nodes.assign(nodes.begin(), nodes.end());
  }
  broken_ = false;
  return Status::Ok();
}

void RecentLog::Add(uint64_t first, const std::vector<std::string>& entries,
                    const std::vector<NodeWrite>& nodes, const std::string& note) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (broken_) return;
  if (first != end_ || entries.empty()) return Stop();
  for (const NodeWrite& n : nodes) {
    Level& l = levels_[n.level];
    if (n.index != l.base + l.nodes.size()) return Stop();
    l.nodes.push_back(n.hash);
  }
  for (const std::string& e : entries) {
    entries_.push_back(e);
    bytes_ += e.size();
  }
  end_ += entries.size();
  checkpoints_.emplace_back(end_, note);
  Trim();
}

void RecentLog::Stop() {
  broken_ = true;
  entries_.clear();
  bytes_ = 0;
  checkpoints_.clear();
  for (Level& l : levels_) l.nodes.clear();
}

void RecentLog::Trim() {
  uint64_t new_first = first_;
  if (end_ - first_ > 2 * window_) new_first = (end_ - window_) & ~uint64_t{1023};
  while (first_ < new_first || (bytes_ > bytes_max_ && entries_.size() > 1)) {
    bytes_ -= entries_.front().size();
    entries_.pop_front();
    ++first_;
  }
  // A checkpoint covers an entry from `first_` on only if its size is larger.
  while (!checkpoints_.empty() && checkpoints_.front().first <= first_) checkpoints_.pop_front();
  for (int level = 0; level < kHighLevel; ++level) {
    Level& l = levels_[level];
    while (!l.nodes.empty() && l.base < (first_ >> level)) {
      l.nodes.pop_front();
      ++l.base;
    }
  }
}

std::optional<std::string> RecentLog::Entry(uint64_t id) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (broken_ || id < first_ || id >= end_) return std::nullopt;
  return entries_[id - first_];
}

std::optional<RecentLog::Proof> RecentLog::Receipt(uint64_t id) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (broken_ || id < first_ || id >= end_) return std::nullopt;
  auto cp = std::upper_bound(checkpoints_.begin(), checkpoints_.end(), id,
                             [](uint64_t v, const auto& c) { return v < c.first; });
  if (cp == checkpoints_.end()) return std::nullopt;
  Proof p;
  p.entry = entries_[id - first_];
  p.tree_size = cp->first;
  p.checkpoint = cp->second;
  auto proof = InclusionProof(Reader(*this), id, p.tree_size);
  if (!proof.ok()) return std::nullopt;
  p.inclusion_proof = std::move(proof).value();
  return p;
}

}  // namespace tally
