// The RDMA link against a real verbs device: two connections through rdma_cm on one host
// (loopback through the device's port), each side an RdmaLink under a link::Session:
//   1. messages of random sizes both ways, exactly once and in order;
//   2. round trips (busy polling): p50/p99;
//   3. one side disconnects: the other sees its link go Down; a new connection resumes both
//      sessions without loss.
// Where ibv_get_device_list() finds no device (this project's CI machines: no InfiniBand in the
// kernel, ENOSYS), it prints exactly why and exits 77 (meson: SKIP).
//
// Address: BUS_RDMA_ADDR (an IPv4/IPv6 address of an RDMA-capable interface), else the first
// address of this host that rdma_cm can bind. Soft-RoCE: `rdma link add rxe0 type rxe netdev
// eth0`, then run it (see README). Expected duration: a few seconds.
#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "link/session.hpp"
#include "link/wire.hpp"
#include "rdma/ibv_verbs.hpp"
#include "rdma/rdma_link.hpp"

using namespace bus;
using namespace bus::rdma;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "FAIL: %s\n", why.c_str());
  std::exit(1);
}

std::vector<std::string> candidate_addresses() {
  std::vector<std::string> out;
  if (const char* a = std::getenv("BUS_RDMA_ADDR"); a != nullptr && *a != '\0') {
    out.emplace_back(a);
    return out;
  }
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) != 0) return out;
  for (ifaddrs* i = ifs; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    if (std::string(buf).rfind("127.", 0) == 0) continue;
    out.emplace_back(buf);
  }
  ::freeifaddrs(ifs);
  return out;
}

struct Side {
  explicit Side(uint64_t id) : s(link::SessionOptions{}, id) {}
  link::Session s;
  std::unique_ptr<RdmaLink> l;
  std::vector<link::Frame> frames;
  uint64_t next_to_offer = 1, expect = 1;
  uint64_t last_value = 0;  // for the ping-pong: the last number received
};

size_t body_len(uint64_t n) { return 16 + (n * 2654435761u) % 2000; }

// Drives both links one turn; checks every delivery. Returns messages delivered.
size_t turn(Side& a, Side& b) {
  size_t got = 0;
  for (Side* e : {&a, &b}) {
    if (e->l->state() != link::LinkState::Up) continue;
    if (!e->l->transmit(e->s)) continue;
    e->frames.clear();
    auto r = e->l->receive(e->frames, 256);
    if (!r) continue;
    for (const auto& f : e->frames) {
      auto in = e->s.on_frame(f);
      if (!in) die("session: " + in.error().message());
      if (*in != link::Session::Inbound::Deliver) continue;
      uint64_t n = 0;
      std::memcpy(&n, f.body.data(), 8);
      if (n != e->expect) die("message " + std::to_string(n) + " where " + std::to_string(e->expect) + " was due");
      if (f.body.size() != body_len(n)) die("message " + std::to_string(n) + " has the wrong size");
      ++e->expect;
      e->last_value = n;
      ++got;
    }
    e->s.flush_ack();
  }
  return got;
}

void offer(Side& e, uint64_t upto) {
  std::vector<std::byte> body;
  while (e.next_to_offer <= upto) {
    body.assign(body_len(e.next_to_offer), std::byte{0x5a});
    std::memcpy(body.data(), &e.next_to_offer, 8);
    if (!e.s.can_offer(body.size())) return;
    if (!e.s.offer(body)) die("offer");
    ++e.next_to_offer;
  }
}

// Connects a (dialing) and b (accepted) through `l`; both links Up, sessions connected.
void connect(IbvListener& l, const std::string& addr, const Options& o, Side& a, Side& b) {
  auto d = IbvConnection::dial(addr, l.port(), o);
  if (!d) die("dial: " + d.error().message());
  a.l = std::make_unique<RdmaLink>(std::move(*d), o, "b");
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (!b.l || a.l->state() != link::LinkState::Up || b.l->state() != link::LinkState::Up) {
    if (Clock::now() > until) die("no connection within 10 s");
    if (!b.l) {
      auto c = l.accept();
      if (c) {
        b.l = std::make_unique<RdmaLink>(std::move(*c), o, "a");
      } else if (c.error().code() != Errc::WouldBlock) {
        die("accept: " + c.error().message());
      }
    }
    a.l->finish_connect();
    if (b.l) b.l->finish_connect();
    if (a.l->state() == link::LinkState::Down) die("dialing side: " + a.l->error());
    if (b.l && b.l->state() == link::LinkState::Down) die("accepting side: " + b.l->error());
    pollfd p{l.fd(), POLLIN, 0};
    ::poll(&p, 1, 1);
  }
  a.s.on_connected();
  b.s.on_connected();
}

}  // namespace

