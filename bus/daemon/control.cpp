// busd's control plane: handshake, registration and rings, subscriptions, discovery, presence,
// heartbeats, reload, and what happens when an agent goes away. Single-threaded bookkeeping:
// nothing here is on the per-message path.
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "bus/clock.hpp"
#include "bus/control.hpp"
#include "bus/limits.hpp"
#include "daemon.hpp"
#include "log.hpp"
#include "router/subjects.hpp"

namespace bus::daemon {
namespace {

constexpr uint32_t kControlFrameMax = 64 * 1024;
constexpr uint64_t kMs = 1'000'000;
constexpr char kServer[] = "busd/0.1";

std::string versions(uint32_t lo, uint32_t hi) {
  return lo == hi ? std::to_string(hi) : std::to_string(lo) + ".." + std::to_string(hi);
}

bool valid_agent_name(std::string_view n) {
  if (n.empty() || n.size() > 63) return false;
  // '$' and _INBOX belong to busd's own subjects; '@' names agents of other hosts ("name@node").
  if (n.front() == '$' || n.starts_with("_INBOX")) return false;
  return std::all_of(n.begin(), n.end(), [](char c) { return c > ' ' && c < 0x7F && c != '@'; });
}

}  // namespace

void Daemon::send_control(Agent& a, control::Body type, flatbuffers::Offset<void> body,
                          std::span<const int> fds) {
  auto msg = control::CreateControlMessage(fbb_, ++control_seq_, type, body);
  control::FinishControlMessageBuffer(fbb_, msg);
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(fbb_.GetBufferPointer()),
                                         fbb_.GetSize());
  if (a.tcp) {
    send_tcp_control(a, bytes);
  } else if (a.sock >= 0) {
    // One loop serves every agent: it must never wait for one that does not read its control
    // socket (send_frame would, for ever: an ErrorReply per refused message fills the socket
    // buffer quickly). A Unix stream socket polls writable while at least 3/4 of its send
    // buffer is free, room for any control frame in one sendmsg; below that the agent is not
    // reading and the message is dropped. It harms only that agent (it misses answers; if it
    // stays silent, the heartbeat timeout removes it).
    pollfd p{a.sock, POLLOUT, 0};
    if (::poll(&p, 1, 0) != 1 || (p.revents & POLLOUT) == 0) {
      if (a.control_dropped++ == 0) {
        log::warn("control_dropped", {{"agent", a.name}, {"id", a.id}, {"pid", a.cred.pid},
                                      {"why", "the agent does not read its control socket"}});
      }
    } else {
      if (a.control_dropped > 0) {
        log::info("control_resumed", {{"agent", a.name}, {"id", a.id}, {"dropped", a.control_dropped}});
        a.control_dropped = 0;
      }
      if (auto r = sock::send_frame(a.sock, bytes, fds); !r) {
        log::debug("control_send_failed", {{"agent", a.name}, {"error", r.error().message()}});
      }
    }
  }
  fbb_.Clear();
}

void Daemon::send_ok(Agent& a, uint64_t ref) {
  auto ok = control::CreateOk(fbb_, ref);
  send_control(a, control::Body::Ok, ok.Union());
}

void Daemon::send_error(Agent& a, uint64_t ref, Errc code, const std::string& message) {
  counters_.add(counters::Global::control_errors);
  auto e = control::CreateErrorReplyDirect(fbb_, code, message.c_str(), ref);
  send_control(a, control::Body::ErrorReply, e.Union());
}

void Daemon::refuse_connection(int fd, Errc code, const std::string& why, bool tcp) {
  counters_.add(counters::Global::control_errors);
  auto e = control::CreateErrorReplyDirect(fbb_, code, why.c_str(), 0);
  auto msg = control::CreateControlMessage(fbb_, ++control_seq_, control::Body::ErrorReply, e.Union());
  control::FinishControlMessageBuffer(fbb_, msg);
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(fbb_.GetBufferPointer()), fbb_.GetSize());
  // A new socket's send buffer is empty: the frame fits without waiting (or is lost, harmlessly).
  if (tcp) {
    // The agent stream: a 'C' frame, so that the remote agent's SDK can say why.
    std::vector<std::byte> out;
    tcp::append_chan(out, tcp::kChanControl, 0, bytes);
    (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } else {
    (void)sock::send_frame(fd, bytes);
  }
  fbb_.Clear();
  ::close(fd);
}

