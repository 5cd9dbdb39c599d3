// libbus over TCP ("tcp://host:port"): a remote agent. The client code stays the one it is on a
// host: it talks to a stand-in for busd over a Unix socketpair and gets rings in this process's
// memory. A thread of the library (this file) connects to busd's [busd] tcp_listen and moves
// everything across the one TCP stream (socket/endpoint.hpp): control frames both ways; the
// client's published records out as 'D' frames, batched into one send(); 'D' frames from busd
// into the client's inbound ring, with the subscription id busd put in their tag. When busd
// sends Registered, the thread makes a segment of the same geometry, formats both rings and
// hands the client its descriptors, exactly as busd would.
//
// Back-pressure goes through: a full inbound ring stops reading the socket (TCP's window then
// pushes back on busd); the client's outbound ring is read only while the socket takes data.
// When either side closes, the thread flushes what it holds, closes both and ends; the client
// then sees busd's connection close and reconnects (a new thread) like it does on a host.
//
// "tls://host:port": the same over TLS (tls/stream.hpp). The handshake is done before the
// thread starts, so that a certificate busd's CA does not verify, or a busd that is not the
// one named, fails the connect with OpenSSL's reason. busd may still refuse this side's
// certificate after the handshake (TLS 1.3 checks it then): the thread hands the client an
// ErrorReply with the reason, as if busd had sent it. A token goes first, as an 'A' frame.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "bus/clock.hpp"
#include "bus/control.hpp"
#include "bus/limits.hpp"
#include "impl.hpp"
#include "shm/layout.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"
#include "socket/endpoint.hpp"
#include "socket/frame.hpp"
#include "tls/stream.hpp"

namespace bus {
namespace {

constexpr size_t kOutBatch = 256 * 1024;  // client records gathered per send
constexpr uint64_t kSpinNs = 50'000;      // polling before sleeping in epoll

std::string option_or_env(const std::string& v, const char* env) {
  if (!v.empty()) return v;
  const char* e = std::getenv(env);
  return e != nullptr ? e : "";
}

class TcpProxy {
 public:
  TcpProxy(int local, int tcp, std::unique_ptr<tls::Stream> tls, std::string token)
      : local_(local), tcp_(tcp), tls_(std::move(tls)), token_(std::move(token)) {}
  ~TcpProxy() {
    if (local_ >= 0) ::close(local_);
    if (tcp_ >= 0) ::close(tcp_);
    if (ep_ >= 0) ::close(ep_);
  }
  void run();

 private:
  bool from_client();   // false: the client is gone
  bool from_busd();     // false: busd is gone (or broke the stream)
  bool on_registered(std::span<const std::byte> body);
  void drain_out();
  bool flush();         // false: the socket broke
  bool deliver_held();
  void watch();
  Result<size_t> read_busd() {
    return tls_ ? tls::receive(*tls_, busd_in_, 64 * 1024) : sock::receive(tcp_, busd_in_);
  }
  void tell_client(const std::string& why);  // an ErrorReply from "busd" with why

