#include "link_pair.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "bus/clock.hpp"
#include "bus/counters.hpp"
#include "bus_kit.hpp"
#include "dpdk_kit.hpp"
#include "rdma_kit.hpp"

namespace bus::bench {
namespace {

using counters::Global;

constexpr uint16_t kNetnsPort = 7400;  // a namespace of busbench's own: nothing else listens there
constexpr uint64_t kLinkUpNs = 10'000'000'000ull;

// A free loopback port: bound, read and closed (busd binds it again at once).
uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ").append(std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) throw std::runtime_error(std::string("no free loopback port: ").append(std::strerror(err)));
  return ntohs(a.sin_port);
}

std::string endpoint(const std::string& ip, uint16_t port) { return std::string(ip).append(":").append(std::to_string(port)); }

// A pair busbench stops while it measures something else must not take the pause for a dead
// link when it is continued: [cluster] dead_after_ms (at most 1 h) instead of 2 s.
constexpr uint32_t kDeadAfterMs = 2'000;
constexpr uint32_t kDeadAfterPausedMs = 3'600'000;
// The DPDK ports' adaptive idle, written out (busd's defaults) so that the output can say it.
constexpr uint32_t kSpinUs = 20;
constexpr uint32_t kSleepMaxUs = 100;
// --dpdk-idle inline: busd's own loop polls the port and, idle, sleeps at most this long.
constexpr uint32_t kInlineSleepMaxUs = 20;
constexpr const char* kSideName[2] = {"busd A", "busd B"};
constexpr const char* kPaused = "; the pair is stopped (SIGSTOP) while anything else is measured";

}  // namespace

const char* kind_name(LinkKind k) noexcept {
  switch (k) {
    case LinkKind::dpdk: return "dpdk";
    case LinkKind::rdma: return "rdma";
    case LinkKind::tcp: break;
  }
  return "tcp";
}

