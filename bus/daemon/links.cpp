// busd's link manager: peer busds over TCP (transports/tcp), each a links::Peer running the
// handshake, the session (sequence numbers, acks, resume) and heartbeats. This file is the part
// that knows subjects: what crosses a link and what arrives from one.
//
//   interest   a peer sends only what somebody on the other side subscribes to: each busd tells
//              its peers every (pattern, queue group) its agents subscribe to, as it appears and
//              goes, and a snapshot to a peer it has not talked to in this incarnation. A peer's
//              interests sit in the trie as subscriber kPeerBase + index, so one match and one
//              queue group choice covers local and remote members.
//   one hop    a message from a link goes to local agents only, never on to another link: in a
//              full mesh every busd hears every other directly, and nothing can loop.
//   replies    with links, inboxes are "_INBOX.<node>.<id>": a reply to another node's inbox goes
//              straight to that peer. A request waits at its requester's busd, which answers it
//              with an error at its deadline, or at once when the link it went over goes down.
//   presence   each busd tells its peers its agents' joins and leaves; they are published here
//              as "name@node".
//   security   [tls] listen_links and [[links]] tls: the link's TCP stream is TLS (tcp_link.hpp);
//              a peer's certificate identity (CN, else SAN) or the identity of the [[tokens]]
//              secret it presented is the link's identity. With one, the [[acl]] rules whose
//              identity glob matches it decide what crosses: an interest the grants' subscribe
//              patterns do not reach is refused (one broader than them is narrowed: each message
//              sent is checked), and a message from the peer outside their publish patterns is
//              dropped; both logged and counted (drops_acl). Without one, everything crosses.
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "bus/clock.hpp"
#include "daemon.hpp"
#include "log.hpp"
#include "router/subjects.hpp"

namespace bus::daemon {
namespace {

constexpr uint64_t kMs = 1'000'000;
// A busd that just started ends its interest snapshot to a peer (Synced) only
// cluster.resubscribe_grace_ms after its start: its agents are reconnecting and resubscribing
// meanwhile, and until then the peer keeps routing to what its previous incarnation wanted
// (README "Interest").
constexpr uint32_t kMaxFrameSlack = 4096;  // link framing and routing prefix above max_message_size

std::string host_node_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "busd";
  std::string n(buf);
  for (char& c : n) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) c = '-';
  }
  return n;
}

uint64_t random_session_id() {
  uint64_t v = 0;
  while (v == 0) {
    if (::getrandom(&v, sizeof v, 0) != sizeof v) v = clock::real_ns() ^ (uint64_t(::getpid()) << 32);
  }
  return v;
}


// Whether some subject matches both patterns (token by token: '*' any one, '>' one or more).
bool patterns_overlap(std::string_view a, std::string_view b) noexcept {
  auto next = [](std::string_view& s) {
    const size_t dot = s.find('.');
    std::string_view t = s.substr(0, dot);
    s = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
    return t;
  };
  bool more_a = !a.empty(), more_b = !b.empty();
  while (more_a && more_b) {
    const bool last_a = a.find('.') == std::string_view::npos, last_b = b.find('.') == std::string_view::npos;
    const std::string_view ta = next(a), tb = next(b);
    if (ta == ">" || tb == ">") return true;
    if (ta != "*" && tb != "*" && ta != tb) return false;
    more_a = !last_a;
    more_b = !last_b;
  }
  if (!more_a && !more_b) return true;
  // One ran out: the other must end in a '>' that takes... nothing: '>' needs a token.
  return false;
}

std::string interest_key(std::string_view pattern, std::string_view group) {
  std::string k(pattern);
  k.push_back('\n');
  return k.append(group);
}

control::PresenceEvent presence_event(uint8_t op) {
  switch (static_cast<links::PresenceOp>(op)) {
    case links::PresenceOp::Joined: return control::PresenceEvent::Joined;
    case links::PresenceOp::Left: return control::PresenceEvent::Left;
    default: return control::PresenceEvent::Died;
  }
}

}  // namespace

Expected<void> Daemon::start_links() {
  links_started_ns_ = clock::mono_ns();
  if (auto r = check_rdma_links(); !r) return r;  // no device: one line, before any listener
  if (auto t = start_tls(); !t) return t;
  const auto& c = opts_.config.cluster;
  node_ = c.node.empty() ? host_node_name() : c.node;
  if (!link::valid_name(node_)) node_ = "busd";
  if (!c.listen.empty()) {
    auto address = listen_tcp(c.listen, "cluster.listen", Source::LinkListener, link_listener_);
    if (!address) return tl::unexpected(address.error());
    log::info("links_listening", {{"address", *address},
                                  {"node", node_}, {"cluster", c.name}});
  }
  for (const auto& lc : opts_.config.links) {
    if (lc.kind != "tcp") continue;  // dpdk: start_dpdk_links(); rdma: start_rdma_links()
    auto ep = tcp::parse_endpoint(lc.peer);
    if (!ep) return tl::unexpected(ep.error().context("links: peer '" + lc.peer + "'"));
    PeerSlot& slot = add_peer(lc.peer, &*ep);
    if (lc.tls || !lc.token.empty() || !lc.token_file.empty()) {
      tcp::LinkSecurity sec;
      sec.tls = lc.tls ? &tls_client_ : nullptr;
      sec.server_name = lc.server_name.empty() ? ep->host : lc.server_name;
      sec.token = lc.token;
      if (!lc.token_file.empty()) {
        auto t = read_token_file(lc.token_file);
        if (!t) return tl::unexpected(t.error().context("links: peer '" + lc.peer + "'"));
        sec.token = std::move(*t);
      }
      slot.peer->set_security(std::move(sec));
    }
    log::info("link_configured", {{"peer", lc.peer}, {"kind", lc.kind}, {"node", node_}});
  }
  if (auto d = start_dpdk_links(); !d) return d;
  return start_rdma_links();
}

