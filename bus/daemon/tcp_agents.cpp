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
//
// TLS and tokens ([tls] listen_agents, [[tokens]]): with TLS, the handshake runs in this loop
// (non-blocking, both ways) and must end within cluster.handshake_ms; a client certificate
// gives the agent its identity (CN, else SAN). A token, if the agent has one, is its first
// frame ('A'); with [[tokens]] configured, an agent without a certificate identity must send
// one. The identity feeds the [[acl]] rules' identity globs and the logs. A plaintext client on
// a TLS port is answered in plaintext with an ErrorReply saying so, then closed.
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "bus/clock.hpp"
#include "daemon.hpp"
#include "log.hpp"

namespace bus::daemon {
namespace {

constexpr uint32_t kTcpControlMax = 64 * 1024;     // control frames, as on the Unix socket
constexpr size_t kTcpOutBatch = 1u << 20;          // `to` ring records gathered per send
constexpr size_t kTcpOutControlMax = 4u << 20;     // output behind this far: control dropped
constexpr uint64_t kMs = 1'000'000;

}  // namespace

Expected<std::string> Daemon::read_token_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return fail(Errc::NotFound, "cannot read token file '" + path + "'");
  std::stringstream s;
  s << f.rdbuf();
  std::string t = s.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  if (t.size() < 16 || t.size() > tcp::kMaxTokenFrame) {
    return fail(Errc::InvalidArgument, "token file '" + path + "': a token is 16 to 1024 characters");
  }
  return t;
}

Expected<void> Daemon::start_tls() {
  const auto& c = opts_.config;
  const bool serve = (c.tls.listen_agents && !c.tcp_listen.empty()) || (c.tls.listen_links && !c.cluster.listen.empty());
  bool dial = false;
  for (const auto& l : c.links) dial |= l.kind == "tcp" && l.tls;
  const tls::ContextOptions o{c.tls.cert, c.tls.key, c.tls.ca, c.tls.verify_peer};
  if (serve && !tls_server_.valid()) {
    auto ctx = tls::Context::create(tls::Role::Server, o);
    if (!ctx) return tl::unexpected(ctx.error().context("[tls]"));
    tls_server_ = std::move(*ctx);
  }
  if (dial && !tls_client_.valid()) {
    auto ctx = tls::Context::create(tls::Role::Client, o);
    if (!ctx) return tl::unexpected(ctx.error().context("[tls] (dialing links)"));
    tls_client_ = std::move(*ctx);
  }
  tokens_.clear();
  for (const auto& t : c.tokens) {
    TokenEntry e{t.identity, t.token};
    if (!t.token_file.empty()) {
      auto s = read_token_file(t.token_file);
      if (!s) return tl::unexpected(s.error().context("[[tokens]] " + t.identity));
      e.secret = std::move(*s);
    }
    tokens_.push_back(std::move(e));
  }
  if (serve || dial || !tokens_.empty()) {
    log::info("tls_configured", {{"listen_agents", c.tls.listen_agents},
                                 {"listen_links", c.tls.listen_links},
                                 {"verify_peer", c.tls.verify_peer},
                                 {"tokens", tokens_.size()}});
  }
  return {};
}

const std::string* Daemon::token_identity(std::string_view token) const noexcept {
  const std::string* found = nullptr;
  for (const auto& t : tokens_) {  // every entry compared: the time does not say which matched
    if (tls::same_secret(t.secret, token) && found == nullptr) found = &t.identity;
  }
  return found;
}

Expected<void> Daemon::start_tcp_agents() {
  const std::string& at = opts_.config.tcp_listen;
  if (at.empty()) return {};
  auto address = listen_tcp(at, "busd.tcp_listen", Source::TcpAgentListener, tcp_agents_listener_);
  if (!address) return tl::unexpected(address.error());
  log::info("tcp_agents_listening", {{"address", *address},
                                     {"uid", opts_.config.tcp_agent_uid},
                                     {"tls", tls_server_.valid() && opts_.config.tls.listen_agents},
                                     {"tokens", tokens_.size()}});
  return {};
}

