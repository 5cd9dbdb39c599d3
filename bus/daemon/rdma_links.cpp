// busd's RDMA links: one peer per [[links]] table of kind "rdma" (this busd dials the peer's
// [cluster] rdma_listen with librdmacm, and the connection becomes an rdma::RdmaLink), and the
// [cluster] rdma_listen listener whose accepted connections go through the greeter (Hello) as
// accepted TCP links do. Everything above the link (Hello, session, interest, routing) is the
// same as over TCP (links.cpp).
//
// At start, before any listener is bound: a busd with an RDMA link or rdma_listen needs an RDMA
// device (rdma::device_problem()) and, where a link names one, that device; otherwise it exits
// with one line naming the link and the reason (on a kernel without InfiniBand support:
// ibv_get_device_list's ENOSYS). `busd --check-config` does not look for a device.
#include <sys/epoll.h>

#include <algorithm>

#include "daemon.hpp"
#include "log.hpp"

#if BUS_HAVE_RDMA
#include "rdma/ibv_verbs.hpp"
#include "rdma/rdma_link.hpp"
#endif

namespace bus::daemon {

namespace {

constexpr uint32_t kMaxFrameSlack = 4096;  // link framing and routing prefix above max_message_size (as links.cpp)

// What names a kind = "rdma" link in an error line.
std::string rdma_link_name(const config::LinkConfig& lc) {
  std::string s = "link to ";
  s += lc.peer;
  s += " (kind = \"rdma\")";
  return s;
}

// What names the first user of RDMA in the config: its first rdma link, else rdma_listen.
std::string first_rdma_user(const config::Config& cfg) {
  for (const auto& lc : cfg.links) {
    if (lc.kind == "rdma") return rdma_link_name(lc);
  }
  std::string s = "cluster.rdma_listen = \"";
  s += cfg.cluster.rdma_listen;
  s += '"';
  return s;
}

bool uses_rdma(const config::Config& cfg) {
  if (!cfg.cluster.rdma_listen.empty()) return true;
  return std::any_of(cfg.links.begin(), cfg.links.end(), [](const auto& lc) { return lc.kind == "rdma"; });
}

}  // namespace

#if BUS_HAVE_RDMA

namespace {

rdma::Options rdma_options(const config::Config& cfg, const config::LinkConfig* lc) {
  rdma::Options o;
  o.max_frame = cfg.limits.max_message_size + kMaxFrameSlack;
  if (lc != nullptr) {
    o.ring_bytes = lc->ring_bytes;
    o.send_depth = lc->send_depth;
    o.recv_depth = lc->recv_depth;
    o.signal_every = lc->signal_every;
    o.inline_bytes = lc->inline_bytes;
    o.batch_wrs = lc->batch_wrs;
    o.ib_port = lc->ib_port;      // checked against what rdma_cm resolves (ibv_verbs.cpp)
    o.gid_index = lc->gid_index;
  } else {
    // The listener's side of accepted links: a power of two like the derived ring of a link.
    uint64_t ring = uint64_t{1} << 20;
    while (ring < 4 * (uint64_t{o.max_frame} + 4)) ring <<= 1;
    o.ring_bytes = static_cast<uint32_t>(std::min<uint64_t>(ring, uint64_t{1} << 30));
  }
  return o;
}

// The listener and the options of the links it accepts (type-erased in Daemon::rdma_).
struct RdmaState {
  rdma::IbvListener listener;
  rdma::Options accept_options;
  std::string address;
};

}  // namespace

Expected<void> Daemon::check_rdma_links() {
  const config::Config& cfg = opts_.config;
  if (!uses_rdma(cfg)) return {};
  if (std::string why = rdma::device_problem(); !why.empty()) {
    return fail(Errc::Unsupported, first_rdma_user(cfg) + ": " + why);
  }
  const std::vector<std::string> names = rdma::device_names();
  for (const auto& lc : cfg.links) {
    if (lc.kind != "rdma") continue;
    if (auto ok = rdma::check(rdma_options(cfg, &lc)); !ok) {
      return fail(Errc::InvalidArgument, rdma_link_name(lc) + ": " + ok.error().detail());
    }
    if (lc.device.empty() || std::find(names.begin(), names.end(), lc.device) != names.end()) continue;
    std::string listed;
    for (const std::string& n : names) {
      if (!listed.empty()) listed += ", ";
      listed += n;
    }
    return fail(Errc::NotFound, rdma_link_name(lc) + ": device = \"" + lc.device +
                                    "\" is not an RDMA device of this host (ibv_devices lists: " + listed + ")");
  }
  return {};
}

Expected<void> Daemon::start_rdma_links() {
  const config::Config& cfg = opts_.config;
  if (!uses_rdma(cfg)) return {};
  for (const auto& lc : cfg.links) {
    if (lc.kind != "rdma") continue;
    auto ep = tcp::parse_endpoint(lc.peer);
    if (!ep) return tl::unexpected(ep.error().context(rdma_link_name(lc)));
    const rdma::Options o = rdma_options(cfg, &lc);
    const std::string host = ep->host;
    const uint16_t port = ep->port;
    const std::string bind = lc.local;
    const std::string peer = lc.peer;
    auto dialer = [host, port, bind, peer, o]() -> Expected<std::unique_ptr<link::Link>> {
      auto c = rdma::IbvConnection::dial(host, port, o, bind);
      if (!c) return tl::unexpected(c.error());
      return std::unique_ptr<link::Link>(std::make_unique<rdma::RdmaLink>(std::move(*c), o, peer));
    };
    add_dialing_peer(lc.peer, std::move(dialer), "rdma " + lc.peer, counters::LinkKind::Rdma);
    log::info("link_configured", {{"peer", lc.peer}, {"kind", "rdma"}, {"local", lc.local.empty() ? std::string("any") : lc.local},
                                  {"device", lc.device.empty() ? std::string("any") : lc.device}, {"node", node_}});
  }
  if (cfg.cluster.rdma_listen.empty()) return {};
  auto ep = tcp::parse_endpoint(cfg.cluster.rdma_listen);
  if (!ep) return tl::unexpected(ep.error().context("cluster.rdma_listen"));
  auto state = std::make_shared<RdmaState>();
  state->accept_options = rdma_options(cfg, nullptr);
  auto l = rdma::IbvListener::listen(ep->host, ep->port, state->accept_options);
  if (!l) return tl::unexpected(l.error().context("cluster.rdma_listen = \"" + cfg.cluster.rdma_listen + "\""));
  state->listener = std::move(*l);
  state->address = ep->host + ":" + std::to_string(state->listener.port());
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag(Source::LinkListener);  // accept_links() calls accept_rdma_links()
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, state->listener.fd(), &ev);
  log::info("links_listening", {{"address", state->address}, {"kind", "rdma"}, {"node", node_},
                                {"cluster", cfg.cluster.name}});
  rdma_ = std::move(state);
  return {};
}

