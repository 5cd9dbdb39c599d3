#include "link_pair.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "bus/clock.hpp"
#include "bus/counters.hpp"
#include "bus_kit.hpp"

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

std::string endpoint(const std::string& ip, uint16_t port) { return ip + ":" + std::to_string(port); }

}  // namespace

LinkedPair::LinkedPair(const BusOptions& o) {
  if (o.netns) ns_ = std::make_unique<NetnsPair>();
  for (int s = 0; s < 2; ++s) {
    ip_[s] = ns_ ? ns_->address(s) : "127.0.0.1";
    port_[s] = ns_ ? kNetnsPort : free_loopback_port();
  }
  // A first: B's first dial then finds it listening (else B redials after backoff_min_ms).
  for (int s = 0; s < 2; ++s) {
    TargetOptions t = target_options(o);
    t.transport = "shm";  // between agents and their busd
    t.name = s == kSideA ? "busd A" : "busd B";
    t.extra_config = std::string("[cluster]\nname = \"busbench\"\nnode = \"")
                         .append(s == kSideA ? "a" : "b")
                         .append("\"\nlisten = \"")
                         .append(endpoint(ip_[s], port_[s]))
                         .append("\"\nheartbeat_ms = 500\ndead_after_ms = 2000\n");
    if (s == kSideB) {
      t.extra_config.append("[[links]]\nkind = \"tcp\"\npeer = \"").append(endpoint(ip_[kSideA], port_[kSideA])).append("\"\n");
    }
    if (ns_) t.in_child = [ns = ns_.get(), s] { ns->enter(s); };
    busd_[s] = std::make_unique<BusTarget>(t);
  }
  const uint64_t end = clock::mono_ns() + kLinkUpNs;
  while (busd(kSideA).global(Global::links_up) != 1 || busd(kSideB).global(Global::links_up) != 1) {
    if (clock::mono_ns() > end || !busd(kSideA).alive() || !busd(kSideB).alive()) {
      throw std::runtime_error("the link between busd B and busd A (" + where() + ") did not come up within 10 s" +
                               "\n--- busd B's log:\n" + busd(kSideB).log() + "--- busd A's log:\n" +
                               busd(kSideA).log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// The busd go first (they are in the namespaces), then the namespaces.
LinkedPair::~LinkedPair() {
  busd_[kSideB].reset();
  busd_[kSideA].reset();
  ns_.reset();
}

void LinkedPair::enter(Side s) const {
  if (ns_) ns_->enter(s);
}

TcpPath LinkedPair::tcp_path(Side listener) const {
  TcpPath p;
  p.listen_ip = ip_[listener];
  if (ns_) {
    p.listen_netns = ns_->fd(listener);
    p.connect_netns = ns_->fd(listener == kSideA ? kSideB : kSideA);
  }
  return p;
}

std::string LinkedPair::where() const {
  const std::string dial = "busd B dials busd A at " + endpoint(ip_[kSideA], port_[kSideA]);
  if (!ns_) return "loopback: " + dial + " (B listens at " + endpoint(ip_[kSideB], port_[kSideB]) + ")";
  return ns_->describe() + ": " + dial + " from " + ip_[kSideB];
}

void LinkedPair::check(const std::string& when) {
  for (Side s : {kSideA, kSideB}) {
    if (!busd(s).alive()) throw std::runtime_error(std::string(s == kSideA ? "busd A" : "busd B") + " died " + when);
  }
  if (busd(kSideB).global(Global::links_up) != 1) {
    throw std::runtime_error("the link went down " + when + "\n--- busd B's log:\n" + busd(kSideB).log());
  }
}

}  // namespace bus::bench