void Daemon::note_refusal(std::string_view from, const std::string& why) {
  counters_.add(counters::Global::limit_hits);
  // A flood is logged once a second, not per connection.
  const uint64_t now = clock::mono_ns();
  if (now - last_refusal_log_ns_ >= 1000 * kMs) {
    log::warn("connection_refused", {{"from", from}, {"why", why}});
    last_refusal_log_ns_ = now;
  }
}

bool Daemon::pending_connections_full(std::string_view from) {
  // Agents not registered yet: every record that is not an active agent (the ones closing
  // now are reaped at the start of the next loop turn).
  const size_t pending = agents_.size() - active_.size();
  if (pending < opts_.config.limits.max_pending_connections) return false;
  note_refusal(from, "limits.max_pending_connections reached");
  return true;
}

namespace {
// "10.0.0.2:7400" -> "10.0.0.2", "[::1]:7400" -> "[::1]".
std::string_view host_of(std::string_view address) noexcept {
  const size_t colon = address.rfind(':');
  return colon == std::string_view::npos ? address : address.substr(0, colon);
}
}  // namespace

std::string Daemon::remote_limit(std::string_view from) {
  const std::string_view host = host_of(from);
  size_t same = 0;
  for (const auto& [id, a] : agents_) same += a->tcp && a->phase != Agent::Phase::Closing && host_of(a->tcp_from) == host ? 1 : 0;
  for (const auto& [id, g] : greeters_) same += host_of(g.from) == host ? 1 : 0;
  std::string why;
  const auto& l = opts_.config.limits;
  if (same >= l.max_connections_per_address) {
    why.append("busd has limits.max_connections_per_address (").append(std::to_string(l.max_connections_per_address));
    why.append(") connections from ").append(host).append(" already");
  } else if (agents_.size() - active_.size() + greeters_.size() >= l.max_pending_connections) {
    why.append("busd has limits.max_pending_connections (").append(std::to_string(l.max_pending_connections));
    why.append(") connections waiting to register; try again later");
  }
  if (!why.empty()) note_refusal(from, why);
  return why;
}

bool Daemon::shed_connection(int listener, int err) {
  if (err != EMFILE && err != ENFILE) return false;
  // Out of descriptors: the waiting connection would keep the listener readable and the loop
  // spinning. The spare descriptor is given up for a moment to accept it and close it at once.
  counters_.add(counters::Global::limit_hits);
  const uint64_t now = clock::mono_ns();
  if (now - last_refusal_log_ns_ >= 1000 * kMs) {
    log::warn("connection_refused", {{"why", std::strerror(err)}, {"fix", "raise busd's RLIMIT_NOFILE (LimitNOFILE=)"}});
    last_refusal_log_ns_ = now;
  }
  if (spare_fd_ >= 0) ::close(spare_fd_);
  const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd >= 0) ::close(fd);
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd >= 0;
}

std::span<const std::byte> Daemon::aligned_control(std::span<const std::byte> frame) {
  // FlatBuffers reads its scalars in place: a frame behind one whose length is not a multiple
  // of 8 would have them misaligned (undefined behaviour). Control frames are few and small.
  if (reinterpret_cast<uintptr_t>(frame.data()) % 8 == 0) return frame;
  control_scratch_.resize((frame.size() + 7) / 8);
  std::memcpy(control_scratch_.data(), frame.data(), frame.size());
  return {reinterpret_cast<const std::byte*>(control_scratch_.data()), frame.size()};
}

void Daemon::accept_agents() {
  for (;;) {
    const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      const int err = errno;
      if (shed_connection(listener_, err)) continue;
      if (err != EAGAIN && err != EINTR) log::warn("accept_failed", {{"error", std::strerror(err)}});
      return;
    }
    if (pending_connections_full("local")) {
      refuse_connection(fd, Errc::LimitReached,
                        "busd has limits.max_pending_connections (" +
                            std::to_string(opts_.config.limits.max_pending_connections) +
                            ") connections waiting to register; try again later");
      continue;
    }
    auto a = std::make_unique<Agent>();
    a->id = next_agent_id_++;
    a->sock = fd;
    a->reader = sock::FrameReader(kControlFrameMax);
    a->last_seen_ns = clock::mono_ns();
    socklen_t len = sizeof a->cred;
    ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &a->cred, &len);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = tag(Source::AgentSocket, a->id);
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
    agents_.emplace(a->id, std::move(a));
  }
}

