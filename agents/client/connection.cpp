// libbus: connecting to busd, the control plane, reconnecting.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "bus/address.hpp"
#include "bus/clock.hpp"
#include "bus/limits.hpp"
#include "impl.hpp"

namespace bus {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr char kSdkName[] = "libbus/0.1";

std::string pick_socket(const ClientOptions& o, std::string* tried) {
  if (!o.address.empty()) {
    *tried = o.address;
    return o.address;
  }
  std::string first;
  for (const auto& c : default_socket_candidates()) {
    if (!tried->empty()) *tried += ", ";
    *tried += c;
    struct stat st {};
    if (::stat(c.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return c;
    if (first.empty()) first = c;
  }
  return first;
}

Expected<int> dial(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return fail(Errc::InvalidArgument, "socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return tl::unexpected(system_error("socket", errno));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    ::close(fd);
    Error err = system_error("connecting to busd at " + path, e);
    if (e == ENOENT || e == ECONNREFUSED) {
      err = Error(Errc::NotFound, "no busd listening at " + path + " (" + std::strerror(e) + ")");
    }
    return tl::unexpected(err);
  }
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  return fd;
}

}  // namespace

std::string_view to_string(ConnectionState s) noexcept {
  switch (s) {
    case ConnectionState::Connecting: return "connecting";
    case ConnectionState::Connected: return "connected";
    case ConnectionState::Disconnected: return "disconnected";
    case ConnectionState::Closed: return "closed";
  }
  return "unknown";
}

void Client::Impl::set_state(ConnectionState s, const Error* why) {
  if (state == s) return;
  state = s;
  if (on_state) on_state(s, why);
}

Expected<void> Client::Impl::send_control(control::Body type, flatbuffers::Offset<void> body) {
  auto msg = control::CreateControlMessage(fbb, ++control_seq, type, body);
  control::FinishControlMessageBuffer(fbb, msg);
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(fbb.GetBufferPointer()),
                                         fbb.GetSize());
  auto r = sock::send_frame(sock, bytes);
  fbb.Clear();
  return r;
}

// Reads control frames until `is_answer` accepts one or the deadline passes. Routine messages
// (heartbeats, goodbye, lanes) are handled here; descriptors that come with frames queue in
// c.rx_fds in the order they arrived (a frame that carries some takes them from the front).
static Expected<void> read_control(
    Client::Impl& c, uint64_t deadline_ns,
    const std::function<bool(const control::ControlMessage&)>& is_answer) {
  std::vector<int> got;
  auto take_fds = [&] {
    for (int f : got) c.rx_fds.push_back(f);
    got.clear();
  };
  for (;;) {
    // Frames already buffered first.
    for (;;) {
      auto f = c.reader.next();
      if (!f) {
        if (f.error() == Errc::TooLarge) return fail(Errc::Corrupt, "busd sent an oversize control frame");
        break;
      }
      auto m = verify_control(*f, defaults::kMaxMessageSize);
      if (!m) return fail(Errc::Corrupt, "busd sent a control message that does not verify");
      const control::ControlMessage& msg = **m;
      switch (msg.body_type()) {
        case control::Body::Heartbeat: {
          auto hb = control::CreateHeartbeat(c.fbb, msg.body_as_Heartbeat()->seq(), clock::mono_ns());
          if (auto s = c.send_control(control::Body::Heartbeat, hb.Union()); !s) return s;
          continue;
        }
        case control::Body::Goodbye:
          // busd is draining: keep working until it closes the socket, then reconnect.
          continue;
        case control::Body::LaneOpen: c.on_lane_open(*msg.body_as_LaneOpen()); continue;
        case control::Body::LaneClose: c.on_lane_close(*msg.body_as_LaneClose()); continue;
        case control::Body::LogOpen: c.on_log_open(*msg.body_as_LogOpen()); continue;
        case control::Body::Route: c.on_route(*msg.body_as_Route()); continue;
        default:
          break;
      }
      if (is_answer && is_answer(msg)) return {};
    }
    if (!is_answer) {
      // Non-blocking pump: one read, then done.
      auto r = sock::receive(c.sock, c.reader, &got);
      take_fds();
      if (!r) {
        if (r.error() == Errc::WouldBlock) return {};
        return fail(Errc::Closed, "busd closed the control connection");
      }
      continue;
    }
    const uint64_t now = clock::mono_ns();
    if (now >= deadline_ns) return fail(Errc::Timeout, "busd did not answer in time");
    pollfd p{c.sock, POLLIN, 0};
    const int ms = static_cast<int>(std::min<uint64_t>((deadline_ns - now) / kMs + 1, 1000));
    if (::poll(&p, 1, ms) < 0 && errno != EINTR) return tl::unexpected(system_error("poll", errno));
    if (p.revents == 0) continue;
    auto r = sock::receive(c.sock, c.reader, &got);
    take_fds();
    if (!r && r.error() != Errc::WouldBlock) return fail(Errc::Closed, "busd closed the control connection");
  }
}

Expected<void> Client::Impl::pump_control_nowait() {
  return read_control(*this, 0, nullptr);
}

Expected<void> Client::Impl::pump_control(
    uint64_t want_ref, uint64_t deadline_ns,
    const std::function<Expected<void>(const control::ControlMessage&)>& on_answer) {
  Expected<void> answer = fail(Errc::Timeout, "no answer");
  auto r = read_control(*this, deadline_ns, [&](const control::ControlMessage& m) {
    uint64_t ref = 0;
    switch (m.body_type()) {
      case control::Body::Ok: ref = m.body_as_Ok()->ref_seq(); break;
      case control::Body::ErrorReply: ref = m.body_as_ErrorReply()->ref_seq(); break;
      case control::Body::AgentList: ref = m.body_as_AgentList()->ref_seq(); break;
      default: return false;
    }
    if (ref != want_ref) return false;
    if (m.body_type() == control::Body::ErrorReply) {
      const auto* e = m.body_as_ErrorReply();
      answer = fail(e->code(), e->message() != nullptr ? e->message()->str() : std::string());
    } else {
      answer = on_answer(m);
    }
    return true;
  });
  if (!r) return r;
  return answer;
}

Expected<void> Client::Impl::connect_once() {
  std::string tried;
  const std::string path = pick_socket(opts, &tried);
  // "tcp://host:port", "tls://host:port": a remote agent, through a stand-in on a socketpair
  // (tcp_proxy.cpp).
  const bool remote = path.starts_with("tcp://") || path.starts_with("tls://");
  auto fd = remote ? start_tcp_proxy(std::string_view(path).substr(6), static_cast<int>(opts.connect_timeout.count()),
                                     path.starts_with("tls://"), opts)
                   : dial(path);
  if (!fd) {
    Error e = fd.error();
    if (opts.address.empty()) e.context("looked for busd at " + tried);
    return tl::unexpected(e);
  }
  sock = *fd;
  reader = sock::FrameReader(defaults::kMaxMessageSize);
  const uint64_t deadline = clock::mono_ns() + static_cast<uint64_t>(opts.connect_timeout.count()) * kMs;
  close_rx_fds();

  // Hello -> Welcome (or an ErrorReply naming both versions).
  auto hello = control::CreateHelloDirect(fbb, kProtocolVersion, kProtocolVersion, kSdkName,
                                          static_cast<uint32_t>(::getpid()));
  const auto sent = send_control(control::Body::Hello, hello.Union());
  // Waits for `want` (then calls on_match) or an ErrorReply (then fails with its code).
  Expected<void> answer;
  auto await = [&](control::Body want, auto&& on_match) -> Expected<void> {
    answer = fail(Errc::Timeout, std::string("no ") + control::EnumNameBody(want) + " from busd");
    return read_control(*this, deadline, [&](const control::ControlMessage& m) {
      if (m.body_type() == want) {
        on_match(m);
        answer = {};
        return true;
      }
      if (m.body_type() == control::Body::ErrorReply) {
        const auto* e = m.body_as_ErrorReply();
        answer = fail(e->code(), e->message() ? e->message()->str() : "refused");
        return true;
      }
      return false;
    });
  };
  auto r = await(control::Body::Welcome, [&](const control::ControlMessage& m) {
    max_message = m.body_as_Welcome()->max_message_size();
  });
  if (!sent) {
    // busd may have refused the connection at once (an ErrorReply, then close: too many
    // connections): its reason beats "the socket closed".
    if (!answer && answer.error().code() != Errc::Timeout) return answer;
    return sent;
  }
  if (!r) return r;
  if (!answer) return answer;

  // Register -> Registered with the ring segment and its eventfds.
  std::vector<flatbuffers::Offset<flatbuffers::String>> caps;
  for (const auto& cap : opts.capabilities) caps.push_back(fbb.CreateString(cap));
  auto reg = control::CreateRegisterDirect(fbb, opts.name.c_str(), &caps);
  if (auto s = send_control(control::Body::Register, reg.Union()); !s) return s;
  uint64_t seg_size = 0, to_busd = 0, to_agent = 0, lines_at = 0;
  std::string given_inbox;
  r = await(control::Body::Registered, [&](const control::ControlMessage& m) {
    const auto* g = m.body_as_Registered();
    agent_id = g->agent_id();
    if (g->inbox() != nullptr) given_inbox = g->inbox()->str();
    seg_size = g->segment_size();
    to_busd = g->to_busd_offset();
    to_agent = g->to_agent_offset();
    lines_at = g->lines_offset();
  });
  int fds[5];
  if (!r || !answer || rx_fds.size() != 5 || !take_fds(5, fds)) {
    const size_t n = rx_fds.size();
    close_rx_fds();
    if (!r) return r;
    if (!answer) return answer;
    return fail(Errc::Corrupt, "busd sent " + std::to_string(n) + " descriptors, expected 5");
  }
  for (int i = 0; i < 4; ++i) this->fds[i] = shm::EventFd(fds[1 + i]);
  auto seg = shm::Segment::attach_fd(fds[0], seg_size);
  if (!seg) return tl::unexpected(seg.error().context("mapping the rings busd gave us"));
  segment = std::move(*seg);
  const auto bytes = segment.bytes();
  if (to_busd >= bytes.size() || to_agent >= bytes.size()) {
    return fail(Errc::Corrupt, "ring offsets outside the segment");
  }
  auto o = shm::RingProducer::attach(bytes.subspan(to_busd), {this->fds[0].fd(), this->fds[1].fd()});
  auto i = shm::RingConsumer::attach(bytes.subspan(to_agent), {this->fds[2].fd(), this->fds[3].fd()});
  if (!o) return tl::unexpected(o.error());
  if (!i) return tl::unexpected(i.error());
  out = std::move(*o);
  in = std::move(*i);
  // Lanes: the route epoch busd bumps (absent from an older busd, and for a remote agent).
  lines = nullptr;
  epoch_seen = 0;
  if (lines_at != 0 && lines_at % alignof(shm::lane::AgentLines) == 0 &&
      lines_at + sizeof(shm::lane::AgentLines) <= bytes.size()) {
    lines = reinterpret_cast<shm::lane::AgentLines*>(bytes.data() + lines_at);
    epoch_seen = lines->route_epoch.load(std::memory_order_acquire);
  }
  // busd names the inbox (with links: "_INBOX.<node>.<id>"); an older busd does not.
  inbox = given_inbox.empty() ? std::string("_INBOX.").append(std::to_string(agent_id)) : std::move(given_inbox);
  request_templates.clear();  // their reply_to names the old inbox
  last_request = {};
  return {};
}

void Client::Impl::disconnect(const Error& why, bool reconnect) {
  if (reservation.open) reservation = Reservation{false, true, {}, 0};  // its ring is going
  if (dispatching > 0) {
    // From a handler (a reply() that found busd gone), or from dispatch itself: the ring being
    // read and the Message the handler holds stay mapped until the outermost dispatch returns,
    // which then tears down (finish_deferred_teardown). The state changes now; no reconnect
    // before the teardown (ensure_connected).
    if (sock >= 0) ::close(sock);
    sock = -1;
    if (!teardown_deferred) {
      teardown_deferred = true;
      deferred_reconnect = reconnect;
      deferred_why = why;
    }
    set_state(reconnect && opts.reconnect ? ConnectionState::Disconnected : ConnectionState::Closed, &why);
    return;
  }
  // What busd delivered before it went is still ours: hand it to the handlers first (busd
  // drains to live subscribers when it stops). Only when busd went away: never from close() or
  // a destructor (handlers may refer to what is being destroyed; drain() delivers first), not
  // after a corrupt ring, and not recursively.
  if (reconnect && in.attached() && why.code() != Errc::Corrupt && !disconnecting) {
    disconnecting = true;
    bool got = false;
    (void)dispatch(SIZE_MAX, 0, &got);
    disconnecting = false;
  }
  teardown(why, reconnect);
}

void Client::Impl::finish_deferred_teardown() {
  teardown_deferred = false;
  teardown(deferred_why, deferred_reconnect);
}

void Client::Impl::teardown(const Error& why, bool reconnect) {
  drop_lanes();
  if (sock >= 0) ::close(sock);
  sock = -1;
  out = {};
  in = {};
  segment = {};
  for (auto& f : fds) f = shm::EventFd();
  for (auto& s : subs) s.active = false;
  reconnect_backoff_ns = 50 * kMs;
  last_reconnect_try_ns = clock::mono_ns();
  set_state(reconnect && opts.reconnect ? ConnectionState::Disconnected : ConnectionState::Closed, &why);
}

Expected<void> Client::Impl::subscribe_remote(uint32_t sid) {
  const Subscription& s = subs[sid];
  auto body = control::CreateSubscribeDirect(fbb, sid, s.pattern.c_str(),
                                             s.group.empty() ? nullptr : s.group.c_str(),
                                             static_cast<control::SlowPolicy>(s.slow));
  if (auto r = send_control(control::Body::Subscribe, body.Union()); !r) return r;
  const uint64_t deadline = clock::mono_ns() + static_cast<uint64_t>(opts.control_timeout.count()) * kMs;
  return pump_control(control_seq, deadline, [](const control::ControlMessage&) -> Expected<void> { return {}; });
}

bool Client::Impl::ensure_connected() {
  if (state == ConnectionState::Connected) return true;
  // Not from inside a dispatch: the old rings are still being read (disconnect() deferred
  // their teardown to the end of the outermost dispatch).
  if (state != ConnectionState::Disconnected || dispatching > 0 || teardown_deferred) return false;
  const uint64_t now = clock::mono_ns();
  if (now - last_reconnect_try_ns < reconnect_backoff_ns) return false;
  last_reconnect_try_ns = now;
  reconnect_backoff_ns = std::min<uint64_t>(reconnect_backoff_ns * 2, 1'000 * kMs);
  if (auto c = connect_once(); !c) {
    if (sock >= 0) ::close(sock);
    sock = -1;
    return false;
  }
  // Resubscribe everything, with the same ids (handlers keep working). A subscription busd now
  // refuses (the ACL changed, a limit shrank) is dropped and reported; only a lost connection
  // makes the reconnect fail.
  std::optional<Error> refused;
  for (uint32_t sid = 1; sid < subs.size(); ++sid) {
    if (!subs[sid].handler) continue;
    if (auto r = subscribe_remote(sid); !r) {
      const Errc code = r.error().code();
      if (code == Errc::Closed || code == Errc::Timeout || code == Errc::Corrupt) {
        disconnect(r.error(), true);
        return false;
      }
      ++stats.resubscribe_failures;
      refused = Error(r.error()).context("resubscribing to '" + subs[sid].pattern + "' (dropped)");
      subs[sid] = Subscription{};
      continue;
    }
    subs[sid].active = true;
  }
  ++stats.reconnects;
  set_state(ConnectionState::Connected, refused ? &*refused : nullptr);
  return true;
}

}  // namespace bus
