// A real busd process for integration tests: its own directory and socket, started and stopped
// per test. BUSD_BIN and BUS_TEST_AGENT (set by meson) name the binaries.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bus/client.hpp"
#include "bus/clock.hpp"

namespace bus::test {

inline std::string env_or_die(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) {
    std::fprintf(stderr, "%s is not set (run through meson test)\n", name);
    std::abort();
  }
  return v;
}

/// Polls `pred` every ms until it holds or `ms` pass.
inline bool eventually(const std::function<bool()>& pred, int ms = 5000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

/// Spawns argv with BUS_SOCKET set; stdout+stderr to `log`.
inline pid_t spawn(const std::vector<std::string>& argv, const std::string& socket, const std::string& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    // A test that crashes must not leave busd or agents running: they die with it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::setenv("BUS_SOCKET", socket.c_str(), 1);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

/// Waits for a child; returns its exit code, 128+signal, or -1 on timeout.
inline int reap(pid_t pid, int ms = 10000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (std::chrono::steady_clock::now() > end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

class Busd {
 public:
  /// Starts busd with `config_toml` written to a file ("" = the embedded default).
  explicit Busd(const std::string& config_toml = "", const std::string& name = "t") {
    dir_ = std::filesystem::temp_directory_path() /
           ("busd-it-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    socket_ = (dir_ / "busd.sock").string();
    if (!config_toml.empty()) {
      config_ = (dir_ / "busd.toml").string();
      std::ofstream(config_) << config_toml;
    }
    start();
  }
  ~Busd() {
    stop(SIGKILL);
    if (std::getenv("BUS_TEST_KEEP") == nullptr) std::filesystem::remove_all(dir_);  // keep: debugging
  }

  void start() {
    std::vector<std::string> argv{env_or_die("BUSD_BIN")};
    if (!config_.empty()) {
      argv.push_back("--config");
      argv.push_back(config_);
    }
    pid_ = spawn(argv, socket_, log_path());
    // Ready when it accepts: the socket file appears at bind(), before listen().
    started_ = eventually([&] { return accepts(socket_); }, 5000);
  }

  static bool accepts(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
  }
  /// Sends `sig`; returns busd's exit status (see reap()).
  int stop(int sig = SIGTERM, int ms = 10000) {
    if (pid_ <= 0) return 0;
    ::kill(pid_, sig);
    const int rc = reap(pid_, ms);
    pid_ = -1;
    return rc;
  }

  [[nodiscard]] bool started() const { return started_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] const std::string& socket() const { return socket_; }
  [[nodiscard]] std::string counters_path() const { return (dir_ / "busd.counters").string(); }
  [[nodiscard]] std::string log_path() const { return (dir_ / "busd.log").string(); }
  [[nodiscard]] std::string log() const { return slurp(log_path()); }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }

  ClientOptions options(const std::string& agent) const {
    ClientOptions o;
    o.name = agent;
    o.address = socket_;
    return o;
  }
  std::unique_ptr<Client> client(const std::string& agent, const std::string& wait = "adaptive") const {
    auto o = options(agent);
    o.wait = wait;
    auto c = Client::connect(o);
    if (!c) {
      std::fprintf(stderr, "connect %s: %s\n", agent.c_str(), c.error().message().c_str());
      return nullptr;
    }
    return std::move(*c);
  }
  /// A test agent process (tests/integration/test_agent.cpp).
  pid_t agent_process(const std::vector<std::string>& args) const {
    std::vector<std::string> argv{env_or_die("BUS_TEST_AGENT")};
    argv.insert(argv.end(), args.begin(), args.end());
    return spawn(argv, socket_, (dir_ / "agents.log").string());
  }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::filesystem::path dir_;
  std::string socket_;
  std::string config_;
  pid_t pid_ = -1;
  bool started_ = false;
};

/// Dispatches on `c` until `pred` holds or `ms` pass.
inline bool pump_until(Client& c, const std::function<bool()>& pred, int ms = 5000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    (void)c.poll(std::chrono::milliseconds(5));
  }
  return true;
}

inline std::span<const std::byte> bytes(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

}  // namespace bus::test
