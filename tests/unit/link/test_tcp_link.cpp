// The TCP link over loopback, under link sessions: messages both ways arrive exactly once and in
// order while the connection is broken and remade under them; garbage from a raw socket brings
// the link down with a reason.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <random>

#include "bus/clock.hpp"
#include "link/session.hpp"
#include "support/scale.hpp"
#include "tcp/tcp_link.hpp"

using namespace bus;
using namespace bus::link;
using namespace bus::tcp;

namespace {

constexpr uint32_t kMaxFrame = 1u << 20;

struct Peer {
  Peer(uint64_t id) : s(SessionOptions{}, id) {}
  Session s;
  std::unique_ptr<TcpLink> link;
  std::vector<Frame> frames;
  uint64_t next_offer = 1, next_expected = 1;
};

void put(std::vector<std::byte>& msg, uint64_t n) {
  msg.assign(24 + n % 500, std::byte{0});
  const uint64_t h = n * 0x9E3779B97F4A7C15ull;
  std::memcpy(msg.data(), &n, 8);
  std::memcpy(msg.data() + 8, &h, 8);
}

// Reads and handles everything `p` has; false when its link went down.
bool pump_in(Peer& p) {
  for (;;) {
    p.frames.clear();
    auto got = p.link->receive(p.frames, 256);
    if (!got) return false;
    for (const Frame& f : p.frames) {
      auto in = p.s.on_frame(f);
      REQUIRE(in);
      if (*in != Session::Inbound::Deliver) continue;
      uint64_t n = 0, h = 0;
      std::memcpy(&n, f.body.data(), 8);
      std::memcpy(&h, f.body.data() + 8, 8);
      REQUIRE(n == p.next_expected);  // exactly once, in order
      REQUIRE(h == n * 0x9E3779B97F4A7C15ull);
      REQUIRE(f.body.size() == 24 + n % 500);
      ++p.next_expected;
    }
    if (*got == 0) break;
  }
  p.s.flush_ack();
  return true;
}

void connect_pair(TcpListener& l, Peer& a, Peer& b) {
  auto c = TcpLink::connect(Endpoint{"127.0.0.1", l.port()}, kMaxFrame);
  REQUIRE(c);
  a.link = std::move(*c);
  std::string who;
  Result<int> fd = tl::unexpected(Errc::WouldBlock);
  const uint64_t end = clock::mono_ns() + 5'000'000'000ull;
  while (!(fd = l.accept(&who)) && clock::mono_ns() < end) {
    pollfd p{l.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
  }
  REQUIRE(fd);
  CHECK(who.rfind("127.0.0.1:", 0) == 0);
  b.link = TcpLink::adopt(*fd, kMaxFrame, who);
  a.s.on_connected();
  b.s.on_connected();
}

}  // namespace

TEST_CASE("endpoints parse host:port and [v6]:port, and refuse the rest", "[link][tcp]") {
  auto e = parse_endpoint("10.0.0.2:7400");
  REQUIRE(e);
  CHECK(e->host == "10.0.0.2");
  CHECK(e->port == 7400);
  auto v6 = parse_endpoint("[::1]:9");
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->to_string() == "[::1]:9");
  CHECK_FALSE(parse_endpoint("nohost"));
  CHECK_FALSE(parse_endpoint("h:70000"));
  CHECK_FALSE(parse_endpoint(":80"));
  CHECK_FALSE(parse_endpoint("::1:80"));
  CHECK_FALSE(parse_endpoint("[::1]80"));
}

TEST_CASE("exactly once, in order, both ways, while the TCP connection is broken and remade",
          "[link][tcp]") {
  auto l = TcpListener::listen(Endpoint{"127.0.0.1", 0});
  REQUIRE(l);
  Peer a(11), b(22);
  connect_pair(*l, a, b);
  const uint64_t total = test::scaled(100'000);
  std::vector<std::byte> msg;
  int breaks = 0;
  const uint64_t give_up = clock::mono_ns() + 60'000'000'000ull;
  while ((a.next_expected <= total || b.next_expected <= total || a.s.held_frames() + b.s.held_frames() > 0) &&
         clock::mono_ns() < give_up) {
    for (Peer* p : {&a, &b}) {
      for (int k = 0; k < 64 && p->next_offer <= total; ++k) {
        put(msg, p->next_offer);
        if (!p->s.offer(msg)) break;  // hold buffer full: the peer's acks will make room
        ++p->next_offer;
      }
    }
    bool up = true;
    for (Peer* p : {&a, &b}) {
      if (p->link->state() == LinkState::Connecting) p->link->finish_connect();
      if (p->link->state() == LinkState::Up) up &= p->link->transmit(p->s).has_value();
    }
    pollfd fds[2] = {{a.link->wait_fd(), POLLIN, 0}, {b.link->wait_fd(), POLLIN, 0}};
    ::poll(fds, 2, 10);
    up &= pump_in(a) && pump_in(b);
    // Now and then (and when anything failed) the connection dies; a new one resumes it.
    // Eight planned breaks spread over the run (whatever its length), more if anything fails.
    const bool planned = breaks < 8 && a.next_expected + b.next_expected > (breaks + 1) * 2 * total / 10;
    if (!up || planned) {
      a.link->close("test: break");
      b.link->close("test: break");
      a.s.on_disconnected();
      b.s.on_disconnected();
      connect_pair(*l, a, b);
      ++breaks;
    }
    if (a.next_expected > total && b.next_expected > total) {
      a.s.flush_ack();
      b.s.flush_ack();
    }
  }
  CHECK(breaks >= 8);
  REQUIRE(a.next_expected == total + 1);
  REQUIRE(b.next_expected == total + 1);
  CHECK(a.s.held_frames() == 0);
  CHECK(b.s.held_frames() == 0);
  CHECK(a.link->counters().write_calls < a.s.stats().frames_sent + a.s.stats().frames_resent);  // batches
}

TEST_CASE("garbage on the link port: that link goes down with the reason, the listener lives on",
          "[link][tcp]") {
  auto l = TcpListener::listen(Endpoint{"127.0.0.1", 0});
  REQUIRE(l);
  for (const std::string& junk : {std::string("\xff\xff\xff\x7fjunk", 8), std::string("\x0d\x00\x00\x00\x09garbage!....", 17)}) {
    auto raw = TcpLink::connect(Endpoint{"127.0.0.1", l->port()}, kMaxFrame);
    REQUIRE(raw);
    std::string who;
    Result<int> fd = tl::unexpected(Errc::WouldBlock);
    for (int i = 0; i < 100 && !(fd = l->accept(&who)); ++i) ::usleep(10'000);
    REQUIRE(fd);
    auto server = TcpLink::adopt(*fd, kMaxFrame, who);
    pollfd p{(*raw)->wait_fd(), POLLOUT, 0};
    ::poll(&p, 1, 1000);
    (*raw)->finish_connect();
    REQUIRE(::send((*raw)->wait_fd(), junk.data(), junk.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(junk.size()));
    std::vector<Frame> frames;
    Result<size_t> r = size_t{0};
    for (int i = 0; i < 100 && r && *r == 0; ++i) {
      pollfd q{server->wait_fd(), POLLIN, 0};
      ::poll(&q, 1, 50);
      r = server->receive(frames, 16);
    }
    REQUIRE_FALSE(r);
    CHECK(r.error() == Errc::BadMessage);
    CHECK(server->state() == LinkState::Down);
    INFO(server->error());
    CHECK((server->error().find("above the maximum") != std::string::npos ||
           server->error().find("unknown type 9") != std::string::npos));
  }
}