PeerSlot& Daemon::add_dialing_peer(std::string label, decltype(links::PeerOptions::dialer) dialer, std::string target,
                                   counters::LinkKind kind) {
  PeerSlot& p = add_peer(std::move(label), nullptr, kind);
  p.dials = true;
  p.peer->set_dialer(std::move(dialer), std::move(target));
  return p;
}

PeerSlot& Daemon::add_peer(std::string label, const tcp::Endpoint* address, counters::LinkKind kind, std::string_view where) {
  const auto& c = opts_.config.cluster;
  auto p = std::make_unique<PeerSlot>();
  p->index = static_cast<uint32_t>(peers_.size());
  p->label = std::move(label);
  p->stats = counters_.link_open(kind, "", where.empty() ? std::string_view(p->label) : where);
  p->dials = address != nullptr;
  links::PeerOptions o;
  o.cluster = c.name;
  o.node = node_;
  if (address != nullptr) o.address = *address;
  o.dial = address != nullptr;
  o.heartbeat_ms = c.heartbeat_ms;
  o.dead_after_ms = c.dead_after_ms;
  o.handshake_ms = c.handshake_ms;
  o.backoff_min_ms = c.backoff_min_ms;
  o.backoff_max_ms = c.backoff_max_ms;
  o.hold_bytes = c.hold_bytes;
  o.max_frame = opts_.config.limits.max_message_size + kMaxFrameSlack;
  p->peer = std::make_unique<links::Peer>(std::move(o), random_session_id(), random_session_id());
  peers_.push_back(std::move(p));
  return *peers_.back();
}

void Daemon::stop_links() {
  const uint64_t now = clock::mono_ns();
  for (auto& p : peers_) {
    p->peer->tick(now);  // what is ready goes out
    if (p->peer->state() != links::PeerState::Waiting) p->peer->disconnect("busd stopping", now);
  }
  greeters_.clear();
}

PeerSlot* Daemon::peer_by_node(std::string_view node) noexcept {
  for (auto& p : peers_) {
    if (p->node == node) return p.get();
  }
  return nullptr;
}

uint64_t Daemon::link_timeout_ns(uint64_t now) const noexcept {
  if (!tcp_handshakes_.empty()) return 20 * kMs;  // remote agents' TLS handshake deadlines
  if (peers_.empty() && greeters_.empty()) return UINT64_MAX;
  uint64_t t = std::min(20 * kMs, port_poll_ns_);  // dials, heartbeats, deadlines; inline ports' rx
  for (const auto& p : peers_) {
    // A datagram link's retransmission and ack timers.
    const uint64_t due = p->peer->timer_ns();
    if (due != UINT64_MAX) t = std::min(t, due > now ? due - now : 0);
  }
  return t;
}

void Daemon::sync_link_counters() {
  if (peers_.empty()) return;
  link::LinkCounters t;
  for (const auto& p : peers_) {
    const link::LinkCounters one = p->peer->link_totals();
    t.add(one);
    if (counters::LinkCounters* s = p->stats) {
      s->retransmits.store(one.retransmits, std::memory_order_relaxed);
      s->naks.store(one.naks, std::memory_order_relaxed);
      s->datagrams_corrupt.store(one.datagrams_corrupt, std::memory_order_relaxed);
      s->datagrams_dropped.store(one.datagrams_dropped, std::memory_order_relaxed);
      s->doorbells.store(one.doorbells, std::memory_order_relaxed);
      s->credit_stalls.store(one.credit_stalls, std::memory_order_relaxed);
      s->queue_stalls.store(one.queue_stalls, std::memory_order_relaxed);
      s->completion_errors.store(one.completion_errors, std::memory_order_relaxed);
      s->rtt_ns.store(p->peer->rtt_ns(), std::memory_order_relaxed);
      s->drops_acl.store(p->acl_refused, std::memory_order_relaxed);
      const size_t held = p->peer->session().held_bytes();
      s->held_bytes.store(held, std::memory_order_relaxed);
      counters::note_high_water(s->held_high_water, held);
      s->interests.store(p->interest.size() + p->stale_interest.size(), std::memory_order_relaxed);
      s->remote_agents.store(p->agents.size(), std::memory_order_relaxed);
    }
  }
  counters_.set(counters::Global::link_retransmits, t.retransmits);
  counters_.set(counters::Global::link_naks, t.naks);
  counters_.set(counters::Global::link_datagrams_corrupt, t.datagrams_corrupt);
  counters_.set(counters::Global::link_datagrams_dropped, t.datagrams_dropped);
}

// Greeters' links too: a link may hold input its descriptor does not announce (TLS records
// OpenSSL decrypted already, completions an RDMA link reaped before it armed), and poll_links()
// looks at those as at a peer's.
bool Daemon::arm_links() noexcept {
  bool ready = false;
  for (auto& p : peers_) ready |= !p->peer->arm();
  for (auto& [id, g] : greeters_) ready |= !g.link->arm();
  return !ready;
}

void Daemon::disarm_links() noexcept {
  for (auto& p : peers_) p->peer->disarm();
  for (auto& [id, g] : greeters_) g.link->disarm();
}

// ---------------------------------------------------------------- connections

