// NatsGroupLog: the GroupLog of tallyd --replicate and --follow, on a NATS JetStream stream.
//
// Each commit group is one message on the subject "tally.<stream>.groups" of a file-backed
// stream that never discards (MaxMsgs -1): its data is EncodeCommitGroup's bytes, its header
// Tally-Primary the HTTP URL of the primary that published it. The stream's sequence is the
// log's sequence. Publish sets the expected last sequence (Nats-Expected-Last-Sequence, "0" for
// an empty stream), so the stream itself refuses a publish by a primary that is behind: that is
// the fence (JetStream error 10071 -> FailedPrecondition "wrong_last_seq").
//
// The connection reconnects forever (every server of the URL list, then those the cluster
// announces), so a NATS server that dies or restarts only delays publishes; while no quorum
// holds the stream, publishes time out (Unavailable: the outcome is unknown, the ledger catches
// up before it decides again). NATS types stay in nats_log.cc.
//
// Thread-safe: Publish, ReadAfter and the accessors may be called from any thread.
#ifndef TALLY_API_NATS_LOG_H_
#define TALLY_API_NATS_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ledger/group_log.h"
#include "ledger/limits.h"
#include "ledger/status.h"

namespace tally {

struct NatsLogOptions {
  // Comma-separated server URLs: "nats://HOST:PORT[,nats://HOST:PORT...]".
  std::string urls;
  // The JetStream stream (created if absent): letters, digits, '-' and '_'.
  std::string stream = "TALLY";
  // Replicas of a stream this connection creates (an existing stream keeps its own). A
  // 3-replica stream needs a JetStream cluster of at least 3 servers; 1 is for tests.
  int replicas = kReplicationStreamReplicasDefault;
  // How long a publish waits for its acknowledgement.
  int64_t publish_timeout_ms = kReplicationPublishTimeoutMs;
  // How long a read or a stream look-up waits for an answer.
  int64_t request_timeout_ms = kReplicationRequestTimeoutMs;
  // How long Connect keeps trying to find or create the stream while the cluster is not ready
  // (starting, electing a leader, fewer servers up than replicas).
  int64_t setup_timeout_ms = kReplicationSetupTimeoutMs;
};

// Checks a stream name: 1 to 64 of A-Z a-z 0-9 - _.
bool IsValidStreamName(const std::string& name);

class NatsGroupLog final : public GroupLog {
 public:
  // Connects to the servers and finds or creates the stream. InvalidArgument for bad URLs,
  // Unavailable when no server answers or the stream cannot be found or created in time (the
  // message says why: too few servers for the replicas, no JetStream, ...).
  static Result<std::unique_ptr<NatsGroupLog>> Connect(const NatsLogOptions& options);
  ~NatsGroupLog() override;
  NatsGroupLog(const NatsGroupLog&) = delete;
  NatsGroupLog& operator=(const NatsGroupLog&) = delete;

  // GroupLog. Publish: FailedPrecondition "wrong_last_seq" when the stream holds a group after
  // `after_seq`; Unavailable on a timeout or when no server answers. ReadAfter: [] at the end
  // of the stream; Unavailable when the stream cannot answer; DataLoss for a message that is not
  // a commit group.
  Result<uint64_t> Publish(const CommitGroup& group, uint64_t after_seq) override;
  Result<std::vector<std::pair<uint64_t, CommitGroup>>> ReadAfter(uint64_t after_seq,
                                                                  size_t max) override;
  // The stream's last sequence, from its state (one request).
  Result<uint64_t> LastSeq(uint64_t known_seq) override;

  // The HTTP URL published in the Tally-Primary header of every group ("" until set).
  void SetPrimaryUrl(std::string url);
  // The Tally-Primary header of the last group read ("" when none was): where the primary was
  // when this server last heard of it.
  std::string LastPrimaryUrl() const;
  const std::string& stream() const;

 private:
  struct Impl;
  explicit NatsGroupLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally

#endif  // TALLY_API_NATS_LOG_H_
