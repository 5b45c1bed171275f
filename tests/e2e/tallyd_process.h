// Child processes for the end-to-end tests: the real tallyd binary, started with fork/exec and
// stopped with a signal, and one-shot commands (tally-audit) whose exit code and output are kept.
#ifndef TALLY_TESTS_E2E_TALLYD_PROCESS_H_
#define TALLY_TESTS_E2E_TALLYD_PROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace tally::testing {

// The environment of this process, without any variable named `drop`, plus `extra`
// ("NAME=value" strings).
inline std::vector<std::string> ChildEnvironment(const std::string& drop,
                                                 const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).rfind(drop + "=", 0) != 0) env.emplace_back(*e);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

inline std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// In the child after fork: only async-signal-safe calls. Makes `out_fd` stdout and `err_fd`
// stderr (-1: keep), closes every other descriptor, restores the default signal mask and execs.
[[noreturn]] inline void ExecChild(char* const* argv, char* const* envp, int out_fd, int err_fd) {
  if (out_fd >= 0) ::dup2(out_fd, STDOUT_FILENO);
  if (err_fd >= 0) ::dup2(err_fd, STDERR_FILENO);
  int null_fd = ::open("/dev/null", O_RDONLY);
  if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
  long max_fd = ::sysconf(_SC_OPEN_MAX);
  for (int fd = 3; fd < (max_fd > 0 ? max_fd : 1024); ++fd) ::close(fd);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(argv[0], argv, envp);
  ::_exit(127);
}

// Waits up to `timeout` for `pid`; its exit code (128 + signal when killed), or nullopt.
inline std::optional<int> WaitFor(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (r < 0 && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The real tallyd, serving a data directory on a free loopback port.
class TallydProcess {
 public:
  // Starts `binary --data data_dir --listen 127.0.0.1:0 extra_args...` with TALLY_ADMIN_KEY set
  // to `admin_key` (unset when empty), its stderr appended to `log_file`, and waits up to
  // `timeout` for the line "tallyd listening on http://HOST:PORT" on its stdout. started() says
  // whether it came.
  TallydProcess(const std::string& binary, const std::string& data_dir,
                const std::string& admin_key, const std::string& log_file,
                const std::vector<std::string>& extra_args = {},
                std::chrono::milliseconds timeout = std::chrono::seconds(30))
      : log_file_(log_file) {
    std::vector<std::string> args = {binary, "--data", data_dir, "--listen", "127.0.0.1:0"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<std::string> env = ChildEnvironment(
        "TALLY_ADMIN_KEY", admin_key.empty()
                               ? std::vector<std::string>{}
                               : std::vector<std::string>{"TALLY_ADMIN_KEY=" + admin_key});
    std::vector<char*> argv = CStrings(args);
    std::vector<char*> envp = CStrings(env);
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return;
    int log_fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_ = ::fork();
    if (pid_ == 0) ExecChild(argv.data(), envp.data(), out[1], log_fd);
    ::close(out[1]);
    if (log_fd >= 0) ::close(log_fd);
    if (pid_ < 0) {
      ::close(out[0]);
      return;
    }
    stdout_fd_ = out[0];
    ReadListeningLine(timeout);
  }
  ~TallydProcess() {
    if (running()) Kill();
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
  }
  TallydProcess(const TallydProcess&) = delete;
  TallydProcess& operator=(const TallydProcess&) = delete;

  bool started() const { return port_ != 0; }
  bool running() const { return pid_ > 0 && !exit_code_; }
  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Everything tallyd wrote to stdout so far (up to the listening line).
  const std::string& output() const { return output_; }
  // What tallyd wrote to stderr (all runs sharing the log file).
  std::string log() const { return ReadWholeFile(log_file_); }

  // Sends `signal` and waits up to `timeout` for the exit. Returns the exit code (128 + signal
  // when killed by one), or -1 if it did not exit in time (then it is killed).
  int Signal(int signal, std::chrono::milliseconds timeout) {
    if (!running()) return exit_code_.value_or(-1);
    ::kill(pid_, signal);
    std::optional<int> code = WaitFor(pid_, timeout);
    if (!code) {
      ::kill(pid_, SIGKILL);
      WaitFor(pid_, std::chrono::seconds(10));
      exit_code_ = -1;
      return -1;
    }
    exit_code_ = *code;
    return *code;
  }
  // SIGTERM: a graceful stop, which should exit 0.
  int Stop() { return Signal(SIGTERM, std::chrono::seconds(30)); }
  // SIGKILL: no chance to clean up.
  int Kill() { return Signal(SIGKILL, std::chrono::seconds(10)); }

 private:
  void ReadListeningLine(std::chrono::milliseconds timeout) {
    static constexpr std::string_view kPrefix = "tallyd listening on http://";
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      size_t at = output_.find(kPrefix);
      size_t eol = at == std::string::npos ? std::string::npos : output_.find('\n', at);
      if (eol != std::string::npos) {
        std::string address = output_.substr(at + kPrefix.size(), eol - at - kPrefix.size());
        size_t colon = address.rfind(':');
        if (colon != std::string::npos)
          port_ = static_cast<uint16_t>(std::strtoul(address.c_str() + colon + 1, nullptr, 10));
        return;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return;
      pollfd p{stdout_fd_, POLLIN, 0};
      int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return;
      char buf[4096];
      ssize_t n = ::read(stdout_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // tallyd exited before listening
        std::optional<int> code = WaitFor(pid_, std::chrono::seconds(10));
        if (code) exit_code_ = *code;
        return;
      }
      output_.append(buf, static_cast<size_t>(n));
    }
  }

  std::string log_file_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  uint16_t port_ = 0;
  std::string output_;
  std::optional<int> exit_code_;
};

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed; -1 when it did not finish in time
  std::string output;  // stdout and stderr, interleaved
};

// Runs `args` (args[0] a path) to completion, up to `timeout`.
inline CommandResult RunCommand(std::vector<std::string> args,
                                std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  CommandResult result;
  std::vector<std::string> env = ChildEnvironment("TALLY_ADMIN_KEY", {});
  std::vector<char*> argv = CStrings(args);
  std::vector<char*> envp = CStrings(env);
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return result;
  pid_t pid = ::fork();
  if (pid == 0) ExecChild(argv.data(), envp.data(), out[1], out[1]);
  ::close(out[1]);
  if (pid < 0) {
    ::close(out[0]);
    return result;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{out[0], POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) break;
    char buf[4096];
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // end of output: the command exited (or closed its outputs)
    result.output.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  std::optional<int> code = WaitFor(pid, std::max(left, std::chrono::milliseconds(1000)));
  if (!code) {
    ::kill(pid, SIGKILL);
    WaitFor(pid, std::chrono::seconds(10));
    return result;
  }
  result.exit_code = *code;
  return result;
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_E2E_TALLYD_PROCESS_H_
