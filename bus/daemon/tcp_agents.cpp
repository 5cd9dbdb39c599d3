// Remote agents: bus::Client with "tcp://host:port" reaches busd's [busd] tcp_listen. The TCP
// stream carries control frames and envelopes (socket/endpoint.hpp). busd gives such an agent
// rings like any other, in its own memory only: envelopes from the stream are written into the
// agent's `from` ring, and what the router delivers to its `to` ring is read back out onto the
// stream, once per loop pass and in one send() per batch. The router, ACLs, limits, deadlines
// and presence treat it like a local agent. Back-pressure holds: a full `from` ring stops
// reading the socket; a socket that does not drain leaves `to` full, which pushes back on the
// publishers (the block policy).
//
// TCP carries no peer credentials: a remote agent's uid and gid for [[acl]] are
// busd.tcp_agent_uid (65534, nobody, by default: nothing is allowed until a rule grants it).
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "bus/clock.hpp"
#include "daemon.hpp"
#include "log.hpp"

namespace bus::daemon {
namespace {

constexpr uint32_t kTcpControlMax = 64 * 1024;     // control frames, as on the Unix socket
constexpr size_t kTcpOutBatch = 1u << 20;          // `to` ring records gathered per send
constexpr size_t kTcpOutControlMax = 4u << 20;     // output behind this far: control dropped


}  // namespace

Expected<void> Daemon::start_tcp_agents() {
  const std::string& at = opts_.config.tcp_listen;
  if (at.empty()) return {};
  auto address = listen_tcp(at, "busd.tcp_listen", Source::TcpAgentListener, tcp_agents_listener_);
  if (!address) return tl::unexpected(address.error());
  log::info("tcp_agents_listening", {{"address", *address},
                                     {"uid", opts_.config.tcp_agent_uid}});
  return {};
}

void Daemon::accept_tcp_agents() {
  for (;;) {
    std::string from;
    auto fd = tcp_agents_listener_.accept(&from);
    if (!fd) {
      if (fd.error() != Errc::WouldBlock) log::warn("accept_failed", {{"error", errc_name(fd.error())}});
      return;
    }
    auto a = std::make_unique<Agent>();
    a->id = next_agent_id_++;
    a->sock = *fd;
    a->tcp = true;
    a->reader = sock::FrameReader(std::max(kTcpControlMax, opts_.config.limits.max_message_size) +
                                  static_cast<uint32_t>(tcp::kChanHeader));
    a->last_seen_ns = clock::mono_ns();
    a->cred.pid = 0;
    a->cred.uid = opts_.config.tcp_agent_uid;
    a->cred.gid = opts_.config.tcp_agent_uid;
    log::debug("tcp_agent_connected", {{"from", from}, {"id", a->id}});
    a->tcp_events = EPOLLIN | EPOLLRDHUP;
    epoll_event ev{};
    ev.events = a->tcp_events;
    ev.data.u64 = tag(Source::AgentSocket, a->id);
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, *fd, &ev);
    agents_.emplace(a->id, std::move(a));
  }
}

void Daemon::send_tcp_control(Agent& a, std::span<const std::byte> bytes) {
  if (a.tcp_obuf.size() - a.tcp_osent > kTcpOutControlMax) {
    if (a.control_dropped++ == 0) {
      log::warn("control_dropped", {{"agent", a.name}, {"id", a.id}, {"why", "the remote agent does not read its stream"}});
    }
    return;
  }
  tcp::append_chan(a.tcp_obuf, tcp::kChanControl, 0, bytes);
  flush_tcp_agent(a);
}

void Daemon::watch_tcp_agent(Agent& a) {
  if (a.sock < 0) return;
  const uint32_t events = EPOLLRDHUP | (a.tcp_held.empty() ? EPOLLIN : 0u) |
                          (a.tcp_osent < a.tcp_obuf.size() ? EPOLLOUT : 0u);
  if (events == a.tcp_events) return;
  a.tcp_events = events;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = tag(Source::AgentSocket, a.id);
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, a.sock, &ev);
}

