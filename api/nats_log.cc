#include "api/nats_log.h"

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string_view>
#include <thread>

namespace tally {
namespace {

constexpr const char* kPrimaryHeader = "Tally-Primary";
// Set by hand for an empty stream: the client leaves ExpectLastSeq 0 out ("unset"), while the
// server takes a header of "0" to mean "the stream holds nothing yet".
constexpr const char* kExpectedLastSeqHeader = "Nats-Expected-Last-Sequence";
constexpr int64_t kSetupRetryMs = 250;

// natsStatus and jsErrCode become a Status here, once. The server's own text, when the client
// kept one for this call, is in nats_GetLastError.
std::string Describe(natsStatus s, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string text = natsStatus_GetText(s);
  if (jerr != 0) text += " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")";
  return text;
}

std::string LastErrorText(natsStatus s) {
  natsStatus last = NATS_OK;
  const char* text = nats_GetLastError(&last);
  return last == s && text != nullptr ? std::string(": ") + text : std::string();
}

struct NatsOptionsDeleter {
  void operator()(natsOptions* o) const { natsOptions_Destroy(o); }
};
struct NatsMsgDeleter {
  void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
};
using NatsMsgPtr = std::unique_ptr<natsMsg, NatsMsgDeleter>;

// "nats://a:4222, nats://b:4222" -> {"nats://a:4222", "nats://b:4222"}.
Result<std::vector<std::string>> SplitUrls(std::string_view urls) {
  std::vector<std::string> out;
  while (!urls.empty()) {
    size_t comma = urls.find(',');
    std::string_view url = urls.substr(0, comma);
    urls.remove_prefix(comma == std::string_view::npos ? urls.size() : comma + 1);
    while (!url.empty() && url.front() == ' ') url.remove_prefix(1);
    while (!url.empty() && url.back() == ' ') url.remove_suffix(1);
    if (url.rfind("nats://", 0) != 0 && url.rfind("tls://", 0) != 0) {
      return Status::InvalidArgument("not a NATS URL (nats://HOST:PORT): \"" + std::string(url) +
                                     "\"");
    }
    out.emplace_back(url);
  }
  if (out.empty()) return Status::InvalidArgument("no NATS server URL");
  return out;
}

}  // namespace

bool IsValidStreamName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

struct NatsGroupLog::Impl {
  NatsLogOptions options;
  std::string subject;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  std::atomic<bool> closing{false};  // no news once the connection is being closed

  mutable std::mutex mu;
  std::string primary_url;       // guarded by mu
  std::string last_primary_url;  // guarded by mu
  bool closed = false;           // guarded by mu: the connection's last callback has run
  std::condition_variable closed_cv;

  // The connection's callbacks run on libnats's own thread, after the call that caused them has
  // returned; their closure is this Impl. So the destructor closes the connection and waits for
  // the closed callback, which libnats delivers after every other callback of the connection,
  // before this Impl goes (at most kCloseWaitMs, so that shutdown never hangs on it).
  ~Impl() {
    closing = true;
    if (js != nullptr) jsCtx_Destroy(js);
    if (nc == nullptr) return;
    natsConnection_Close(nc);
    {
      std::unique_lock lock(mu);
      closed_cv.wait_for(lock, std::chrono::milliseconds(kCloseWaitMs), [&] { return closed; });
    }
    natsConnection_Destroy(nc);
  }
  static constexpr int kCloseWaitMs = 5000;

  static void OnDisconnected(natsConnection*, void* impl) {
    if (static_cast<Impl*>(impl)->closing.load()) return;
    std::fprintf(stderr, "tallyd: NATS connection lost; reconnecting\n");
  }
  static void OnReconnected(natsConnection* connection, void* impl) {
    if (static_cast<Impl*>(impl)->closing.load()) return;
    char url[256] = "";
    natsConnection_GetConnectedUrl(connection, url, sizeof url);
    std::fprintf(stderr, "tallyd: NATS connected to %s\n", url);
  }
  static void OnClosed(natsConnection*, void* impl) {
    auto* self = static_cast<Impl*>(impl);
    std::lock_guard lock(self->mu);
    self->closed = true;
    self->closed_cv.notify_all();
  }
  Status Open();
  Status FindOrCreateStream();
  // The Tally-Primary of the stream's last group, if it has one: a follower that has nothing
  // left to read still knows where the primary is.
  void LearnPrimary();
  // One attempt: OK, or the error; *retry says whether waiting may help.
  Status TryFindOrCreateStream(bool* retry);
};