void Daemon::accept_links() {
  accept_rdma_links();  // [cluster] rdma_listen shares this source
  if (link_listener_.fd() < 0) return;
  for (;;) {
    std::string from;
    auto fd = link_listener_.accept(&from);
    if (!fd) {
      if (fd.error() == Errc::LimitReached && shed_connection(link_listener_.fd(), EMFILE)) continue;
      if (fd.error() != Errc::WouldBlock) log::warn("link_accept_failed", {{"error", errc_name(fd.error())}});
      return;
    }
    if (std::string why = remote_limit(from); !why.empty()) {
      counters_.add(counters::Global::link_refused);
      ::close(*fd);
      continue;
    }
    const uint32_t id = next_greeter_++;
    Greeter g;
    g.link = tcp::TcpLink::adopt(*fd, opts_.config.limits.max_message_size + kMaxFrameSlack, from,
                                 opts_.config.tls.listen_links && tls_server_.valid() ? &tls_server_ : nullptr);
    g.from = from;
    admit_greeter(id, std::move(g));
  }
}

void Daemon::admit_greeter(uint32_t id, Greeter g) {
  if (g.link->state() == link::LinkState::Down) {
    counters_.add(counters::Global::link_refused);
    log::warn("link_refused", {{"from", g.from}, {"why", g.link->error()}});
    return;
  }
  g.deadline_ns = clock::mono_ns() + uint64_t{opts_.config.cluster.handshake_ms} * kMs;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag(Source::Greeter, id);
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, g.link->wait_fd(), &ev);
  greeters_.emplace(id, std::move(g));
}

void Daemon::on_greeter(uint32_t id) {
  auto it = greeters_.find(id);
  if (it == greeters_.end()) return;
  Greeter& g = it->second;
  auto refuse = [&](const std::string& why) {
    counters_.add(counters::Global::link_refused);
    log::warn("link_refused", {{"from", g.from}, {"why", why}});
    g.link->close(why);  // closing the descriptor takes it out of epoll
    greeters_.erase(it);
  };
  if (g.link->state() == link::LinkState::Connecting) {  // the TLS handshake
    g.link->finish_connect();
    if (g.link->state() == link::LinkState::Down) return refuse(g.link->error());
    if (g.link->state() == link::LinkState::Connecting) {
      epoll_event ev{};
      ev.events = EPOLLIN | (g.link->wants_write() ? EPOLLOUT : 0u);
      ev.data.u64 = tag(Source::Greeter, id);
      ::epoll_ctl(epoll_, EPOLL_CTL_MOD, g.link->wait_fd(), &ev);
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag(Source::Greeter, id);
    ::epoll_ctl(epoll_, EPOLL_CTL_MOD, g.link->wait_fd(), &ev);
    if (g.kind == counters::LinkKind::Tcp) {  // (an RDMA link connects without TLS)
      const auto* t = static_cast<const tcp::TcpLink*>(g.link.get());
      g.identity = t->peer_identity();
      log::info("tls_link_accepted", {{"from", g.from}, {"identity", g.identity.empty() ? std::string("(none)") : g.identity}});
    }
  }
  std::vector<link::Frame> frames;
  auto got = g.link->receive(frames, 64);
  if (!got) return refuse(g.link->error());
  if (frames.empty()) return;  // its descriptor, or has_input() (poll_links), says when more came
  if (frames.front().type != link::FrameType::Hello) return refuse("the first frame is not a Hello");
  auto hello = link::parse_hello(frames.front());
  if (!hello) return refuse(hello.error().message());
  link::Hello local;
  local.cluster = opts_.config.cluster.name;
  local.node = node_;
  if (auto v = link::negotiate(local, *hello); !v) return refuse(v.error().message());
  if (hello->node == node_) return refuse("the peer has this busd's own node name '" + node_ + "'");
  {
    // Its token (the first frame, taken off by the link), checked once its Hello came.
    static const std::string kNone;
    const std::string& token =
        g.kind == counters::LinkKind::Tcp ? static_cast<const tcp::TcpLink*>(g.link.get())->presented_token() : kNone;
    if (!token.empty()) {
      const std::string* who = token_identity(token);
      if (who == nullptr) return refuse("token refused: it matches no [[tokens]] entry of this busd");
      if (g.identity.empty()) g.identity = *who;
    } else if (!tokens_.empty() && g.identity.empty()) {
      return refuse("this busd requires a token or a client certificate from peers ([[links]] token)");
    }
  }
  PeerSlot* p = peer_by_node(hello->node);
  if (p != nullptr && p->dials) {
    return refuse("'" + hello->node + "' dials this busd, and this busd dials it too ([[links]] " + p->label +
                  "): list each pair of busd on one side only");
  }
  if (p == nullptr) {
    // A slot per node name that ever dialed in (its index names it in the router): bounded.
    if (peers_.size() >= opts_.config.cluster.max_peers) {
      counters_.add(counters::Global::limit_hits);
      return refuse("cluster.max_peers (" + std::to_string(opts_.config.cluster.max_peers) +
                    ") peer busds known already; '" + hello->node + "' is not one of them");
    }
    p = &add_peer(hello->node + " (dialed in)", nullptr, g.kind, g.from);
    p->node = hello->node;
    counters_.link_rename(p->stats, p->node);
  }
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, g.link->wait_fd(), nullptr);
  const uint64_t now = clock::mono_ns();
  p->identity = g.identity;
  p->peer->adopt_greeted(std::move(g.link), *hello, std::span<const link::Frame>(frames).subspan(1), now);
  greeters_.erase(it);
  p->readable = true;  // more may have come in the same read
  watch_peer(*p);
}

void Daemon::watch_peer(PeerSlot& p) {
  const int fd = p.peer->wait_fd();
  if (fd < 0) {
    p.fd = -1;  // closing it took it out of epoll
    return;
  }
  const uint32_t events = EPOLLIN | (p.peer->wants_write() ? EPOLLOUT : 0u);
  if (fd == p.fd && events == p.events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = tag(Source::Link, p.index);
  // The same number may be a new socket (the old one closed, and with it its registration).
  if (fd != p.fd || ::epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &ev) != 0) ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
  p.fd = fd;
  p.events = events;
}

