// links::Peer over loopback TCP: handshake, messages both ways exactly once and in order across
// disconnects and redials, refusal of another cluster (both sides named), and death detection
// by heartbeat timeout.
#include <catch2/catch.hpp>

#include <poll.h>

#include <cstring>
#include <functional>

#include "bus/clock.hpp"
#include "links/peer.hpp"
#include "support/scale.hpp"

using namespace bus;
using namespace bus::links;

namespace {

PeerOptions opts(const std::string& node, uint16_t port, bool dial, const std::string& cluster = "test") {
  PeerOptions o;
  o.cluster = cluster;
  o.node = node;
  o.address = tcp::Endpoint{"127.0.0.1", port};
  o.dial = dial;
  o.heartbeat_ms = 50;
  o.dead_after_ms = 400;
  o.handshake_ms = 1000;
  o.backoff_min_ms = 5;
  o.backoff_max_ms = 50;
  return o;
}

struct Side {
  explicit Side(Peer& peer) : p(peer) {}
  Peer& p;
  uint64_t next_send = 1, next_expected = 1;
  std::vector<std::span<const std::byte>> got;
};

// One round of the poll loop for both peers; the listener's connections go to `acceptor`.
void round(tcp::TcpListener& l, Side& a, Side& b, Peer& acceptor, bool run_b = true) {
  const uint64_t now = clock::mono_ns();
  std::string who;
  if (auto fd = l.accept(&who)) acceptor.adopt(tcp::TcpLink::adopt(*fd, (1u << 20) + 4096, who), now);
  a.p.tick(now);
  if (run_b) b.p.tick(now);
  pollfd fds[3] = {{a.p.wait_fd(), POLLIN, 0}, {run_b ? b.p.wait_fd() : -1, POLLIN, 0}, {l.fd(), POLLIN, 0}};
  ::poll(fds, 3, 2);
  for (Side* s : {&a, &b}) {
    if (s == &b && !run_b) continue;
    s->got.clear();
    s->p.receive(s->got, clock::mono_ns());
    for (auto body : s->got) {
      uint64_t n = 0;
      REQUIRE(body.size() == 64);
      std::memcpy(&n, body.data(), 8);
      REQUIRE(n == s->next_expected);  // exactly once, in order
      ++s->next_expected;
    }
  }
}

bool until(const std::function<bool()>& pred, const std::function<void()>& step, int ms = 5000) {
  const uint64_t end = clock::mono_ns() + static_cast<uint64_t>(ms) * 1'000'000u;
  while (!pred()) {
    if (clock::mono_ns() > end) return false;
    step();
  }
  return true;
}

}  // namespace

