// tally-audit report and export: finance views computed from the log alone.
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "ledger/accounts.h"
#include "ledger/apply.h"
#include "ledger/base64.h"
#include "ledger/coding.h"
#include "ledger/keys.h"
#include "ledger/points.h"
#include "ledger/report.h"
#include "ledger/rfc3339.h"
#include "ledger/state.h"
#include "tools/audit.h"
#include "tools/audit_internal.h"

namespace tally {
namespace {

using Json = nlohmann::ordered_json;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

Json OrNull(const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); }

// Visits every entry of the log in order, decoded strictly, until fn fails. DataLoss for an
// entry that does not decode.
Status ForEachEntry(const std::string& data_dir, const std::function<Status(const Entry&)>& fn) {
  ASSIGN_OR_RETURN(auto opened, audit_internal::SecondaryStore::Open(data_dir));
  const Store& store = opened->store();
  Status st;
  RETURN_IF_ERROR(store.Scan(
      Cf::kEntries, "", "", false, opened->snapshot(), [&](std::string_view k, std::string_view v) {
        auto e = DecodeEntry(v);
        st = e.ok() ? fn(*e)
                    : Status::DataLoss("entry key " + HexEncode(k) +
                                       " does not decode: " + e.status().message());
        return st.ok();
      }));
  return st;
}

// One pass over the log for the report: the program's roll-forward over [from, to), derived
// state (for lots) as of `to`, and the program's latest config.
class ReportPass {
 public:
  explicit ReportPass(const ReportOptions& o) : o_(o) {}
  Status Add(const Entry& e);
  Result<AuditReport> Finish() const;

 private:
  Result<std::vector<ExpiryMonth>> ExpirySchedule(const std::vector<BalanceRow>& rows) const;

