// DgramLink (the datagram layer as a link::Link) under busd's links::Peer, over real UDP sockets
// on loopback (dgram::UdpIo): both sides dial, the datagram handshake meets in the middle, the
// Hello and session run above it as over TCP. Messages both ways exactly once and in order,
// through a redial of one side (the other learns it from the new Syn) and a close (Fin: the
// other side knows at once, not after the heartbeat timeout).
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>

#include "bus/clock.hpp"
#include "dgram/dgram_link.hpp"
#include "dgram/udp_io.hpp"
#include "links/peer.hpp"
#include "support/scale.hpp"

using namespace bus;
using namespace bus::links;

namespace {

uint64_t mono() { return clock::mono_ns(); }

uint16_t free_udp_port() {
  auto io = dgram::UdpIo::open(0, 0, 1500, 1);
  REQUIRE(io);
  return (*io)->local_port();
}

struct Side {
  Side(const std::string& node, uint16_t local, uint16_t peer, uint64_t session) {
    PeerOptions o;
    o.cluster = "test";
    o.node = node;
    o.heartbeat_ms = 50;
    o.dead_after_ms = 2000;
    o.handshake_ms = 2000;
    o.backoff_min_ms = 5;
    o.backoff_max_ms = 20;
    o.dialer = [local, peer, this]() -> Expected<std::unique_ptr<link::Link>> {
      auto io = dgram::UdpIo::open(local, peer, 1472);
      if (!io) return tl::unexpected(io.error());
      dgram::ChannelOptions co;
      co.rto_min_ns = 2'000'000;
      ++dials;
      return std::unique_ptr<link::Link>(std::make_unique<dgram::DgramLink>(std::move(*io), co, next_conn++, &mono));
    };
    o.target = "udp " + std::to_string(peer);
    p = std::make_unique<Peer>(std::move(o), session, session + 1);
  }
  std::unique_ptr<Peer> p;
  uint32_t next_conn = 1;
  int dials = 0;
  uint64_t next_send = 1, next_expected = 1;
  std::vector<std::span<const std::byte>> got;
};

size_t size_of(uint64_t n) { return n % 50 == 0 ? 3000 + n % 2000 : 64 + n % 200; }

void round(Side& a, Side& b) {
  const uint64_t now = clock::mono_ns();
  a.p->tick(now);
  b.p->tick(now);
  pollfd fds[2] = {{a.p->wait_fd(), POLLIN, 0}, {b.p->wait_fd(), POLLIN, 0}};
  ::poll(fds, 2, 1);
  for (Side* s : {&a, &b}) {
    s->got.clear();
    s->p->receive(s->got, clock::mono_ns());
    for (auto body : s->got) {
      uint64_t n = 0;
      REQUIRE(body.size() >= 8);
      std::memcpy(&n, body.data(), 8);
      REQUIRE(n == s->next_expected);  // exactly once, in order
      REQUIRE(body.size() == size_of(n));
      ++s->next_expected;
    }
  }
}

void offer(Side& s, uint64_t upto) {
  std::vector<std::byte> body;
  while (s.next_send <= upto) {
    body.assign(size_of(s.next_send), std::byte{0x33});
    std::memcpy(body.data(), &s.next_send, 8);
    if (!s.p->send(body)) return;  // hold buffer full: later
    ++s.next_send;
  }
}

bool until(const std::function<bool()>& pred, const std::function<void()>& step, int ms = 10000) {
  const uint64_t end = clock::mono_ns() + static_cast<uint64_t>(ms) * 1'000'000u;
  while (!pred()) {
    if (clock::mono_ns() > end) return false;
    step();
  }
  return true;
}

}  // namespace

TEST_CASE("two peers over UDP datagram links: handshake, then exactly once and in order across a redial", "[dgram]") {
  const uint16_t pa = free_udp_port(), pb = free_udp_port();
  Side a("host-a", pa, pb, 0xA1), b("host-b", pb, pa, 0xB1);
  auto step = [&] { round(a, b); };
  REQUIRE(until([&] { return a.p->state() == PeerState::Up && b.p->state() == PeerState::Up; }, step));
  CHECK(a.p->remote().node == "host-b");
  CHECK(b.p->remote().node == "host-a");

  const uint64_t n = bus::test::scaled(20'000);
  auto all = [&](uint64_t k) {
    return [&a, &b, k] { return a.next_expected > k && b.next_expected > k; };
  };
  auto pump = [&](uint64_t k) {
    return [&a, &b, k] {
      offer(a, k);
      offer(b, k);
      round(a, b);
    };
  };
  REQUIRE(until(all(n / 2), pump(n / 2)));

  // a drops its link and dials again (a new datagram connection): b sees the new Syn, drops
  // its own, redials; the sessions resume where they were.
  const int b_dials = b.dials;
  a.p->disconnect("test: redial", clock::mono_ns());
  REQUIRE(until(all(n), pump(n)));
  CHECK(b.dials > b_dials);
  CHECK(a.p->state() == PeerState::Up);
  CHECK(a.next_expected == n + 1);
  CHECK(b.next_expected == n + 1);
  const auto* l = dynamic_cast<const dgram::DgramLink*>(a.p->current_link());
  REQUIRE(l != nullptr);
  CHECK(l->channel().stats().frames_out > 0);
}

TEST_CASE("a datagram link closed by one side: the other knows at once (Fin), not after the timeout", "[dgram]") {
  const uint16_t pa = free_udp_port(), pb = free_udp_port();
  Side a("host-a", pa, pb, 0xA2), b("host-b", pb, pa, 0xB2);
  auto step = [&] { round(a, b); };
  REQUIRE(until([&] { return a.p->state() == PeerState::Up && b.p->state() == PeerState::Up; }, step));
  const uint64_t t0 = clock::mono_ns();
  a.p->disconnect("busd stopping", t0);
  // b alone runs: its peer said Fin. The heartbeat timeout (2 s) would take far longer.
  REQUIRE(until([&] { return b.p->state() != PeerState::Up; }, [&] {
    b.p->tick(clock::mono_ns());
    b.got.clear();
    ::usleep(200);
    b.p->receive(b.got, clock::mono_ns());
  }, 1000));
  CHECK(clock::mono_ns() - t0 < 500'000'000u);
  CHECK(b.p->last_error() == "the peer closed the link");
}
