// Micro-benchmark of an earn's answer on one thread: the entry and its receipt as tallyd writes
// them (RenderEntryWithReceipt: text written directly), against the same document built as a JSON
// library document and dumped, in the same run. Both must give the same bytes; it stops if not.
// Usage: bench_render [N]   (default 500,000 answers per round, 3 rounds each, alternating)
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "api/json_view.h"
#include "ledger/base64.h"
#include "ledger/hash.h"
#include "tools/entry_json.h"

namespace tally {
namespace {

using Ordered = nlohmann::ordered_json;

// What an earn of 10 points answers in a tree of about 36,000 entries: a 10-hash proof.
void TypicalEarn(EntryView* view, Receipt* receipt) {
  Entry& e = view->entry;
  e.id = 36463;
  e.type = EntryType::kEarn;
  e.program = "bench";
  e.customer = "c1";
  e.time_us = 1'795'000'000'000'000;
  e.postings = {{"bench:customer:c1:available", 10, 1040}, {"bench:issued", -10, -10264630}};
  receipt->leaf_index = e.id;
  receipt->entry = EncodeEntry(e);
  for (int i = 0; i < 10; ++i) receipt->inclusion_proof.push_back(Sha256(std::to_string(i)));
  receipt->checkpoint =
      "tally.local/ledger\n36464\nqEPkrLnLNuJUsxTHJoy9d9/kBtpTaHVNvugpGKoRphY=\n\n"
      "\xe2\x80\x94 tally.local/ledger "
      "RyFPnSHA1dJIydd50H2lZhDcvdEVbxHtlAnnF4U7CQl3AdBIBcvWBcobixoijNyp4GjdYcTlJu1IQnfiRFiDzYfV3Qc="
      "\n";
  receipt->tree_size = e.id + 1;
}

// The same answer through the JSON library: a document, then dump.
std::string LibraryRender(const EntryView& v, const Receipt& r) {
  Ordered entry = EntryJsonOf<Ordered>(v.entry, v.hold);
  Ordered proof = Ordered::array();
  for (const Hash& h : r.inclusion_proof) proof.push_back(Base64Encode(AsBytes(h)));
  Ordered receipt;
  receipt["leaf_index"] = r.leaf_index;
  receipt["entry"] = Base64Encode(r.entry);
  receipt["inclusion_proof"] = std::move(proof);
  receipt["checkpoint"] = r.checkpoint;
  receipt["tree_size"] = r.tree_size;
  Ordered answer;
  answer["entry"] = std::move(entry);
  answer["receipt"] = std::move(receipt);
  return answer.dump(-1, ' ', false, Ordered::error_handler_t::replace);
}

// Microseconds per answer over n renders.
template <typename Render>
double Time(uint64_t n, Render&& render) {
  size_t bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) bytes += render().size();
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  if (bytes == 0) std::abort();  // keeps the renders from being optimized away
  return us / static_cast<double>(n);
}

int Main(int argc, char** argv) {
  const uint64_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 500'000;
  if (n == 0) {
    std::fprintf(stderr, "usage: bench_render [N]   (N > 0 answers per round)\n");
    return 2;
  }
  EntryView view;
  Receipt receipt;
  TypicalEarn(&view, &receipt);
  const std::string text = RenderEntryWithReceipt(view, receipt);
  if (text != LibraryRender(view, receipt)) {
    std::fprintf(stderr, "bench_render: the two renderings differ\n");
    return 1;
  }
  std::printf("an earn's answer: %zu bytes, %llu renders per round\n", text.size(),
              static_cast<unsigned long long>(n));
  double direct_sum = 0;
  double library_sum = 0;
  for (int round = 1; round <= 3; ++round) {
    const double library = Time(n, [&] { return LibraryRender(view, receipt); });
    const double direct = Time(n, [&] { return RenderEntryWithReceipt(view, receipt); });
    std::printf("round %d: JSON library %.3f us, tallyd %.3f us, ratio %.3f\n", round, library,
                direct, direct / library);
    direct_sum += direct;
    library_sum += library;
  }
  std::printf("mean: JSON library %.3f us, tallyd %.3f us, ratio %.3f\n", library_sum / 3,
              direct_sum / 3, direct_sum / library_sum);
  return 0;
}

}  // namespace
}  // namespace tally

int main(int argc, char** argv) { return tally::Main(argc, argv); }