TEST_CASE("two peers: handshake, then exactly once and in order across disconnects", "[link][peer]") {
  auto l = tcp::TcpListener::listen(tcp::Endpoint{"127.0.0.1", 0});
  REQUIRE(l);
  Peer pa(opts("host-a", l->port(), true), 0xA1, 1), pb(opts("host-b", 0, false), 0xB1, 2);
  Side a(pa), b(pb);
  auto step = [&] { round(*l, a, b, pb); };
  REQUIRE(until([&] { return pa.state() == PeerState::Up && pb.state() == PeerState::Up; }, step));
  CHECK(pa.remote().node == "host-b");
  CHECK(pb.remote().node == "host-a");
  const uint64_t total = test::scaled(20'000);
  std::vector<std::byte> msg(64);
  int breaks = 0;
  auto all_done = [&] { return a.next_expected > total && b.next_expected > total; };
  REQUIRE(until(all_done, [&] {
    for (Side* s : {&a, &b}) {
      for (int k = 0; k < 100 && s->next_send <= total; ++k) {
        std::memcpy(msg.data(), &s->next_send, 8);
        if (!s->p.send(msg)) break;
        ++s->next_send;
      }
    }
    step();
    if (breaks < 5 && (a.next_expected + b.next_expected) > (breaks + 1) * total / 3) {
      (breaks % 2 == 0 ? pa : pb).disconnect("test: break", clock::mono_ns());
      ++breaks;
    }
  }, 30'000));
  CHECK(breaks == 5);
  CHECK(pa.counters().connects >= 3);
  CHECK(pa.last_error().find("test: break") != std::string::npos);
}

TEST_CASE("a peer of another cluster is refused, the error naming both", "[link][peer]") {
  auto l = tcp::TcpListener::listen(tcp::Endpoint{"127.0.0.1", 0});
  REQUIRE(l);
  Peer pa(opts("host-a", l->port(), true, "west"), 1, 1), pb(opts("host-b", 0, false, "east"), 2, 2);
  Side a(pa), b(pb);
  REQUIRE(until([&] { return pa.counters().handshake_failures > 0 && pb.counters().handshake_failures > 0; },
                [&] { round(*l, a, b, pb); }));
  CHECK(pa.state() != PeerState::Up);
  CHECK(pa.last_error().find("peer 'host-b' is in cluster 'east', this busd ('host-a') in 'west'") != std::string::npos);
  CHECK(pb.last_error().find("peer 'host-a' is in cluster 'west', this busd ('host-b') in 'east'") != std::string::npos);
}

TEST_CASE("a peer that goes silent is declared dead by heartbeat timeout, then redialed", "[link][peer]") {
  auto l = tcp::TcpListener::listen(tcp::Endpoint{"127.0.0.1", 0});
  REQUIRE(l);
  Peer pa(opts("host-a", l->port(), true), 1, 1), pb(opts("host-b", 0, false), 2, 2);
  Side a(pa), b(pb);
  REQUIRE(until([&] { return pa.state() == PeerState::Up && pb.state() == PeerState::Up; }, [&] { round(*l, a, b, pb); }));
  // b freezes (no tick, no receive): its socket stays open, nothing comes back.
  const uint64_t frozen = clock::mono_ns();
  REQUIRE(until([&] { return pa.state() != PeerState::Up; }, [&] { round(*l, a, b, pb, false); }));
  const double took_ms = static_cast<double>(clock::mono_ns() - frozen) / 1e6;
  CHECK(took_ms >= 350);   // dead_after_ms = 400, measured from the last frame heard
  CHECK(took_ms < 2000);
  CHECK(pa.last_error().find("heartbeat timeout") != std::string::npos);
  // b comes back: a redials, and both are up again.
  REQUIRE(until([&] { return pa.state() == PeerState::Up && pb.state() == PeerState::Up; }, [&] { round(*l, a, b, pb); }));
  CHECK(pa.counters().heartbeats_sent > 0);
}

TEST_CASE("heartbeat echoes measure the round trip, also while messages flow", "[link][peer]") {
  auto l = tcp::TcpListener::listen(tcp::Endpoint{"127.0.0.1", 0});
  REQUIRE(l);
  Peer pa(opts("host-a", l->port(), true), 0xA3, 5), pb(opts("host-b", 0, false), 0xB3, 6);
  Side a(pa), b(pb);
  auto step = [&] { round(*l, a, b, pb); };
  REQUIRE(until([&] { return pa.state() == PeerState::Up && pb.state() == PeerState::Up; }, step));
  CHECK(pa.rtt_ns() == 0);  // nothing measured before the first echo
  // Keep both sides busy (no idle heartbeats): the probes go out each heartbeat_ms anyway.
  std::vector<std::byte> msg(64);
  const uint64_t t0 = clock::mono_ns();
  REQUIRE(until([&] { return pa.rtt_ns() != 0 && pb.rtt_ns() != 0; }, [&] {
    for (Side* s : {&a, &b}) {
      std::memcpy(msg.data(), &s->next_send, 8);
      if (s->p.send(msg)) ++s->next_send;
    }
    step();
  }));
  // Loopback and one poll round of 2 ms: well under a second, more than nothing.
  const uint64_t elapsed = clock::mono_ns() - t0;
  CHECK(pa.rtt_ns() > 0);
  CHECK(pa.rtt_ns() < elapsed);
  CHECK(pb.rtt_ns() < elapsed);
  CHECK(pa.counters().heartbeats_sent >= 1);
}
