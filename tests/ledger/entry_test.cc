#include "ledger/entry.h"

#include <catch2/catch.hpp>
#include <limits>

#include "ledger/coding.h"

namespace tally {
namespace {

Entry SampleEntry() {
  Entry e;
  e.id = 42;
  e.time_us = 1'700'000'000'000'000;
  e.type = EntryType::kEarn;
  e.program = "acme";
  e.actor = "key-1";
  e.idempotency_key = "idem-1";
  e.request_hash.fill(7);
  e.customer = "alice";
  e.order_id = "o-1001";
  e.ref = 12;
  e.holds = true;
  e.hold_until_us = 1'700'000'100'000'000;
  e.expires_at_us = 1'800'000'000'000'000;
  e.postings = {{"acme:customer:alice:pending", 120, 120}, {"acme:issued", -120, -120}};
  e.lots = {{3, 0, 10}, {5, 1'800'000'000'000'000, 20}};
  e.description = "order o-1001";
  e.payload = std::string("\x00\x01\x02", 3);
  return e;
}

}  // namespace

TEST_CASE("An entry survives an encode and decode round trip", "[entry]") {
  Entry e = SampleEntry();
  std::string bytes = EncodeEntry(e);
  auto back = DecodeEntry(bytes);
  REQUIRE(back.ok());
  CHECK(*back == e);
  CHECK(EncodeEntry(*back) == bytes);

  Entry minimal;
  minimal.type = EntryType::kProgram;
  minimal.program = "p";
  auto m = DecodeEntry(EncodeEntry(minimal));
  REQUIRE(m.ok());
  CHECK(*m == minimal);
  CHECK_FALSE(m->ref.has_value());
}

TEST_CASE("Decoding into a used entry overwrites every field", "[entry]") {
  Entry full = SampleEntry();
  Entry minimal;
  minimal.type = EntryType::kProgram;
  minimal.program = "p";
  Entry more = SampleEntry();
  more.postings.push_back({"acme:customer:bob:pending", 5, 5});
  more.postings[1].points = -125;
  more.postings[1].balance_after = -125;
  more.lots.clear();
  more.ref.reset();
  // Each decoded into an entry that held each of the others (and into itself): the result is
  // what DecodeEntry gives, whatever the entry held (fewer or more postings and lots, a ref).
  const Entry shapes[] = {full, minimal, more};
  for (const Entry& want : shapes) {
    const std::string bytes = EncodeEntry(want);
    for (const Entry& held : shapes) {
      Entry e = held;
      REQUIRE(DecodeEntryInto(bytes, &e).ok());
      CHECK(e == want);
      CHECK(e == *DecodeEntry(bytes));
    }
  }
  // A failure is reported as DecodeEntry reports it.
  const std::string bytes = EncodeEntry(full);
  Entry e = more;
  Status st = DecodeEntryInto(std::string_view(bytes).substr(0, bytes.size() - 1), &e);
  CHECK(st.code() ==
        DecodeEntry(std::string_view(bytes).substr(0, bytes.size() - 1)).status().code());
  CHECK_FALSE(st.ok());
}

TEST_CASE("Decoding rejects every truncation of an entry", "[entry]") {
  std::string bytes = EncodeEntry(SampleEntry());
  for (size_t n = 0; n < bytes.size(); ++n) {
    INFO("length " << n);
    CHECK_FALSE(DecodeEntry(std::string_view(bytes).substr(0, n)).ok());
  }
}

TEST_CASE("Decoding rejects trailing bytes, unknown versions, types and flags", "[entry]") {
  std::string bytes = EncodeEntry(SampleEntry());
  CHECK(DecodeEntry(bytes + "x").status().code() == Code::kDataLoss);

  std::string v = bytes;
  v[0] = 2;
  CHECK_FALSE(DecodeEntry(v).ok());

  std::string t = bytes;
  t[1 + 8 + 8] = 14;  // type byte after version, id and time
  CHECK_FALSE(DecodeEntry(t).ok());
  t[1 + 8 + 8] = 0;
  CHECK_FALSE(DecodeEntry(t).ok());

  Entry plain;
  plain.type = EntryType::kProgram;
  plain.program = "p";
  std::string f = EncodeEntry(plain);
  // version, id, time, type, program(1+1), actor, idem, hash(32), customer, order, flags
  size_t flags_at = 1 + 8 + 8 + 1 + 2 + 1 + 1 + 32 + 1 + 1;
  REQUIRE(f[flags_at] == 0);
  f[flags_at] = 4;
  CHECK_FALSE(DecodeEntry(f).ok());
}

TEST_CASE("Decoding rejects lengths over their limits", "[entry]") {
  Entry plain;
  plain.type = EntryType::kProgram;
  plain.program = "p";
  std::string f = EncodeEntry(plain);
  size_t program_len_at = 1 + 8 + 8 + 1;
  f[program_len_at] = static_cast<char>(65);  // ids are at most 64 bytes
  f.insert(program_len_at + 2, std::string(64, 'a'));
  CHECK_FALSE(DecodeEntry(f).ok());
}

TEST_CASE("Postings must sum to zero without overflow", "[entry]") {
  Entry e = SampleEntry();
  e.postings[0].points = 121;
  CHECK_FALSE(ValidateEntry(e).ok());

  e.postings = {{"a:x", std::numeric_limits<int64_t>::max(), 0},
                {"a:y", std::numeric_limits<int64_t>::max(), 0},
                {"a:z", 2, 0}};
  CHECK_FALSE(ValidateEntry(e).ok());

  e.postings = {{"a:x", 5, 0}, {"a:x", -5, 0}};
  CHECK_FALSE(ValidateEntry(e).ok());  // one account twice

  e.postings = {{"a:x", 0, 0}};
  CHECK_FALSE(ValidateEntry(e).ok());  // zero posting

  e.postings = {{"a:x", 5, 0}, {"a:y", -5, 0}};
  CHECK(ValidateEntry(e).ok());
}

TEST_CASE("A decoded entry whose postings do not balance is rejected", "[entry]") {
  Entry e = SampleEntry();
  std::string bytes = EncodeEntry(e);
  // Find the first posting's points (120) and change it to 121.
  std::string needle;
  PutI64(&needle, 120);
  size_t at = bytes.find(needle);
  REQUIRE(at != std::string::npos);
  bytes[at + 7] = 121;
  CHECK_FALSE(DecodeEntry(bytes).ok());
}

TEST_CASE("Ids are 1 to 64 characters of the allowed set", "[entry]") {
  CHECK(IsValidId("a"));
  CHECK(IsValidId("Alice_1-2.3@x"));
  CHECK(IsValidId(std::string(64, 'a')));
  CHECK_FALSE(IsValidId(""));
  CHECK_FALSE(IsValidId(std::string(65, 'a')));
  CHECK_FALSE(IsValidId("a:b"));
  CHECK_FALSE(IsValidId("a b"));
  CHECK_FALSE(IsValidId("caf\xc3\xa9"));
}

TEST_CASE("Entry type names map both ways", "[entry]") {
  for (uint8_t t = 1; t <= kEntryTypeMax; ++t) {
    auto type = static_cast<EntryType>(t);
    auto back = EntryTypeFromName(EntryTypeName(type));
    REQUIRE(back.has_value());
    CHECK(*back == type);
  }
  CHECK_FALSE(EntryTypeFromName("bogus").has_value());
}

}  // namespace tally
