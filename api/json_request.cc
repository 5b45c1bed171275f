#include "api/json_request.h"

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ledger/entry.h"
#include "ledger/limits.h"
#include "ledger/rfc3339.h"

namespace tally {
namespace {

using Json = nlohmann::json;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

Status Bad(std::string message) {
  return Status::InvalidArgument(std::move(message), "bad_request");
}

// Thrown by the parser callback only, and caught in ParseObject.
struct Rejected {
  std::string why;
};

// Parses `body` as one JSON object, refusing duplicate keys and nesting deeper than
// kJsonDepthMax while parsing (so a hostile body stops early).
Result<Json> ParseObject(std::string_view body) {
  std::vector<std::set<std::string>> keys;  // the keys seen, per open object
  auto callback = [&keys](int depth, Json::parse_event_t event, Json& parsed) {
    using E = Json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth >= kJsonDepthMax) {
      throw Rejected{"JSON nested more than " + std::to_string(kJsonDepthMax) + " deep"};
    }
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end) keys.pop_back();
    if (event == E::key && !keys.back().insert(parsed.get<std::string>()).second) {
      throw Rejected{"duplicate key \"" + parsed.get<std::string>() + "\""};
    }
    return true;
  };
  try {
    Json j = Json::parse(body.begin(), body.end(), callback);
    if (!j.is_object()) return Bad("the body must be a JSON object");
    return j;
  } catch (const Rejected& r) {
    return Bad(r.why);
  } catch (const Json::exception& e) {
    return Bad(std::string("invalid JSON: ") + e.what());
  }
}

bool IsPlainText(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// Reads the fields of one JSON object. Each getter marks its field as known; the first error
// sticks, and Finish() reports it, or the first field no getter asked for.
class Fields {
 public:
  Fields(Json object, std::string prefix) : obj_(std::move(object)), prefix_(std::move(prefix)) {}

  std::optional<std::string> OptId(const char* key) {
    const Json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string() || !IsValidId(v->get_ref<const std::string&>())) {
      Fail(key, "must be 1 to 64 characters of A-Z a-z 0-9 _ - . @");
      return std::nullopt;
    }
    return v->get<std::string>();
  }
  std::string Id(const char* key) { return Required(key, OptId(key)); }

  std::optional<std::string> OptText(const char* key, size_t bytes_max) {
    const Json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string() || v->get_ref<const std::string&>().empty() ||
        v->get_ref<const std::string&>().size() > bytes_max ||
        !IsPlainText(v->get_ref<const std::string&>())) {
      Fail(key, "must be a non-empty string of at most " + std::to_string(bytes_max) +
                    " bytes without control characters");
      return std::nullopt;
    }
    return v->get<std::string>();
  }
  std::string Text(const char* key, size_t bytes_max) {
    return Required(key, OptText(key, bytes_max));
  }

  std::optional<int64_t> OptInt(const char* key, int64_t min, int64_t max) {
    const Json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    std::optional<int64_t> n = AsInt(*v);
    if (!n || *n < min || *n > max) {
      Fail(key, "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
      return std::nullopt;
    }
    return n;
  }
  int64_t Int(const char* key, int64_t min, int64_t max) {
    return Required(key, OptInt(key, min, max));
  }
  std::optional<int64_t> OptPoints(const char* key) { return OptInt(key, 1, kPointsMax); }
  std::optional<int64_t> OptDays(const char* key) { return OptInt(key, 0, kDaysMax); }

  std::optional<bool> OptBool(const char* key) {
    const Json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) {
      Fail(key, "must be true or false");
      return std::nullopt;
    }
    return v->get<bool>();
  }

  std::optional<int64_t> OptTime(const char* key) {
    std::optional<std::string> text = OptText(key, 64);
    if (!text) return std::nullopt;
    Result<int64_t> us = ParseRfc3339(*text);
    if (!us.ok() || *us == 0) {
      Fail(key, "must be an RFC 3339 UTC time after the epoch");
      return std::nullopt;
    }
    return *us;
  }

  // The nested object `key` as Fields, or nullopt when absent or null.
  std::optional<Fields> OptObject(const char* key) {
    const Json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_object()) {
      Fail(key, "must be an object");
      return std::nullopt;
    }
    return Fields(*v, prefix_ + key + ".");
  }

  // True if the body has `key` (null included); marks it as known.
  bool Has(const char* key) {
    used_.insert(key);
    return obj_.contains(key);
  }

  // Merges a nested object's outcome into this one.
  void Absorb(Fields&& nested) {
    Status s = nested.Finish();
    if (status_.ok() && !s.ok()) status_ = std::move(s);
  }

  Status Finish() {
    if (!status_.ok()) return status_;
    for (const auto& [key, value] : obj_.items()) {
      if (used_.count(key) == 0) return Bad("unknown field \"" + prefix_ + key + "\"");
    }
    return Status::Ok();
  }

  void Fail(const std::string& key, const std::string& why) {
    if (status_.ok()) status_ = Bad("\"" + prefix_ + key + "\" " + why);
  }

 private:
  // The value of `key`, or nullptr when absent or null.
  const Json* Find(const char* key) {
    used_.insert(key);
    auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }

  template <typename T>
  typename T::value_type Required(const char* key, T value) {
    if (!value && status_.ok()) Fail(key, "is required");
    return value.value_or(typename T::value_type{});
  }

  static std::optional<int64_t> AsInt(const Json& v) {
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(kInt64Max)) return std::nullopt;
      return static_cast<int64_t>(u);
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    return std::nullopt;
  }

  Json obj_;
  std::string prefix_;
  std::set<std::string> used_;
  Status status_;
};

