// tally-audit scan: every key and value of every column family read once, two column families at
// a time (the two cores verify uses). RocksDB checks each block's checksum as it reads it.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "ledger/keys.h"
#include "tools/audit.h"
#include "tools/audit_internal.h"

namespace tally {

Result<ScanResult> ScanStore(const std::string& data_dir) {
  auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(auto opened, audit_internal::SecondaryStore::Open(data_dir));
  const Store& store = opened->store();
  ScanResult r;
  r.families.resize(kCfCount);
  std::vector<Status> status(kCfCount);
  // The log and the tree are the largest: start with them.
  std::vector<int> order = {static_cast<int>(Cf::kEntries), static_cast<int>(Cf::kTree)};
  for (int i = 0; i < kCfCount; ++i) {
    if (std::find(order.begin(), order.end(), i) == order.end()) order.push_back(i);
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t n = next++; n < order.size(); n = next++) {
      int i = order[n];
      ScanResult::Family& f = r.families[i];
      f.name = kCfNames[i];
      status[i] = store.Scan(static_cast<Cf>(i), "", "", false, opened->snapshot(),
                             [&](std::string_view k, std::string_view v) {
                               ++f.keys;
                               f.bytes += k.size() + v.size();
                               return true;
                             });
    }
  };
  std::thread other(work);
  work();
  other.join();
  for (const Status& st : status) RETURN_IF_ERROR(st);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace tally
