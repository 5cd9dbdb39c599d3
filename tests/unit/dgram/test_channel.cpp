// The datagram layer (dgram::Channel) under the real link session, over a simulated network
// that a seeded random generator makes lose, reorder, duplicate and corrupt packets, and
// whose connections it breaks (one side starts a new connection, as after a restart). Every
// message offered arrives exactly once, in order, intact, each way: checked by number, length
// and a hash of the payload. Many seeds, millions of messages in all (fewer under sanitizers).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "dgram/channel.hpp"
#include "dgram/wire.hpp"
#include "link/session.hpp"
#include "link/wire.hpp"
#include "support/mix.hpp"
#include "support/scale.hpp"

using namespace bus;
using namespace bus::dgram;

namespace {

using bus::test::mix64;

// Message sizes: mostly small (many to a packet), some over one packet (fragments), a few
// large (tens of packets).
size_t size_of(uint64_t number) {
  const uint64_t r = mix64(number) % 1000;
  if (r < 900) return 16 + mix64(number + 1) % 200;
  if (r < 995) return 1200 + mix64(number + 2) % 4000;
  return 20000 + mix64(number + 3) % 40000;
}

// The filler after number and hash: 8-byte words derived from the hash and their position, so
// that a misplaced or mixed-up piece shows.
uint64_t word(uint64_t h, size_t i) { return h ^ (i * 0x9E3779B97F4A7C15ull); }
void fill(std::byte* p, size_t len, uint64_t h) {
  for (size_t i = 16; i < len; i += 8) {
    const uint64_t w = word(h, i);
    std::memcpy(p + i, &w, std::min<size_t>(8, len - i));
  }
}

void make_payload(std::vector<std::byte>& out, uint64_t number) {
  const size_t len = size_of(number);
  out.resize(len);
  const uint64_t h = mix64(number * 7 + 1);
  std::memcpy(out.data(), &number, 8);
  std::memcpy(out.data() + 8, &h, 8);
  fill(out.data(), len, h);
}

bool payload_ok(std::span<const std::byte> body, uint64_t want, std::string& why) {
  uint64_t number = 0, h = 0;
  if (body.size() < 16) {
    why = "short body";
    return false;
  }
  std::memcpy(&number, body.data(), 8);
  std::memcpy(&h, body.data() + 8, 8);
  if (number != want) {
    why = "got message " + std::to_string(number) + ", wanted " + std::to_string(want);
    return false;
  }
  if (h != mix64(number * 7 + 1) || body.size() != size_of(number)) {
    why = "message " + std::to_string(number) + " damaged";
    return false;
  }
  for (size_t i = 16; i < body.size(); i += 8) {
    const uint64_t w = word(h, i);
    if (std::memcmp(body.data() + i, &w, std::min<size_t>(8, body.size() - i)) != 0) {
      why = "message " + std::to_string(number) + " damaged at byte " + std::to_string(i);
      return false;
    }
  }
  return true;
}

struct Impair {
  uint32_t loss = 0, dup = 0, corrupt = 0, reorder = 0;  // per mille
  uint64_t delay_ns = 20'000, jitter_ns = 0;              // base one-way delay; reordered: + up to jitter
};

struct InFlight {
  uint64_t at;
  uint64_t order;
  std::vector<std::byte> bytes;
  bool operator>(const InFlight& o) const { return at != o.at ? at > o.at : order > o.order; }
};

// One direction of the simulated network.
struct Wire {
  std::vector<InFlight> q;  // a heap on (at, order)
  uint64_t order = 0;
  uint64_t lost = 0, duplicated = 0, corrupted = 0, reordered = 0;