void Daemon::on_agent_socket(Agent& a, uint32_t events) {
  if (a.tcp) return on_tcp_agent(a, events);
  if (a.phase == Agent::Phase::Closing) return;
  bool hung_up = (events & (EPOLLHUP | EPOLLERR)) != 0;
  for (int reads = 0; reads < 16; ++reads) {
    auto r = sock::receive(a.sock, a.reader);
    if (!r) {
      if (r.error() != Errc::WouldBlock) hung_up = true;
      break;
    }
  }
  for (;;) {
    auto f = a.reader.next();
    if (!f) {
      if (f.error() == Errc::TooLarge) {
        send_error(a, 0, Errc::TooLarge, "control frame above " + std::to_string(kControlFrameMax) + " bytes");
        remove_agent(a, "oversize control frame");
        return;
      }
      break;
    }
    auto m = verify_control(aligned_control(*f), kControlFrameMax);
    if (!m) {
      send_error(a, 0, Errc::BadMessage, "control message does not verify as a busd ControlMessage");
      remove_agent(a, "garbage on the control socket");
      return;
    }
    a.last_seen_ns = clock::mono_ns();
    handle_control(a, **m);
    if (a.phase == Agent::Phase::Closing || a.sock < 0) return;  // removed, or leaving (Goodbye)
  }
  if (hung_up) {
    remove_agent(a, a.reader.pending() > 0 ? "hung up mid-frame" : "hung up");
  }
}

void Daemon::handle_control(Agent& a, const control::ControlMessage& m) {
  // Data the agent published before this control message is routed first: an unsubscribe or a
  // goodbye never overtakes the agent's own earlier messages.
  if (a.phase == Agent::Phase::Active) drain_agent(a, SIZE_MAX);
  const control::Body t = m.body_type();
  if (a.phase == Agent::Phase::Hello && t != control::Body::Hello) {
    send_error(a, m.seq(), Errc::InvalidArgument, "expected Hello first");
    remove_agent(a, "no Hello");
    return;
  }
  if (a.phase == Agent::Phase::Register && t != control::Body::Register) {
    send_error(a, m.seq(), Errc::InvalidArgument, "expected Register after Welcome");
    remove_agent(a, "no Register");
    return;
  }
  switch (t) {
    case control::Body::Hello: on_hello(a, m); break;
    case control::Body::Register: on_register(a, m); break;
    case control::Body::Subscribe: on_subscribe(a, m); break;
    case control::Body::Unsubscribe: on_unsubscribe(a, m); break;
    case control::Body::FindAgents: on_find_agents(a, m); break;
    case control::Body::RouteQuery: on_route_query(a, m); break;
    case control::Body::Heartbeat: break;  // last_seen already updated
    case control::Body::Goodbye:
      a.said_goodbye = true;
      if (a.phase == Agent::Phase::Active && !a.tcp && (a.stalled() || a.from.readable())) {
        // Its messages wait for room (drain_agent above could not finish): they are routed
        // before it goes, as they would have been had it waited itself. Its socket closes now.
        if (a.leaving_deadline_ns == 0) {
          a.leaving_deadline_ns = clock::mono_ns() + uint64_t{opts_.config.drain_timeout_ms} * kMs;
          leaving_.push_back(a.id);
          ::epoll_ctl(epoll_, EPOLL_CTL_DEL, a.sock, nullptr);
          ::close(a.sock);
          a.sock = -1;
        }
        break;
      }
      remove_agent(a, "goodbye");
      break;
    default:
      send_error(a, m.seq(), Errc::Unsupported,
                 std::string("control message ") + control::EnumNameBody(t) + " is not supported by " + kServer);
      break;
  }
}

void Daemon::on_hello(Agent& a, const control::ControlMessage& m) {
  const auto* h = m.body_as_Hello();
  if (a.phase != Agent::Phase::Hello) {
    send_error(a, m.seq(), Errc::InvalidArgument, "Hello sent twice");
    return;
  }
  const uint32_t hi = h->protocol_version();
  const uint32_t lo = h->min_protocol_version() != 0 ? h->min_protocol_version() : hi;
  if (kProtocolVersion < lo || kProtocolVersion > hi) {
    send_error(a, m.seq(), Errc::VersionMismatch,
               "client speaks protocol " + versions(lo, hi) + ", busd speaks " + std::to_string(kProtocolVersion));
    log::warn("version_mismatch", {{"client", versions(lo, hi)}, {"busd", kProtocolVersion},
                                   {"pid", a.cred.pid}});
    remove_agent(a, "protocol version mismatch");
    return;
  }
  a.phase = Agent::Phase::Register;
  auto w = control::CreateWelcomeDirect(fbb_, kProtocolVersion, kServer, opts_.config.limits.max_message_size,
                                        opts_.config.heartbeat_interval_ms);
  send_control(a, control::Body::Welcome, w.Union());
}