int main() {
  if (const std::string why = device_problem(); !why.empty()) {
    std::printf("SKIP: %s\n", why.c_str());
    return 77;
  }
  std::string devs;
  for (const auto& n : device_names()) devs += (devs.empty() ? "" : ", ") + n;
  std::printf("RDMA devices: %s\n", devs.c_str());

  Options o;
  o.ring_bytes = 1u << 20;
  o.max_frame = 64u << 10;
  std::string addr;
  IbvListener listener;
  std::string tried;
  for (const auto& a : candidate_addresses()) {
    auto l = IbvListener::listen(a, 0, o);
    if (l) {
      addr = a;
      listener = std::move(*l);
      break;
    }
    tried += "\n  " + a + ": " + l.error().message();
  }
  if (addr.empty()) {
    std::printf("SKIP: RDMA devices (%s) exist, but rdma_cm binds none of this host's addresses (set BUS_RDMA_ADDR):%s\n",
                devs.c_str(), tried.c_str());
    return 77;
  }
  std::printf("rdma_cm listening on %s port %u\n", addr.c_str(), listener.port());

  Side a(0x1111), b(0x2222);
  connect(listener, addr, o, a, b);

  // 1. Bulk both ways.
  const uint64_t bulk = 20000;
  auto t0 = Clock::now();
  while (a.expect <= bulk || b.expect <= bulk) {
    offer(a, bulk);
    offer(b, bulk);
    turn(a, b);
    if (Clock::now() - t0 > std::chrono::seconds(30)) die("bulk transfer stalled");
    if (a.l->state() != link::LinkState::Up || b.l->state() != link::LinkState::Up) {
      die("a link went down: " + a.l->error() + " / " + b.l->error());
    }
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("bulk: %llu messages each way in %.3f s (%.0f msgs/s each way); a: %llu doorbells, %llu WRs, %llu inline\n",
              static_cast<unsigned long long>(bulk), secs, bulk / secs,
              static_cast<unsigned long long>(a.l->rdma_counters().doorbells),
              static_cast<unsigned long long>(a.l->rdma_counters().wrs_posted),
              static_cast<unsigned long long>(a.l->rdma_counters().wrs_inline));

  // 2. Round trips: a offers one, waits until b has it and b's answer is back.
  std::vector<double> rtt;
  for (int i = 0; i < 2000; ++i) {
    const auto s = Clock::now();
    const uint64_t want_b = b.expect, want_a = a.expect;
    offer(a, a.next_to_offer);
    while (b.expect == want_b) turn(a, b);
    offer(b, b.next_to_offer);
    while (a.expect == want_a) turn(a, b);
    rtt.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
    if (Clock::now() - s > std::chrono::seconds(5)) die("a round trip took over 5 s");
  }
  std::sort(rtt.begin(), rtt.end());
  std::printf("round trip (busy polling, session + link, %zu samples): p50 %.2f us, p99 %.2f us\n", rtt.size(),
              rtt[rtt.size() / 2], rtt[rtt.size() * 99 / 100]);

  // 3. a disconnects: b notices; a new connection resumes both sessions.
  a.l->close("test: disconnect");
  const auto until = Clock::now() + std::chrono::seconds(5);
  while (b.l->state() == link::LinkState::Up) {
    if (Clock::now() > until) die("the other side did not notice the disconnect within 5 s");
    b.frames.clear();
    (void)b.l->receive(b.frames, 16);
    b.l->disarm();  // looks at the connection's events
  }
  std::printf("after disconnect, b: %s\n", b.l->error().c_str());
  a.s.on_disconnected();
  b.s.on_disconnected();
  a.l.reset();
  b.l.reset();
  connect(listener, addr, o, a, b);
  const uint64_t more = a.next_to_offer + 1000;
  t0 = Clock::now();
  while (b.expect < more || a.expect < b.next_to_offer) {
    offer(a, more);
    turn(a, b);
    if (Clock::now() - t0 > std::chrono::seconds(30)) die("resume stalled");
  }
  std::printf("resumed: %llu messages delivered to b in all, in order, none twice\n",
              static_cast<unsigned long long>(b.expect - 1));
  std::printf("PASS\n");
  return 0;
}