  void send(std::span<const std::byte> pkt, uint64_t now, const Impair& im, std::mt19937_64& rng) {
    auto roll = [&](uint32_t permille) { return permille != 0 && rng() % 1000 < permille; };
    if (roll(im.loss)) {
      ++lost;
      return;
    }
    const int copies = roll(im.dup) ? 2 : 1;
    duplicated += copies - 1;
    for (int c = 0; c < copies; ++c) {
      InFlight f{now + im.delay_ns, order++, std::vector<std::byte>(pkt.begin(), pkt.end())};
      if (roll(im.reorder) && im.jitter_ns > 0) {
        f.at += 1 + rng() % im.jitter_ns;
        ++reordered;
      }
      if (roll(im.corrupt)) {
        const size_t bit = rng() % (f.bytes.size() * 8);
        f.bytes[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
        ++corrupted;
      }
      q.push_back(std::move(f));
      std::push_heap(q.begin(), q.end(), std::greater<>());
    }
  }
};

// One end: a link session (lives across connections) over a channel (one per connection).
struct End {
  End(uint64_t session_id, const ChannelOptions& o) : s(link::SessionOptions{1u << 20, 64}, session_id), co(o) {}
  link::Session s;
  ChannelOptions co;
  std::unique_ptr<Channel> ch;
  bool session_connected = false;
  uint64_t next_offer = 1, next_expected = 1, offered_target = 0;
  std::vector<std::byte> payload;
  std::vector<link::Frame> frames;
  std::vector<std::span<const std::byte>> out;
  // Packets the channel holds: the simulation owns their bytes until released.
  std::map<uint64_t, std::vector<std::byte>> held;
  uint64_t next_handle = 1;
  uint64_t connections = 0;

  void connect(std::mt19937_64& rng) {
    if (ch) release_all();
    if (session_connected) s.on_disconnected();
    session_connected = false;
    uint32_t id = 0;
    while (id == 0) id = static_cast<uint32_t>(rng());
    ch = std::make_unique<Channel>(co, id);
    ++connections;
  }
  void release_all() {
    ch->release_all();
    give_back();
  }
  void give_back() {
    for (uint64_t h : ch->released()) REQUIRE(held.erase(h) == 1);
    ch->released().clear();
  }
};

struct Sim {
  Sim(uint64_t seed, const Impair& im, const ChannelOptions& o)
      : rng(seed), impair(im), a(mix64(seed) | 1, o), b(mix64(seed + 1) | 1, o) {
    a.connect(rng);
    b.connect(rng);
  }
  std::mt19937_64 rng;
  Impair impair;
  End a, b;
  Wire ab, ba;
  uint64_t now = 1'000'000;

  void offer(End& e) {
    while (e.next_offer <= e.offered_target) {
      make_payload(e.payload, e.next_offer);
      auto r = e.s.offer(e.payload);
      if (!r) {
        REQUIRE(r.error() == Errc::WouldBlock);
        return;
      }
      ++e.next_offer;
    }
  }

  void send(End& e, Wire& w) {
    e.out.clear();
    e.ch->collect(e.ch->state() == ChannelState::Up && e.session_connected ? &e.s : nullptr, now, e.out);
    for (auto p : e.out) {
      REQUIRE(p.size() <= e.co.max_packet);
      w.send(p, now, impair, rng);
    }
  }

  // Delivers what is due on `w` to `e`, then what the channel has in order to e's session.
  void arrive(End& e, Wire& w) {
    std::vector<RxPacket> in;
    while (!w.q.empty() && w.q.front().at <= now) {
      std::pop_heap(w.q.begin(), w.q.end(), std::greater<>());
      InFlight f = std::move(w.q.back());
      w.q.pop_back();
      const uint64_t h = e.next_handle++;
      auto& bytes = e.held[h] = std::move(f.bytes);
      in.push_back(RxPacket{bytes.data(), static_cast<uint32_t>(bytes.size()), h});
      if (in.size() == 64) break;
    }
    const bool up_before = e.ch->state() == ChannelState::Up;
    e.frames.clear();
    auto r = e.ch->receive(in, up_before && e.session_connected ? &e.frames : nullptr, 1024, now);
    if (!r) {
      INFO("channel down: " << e.ch->error());
      REQUIRE(r.error() == Errc::Closed);  // the peer started over: never a protocol fault
      e.give_back();
      e.connect(rng);
      return;
    }
    if (e.ch->state() == ChannelState::Up && !e.session_connected) {
      e.s.on_connected();
      e.session_connected = true;
    }
    for (const link::Frame& f : e.frames) {
      auto in_kind = e.s.on_frame(f);
      INFO("session: " << (in_kind ? "" : in_kind.error().message()));
      REQUIRE(in_kind.has_value());
      if (*in_kind != link::Session::Inbound::Deliver) continue;
      std::string why;
      INFO(why);
      const bool ok = payload_ok(f.body, e.next_expected, why);
      if (!ok) FAIL(why);
      ++e.next_expected;
    }
    e.s.flush_ack();
    e.give_back();
  }