Result<Fields> Open(std::string_view body) {
  ASSIGN_OR_RETURN(Json j, ParseObject(body));
  return Fields(std::move(j), "");
}

std::optional<NegativeBalance> ReadNegativeBalance(Fields& f) {
  std::optional<std::string> v = f.OptText("negative_balance", 16);
  if (!v) return std::nullopt;
  if (*v == "deny") return NegativeBalance::kDeny;
  if (*v == "allow") return NegativeBalance::kAllow;
  f.Fail("negative_balance", "must be \"deny\" or \"allow\"");
  return std::nullopt;
}

std::optional<std::string> ReadCurrency(Fields& f) {
  std::optional<std::string> v = f.OptText("currency", 3);
  bool ok = v && v->size() == 3;
  for (size_t i = 0; ok && i < 3; ++i) ok = (*v)[i] >= 'A' && (*v)[i] <= 'Z';
  if (v && !ok) f.Fail("currency", "must be an ISO 4217 code of three capital letters");
  return ok ? v : std::nullopt;
}

ReferralPatch ReadReferral(Fields& r) {
  ReferralPatch p;
  p.advocate_points = r.OptInt("advocate_points", 0, kPointsMax);
  p.friend_points = r.OptInt("friend_points", 0, kPointsMax);
  p.max_uses = r.OptInt("max_uses", 1, kPointsMax);
  p.code_ttl_days = r.OptDays("code_ttl_days");
  p.advocate_pending_days = r.OptDays("advocate_pending_days");
  return p;
}

// Every program field but id.
ProgramPatch ReadProgramFields(Fields& f) {
  ProgramPatch p;
  p.name = f.OptText("name", kDescriptionBytesMax);
  p.currency = ReadCurrency(f);
  p.point_value_minor = f.OptInt("point_value_minor", 1, kPointsMax);
  if (std::optional<Fields> rate = f.OptObject("earn_rate")) {
    p.earn_points = rate->OptInt("points", 1, kPointsMax);
    p.earn_per_amount_minor = rate->OptInt("per_amount_minor", 1, kPointsMax);
    f.Absorb(std::move(*rate));
  }
  p.expiry_days = f.OptDays("expiry_days");
  p.pending_days = f.OptDays("pending_days");
  p.negative_balance = ReadNegativeBalance(f);
  p.referral_set = f.Has("referral");
  if (std::optional<Fields> referral = f.OptObject("referral")) {
    p.referral = ReadReferral(*referral);
    f.Absorb(std::move(*referral));
  }
  return p;
}

template <typename T>
void Set(const std::optional<T>& from, T* to) {
  if (from) *to = *from;
}

}  // namespace

void ApplyProgramPatch(const ProgramPatch& patch, ProgramConfig* c) {
  Set(patch.name, &c->name);
  Set(patch.currency, &c->currency);
  Set(patch.point_value_minor, &c->point_value_minor);
  Set(patch.earn_points, &c->earn_points);
  Set(patch.earn_per_amount_minor, &c->earn_per_amount_minor);
  Set(patch.expiry_days, &c->expiry_days);
  Set(patch.pending_days, &c->pending_days);
  Set(patch.negative_balance, &c->negative_balance);
  if (!patch.referral_set) return;
  if (!patch.referral) {
    c->referral.reset();
    return;
  }
  ReferralSettings r = c->referral.value_or(ReferralSettings{});
  Set(patch.referral->advocate_points, &r.advocate_points);
  Set(patch.referral->friend_points, &r.friend_points);
  Set(patch.referral->max_uses, &r.max_uses);
  Set(patch.referral->code_ttl_days, &r.code_ttl_days);
  Set(patch.referral->advocate_pending_days, &r.advocate_pending_days);
  c->referral = r;
}

Result<ProgramConfig> ParseProgramCreate(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  ProgramConfig config;
  config.id = f.Id("id");
  ProgramPatch patch = ReadProgramFields(f);
  if (!patch.name) f.Fail("name", "is required");
  RETURN_IF_ERROR(f.Finish());
  ApplyProgramPatch(patch, &config);
  return config;
}

Result<ProgramPatch> ParseProgramPatch(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  ProgramPatch patch = ReadProgramFields(f);
  RETURN_IF_ERROR(f.Finish());
  return patch;
}

