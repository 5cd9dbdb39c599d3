// bus::dpdk::Port between two processes over af_packet: a veth pair whose ends live in two
// network namespaces this test creates (names carry the pid; deleted at exit, also on failure
// and on SIGTERM/SIGINT; namespaces left by a killed earlier run are swept first). Needs root and
// `ip`; without them it exits 77 (meson: skipped). Same scenario as the memif test, minus the
// impairment, with some loss tolerated (af_packet drops when its 512-frame kernel ring overflows
// while a poll thread sleeps).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "scenario.hpp"

using namespace dpdk_test;

namespace {

constexpr const char* kPrefix = "bdp";  // namespaces bdpA<pid>/bdpB<pid>, veths bdpa<pid>/bdpb<pid>

// Runs a command quietly; its exit status (-1 when it could not run).
int run(const std::string& cmd) {
  const int st = std::system((cmd + " >/dev/null 2>&1").c_str());
  return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

std::string ns_name(char side, const std::string& pid) { return std::string(kPrefix) + side + pid; }
std::string veth_name(char side, const std::string& pid) {
  return std::string(kPrefix) + static_cast<char>(side - 'A' + 'a') + pid;
}

void delete_netns(const std::string& pid) {
  run("ip netns del " + ns_name('A', pid));
  run("ip netns del " + ns_name('B', pid));
  run("ip link del " + veth_name('A', pid));  // still in the root namespace if the move failed
}

std::string g_pid;  // for the signal handler

void on_signal(int sig) {
  // Not async-signal-safe (system()), but the process is about to die anyway and a leaked
  // namespace is worse.
  delete_netns(g_pid);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Namespaces from earlier runs whose process is gone (killed before it could clean up).
void sweep_stale() {
  FILE* f = ::popen("ip netns list 2>/dev/null", "r");
  if (f == nullptr) return;
  char line[256];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    std::string name(line);
    name = name.substr(0, name.find_first_of(" \n"));
    if (name.size() < 5 || name.compare(0, 3, kPrefix) != 0 || (name[3] != 'A' && name[3] != 'B')) continue;
    const std::string pid = name.substr(4);
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (::kill(std::stoi(pid), 0) == 0 || errno == EPERM) continue;  // its test still runs
    run("ip netns del " + name);
  }
  ::pclose(f);
}

struct NetnsGuard {
  std::string pid;
  ~NetnsGuard() { delete_netns(pid); }
};

void skip(const std::string& why) {
  std::fprintf(stderr, "SKIP: %s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(77);
}

}  // namespace

TEST_CASE("dpdk Port over af_packet on a veth pair in two network namespaces", "[dpdk][af_packet]") {
  if (::geteuid() != 0) skip("needs root (network namespaces, veth, AF_PACKET)");
  if (run("ip -V") != 0) skip("`ip` (iproute2) not found");
  const std::string pid = std::to_string(::getpid());
  g_pid = pid;
  sweep_stale();

  NetnsGuard guard{pid};
  ::signal(SIGTERM, on_signal);
  ::signal(SIGINT, on_signal);
  const std::string na = ns_name('A', pid), nb = ns_name('B', pid);
  const std::string va = veth_name('A', pid), vb = veth_name('B', pid);
  if (run("ip netns add " + na) != 0 || run("ip netns add " + nb) != 0) {
    delete_netns(pid);
    skip("cannot create network namespaces (`ip netns add` failed: not permitted in this container?)");
  }
  // No IP addresses on the veths: the kernel stays out of ARP and UDP; the DPDK ports own them.
  const bool made = run("ip link add " + va + " type veth peer name " + vb) == 0 &&
                    run("ip link set " + va + " netns " + na) == 0 && run("ip link set " + vb + " netns " + nb) == 0 &&
                    run("ip -n " + na + " link set " + va + " up") == 0 &&
                    run("ip -n " + nb + " link set " + vb + " up") == 0;
  if (!made) {
    delete_netns(pid);
    skip("cannot create a veth pair between the namespaces");
  }
  // Quieter wire (no IPv6 neighbour discovery from the kernel); not required.
  run("ip netns exec " + na + " sysctl -w net.ipv6.conf." + va + ".disable_ipv6=1");
  run("ip netns exec " + nb + " sysctl -w net.ipv6.conf." + vb + ".disable_ipv6=1");

  const std::vector<std::string> common = {"--no-huge", "-m", "256", "--no-pci", "--no-telemetry"};
  SideSpec a;
  a.role = 'A';
  a.eal_args = {"-l", "0"};
  a.eal_args.insert(a.eal_args.end(), common.begin(), common.end());
  a.eal_args.push_back("--file-prefix=busdt_aa_" + pid);
  a.eal_args.push_back("--vdev=net_af_packet0,iface=" + va + ",qpairs=1");
  a.port_name = "net_af_packet0";
  a.netns = na;
  a.pace_us = 300;  // the veth and softirq are slower than memif

  SideSpec b = a;
  b.role = 'B';
  b.eal_args = {"-l", "1"};
  b.eal_args.insert(b.eal_args.end(), common.begin(), common.end());
  b.eal_args.push_back("--file-prefix=busdt_ab_" + pid);
  b.eal_args.push_back("--vdev=net_af_packet0,iface=" + vb + ",qpairs=1");
  b.netns = nb;

  const Outcome out = run_pair(a, b);
  check_main(out, a, 90);
  // The PMD set the MACs on the veths (af_packet can, unlike memif).
  CHECK(std::string(out.a.describe).find("in software") == std::string::npos);
}