void Daemon::accept_tcp_agents() {
  for (;;) {
    std::string from;
    auto fd = tcp_agents_listener_.accept(&from);
    if (!fd) {
      if (fd.error() == Errc::LimitReached && shed_connection(tcp_agents_listener_.fd(), EMFILE)) continue;
      if (fd.error() != Errc::WouldBlock) log::warn("accept_failed", {{"error", errc_name(fd.error())}});
      return;
    }
    if (std::string why = remote_limit(from); !why.empty()) {
      refuse_connection(*fd, Errc::LimitReached, why, true);
      continue;
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
    a->tcp_from = from;
    if (opts_.config.tls.listen_agents && tls_server_.valid()) {
      auto s = tls::Stream::create(tls_server_, *fd);
      if (!s) {
        log::warn("tcp_agent_refused", {{"from", from}, {"why", s.error().message()}});
        ::close(*fd);
        continue;
      }
      a->tls = std::move(*s);
      a->tcp_deadline_ns = a->last_seen_ns + uint64_t{opts_.config.cluster.handshake_ms} * kMs;
      tcp_handshakes_.push_back(a->id);
    }
    a->tcp_events = EPOLLIN | EPOLLRDHUP;
    epoll_event ev{};
    ev.events = a->tcp_events;
    ev.data.u64 = tag(Source::AgentSocket, a->id);
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, *fd, &ev);
    agents_.emplace(a->id, std::move(a));
  }
}

bool Daemon::tls_handshake(Agent& a) {
  switch (a.tls->handshake()) {
    case tls::Step::Done: {
      std::erase(tcp_handshakes_, a.id);
      a.identity = a.tls->peer_identity();
      log::info("tls_agent_connected", {{"from", a.tcp_from}, {"id", a.id}, {"tls", a.tls->describe()},
                                        {"identity", a.identity.empty() ? std::string("(none)") : a.identity}});
      return true;
    }
    case tls::Step::WantRead:
    case tls::Step::WantWrite: watch_tcp_agent(a); return false;
    case tls::Step::Failed: break;
  }
  std::erase(tcp_handshakes_, a.id);
  const std::string why = a.tls->error();
  log::warn("tls_agent_refused", {{"from", a.tcp_from}, {"id", a.id}, {"why", why}});
  if (why.find("not TLS") != std::string::npos) {
    // A plaintext client: tell it so in its own language before closing.
    a.tls.reset();
    send_error(a, 0, Errc::PermissionDenied,
               "busd's tcp_listen speaks TLS only: connect with tls://host:port (and a CA that verifies busd)");
  }
  remove_agent(a, "TLS handshake failed");
  return false;
}

void Daemon::expire_tcp_handshakes(uint64_t now) {
  for (size_t i = 0; i < tcp_handshakes_.size();) {
    Agent* a = agent(tcp_handshakes_[i]);
    if (a == nullptr || a->phase == Agent::Phase::Closing || !a->tls || a->tls->established()) {
      tcp_handshakes_[i] = tcp_handshakes_.back();
      tcp_handshakes_.pop_back();
      continue;
    }
    if (now >= a->tcp_deadline_ns) {
      tcp_handshakes_[i] = tcp_handshakes_.back();
      tcp_handshakes_.pop_back();
      log::warn("tls_agent_refused", {{"from", a->tcp_from}, {"id", a->id},
                                      {"why", "TLS handshake not finished within " +
                                                  std::to_string(opts_.config.cluster.handshake_ms) + " ms (cluster.handshake_ms)"}});
      remove_agent(*a, "TLS handshake timeout");
      continue;
    }
    ++i;
  }
}

void Daemon::refuse_tcp_agent(Agent& a, Errc code, const std::string& why) {
  log::warn("tcp_agent_refused", {{"from", a.tcp_from}, {"id", a.id}, {"why", why}});
  send_error(a, 0, code, why);
  remove_agent(a, "refused");
}

