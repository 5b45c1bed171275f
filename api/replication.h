// ReplicationWorker: the thread beside a replicated ledger (tallyd --replicate or --follow).
// On a follower it applies the log's groups in order (Ledger::ApplyGroup) until the follower is
// promoted; on every replicated ledger it logs role changes to stderr, a fenced primary above
// all. It knows the log only as a GroupLog.
#ifndef TALLY_API_REPLICATION_H_
#define TALLY_API_REPLICATION_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "ledger/group_log.h"
#include "ledger/ledger.h"
#include "ledger/limits.h"
#include "ledger/status.h"

namespace tally {

class ReplicationWorker {
 public:
  // Starts the thread. REQUIRES: ledger and log outlive the worker; ledger is replicated.
  ReplicationWorker(Ledger* ledger, GroupLog* log,
                    std::chrono::milliseconds poll = std::chrono::milliseconds(kFollowerPollMs));
  ~ReplicationWorker();  // Stop()
  ReplicationWorker(const ReplicationWorker&) = delete;
  ReplicationWorker& operator=(const ReplicationWorker&) = delete;

  // Stops and joins the thread. Idempotent.
  void Stop();

  // For /readyz: OK while the ledger takes writes (a primary); Unavailable "not_primary" for a
  // follower or a fenced primary; Unavailable "replication_stopped" for a follower that met a
  // group it cannot apply (DataLoss: it stops applying and needs an operator).
  Status Ready() const;

 private:
  void Loop();
  // Reads and applies one batch; returns the groups applied.
  size_t ApplySome();

  Ledger* ledger_;
  GroupLog* log_;
  std::chrono::milliseconds poll_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;         // guarded by mu_
  Status failure_;            // guarded by mu_
  bool log_failing_ = false;  // the loop's thread only: the log's last answer was an error
  std::thread thread_;        // last: starts after the members above exist
};

}  // namespace tally

#endif  // TALLY_API_REPLICATION_H_
