// link::Session over a simulated stream connection that a seeded random generator cuts into
// arbitrary chunks and breaks at arbitrary points (bytes in flight lost both ways, then a new
// connection and a Resume): every message offered arrives exactly once, in order, each way.
#include <catch2/catch.hpp>

#include <cstring>
#include <deque>
#include <random>
#include <string>

#include "link/session.hpp"
#include "link/wire.hpp"
#include "socket/frame.hpp"
#include "support/scale.hpp"

using namespace bus;
using namespace bus::link;

namespace {

constexpr uint32_t kMaxFrame = 1u << 20;

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

// One side of a link: its session, what it still has to offer, and what it got.
struct Side {
  Side(const SessionOptions& o, uint64_t id) : s(o, id) {}
  Session s;
  sock::FrameReader reader{kMaxFrame};
  uint64_t next_to_offer = 1;    // message number (payload), independent of sequence numbers
  uint64_t next_expected = 1;    // message number the peer's next delivery must carry
  std::vector<std::byte> payload;
};

// A message: [number u64][hash u64][filler], length varying with the number.
void make_payload(std::vector<std::byte>& out, uint64_t number) {
  const size_t len = 16 + mix(number) % 300;
  out.assign(len, std::byte{0});
  const uint64_t h = mix(number * 7 + 1);
  std::memcpy(out.data(), &number, 8);
  std::memcpy(out.data() + 8, &h, 8);
  for (size_t i = 16; i < len; ++i) out[i] = static_cast<std::byte>(h >> (i % 8 * 8));
}

void check_payload(std::span<const std::byte> body, uint64_t want) {
  REQUIRE(body.size() >= 16);
  uint64_t number = 0, h = 0;
  std::memcpy(&number, body.data(), 8);
  std::memcpy(&h, body.data() + 8, 8);
  REQUIRE(number == want);  // exactly once, in order
  REQUIRE(h == mix(number * 7 + 1));
  REQUIRE(body.size() == 16 + mix(number) % 300);
}

// Moves up to `budget` bytes of what `from` wants to write into `pipe`.
void transmit(Side& from, std::deque<std::byte>& pipe, size_t budget) {
  size_t n = 0;
  for (auto span : from.s.next_output()) {
    const size_t k = std::min(span.size(), budget - n);
    pipe.insert(pipe.end(), span.begin(), span.begin() + static_cast<ptrdiff_t>(k));
    n += k;
    if (n == budget) break;
  }
  from.s.wrote(n);
}

// Hands up to `budget` bytes of `pipe` to `to` and processes the complete frames.
void receive(Side& to, std::deque<std::byte>& pipe, size_t budget) {
  const size_t k = std::min(budget, pipe.size());
  std::vector<std::byte> chunk(pipe.begin(), pipe.begin() + static_cast<ptrdiff_t>(k));
  pipe.erase(pipe.begin(), pipe.begin() + static_cast<ptrdiff_t>(k));
  size_t at = 0;
  while (at < chunk.size()) {
    at += to.reader.feed(std::span(chunk).subspan(at));
    for (;;) {
      auto frame = to.reader.next();
      if (!frame) {
        REQUIRE(frame.error() == Errc::WouldBlock);
        break;
      }
      auto f = parse_frame(*frame);
      REQUIRE(f);
      auto in = to.s.on_frame(*f);
      if (!in) FAIL(in.error().message());
      if (*in == Session::Inbound::Deliver) check_payload(f->body, to.next_expected++);
    }
  }
}

void reconnect(Side& a, Side& b, std::deque<std::byte>& ab, std::deque<std::byte>& ba) {
  ab.clear();
  ba.clear();
  a.reader = sock::FrameReader(kMaxFrame);
  b.reader = sock::FrameReader(kMaxFrame);
  a.s.on_disconnected();
  b.s.on_disconnected();
  a.s.on_connected();
  b.s.on_connected();
}

// Runs `total` messages each way with random chunking and `breaks_per_k` disconnects per 1000
// steps; returns the number of reconnects.
int run(uint64_t seed, uint64_t total, int breaks_per_k, size_t hold) {
  std::mt19937_64 rng(seed);
  SessionOptions o;
  o.hold_bytes = hold;
  o.ack_every = 1 + static_cast<uint32_t>(rng() % 64);
  Side a(o, 0xA000 + seed), b(o, 0xB000 + seed);
  std::deque<std::byte> ab, ba;
  a.s.on_connected();
  b.s.on_connected();
  int reconnects = 0;
  for (uint64_t step = 0; step < 2'000'000; ++step) {
    for (Side* x : {&a, &b}) {
      for (int k = static_cast<int>(rng() % 8); k > 0 && x->next_to_offer <= total; --k) {
        make_payload(x->payload, x->next_to_offer);
        auto r = x->s.offer(x->payload);
        if (!r) {
          REQUIRE(r.error() == Errc::WouldBlock);  // full: try again later
          break;
        }
        ++x->next_to_offer;
      }
    }
    auto budget = [&] { return rng() % 4 == 0 ? size_t{rng() % 7} : size_t{rng() % 3000}; };
    transmit(a, ab, budget());
    transmit(b, ba, budget());
    receive(b, ab, budget());
    receive(a, ba, budget());
    if (rng() % 4 == 0) a.s.flush_ack();
    if (rng() % 4 == 0) b.s.flush_ack();
    if (rng() % 16 == 0) a.s.heartbeat(step);
    if (breaks_per_k > 0 && static_cast<int>(rng() % 1000) < breaks_per_k) {
      reconnect(a, b, ab, ba);
      ++reconnects;
    }
    const bool done = a.next_expected > total && b.next_expected > total;
    if (done && a.s.held_frames() == 0 && b.s.held_frames() == 0) break;
    if (done) {  // everything delivered: drain the acks
      a.s.flush_ack();
      b.s.flush_ack();
    }
  }
  REQUIRE(a.next_expected == total + 1);
  REQUIRE(b.next_expected == total + 1);
  CHECK(a.s.held_frames() == 0);
  CHECK(b.s.held_frames() == 0);
  CHECK(a.s.stats().delivered == total);
  CHECK(a.s.stats().held_high_water <= hold);
  return reconnects;
}

}  // namespace