  const ReportOptions& o_;
  std::optional<ProgramConfig> config_;
  uint64_t config_entry_ = 0;
  MemoryState state_;
  RollForward roll_;
  Flows flows_;
  int64_t opening_ = 0;
};

Status ReportPass::Add(const Entry& e) {
  if (e.type == EntryType::kProgram && e.program == o_.program) {
    auto p = DecodeProgram(e.payload);
    if (!p.ok()) {
      return Status::DataLoss("program entry " + std::to_string(e.id) + " does not decode");
    }
    config_ = std::move(p).value();
    config_entry_ = e.id;
  }
  if (e.time_us >= o_.to_us) return Status::Ok();
  Status st = ApplyEntry(e, &state_);
  if (!st.ok()) {
    return Status::DataLoss("entry " + std::to_string(e.id) + " does not replay: " + st.message());
  }
  if (e.program != o_.program) return Status::Ok();
  Movement m = Classify(e);
  if (e.time_us < o_.from_us) {
    opening_ += m.liability;
  } else {
    flows_.Add(m.flows);
  }
  roll_.Add(e, m);
  return Status::Ok();
}

std::vector<BalanceRow> Balances(const RollForward& roll) {
  std::vector<BalanceRow> rows;
  for (const auto& [customer, kinds] : roll.balances()) {
    auto get = [&](std::string_view kind) {
      auto it = kinds.find(std::string(kind));
      return it == kinds.end() ? int64_t{0} : it->second;
    };
    rows.push_back({customer, get(acct::kAvailable), get(acct::kPending), get(acct::kReserved)});
  }
  return rows;
}

Result<std::vector<ExpiryMonth>> ReportPass::ExpirySchedule(
    const std::vector<BalanceRow>& rows) const {
  std::map<std::string, int64_t> months;
  int64_t never = 0;
  Status st;
  for (const BalanceRow& row : rows) {
    std::string prefix = LotsPrefix(o_.program, row.customer);
    RETURN_IF_ERROR(state_.Scan(
        Cf::kLots, prefix, PrefixEnd(prefix), false, [&](std::string_view k, std::string_view v) {
          auto lot = DecodeLot(v);
          // LotKey: the prefix, then the expiry (all ones: never) and the lot id, 8 bytes each.
          uint64_t expiry = DecodeU64(k.substr(k.size() - 16, 8));
          int64_t* sum = expiry == std::numeric_limits<uint64_t>::max()
                             ? &never
                             : &months[FormatRfc3339(static_cast<int64_t>(expiry)).substr(0, 7)];
          if (!lot.ok() || !CheckedAdd(*sum, lot->remaining, sum)) {
            st = Status::DataLoss("lot of " + row.customer + " does not add up");
          }
          return st.ok();
        }));
    RETURN_IF_ERROR(st);
  }
  std::vector<ExpiryMonth> out;
  for (const auto& [month, points] : months) out.push_back({month, points});
  if (never != 0) out.push_back({"never", never});
  return out;
}

Result<AuditReport> ReportPass::Finish() const {
  if (!config_) return Status::NotFound("no program " + o_.program + " in the log");
  AuditReport r;
  r.program = o_.program;
  r.program_entry_id = config_entry_;
  Liability& l = r.liability;
  l.from_us = o_.from_us;
  l.to_us = o_.to_us;
  l.opening = opening_;
  l.earned = flows_.earned;
  l.referral = flows_.referral;
  l.adjusted = flows_.adjusted;
  l.redeemed = flows_.redeemed;
  l.expired = flows_.expired;
  l.reversed = flows_.reversed;
  l.closing = roll_.liability();
  TALLY_CHECK(l.opening + flows_.Net() == l.closing);
  l.pending = roll_.pending();
  l.currency = config_->currency;
  l.point_value_minor = config_->point_value_minor;
  if (!CheckedMul(l.closing, l.point_value_minor, &l.closing_value_minor)) {
    return Status::InvalidArgument("closing value overflows");
  }
  r.balances = Balances(roll_);
  ASSIGN_OR_RETURN(r.expiry_schedule, ExpirySchedule(r.balances));
  return r;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

Result<AuditReport> BuildReport(const ReportOptions& options) {
  if (options.from_us > options.to_us) return Status::InvalidArgument("--from is after --to");
  ReportPass pass(options);
  RETURN_IF_ERROR(ForEachEntry(options.data_dir, [&](const Entry& e) { return pass.Add(e); }));
  return pass.Finish();
}

std::string ReportJson(const AuditReport& r) {
  const Liability& l = r.liability;
  Json j;
  j["program"] = r.program;
  j["program_entry_id"] = r.program_entry_id;
  j["from"] = FormatRfc3339(l.from_us);
  j["to"] = FormatRfc3339(l.to_us);
  j["opening"] = l.opening;
  j["earned"] = l.earned;
  j["referral"] = l.referral;
  j["adjusted"] = l.adjusted;
  j["redeemed"] = l.redeemed;
  j["expired"] = l.expired;
  j["reversed"] = l.reversed;
  j["closing"] = l.closing;
  j["pending"] = l.pending;
  j["currency"] = l.currency;
  j["point_value_minor"] = l.point_value_minor;
  j["closing_value_minor"] = l.closing_value_minor;
  Json balances = Json::array();
  for (const BalanceRow& b : r.balances) {
    balances.push_back({{"customer", b.customer},
                        {"available", b.available},
                        {"pending", b.pending},
                        {"reserved", b.reserved}});
  }
  j["balances"] = std::move(balances);
  Json schedule = Json::array();
  for (const ExpiryMonth& m : r.expiry_schedule) {
    schedule.push_back({{"month", m.month}, {"points", m.points}});
  }
  j["expiry_schedule"] = std::move(schedule);
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string ReportCsv(const AuditReport& r) {
  const Liability& l = r.liability;
  std::string s =
      "from,to,opening,earned,referral,adjusted,redeemed,expired,reversed,closing,pending,"
      "currency,point_value_minor,closing_value_minor\n" +
      FormatRfc3339(l.from_us) + "," + FormatRfc3339(l.to_us);
  for (int64_t v : {l.opening, l.earned, l.referral, l.adjusted, l.redeemed, l.expired, l.reversed,
                    l.closing, l.pending}) {
    s += "," + std::to_string(v);
  }
  s += "," + CsvField(l.currency) + "," + std::to_string(l.point_value_minor) + "," +
       std::to_string(l.closing_value_minor) + "\n\ncustomer,available,pending,reserved\n";
  for (const BalanceRow& b : r.balances) {
    s += CsvField(b.customer) + "," + std::to_string(b.available) + "," +
         std::to_string(b.pending) + "," + std::to_string(b.reserved) + "\n";
  }
  s += "\nexpiry_month,points\n";
  for (const ExpiryMonth& m : r.expiry_schedule)
    s += m.month + "," + std::to_string(m.points) + "\n";
  return s;
}

std::string EntryJsonLine(const Entry& e) {
  Json j;
  j["id"] = e.id;
  j["type"] = EntryTypeName(e.type);
  j["program"] = OrNull(e.program);
  j["customer"] = OrNull(e.customer);
  j["points"] = EntryPoints(e);
  j["created_at"] = FormatRfc3339(e.time_us);
  j["order_id"] = OrNull(e.order_id);
  j["description"] = OrNull(e.description);
  j["refs"] = e.ref ? Json{{"entry_id", *e.ref}} : Json(nullptr);
  Json postings = Json::array();
  for (const Posting& p : e.postings) {
    postings.push_back(
        {{"account", p.account}, {"points", p.points}, {"balance_after", p.balance_after}});
  }
  j["postings"] = std::move(postings);
  Json lots = Json::array();
  for (const LotUse& l : e.lots) {
    lots.push_back({{"lot", l.lot},
                    {"expires_at", l.expires_at_us ? Json(FormatRfc3339(l.expires_at_us)) : Json()},
                    {"points", l.points}});
  }
  j["lots"] = std::move(lots);
  return Dump(j);
}

std::string LedgerTransaction(const Entry& e) {
  std::string head = "entry " + std::to_string(e.id) + " " + EntryTypeName(e.type);
  if (e.postings.empty()) return "; " + head + ": no postings\n\n";
  // Ids are [A-Za-z0-9_.@-]: ledger-cli reads them in account names and metadata unchanged.
  std::string t = FormatRfc3339(e.time_us).substr(0, 10) + " * " + head + "\n";
  if (!e.program.empty()) t += "    ; program: " + e.program + "\n";
  if (!e.customer.empty()) t += "    ; customer: " + e.customer + "\n";
  if (!e.order_id.empty()) t += "    ; order_id: " + e.order_id + "\n";
  for (const Posting& p : e.postings) {
    t += "    " + p.account + "  " + std::to_string(p.points) + " PTS\n";
  }
  return t + "\n";
}

Status Export(const std::string& data_dir, ExportFormat format, std::ostream& out) {
  if (format == ExportFormat::kLedger) {
    out << "; Tally ledger export: one transaction per entry, amounts in points (PTS).\n\n";
  }
  return ForEachEntry(data_dir, [&](const Entry& e) {
    out << (format == ExportFormat::kJsonl ? EntryJsonLine(e) + "\n" : LedgerTransaction(e));
    return out ? Status::Ok() : Status::Unavailable("cannot write the export");
  });
}

}  // namespace tally
