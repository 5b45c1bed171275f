#include "api/replication.h"

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace tally {
namespace {

void LogRole(ReplicationRole from, ReplicationRole to) {
  if (to == ReplicationRole::kFenced) {
    std::fprintf(stderr,
                 "tallyd: FENCED: another primary took over the stream; this server refuses "
                 "writes (503 not_primary). Restart it with --follow to rejoin as a follower.\n");
    return;
  }
  std::fprintf(stderr, "tallyd: replication role %s -> %s\n", ReplicationRoleName(from),
               ReplicationRoleName(to));
}

}  // namespace

ReplicationWorker::ReplicationWorker(Ledger* ledger, GroupLog* log, std::chrono::milliseconds poll)
    : ledger_(ledger), log_(log), poll_(poll), thread_([this] { Loop(); }) {}

ReplicationWorker::~ReplicationWorker() { Stop(); }

void ReplicationWorker::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status ReplicationWorker::Ready() const {
  switch (ledger_->role()) {
    case ReplicationRole::kStandalone:
    case ReplicationRole::kPrimary:
      return Status::Ok();
    case ReplicationRole::kFenced:
      return Status::Unavailable("fenced: another primary took over the stream", "not_primary");
    case ReplicationRole::kFollower:
      break;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!failure_.ok()) {
    return Status::Unavailable("follower stopped applying the stream: " + failure_.message(),
                               "replication_stopped");
  }
  return Status::Unavailable("a follower does not take writes", "not_primary");
}

void ReplicationWorker::Loop() {
  ReplicationRole role = ledger_->role();
  std::fprintf(stderr, "tallyd: replication role %s, stream position %llu\n",
               ReplicationRoleName(role), static_cast<unsigned long long>(ledger_->stream_seq()));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    ReplicationRole now = ledger_->role();
    if (now != role) LogRole(role, now);
    role = now;
    size_t applied = 0;
    if (role == ReplicationRole::kFollower && failure_.ok()) {
      lock.unlock();
      applied = ApplySome();
      lock.lock();
    }
    // Straight on while there is more to apply; else look again after a while.
    if (applied == 0) cv_.wait_for(lock, poll_, [this] { return stop_; });
  }
}

size_t ReplicationWorker::ApplySome() {
  auto groups = log_->ReadAfter(ledger_->stream_seq(), kReplicationReadGroupsMax);
  if (!groups.ok()) {
    if (groups.status().code() == Code::kDataLoss) {
      std::fprintf(stderr, "tallyd: follower stopped: %s\n", groups.status().ToString().c_str());
      std::lock_guard<std::mutex> lock(mu_);
      failure_ = groups.status();
      return 0;
    }
    if (!log_failing_) {
      std::fprintf(stderr, "tallyd: follower cannot read the stream (retrying): %s\n",
                   groups.status().ToString().c_str());
    }
    log_failing_ = true;
    return 0;
  }
  if (log_failing_) std::fprintf(stderr, "tallyd: follower reads the stream again\n");
  log_failing_ = false;
  size_t applied = 0;
  for (const auto& [seq, group] : *groups) {
    Status st = ledger_->ApplyGroup(group, seq);
    if (ledger_->role() != ReplicationRole::kFollower) return applied;  // promoted meanwhile
    if (st.code() == Code::kDataLoss) {
      std::fprintf(stderr, "tallyd: follower stopped at stream sequence %llu: %s\n",
                   static_cast<unsigned long long>(seq), st.ToString().c_str());
      std::lock_guard<std::mutex> lock(mu_);
      failure_ = st;
      return applied;
    }
    if (!st.ok()) {
      std::fprintf(stderr, "tallyd: follower could not apply sequence %llu (retrying): %s\n",
                   static_cast<unsigned long long>(seq), st.ToString().c_str());
      return applied;
    }
    ++applied;
  }
  return applied;
}

}  // namespace tally