bool Daemon::admit_tcp_agent(Agent& a, const tcp::ChanFrame& f) {
  std::string via = a.identity.empty() ? "none" : "certificate";
  if (f.channel == tcp::kChanAuth) {
    const std::string_view token(reinterpret_cast<const char*>(f.body.data()), f.body.size());
    const std::string* id = token_identity(token);
    if (id == nullptr) {
      refuse_tcp_agent(a, Errc::PermissionDenied, "token refused: it matches no [[tokens]] entry of this busd");
      return false;
    }
    if (a.identity.empty()) {
      a.identity = *id;
      via = "token";
    }
  } else if (!tokens_.empty() && a.identity.empty()) {
    refuse_tcp_agent(a, Errc::PermissionDenied,
                     "this busd requires a token or a client certificate (ClientOptions::token or $BUS_TOKEN)");
    return false;
  }
  a.tcp_admitted = true;
  log::info("tcp_agent_admitted", {{"from", a.tcp_from}, {"id", a.id}, {"via", via},
                                   {"identity", a.identity.empty() ? std::string("(none)") : a.identity}});
  return true;
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
  const bool tls_write = a.tls && a.tls->wants_write();
  const uint32_t events = EPOLLRDHUP | (a.tcp_held.empty() ? EPOLLIN : 0u) |
                          (a.tcp_osent < a.tcp_obuf.size() || tls_write ? EPOLLOUT : 0u);
  if (events == a.tcp_events) return;
  a.tcp_events = events;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = tag(Source::AgentSocket, a.id);
  ::epoll_ctl(epoll_, EPOLL_CTL_MOD, a.sock, &ev);
}

void Daemon::on_tcp_agent(Agent& a, uint32_t events) {
  if (a.phase == Agent::Phase::Closing) return;
  if (a.tls && !a.tls->established() && !tls_handshake(a)) return;  // going on, or refused
  if ((events & EPOLLOUT) != 0) flush_tcp_agent(a);
  if (a.phase == Agent::Phase::Closing) return;
  bool hung_up = (events & (EPOLLHUP | EPOLLERR)) != 0;
  if (!a.tcp_held.empty()) {
    // Still waiting for room in its ring for the envelope read last.
    if (!a.tcp_in.try_write(a.tcp_held)) return;
    a.tcp_held.clear();
  }
  // (TLS: one call reads until the socket is empty or 256 KiB came; the rest, if any, waits
  // in OpenSSL and flush_tcp_agents() comes back for it.)
  for (int reads = 0; reads < (a.tls ? 1 : 16); ++reads) {
    auto r = a.tls ? tls::receive(*a.tls, a.reader, 256 * 1024) : sock::receive(a.sock, a.reader);
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
    if (!a.tcp_admitted) {
      if (!admit_tcp_agent(a, *c)) return;
      if (c->channel == tcp::kChanAuth) continue;
    } else if (c->channel == tcp::kChanAuth) {
      return drop(Errc::BadMessage, "a token after the first frame");
    }
    if (c->channel == tcp::kChanControl) {
      auto m = verify_control(aligned_control(c->body), kTcpControlMax);
      if (!m) return drop(Errc::BadMessage, "control message does not verify as a busd ControlMessage");
      const bool registering = a.phase != Agent::Phase::Active;
      handle_control(a, **m);
      if (a.phase == Agent::Phase::Closing) return;
      if (registering && a.phase == Agent::Phase::Active && !a.identity.empty()) {
        log::info("tcp_agent_registered", {{"agent", a.name}, {"id", a.id}, {"identity", a.identity}});
      }
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
  if (a.tls && !a.tls->established()) return watch_tcp_agent(a);  // (nothing goes before the handshake)
  const bool sent = a.tls ? tls::send_pending(*a.tls, a.tcp_obuf, a.tcp_osent, kTcpOutBatch)
                          : tcp::send_pending(a.sock, a.tcp_obuf, a.tcp_osent, kTcpOutBatch);
  if (!sent) {
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
    if (!a.tcp_held.empty() || (a.tls && a.tls->has_pending())) {
      on_tcp_agent(a, 0);  // room again, or bytes OpenSSL decrypted already? then read on
      if (a.phase == Agent::Phase::Closing) continue;
    }
    flush_tcp_agent(a);
  }
}

}  // namespace bus::daemon