Expected<void> Daemon::give_rings(Agent& a) {
  const uint64_t cap = opts_.config.limits.ring_capacity;
  const size_t ring = shm::ring_bytes(cap);
  // Not prefaulted here: busd holds many agents' rings; pages are touched as they are used.
  // Two rings, then the AgentLines busd writes (lanes: the route epoch); a remote agent's
  // stand-in makes a segment of two rings (tcp_proxy.cpp) and gets no lanes.
  const size_t lines = a.tcp ? 0 : sizeof(shm::lane::AgentLines);
  auto seg = shm::Segment::create_memfd("agent-" + std::to_string(a.id), 2 * ring + lines, false);
  if (!seg) return tl::unexpected(seg.error());
  a.segment = std::move(*seg);
  const auto bytes = a.segment.bytes();
  // A new memfd reads as zeros: formatting touches the descriptors only.
  if (auto f = shm::format_ring(bytes.first(ring), cap, 0, shm::Zeroed::yes); !f) return f;
  if (auto f = shm::format_ring(bytes.subspan(ring), cap, 0, shm::Zeroed::yes); !f) return f;
  for (auto& e : a.fds) {
    auto fd = shm::EventFd::create();
    if (!fd) return tl::unexpected(fd.error());
    e = std::move(*fd);
  }
  auto from = shm::RingConsumer::attach(bytes.first(ring), {a.fds[0].fd(), a.fds[1].fd()});
  auto to = shm::RingProducer::attach(bytes.subspan(ring), {a.fds[2].fd(), a.fds[3].fd()});
  if (!from) return tl::unexpected(from.error());
  if (!to) return tl::unexpected(to.error());
  a.from = std::move(*from);
  a.to = std::move(*to);
  if (a.tcp) {
    // busd plays the agent's side too: it writes what the stream brings and reads what is due.
    auto in = shm::RingProducer::attach(bytes.first(ring), {a.fds[0].fd(), a.fds[1].fd()});
    auto out = shm::RingConsumer::attach(bytes.subspan(ring), {a.fds[2].fd(), a.fds[3].fd()});
    if (!in) return tl::unexpected(in.error());
    if (!out) return tl::unexpected(out.error());
    a.tcp_in = std::move(*in);
    a.tcp_out = std::move(*out);
  }
  // A remote agent's segment stays in busd (its stand-in has its own): no lanes for it.
  if (!a.tcp) a.lines = new (bytes.data() + 2 * ring) shm::lane::AgentLines{};
  const std::string inbox = inbox_of(a.id);
  auto reg = control::CreateRegisteredDirect(fbb_, a.id, a.name.c_str(), bytes.size(), 0, ring, inbox.c_str(),
                                             a.tcp ? 0 : 2 * ring);
  const int fds[5] = {a.segment.fd(), a.fds[0].fd(), a.fds[1].fd(), a.fds[2].fd(), a.fds[3].fd()};
  send_control(a, control::Body::Registered, reg.Union(), fds);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag(Source::AgentData, a.id);
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, a.fds[0].fd(), &ev);
  ev.data.u64 = tag(Source::AgentSpace, a.id);
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, a.fds[3].fd(), &ev);
  return {};
}