Status NatsGroupLog::Impl::Open() {
  ASSIGN_OR_RETURN(std::vector<std::string> urls, SplitUrls(options.urls));
  std::vector<const char*> servers;
  for (const std::string& u : urls) servers.push_back(u.c_str());
  natsOptions* raw = nullptr;
  if (natsOptions_Create(&raw) != NATS_OK) return Status::Internal("natsOptions_Create failed");
  std::unique_ptr<natsOptions, NatsOptionsDeleter> opts(raw);
  natsStatus s = natsOptions_SetServers(raw, servers.data(), static_cast<int>(servers.size()));
  if (s == NATS_OK) s = natsOptions_SetName(raw, "tallyd");
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(raw, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(raw, -1);  // forever
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(raw, kReplicationReconnectWaitMs);
  if (s == NATS_OK) s = natsOptions_SetTimeout(raw, options.request_timeout_ms);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(raw, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(raw, 2);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(raw, OnDisconnected, this);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(raw, OnReconnected, this);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(raw, OnClosed, this);
  // No server up yet: the connection keeps trying in the background (with a callback, Connect
  // returns NATS_NOT_YET_CONNECTED instead of blocking), and the stream look-up below waits for
  // it, up to setup_timeout_ms.
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(raw, true, OnReconnected, this);
  if (s != NATS_OK) return Status::InvalidArgument("NATS options: " + Describe(s));
  s = natsConnection_Connect(&nc, raw);
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    return Status::Unavailable("cannot connect to NATS at " + options.urls + ": " + Describe(s) +
                               LastErrorText(s));
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = options.request_timeout_ms;
  s = natsConnection_JetStream(&js, nc, &jo);
  if (s != NATS_OK) return Status::Internal("JetStream context: " + Describe(s));
  RETURN_IF_ERROR(FindOrCreateStream());
  LearnPrimary();
  return Status::Ok();
}

void NatsGroupLog::Impl::LearnPrimary() {
  natsMsg* raw = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (js_GetLastMsg(&raw, js, options.stream.c_str(), subject.c_str(), nullptr, &jerr) != NATS_OK) {
    return;
  }
  NatsMsgPtr msg(raw);
  const char* header = nullptr;
  if (natsMsgHeader_Get(raw, kPrimaryHeader, &header) == NATS_OK && header != nullptr) {
    std::lock_guard<std::mutex> lock(mu);
    last_primary_url = header;
  }
}

// A cluster that is starting has no JetStream leader yet, or too few servers for the replicas:
// keep trying until setup_timeout_ms, then report the last reason.
Status NatsGroupLog::Impl::FindOrCreateStream() {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options.setup_timeout_ms);
  for (bool first = true;; first = false) {
    bool retry = false;
    Status st = TryFindOrCreateStream(&retry);
    if (st.ok() || !retry || std::chrono::steady_clock::now() >= deadline) return st;
    if (first) std::fprintf(stderr, "tallyd: waiting for NATS: %s\n", st.message().c_str());
    std::this_thread::sleep_for(std::chrono::milliseconds(kSetupRetryMs));
  }
}

Status NatsGroupLog::Impl::TryFindOrCreateStream(bool* retry) {
  *retry = true;
  const std::string& name = options.stream;
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, js, name.c_str(), nullptr, &jerr);
  if (s == NATS_OK) {
    std::string found = si->Config->SubjectsLen > 0 ? si->Config->Subjects[0] : "";
    jsStreamInfo_Destroy(si);
    if (found != subject) {
      *retry = false;
      return Status::FailedPrecondition("stream " + name + " exists with subject \"" + found +
                                        "\", not \"" + subject + "\"");
    }
    return Status::Ok();
  }
  if (jerr != JSStreamNotFoundErr) {
    return Status::Unavailable("cannot look up stream " + name + ": " + Describe(s, jerr) +
                               LastErrorText(s));
  }
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subjects[] = {subject.c_str()};
  cfg.Name = name.c_str();
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  cfg.Replicas = options.replicas;
  cfg.MaxMsgs = -1;  // never discard: the stream is the log
  cfg.MaxBytes = -1;
  cfg.MaxAge = 0;
  cfg.Discard = js_DiscardNew;  // no limit is set; should one be, refuse rather than forget
  jerr = static_cast<jsErrCode>(0);
  s = js_AddStream(&si, js, &cfg, nullptr, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    std::fprintf(stderr, "tallyd: created stream %s (subject %s, %d replicas)\n", name.c_str(),
                 subject.c_str(), options.replicas);
    return Status::Ok();
  }
  if (jerr == JSStreamNameExistErr) return Status::Unavailable("stream created meanwhile");
  *retry = jerr != JSStreamReplicasNotSupportedErr && jerr != JSNotEnabledErr &&
           jerr != JSNotEnabledForAccountErr;
  return Status::Unavailable("cannot create stream " + name + " with " +
                             std::to_string(options.replicas) + " replicas: " + Describe(s, jerr) +
                             LastErrorText(s) + " (a stream of N replicas needs a JetStream " +
                             "cluster of at least N servers)");
}

