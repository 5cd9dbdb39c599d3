#include "netns.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "bus/clock.hpp"
#include "proc.hpp"

namespace bus::bench {
namespace {

// What a fatal signal must still remove: the /var/run/netns/NAME files of the namespaces made
// so far (the signal handler does what `ip netns del` does: a lazy unmount and an unlink).
char g_path[2][128];
volatile sig_atomic_t g_armed[2] = {0, 0};
pid_t g_owner = 0;  // forked children inherit the handler: only busbench itself removes
constexpr int kSignals[4] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
struct sigaction g_old[4];

void remove_netns_file(const char* path) noexcept {
  (void)::umount2(path, MNT_DETACH);
  (void)::unlink(path);
}

void on_fatal_signal(int sig) {
  if (::getpid() == g_owner) {
    for (int i = 0; i < 2; ++i) {
      if (g_armed[i] != 0) remove_netns_file(g_path[i]);
    }
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // delivered when the handler returns: busbench dies of it as it would have
}

std::string netns_path(const std::string& name) { return std::string("/var/run/netns/").append(name); }

void must(const std::vector<std::string>& argv) {
  const CommandResult r = run_command(argv);
  if (r.status == 0) return;
  std::string cmd;
  for (const auto& a : argv) cmd.append(cmd.empty() ? "" : " ").append(a);
  std::string out = r.output;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  throw std::runtime_error(std::string("--netns: `").append(cmd).append("` failed (status ")
                               .append(std::to_string(r.status)).append(")").append(out.empty() ? "" : ": ")
                               .append(out));
}

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv) {
  CommandResult res;
  if (argv.empty()) return res;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    res.output = std::string("pipe: ").append(std::strerror(errno));
    return res;
  }
  Child child;
  try {
    child = Child::fork([&]() -> int {
      ::dup2(p[1], STDOUT_FILENO);  // the duplicates lose O_CLOEXEC: the program writes to them
      ::dup2(p[1], STDERR_FILENO);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      for (const char* dir : {"/usr/sbin/", "/sbin/"}) {
        const std::string path = std::string(dir).append(argv[0]);
        ::execv(path.c_str(), args.data());
      }
      std::fprintf(stderr, "cannot run %s: %s\n", argv[0].c_str(), std::strerror(errno));
      return 127;
    });
  } catch (const std::exception& e) {
    ::close(p[0]);
    ::close(p[1]);
    res.output = e.what();
    return res;
  }
  ::close(p[1]);
  const uint64_t end = clock::mono_ns() + 10'000'000'000ull;
  char buf[512];
  for (;;) {
    const uint64_t now = clock::mono_ns();
    if (now >= end) break;
    pollfd pfd{p[0], POLLIN, 0};
    const int r = ::poll(&pfd, 1, static_cast<int>((end - now) / 1'000'000u) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    const ssize_t n = ::read(p[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    res.output.append(buf, static_cast<size_t>(n));
  }
  ::close(p[0]);
  const uint64_t now = clock::mono_ns();
  res.status = child.wait(now < end ? static_cast<int>((end - now) / 1'000'000u) : 0);
  if (res.status < 0) {
    child.kill();
    res.output.append(res.output.empty() ? "" : "\n").append("(did not finish within 10 s)");
  }
  return res;
}

int socket_in_netns(int netns_fd, int domain, int type, int protocol, const char* who) {
  auto fail = [who](const char* what, int err) -> std::runtime_error {
    return std::runtime_error(std::string(who).append(": ").append(what).append(": ").append(std::strerror(err)));
  };
  if (netns_fd < 0) {
    const int s = ::socket(domain, type, protocol);
    if (s < 0) throw fail("socket", errno);
    return s;
  }
  const int home = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) throw fail("open /proc/thread-self/ns/net", errno);
  if (::setns(netns_fd, CLONE_NEWNET) != 0) {
    const int err = errno;
    ::close(home);
    throw fail("setns into the network namespace", err);
  }
  const int s = ::socket(domain, type, protocol);
  const int err = errno;
  const bool back = ::setns(home, CLONE_NEWNET) == 0;
  const int back_err = errno;
  ::close(home);
  if (!back) {
    if (s >= 0) ::close(s);
    throw fail("setns back into busbench's network namespace", back_err);
  }
  if (s < 0) throw fail("socket (in another network namespace)", err);
  return s;
}

NetnsPair::NetnsPair() {
  if (::geteuid() != 0) {
    throw std::runtime_error(
        "--netns needs root: busbench creates two network namespaces and a veth pair (ip netns add, ip link add); "
        "run it as root, or leave out --netns to measure the link over loopback");
  }
  const pid_t pid = ::getpid();
  const unsigned x = (static_cast<unsigned>(pid) >> 8) & 0xffu, y = static_cast<unsigned>(pid) & 0xffu;
  const std::string net = "10." + std::to_string(x) + "." + std::to_string(y) + ".";
  const std::string foreign = "10." + std::to_string(x) + "." + std::to_string(y ^ 0x80u) + ".";
  for (int s = 0; s < 2; ++s) {
    const char side = s == 0 ? 'a' : 'b';
    name_[s] = "busbench-" + std::to_string(pid) + "-" + side;
    veth_[s] = "bb" + std::to_string(pid) + side;  // at most 10 of IFNAMSIZ's 15 characters
    addr_[s] = net + std::to_string(s + 1);
    foreign_[s] = foreign + std::to_string(s + 1);
  }
  g_owner = pid;
  for (int i = 0; i < 4; ++i) {
    struct sigaction sa {};
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(kSignals[i], &sa, &g_old[i]);
  }
  try {
    home_ = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home_ < 0) throw std::runtime_error(std::string("--netns: open /proc/self/ns/net: ").append(std::strerror(errno)));
    for (int s = 0; s < 2; ++s) {
      must({"ip", "netns", "add", name_[s]});
      made_[s] = true;
      const std::string path = netns_path(name_[s]);
      std::snprintf(g_path[s], sizeof g_path[s], "%s", path.c_str());
      g_armed[s] = 1;
    }
    // Both ends made inside their namespaces at once: nothing is left in busbench's own
    // namespace if it dies halfway (deleting a namespace deletes its end, and so the pair).
    must({"ip", "link", "add", "name", veth_[0], "netns", name_[0], "type", "veth", "peer", "name", veth_[1], "netns",
          name_[1]});
    for (int s = 0; s < 2; ++s) {
      must({"ip", "-n", name_[s], "link", "set", "lo", "up"});
      must({"ip", "-n", name_[s], "addr", "add", addr_[s] + "/24", "dev", veth_[s]});
      must({"ip", "-n", name_[s], "link", "set", veth_[s], "up"});
      fd_[s] = ::open(netns_path(name_[s]).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_[s] < 0) {
        throw std::runtime_error("--netns: open " + netns_path(name_[s]) + ": " + std::strerror(errno));
      }
    }
  } catch (...) {
    remove();
    throw;
  }
}

NetnsPair::~NetnsPair() { remove(); }

void NetnsPair::remove() noexcept {
  if (home_ >= 0) {
    (void)::setns(home_, CLONE_NEWNET);  // busbench's thread home first: it must not keep b alive
    ::close(home_);
    home_ = -1;
  }
  for (int s = 0; s < 2; ++s) {
    if (fd_[s] >= 0) ::close(fd_[s]);
    fd_[s] = -1;
    if (made_[s]) {
      // What `ip netns del` does. The namespace itself goes once its last process has exited
      // (busd and the agents are gone by now), and the veth pair with it.
      g_armed[s] = 0;
      remove_netns_file(netns_path(name_[s]).c_str());
      made_[s] = false;
    }
  }
  if (g_owner != 0) {
    for (int i = 0; i < 4; ++i) ::sigaction(kSignals[i], &g_old[i], nullptr);
    g_owner = 0;
  }
}

void NetnsPair::enter(int side) const {
  if (::setns(fd_[side], CLONE_NEWNET) != 0) {
    throw std::runtime_error("setns into " + name_[side] + ": " + std::strerror(errno));
  }
}

std::string NetnsPair::describe() const {
  return "namespaces " + name_[0] + " (" + addr_[0] + ") and " + name_[1] + " (" + addr_[1] + "), veth " + veth_[0] +
         "/" + veth_[1];
}

}  // namespace bus::bench
