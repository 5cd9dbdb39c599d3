// busd's DPDK links: the EAL (once, at start), one Port per [[dpdk.ports]] table that a link
// uses (each with its poll-mode thread), and one peer per [[links]] table of kind "dpdk". Both
// ends of a DPDK link list each other and both dial: the datagram handshake (dgram/channel.hpp)
// meets in the middle. Everything above the link (Hello, session, interest, routing) is the
// same as over TCP (links.cpp).
#include <sys/random.h>

#include "daemon.hpp"
#include "log.hpp"

#if BUS_HAVE_DPDK
#include "dpdk/dpdk_link.hpp"
#include "dpdk/eal.hpp"
#include "dpdk/port.hpp"
#endif

namespace bus::daemon {

std::string_view Daemon::link_kinds() noexcept {
  if (BUS_HAVE_DPDK && BUS_HAVE_RDMA) return "tcp, dpdk, rdma";
  if (BUS_HAVE_DPDK) return "tcp, dpdk";
  return BUS_HAVE_RDMA ? "tcp, rdma" : "tcp";
}

#if BUS_HAVE_DPDK
namespace {

constexpr uint32_t kMaxFrameSlack = 4096;  // link framing and routing prefix above max_message_size

struct DpdkPorts {
  std::vector<std::unique_ptr<dpdk::Port>> ports;
  DpdkPorts() = default;
  DpdkPorts(const DpdkPorts&) = delete;
  DpdkPorts& operator=(const DpdkPorts&) = delete;
  ~DpdkPorts() {
    ports.clear();  // poll threads stopped, ports closed
    dpdk::unregister_thread();
    dpdk::cleanup_eal();
  }
  dpdk::Port* find(const std::string& name) {
    for (auto& p : ports) {
      if (p->name() == name) return p.get();
    }
    return nullptr;
  }
};

uint32_t random_conn_id() {
  uint32_t v = 0;
  while (v == 0) {
    if (::getrandom(&v, sizeof v, 0) != sizeof v) v = static_cast<uint32_t>(clock::mono_ns() * 0x9E3779B1u);
  }
  return v;
}

dpdk::PortOptions port_options(const config::DpdkPort& c) {
  dpdk::PortOptions o;
  o.name = c.name;
  o.cpu = c.cpu;
  o.idle = c.idle == "busy"     ? dpdk::PortOptions::Idle::Busy
           : c.idle == "inline" ? dpdk::PortOptions::Idle::Inline
                                : dpdk::PortOptions::Idle::Adaptive;
  o.spin_us = c.spin_us;
  o.sleep_max_us = c.sleep_max_us;
  o.mbufs = c.mbufs;
  o.rx_desc = static_cast<uint16_t>(c.rx_desc);
  o.tx_desc = static_cast<uint16_t>(c.tx_desc);
  o.mtu = static_cast<uint16_t>(c.mtu);
  o.mac = c.mac;
  o.impair = dpdk::Impair{c.impair_loss, c.impair_dup, c.impair_reorder, c.impair_corrupt, c.impair_seed};
  return o;
}

}  // namespace

Expected<void> Daemon::start_dpdk_links() {
  const config::Config& cfg = opts_.config;
  bool any = false;
  for (const auto& lc : cfg.links) any |= lc.kind == "dpdk";
  if (!any) return {};
  for (const std::string& path : dpdk::remove_stale_memif_sockets(cfg.dpdk.eal)) {
    log::info("dpdk_memif_stale_socket_removed", {{"path", path}});
  }
  if (auto r = dpdk::init_eal(cfg.dpdk.eal); !r) return tl::unexpected(r.error().context("dpdk"));
  // busd's thread frees and allocates mbufs: as a registered lcore it gets a mempool cache.
  if (auto r = dpdk::register_thread(); !r) log::warn("dpdk_register_thread", {{"why", r.error().message()}});
  const std::vector<dpdk::MemifVdev> memifs = dpdk::memif_vdevs(cfg.dpdk.eal);
  auto state = std::make_shared<DpdkPorts>();
  dpdk_ = state;
  for (const auto& pc : cfg.dpdk.ports) {
    bool used = false;
    for (const auto& lc : cfg.links) used |= lc.kind == "dpdk" && lc.port == pc.name;
    if (!used) continue;
    dpdk::PortOptions po = port_options(pc);
    for (const dpdk::MemifVdev& m : memifs) {
      // A memif client connects at start only: after its server restarts it must start again.
      if (m.name == pc.name && m.role == "client") po.restart_down_ms = 500;
    }
    auto port = dpdk::Port::open(po);
    if (!port) return tl::unexpected(port.error().context("dpdk port '" + pc.name + "'"));
    log::info("dpdk_port", {{"port", (*port)->describe()}, {"idle", pc.idle}, {"cpu", pc.cpu}});
    state->ports.push_back(std::move(*port));
    if (po.idle == dpdk::PortOptions::Idle::Inline) port_poll_ns_ = std::min<uint64_t>(port_poll_ns_, uint64_t{po.sleep_max_us} * 1000);
  }
  if (port_poll_ns_ != UINT64_MAX) {
    poll_ports_ = [ports = state.get()] {
      bool work = false;
      for (auto& p : ports->ports) work |= p->is_inline() && p->poll();
      return work;
    };
  }
  for (size_t i = 0; i < cfg.links.size(); ++i) {
    const auto& lc = cfg.links[i];
    if (lc.kind != "dpdk") continue;
    const std::string where = "links[" + std::to_string(i) + "]";
    dpdk::Port* port = state->find(lc.port);
    if (port == nullptr) return fail(Errc::InvalidArgument, where + ": no [[dpdk.ports]] named '" + lc.port + "'");
    auto local = dpdk::parse_ipv4_endpoint(lc.local);
    if (!local) return tl::unexpected(local.error().context(where + ".local"));
    auto peer = dpdk::parse_ipv4_endpoint(lc.peer);
    if (!peer) return tl::unexpected(peer.error().context(where + ".peer"));
    dpdk::EndpointOptions eo;
    eo.local_ip = local->ip;
    eo.local_port = local->port;
    eo.peer_ip = peer->ip;
    eo.peer_port = peer->port;
    if (!lc.peer_mac.empty()) {
      auto mac = dpdk::parse_mac(lc.peer_mac);
      if (!mac) return tl::unexpected(mac.error().context(where + ".peer_mac"));
      eo.peer_mac = *mac;
    }
    dgram::ChannelOptions co;
    co.max_packet = static_cast<uint32_t>(port->max_payload());
    co.window = lc.window;
    co.max_frame = cfg.limits.max_message_size + kMaxFrameSlack;
    co.rto_min_ns = uint64_t{lc.rto_min_us} * 1000;
    const std::string target = "dpdk " + lc.port + " " + lc.local + " -> " + lc.peer;
    // The dialer keeps the port state alive: a link never outlives its port.
    auto dialer = [state, port, eo, co]() { return dpdk::dial(*port, eo, co, random_conn_id()); };
    add_dialing_peer(lc.peer, std::move(dialer), target, counters::LinkKind::Dpdk);
    log::info("link_configured", {{"peer", lc.peer}, {"kind", "dpdk"}, {"port", lc.port}, {"local", lc.local},
                                  {"peer_mac", lc.peer_mac.empty() ? std::string("arp") : lc.peer_mac}, {"node", node_}});
  }
  return {};
}

#else

Expected<void> Daemon::start_dpdk_links() {
  for (size_t i = 0; i < opts_.config.links.size(); ++i) {
    if (opts_.config.links[i].kind == "dpdk") {
      return fail(Errc::Unsupported, "links[" + std::to_string(i) +
                                         "]: kind = \"dpdk\", but this busd was built without DPDK (install "
                                         "libdpdk-dev, then meson setup --reconfigure and rebuild)");
    }
  }
  return {};
}

#endif

}  // namespace bus::daemon