void Daemon::on_register(Agent& a, const control::ControlMessage& m) {
  const auto* r = m.body_as_Register();
  if (a.phase != Agent::Phase::Register) {
    // Once only: a second Register would make a second agent of one connection.
    send_error(a, m.seq(), Errc::InvalidArgument, "Register sent twice: this connection is agent '" + a.name + "' already");
    return;
  }
  const std::string name = r->name()->str();
  const auto& lim = opts_.config.limits;
  if (!valid_agent_name(name)) {
    send_error(a, m.seq(), Errc::InvalidArgument,
               "agent name '" + name + "': 1..63 printable characters, no spaces or '@', not starting with '$' or '_INBOX'");
    remove_agent(a, "bad name");
    return;
  }
  if (names_.count(name) != 0) {
    send_error(a, m.seq(), Errc::AlreadyExists, "an agent named '" + name + "' is already registered");
    remove_agent(a, "duplicate name");
    return;
  }
  if (active_.size() >= lim.max_agents) {
    counters_.add(counters::Global::limit_hits);
    send_error(a, m.seq(), Errc::LimitReached, "max_agents (" + std::to_string(lim.max_agents) + ") reached");
    remove_agent(a, "max_agents");
    return;
  }
  a.name = name;
  if (r->capabilities() != nullptr) {
    for (const auto* c : *r->capabilities()) a.capabilities.push_back(c->str());
  }
  a.grants = grants_for(opts_.config, uid_, a.cred.uid, a.cred.gid, a.name, a.identity);
  a.copy_first = a.cred.uid != uid_ && !a.tcp;  // a remote agent's rings are busd's own memory
  a.verify = a.copy_first || a.tcp || opts_.config.verify_same_uid;
  if (auto g = give_rings(a); !g) {
    send_error(a, m.seq(), g.error().code(), "allocating rings: " + g.error().message());
    remove_agent(a, "no rings");
    return;
  }
  a.phase = Agent::Phase::Active;
  names_.emplace(a.name, a.id);
  active_.push_back(&a);
  if (a.tcp) tcp_agents_.push_back(&a);
  a.stats = counters_.agent_open(a.id, a.name, a.cred.pid, a.cred.uid, a.cred.gid);
  counters_.add(counters::Global::agents_total);
  counters_.set(counters::Global::agents_connected, active_.size());
  log::info("agent_joined", {{"name", a.name}, {"id", a.id}, {"pid", a.cred.pid}, {"uid", a.cred.uid}});
  presence(a, control::PresenceEvent::Joined);
}

void Daemon::on_subscribe(Agent& a, const control::ControlMessage& m) {
  const auto* s = m.body_as_Subscribe();
  const std::string_view pattern = s->subject()->string_view();
  const std::string_view group = s->queue_group() != nullptr ? s->queue_group()->string_view() : std::string_view{};
  const uint32_t sid = s->sid();
  if (sid == 0 || a.subs.count(sid) != 0) {
    send_error(a, m.seq(), Errc::InvalidArgument, "subscription id " + std::to_string(sid) + " is 0 or in use");
    return;
  }
  if (s->policy() > control::SlowPolicy::MAX) {
    send_error(a, m.seq(), Errc::InvalidArgument,
               "slow-consumer policy " + std::to_string(static_cast<unsigned>(s->policy())) +
                   " is not one of block, drop-oldest, drop-newest, disconnect");
    return;
  }
  if (!router::validate_pattern(pattern)) {
    send_error(a, m.seq(), Errc::InvalidArgument, "'" + std::string(pattern) + "' is not a valid subject pattern");
    return;
  }
  if (router::classify(pattern) == router::SubjectClass::Inbox) {
    send_error(a, m.seq(), Errc::PermissionDenied, "inboxes (_INBOX.>) are delivered by busd, not subscribed to");
    return;
  }
  if (!a.grants.may_subscribe(pattern)) {
    counters_.add(counters::Global::drops_acl);
    if (a.stats) counters::bump(a.stats->drops_acl);
    send_error(a, m.seq(), Errc::PermissionDenied, "ACL: agent '" + a.name + "' may not subscribe to '" + std::string(pattern) + "'");
    return;
  }
  if (a.subs.size() >= opts_.config.limits.max_subscriptions_per_agent) {
    counters_.add(counters::Global::limit_hits);
    send_error(a, m.seq(), Errc::LimitReached, "max_subscriptions_per_agent (" +
                                                   std::to_string(opts_.config.limits.max_subscriptions_per_agent) + ") reached");
    return;
  }
  uint32_t gid = 0;
  if (!group.empty()) {
    auto g = groups_.intern_group(group);
    if (!g) {
      send_error(a, m.seq(), g.error(), "queue group '" + std::string(group) + "'");
      return;
    }
    gid = *g;
  }
  if (auto r = trie_.insert(pattern, router::SubRef{a.id, sid, gid}); !r) {
    if (gid != 0) groups_.release_group(gid);
    send_error(a, m.seq(), r.error(), "subscribing to '" + std::string(pattern) + "'");
    return;
  }
  Agent::Sub sub;
  sub.pattern.assign(pattern);
  sub.group = gid;
  sub.stats = counters_.pattern_open(pattern);
  sub.asked = s->policy();
  sub.policy = slow_policy_for(a, pattern, sub.asked);
  if (sub.policy != sub.asked) {
    log::debug("slow_policy_overridden", {{"agent", a.name}, {"pattern", pattern}, {"asked", config::slow_policy_name(static_cast<config::SlowPolicy>(sub.asked))},
                                          {"policy", config::slow_policy_name(static_cast<config::SlowPolicy>(sub.policy))}});
  }
  a.subs.emplace(sid, std::move(sub));
  interest_up(pattern, gid);
  if (a.stats) counters::bump(a.stats->subscriptions);
  routes_changed(pattern);  // before the Ok: what is sent after it reaches this subscription
  send_ok(a, m.seq());
}

