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
#include <poll.h>
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

namespace bus {
namespace {

constexpr size_t kOutBatch = 256 * 1024;  // client records gathered per send
constexpr uint64_t kSpinNs = 50'000;      // polling before sleeping in epoll

class TcpProxy {
 public:
  TcpProxy(int local, int tcp) : local_(local), tcp_(tcp) {}
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

  int local_, tcp_;
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
  const uint32_t ev = (held_.empty() ? EPOLLIN : 0u) | (sent_ < out_.size() ? EPOLLOUT : 0u) | EPOLLRDHUP;
  if (ev == events_tcp_) return;
  events_tcp_ = ev;
  epoll_event e{};
  e.events = ev;
  e.data.u32 = 1;
  ::epoll_ctl(ep_, EPOLL_CTL_MOD, tcp_, &e);
}

bool TcpProxy::flush() { return tcp::send_pending(tcp_, out_, sent_); }

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
  for (auto f = client_in_.next(); f; f = client_in_.next()) tcp::append_chan(out_, tcp::kChanControl, 0, *f);
  return true;
}

bool TcpProxy::from_busd() {
  bool open = true;
  for (int reads = 0; reads < 16 && held_.empty(); ++reads) {
    auto r = sock::receive(tcp_, busd_in_);
    if (!r) {
      open = r.error() == Errc::WouldBlock;
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
    if (!flush()) break;
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

}  // namespace

Expected<int> start_tcp_proxy(std::string_view address, int timeout_ms) {
  auto ep = tcp::parse_endpoint(address);
  if (!ep) return tl::unexpected(ep.error().context("tcp:// address"));
  auto fd = tcp::dial_tcp(*ep, timeout_ms);
  if (!fd) return tl::unexpected(fd.error());
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) != 0) {
    ::close(*fd);
    return tl::unexpected(system_error("socketpair", errno));
  }
  std::thread([local = pair[1], tcp = *fd] {
    TcpProxy p(local, tcp);
    p.run();
  }).detach();
  return pair[0];
}

}  // namespace bus
