// API.md's entry shape built as a JSON library document. tally-audit verify-receipt compares a
// write's answer with it; tests and bench_render compare tallyd's own text writer
// (api/json_view.cc) with it. JsonT is nlohmann::ordered_json (API.md's field order, for byte
// comparisons) or nlohmann::json (order-free comparisons).
#ifndef TALLY_TOOLS_ENTRY_JSON_H_
#define TALLY_TOOLS_ENTRY_JSON_H_

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "ledger/entry.h"
#include "ledger/loyalty.h"
#include "ledger/records.h"
#include "ledger/rfc3339.h"

namespace tally {

// The entry as API.md shows it; "hold" only when the entry holds points and `hold` is known.
template <typename JsonT>
JsonT EntryJsonOf(const Entry& e, std::optional<HoldState> hold) {
  auto or_null = [](const std::string& s) { return s.empty() ? JsonT(nullptr) : JsonT(s); };
  JsonT j;
  j["id"] = e.id;
  j["type"] = EntryTypeName(e.type);
  j["program"] = e.program;
  j["customer"] = or_null(e.customer);
  j["points"] = EntryPoints(e);
  j["created_at"] = FormatRfc3339(e.time_us);
  j["order_id"] = or_null(e.order_id);
  j["description"] = or_null(e.description);
  if (e.holds && hold) j["hold"] = JsonT{{"state", HoldStateName(*hold)}};
  if (e.ref) j["refs"] = JsonT{{"entry_id", *e.ref}};
  j["postings"] = JsonT::array();
  for (const Posting& p : e.postings) {
    j["postings"].push_back(
        JsonT{{"account", p.account}, {"points", p.points}, {"balance_after", p.balance_after}});
  }
  return j;
}

}  // namespace tally

#endif  // TALLY_TOOLS_ENTRY_JSON_H_