void Daemon::on_unsubscribe(Agent& a, const control::ControlMessage& m) {
  const uint32_t sid = m.body_as_Unsubscribe()->sid();
  auto it = a.subs.find(sid);
  if (it == a.subs.end()) {
    send_error(a, m.seq(), Errc::NotFound, "no subscription " + std::to_string(sid));
    return;
  }
  trie_.erase(it->second.pattern, router::SubRef{a.id, sid, it->second.group});
  interest_down(it->second.pattern, it->second.group);
  if (it->second.group != 0) groups_.release_group(it->second.group);
  counters_.pattern_close(it->second.pattern);
  if (a.stats) counters::drop_by(a.stats->subscriptions);
  const std::string pattern = std::move(it->second.pattern);
  a.subs.erase(it);
  routes_changed(pattern);
  send_ok(a, m.seq());
}

void Daemon::on_find_agents(Agent& a, const control::ControlMessage& m) {
  const auto* f = m.body_as_FindAgents();
  const std::string_view cap = f->capability() != nullptr ? f->capability()->string_view() : "";
  const std::string_view glob = f->name() != nullptr && f->name()->size() > 0 ? f->name()->string_view() : "*";
  std::vector<flatbuffers::Offset<control::AgentInfo>> found;
  for (const Agent* o : active_) {
    if (o->phase != Agent::Phase::Active || !glob_match(glob, o->name)) continue;
    if (!cap.empty() && std::find(o->capabilities.begin(), o->capabilities.end(), cap) == o->capabilities.end()) continue;
    std::vector<flatbuffers::Offset<flatbuffers::String>> caps;
    for (const auto& c : o->capabilities) caps.push_back(fbb_.CreateString(c));
    found.push_back(control::CreateAgentInfoDirect(fbb_, o->name.c_str(), o->id, &caps,
                                                   static_cast<uint32_t>(o->cred.pid), o->cred.uid));
  }
  // Agents on peer busds, as "name@node" (no pid or uid: those are the other host's).
  for (const auto& p : peers_) {
    for (const auto& [id, ra] : p->agents) {
      if (!glob_match(glob, ra.name)) continue;
      if (!cap.empty() && std::find(ra.capabilities.begin(), ra.capabilities.end(), cap) == ra.capabilities.end()) continue;
      std::vector<flatbuffers::Offset<flatbuffers::String>> caps;
      for (const auto& c : ra.capabilities) caps.push_back(fbb_.CreateString(c));
      found.push_back(control::CreateAgentInfoDirect(fbb_, ra.name.c_str(), id, &caps, 0, 0));
    }
  }
  auto list = control::CreateAgentListDirect(fbb_, m.seq(), &found);
  send_control(a, control::Body::AgentList, list.Union());
}

void Daemon::presence(const Agent& a, control::PresenceEvent ev) {
  publish_presence(a.name, a.id, a.capabilities, ev);
  presence_to_peers(a, ev == control::PresenceEvent::Joined ? links::PresenceOp::Joined
                       : ev == control::PresenceEvent::Left ? links::PresenceOp::Left
                                                            : links::PresenceOp::Died);
}