void Daemon::flush_links(uint64_t now) {
  if (!tcp_handshakes_.empty()) expire_tcp_handshakes(now);
  for (auto it = greeters_.begin(); it != greeters_.end();) {
    if (now >= it->second.deadline_ns) {
      counters_.add(counters::Global::link_refused);
      const bool in_tls = it->second.link->state() == link::LinkState::Connecting;
      log::warn("link_refused", {{"from", it->second.from},
                                 {"why", std::string(in_tls ? "TLS handshake not finished" : "no Hello") + " within " +
                                             std::to_string(opts_.config.cluster.handshake_ms) + " ms"}});
      it = greeters_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& up : peers_) {
    up->peer->tick(now);
    observe(*up, now);
  }
}

void Daemon::observe(PeerSlot& p, uint64_t now) {
  const links::PeerState st = p.peer->state();
  if (st == links::PeerState::Up && p.last_state != links::PeerState::Up) on_peer_up(p);
  if (st != links::PeerState::Up && p.last_state == links::PeerState::Up) on_peer_down(p);
  if (st == links::PeerState::Waiting && p.peer->last_error() != p.last_logged && p.dials) {
    p.last_logged = p.peer->last_error();
    log::warn("link_dial_failed", {{"peer", p.label}, {"why", p.last_logged}});
  }
  // A new incarnation of the peer (its first Resume, or it restarted): what it knew of this
  // busd is gone, and what this busd held of it is stale.
  if (p.peer->state() == links::PeerState::Up && p.peer->session().resumed() &&
      p.peer->session().peer_session() != p.known_session) {
    // Its plain interests stay routed until its snapshot is in (Synced): what is published
    // meanwhile still goes to it, after the messages held for it from before (it routes them by
    // its own subscriptions), so a subscriber already back on it misses nothing in between.
    // Queue groups go at once: a route id names an interest of the incarnation that made it.
    // (An incarnation that ends before its Synced leaves its own stale list behind too:
    // everything older than the newest incarnation waits for that one's Synced.)
    for (auto it = p.interest.begin(); it != p.interest.end(); it = p.interest.erase(it)) {
      if (it->second.group == 0) {
        p.stale_interest.push_back(PeerSlot::StaleInterest{it->first, std::move(it->second.pattern)});
        continue;
      }
      trie_.erase(it->second.pattern, router::SubRef{kPeerBase + p.index, it->first, it->second.group});
      groups_.release_group(it->second.group);
      routes_changed(it->second.pattern);
    }
    for (const auto& [id, ra] : p.agents) publish_presence(ra.name, id, ra.capabilities, control::PresenceEvent::Left);
    p.agents.clear();
    p.known_session = p.peer->session().peer_session();
    for (const auto& [key, li] : interest_) {
      const size_t nl = key.find('\n');
      link_body_.clear();
      links::append_interest_add(link_body_, li.id, std::string_view(key).substr(0, nl), std::string_view(key).substr(nl + 1));
      send_control_body(p, link_body_);
    }
    // It ends with Synced, held back while this busd's own agents may still be coming back.
    p.synced_due_ns = std::max(now, links_started_ns_ + uint64_t{opts_.config.cluster.resubscribe_grace_ms} * kMs);
    for (const Agent* a : active_) {
      if (a->phase != Agent::Phase::Active) continue;
      link_body_.clear();
      links::append_presence(link_body_, links::PresenceOp::Joined, a->id, a->name, a->capabilities);
      send_control_body(p, link_body_);
    }
    p.peer->tick(now);
  }
  if (p.synced_due_ns != 0 && now >= p.synced_due_ns) {
    p.synced_due_ns = 0;
    link_body_.clear();
    links::append_interest_synced(link_body_);
    send_control_body(p, link_body_);
  }
  p.last_state = p.peer->state();
  watch_peer(p);
}

void Daemon::on_peer_up(PeerSlot& p) {
  const std::string& node = p.peer->remote().node;
  if (node == node_) {
    log::error("link_refused", {{"peer", p.label}, {"why", "the peer has this busd's own node name '" + node_ + "'"}});
    p.peer->disconnect("the peer has this busd's own node name", clock::mono_ns());
    return;
  }
  if (PeerSlot* q = peer_by_node(node); q != nullptr && q != &p) {
    if (q->up()) {
      log::error("link_refused", {{"peer", p.label}, {"node", node},
                                  {"why", "already linked to '" + node + "' (" + q->label +
                                              "): list each pair of busd on one side only"}});
      p.peer->disconnect("duplicate link", clock::mono_ns());
      return;
    }
    // An older slot for the same node (it dialed in before, this one dials out now): its state
    // is stale, this slot carries the node from here on.
    forget_peer_state(*q);
    q->node.clear();
    counters_.link_rename(q->stats, "");
  }
  if (p.node != node) counters_.link_rename(p.stats, node);
  p.node = node;
  p.last_logged.clear();
  if (p.dials) {
    const auto* t = dynamic_cast<const tcp::TcpLink*>(p.peer->current_link());
    p.identity = t != nullptr ? t->peer_identity() : std::string();
  }
  p.grants = grants_for_link(opts_.config, p.identity);
  // Interests kept from before a reconnect are held to the grants of this connection's identity.
  p.narrowed = false;
  std::vector<uint32_t> refused;
  for (const auto& [id, in] : p.interest) {
    if (p.grants.all || p.grants.may_subscribe(in.pattern)) continue;
    bool overlaps = false;
    for (const auto& g : p.grants.subscribe) overlaps |= patterns_overlap(g, in.pattern);
    if (overlaps) {
      p.narrowed = true;
    } else {
      refused.push_back(id);
    }
  }
  for (uint32_t id : refused) {
    auto it = p.interest.find(id);
    trie_.erase(it->second.pattern, router::SubRef{kPeerBase + p.index, id, it->second.group});
    if (it->second.group != 0) groups_.release_group(it->second.group);
    routes_changed(it->second.pattern);
    log::warn("link_interest_refused", {{"peer", p.label}, {"node", node}, {"identity", p.identity},
                                        {"pattern", it->second.pattern},
                                        {"why", "the link's identity may not subscribe to it ([[acl]])"}});
    counters_.add(counters::Global::drops_acl);
    ++p.acl_refused;
    p.interest.erase(it);
  }
  counters_.add(counters::Global::link_connects);
  counters_.add(counters::Global::links_up);
  if (p.stats) {
    counters::bump(p.stats->connects);
    p.stats->up.store(1, std::memory_order_relaxed);
  }
  log::info("link_up", {{"peer", p.label}, {"node", node}, {"dials", p.dials ? "yes" : "no"},
                        {"identity", p.identity.empty() ? std::string("(none)") : p.identity},
                        {"acl", p.grants.all ? "everything" : "its identity's [[acl]] grants"}});
}

void Daemon::on_peer_down(PeerSlot& p) {
  counters_.add(counters::Global::link_disconnects);
  counters_.set(counters::Global::links_up, counters_.get(counters::Global::links_up) - 1);
  if (p.stats) {
    counters::bump(p.stats->disconnects);
    p.stats->up.store(0, std::memory_order_relaxed);
  }
  log::warn("link_down", {{"peer", p.label}, {"node", p.node}, {"why", p.peer->last_error()},
                          {"held", p.peer->session().held_frames()}});
  // Requests that went over it would wait for their deadline: answer them now.
  forget_requests_of(kPeerBase + p.index, Errc::Closed,
                     "the link to '" + p.node + "' went down before the reply (" + p.peer->last_error() + ")");
}

void Daemon::forget_peer_state(PeerSlot& p) {
  for (const auto& [id, in] : p.interest) {
    trie_.erase(in.pattern, router::SubRef{kPeerBase + p.index, id, in.group});
    if (in.group != 0) groups_.release_group(in.group);
    routes_changed(in.pattern);
  }
  p.interest.clear();
  drop_stale_interests(p);
  for (const auto& [id, ra] : p.agents) publish_presence(ra.name, id, ra.capabilities, control::PresenceEvent::Left);
  p.agents.clear();
}

// ---------------------------------------------------------------- sending

void Daemon::send_control_body(PeerSlot& p, std::span<const std::byte> body) {
  if (auto r = p.peer->send(body); !r) {
    counters_.add(counters::Global::link_drops_held_full);
    if (p.stats) counters::bump(p.stats->drops_held_full);
    log::warn("link_control_dropped", {{"peer", p.label}, {"why", errc_name(r.error())}});
  }
}

void Daemon::to_known_peers(std::span<const std::byte> body) {
  // A peer not met yet gets everything in the snapshot when it is (observe()).
  for (auto& p : peers_) {
    if (p->known_session != 0) send_control_body(*p, body);
  }
}

void Daemon::interest_up(std::string_view pattern, uint32_t group) {
  if (!clustered()) return;
  auto [it, fresh] = interest_.try_emplace(interest_key(pattern, groups_.group_name(group)));
  if (++it->second.count > 1) return;
  it->second.id = next_interest_id_++;
  interest_group_[it->second.id] = group;
  link_body_.clear();
  links::append_interest_add(link_body_, it->second.id, pattern, groups_.group_name(group));
  to_known_peers(link_body_);
}

void Daemon::interest_down(std::string_view pattern, uint32_t group) {
  if (!clustered()) return;
  auto it = interest_.find(interest_key(pattern, groups_.group_name(group)));
  if (it == interest_.end() || --it->second.count > 0) return;
  const uint32_t id = it->second.id;
  interest_.erase(it);
  interest_group_.erase(id);
  // A stopping busd leaves its plain interests with its peers, as a crash does: they hold what
  // comes for them across the restart (up to hold_bytes) and hand it to the next incarnation,
  // whose snapshot then replaces them. Withdrawn here, what is published between this and that
  // snapshot would be lost behind messages held from before, for subscribers already back.
  // Queue groups are withdrawn: the peer's own members (or another peer's) serve meanwhile.
  if (stopping_ && group == 0) return;
  link_body_.clear();
  links::append_interest_remove(link_body_, id);
  to_known_peers(link_body_);
}

void Daemon::presence_to_peers(const Agent& a, links::PresenceOp op) {
  if (peers_.empty()) return;
  link_body_.clear();
  links::append_presence(link_body_, op, a.id, a.name, a.capabilities);
  to_known_peers(link_body_);
}

void Daemon::send_to_peers(const EnvelopeView& v, std::span<const std::byte> bytes, const Agent* src) {
  touched_.clear();
  size_t keep = 0;
  for (const router::SubRef& d : deliveries_) {
    if (d.agent < kPeerBase) {
      deliveries_[keep++] = d;
      continue;
    }
    PeerSlot* p = peers_[d.agent - kPeerBase].get();
    if (p->narrowed && !p->grants.may_subscribe(v.subject())) [[unlikely]] {
      if (p->acl_refused++ == 0) {
        log::warn("link_message_refused", {{"peer", p->label}, {"node", p->node}, {"identity", p->identity},
                                           {"subject", v.subject()}, {"why", "outside the link's [[acl]] subscribe grants (logged once per link)"}});
      }
      counters_.add(counters::Global::drops_acl);
      continue;
    }
    if (!p->touched) {
      p->touched = true;
      p->route_ids.clear();
      touched_.push_back(p);
    }
    if (d.group != 0 && p->route_ids.size() < links::kMaxRouteIds) p->route_ids.push_back(d.sid);
  }
  deliveries_.resize(keep);
  for (PeerSlot* p : touched_) {
    p->touched = false;
    send_message(*p, p->route_ids, v, bytes, src);
  }
}

bool Daemon::peers_have_room(size_t size) const noexcept {
  for (const router::SubRef& d : deliveries_) {
    if (d.agent < kPeerBase) continue;
    const PeerSlot& p = *peers_[d.agent - kPeerBase];
    if (p.up() && !p.peer->can_send(links::kMaxMessagePrefix + size)) return false;
  }
  return true;
}

bool Daemon::send_message(PeerSlot& p, std::span<const uint32_t> ids, const EnvelopeView& v,
                          std::span<const std::byte> bytes, const Agent* src) {
  // Leaving the host: the timestamp goes to CLOCK_REALTIME and the deadline budget to what is
  // left now (clock::wire_egress), in a copy of the Header that replaces the original in the
  // gathered frame body. Nothing else of the envelope is copied before the session's own copy.
  std::byte prefix[links::kMaxMessagePrefix];
  const size_t plen = links::message_prefix(ids, prefix);
  const auto* hp = reinterpret_cast<const std::byte*>(&v.header());
  const size_t at = static_cast<size_t>(hp - bytes.data());
  wire::Header h = v.header();
  const uint64_t now = clock::mono_ns();
  if (src != nullptr && src->timed_in_ns != 0) [[unlikely]] set_hop_timing(h, hops_of(*src, h.timestamp_ns(), now));
  const clock::Stamp out = clock::wire_egress(v.stamp(), now, clock::real_ns());
  h.mutate_timestamp_ns(out.timestamp_ns);
  h.mutate_deadline_budget_ns(out.has_deadline ? out.budget_ns : 0);
  const std::span<const std::byte> parts[4] = {
      {prefix, plen}, bytes.first(at), {reinterpret_cast<const std::byte*>(&h), sizeof h}, bytes.subspan(at + sizeof h)};
  if (auto r = p.peer->send(parts); !r) {
    counters_.add(r.error() == Errc::WouldBlock ? counters::Global::link_drops_held_full : counters::Global::drops_too_large);
    if (p.stats && r.error() == Errc::WouldBlock) counters::bump(p.stats->drops_held_full);
    return false;
  }
  counters_.add(counters::Global::link_messages_out);
  counters_.add(counters::Global::link_bytes_out, bytes.size());
  if (p.stats) {
    counters::bump(p.stats->messages_out);
    counters::bump(p.stats->bytes_out, bytes.size());
    counters::note_high_water(p.stats->held_high_water, p.peer->session().held_bytes());
  }
  return true;
}

bool Daemon::forward_reply(std::string_view node, std::span<const std::byte> bytes, const EnvelopeView& v,
                           const Agent* src) {
  PeerSlot* p = peer_by_node(node);
  if (p == nullptr) {
    counters_.add(counters::Global::link_drops_no_route);
    return true;
  }
  send_message(*p, {}, v, bytes, src);
  return true;
}

void Daemon::answer_remote(PeerSlot& p, const EnvelopeView& request, Errc code, std::string_view detail) {
  if (request.reply_to().empty()) return;
  MessageMeta meta;
  meta.kind = wire::Kind::Error;
  meta.correlation_id = request.header().msg_id();
  meta.status = code;
  meta.stamp = clock::stamp(clock::mono_ns(), 0);
  const auto env = build_envelope({request.reply_to()}, std::as_bytes(std::span(detail.data(), detail.size())), meta);
  send_message(p, {}, EnvelopeView::trusted(env), env);
}

// ---------------------------------------------------------------- receiving

size_t Daemon::poll_links() {
  size_t moved = 0;
  for (auto it = greeters_.begin(); it != greeters_.end();) {
    const uint32_t id = it->first;
    const bool input = it->second.link->has_input();
    ++it;  // on_greeter() may erase its own entry (never another)
    if (input) on_greeter(id);
  }
  for (size_t i = 0; i < peers_.size(); ++i) {
    PeerSlot& p = *peers_[i];
    if (!p.owed.empty()) {
      // The head message waits for room in a local ring.
      const auto head = std::as_bytes(std::span(p.held_in)).first(p.held_head);
      if (!deliver_owed(p.owed, head, nullptr)) continue;
      ++moved;
    }
    if (p.in_next == p.in.size()) {
      if (!p.readable && !p.peer->has_input()) continue;  // a poll-mode link says so without epoll
      p.readable = false;
      p.in.clear();
      p.in_next = 0;
      const uint64_t now = clock::mono_ns();  // only for a peer that has something
      p.peer->receive(p.in, now);
      if (const uint64_t rtt = p.peer->take_rtt_sample(); rtt != 0) counters_.record(counters::Hist::link_rtt, rtt);
      p.readable = p.in.size() >= 512;  // a full batch: more may be buffered already
      observe(p, now);  // a new incarnation: its old state goes before what it sent is routed
    }
    while (p.in_next < p.in.size()) {
      if (p.broken) {
        p.in.clear();
        p.in_next = 0;
        p.broken = false;
        break;
      }
      if (!route_remote(p, p.in[p.in_next])) {
        stall_remote(p);
        break;
      }
      ++p.in_next;
      ++moved;
    }
  }
  return moved;
}

void Daemon::stall_remote(PeerSlot& p) {
  // Own copies of the head envelope (as routed: restamped, aligned) and of the bodies after it:
  // the link's buffer is reused by its next read.
  std::vector<uint64_t> store;
  auto words = [](size_t n) { return (n + 7) / 8; };
  size_t total = words(last_env_.size());
  for (size_t i = p.in_next + 1; i < p.in.size(); ++i) total += words(p.in[i].size());
  store.resize(total);
  auto* base = reinterpret_cast<std::byte*>(store.data());
  std::memcpy(base, last_env_.data(), last_env_.size());
  size_t at = words(last_env_.size()) * 8;
  std::vector<std::span<const std::byte>> rest;
  for (size_t i = p.in_next + 1; i < p.in.size(); ++i) {
    std::memcpy(base + at, p.in[i].data(), p.in[i].size());
    rest.emplace_back(base + at, p.in[i].size());
    at += words(p.in[i].size()) * 8;
  }
  p.held_in.swap(store);
  p.held_head = last_env_.size();
  p.in.swap(rest);
  p.in_next = 0;
}


void Daemon::cut_off(PeerSlot& p, const std::string& why) {
  counters_.add(counters::Global::link_refused);
  log::warn("link_garbage", {{"peer", p.label}, {"node", p.node}, {"why", why}});
  p.peer->disconnect(why, clock::mono_ns());
  p.broken = true;
}

bool Daemon::route_remote(PeerSlot& p, std::span<const std::byte> body) {
  auto b = links::parse_body(body);
  if (!b) {
    cut_off(p, b.error().message());
    return true;
  }
  switch (b->kind) {
    case links::BodyKind::Interest: apply_interest(p, *b); return true;
    case links::BodyKind::Presence: apply_presence(p, *b); return true;
    case links::BodyKind::Message: return route_remote_message(p, *b);
  }
  return true;
}

void Daemon::drop_stale_interests(PeerSlot& p) {
  for (const auto& s : p.stale_interest) {
    trie_.erase(s.pattern, router::SubRef{kPeerBase + p.index, s.id, 0});
    routes_changed(s.pattern);
  }
  p.stale_interest.clear();
}

void Daemon::apply_interest(PeerSlot& p, const links::Body& b) {
  const uint32_t ref = kPeerBase + p.index;
  auto drop = [&](uint32_t id) {
    auto it = p.interest.find(id);
    if (it == p.interest.end()) return;
    trie_.erase(it->second.pattern, router::SubRef{ref, id, it->second.group});
    if (it->second.group != 0) groups_.release_group(it->second.group);
    routes_changed(it->second.pattern);
    p.interest.erase(it);
  };
  switch (static_cast<links::InterestOp>(b.op)) {
    case links::InterestOp::Reset:
      for (auto it = p.interest.begin(); it != p.interest.end(); it = p.interest.begin()) drop(it->first);
      drop_stale_interests(p);
      return;
    case links::InterestOp::Remove: drop(b.id); return;
    case links::InterestOp::Synced:
      // Its snapshot is in: what its earlier incarnations wanted goes (what it wants now, it re-added).
      drop_stale_interests(p);
      return;
    case links::InterestOp::Add: break;
  }
  drop(b.id);  // an Add of an id it already has replaces it
  // The same interest as before the restart, by chance under the same id: the new one takes
  // its place in the trie (a different pattern under an old id stays apart until Synced).
  if (b.group.empty()) {
    auto& st = p.stale_interest;
    for (auto it = st.begin(); it != st.end(); ++it) {
      if (it->id == b.id && it->pattern == b.pattern) {
        trie_.erase(it->pattern, router::SubRef{ref, it->id, 0});
        st.erase(it);
        break;
      }
    }
  }
  if (!router::validate_pattern(b.pattern) || router::classify(b.pattern) != router::SubjectClass::Normal) {
    return cut_off(p, "interest in '" + std::string(b.pattern) + "', which is not a subject pattern agents may subscribe to");
  }
  if (!p.grants.all && !p.grants.may_subscribe(b.pattern)) {
    bool overlaps = false;
    for (const auto& g : p.grants.subscribe) overlaps |= patterns_overlap(g, b.pattern);
    if (!overlaps) {
      counters_.add(counters::Global::drops_acl);
      ++p.acl_refused;
      log::warn("link_interest_refused", {{"peer", p.label}, {"node", p.node}, {"identity", p.identity},
                                          {"pattern", b.pattern},
                                          {"why", "the link's identity may not subscribe to it ([[acl]])"}});
      return;
    }
    // Broader than the grants: taken, and each message sent for it is checked.
    p.narrowed = true;
    log::info("link_interest_narrowed", {{"peer", p.label}, {"node", p.node}, {"identity", p.identity},
                                         {"pattern", b.pattern},
                                         {"why", "broader than the link's [[acl]] grants: only subjects they allow are forwarded"}});
  }
  uint32_t gid = 0;
  if (!b.group.empty()) {
    auto g = groups_.intern_group(b.group);
    if (!g) return cut_off(p, "interest with an invalid queue group name");
    gid = *g;
  }
  if (auto r = trie_.insert(b.pattern, router::SubRef{ref, b.id, gid}); !r) {
    if (gid != 0) groups_.release_group(gid);
    log::warn("link_interest_refused", {{"peer", p.label}, {"pattern", b.pattern}, {"why", errc_name(r.error())}});
    return;
  }
  p.interest.emplace(b.id, PeerSlot::Interest{std::string(b.pattern), gid});
  routes_changed(b.pattern);  // a local sender's lanes no longer reach every receiver
}

void Daemon::apply_presence(PeerSlot& p, const links::Body& b) {
  if (static_cast<links::PresenceOp>(b.op) == links::PresenceOp::Reset) {
    for (const auto& [id, ra] : p.agents) publish_presence(ra.name, id, ra.capabilities, control::PresenceEvent::Left);
    p.agents.clear();
    return;
  }
  if (static_cast<links::PresenceOp>(b.op) == links::PresenceOp::Joined) {
    PeerSlot::RemoteAgent ra;
    ra.name.assign(b.name).append("@").append(p.node);
    for (auto c : b.capabilities) ra.capabilities.emplace_back(c);
    publish_presence(ra.name, b.id, ra.capabilities, control::PresenceEvent::Joined);
    p.agents[b.id] = std::move(ra);
    return;
  }
  auto it = p.agents.find(b.id);
  if (it == p.agents.end()) return;
  publish_presence(it->second.name, b.id, it->second.capabilities, presence_event(b.op));
  p.agents.erase(it);
}

bool Daemon::route_remote_message(PeerSlot& p, const links::Body& b) {
  std::span<const std::byte> env = b.envelope;
  const uint32_t max = opts_.config.limits.max_message_size;
  if (env.size() > max) {
    counters_.add(counters::Global::drops_too_large);
    return true;
  }
  if ((reinterpret_cast<uintptr_t>(env.data()) & 7) != 0) {
    // FlatBuffers wants the Header 8-byte aligned: a copy, when the stream put it elsewhere.
    aligned_.resize((env.size() + 7) / 8);
    std::memcpy(aligned_.data(), env.data(), env.size());
    env = std::as_bytes(std::span(aligned_)).first(env.size());
  }
  // A peer is another host: every envelope is verified.
  auto checked = EnvelopeView::verify(env, max);
  if (!checked) {
    counters_.add(counters::Global::verify_failures);
    log::warn("link_bad_envelope", {{"peer", p.label}, {"node", p.node}});
    return true;
  }
  const EnvelopeView v = *checked;
  counters_.add(counters::Global::link_messages_in);
  counters_.add(counters::Global::link_bytes_in, env.size());
  if (p.stats) {
    counters::bump(p.stats->messages_in);
    counters::bump(p.stats->bytes_in, env.size());
  }
  // Arriving: the timestamp back to this host's CLOCK_MONOTONIC (clock::wire_ingress). The
  // bytes are this busd's (the link's read buffer, or aligned_): written in place.
  auto* h = const_cast<wire::Header*>(&v.header());
  const clock::Stamp in = clock::wire_ingress(v.stamp(), clock::mono_ns(), clock::real_ns());
  h->mutate_timestamp_ns(in.timestamp_ns);
  h->mutate_deadline_budget_ns(in.has_deadline ? in.budget_ns : 0);
  last_env_ = env;

  const std::string_view subject = v.subject();
  const wire::Kind kind = v.header().kind();
  const auto cls = router::classify(subject);
  if (cls == router::SubjectClass::System || !router::validate_subject(subject)) {
    counters_.add(counters::Global::drops_acl);
    return true;
  }
  // The link's identity may publish only what its grants allow (replies to an inbox here are
  // answers to requests this busd's agents sent: always taken).
  if (!p.grants.all && cls != router::SubjectClass::Inbox && !p.grants.may_publish(subject)) [[unlikely]] {
    counters_.add(counters::Global::drops_acl);
    if (p.acl_refused++ == 0 || (p.acl_refused & 1023) == 0) {
      log::warn("link_message_refused", {{"peer", p.label}, {"node", p.node}, {"identity", p.identity},
                                         {"subject", subject}, {"refused", p.acl_refused},
                                         {"why", "the link's identity may not publish to it ([[acl]])"}});
    }
    if (kind == wire::Kind::Request) {
      answer_remote(p, v, Errc::PermissionDenied, "'" + std::string(subject) + "' is not allowed from this link's identity on " + node_);
    }
    return true;
  }
  if (cls == router::SubjectClass::Inbox) {
    const InboxTarget t = inbox_target(subject);
    if (!t.node.empty() && t.node != node_) {
      counters_.add(counters::Global::link_drops_no_route);  // one hop only
      return true;
    }
    if (kind == wire::Kind::Reply || kind == wire::Kind::Error) settle_pending(t.agent, v.header().correlation_id());
    p.owed.assign(1, router::SubRef{t.agent, kInboxTag, 0});
    return deliver_owed(p.owed, env, nullptr);
  }
  matches_.clear();
  trie_.match(subject, matches_);
  chosen_groups_.clear();
  for (size_t i = 0; i < b.id_count(); ++i) {
    auto it = interest_group_.find(b.route_id(i));
    if (it != interest_group_.end() && it->second != 0) chosen_groups_.push_back(it->second);
  }
  // Local subscribers only (one hop), and of the queue groups only those the sender chose this
  // busd for: the sender's own members, or another peer's, serve the rest.
  std::erase_if(matches_, [&](const router::SubRef& r) {
    return r.agent >= kPeerBase ||
           (r.group != 0 && std::find(chosen_groups_.begin(), chosen_groups_.end(), r.group) == chosen_groups_.end());
  });
  deliveries_.clear();
  groups_.select(matches_, deliveries_);
  if (deliveries_.empty()) {
    if (kind == wire::Kind::Request) {
      counters_.add(counters::Global::no_responders);
      answer_remote(p, v, Errc::NoResponders, "no responders for '" + std::string(subject) + "' on " + node_);
    } else {
      counters_.add(counters::Global::published_no_subscribers);
    }
    return true;
  }
  if (kind == wire::Kind::Request) counters_.add(counters::Global::requests);
  p.owed.assign(deliveries_.begin(), deliveries_.end());
  return deliver_owed(p.owed, env, nullptr);
}

}  // namespace bus::daemon
