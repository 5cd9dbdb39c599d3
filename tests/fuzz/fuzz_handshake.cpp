// Fuzz target: the handshakes a stranger reaches before busd trusts it, driven by arbitrary
// sequences of frames, with busd's answer to each frame checked against what it must be.
//
// Modes (first input byte % 4):
//   0  busd's control socket (Unix): an agent's Hello / Welcome / Register / Registered and what
//      follows (bus/daemon/control.cpp: on_agent_socket, handle_control, on_hello, on_register)
//   1  busd's tcp_listen (a remote agent): the same handshake in channel frames
//      (tcp_agents.cpp: on_tcp_agent)
//   2  busd's cluster listener (a peer busd): the link greeter's Hello (links.cpp: on_greeter)
//   3  bus::links::Peer's link handshake (peer.cpp: adopt / adopt_greeted, receive, tick) over a
//      real TcpLink on a socketpair, without busd
// Modes 0-2 talk to a real busd (bus::daemon::Daemon, started once per process in a thread of
// its own, in a private directory, on loopback ports) over real sockets. The harness runs the
// same frame decoder busd uses (sock::FrameReader with busd's maximum) on the bytes it sends, so
// it knows where each frame ends, and checks busd's answer to each one:
//   - before Welcome anything but a Hello that shares busd's protocol version, and before
//     Registered anything but a Register with a valid free name, is answered with an
//     ErrorReply (InvalidArgument, VersionMismatch, AlreadyExists; BadMessage for a frame that
//     is not a ControlMessage, TooLarge for one above the maximum) and the connection closed;
//   - after Registered: a second Hello or Register is refused with an ErrorReply (never a
//     second Registered), Subscribe / Unsubscribe get Ok or an ErrorReply naming their seq,
//     FindAgents an AgentList, other bodies Unsupported, Goodbye closes;
//   - the link greeter closes a connection whose first frame is not a Hello it accepts, and
//     answers an accepted one with its own Hello;
//   - the Peer fails the handshake (handshake_failures + 1, state Waiting) on a first frame
//     that is not an acceptable Hello, or after handshake_ms without one, and goes Up with the
//     remote Hello on an acceptable one; its first output is its own Hello.
// After each input busd must have forgotten the agent it registered (FindAgents from a resident
// agent). No answer within 10 s, an unexpected answer or a crash in busd (same process) fails.
//
// Two busd bugs this target found are fixed and stay covered by its seeds: a registered
// agent's second Register was accepted (unix_register_twice), and a control frame behind one
// whose length is not a multiple of 8 was verified at a misaligned address (UBSan).
//
// Input after the mode byte: records [op u8][n u8][n bytes]; see the op tables below. Node
// names of peers that dial in come mostly from a short list: busd keeps a peer slot for every
// node name that ever dialed in (links.cpp on_greeter, add_peer), so a run of random names
// grows busd (slowly: one slot per accepted Hello with a new name).
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bus/clock.hpp"
#include "bus/control.hpp"
#include "bus/limits.hpp"
#include "daemon/daemon.hpp"
#include "daemon/log.hpp"
#include "fuzz_check.hpp"
#include "link/wire.hpp"
#include "links/peer.hpp"
#include "socket/endpoint.hpp"
#include "socket/frame.hpp"
#include "tcp/tcp_link.hpp"

using namespace bus;