void Daemon::publish_presence(std::string_view name, uint32_t id, std::span<const std::string> caps,
                             control::PresenceEvent ev) {
  std::vector<flatbuffers::Offset<flatbuffers::String>> offs;
  for (const auto& c : caps) offs.push_back(fbb_.CreateString(c));
  auto p = control::CreatePresence(fbb_, ev, fbb_.CreateString(name.data(), name.size()), id, fbb_.CreateVector(offs));
  auto msg = control::CreateControlMessage(fbb_, ++control_seq_, control::Body::Presence, p.Union());
  control::FinishControlMessageBuffer(fbb_, msg);
  const std::vector<std::byte> payload(reinterpret_cast<const std::byte*>(fbb_.GetBufferPointer()),
                                       reinterpret_cast<const std::byte*>(fbb_.GetBufferPointer()) + fbb_.GetSize());
  fbb_.Clear();
  system_publish(ev == control::PresenceEvent::Joined ? "$bus.agents.joined" : "$bus.agents.left", payload);
}

void Daemon::remove_agent(Agent& a, const char* why, bool drain) {
  if (a.phase == Agent::Phase::Closing) return;
  const bool was_active = a.phase == Agent::Phase::Active;
  // What it published before going is still routed (a reply sent just before exit arrives);
  // deliveries that would have to wait for room are dropped with it.
  if (was_active && drain) {
    drain_agent(a, SIZE_MAX);
    a.owed.clear();
  }
  a.phase = Agent::Phase::Closing;
  if (a.sock >= 0) {
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, a.sock, nullptr);
    ::close(a.sock);
    a.sock = -1;
  }
  if (!was_active) {
    log::info("connection_closed", {{"pid", a.cred.pid}, {"uid", a.cred.uid}, {"why", why}});
    doomed_.push_back(a.id);  // freed at the end of the loop turn: callers still hold `a`
    return;
  }
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, a.fds[0].fd(), nullptr);
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, a.fds[3].fd(), nullptr);
  for (const auto& [sid, sub] : a.subs) {
    interest_down(sub.pattern, sub.group);
    if (sub.group != 0) groups_.release_group(sub.group);
    counters_.pattern_close(sub.pattern);
  }
  trie_.erase_agent(a.id);
  drop_lanes_of(a);
  for (const auto& [sid, sub] : a.subs) routes_changed(sub.pattern);
  forget_requests_of(a.id);
  // Nobody waits for deliveries to it any more.
  for (Agent* o : active_) {
    std::erase_if(o->owed, [&](const router::SubRef& r) { return r.agent == a.id; });
  }
  for (auto& p : peers_) {
    std::erase_if(p->owed, [&](const router::SubRef& r) { return r.agent == a.id; });
  }
  std::erase(dirty_, &a);
  forget_slow(a);
  std::erase(tcp_agents_, &a);
  names_.erase(a.name);
  std::erase(active_, &a);
  const bool died = !a.said_goodbye && !stopping_;
  if (a.stats != nullptr) {
    if (died) counters_.agent_dead(a.stats);
    counters_.agent_close(a.stats);
    a.stats = nullptr;
  }
  if (died) counters_.add(counters::Global::agents_died);
  counters_.set(counters::Global::agents_connected, active_.size());
  log::info("agent_left", {{"name", a.name}, {"id", a.id}, {"why", why}});
  presence(a, died ? control::PresenceEvent::Died : control::PresenceEvent::Left);
  // The record is freed at the end of this loop turn (the data plane may be iterating).
  doomed_.push_back(a.id);
}

void Daemon::finish_leaving(uint64_t now) {
  size_t keep = 0;
  for (uint32_t id : leaving_) {
    Agent* a = agent(id);
    if (a == nullptr || a->phase != Agent::Phase::Active) continue;
    const bool done = !a->stalled() && !a->from.readable();
    if (done || now >= a->leaving_deadline_ns) {
      if (!done) {
        log::warn("goodbye_undelivered", {{"agent", a->name}, {"waited_ms", opts_.config.drain_timeout_ms},
                                          {"left_bytes", a->from.backlog()}});
      }
      remove_agent(*a, "goodbye");
      continue;
    }
    leaving_[keep++] = id;
  }
  leaving_.resize(keep);
}

void Daemon::reap() {
  for (uint32_t id : doomed_) agents_.erase(id);
  doomed_.clear();
}

