#include "target.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "bus/address.hpp"
#include "bus/clock.hpp"
#include "bus/counters.hpp"
#include "bus/limits.hpp"

namespace bus::bench {
namespace fs = std::filesystem;
namespace {

bool executable(const fs::path& p) { return ::access(p.c_str(), X_OK) == 0 && fs::is_regular_file(p); }

bool accepts(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return false;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

std::string find_busd(const std::string& explicit_path) {
  if (!explicit_path.empty()) return explicit_path;
  if (const char* e = std::getenv("BUSD_BIN"); e != nullptr && *e != '\0') return e;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path dir = self.parent_path();
    for (const fs::path& p : {dir / "busd", dir / "../../bus/daemon/busd", dir / "../sbin/busd"}) {
      if (executable(p)) return fs::weakly_canonical(p).string();
    }
  }
  if (const char* path = std::getenv("PATH")) {
    std::string s = path;
    size_t at = 0;
    while (at <= s.size()) {
      const size_t end = std::min(s.find(':', at), s.size());
      const fs::path p = fs::path(s.substr(at, end - at)) / "busd";
      if (executable(p)) return p.string();
      at = end + 1;
    }
  }
  throw std::runtime_error("cannot find busd: pass --busd PATH, set BUSD_BIN, or --address SOCKET for a running one");
}

BusTarget::BusTarget(const TargetOptions& o) {
  if (o.transport != "shm") {
    throw std::runtime_error("transport '" + o.transport +
                             "': only 'shm' (local shared memory), and 'tcp', 'dpdk' and 'rdma' (pingpong and pubsub "
                             "between two linked busd) exist");
  }
  const std::string who = o.name.empty() ? "busd" : o.name;
  if (!o.address.empty()) {
    socket_ = o.address;
    if (!accepts(socket_)) throw std::runtime_error("no busd accepts connections at " + socket_);
    if (auto page = counters::open_counters(counters_path_for_socket(socket_))) pid_ = page->info().pid;
    describe_ = "existing busd at " + socket_ +
                (pid_ > 0 ? " (pid " + std::to_string(pid_) + ", wait per its config)"
                          : " (no counters page next to it: busd CPU and RSS not measured)");
    return;
  }
  const std::string bin = find_busd(o.busd_bin);
  char tmpl[] = "/tmp/busbench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  dir_ = tmpl;
  socket_ = dir_ + "/busd.sock";
  const std::string config = dir_ + "/busd.toml";
  {
    std::ofstream f(config);
    f << "[busd]\nwait = \"" << o.busd_wait << "\"\nlog_level = \"warn\"\n";
    if (o.lanes >= 0) f << "lanes = " << (o.lanes > 0 ? "true" : "false") << "\n";
    if (o.heartbeat_misses > 0) f << "heartbeat_misses = " << o.heartbeat_misses << "\n";
    if (o.agents > defaults::kMaxAgents) f << "[limits]\nmax_agents = " << o.agents << "\n";
    f << o.extra_config;
  }
  const std::string log_path = dir_ + "/busd.log";
  child_ = Child::fork([&] {
    if (o.in_child) o.in_child();
    ::setenv("BUS_SOCKET", socket_.c_str(), 1);
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    const char* argv[] = {bin.c_str(), "--config", config.c_str(), nullptr};
    ::execv(argv[0], const_cast<char* const*>(argv));
    std::fprintf(stderr, "exec %s: %s\n", bin.c_str(), std::strerror(errno));
    return 127;
  });
  pid_ = child_.pid();
  const uint64_t end = clock::mono_ns() + 5'000'000'000ull;
  while (!accepts(socket_)) {
    if (!child_.alive() || clock::mono_ns() > end) {
      const std::string text = this->log();
      std::error_code ec;
      fs::remove_all(dir_, ec);  // the destructor does not run for a constructor that throws
      throw std::runtime_error(who + " (" + bin + ") did not start: " + (text.empty() ? "no output" : text));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (o.busd_cpu >= 0) pin_process(pid_, o.busd_cpu);
  describe_ = (o.name.empty() ? "" : o.name + ": ") + "private busd (wait=" + o.busd_wait +
              (o.lanes >= 0 ? (o.lanes > 0 ? ", lanes on" : ", lanes off") : "") +
              (o.busd_cpu >= 0 ? ", cpu " + std::to_string(o.busd_cpu) : "") +
              (o.agents > defaults::kMaxAgents ? ", max_agents " + std::to_string(o.agents) : "") + "), " + bin;
}

uint64_t BusTarget::global(counters::Global g) {
  if (!page_) {
    auto v = counters::open_counters(counters_path_for_socket(socket_));
    if (!v) return 0;
    page_.emplace(std::move(*v));
  }
  return page_->globals()[g];
}

std::string BusTarget::log() const {
  if (dir_.empty()) return {};
  std::ifstream f(dir_ + "/busd.log");
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

bool BusTarget::alive() {
  if (child_.running()) return child_.alive();
  return pid_ <= 0 || ::kill(pid_, 0) == 0 || errno == EPERM;
}

BusTarget::~BusTarget() {
  if (child_.running()) {
    ::kill(child_.pid(), SIGTERM);
    if (child_.wait(5000) < 0) child_.kill();
  }
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

}  // namespace bus::bench