namespace {

constexpr uint32_t kControlMax = 64 * 1024;  // busd's control frame maximum (control.cpp)
constexpr uint32_t kMaxMessage = 64 * 1024;  // limits.max_message_size of the busd here
constexpr uint32_t kLinkSlack = 4096;        // links.cpp kMaxFrameSlack
constexpr int kAnswerMs = 10'000;
constexpr char kNode[] = "fuzzbusd";

#define FUZZ_FAIL(why)                                                          \
  do {                                                                          \
    std::fprintf(stderr, "fuzz_handshake: %s\n", std::string(why).c_str());     \
    ::bus::fuzz::check_failed("busd answered wrongly (above)", __FILE__, __LINE__); \
  } while (0)

uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  FUZZ_CHECK(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  FUZZ_CHECK(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

int dial_unix(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    FUZZ_FAIL("connect to busd's socket: " + std::string(std::strerror(errno)));
  }
  return fd;
}

int dial_loopback(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  FUZZ_CHECK(fd >= 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    FUZZ_FAIL("connect to busd's port " + std::to_string(port) + ": " + std::strerror(errno));
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Writes all of `b` (blocking socket). False when busd closed the connection.
bool write_all(int fd, std::span<const std::byte> b) {
  size_t off = 0;
  while (off < b.size()) {
    const ssize_t n = ::send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// busd's frames sit at any offset of a stream buffer, and FlatBuffers reads a message in place
// with its root offset 4-byte aligned: the harness verifies an aligned copy.
Result<const control::ControlMessage*> verify_aligned(std::span<const std::byte> b, uint32_t max,
                                                      std::vector<uint64_t>& store) {
  store.assign(b.size() / 8 + 1, 0);
  if (!b.empty()) std::memcpy(store.data(), b.data(), b.size());
  return verify_control({reinterpret_cast<const std::byte*>(store.data()), b.size()}, max);
}

// ------------------------------------------------------------------------------- the busd

struct World {
  std::filesystem::path dir;
  std::string socket;
  uint16_t agent_port = 0;
  uint16_t link_port = 0;
  daemon::Daemon* busd = nullptr;  // lives for the process (the fuzzer exits without stopping it)
  int resident = -1;               // a registered agent that asks busd who is there
  sock::FrameReader resident_in{1u << 20};
  uint64_t resident_seq = 0;
  uint64_t resident_beat_ns = 0;
};

World* g_world = nullptr;

void remove_dir() {
  if (g_world != nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(g_world->dir, ec);
  }
}

std::vector<std::byte> control_bytes(flatbuffers::FlatBufferBuilder& fbb, uint64_t seq, control::Body t,
                                     flatbuffers::Offset<void> body) {
  auto m = control::CreateControlMessage(fbb, seq, t, body);
  control::FinishControlMessageBuffer(fbb, m);
  std::vector<std::byte> out(reinterpret_cast<const std::byte*>(fbb.GetBufferPointer()),
                             reinterpret_cast<const std::byte*>(fbb.GetBufferPointer()) + fbb.GetSize());
  fbb.Clear();
  return out;
}

// Reads control messages from a Unix control connection until `want` accepts one (busd's
// heartbeats are skipped). nullopt: closed, or nothing within the time.
template <class Want>
std::optional<std::vector<std::byte>> read_control_unix(int fd, sock::FrameReader& in, Want&& want, bool* closed) {
  const uint64_t deadline = clock::mono_ns() + uint64_t{kAnswerMs} * 1'000'000;
  std::vector<uint64_t> store;
  for (;;) {
    for (;;) {
      auto f = in.next();
      if (!f) {
        FUZZ_CHECK(f.error() == Errc::WouldBlock);
        break;
      }
      auto m = verify_aligned(*f, 1u << 20, store);
      if (!m) FUZZ_FAIL("busd sent a control frame that does not verify");
      if ((*m)->body_type() == control::Body::Heartbeat) continue;
      if (want(**m)) return std::vector<std::byte>(f->begin(), f->end());
    }
    const uint64_t now = clock::mono_ns();
    if (now >= deadline) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>((deadline - now) / 1'000'000 + 1));
    if (p.revents == 0) continue;
    std::vector<int> fds;
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    auto r = sock::receive(fd, in, &fds);
    ::fcntl(fd, F_SETFL, flags);
    for (int x : fds) ::close(x);
    if (!r && r.error() != Errc::WouldBlock) {
      *closed = true;
      // What was read before the end is still looked at.
      for (;;) {
        auto f = in.next();
        if (!f) return std::nullopt;
        auto m = verify_aligned(*f, 1u << 20, store);
        if (m && (*m)->body_type() != control::Body::Heartbeat && want(**m)) {
          return std::vector<std::byte>(f->begin(), f->end());
        }
      }
    }
  }
}

void resident_send(World& w, control::Body t, flatbuffers::Offset<void> body, flatbuffers::FlatBufferBuilder& fbb) {
  auto b = control_bytes(fbb, ++w.resident_seq, t, body);
  if (!sock::send_frame(w.resident, b)) FUZZ_FAIL("busd closed the resident agent's connection");
}

// How many agents named `name` busd lists (asked by the resident agent).
size_t agents_named(World& w, const std::string& name) {
  flatbuffers::FlatBufferBuilder fbb;
  const uint64_t now = clock::mono_ns();
  if (now - w.resident_beat_ns > 1'000'000'000ull) {  // busd would drop a silent agent
    w.resident_beat_ns = now;
    resident_send(w, control::Body::Heartbeat, control::CreateHeartbeat(fbb, 1, now).Union(), fbb);
  }
  resident_send(w, control::Body::FindAgents, control::CreateFindAgentsDirect(fbb, "", name.c_str()).Union(), fbb);
  const uint64_t seq = w.resident_seq;
  bool closed = false;
  auto got = read_control_unix(w.resident, w.resident_in, [&](const control::ControlMessage& m) {
    return m.body_type() == control::Body::AgentList && m.body_as_AgentList()->ref_seq() == seq;
  }, &closed);
  if (!got) FUZZ_FAIL("the resident agent got no AgentList");
  auto m = verify_control(*got, 1u << 20);
  const auto* list = (*m)->body_as_AgentList()->agents();
  size_t n = 0;
  if (list != nullptr) {
    for (const auto* a : *list) n += a->name() != nullptr && a->name()->str() == name;
  }
  return n;
}

World& world() {
  if (g_world != nullptr) return *g_world;
  g_world = new World;
  World& w = *g_world;
  w.dir = std::filesystem::temp_directory_path() / ("busd-fuzz-handshake-" + std::to_string(::getpid()));
  std::filesystem::remove_all(w.dir);
  std::filesystem::create_directories(w.dir);
  std::atexit(remove_dir);
  w.socket = (w.dir / "busd.sock").string();
  const char* level = std::getenv("FUZZ_BUSD_LOG");  // error (default) | warn | info | debug

  daemon::Options o;
  o.config = config::defaults();
  o.config.socket = w.socket;
  o.config.socket_mode = 0600;
  o.config.shm_dir = w.dir.string();
  o.config.log_level = level != nullptr ? level : "error";
  o.config.wait = "block";  // one thread of this process, asleep when idle
  o.config.limits.max_message_size = kMaxMessage;
  o.config.limits.ring_capacity = 256 * 1024;
  o.config.limits.max_agents = 64;
  o.config.cluster.node = kNode;
  o.config.cluster.handshake_ms = 2000;
  std::promise<std::string> started;
  auto ready = started.get_future();
  // Ports: free ones of this moment (another process may take one first: then start fails
  // and says so).
  w.agent_port = free_port();
  w.link_port = free_port();
  o.config.tcp_listen = "127.0.0.1:" + std::to_string(w.agent_port);
  o.config.cluster.listen = "127.0.0.1:" + std::to_string(w.link_port);
  w.busd = new daemon::Daemon(std::move(o));
  // start() blocks SIGINT/SIGTERM/SIGHUP for its signalfd: in busd's own thread only, so that
  // the fuzzer's thread keeps them.
  std::thread([&w, &started] {
    auto s = w.busd->start();
    started.set_value(s ? std::string() : s.error().message());
    if (s) w.busd->run();
  }).detach();
  if (auto err = ready.get(); !err.empty()) FUZZ_FAIL("busd did not start: " + err);

  // The resident agent: registered once, for the whole run.
  w.resident = dial_unix(w.socket);
  flatbuffers::FlatBufferBuilder fbb;
  bool closed = false;
  resident_send(w, control::Body::Hello,
                control::CreateHelloDirect(fbb, kProtocolVersion, kProtocolVersion, "fuzz", ::getpid()).Union(), fbb);
  if (!read_control_unix(w.resident, w.resident_in,
                         [](const control::ControlMessage& m) { return m.body_type() == control::Body::Welcome; }, &closed)) {
    FUZZ_FAIL("no Welcome for the resident agent");
  }
  resident_send(w, control::Body::Register, control::CreateRegisterDirect(fbb, "resident").Union(), fbb);
  if (!read_control_unix(w.resident, w.resident_in,
                         [](const control::ControlMessage& m) { return m.body_type() == control::Body::Registered; }, &closed)) {
    FUZZ_FAIL("no Registered for the resident agent");
  }
  w.resident_beat_ns = clock::mono_ns();
  return w;
}

// ------------------------------------------------------------------ modes 0 and 1: an agent

// control.cpp valid_agent_name.
bool valid_agent_name(std::string_view n) {
  if (n.empty() || n.size() > 63) return false;
  if (n.front() == '$' || n.starts_with("_INBOX")) return false;  // busd's own subjects
  for (char c : n) {
    if (!(c > ' ' && c < 0x7F && c != '@')) return false;
  }
  return true;
}

struct Expect {
  // ReplyThenEnd: the answer is checked, then the input ends (busd may or may not close).
  enum Kind { Nothing, Reply, ReplyThenClose, ReplyThenEnd, Close, Loose } kind = Nothing;
  control::Body body = control::Body::NONE;  // Reply: this body (NONE: Ok or ErrorReply)
  Errc code = Errc::Ok;                     // an ErrorReply: this code (Ok: any code)
  uint64_t ref = 0;                         // the seq the answer names (0: not checked)
  bool error_only = false;                  // an ErrorReply and nothing else
};

class AgentSide {
 public:
  AgentSide(World& w, bool tcp) : w_(w), tcp_(tcp), model_(tcp ? std::max(kControlMax, kMaxMessage) + uint32_t(tcp::kChanHeader) : kControlMax) {
    fd_ = tcp ? dial_loopback(w.agent_port) : dial_unix(w.socket);
  }
  ~AgentSide() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Sends `bytes`, stopping where busd closes; checks each answer. False once the connection
  // is over (closed as it had to be) or its answers cannot be predicted any more.
  bool send(std::span<const std::byte> bytes) {
    size_t sent = 0;
    for (size_t i = 0; i < bytes.size(); ++i) {
      if (model_.feed(bytes.subspan(i, 1)) != 1) FUZZ_FAIL("model reader refused a byte");
      for (;;) {
        auto f = model_.next();
        Expect e;
        if (!f) {
          if (f.error() == Errc::WouldBlock) break;
          e = Expect{Expect::ReplyThenClose, control::Body::ErrorReply, Errc::TooLarge, 0, true};
        } else {
          e = expect_for(*f);
        }
        if (!write_all(fd_, bytes.subspan(sent, i + 1 - sent))) {
          // busd may close first only where an answer and a close are due.
          if (e.kind != Expect::ReplyThenClose && e.kind != Expect::ReplyThenEnd && e.kind != Expect::Close) FUZZ_FAIL("busd closed the connection early");
        }
        sent = i + 1;
        if (!check(e)) return false;
        if (!f) return false;
      }
    }
    if (sent < bytes.size() && !write_all(fd_, bytes.subspan(sent))) {
      FUZZ_FAIL("busd closed the connection while a frame was incomplete");
    }
    return true;
  }

  // At the end: busd still serves the connection (a FindAgents is answered), then it closes and
  // busd forgets the agent.
  void finish(flatbuffers::FlatBufferBuilder& fbb) {
    if (phase_ == Phase::Active && !loose_ && model_.pending() == 0) {
      auto b = control_frame(control_bytes(fbb, ++seq_, control::Body::FindAgents,
                                           control::CreateFindAgentsDirect(fbb, "", "*").Union()));
      (void)send(b);
    }
    ::close(fd_);
    fd_ = -1;
    if (!name_.empty()) {
      const uint64_t deadline = clock::mono_ns() + uint64_t{kAnswerMs} * 1'000'000;
      while (agents_named(w_, name_) != 0) {
        if (clock::mono_ns() > deadline) FUZZ_FAIL("busd still lists agent '" + name_ + "' after its connection closed");
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
  }

  // A control message as this transport frames it.
  std::vector<std::byte> control_frame(const std::vector<std::byte>& msg) const {
    std::vector<std::byte> out;
    if (tcp_) {
      tcp::append_chan(out, tcp::kChanControl, 0, msg);
    } else {
      sock::append_frame(out, msg);
    }
    return out;
  }
  uint64_t next_seq() { return ++seq_; }
  bool tcp() const { return tcp_; }
  bool active() const { return phase_ == Phase::Active; }

 private:
  enum class Phase { Hello, Register, Active };

  Expect expect_for(std::span<const std::byte> frame) {
    std::span<const std::byte> body = frame;
    if (tcp_) {
      auto c = tcp::parse_chan(frame);
      if (!c) return {Expect::ReplyThenClose, control::Body::ErrorReply, Errc::BadMessage, 0, true};
      // The first frame may be a token (this busd has no [[tokens]]: refused); later, never.
      const bool first = !admitted_;
      admitted_ = true;
      if (c->channel == tcp::kChanAuth) {
        return {Expect::ReplyThenClose, control::Body::ErrorReply, first ? Errc::PermissionDenied : Errc::BadMessage, 0, true};
      }
      if (c->channel != tcp::kChanControl) {
        if (phase_ != Phase::Active) return {Expect::ReplyThenClose, control::Body::ErrorReply, Errc::InvalidArgument, 0, true};
        loose_ = true;  // an envelope: the router may answer (ACL, size) later
        return {Expect::Loose};
      }
      body = c->body;
    }
    auto v = verify_aligned(body, kControlMax, scratch_);
    if (!v) return {Expect::ReplyThenClose, control::Body::ErrorReply, Errc::BadMessage, 0, true};
    const control::ControlMessage& m = **v;
    const control::Body t = m.body_type();
    const uint64_t seq = m.seq();
    if (phase_ == Phase::Hello && t != control::Body::Hello) {
      return {Expect::ReplyThenClose, control::Body::ErrorReply, Errc::InvalidArgument, seq, true};
    }
    if (phase_ == Phase::Register && t != control::Body::Register) {
      return {Expect::ReplyThenClose, control::Body::ErrorReply, Errc::InvalidArgument, seq, true};
    }
    switch (t) {
      case control::Body::Hello: {
        if (phase_ != Phase::Hello) return {Expect::Reply, control::Body::ErrorReply, Errc::InvalidArgument, seq, true};
        const auto* h = m.body_as_Hello();
        const uint32_t hi = h->protocol_version();
        const uint32_t lo = h->min_protocol_version() != 0 ? h->min_protocol_version() : hi;
        if (kProtocolVersion < lo || kProtocolVersion > hi) {
          return {Expect::ReplyThenClose, control::Body::ErrorReply, Errc::VersionMismatch, seq, true};
        }
        phase_ = Phase::Register;
        return {Expect::Reply, control::Body::Welcome};
      }
      case control::Body::Register: {
        const std::string name = m.body_as_Register()->name()->str();
        if (phase_ == Phase::Active) {
          // Registered once: a second Register must not register again (under either name).
          // Whether busd then keeps the connection is its choice: the input ends here.
          return {Expect::ReplyThenEnd, control::Body::ErrorReply, Errc::Ok, seq, true};
        }
        if (!valid_agent_name(name)) return {Expect::ReplyThenClose, control::Body::ErrorReply, Errc::InvalidArgument, seq, true};
        if (name == "resident") return {Expect::ReplyThenClose, control::Body::ErrorReply, Errc::AlreadyExists, seq, true};
        phase_ = Phase::Active;
        name_ = name;
        return {Expect::Reply, control::Body::Registered};
      }
      case control::Body::Subscribe:
      case control::Body::Unsubscribe: return {Expect::Reply, control::Body::NONE, Errc::Ok, seq};
      case control::Body::FindAgents: return {Expect::Reply, control::Body::AgentList, Errc::Ok, seq};
      case control::Body::Heartbeat: return {Expect::Nothing};
      case control::Body::Goodbye: return {Expect::Close};
      case control::Body::RouteQuery:
        loose_ = true;  // lanes may open (LaneOpen, LogOpen) before the Route
        return {Expect::Loose};
      default: return {Expect::Reply, control::Body::ErrorReply, Errc::Unsupported, seq, true};
    }
  }

  // Reads busd's answer to one frame. False when the input must end here.
  bool check(const Expect& e) {
    if (e.kind == Expect::Nothing) return true;
    if (e.kind == Expect::Loose) return true;
    bool closed = false;
    if (e.kind == Expect::Close) {
      if (!wait_closed()) FUZZ_FAIL("busd did not close the connection after Goodbye");
      return false;
    }
    if (loose_) {
      // Answers to earlier envelopes or route queries may come first: only the end matters.
      if (e.kind == Expect::ReplyThenClose) {
        if (!wait_closed()) FUZZ_FAIL("busd kept a connection it had to close");
      }
      return e.kind == Expect::Reply;  // ReplyThenEnd: the input ends
    }
    control::Body got = control::Body::NONE;
    Errc code = Errc::Ok;
    uint64_t ref = 0;
    uint32_t fds = 0;
    std::string text;
    auto accept = [&](std::span<const std::byte> frame, uint32_t nfds) {
      auto m = verify_aligned(frame, 1u << 20, scratch_);
      if (!m) FUZZ_FAIL("busd sent a control frame that does not verify");
      got = (*m)->body_type();
      fds = nfds;
      if (got == control::Body::ErrorReply) {
        code = (*m)->body_as_ErrorReply()->code();
        ref = (*m)->body_as_ErrorReply()->ref_seq();
        if ((*m)->body_as_ErrorReply()->message() != nullptr) text = (*m)->body_as_ErrorReply()->message()->str();
      } else if (got == control::Body::Ok) {
        ref = (*m)->body_as_Ok()->ref_seq();
      } else if (got == control::Body::AgentList) {
        ref = (*m)->body_as_AgentList()->ref_seq();
      } else if (got == control::Body::Welcome) {
        if ((*m)->body_as_Welcome()->protocol_version() != kProtocolVersion) FUZZ_FAIL("Welcome with another version");
      } else if (got == control::Body::Registered) {
        const auto* r = (*m)->body_as_Registered();
        if (r->agent_id() == 0) FUZZ_FAIL("Registered with agent id 0");
        text = r->name() != nullptr ? r->name()->str() : "(none)";
      }
    };
    if (!read_one(accept, closed)) {
      FUZZ_FAIL(closed ? "busd closed the connection without the answer due" : "no answer from busd within 10 s");
    }
    if (got == control::Body::Registered && e.body != control::Body::Registered) {
      FUZZ_FAIL("busd registered an agent that had to be refused (" + std::string(control::EnumNameBody(e.body)) +
                " due): '" + text + "'" +
                (e.kind == Expect::ReplyThenEnd ? ", a second Register of agent '" + name_ + "', already registered" : std::string()));
    }
    if (got == control::Body::Registered && text != name_) FUZZ_FAIL("Registered names '" + text + "', not '" + name_ + "'");
    if (e.error_only || e.body == control::Body::ErrorReply) {
      if (got != control::Body::ErrorReply) FUZZ_FAIL(std::string("an ErrorReply was due, got ") + control::EnumNameBody(got));
      if (e.code != Errc::Ok && code != e.code) {
        FUZZ_FAIL("ErrorReply " + std::string(errc_name(code)) + " '" + text + "', " + std::string(errc_name(e.code)) + " was due");
      }
      if (text.empty()) FUZZ_FAIL("an ErrorReply without a message");
    } else if (e.body == control::Body::NONE) {
      if (got != control::Body::Ok && got != control::Body::ErrorReply) FUZZ_FAIL(std::string("Ok or ErrorReply due, got ") + control::EnumNameBody(got));
    } else if (got != e.body) {
      FUZZ_FAIL(std::string(control::EnumNameBody(e.body)) + " was due, got " + control::EnumNameBody(got) +
                (got == control::Body::ErrorReply ? " '" + text + "'" : std::string()));
    }
    if (e.ref != 0 && (got == control::Body::ErrorReply || got == control::Body::Ok || got == control::Body::AgentList) && ref != e.ref) {
      FUZZ_FAIL("the answer names seq " + std::to_string(ref) + ", not " + std::to_string(e.ref));
    }
    if (got == control::Body::Registered && !tcp_ && fds != 5) FUZZ_FAIL("Registered without its 5 descriptors");
    if (e.kind == Expect::ReplyThenClose) {
      if (!wait_closed()) FUZZ_FAIL("busd answered but kept a connection it had to close");
      return false;
    }
    return e.kind == Expect::Reply;
  }

  // The next control message from busd (heartbeats skipped; Unix: descriptors closed).
  template <class F>
  bool read_one(F&& accept, bool& closed) {
    const uint64_t deadline = clock::mono_ns() + uint64_t{kAnswerMs} * 1'000'000;
    std::vector<int> fds;
    for (;;) {
      for (;;) {
        auto f = in_.next();
        if (!f) break;
        std::span<const std::byte> body = *f;
        if (tcp_) {
          auto c = tcp::parse_chan(*f);
          if (!c) FUZZ_FAIL("busd sent a malformed channel frame");
          if (c->channel != tcp::kChanControl) continue;  // a delivery
          body = c->body;
        }
        auto m = verify_aligned(body, 1u << 20, scratch2_);
        if (!m) FUZZ_FAIL("busd sent a control frame that does not verify");
        if ((*m)->body_type() == control::Body::Heartbeat) continue;
        accept(body, static_cast<uint32_t>(fds.size()));
        for (int x : fds) ::close(x);
        return true;
      }
      if (closed) return false;
      const uint64_t now = clock::mono_ns();
      if (now >= deadline) return false;
      pollfd p{fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>((deadline - now) / 1'000'000 + 1));
      if (p.revents == 0) continue;
      if (!pull(&fds)) closed = true;
    }
  }

  // Reads what is there into in_. False at the end of the stream.
  bool pull(std::vector<int>* fds) {
    const int flags = ::fcntl(fd_, F_GETFL);
    ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
    bool open = true;
    if (tcp_) {
      auto room = in_.room(64 * 1024);
      const ssize_t n = ::recv(fd_, room.data(), room.size(), 0);
      if (n > 0) in_.commit(static_cast<size_t>(n));
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) open = false;
    } else {
      std::vector<int> got;
      auto r = sock::receive(fd_, in_, &got);
      fds->insert(fds->end(), got.begin(), got.end());
      if (!r && r.error() != Errc::WouldBlock) open = false;
    }
    ::fcntl(fd_, F_SETFL, flags);
    return open;
  }

  // Reads and drops until busd closes (within 10 s).
  bool wait_closed() {
    const uint64_t deadline = clock::mono_ns() + uint64_t{kAnswerMs} * 1'000'000;
    std::vector<int> fds;
    for (;;) {
      const uint64_t now = clock::mono_ns();
      if (now >= deadline) return false;
      pollfd p{fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>((deadline - now) / 1'000'000 + 1));
      if (p.revents == 0) continue;
      const bool open = pull(&fds);
      for (int x : fds) ::close(x);
      fds.clear();
      while (in_.next()) {
      }
      if (!open) return true;
    }
  }

  World& w_;
  bool tcp_;
  int fd_ = -1;
  sock::FrameReader model_;           // busd's decoder, on what this side sends
  sock::FrameReader in_{2u << 20};    // what busd sends
  Phase phase_ = Phase::Hello;
  bool loose_ = false;
  bool admitted_ = false;  // TCP: the first frame was read
  std::vector<uint64_t> scratch_, scratch2_;
  std::string name_;  // registered under this name
  uint64_t seq_ = 0;
};

std::string text_of(std::span<const uint8_t> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// Agent ops (op % 10), each with its n bytes `b`:
//   0 Hello: protocol_version b[0] % 4, min_protocol_version b[1] % 4, pid b[2..6] (any: a
//     lie changes nothing), client name the rest
//   1 Register under the name in b (raw bytes)
//   2 Register under a name of a list (b[0]): taken, remote-style, reserved-looking, too long...
//   3 Subscribe: sid b[0], policy b[1] % 4, queue group b[2] % 2 ("g"), subject the rest
//   4 Unsubscribe b[0]     5 FindAgents (name glob b)     6 Heartbeat     7 Goodbye
//   8 a frame of raw bytes (TCP: channel 'C', 'D', 'A' (a token) or b[0], then the rest)
//   9 raw bytes on the stream, no framing
void run_agent(World& w, bool tcp, std::span<const uint8_t> in) {
  AgentSide a(w, tcp);
  flatbuffers::FlatBufferBuilder fbb;
  size_t at = 0;
  static const char* const kNames[] = {"resident", "x@node", "$bus", "busd", "", "a b",
                                       "fuzz-agent", "_INBOX.1", "0123456789012345678901234567890123456789012345678901234567890123",
                                       "\xc3\xa9t\xc3\xa9", "agent.1", ">"};
  bool open = true;
  while (open && at + 2 <= in.size()) {
    const uint8_t op = in[at] % 10;
    const size_t n = std::min<size_t>(in[at + 1], in.size() - at - 2);
    const std::span<const uint8_t> b = in.subspan(at + 2, n);
    at += 2 + n;
    auto byte = [&](size_t i) -> uint8_t { return i < b.size() ? b[i] : 0; };
    std::vector<std::byte> frame;
    switch (op) {
      case 0: {
        uint32_t pid = 0;
        for (size_t i = 2; i < 6; ++i) pid = pid << 8 | byte(i);
        const std::string client = b.size() > 6 ? text_of(b.subspan(6)) : "fuzz";
        frame = a.control_frame(control_bytes(fbb, a.next_seq(), control::Body::Hello,
                                              control::CreateHelloDirect(fbb, byte(0) % 4, byte(1) % 4, client.c_str(), pid).Union()));
        break;
      }
      case 1:
      case 2: {
        const std::string name = op == 1 ? text_of(b) : kNames[byte(0) % std::size(kNames)];
        frame = a.control_frame(control_bytes(fbb, a.next_seq(), control::Body::Register,
                                              control::CreateRegister(fbb, fbb.CreateString(name)).Union()));
        break;
      }
      case 3: {
        const std::string subject = b.size() > 3 ? text_of(b.subspan(3)) : "fuzz.>";
        auto s = control::CreateSubscribeDirect(fbb, byte(0), subject.c_str(), byte(2) % 2 ? "g" : nullptr,
                                                static_cast<control::SlowPolicy>(byte(1) % 4));
        frame = a.control_frame(control_bytes(fbb, a.next_seq(), control::Body::Subscribe, s.Union()));
        break;
      }
      case 4:
        frame = a.control_frame(control_bytes(fbb, a.next_seq(), control::Body::Unsubscribe,
                                              control::CreateUnsubscribe(fbb, byte(0)).Union()));
        break;
      case 5: {
        const std::string glob = text_of(b);
        frame = a.control_frame(control_bytes(fbb, a.next_seq(), control::Body::FindAgents,
                                              control::CreateFindAgentsDirect(fbb, "", glob.c_str()).Union()));
        break;
      }
      case 6:
        frame = a.control_frame(control_bytes(fbb, a.next_seq(), control::Body::Heartbeat,
                                              control::CreateHeartbeat(fbb, byte(0), 0).Union()));
        break;
      case 7:
        frame = a.control_frame(control_bytes(fbb, a.next_seq(), control::Body::Goodbye,
                                              control::CreateGoodbyeDirect(fbb, "fuzz", 0).Union()));
        break;
      case 8: {
        const auto* p = reinterpret_cast<const std::byte*>(b.data());
        const size_t len = b.size();
        if (tcp) {
          const std::byte ch = byte(0) % 4 == 0   ? tcp::kChanControl
                               : byte(0) % 4 == 1 ? tcp::kChanData
                               : byte(0) % 4 == 2 ? tcp::kChanAuth
                                                  : std::byte{byte(0)};
          // The raw header lets reserved bytes and a control tag through too.
          std::vector<std::byte> payload;
          payload.push_back(ch);
          payload.insert(payload.end(), p + std::min<size_t>(1, len), p + len);
          sock::append_frame(frame, payload);
        } else {
          sock::append_frame(frame, std::span<const std::byte>(p, len));
        }
        break;
      }
      case 9: {
        const auto* p = reinterpret_cast<const std::byte*>(b.data());
        frame.assign(p, p + b.size());
        break;
      }
    }
    open = a.send(frame);
  }
  if (open) a.finish(fbb);
}

// ---------------------------------------------------------------- mode 2: the link greeter

// What busd's greeter must do with the first link frame: accept (true) or refuse (false).
bool greeter_accepts(std::span<const std::byte> frame) {
  auto f = link::parse_frame(frame);
  if (!f || f->type != link::FrameType::Hello) return false;
  auto h = link::parse_hello(*f);
  if (!h) return false;
  link::Hello local;
  local.cluster = "default";
  local.node = kNode;
  if (!link::negotiate(local, *h)) return false;
  return h->node != kNode;
}

// Link ops (op % 4), n bytes b:
//   0 a Hello: version b[0] % 3, oldest b[1] % 3, cluster of a list (b[2]), node of a list (b[3])
//   1 a link frame: type b[0] % 7, value b[1], body the rest      2 raw bytes
//   3 a Hello with cluster and node the raw bytes split at b[0]
std::vector<std::byte> link_op(uint8_t op, std::span<const uint8_t> b) {
  auto byte = [&](size_t i) -> uint8_t { return i < b.size() ? b[i] : 0; };
  std::vector<std::byte> out;
  static const char* const kClusters[] = {"default", "other", "", "default\n"};
  static const char* const kNodes[] = {"fz0", "fz1", "fz2", "fz3", kNode, "", "bad node", "fz0"};
  switch (op % 4) {
    case 0:
    case 3: {
      // append_hello refuses invalid names: the frame is then written by hand (version u32,
      // oldest u32, then each name as u8 length + bytes is what parse_hello reads; a name it
      // refuses is just as good an input).
      link::Hello h;
      h.version = byte(0) % 3;
      h.oldest = byte(1) % 3;
      if (op % 4 == 0) {
        h.cluster = kClusters[byte(2) % std::size(kClusters)];
        h.node = kNodes[byte(3) % std::size(kNodes)];
      } else {
        const size_t cut = std::min<size_t>(byte(0), b.size());
        h.cluster = text_of(b.subspan(std::min<size_t>(1, b.size()), cut > 0 ? cut - 1 : 0));
        h.node = text_of(b.subspan(std::max<size_t>(cut, std::min<size_t>(1, b.size()))));
      }
      if (!link::append_hello(out, h)) {
        std::vector<std::byte> body;
        auto put32 = [&](uint32_t v) {
          for (int i = 0; i < 4; ++i) body.push_back(std::byte(v >> (8 * i)));
        };
        put32(h.version);
        put32(h.oldest);
        for (const std::string* s : {&h.cluster, &h.node}) {
          body.push_back(std::byte(s->size() & 0xFF));
          for (char c : *s) body.push_back(std::byte(c));
        }
        link::append_frame(out, link::FrameType::Hello, 0, body);
      }
      break;
    }
    case 1: {
      const auto* p = reinterpret_cast<const std::byte*>(b.data());
      link::append_frame(out, static_cast<link::FrameType>(byte(0) % 7), byte(1),
                         b.size() > 2 ? std::span<const std::byte>(p + 2, b.size() - 2) : std::span<const std::byte>());
      break;
    }
    case 2: {
      const auto* p = reinterpret_cast<const std::byte*>(b.data());
      out.assign(p, p + b.size());
      break;
    }
  }
  return out;
}

// Reads until the stream ends (true) or 10 s pass (false); `seen` gets what arrived.
bool read_until_closed(int fd, std::vector<std::byte>* seen, int ms) {
  const uint64_t deadline = clock::mono_ns() + uint64_t(ms) * 1'000'000;
  std::byte buf[65536];
  for (;;) {
    const uint64_t now = clock::mono_ns();
    if (now >= deadline) return false;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>((deadline - now) / 1'000'000 + 1));
    if (p.revents == 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
    if (n > 0 && seen != nullptr) seen->insert(seen->end(), buf, buf + n);
  }
}

void run_greeter(World& w, std::span<const uint8_t> in) {
  const int fd = dial_loopback(w.link_port);
  sock::FrameReader model(kMaxMessage + kLinkSlack);  // the greeter's TcpLink reader
  enum { Greeting, Accepted, Refused } state = Greeting;
  size_t at = 0;
  while (state != Refused && at + 2 <= in.size()) {
    const uint8_t op = in[at];
    const size_t n = std::min<size_t>(in[at + 1], in.size() - at - 2);
    const auto bytes = link_op(op, in.subspan(at + 2, n));
    at += 2 + n;
    if (state == Accepted) {
      if (!write_all(fd, bytes)) break;  // the session may end it: no longer a handshake matter
      continue;
    }
    size_t sent = 0;
    for (size_t i = 0; i < bytes.size() && state == Greeting; ++i) {
      FUZZ_CHECK(model.feed(std::span(bytes).subspan(i, 1)) == 1);
      auto f = model.next();
      if (!f && f.error() == Errc::WouldBlock) continue;
      const bool ok = f && greeter_accepts(*f);
      if (!write_all(fd, std::span(bytes).subspan(sent, i + 1 - sent)) && ok) FUZZ_FAIL("the greeter closed an acceptable Hello");
      sent = i + 1;
      state = ok ? Accepted : Refused;
    }
    if (state == Refused) {
      if (!read_until_closed(fd, nullptr, kAnswerMs)) FUZZ_FAIL("the link greeter kept a connection whose first frame it must refuse");
    } else if (state == Accepted) {
      // busd answers with its Hello (the peer's session starts with it).
      std::vector<std::byte> got;
      sock::FrameReader r(1u << 21);
      const uint64_t deadline = clock::mono_ns() + uint64_t{kAnswerMs} * 1'000'000;
      bool hello = false;
      std::byte buf[4096];
      while (!hello) {
        if (clock::mono_ns() > deadline) FUZZ_FAIL("the link greeter accepted a Hello but sent no Hello back");
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, 100);
        if (p.revents == 0) continue;
        const ssize_t k = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (k <= 0) break;  // what follows the Hello may already have made busd cut the session
        r.feed(std::span<const std::byte>(buf, static_cast<size_t>(k)));
        if (auto f = r.next()) {
          auto lf = link::parse_frame(*f);
          if (!lf || lf->type != link::FrameType::Hello) FUZZ_FAIL("busd's first link frame is not a Hello");
          auto h = link::parse_hello(*lf);
          if (!h || h->node != kNode || h->cluster != "default") FUZZ_FAIL("busd's Hello does not name it");
          hello = true;
        }
      }
      if (sent < bytes.size()) (void)write_all(fd, std::span(bytes).subspan(sent));
    } else if (sent < bytes.size() && !write_all(fd, std::span(bytes).subspan(sent))) {
      FUZZ_FAIL("the link greeter closed before a whole frame");
    }
  }
  ::close(fd);
}

// ------------------------------------------------------------ mode 3: links::Peer, no busd

// Peer ops (op % 8), n bytes b:
//   0-3 link_op(op, b) written to the peer's socket   4 receive()   5 tick(+b[0] * 20 ms)
//   6 read what the peer wrote   7 send(an envelope of b[0] bytes)
void run_peer(std::span<const uint8_t> in) {
  if (in.empty()) return;
  const bool greeted = in[0] & 1;
  links::PeerOptions o;
  o.cluster = "default";
  o.node = "local";
  o.dial = false;
  o.handshake_ms = 2000;
  o.hold_bytes = 64 * 1024;
  links::Peer peer(o, 0x5EED, in[0]);
  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  const int far = sv[1];
  uint64_t now = 1'000'000'000;
  const uint64_t since = now;
  sock::FrameReader model(o.max_frame);  // the TcpLink's reader, on what the far side writes
  std::optional<bool> first_ok;          // the decision on the first frame, once it is whole
  link::Hello first_hello;
  sock::FrameReader out(1u << 21);       // what the peer writes
  bool saw_first_output = false;
  size_t at = 1;
  if (greeted) {
    // The manager read a Hello (an acceptable one) and hands the rest over.
    link::Hello h;
    h.cluster = "default";
    h.node = "far";
    peer.adopt_greeted(tcp::TcpLink::adopt(sv[0], o.max_frame, "fuzz"), h, {}, now);
    FUZZ_CHECK(peer.state() == links::PeerState::Up);
    first_ok = true;
    first_hello = h;
  } else {
    peer.adopt(tcp::TcpLink::adopt(sv[0], o.max_frame, "fuzz"), now);
    FUZZ_CHECK(peer.state() == links::PeerState::Handshake);
  }
  std::vector<std::span<const std::byte>> got;
  bool link_gone = false;  // the peer closed its side (then far's writes fail)
  while (at + 2 <= in.size()) {
    const uint8_t op = in[at] % 8;
    const size_t n = std::min<size_t>(in[at + 1], in.size() - at - 2);
    const auto b = in.subspan(at + 2, n);
    at += 2 + n;
    const auto failures = peer.counters().handshake_failures;
    const auto before = peer.state();
    switch (op) {
      case 0: case 1: case 2: case 3: {
        if (link_gone) break;
        const auto bytes = link_op(op, b);
        (void)write_all(far, bytes);
        for (size_t i = 0; i < bytes.size() && !first_ok; ++i) {
          (void)model.feed(std::span(bytes).subspan(i, 1));
          auto f = model.next();
          if (!f && f.error() == Errc::WouldBlock) continue;
          bool ok = false;
          if (f) {
            auto lf = link::parse_frame(*f);
            if (lf && lf->type == link::FrameType::Hello) {
              auto h = link::parse_hello(*lf);
              link::Hello local;
              local.cluster = "default";
              local.node = "local";
              if (h && link::negotiate(local, *h)) {
                ok = true;
                first_hello = *h;
              }
            }
          }
          first_ok = ok;
        }
        break;
      }
      case 4: {
        got.clear();
        peer.receive(got, now);
        for (auto s : got) fuzz::touch(s);
        if (before == links::PeerState::Handshake && first_ok.has_value()) {
          if (*first_ok) {
            // Up with that Hello; a later frame of the same batch may still break the session,
            // or, when the link cannot parse it, drop the whole batch (the link fails): never a
            // handshake failure.
            FUZZ_CHECK(peer.counters().handshake_failures == failures);
            if (peer.state() == links::PeerState::Up) {
              FUZZ_CHECK(peer.remote().node == first_hello.node && peer.remote().cluster == first_hello.cluster);
            } else {
              FUZZ_CHECK(peer.state() == links::PeerState::Waiting);
            }
          } else {
            FUZZ_CHECK(peer.state() == links::PeerState::Waiting);
            // A frame the link cannot parse fails it before the handshake sees it.
            FUZZ_CHECK(peer.counters().handshake_failures <= failures + 1);
            FUZZ_CHECK(got.empty());
          }
        }
        if (before == links::PeerState::Handshake && !first_ok.has_value()) {
          FUZZ_CHECK(peer.state() == links::PeerState::Handshake);
          FUZZ_CHECK(got.empty());
        }
        break;
      }
      case 5:
        now += uint64_t{b.empty() ? 1u : b[0]} * 20'000'000;
        peer.tick(now);
        if (before == links::PeerState::Handshake && now - since > uint64_t{o.handshake_ms} * 1'000'000) {
          FUZZ_CHECK(peer.state() == links::PeerState::Waiting);
          FUZZ_CHECK(peer.counters().handshake_failures == failures + 1);
        }
        break;
      case 6: {
        std::byte buf[65536];
        const ssize_t k = ::recv(far, buf, sizeof buf, MSG_DONTWAIT);
        if (k == 0) link_gone = true;
        if (k > 0) {
          (void)out.feed(std::span<const std::byte>(buf, static_cast<size_t>(k)));
          if (!saw_first_output) {
            if (auto f = out.next()) {
              // The peer's first frame is its Hello, naming it.
              auto lf = link::parse_frame(*f);
              FUZZ_CHECK(lf && lf->type == link::FrameType::Hello);
              auto h = link::parse_hello(*lf);
              FUZZ_CHECK(h && h->node == "local" && h->cluster == "default");
              saw_first_output = true;
            }
          }
          while (saw_first_output && out.next()) {
          }
        }
        break;
      }
      case 7: {
        std::vector<std::byte> env(b.empty() ? 1 : b[0], std::byte{0x5A});
        auto r = peer.send(env);
        if (!r) FUZZ_CHECK(r.error() == Errc::WouldBlock || r.error() == Errc::InvalidArgument || r.error() == Errc::TooLarge);
        break;
      }
    }
    // Never Up without an acceptable Hello first.
    if (peer.state() == links::PeerState::Up) FUZZ_CHECK(first_ok.has_value() && *first_ok);
    if (peer.state() == links::PeerState::Waiting) break;  // not dialing: this connection is over
  }
  ::close(far);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::span<const uint8_t> in(data + 1, size - 1);
  switch (data[0] % 4) {
    case 0: run_agent(world(), false, in); break;
    case 1: run_agent(world(), true, in); break;
    case 2: run_greeter(world(), in); break;
    case 3: run_peer(in); break;
  }
  return 0;
}
