#include "ledger/accounts.h"

namespace tally {

std::string CustomerAccount(std::string_view program, std::string_view customer,
                            std::string_view kind) {
  std::string a;
  a.reserve(program.size() + customer.size() + kind.size() + 11);
  a.append(program).append(":customer:").append(customer).append(":").append(kind);
  return a;
}

std::string ProgramAccount(std::string_view program, std::string_view kind) {
  std::string a(program);
  a.append(":").append(kind);
  return a;
}

bool ParseAccount(std::string_view account, AccountName* out) {
  size_t first = account.find(':');
  if (first == std::string_view::npos || first == 0) return false;
  out->program = account.substr(0, first);
  std::string_view rest = account.substr(first + 1);
  if (rest.find(':') == std::string_view::npos) {
    out->customer = {};
    out->kind = rest;
    return !rest.empty();
  }
  constexpr std::string_view kCustomer = "customer:";
  if (rest.substr(0, kCustomer.size()) != kCustomer) return false;
  rest.remove_prefix(kCustomer.size());
  size_t colon = rest.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  out->customer = rest.substr(0, colon);
  out->kind = rest.substr(colon + 1);
  return !out->kind.empty() && out->kind.find(':') == std::string_view::npos;
}

}  // namespace tally