  int local_, tcp_;
  std::unique_ptr<tls::Stream> tls_;
  // Sent just before the client's first frame (its Hello), in the same write: a busd that
  // refuses it answers a client that is already waiting for the answer.
  std::string token_;
  bool told_ = false;
  int ep_ = -1;
  sock::FrameReader client_in_{defaults::kMaxMessageSize};
  sock::FrameReader busd_in_{defaults::kMaxMessageSize + static_cast<uint32_t>(tcp::kChanHeader)};
  std::vector<std::byte> out_;
  size_t sent_ = 0;
  bool rings_ = false;
  shm::Segment seg_;
  shm::EventFd fds_[4];
  shm::RingConsumer out_ring_;  // the client publishes into it
  shm::RingProducer in_ring_;   // deliveries for the client
  std::vector<std::byte> held_;
  uint32_t held_tag_ = 0;
  uint32_t events_tcp_ = 0;
};

void TcpProxy::watch() {
  const bool tls_write = tls_ && tls_->wants_write();
  const uint32_t ev = (held_.empty() ? EPOLLIN : 0u) | (sent_ < out_.size() || tls_write ? EPOLLOUT : 0u) | EPOLLRDHUP;
  if (ev == events_tcp_) return;
  events_tcp_ = ev;
  epoll_event e{};
  e.events = ev;
  e.data.u32 = 1;
  ::epoll_ctl(ep_, EPOLL_CTL_MOD, tcp_, &e);
}

bool TcpProxy::flush() {
  if (tls_) {
    if (tls::send_pending(*tls_, out_, sent_, kOutBatch)) return true;
    tell_client("TLS: " + tls_->error());
    return false;
  }
  return tcp::send_pending(tcp_, out_, sent_);
}

void TcpProxy::tell_client(const std::string& why) {
  if (told_) return;
  told_ = true;
  flatbuffers::FlatBufferBuilder fbb(256);
  auto e = control::CreateErrorReplyDirect(fbb, Errc::PermissionDenied, why.c_str(), 0);
  auto msg = control::CreateControlMessage(fbb, 0, control::Body::ErrorReply, e.Union());
  control::FinishControlMessageBuffer(fbb, msg);
  (void)sock::send_frame(local_, std::span(reinterpret_cast<const std::byte*>(fbb.GetBufferPointer()), fbb.GetSize()));
}

void TcpProxy::drain_out() {
  if (!rings_) return;
  size_t n = 0;
  while (out_.size() - sent_ < kOutBatch) {
    auto rec = out_ring_.try_peek();
    if (!rec) break;
    tcp::append_chan(out_, tcp::kChanData, 0, rec->data);
    out_ring_.advance();
    ++n;
  }
  if (n > 0) out_ring_.release();
}

bool TcpProxy::deliver_held() {
  if (held_.empty()) return true;
  if (!in_ring_.try_write(held_, held_tag_)) return false;
  held_.clear();
  return true;
}

bool TcpProxy::on_registered(std::span<const std::byte> body) {
  auto m = verify_control(body, defaults::kMaxMessageSize);
  if (!m) return false;
  const auto* r = (*m)->body_as_Registered();
  const uint64_t size = r->segment_size(), to_agent = r->to_agent_offset();
  if (r->to_busd_offset() != 0 || to_agent == 0 || to_agent * 2 != size) return false;
  uint64_t cap = shm::kMinCapacity;
  while (shm::ring_bytes(cap * 2) <= to_agent) cap *= 2;
  if (shm::ring_bytes(cap) > to_agent) return false;
  auto seg = shm::Segment::create_memfd("remote-agent", size, false);
  if (!seg) return false;
  seg_ = std::move(*seg);
  const auto bytes = seg_.bytes();
  if (!shm::format_ring(bytes.first(to_agent), cap, 0, shm::Zeroed::yes) ||
      !shm::format_ring(bytes.subspan(to_agent), cap, 0, shm::Zeroed::yes)) {
    return false;
  }
  for (auto& e : fds_) {
    auto fd = shm::EventFd::create();
    if (!fd) return false;
    e = std::move(*fd);
  }
  auto o = shm::RingConsumer::attach(bytes.first(to_agent), {fds_[0].fd(), fds_[1].fd()});
  auto i = shm::RingProducer::attach(bytes.subspan(to_agent), {fds_[2].fd(), fds_[3].fd()});
  if (!o || !i) return false;
  out_ring_ = std::move(*o);
  in_ring_ = std::move(*i);
  rings_ = true;
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.u32 = 2;  // the client published (its ring's data eventfd)
  ::epoll_ctl(ep_, EPOLL_CTL_ADD, fds_[0].fd(), &e);
  e.data.u32 = 3;  // room in the client's inbound ring
  ::epoll_ctl(ep_, EPOLL_CTL_ADD, fds_[3].fd(), &e);
  const int give[5] = {seg_.fd(), fds_[0].fd(), fds_[1].fd(), fds_[2].fd(), fds_[3].fd()};
  return sock::send_frame(local_, body, give).has_value();
}

bool TcpProxy::from_client() {
  for (;;) {
    auto r = sock::receive(local_, client_in_);
    if (!r) {
      if (r.error() != Errc::WouldBlock) return false;
      break;
    }
  }
  for (auto f = client_in_.next(); f; f = client_in_.next()) {
    if (!token_.empty()) {
      tcp::append_chan(out_, tcp::kChanAuth, 0, std::as_bytes(std::span(token_.data(), token_.size())));
      token_.clear();
    }
    tcp::append_chan(out_, tcp::kChanControl, 0, *f);
  }
  return true;
}

bool TcpProxy::from_busd() {
  bool open = true;
  for (int reads = 0; reads < 16 && held_.empty(); ++reads) {
    auto r = read_busd();
    if (!r) {
      open = r.error() == Errc::WouldBlock;
      // busd refused this side over TLS (its certificate, most often): say why.
      if (!open && tls_ && r.error() != Errc::Closed) tell_client("TLS: " + tls_->error());
      break;
    }
  }
  while (held_.empty()) {
    auto f = busd_in_.next();
    if (!f) {
      if (f.error() == Errc::TooLarge) return false;
      break;
    }
    auto c = tcp::parse_chan(*f);
    if (!c) return false;
    if (c->channel == tcp::kChanControl) {
      auto m = verify_control(c->body, defaults::kMaxMessageSize);
      if (!m) return false;
      if ((*m)->body_type() == control::Body::Registered) {
        if (!on_registered(c->body)) return false;
      } else if (!sock::send_frame(local_, c->body)) {
        return false;
      }
      continue;
    }
    if (!rings_) return false;
    if (!in_ring_.try_write(c->body, c->tag)) {
      held_.assign(c->body.begin(), c->body.end());  // full: the socket waits until it has room
      held_tag_ = c->tag;
    }
  }
  return open;
}

void TcpProxy::run() {
  ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event e{};
  e.events = EPOLLIN | EPOLLRDHUP;
  e.data.u32 = 0;
  ::epoll_ctl(ep_, EPOLL_CTL_ADD, local_, &e);
  events_tcp_ = EPOLLIN | EPOLLRDHUP;
  e.events = events_tcp_;
  e.data.u32 = 1;
  ::epoll_ctl(ep_, EPOLL_CTL_ADD, tcp_, &e);
  bool client_open = true;
  uint64_t idle_since = 0;
  while (client_open) {
    drain_out();
    if (!flush()) {
      // busd closed on us (it refused this agent?): hand the client what it said first.
      (void)from_busd();
      break;
    }
    // Bytes OpenSSL decrypted already do not wake epoll: take them now.
    if (tls_ && held_.empty() && tls_->has_pending() && !from_busd()) {
      drain_out();
      return;
    }
    if (!held_.empty() && deliver_held() && !from_busd()) return;  // room again: read on
    watch();
    // Spin a little (a reply is often on its way), then sleep until something is ready.
    const uint64_t now = clock::mono_ns();
    const bool quiet = !rings_ || !out_ring_.readable();
    if (!quiet) idle_since = 0;
    if (quiet && idle_since == 0) idle_since = now;
    int timeout = 0;
    bool armed = false;
    if (quiet && now - idle_since >= kSpinNs) {
      armed = !rings_ || out_ring_.arm_sleep();
      timeout = armed ? 1000 : 0;
    }
    if (tls_ && held_.empty() && tls_->has_pending()) timeout = 0;
    epoll_event evs[8];
    const int n = ::epoll_wait(ep_, evs, 8, timeout);
    if (rings_ && armed) out_ring_.disarm();
    for (int i = 0; i < n; ++i) {
      switch (evs[i].data.u32) {
        case 0: client_open = from_client(); break;
        case 1:
          if (!from_busd()) {
            drain_out();
            return;  // busd went away: closing the socketpair tells the client
          }
          break;
        case 3: {
          uint64_t v;
          (void)!::read(fds_[3].fd(), &v, sizeof v);
          if (deliver_held()) (void)from_busd();
          break;
        }
        default: break;  // 2: the client published; drain_out() takes it
      }
    }
    if (!held_.empty()) (void)in_ring_.arm_space(static_cast<uint32_t>(held_.size()));
  }
  // The client closed: what it published before goes out first (bounded wait).
  drain_out();
  const uint64_t end = clock::mono_ns() + 1'000'000'000;
  while (sent_ < out_.size() && clock::mono_ns() < end && flush()) {
    pollfd p{tcp_, POLLOUT, 0};
    ::poll(&p, 1, 10);
  }
}

// The TLS handshake over `fd`, waiting (poll) until `deadline_ns`.
Expected<std::unique_ptr<tls::Stream>> handshake(int fd, const tcp::Endpoint& ep, const ClientOptions& o,
                                                 uint64_t deadline_ns) {
  tls::ContextOptions co;
  co.ca = option_or_env(o.tls_ca, "BUS_TLS_CA");
  co.cert = option_or_env(o.tls_cert, "BUS_TLS_CERT");
  co.key = option_or_env(o.tls_key, "BUS_TLS_KEY");
  co.verify_peer = true;
  auto ctx = tls::Context::create(tls::Role::Client, co);
  if (!ctx) return tl::unexpected(ctx.error());
  std::string name = option_or_env(o.tls_server_name, "BUS_TLS_SERVER_NAME");
  if (name.empty()) name = ep.host;
  auto s = tls::Stream::create(*ctx, fd, name);  // (the stream keeps what it needs of ctx)
  if (!s) return tl::unexpected(s.error());
  bool shaken = false;
  for (;;) {
    // The handshake, then the server's verdict on this side's certificate (TLS 1.3).
    tls::Step st = shaken ? (*s)->confirm() : (*s)->handshake();
    if (!shaken && st == tls::Step::Done) {
      shaken = true;
      st = (*s)->confirm();
    }
    if (st == tls::Step::Done) return std::move(*s);
    if (st == tls::Step::Failed) {
      return fail(Errc::PermissionDenied, "tls://" + ep.to_string() + ": " + (*s)->error());
    }
    const uint64_t now = clock::mono_ns();
    if (now >= deadline_ns) {
      return fail(Errc::Timeout, "tls://" + ep.to_string() + ": the TLS handshake did not finish in time");
    }
    pollfd p{fd, static_cast<short>(st == tls::Step::WantWrite ? POLLOUT : POLLIN), 0};
    ::poll(&p, 1, static_cast<int>(std::min<uint64_t>((deadline_ns - now) / 1'000'000 + 1, 1000)));
  }
}

}  // namespace

Expected<int> start_tcp_proxy(std::string_view address, int timeout_ms, bool tls, const ClientOptions& o) {
  const uint64_t deadline = clock::mono_ns() + static_cast<uint64_t>(timeout_ms) * 1'000'000;
  auto ep = tcp::parse_endpoint(address);
  if (!ep) return tl::unexpected(ep.error().context(tls ? "tls:// address" : "tcp:// address"));
  const std::string token = option_or_env(o.token, "BUS_TOKEN");
  if (token.size() > tcp::kMaxTokenFrame) return fail(Errc::InvalidArgument, "a token above 1024 bytes");
  auto fd = tcp::dial_tcp(*ep, timeout_ms);
  if (!fd) return tl::unexpected(fd.error());
  std::unique_ptr<tls::Stream> stream;
  if (tls) {
    auto s = handshake(*fd, *ep, o, deadline);
    if (!s) {
      ::close(*fd);
      return tl::unexpected(s.error());
    }
    stream = std::move(*s);
  }
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0) {
    ::close(*fd);
    return tl::unexpected(system_error("socketpair", errno));
  }
  std::thread([local = pair[1], tcp = *fd, s = std::move(stream), token]() mutable {
    // OpenSSL writes with write(): a busd gone away must be an error here, not SIGPIPE.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    TcpProxy p(local, tcp, std::move(s), std::move(token));
    p.run();
  }).detach();
  return pair[0];
}

}  // namespace bus
