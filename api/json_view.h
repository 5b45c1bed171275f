// The API's JSON views of ledger and loyalty objects (API.md). Each function returns one
// complete, compact JSON document; given the same arguments it returns the same bytes, which
// idempotent replays rely on. All response field names live in json_view.cc.
#ifndef TALLY_API_JSON_VIEW_H_
#define TALLY_API_JSON_VIEW_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "api/backup_record.h"
#include "ledger/entry.h"
#include "ledger/ledger.h"
#include "ledger/loyalty.h"
#include "ledger/records.h"

namespace tally {

// An entry with the hold state to show: set iff entry.holds (the state when written, in a write
// response; the current state, in a read).
struct EntryView {
  Entry entry;
  std::optional<HoldState> hold;
};

std::string RenderEntry(const EntryView& e);
// {"entry": Entry, "receipt": Receipt}: the answer to a write and to GET /v1/ledger/entries/{id}.
std::string RenderEntryWithReceipt(const EntryView& e, const Receipt& receipt);
std::string RenderEntryPage(const Page<EntryView>& page);

std::string RenderProgram(const ProgramConfig& p);
std::string RenderProgramPage(const Page<ProgramConfig>& page);
std::string RenderReward(const RewardRecord& r);
std::string RenderRewardPage(const Page<RewardRecord>& page);
std::string RenderCode(const ReferralCodeRecord& c);
std::string RenderCustomer(const CustomerView& c);
std::string RenderLotPage(const Page<LotView>& page);
// The answer to POST /v1/api-keys: the record and, once, the secret key.
std::string RenderApiKeyCreated(const ApiKeyRecord& k, const std::string& key);
std::string RenderExpired(uint64_t entries, int64_t points);

std::string RenderCheckpoint(const CheckpointInfo& c);
std::string RenderConsistency(uint64_t from, uint64_t to, const std::vector<Hash>& proof);
std::string RenderPublicKey(const std::string& name, uint32_t key_id,
                            const std::string& raw_public_key);

std::string RenderLiability(const Liability& l);
std::string RenderBalancePage(const Page<BalanceRow>& page);
std::string RenderActivity(const std::vector<ActivityBucket>& buckets);

// {"role": role, "stream": stream or null, "applied": applied}.
std::string RenderReplication(const std::string& role, const std::optional<std::string>& stream,
                              uint64_t applied);
// {"role": role, "applied": applied}: POST /v1/admin/promote.
std::string RenderPromoted(const std::string& role, uint64_t applied);
// {"name","path","size","created_at"}: the answer to POST /v1/admin/backups.
std::string RenderBackup(const BackupRecord& b);
// The answer's fields and "idempotency", "request": what tallyd keeps of a backup.
std::string RenderBackupRecord(const BackupRecord& b);
// {"status": status}: /healthz and /readyz.
std::string RenderHealth(const std::string& status);
// An RFC 9457 problem: {"type","title","status","code","detail"}.
std::string RenderProblem(int status, const std::string& title, const std::string& code,
                          const std::string& detail);

}  // namespace tally

#endif  // TALLY_API_JSON_VIEW_H_