  void step() {
    offer(a);
    offer(b);
    send(a, ab);
    send(b, ba);
    arrive(b, ab);
    arrive(a, ba);
    now += 2'000 + rng() % 8'000;
  }

  bool done(uint64_t n) const { return b.next_expected > n && a.next_expected > n; }
};

void run(uint64_t seed, uint64_t messages, const Impair& im, const ChannelOptions& o, uint32_t breaks) {
  Sim sim(seed, im, o);
  sim.a.offered_target = sim.b.offered_target = messages;
  uint64_t steps = 0;
  const uint64_t limit = messages * 50 + 1'000'000;
  uint64_t next_break = breaks > 0 ? messages / (breaks + 1) : UINT64_MAX;
  while (!sim.done(messages)) {
    sim.step();
    REQUIRE(++steps < limit);
    // A break: one side starts a new connection (its old one is gone, as after a restart of
    // the link); the peer learns it from the new Syn.
    if (sim.b.next_expected > next_break) {
      (sim.rng() % 2 ? sim.a : sim.b).connect(sim.rng);
      next_break += messages / (breaks + 1);
    }
  }
  // Everything arrived once: nothing more comes when the network drains.
  for (int i = 0; i < 200; ++i) sim.step();
  CHECK(sim.b.next_expected == messages + 1);
  CHECK(sim.a.next_expected == messages + 1);
  const auto& st = sim.b.ch->stats();
  const auto& sa = sim.a.ch->stats();
  std::printf("seed %3llu: %llu msgs each way; a->b lost %llu dup %llu corrupt %llu reordered %llu | a: data pkts %llu, "
              "retransmits %llu, rto %llu, naks in %llu | b: dups %llu, corrupt %llu, out of order %llu, acks %llu, "
              "srtt %llu ns | connections %llu+%llu\n",
              (unsigned long long)seed, (unsigned long long)messages, (unsigned long long)sim.ab.lost,
              (unsigned long long)sim.ab.duplicated, (unsigned long long)sim.ab.corrupted,
              (unsigned long long)sim.ab.reordered, (unsigned long long)sa.data_out, (unsigned long long)sa.retransmits,
              (unsigned long long)sa.rto_fires, (unsigned long long)sa.naks_in, (unsigned long long)st.duplicates,
              (unsigned long long)st.corrupt, (unsigned long long)st.out_of_order, (unsigned long long)st.acks_out,
              (unsigned long long)st.srtt_ns, (unsigned long long)sim.a.connections, (unsigned long long)sim.b.connections);
  INFO("seed " << seed << ": lost " << sim.ab.lost << " dup " << sim.ab.duplicated << " corrupt " << sim.ab.corrupted
               << " reordered " << sim.ab.reordered << "; b corrupt " << st.corrupt << " dups " << st.duplicates);
  if (im.corrupt > 0 && sim.ab.corrupted > 10) CHECK(sim.a.ch->stats().corrupt + st.corrupt > 0);
  if (im.loss > 0 && sim.ab.lost > 10 && breaks == 0) CHECK(sim.a.ch->stats().retransmits > 0);
}

}  // namespace

TEST_CASE("crc32c matches the Castagnoli check value and a bitwise reference") {
  const char* check = "123456789";
  CHECK(crc32c(reinterpret_cast<const std::byte*>(check), 9) == 0xE3069283u);
  std::mt19937_64 rng(7);
  for (int t = 0; t < 200; ++t) {
    std::vector<std::byte> v(rng() % 3000);
    for (auto& x : v) x = static_cast<std::byte>(rng());
    uint32_t ref = ~0u;
    for (auto x : v) {
      ref ^= static_cast<uint8_t>(x);
      for (int k = 0; k < 8; ++k) ref = (ref & 1) ? (ref >> 1) ^ 0x82F63B78u : ref >> 1;
    }
    REQUIRE(crc32c(v.data(), v.size()) == ~ref);
    // Incremental: the CRC of a split buffer equals the CRC of the whole.
    const size_t cut = v.empty() ? 0 : rng() % v.size();
    REQUIRE(crc32c(v.data() + cut, v.size() - cut, crc32c(v.data(), cut)) == ~ref);
  }
}

TEST_CASE("packet headers: every field checked, every fault named") {
  std::vector<std::byte> p(kHeaderBytes + kSynBody);
  Header h;
  h.type = PacketType::Syn;
  h.src_conn = 5;
  h.window = 64;
  h.payload_len = kSynBody;
  write_header(p.data(), h);
  store_le(p.data() + kHeaderBytes, 1472, 4);
  seal(p.data(), p.size());
  Header got;
  REQUIRE(parse_header(p, got) == Reject::None);
  CHECK(got.src_conn == 5);
  CHECK(got.window == 64);
  CHECK(parse_header(std::span(p).first(10), got) == Reject::Short);
  CHECK(parse_header(std::span(p).first(p.size() - 1), got) == Reject::Crc);
  auto with = [&](size_t at, uint8_t v, bool reseal) {
    auto q = p;
    q[at] = std::byte{v};
    if (reseal) seal(q.data(), q.size());
    return parse_header(q, got);
  };
  CHECK(with(0, 0x00, true) == Reject::Magic);
  CHECK(with(2, 9, true) == Reject::Version);
  CHECK(with(3, 9, true) == Reject::Type);
  CHECK(with(36, 7, true) == Reject::Length);
  CHECK(with(20, 1, false) == Reject::Crc);
  CHECK(with(8, 6, true) == Reject::None);  // another src_conn
  auto q = p;
  store_le(q.data() + 8, 0, 4);  // a Syn from connection 0
  seal(q.data(), q.size());
  CHECK(parse_header(q, got) == Reject::Body);
}

TEST_CASE("a clean network: many small messages pack into few packets, in order") {
  ChannelOptions o;
  run(1, bus::test::scaled(200'000), Impair{}, o, 0);
}

TEST_CASE("loss, reordering, duplication and corruption: exactly once, in order, intact, many seeds") {
  ChannelOptions o;
  o.window = 128;
  const uint64_t seeds = 12;
  const uint64_t per_seed = bus::test::scaled(120'000);
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    Impair im;
    im.loss = 10 + seed * 5 % 50;        // 1% .. 6%
    im.dup = 20;
    im.corrupt = 10 + seed % 3 * 10;
    im.reorder = 100;
    im.jitter_ns = 300'000;
    run(seed, per_seed, im, o, 0);
  }
}

TEST_CASE("a side that starts a new connection: the sessions resume, nothing lost or repeated") {
  ChannelOptions o;
  o.window = 64;
  for (uint64_t seed = 100; seed < 106; ++seed) {
    Impair im;
    im.loss = 20;
    im.reorder = 50;
    im.jitter_ns = 100'000;
    run(seed, bus::test::scaled(60'000), im, o, 4);
  }
}

TEST_CASE("a small MTU: large frames in many fragments") {
  ChannelOptions o;
  o.max_packet = 256;
  o.window = 512;
  Impair im;
  im.loss = 30;
  im.reorder = 100;
  im.jitter_ns = 50'000;
  run(77, bus::test::scaled(20'000), im, o, 0);
}

// ---------------------------------------------------------------- hostile peers

namespace {

struct Pair {
  explicit Pair(const ChannelOptions& for_b = {}) : a(o, 0x1111), b(for_b, 0x2222) {}
  ChannelOptions o;
  Channel a, b;
  uint64_t now = 1'000'000;
  std::vector<std::span<const std::byte>> out;
  std::vector<std::vector<std::byte>> keep;

  // Moves what `from` sends to `to` (no session: handshake and control only).
  void pass(Channel& from, Channel& to) {
    out.clear();
    from.collect(nullptr, now, out);
    std::vector<RxPacket> in;
    for (auto p : out) {
      keep.emplace_back(p.begin(), p.end());
      in.push_back(RxPacket{keep.back().data(), static_cast<uint32_t>(keep.back().size()), keep.size()});
    }
    (void)to.receive(in, nullptr, 0, now);
    to.released().clear();
  }
  void handshake() {
    for (int i = 0; i < 4; ++i) {
      pass(a, b);
      pass(b, a);
      now += 1000;
    }
    REQUIRE(a.state() == ChannelState::Up);
    REQUIRE(b.state() == ChannelState::Up);
  }
  // A Data packet from a to b with the given payload (bypassing a's packer).
  std::vector<std::byte> data(uint64_t seq, const std::vector<std::byte>& payload, uint32_t src = 0x1111) {
    std::vector<std::byte> p(kHeaderBytes + payload.size());
    Header h;
    h.type = PacketType::Data;
    h.src_conn = src;
    h.dst_conn = 0x2222;
    h.seq = seq;
    h.window = 64;
    h.payload_len = static_cast<uint16_t>(payload.size());
    write_header(p.data(), h);
    std::memcpy(p.data() + kHeaderBytes, payload.data(), payload.size());
    seal(p.data(), p.size());
    return p;
  }
  Result<size_t> feed(std::vector<std::byte>& p, std::vector<link::Frame>& frames) {
    const RxPacket in{p.data(), static_cast<uint32_t>(p.size()), 1};
    auto r = b.receive(std::span(&in, 1), &frames, 1024, now);
    b.released().clear();
    return r;
  }
};

std::vector<std::byte> chunk(size_t len, uint8_t flags, size_t frame_len = 0) {
  std::vector<std::byte> c(chunk_stride(len));
  store_le(c.data(), len, 2);
  c[2] = std::byte{flags};
  if (frame_len != 0 || (flags & kFirst)) {
    // A link Data frame header at the start of a first chunk.
    if (len >= link::kHeaderBytes) {
      c[4] = std::byte{1};
      store_le(c.data() + 8, 1, 8);
    }
  }
  return c;
}

}  // namespace

TEST_CASE("handshake: each side learns the other; another connection's packets are dropped") {
  Pair p;
  p.handshake();
  CHECK(p.a.peer_conn() == 0x2222);
  CHECK(p.b.peer_conn() == 0x1111);
  std::vector<link::Frame> frames;
  auto stale = p.data(1, chunk(20, kFirst | kLast), 0x9999);
  REQUIRE(p.feed(stale, frames).value() == 0);
  CHECK(p.b.stats().stale == 1);
  auto good = p.data(1, chunk(20, kFirst | kLast));
  REQUIRE(p.feed(good, frames).value() == 1);
  CHECK(frames[0].type == link::FrameType::Data);
  CHECK(frames[0].body.size() == 8);
}

TEST_CASE("corrupt packets are dropped and counted, the connection lives on") {
  Pair p;
  p.handshake();
  std::vector<link::Frame> frames;
  auto pkt = p.data(1, chunk(20, kFirst | kLast));
  pkt[kHeaderBytes + 10] ^= std::byte{0x40};
  REQUIRE(p.feed(pkt, frames).value() == 0);
  CHECK(p.b.stats().corrupt == 1);
  CHECK(p.b.state() == ChannelState::Up);
}

TEST_CASE("a peer that breaks the chunk rules takes its connection down with a reason") {
  struct Case {
    const char* what;
    std::vector<std::byte> payload;
    const char* reason;
  };
  auto cat = [](std::vector<std::byte> x, const std::vector<std::byte>& y) {
    x.insert(x.end(), y.begin(), y.end());
    return x;
  };
  std::vector<std::byte> lying = chunk(20, kFirst | kLast);
  store_le(lying.data(), 500, 2);
  std::vector<std::byte> flags = chunk(20, kFirst | kLast);
  flags[2] = std::byte{0x80};
  const Case cases[] = {
      {"a middle fragment first", chunk(20, 0), "without its first part"},
      {"a last fragment first", chunk(20, kLast), "without its first part"},
      {"a frame inside a frame", cat(chunk(20, kFirst), chunk(20, kFirst | kLast)), "starts inside"},
      {"a length past the packet", lying, "longer than its packet"},
      {"unknown flags", flags, "flags"},
      {"a chunk header cut off", std::vector<std::byte>(2), "cut off"},
      {"a frame shorter than its header", chunk(5, kFirst | kLast), "shorter than its"},
  };
  for (const Case& c : cases) {
    SECTION(c.what) {
      Pair p;
      p.handshake();
      std::vector<link::Frame> frames;
      auto pkt = p.data(1, c.payload);
      auto r = p.feed(pkt, frames);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error() == Errc::BadMessage);
      CHECK(p.b.state() == ChannelState::Down);
      INFO(p.b.error());
      CHECK(p.b.error().find(c.reason) != std::string::npos);
    }
  }
}

TEST_CASE("a frame reassembled past max_frame is refused") {
  ChannelOptions small;
  small.max_frame = 600;
  Pair q(small);
  q.handshake();
  std::vector<link::Frame> frames;
  uint64_t seq = 1;
  Result<size_t> r = 0;
  for (int i = 0; i < 5 && r; ++i) {
    auto pkt = q.data(seq++, chunk(200, i == 0 ? kFirst : 0));
    r = q.feed(pkt, frames);
  }
  REQUIRE_FALSE(r.has_value());
  CHECK(q.b.error().find("above the largest") != std::string::npos);
}

TEST_CASE("a whole frame in one packet past max_frame is refused") {
  ChannelOptions small;
  small.max_frame = 256;
  Pair q(small);
  q.handshake();
  std::vector<link::Frame> frames;
  auto fits = q.data(1, chunk(200, kFirst | kLast));
  REQUIRE(q.feed(fits, frames).has_value());
  auto over = q.data(2, chunk(400, kFirst | kLast));
  auto r = q.feed(over, frames);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() == Errc::BadMessage);
  CHECK(q.b.error().find("above the largest") != std::string::npos);
}

TEST_CASE("an ack of a packet never sent is a protocol fault") {
  Pair p;
  p.handshake();
  std::vector<std::byte> pkt(kHeaderBytes + 4);
  Header h;
  h.type = PacketType::Ack;
  h.src_conn = 0x1111;
  h.dst_conn = 0x2222;
  h.ack = 50;
  h.window = 64;
  h.payload_len = 4;
  write_header(pkt.data(), h);
  seal(pkt.data(), pkt.size());
  std::vector<link::Frame> frames;
  auto r = p.feed(pkt, frames);
  REQUIRE_FALSE(r.has_value());
  CHECK(p.b.error().find("beyond the last one sent") != std::string::npos);
}

TEST_CASE("a Syn with a new id from a peer that was up ends the connection; Fin closes it") {
  Pair p;
  p.handshake();
  Channel a2(p.o, 0x3333);
  p.pass(a2, p.b);
  CHECK(p.b.state() == ChannelState::Down);
  CHECK(p.b.down_code() == Errc::Closed);
  CHECK(p.b.error().find("new connection") != std::string::npos);

  Pair q;
  q.handshake();
  q.a.close("busd stopping");
  q.pass(q.a, q.b);
  CHECK(q.b.state() == ChannelState::Down);
  CHECK(q.b.error() == "the peer closed the link");
}

TEST_CASE("zero copy: behind Ethernet+IPv4+UDP in an mbuf, every whole frame's body is 8-byte aligned") {
  // An mbuf's data starts 8-byte aligned; the UDP payload then sits 42 bytes in (2 mod 8).
  Pair p;
  p.handshake();
  link::Session s(link::SessionOptions{1u << 20, 64}, 0xAA);
  s.on_connected();
  std::vector<std::byte> rb;
  link::append_resume(rb, 0, link::ResumeBody{0xBB, 0});
  REQUIRE(s.on_frame(*link::parse_frame(std::span(rb).subspan(link::kLengthBytes))).has_value());
  std::mt19937_64 rng(3);
  for (int i = 0; i < 300; ++i) {
    std::vector<std::byte> env(8 + rng() % 700, std::byte{0x11});
    REQUIRE(s.offer(env).has_value());
  }
  p.out.clear();
  p.a.collect(&s, p.now, p.out);
  REQUIRE(p.out.size() > 10);
  std::vector<std::vector<uint64_t>> store;
  std::vector<RxPacket> in;
  for (auto pkt : p.out) {
    store.emplace_back(pkt.size() / 8 + 8);
    auto* at = reinterpret_cast<std::byte*>(store.back().data()) + 42;
    std::memcpy(at, pkt.data(), pkt.size());
    in.push_back(RxPacket{at, static_cast<uint32_t>(pkt.size()), in.size() + 1});
  }
  std::vector<link::Frame> frames;
  REQUIRE(p.b.receive(in, &frames, 100000, p.now).has_value());
  size_t data = 0;
  for (const link::Frame& f : frames) {
    if (f.type != link::FrameType::Data) continue;
    ++data;
    REQUIRE(reinterpret_cast<uintptr_t>(f.body.data()) % 8 == 0);
  }
  CHECK(data == 300);
}
