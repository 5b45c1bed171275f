// Every limit of the ledger and the API in one place. Units are in the name, last.
// Changing a limit that bounds the entry encoding changes what the decoder accepts: such limits
// may grow, never shrink.
#ifndef TALLY_LEDGER_LIMITS_H_
#define TALLY_LEDGER_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace tally {

// Entry encoding (docs/format.md).
inline constexpr size_t kIdBytesMax = 64;                   // program, customer, reward, order ids
inline constexpr size_t kActorBytesMax = 64;                // API key id
inline constexpr size_t kIdempotencyKeyBytesMax = 255;      // Idempotency-Key header
inline constexpr size_t kAccountBytesMax = 200;             // "program:customer:id:available"
inline constexpr size_t kDescriptionBytesMax = 1024;        // free text on an entry
inline constexpr size_t kEntryPostingsMax = 64;             // postings in one entry
inline constexpr size_t kEntryLotsMax = 4096;               // lots one debit may consume
inline constexpr size_t kEntryPayloadBytesMax = 16 * 1024;  // type-specific record
inline constexpr size_t kEntryBytesMax = 256 * 1024;        // a whole encoded entry

// Points.
inline constexpr int64_t kPointsMax = 1'000'000'000'000;  // one amount in a request

// Writer.
inline constexpr size_t kCommitGroupRequestsMax = 1024;   // requests decided in one commit group
inline constexpr size_t kWriterQueueRequestsMax = 65536;  // queued before Append refuses
inline constexpr size_t kRequestEntriesMax = 10000;       // entries one request may emit
// Receipts of recent entries are built from memory (RecentLog): this many entries at least, at
// most twice as many, and entry bytes up to this budget.
inline constexpr uint64_t kRecentLogEntries = 16384;
inline constexpr size_t kRecentLogBytes = size_t{32} << 20;
// Reads: customers' change marks (Ledger::CustomerChangedAt; 8 bytes a slot), and the customer
// views Loyalty caches by default (LoyaltyOptions::customer_cache_entries; tallyd
// --customer-cache).
inline constexpr size_t kCustomerMarkSlots = size_t{1} << 18;
inline constexpr size_t kCustomerCacheEntriesDefault = 65536;
// Valid API keys Loyalty::Authenticate keeps, each until any key is created or revoked.
inline constexpr size_t kApiKeyCacheEntries = 4096;
// Disk-full guard (LedgerOptions::min_free_bytes): writes stop below this much free space.
inline constexpr uint64_t kMinFreeBytesDefault = uint64_t{256} << 20;
inline constexpr int64_t kFreeSpaceCheckIntervalMs = 1000;  // statvfs at most this often
// RocksDB's flushes and compactions together write at most this many bytes per second
// (LedgerOptions::background_write_bytes_per_sec; tallyd --background-write-rate). Paced, they
// take a steady share of the machine instead of a core at a time in bursts, which on two cores
// made commits fall behind and the half-load p99 swing (docs/BENCHMARKS.md, "Flushes and
// compactions paced"). The need measured at full earn load on 5 million entries is about 15 MB/s.
inline constexpr int64_t kBackgroundWriteBytesPerSecDefault = int64_t{32} << 20;
// The least limit tallyd's flag takes (other than 0, no limit): a limit meant in MB/s but given
// in bytes would stop every write.
inline constexpr int64_t kBackgroundWriteBytesPerSecMin = int64_t{1} << 20;
// The most it takes: 1 TiB/s, beyond any disk, so a limit this high paces nothing.
inline constexpr int64_t kBackgroundWriteBytesPerSecMax = int64_t{1} << 40;

// Replication (tallyd --replicate / --follow, DESIGN.md "Beyond one machine").
inline constexpr int64_t kReplicationPublishTimeoutMs = 2000;  // a publish's acknowledgement
inline constexpr int64_t kReplicationRequestTimeoutMs = 2000;  // reads and stream look-ups
inline constexpr int64_t kReplicationSetupTimeoutMs = 30'000;  // finding or creating the stream
inline constexpr int64_t kReplicationReconnectWaitMs = 100;    // between reconnect attempts
inline constexpr int kReplicationStreamReplicasDefault = 3;    // copies of each group
inline constexpr size_t kReplicationReadGroupsMax = 256;       // groups a follower reads at once
inline constexpr int64_t kFollowerPollMs = 20;                 // follower at the end: next look
inline constexpr int kPromoteClaimAttemptsMax = 100;  // claims refused while an old primary runs

// Reads.
inline constexpr size_t kPageItemsMax = 500;
inline constexpr size_t kPageItemsDefault = 50;

// HTTP.
inline constexpr size_t kRequestBodyBytesMax = 1 << 20;
inline constexpr size_t kRequestHeaderBytesMax = 16 << 10;
inline constexpr int kReadTimeoutMs = 10'000;
inline constexpr int kIdleTimeoutMs = 60'000;
inline constexpr size_t kConnectionsMax = 10'000;
inline constexpr int kJsonDepthMax = 16;

// Days in a request or program setting (expiry, pending, code lifetime): about 100 years, so
// that days * kMicrosPerDay can never overflow.
inline constexpr int64_t kDaysMax = 36'600;

// Reports.
inline constexpr int64_t kActivityBucketsDefault = 30;  // buckets before `to` when `from` is absent
inline constexpr int64_t kActivityBucketsMax = 1000;    // buckets in one activity report

// Referrals.
inline constexpr int kReferralCodeChars = 12;  // Crockford base32, last is a check
inline constexpr int kReferralFailedLookupsPerMinuteMax = 20;

}  // namespace tally

#endif  // TALLY_LEDGER_LIMITS_H_