void Daemon::accept_rdma_links() {
  if (!rdma_) return;
  auto* state = static_cast<RdmaState*>(rdma_.get());
  for (;;) {
    auto c = state->listener.accept();
    if (!c) {
      if (c.error() == Errc::WouldBlock) return;
      counters_.add(counters::Global::link_refused);
      log::warn("link_refused", {{"from", "rdma " + state->address}, {"why", c.error().message()}});
      continue;  // that request was rejected; the listener goes on
    }
    // The same limits as a TCP link's connection (per address, pending): a peer dialing in
    // from the RDMA network counts with its TCP connections.
    const std::string from = (*c)->peer_name();
    if (std::string why = remote_limit(from); !why.empty()) {
      counters_.add(counters::Global::link_refused);
      continue;  // the connection closes with *c
    }
    const uint32_t id = next_greeter_++;
    Greeter g;
    g.from = from;
    g.kind = counters::LinkKind::Rdma;
    g.link = std::make_unique<rdma::RdmaLink>(std::move(*c), state->accept_options, g.from);
    admit_greeter(id, std::move(g));
  }
}

#else

Expected<void> Daemon::check_rdma_links() {
  if (!uses_rdma(opts_.config)) return {};
  return fail(Errc::Unsupported, first_rdma_user(opts_.config) +
                                     ": this busd was built without RDMA (install libibverbs-dev and "
                                     "librdmacm-dev, then meson setup --reconfigure and rebuild)");
}

Expected<void> Daemon::start_rdma_links() { return {}; }

void Daemon::accept_rdma_links() {}

#endif

}  // namespace bus::daemon