Result<EarnRequest> ParseEarn(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  EarnRequest r;
  r.customer = f.Id("customer");
  r.points = f.OptPoints("points");
  r.order_amount_minor = f.OptInt("order_amount_minor", 1, kPointsMax);
  r.order_id = f.OptId("order_id").value_or("");
  r.pending_days = f.OptDays("pending_days");
  r.pending_until_us = f.OptTime("pending_until");
  r.expires_at_us = f.OptTime("expires_at");
  r.description = f.OptText("description", kDescriptionBytesMax).value_or("");
  RETURN_IF_ERROR(f.Finish());
  if (r.points.has_value() == r.order_amount_minor.has_value()) {
    return Bad("exactly one of \"points\" and \"order_amount_minor\" is required");
  }
  if (r.pending_days && r.pending_until_us) {
    return Bad("at most one of \"pending_days\" and \"pending_until\" may be given");
  }
  return r;
}

Result<RedeemRequest> ParseRedeem(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  RedeemRequest r;
  r.customer = f.Id("customer");
  r.points = f.OptPoints("points");
  r.reward_id = f.OptId("reward_id").value_or("");
  r.order_id = f.OptId("order_id").value_or("");
  r.hold = f.OptBool("hold").value_or(false);
  RETURN_IF_ERROR(f.Finish());
  if (r.points.has_value() == !r.reward_id.empty()) {
    return Bad("exactly one of \"points\" and \"reward_id\" is required");
  }
  return r;
}

Result<ReversalRequest> ParseReversal(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  ReversalRequest r;
  r.entry_id = static_cast<uint64_t>(f.Int("entry_id", 0, kInt64Max));
  r.points = f.OptPoints("points");
  r.reason = f.OptText("reason", kDescriptionBytesMax).value_or("");
  RETURN_IF_ERROR(f.Finish());
  return r;
}

Result<AdjustmentBody> ParseAdjustment(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  AdjustmentBody r;
  r.customer = f.Id("customer");
  r.points = f.Int("points", -kPointsMax, kPointsMax);
  r.reason = f.Text("reason", kDescriptionBytesMax);
  RETURN_IF_ERROR(f.Finish());
  if (r.points == 0) return Bad("\"points\" must not be zero");
  return r;
}

Result<RewardRecord> ParseReward(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  RewardRecord r;
  r.id = f.Id("id");
  r.name = f.Text("name", kDescriptionBytesMax);
  r.points = f.Int("points", 1, kPointsMax);
  r.stock = f.OptInt("stock", 0, kPointsMax);
  RETURN_IF_ERROR(f.Finish());
  return r;
}

Result<std::string> ParseCodeRequest(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  std::string advocate = f.Id("advocate");
  RETURN_IF_ERROR(f.Finish());
  return advocate;
}

Result<ReferralBody> ParseReferral(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  ReferralBody r;
  r.code = f.Text("code", kIdBytesMax);
  r.friend_id = f.Id("friend");
  r.order_id = f.OptId("order_id").value_or("");
  RETURN_IF_ERROR(f.Finish());
  return r;
}

Result<ApiKeyRequest> ParseApiKey(std::string_view body) {
  ASSIGN_OR_RETURN(Fields f, Open(body));
  ApiKeyRequest r;
  std::string role = f.Text("role", 16);
  r.name = f.Text("name", kDescriptionBytesMax);
  std::optional<std::string> program = f.OptId("program");
  std::optional<std::string> customer = f.OptId("customer");
  RETURN_IF_ERROR(f.Finish());
  std::optional<Role> parsed = RoleFromName(role);
  if (!parsed) return Bad("\"role\" must be admin, checkout, finance or customer");
  r.role = *parsed;
  bool bound = r.role == Role::kCustomer;
  if (bound != program.has_value() || bound != customer.has_value()) {
    return Bad("\"program\" and \"customer\" are required for role customer, and only there");
  }
  r.program = program.value_or("");
  r.customer = customer.value_or("");
  return r;
}

Result<std::optional<std::string>> ParseBackupRequest(std::string_view body) {
  if (body.empty()) return std::optional<std::string>();
  ASSIGN_OR_RETURN(Fields f, Open(body));
  std::optional<std::string> name = f.OptId("name");
  RETURN_IF_ERROR(f.Finish());
  if (name && name->front() == '.') return Bad("\"name\" must not start with '.'");
  return name;
}

Result<BackupRecord> ParseBackupRecord(std::string_view text) {
  ASSIGN_OR_RETURN(Fields f, Open(text));
  BackupRecord b;
  b.name = f.Id("name");
  b.path = f.Text("path", 4096);
  b.size = static_cast<uint64_t>(f.Int("size", 0, kInt64Max));
  b.created_at = f.Text("created_at", 64);
  b.idempotency = f.Text("idempotency", 64);
  b.request = f.Text("request", 64);
  RETURN_IF_ERROR(f.Finish());
  return b;
}

Status ParseEmpty(std::string_view body) {
  if (body.empty()) return Status::Ok();
  ASSIGN_OR_RETURN(Fields f, Open(body));
  return f.Finish();
}

}  // namespace tally