TEST_CASE("exactly once, in order, across random chunking and reconnects", "[link]") {
  const uint64_t seeds = test::scaled(200);
  uint64_t reconnects = 0;
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    INFO("seed " << seed);
    reconnects += static_cast<uint64_t>(run(seed, 2'000, 20, seed % 3 == 0 ? 8192 : 1u << 16));
  }
  CHECK(reconnects > seeds);  // the breaks did happen
}

TEST_CASE("a long run through a small hold buffer wraps it many times", "[link]") {
  run(7, test::scaled(200'000), 2, 4096);
}

TEST_CASE("the hold buffer is bounded: full refuses, acknowledged frees", "[link]") {
  SessionOptions o;
  o.hold_bytes = 4096;
  Session s(o, 1);
  std::vector<std::byte> msg(100, std::byte{1});
  uint64_t taken = 0;
  CHECK(s.can_offer(msg.size()));
  while (s.offer(msg)) {
    ++taken;
    // can_offer says what the next offer will do (busd holds a publisher back on it).
    const bool room = s.can_offer(msg.size());
    REQUIRE(room == (4096 - s.held_bytes() >= kPrefixBytes + 100));
  }
  CHECK(!s.can_offer(msg.size()));
  CHECK(s.can_offer(10));  // a smaller one may still fit
  CHECK(taken == 4096 / (kPrefixBytes + 100));
  CHECK(s.offer(msg).error() == Errc::WouldBlock);
  CHECK(s.stats().refused_full == 2);  // the loop's last offer and this one
  CHECK(s.offer(std::vector<std::byte>(5000)).error() == Errc::TooLarge);
  // Connect, hear the peer, send everything, get it acknowledged: room again.
  s.on_connected();
  std::vector<std::byte> resume;
  append_resume(resume, 0, ResumeBody{99, 1});
  REQUIRE(s.on_frame(*parse_frame(std::span(resume).subspan(kLengthBytes))));
  size_t bytes = 0;
  for (auto sp : s.next_output()) bytes += sp.size();
  s.wrote(bytes);
  std::vector<std::byte> ack;
  append_frame(ack, FrameType::Ack, taken);
  REQUIRE(s.on_frame(*parse_frame(std::span(ack).subspan(kLengthBytes))));
  CHECK(s.held_frames() == 0);
  CHECK(s.can_offer(msg.size()));
  CHECK(s.offer(msg));
}

namespace {
Frame frame_of(std::vector<std::byte>& storage) {
  auto f = parse_frame(std::span(storage).subspan(kLengthBytes));
  REQUIRE(f);
  return *f;
}
}  // namespace

TEST_CASE("protocol violations are errors naming what was wrong", "[link]") {
  Session s(SessionOptions{}, 1);
  s.on_connected();
  std::vector<std::byte> env(32, std::byte{7}), data, ack, resume;
  append_frame(data, FrameType::Data, 1, env);
  auto before = s.on_frame(frame_of(data));
  REQUIRE_FALSE(before);
  CHECK(before.error().message().find("before the peer's Resume") != std::string::npos);

  append_resume(resume, 0, ResumeBody{42, 0});
  REQUIRE(s.on_frame(frame_of(resume)));
  auto again = s.on_frame(frame_of(resume));
  REQUIRE_FALSE(again);
  CHECK(again.error().message().find("second link Resume") != std::string::npos);

  append_frame(ack, FrameType::Ack, 5);  // nothing was sent
  auto beyond = s.on_frame(frame_of(ack));
  REQUIRE_FALSE(beyond);
  CHECK(beyond.error().message().find("beyond the last frame sent") != std::string::npos);

  // The first Data of a new peer session sets the base; then a gap is an error.
  std::vector<std::byte> d5, d7;
  append_frame(d5, FrameType::Data, 5, env);
  append_frame(d7, FrameType::Data, 7, env);
  CHECK(*s.on_frame(frame_of(d5)) == Session::Inbound::Deliver);
  CHECK(*s.on_frame(frame_of(d5)) == Session::Inbound::Duplicate);
  auto gap = s.on_frame(frame_of(d7));
  REQUIRE_FALSE(gap);
  CHECK(gap.error().message().find("gap") != std::string::npos);
}

TEST_CASE("link frames: the decoder refuses what is malformed", "[link]") {
  auto bad = [](std::vector<std::byte> b) { return parse_frame(b).error().message(); };
  CHECK(bad({std::byte{1}, std::byte{0}}).find("shorter than") != std::string::npos);
  std::vector<std::byte> f;
  append_frame(f, FrameType::Ack, 3);
  auto body = std::vector<std::byte>(f.begin() + kLengthBytes, f.end());
  body[0] = std::byte{9};
  CHECK(bad(body).find("unknown type 9") != std::string::npos);
  body[0] = std::byte{2};
  body[1] = std::byte{1};
  CHECK(bad(body).find("flags or reserved") != std::string::npos);
  body[1] = std::byte{0};
  body.push_back(std::byte{0});
  CHECK(bad(body).find("with a body of 1 bytes") != std::string::npos);
  std::vector<std::byte> d;
  append_frame(d, FrameType::Data, 0, std::vector<std::byte>(4));
  CHECK(bad(std::vector<std::byte>(d.begin() + kLengthBytes, d.end())).find("sequence number 0") != std::string::npos);
  std::vector<std::byte> r;
  append_resume(r, 17, ResumeBody{3, 4});
  auto rf = parse_frame(std::span(r).subspan(kLengthBytes));
  REQUIRE(rf);
  CHECK(rf->value == 17);
  CHECK(resume_body(*rf).sender_session == 3);
  CHECK(resume_body(*rf).seen_session == 4);
}

TEST_CASE("a peer that restarts (new session) is resent everything still held", "[link]") {
  SessionOptions o;
  Side a(o, 1), b(o, 2);
  std::deque<std::byte> ab, ba;
  a.s.on_connected();
  b.s.on_connected();
  for (uint64_t i = 1; i <= 10; ++i) {
    make_payload(a.payload, a.next_to_offer++);
    REQUIRE(a.s.offer(a.payload));
  }
  for (int i = 0; i < 4; ++i) {
    transmit(a, ab, 1 << 20);
    transmit(b, ba, 1 << 20);
    receive(b, ab, 1 << 20);
    receive(a, ba, 1 << 20);
  }
  REQUIRE(b.next_expected == 11);
  // b's acks never reached a (no flush): b restarts with a new session and forgets.
  Side b2(o, 3);
  a.s.on_disconnected();
  ab.clear();
  ba.clear();
  a.s.on_connected();
  b2.s.on_connected();
  for (int i = 0; i < 4; ++i) {
    transmit(a, ab, 1 << 20);
    transmit(b2, ba, 1 << 20);
    receive(b2, ab, 1 << 20);
    receive(a, ba, 1 << 20);
  }
  CHECK(b2.next_expected == 11);  // all 10 again: the new incarnation had none
  CHECK(a.s.stats().frames_resent >= 10);
  CHECK(b2.s.stats().peer_restarts == 0);
}

TEST_CASE("a restarted peer that heard this side's Resume before sending its own is resent everything held", "[link]") {
  SessionOptions o;
  Side a(o, 1), b(o, 2);
  std::deque<std::byte> ab, ba;
  a.s.on_connected();
  b.s.on_connected();
  for (uint64_t i = 1; i <= 10; ++i) {
    make_payload(a.payload, a.next_to_offer++);
    REQUIRE(a.s.offer(a.payload));
  }
  for (int i = 0; i < 4; ++i) {
    transmit(a, ab, 1 << 20);
    receive(b, ab, 1 << 20);
    b.s.flush_ack();
    transmit(b, ba, 1 << 20);
    receive(a, ba, 1 << 20);
  }
  REQUIRE(a.s.last_acked() == 10);
  for (uint64_t i = 11; i <= 15; ++i) {  // held, never acknowledged
    make_payload(a.payload, a.next_to_offer++);
    REQUIRE(a.s.offer(a.payload));
  }
  // b restarts; on the new connection it reads a's Resume before writing its own, so its
  // Resume names a's session with "received up to 0" (of its own, new, incarnation).
  Side b2(o, 3);
  b2.next_expected = 11;
  a.s.on_disconnected();
  ab.clear();
  ba.clear();
  a.s.on_connected();
  b2.s.on_connected();
  transmit(a, ab, 1 << 20);
  receive(b2, ab, 1 << 20);
  for (int i = 0; i < 4; ++i) {
    transmit(b2, ba, 1 << 20);
    receive(a, ba, 1 << 20);
    transmit(a, ab, 1 << 20);
    receive(b2, ab, 1 << 20);
  }
  CHECK(b2.next_expected == 16);
  CHECK(a.s.stats().peer_restarts == 1);
}

TEST_CASE("a side that got the peer's Resume before writing anything sends its first frame, then Resume, then Data", "[link]") {
  SessionOptions o;
  Side a(o, 1), b(o, 2);
  std::deque<std::byte> ab, ba;
  std::vector<std::byte> hello;
  REQUIRE(append_hello(hello, Hello{kLinkProtocol, kOldestLinkProtocol, "c", "b"}));
  for (uint64_t i = 1; i <= 3; ++i) {
    make_payload(b.payload, b.next_to_offer++);
    REQUIRE(b.s.offer(b.payload));
  }
  a.s.on_connected();
  b.s.on_connected(hello);
  transmit(a, ab, 1 << 20);
  receive(b, ab, 1 << 20);  // a's Resume: b may send Data, but only after its Hello and Resume
  REQUIRE(b.s.resumed());
  for (int round = 0; round < 3; ++round) transmit(b, ba, 1 << 20);
  std::vector<FrameType> order;
  sock::FrameReader r(kMaxFrame);
  std::vector<std::byte> bytes(ba.begin(), ba.end());
  REQUIRE(r.feed(bytes) == bytes.size());
  for (auto fr = r.next(); fr; fr = r.next()) {
    auto f = parse_frame(*fr);
    REQUIRE(f);
    order.push_back(f->type);
  }
  REQUIRE(order.size() == 5);
  CHECK(order[0] == FrameType::Hello);
  CHECK(order[1] == FrameType::Resume);
  CHECK(order[2] == FrameType::Data);
}

TEST_CASE("Hello: round trip, and a handshake refused with both sides named", "[link]") {
  Hello a{1, 1, "east", "host-a"};
  std::vector<std::byte> bytes;
  REQUIRE(append_hello(bytes, a));
  auto f = parse_frame(std::span(bytes).subspan(kLengthBytes));
  REQUIRE(f);
  auto h = parse_hello(*f);
  REQUIRE(h);
  CHECK(h->cluster == "east");
  CHECK(h->node == "host-a");
  CHECK(h->version == 1);

  CHECK(*negotiate(a, Hello{3, 1, "east", "host-b"}) == 1);  // the highest both speak
  auto newer = negotiate(a, Hello{3, 2, "east", "host-b"});
  REQUIRE_FALSE(newer);
  CHECK(newer.error().code() == Errc::Unsupported);
  CHECK(newer.error().message().find("peer 'host-b' speaks link protocol 2..3, this busd ('host-a') 1..1") !=
        std::string::npos);
  auto other = negotiate(a, Hello{1, 1, "west", "host-c"});
  REQUIRE_FALSE(other);
  CHECK(other.error().message().find("peer 'host-c' is in cluster 'west', this busd ('host-a') in 'east'") !=
        std::string::npos);

  CHECK_FALSE(append_hello(bytes, Hello{1, 1, "bad name", "x"}));
  CHECK_FALSE(append_hello(bytes, Hello{1, 1, "", "x"}));
  // Malformed bodies: short, a name running past the end, bytes left over, bad characters.
  auto body_error = [](std::vector<uint8_t> body) {
    std::vector<std::byte> fr;
    std::vector<std::byte> b(body.size());
    std::memcpy(b.data(), body.data(), body.size());
    append_frame(fr, FrameType::Hello, 0, b);
    auto pf = parse_frame(std::span(fr).subspan(kLengthBytes));
    REQUIRE(pf);
    auto ph = parse_hello(*pf);
    REQUIRE_FALSE(ph);
    CHECK(ph.error().code() == Errc::BadMessage);
    return ph.error().message();
  };
  CHECK(body_error({1, 0, 0, 0}).find("too short") != std::string::npos);
  CHECK(body_error({1, 0, 0, 0, 1, 0, 0, 0, 9, 'a'}).find("runs past") != std::string::npos);
  CHECK(body_error({1, 0, 0, 0, 1, 0, 0, 0, 1, 'a', 1, 'b', 7}).find("after the node name") != std::string::npos);
  CHECK(body_error({1, 0, 0, 0, 1, 0, 0, 0, 1, ' ', 1, 'b'}).find("[A-Za-z0-9._-]") != std::string::npos);
  CHECK(body_error({1, 0, 0, 0, 2, 0, 0, 0, 1, 'a', 1, 'b'}).find("above version") != std::string::npos);
  // The session refuses a Hello: the handshake is the link manager's, before the session.
  Session s(SessionOptions{}, 1);
  s.on_connected();
  CHECK_FALSE(s.on_frame(*f));
}

TEST_CASE("a heartbeat probe is answered with its echo; an echo is not answered", "[link]") {
  SessionOptions o;
  Side a(o, 1), b(o, 2);
  std::deque<std::byte> ab, ba;
  a.s.on_connected();
  b.s.on_connected();
  // The Resumes, both ways.
  transmit(a, ab, 1 << 20);
  transmit(b, ba, 1 << 20);
  receive(b, ab, 1 << 20);
  receive(a, ba, 1 << 20);
  a.s.heartbeat(12345);
  transmit(a, ab, 1 << 20);
  CHECK(ab.size() == kPrefixBytes);  // the probe: one frame without a body
  receive(b, ab, 1 << 20);
  CHECK(b.s.take_echo() == 0);  // a probe is not an echo
  transmit(b, ba, 1 << 20);
  CHECK(ba.size() == kPrefixBytes);  // the echo
  receive(a, ba, 1 << 20);
  CHECK(a.s.take_echo() == 12345);
  CHECK(a.s.take_echo() == 0);  // taken once
  transmit(a, ab, 1 << 20);
  CHECK(ab.empty());  // an echo is not answered
  // A disconnect forgets a probe not answered yet.
  a.s.heartbeat(777);
  transmit(a, ab, 1 << 20);
  receive(b, ab, 1 << 20);
  reconnect(a, b, ab, ba);
  transmit(b, ba, 1 << 20);
  receive(a, ba, 1 << 20);
  CHECK(a.s.take_echo() == 0);
}