void Daemon::heartbeats() {
  const uint64_t now = clock::mono_ns();
  const uint64_t interval = uint64_t{opts_.config.heartbeat_interval_ms} * kMs;
  const uint64_t dead_after = interval * opts_.config.heartbeat_misses;
  std::vector<Agent*> late;
  for (auto& [id, a] : agents_) {
    if (a->phase == Agent::Phase::Closing) continue;
    if (a->phase != Agent::Phase::Active) {
      if (now - a->last_seen_ns > uint64_t{opts_.config.limits.handshake_ms} * kMs) late.push_back(a.get());
      continue;
    }
    if (a->stats) {
      // Queue depths for busctl top and the metrics: a copy each tick, not per message.
      a->stats->inbound_depth.store(a->from.backlog(), std::memory_order_relaxed);
      a->stats->outbound_depth.store(a->to.unconsumed(), std::memory_order_relaxed);
      a->stats->slow_waiting_bytes.store(a->slow_bytes, std::memory_order_relaxed);
    }
    if (now - a->last_seen_ns > dead_after) {
      late.push_back(a.get());
    } else if (now - a->last_seen_ns >= interval) {
      auto hb = control::CreateHeartbeat(fbb_, ++a->heartbeat_seq, now);
      send_control(*a, control::Body::Heartbeat, hb.Union());
    }
  }
  for (Agent* a : late) remove_agent(*a, a->phase == Agent::Phase::Active ? "heartbeat timeout" : "handshake timeout");
}

void Daemon::reload() {
  if (opts_.config_path.empty()) {
    log::info("config_reload_skipped", {{"why", "running on the embedded default; nothing to reload"}});
    return;
  }
  auto next = config::load_file(opts_.config_path);
  if (!next) {
    counters_.add(counters::Global::config_reload_failures);
    log::error("config_reload_failed", {{"error", next.error().message()}, {"kept", "previous config"}});
    return;
  }
  std::vector<std::string> restart_only;
  const auto changed = config::reloadable_diff(opts_.config, *next, &restart_only);
  for (const auto& key : restart_only) log::warn("config_needs_restart", {{"key", key}});
  // Keys that need a restart keep their running values.
  config::Config applied = *next;
  applied.socket = opts_.config.socket;
  applied.socket_mode = opts_.config.socket_mode;
  applied.socket_group = opts_.config.socket_group;
  applied.shm_dir = opts_.config.shm_dir;
  applied.limits.ring_capacity = opts_.config.limits.ring_capacity;
  applied.limits.max_agents = opts_.config.limits.max_agents;  // sizes the counters page
  applied.wait = opts_.config.wait;
  applied.cluster = opts_.config.cluster;  // links and the listener are made at start
  applied.links = opts_.config.links;
  applied.dpdk = opts_.config.dpdk;  // the EAL and ports start once
  opts_.config = std::move(applied);
  log::set_level(opts_.config.log_level);
  // New grants for everyone; subscriptions the new ACL no longer allows are revoked. The
  // others take the slow-consumer policy the new [[slow_consumers]] rules give them.
  std::vector<std::string> changed_routes;
  for (Agent* a : active_) {
    a->grants = grants_for(opts_.config, uid_, a->cred.uid, a->cred.gid, a->name, a->identity);
    a->verify = a->copy_first || opts_.config.verify_same_uid;
    for (auto it = a->subs.begin(); it != a->subs.end();) {
      Agent::Sub& sub = it->second;
      if (a->grants.may_subscribe(sub.pattern)) {
        const control::SlowPolicy p = slow_policy_for(*a, sub.pattern, sub.asked);
        if (p != sub.policy) {
          sub.policy = p;
          changed_routes.push_back(sub.pattern);  // lanes only carry block subscriptions
        }
        ++it;
        continue;
      }
      trie_.erase(sub.pattern, router::SubRef{a->id, it->first, sub.group});
      interest_down(sub.pattern, sub.group);
      if (sub.group != 0) groups_.release_group(sub.group);
      counters_.pattern_close(sub.pattern);
      if (a->stats) counters::drop_by(a->stats->subscriptions);
      log::warn("subscription_revoked", {{"agent", a->name}, {"pattern", sub.pattern}});
      changed_routes.push_back(std::move(sub.pattern));
      it = a->subs.erase(it);
    }
  }
  for (const std::string& pattern : changed_routes) routes_changed(pattern);
  // Lanes were set up under the old ACL: all of them go; agents ask again.
  reset_lanes("the configuration was reloaded");
  counters_.add(counters::Global::config_reloads);
  log::info("config_reloaded", {{"path", opts_.config_path}, {"changed", changed.size()}});
}

}  // namespace bus::daemon