NatsGroupLog::NatsGroupLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NatsGroupLog::~NatsGroupLog() = default;

Result<std::unique_ptr<NatsGroupLog>> NatsGroupLog::Connect(const NatsLogOptions& options) {
  if (!IsValidStreamName(options.stream)) {
    return Status::InvalidArgument("stream name must be 1 to 64 of A-Z a-z 0-9 - _");
  }
  if (options.replicas < 1 || options.replicas > 5) {
    return Status::InvalidArgument("stream replicas must be 1 to 5");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->subject = "tally." + options.stream + ".groups";
  RETURN_IF_ERROR(impl->Open());
  return std::unique_ptr<NatsGroupLog>(new NatsGroupLog(std::move(impl)));
}

Result<uint64_t> NatsGroupLog::Publish(const CommitGroup& group, uint64_t after_seq) {
  std::string bytes = EncodeCommitGroup(group);
  std::string url;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    url = impl_->primary_url;
  }
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, impl_->subject.c_str(), nullptr, bytes.data(),
                                static_cast<int>(bytes.size()));
  if (s != NATS_OK) return Status::Internal("natsMsg_Create: " + Describe(s));
  NatsMsgPtr msg(raw);
  if (!url.empty()) s = natsMsgHeader_Set(raw, kPrimaryHeader, url.c_str());
  if (s == NATS_OK && after_seq == 0) s = natsMsgHeader_Set(raw, kExpectedLastSeqHeader, "0");
  if (s != NATS_OK) return Status::Internal("natsMsgHeader_Set: " + Describe(s));
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = impl_->options.publish_timeout_ms;
  po.ExpectStream = impl_->options.stream.c_str();
  po.ExpectLastSeq = after_seq;
  jsPubAck* ack = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  s = js_PublishMsg(&ack, impl_->js, raw, &po, &jerr);
  if (s == NATS_OK) {
    uint64_t seq = ack->Sequence;
    jsPubAck_Destroy(ack);
    if (seq != after_seq + 1) {
      return Status::DataLoss("stream acknowledged sequence " + std::to_string(seq) + " after " +
                              std::to_string(after_seq));
    }
    return seq;
  }
  if (jerr == JSStreamWrongLastSequenceErr) {
    return Status::FailedPrecondition(
        "stream " + impl_->options.stream + " holds a group after " + std::to_string(after_seq),
        "wrong_last_seq");
  }
  return Status::Unavailable("publish to stream " + impl_->options.stream + ": " +
                             Describe(s, jerr));
}

Result<std::vector<std::pair<uint64_t, CommitGroup>>> NatsGroupLog::ReadAfter(uint64_t after_seq,
                                                                              size_t max) {
  std::vector<std::pair<uint64_t, CommitGroup>> out;
  std::string primary;
  for (uint64_t seq = after_seq + 1; out.size() < max; ++seq) {
    natsMsg* raw = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_GetMsg(&raw, impl_->js, impl_->options.stream.c_str(), seq, nullptr, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) break;  // the end
    if (s != NATS_OK) {
      if (!out.empty()) break;  // what was read stands; the next call retries
      return Status::Unavailable("read stream " + impl_->options.stream + " at " +
                                 std::to_string(seq) + ": " + Describe(s, jerr));
    }
    NatsMsgPtr msg(raw);
    std::string_view data(natsMsg_GetData(raw), static_cast<size_t>(natsMsg_GetDataLength(raw)));
    Result<CommitGroup> g = DecodeCommitGroup(data);
    if (!g.ok()) {
      return Status::DataLoss("stream " + impl_->options.stream + " at " + std::to_string(seq) +
                              ": " + g.status().message());
    }
    const char* header = nullptr;
    if (natsMsgHeader_Get(raw, kPrimaryHeader, &header) == NATS_OK && header != nullptr) {
      primary = header;
    }
    out.emplace_back(seq, std::move(g).value());
  }
  if (!primary.empty()) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->last_primary_url = std::move(primary);
  }
  return out;
}

Result<uint64_t> NatsGroupLog::LastSeq(uint64_t known_seq) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&si, impl_->js, impl_->options.stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK) {
    return Status::Unavailable("stream " + impl_->options.stream + " state: " + Describe(s, jerr));
  }
  uint64_t last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  if (last < known_seq) {
    return Status::DataLoss("stream " + impl_->options.stream + " ends at " + std::to_string(last) +
                            ", before " + std::to_string(known_seq));
  }
  return last;
}

void NatsGroupLog::SetPrimaryUrl(std::string url) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->primary_url = std::move(url);
}

std::string NatsGroupLog::LastPrimaryUrl() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->last_primary_url;
}

const std::string& NatsGroupLog::stream() const { return impl_->options.stream; }
}  // namespace tally