void Daemon::on_tcp_agent(Agent& a, uint32_t events) {
  if (a.phase == Agent::Phase::Closing) return;
  if ((events & EPOLLOUT) != 0) flush_tcp_agent(a);
  if (a.phase == Agent::Phase::Closing) return;
  bool hung_up = (events & (EPOLLHUP | EPOLLERR)) != 0;
  if (!a.tcp_held.empty()) {
    // Still waiting for room in its ring for the envelope read last.
    if (!a.tcp_in.try_write(a.tcp_held)) return;
    a.tcp_held.clear();
  }
  for (int reads = 0; reads < 16; ++reads) {
    auto r = sock::receive(a.sock, a.reader);
    if (!r) {
      if (r.error() != Errc::WouldBlock) hung_up = true;
      break;
    }
  }
  auto drop = [&](Errc code, const std::string& why) {
    send_error(a, 0, code, why);
    remove_agent(a, "garbage on the TCP stream");
  };
  for (;;) {
    auto f = a.reader.next();
    if (!f) {
      if (f.error() == Errc::TooLarge) return drop(Errc::TooLarge, "a frame above the maximum");
      break;
    }
    auto c = tcp::parse_chan(*f);
    if (!c) return drop(Errc::BadMessage, c.error().message());
    a.last_seen_ns = clock::mono_ns();
    if (c->channel == tcp::kChanControl) {
      auto m = verify_control(c->body, kTcpControlMax);
      if (!m) return drop(Errc::BadMessage, "control message does not verify as a busd ControlMessage");
      handle_control(a, **m);
      if (a.phase == Agent::Phase::Closing) return;
      continue;
    }
    if (a.phase != Agent::Phase::Active) return drop(Errc::InvalidArgument, "an envelope before Register");
    auto w = a.tcp_in.try_write(c->body);
    if (!w) {
      if (w.error() == Errc::WouldBlock) {
        // Its ring is full: keep this one, stop reading until the router made room.
        a.tcp_held.assign(c->body.begin(), c->body.end());
        break;
      }
      counters_.add(counters::Global::drops_too_large);
      if (a.stats) counters::bump(a.stats->drops_too_large);
      send_error(a, 0, Errc::TooLarge, "message of " + std::to_string(c->body.size()) + " bytes (dropped)");
    }
  }
  watch_tcp_agent(a);
  if (hung_up && a.tcp_held.empty()) remove_agent(a, a.reader.pending() > 0 ? "hung up mid-frame" : "hung up");
}

void Daemon::flush_tcp_agent(Agent& a) {
  if (a.sock < 0) return;
  if (a.phase == Agent::Phase::Active) {
    size_t n = 0;
    while (a.tcp_obuf.size() - a.tcp_osent < kTcpOutBatch) {
      auto rec = a.tcp_out.try_peek();
      if (!rec) break;
      tcp::append_chan(a.tcp_obuf, tcp::kChanData, rec->tag, rec->data);
      a.tcp_out.advance();
      ++n;
    }
    if (n > 0) a.tcp_out.release();
  }
  if (!tcp::send_pending(a.sock, a.tcp_obuf, a.tcp_osent, kTcpOutBatch)) {
    // Removed between loop passes (this may run inside the router's or the control loop).
    lost_.push_back(a.id);
    a.tcp_obuf.clear();
    a.tcp_osent = 0;
  }
  watch_tcp_agent(a);
}

void Daemon::flush_tcp_agents() {
  for (size_t i = 0; i < tcp_agents_.size(); ++i) {
    Agent& a = *tcp_agents_[i];
    if (!a.tcp_held.empty()) {
      on_tcp_agent(a, 0);  // room again? then read on
      if (a.phase == Agent::Phase::Closing) continue;
    }
    flush_tcp_agent(a);
  }
}

}  // namespace bus::daemon