LinkedPair::LinkedPair(const BusOptions& o, LinkKind kind, std::shared_ptr<NetnsPair> ns, bool beside)
    : kind_(kind), ns_(std::move(ns)) {
  memif_ = kind_ == LinkKind::dpdk && o.dpdk == "memif";
  // main() refuses the other combinations, saying why: af_packet needs the veth pair, and memif's
  // abstract socket would not reach across two network namespaces.
  if (kind_ == LinkKind::dpdk && memif_ == static_cast<bool>(ns_)) {
    throw std::logic_error("LinkedPair: --dpdk memif runs without network namespaces, af_packet in them");
  }
  if (kind_ == LinkKind::rdma && ns_) throw std::logic_error("LinkedPair: an RDMA pair runs without network namespaces");
  busy_ = kind_ == LinkKind::dpdk && o.dpdk_idle == "busy";
  inline_ = kind_ == LinkKind::dpdk && o.dpdk_idle == "inline";
  // Not even an idle DPDK pair is quiet: adaptive poll threads wake every sleep_max_us at most
  // (memif and af_packet have no rx interrupts), busy ones never sleep.
  pauses_ = kind_ == LinkKind::dpdk && beside;
  const std::string pid = std::to_string(::getpid());
  for (int s = 0; s < 2; ++s) {
    if (kind_ == LinkKind::tcp) {
      ip_[s] = host_ip(static_cast<Side>(s));
      port_[s] = ns_ ? kNetnsPort : free_loopback_port();
    } else if (kind_ == LinkKind::rdma) {
      // Both on this host's RDMA interface; only A listens (rdma_cm's port space is its own:
      // a port free for TCP is as good a guess as any).
      ip_[s] = rdma_address(o.rdma_addr);
      port_[s] = s == kSideA ? free_loopback_port() : 0;
    } else {
      // memif carries frames between two processes and no kernel sees them: any addresses do.
      ip_[s] = memif_ ? (s == kSideA ? "10.201.0.1" : "10.201.0.2") : ns_->foreign_address(s);
      port_[s] = kNetnsPort;
      lcore_[s] = s == kSideB && online_cpus() >= 2 ? 1 : 0;
      eal_prefix_[s] = std::string("busbench-").append(pid).append(s == kSideA ? "-a" : "-b");
    }
  }
  try {
    // A first: (tcp) B's first dial then finds it listening, else B redials after
    // backoff_min_ms; (memif) A is the server, whose socket B's port connects to.
    for (int s = 0; s < 2; ++s) {
      TargetOptions t = target_options(o);
      t.transport = "shm";  // between agents and their busd
      t.name = kSideName[s];
      // Beside another pair, busbench's client of this one is silent while the other is
      // measured (a --duration run may take minutes): busd must not take it for a death.
      if (beside) t.heartbeat_misses = 1000;
      t.extra_config = config(static_cast<Side>(s));
      if (ns_) t.in_child = [n = ns_.get(), s] { n->enter(s); };
      busd_[s] = std::make_unique<BusTarget>(t);
    }
    const uint64_t end = clock::mono_ns() + kLinkUpNs;
    while (busd(kSideA).global(Global::links_up) != 1 || busd(kSideB).global(Global::links_up) != 1) {
      if (clock::mono_ns() > end || !busd(kSideA).alive() || !busd(kSideB).alive()) {
        std::string why = "the ";
        why.append(kind_name(kind_)).append(" link between busd B and busd A (").append(where())
            .append(") did not come up within 10 s")
            .append(kind_ == LinkKind::rdma ? " (an RDMA link needs rdma_cm to reach that address through the device, "
                                              "and memory it may lock for its rings: ulimit -l)"
                                            : "")
            .append("\n--- busd B's log:\n").append(busd(kSideB).log())
            .append("--- busd A's log:\n").append(busd(kSideA).log());
        throw std::runtime_error(why);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  } catch (...) {
    busd_[kSideB].reset();
    busd_[kSideA].reset();
    for (const auto& p : eal_prefix_) remove_eal_runtime_dir(p);
    throw;
  }
}

std::string LinkedPair::config(Side s) const {
  const Side other = s == kSideA ? kSideB : kSideA;
  std::string c = "[cluster]\nname = \"busbench\"\nnode = \"";
  c.append(s == kSideA ? "a" : "b").append("\"\n");
  if (kind_ == LinkKind::tcp) c.append("listen = \"").append(endpoint(ip_[s], port_[s])).append("\"\n");
  if (kind_ == LinkKind::rdma && s == kSideA) {
    c.append("rdma_listen = \"").append(endpoint(ip_[s], port_[s])).append("\"\n");
  }
  c.append("heartbeat_ms = 500\ndead_after_ms = ")
      .append(std::to_string(pauses_ ? kDeadAfterPausedMs : kDeadAfterMs))
      .append("\n");
  if (kind_ == LinkKind::tcp) {
    if (s == kSideB) c.append("[[links]]\nkind = \"tcp\"\npeer = \"").append(endpoint(ip_[kSideA], port_[kSideA])).append("\"\n");
    return c;
  }
  if (kind_ == LinkKind::rdma) {
    // B dials from the same interface (local: so that rdma_cm binds B to the device A listens on).
    if (s == kSideB) {
      c.append("[[links]]\nkind = \"rdma\"\npeer = \"").append(endpoint(ip_[kSideA], port_[kSideA]))
          .append("\"\nlocal = \"").append(ip_[kSideB]).append("\"\n");
    }
    return c;
  }
  const std::string port = memif_ ? "net_memif0" : "net_af_packet0";
  std::string vdev = "--vdev=";
  if (memif_) {
    // One abstract socket name for both sides (busbench's pid: unique on this host).
    vdev.append("net_memif0,role=").append(s == kSideA ? "server" : "client").append(",id=0,socket=busbench-")
        .append(std::to_string(::getpid()));
  } else {
    vdev.append("net_af_packet0,iface=").append(ns_->veth(s)).append(",qpairs=1");
  }
  c.append("[dpdk]\neal = [\"-l\", \"").append(std::to_string(lcore_[s]))
      .append("\", \"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"--no-telemetry\", "
              "\"--log-level=lib.eal:warning\", \"--file-prefix=")
      .append(eal_prefix_[s]).append("\", \"").append(vdev).append("\"]\n");
  c.append("[[dpdk.ports]]\nname = \"").append(port).append("\"\nidle = \"")
      .append(busy_ ? "busy" : inline_ ? "inline" : "adaptive")
      .append("\"\nspin_us = ").append(std::to_string(kSpinUs))
      .append("\nsleep_max_us = ").append(std::to_string(inline_ ? kInlineSleepMaxUs : kSleepMaxUs)).append("\n");
  // Two threads that never sleep: one per CPU, each on its side's EAL lcore.
  if (busy_) c.append("cpu = ").append(std::to_string(lcore_[s])).append("\n");
  c.append("[[links]]\nkind = \"dpdk\"\nport = \"").append(port).append("\"\nlocal = \"")
      .append(endpoint(ip_[s], port_[s])).append("\"\npeer = \"").append(endpoint(ip_[other], port_[other]))
      .append("\"\n");
  return c;
}

// The busd go first (they are in the namespaces), then their EAL files, then the namespaces
// (once the last pair lets go of them).
LinkedPair::~LinkedPair() {
  idle(false);  // a stopped busd would not act on SIGTERM
  busd_[kSideB].reset();
  busd_[kSideA].reset();
  for (const auto& p : eal_prefix_) remove_eal_runtime_dir(p);
  ns_.reset();
}

void LinkedPair::enter(Side s) const {
  if (ns_) ns_->enter(s);
}

std::string LinkedPair::host_ip(Side s) const { return ns_ ? ns_->address(s) : "127.0.0.1"; }

TcpPath LinkedPair::tcp_path(Side listener) const {
  TcpPath p;
  p.listen_ip = host_ip(listener);
  if (ns_) {
    p.listen_netns = ns_->fd(listener);
    p.connect_netns = ns_->fd(listener == kSideA ? kSideB : kSideA);
  }
  return p;
}

std::string LinkedPair::where() const {
  if (kind_ == LinkKind::dpdk) {
    auto at = [&](Side s) {
      return std::string(kSideName[s]).append(" at ").append(endpoint(ip_[s], port_[s])).append(" (EAL lcore ")
          .append(std::to_string(lcore_[s])).append(")");
    };
    if (memif_) {
      return std::string("memif between two busd on this host: ").append(at(kSideA)).append(", the memif server; ")
          .append(at(kSideB)).append(", the client");
    }
    return ns_->describe().append(": DPDK net_af_packet on each side's veth, ").append(at(kSideA)).append(" <-> ")
        .append(at(kSideB)).append(", a subnet neither kernel has");
  }
  if (kind_ == LinkKind::rdma) {
    return std::string("one RDMA interface: busd B dials busd A's rdma_listen at ").append(endpoint(ip_[kSideA], port_[kSideA]))
        .append(" from ").append(ip_[kSideB])
        .append(" (rdma_cm picks the device by the address; both ends on one port of it)");
  }
  const std::string dial = std::string("busd B dials busd A at ").append(endpoint(ip_[kSideA], port_[kSideA]));
  if (!ns_) return std::string("loopback: ").append(dial).append(" (B listens at ").append(endpoint(ip_[kSideB], port_[kSideB])).append(")");
  return ns_->describe().append(": ").append(dial).append(" from ").append(ip_[kSideB]);
}

std::string LinkedPair::poll_threads() const {
  if (kind_ != LinkKind::dpdk) return {};
  if (inline_) {
    return std::string("DPDK ports polled inline (no poll thread): each busd polls its port in its own loop, and idle "
                       "sleeps at most ")
        .append(std::to_string(kInlineSleepMaxUs))
        .append(" us (memif and af_packet have no rx interrupts: a frame arriving meanwhile is seen up to that late)")
        .append(pauses_ ? kPaused : "");
  }
  if (!busy_) {
    return std::string("DPDK port poll threads (one per busd): idle adaptive, polling ").append(std::to_string(kSpinUs))
        .append(" us after the last frame, then sleeping 1 us doubling up to ").append(std::to_string(kSleepMaxUs))
        .append(" us (woken early by a send; memif and af_packet have no rx interrupts: a frame arriving meanwhile is "
                "seen up to ")
        .append(std::to_string(kSleepMaxUs)).append(" us late); not pinned").append(pauses_ ? kPaused : "");
  }
  const int cpus = online_cpus();
  return std::string("DPDK port poll threads (one per busd): idle busy, never sleeping, busd A's on CPU ")
      .append(std::to_string(lcore_[kSideA])).append(", busd B's on CPU ").append(std::to_string(lcore_[kSideB]))
      .append(cpus == 2 ? ": they use both cores of this machine" : ": two spinning threads on " + std::to_string(cpus) + " CPUs")
      .append(" (every other process runs between them)").append(pauses_ ? kPaused : "");
}

void LinkedPair::idle(bool on) {
  if (!pauses_ || on == stopped_) return;
  for (const auto& b : busd_) {
    if (b && b->pid() > 0) ::kill(b->pid(), on ? SIGSTOP : SIGCONT);
  }
  stopped_ = on;
}

void LinkedPair::check(const std::string& when) {
  for (Side s : {kSideA, kSideB}) {
    if (!busd(s).alive()) throw std::runtime_error(std::string(kSideName[s]).append(" died ").append(when));
  }
  if (busd(kSideB).global(Global::links_up) != 1) {
    throw std::runtime_error(std::string("the ").append(kind_name(kind_)).append(" link went down ").append(when)
                                 .append("\n--- busd B's log:\n").append(busd(kSideB).log()));
  }
}

}  // namespace bus::bench
