// The RDMA link over fake verbs (transports/rdma/fake_verbs.hpp), with link::Session on top of
// each side as busd has it: many seeds of random message sizes both ways, exactly once and in
// order; rings wrapping many times; ring credits, receive credits and the send queue exhausted
// and given back; inline and CQ limits (the fake refuses a breach and records it: every test
// asserts none); completion errors injected mid-batch: the link goes Down with the verbs status
// string, and a new connection resumes through the sessions without loss or duplicates.
// Expected duration: a few seconds (release build).
#include <catch2/catch.hpp>

#include <arpa/inet.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "link/session.hpp"
#include "link/wire.hpp"
#include "rdma/fake_verbs.hpp"
#include "rdma/rdma_link.hpp"
#include "support/mix.hpp"
#include "support/scale.hpp"

using namespace bus;
using namespace bus::rdma;
using Catch::Matchers::Contains;

namespace {

using bus::test::mix64;

// A message body: [number u64][hash u64][filler]; its size follows from the number: mostly
// small, one in 16 up to `max_body`.
size_t body_len(uint64_t number, uint64_t salt, size_t max_body) {
  const uint64_t h = mix64(number ^ salt);
  if (h % 16 == 0) return 16 + (h >> 8) % (max_body - 16 + 1);
  return 16 + (h >> 8) % 200;
}

void make_body(std::vector<std::byte>& out, uint64_t number, uint64_t salt, size_t max_body) {
  const size_t len = body_len(number, salt, max_body);
  const uint64_t h = mix64(number * 7 + salt);
  out.assign(len, std::byte{0});
  std::memcpy(out.data(), &number, 8);
  std::memcpy(out.data() + 8, &h, 8);
  for (size_t i = 16; i < len; ++i) out[i] = static_cast<std::byte>((h >> (i % 8 * 8)) + i);
}

void check_body(std::span<const std::byte> body, uint64_t want, uint64_t salt, size_t max_body) {
  REQUIRE(body.size() >= 16);
  uint64_t number = 0, h = 0;
  std::memcpy(&number, body.data(), 8);
  std::memcpy(&h, body.data() + 8, 8);
  REQUIRE(number == want);  // exactly once, in order
  REQUIRE(h == mix64(number * 7 + salt));
  REQUIRE(body.size() == body_len(number, salt, max_body));
  for (size_t i = 16; i < body.size(); ++i) {
    if (body[i] != static_cast<std::byte>((h >> (i % 8 * 8)) + i)) FAIL("message " << number << " damaged at byte " << i);
  }
}

struct End {
  End(uint64_t id, size_t hold) : s(link::SessionOptions{hold, 32}, id) {}
  link::Session s;
  std::unique_ptr<RdmaLink> l;
  FakeVerbs* fv = nullptr;
  uint64_t next_to_offer = 1;  // numbers this side offers
  uint64_t expect = 1;         // the number the peer's next delivery must carry
  uint64_t salt = 0;
  std::vector<std::byte> body;
  std::vector<link::Frame> frames;
  RdmaCounters totals;         // summed over connections
  uint64_t bytes_out = 0;
  std::vector<std::string> violations;
};

void add(RdmaCounters& t, const RdmaCounters& c) {
  t.doorbells += c.doorbells;
  t.wrs_posted += c.wrs_posted;
  t.wrs_signaled += c.wrs_signaled;
  t.wrs_inline += c.wrs_inline;
  t.credit_returns_sent += c.credit_returns_sent;
  t.credit_returns_received += c.credit_returns_received;
  t.ring_stalls += c.ring_stalls;
  t.recv_credit_stalls += c.recv_credit_stalls;
  t.sq_stalls += c.sq_stalls;
  t.wc_errors += c.wc_errors;
  t.recvs_posted += c.recvs_posted;
}

struct Harness {
  Harness(uint64_t seed, Options a, Options b, uint32_t inl_a, uint32_t inl_b, size_t hold = 64u << 10)
      : rng(seed), oa(a), ob(b), la(fitting_limits(a, inl_a)), lb(fitting_limits(b, inl_b)), x(0xA000 + seed, hold),
        y(0xB000 + seed, hold) {
    x.salt = mix64(seed * 2 + 1);
    y.salt = mix64(seed * 2 + 2);
    // Bodies fit the smaller max_frame (the link refuses a larger frame).
    max_body = std::min(a.max_frame, b.max_frame) - link::kHeaderBytes;
  }

  std::mt19937_64 rng;
  Options oa, ob;
  Limits la, lb;
  End x, y;
  size_t max_body = 0;
  uint64_t total = 0;     // messages each side offers
  uint32_t wire_max = 8;  // WRs a fake runs per step, at most
  uint32_t recv_skip = 0; // 1 in N steps a side does not receive (0: always receives)
  uint64_t connects = 0;

  void connect() {
    auto [p, q] = fake_pair(oa, la, ob, lb);
    x.fv = p.get();
    y.fv = q.get();
    x.l = std::make_unique<RdmaLink>(std::move(p), oa, "y");
    y.l = std::make_unique<RdmaLink>(std::move(q), ob, "x");
    INFO(x.l->error() << " / " << y.l->error());
    REQUIRE(x.l->state() == link::LinkState::Up);
    REQUIRE(y.l->state() == link::LinkState::Up);
    x.s.on_connected();
    y.s.on_connected();
    ++connects;
  }

  // The connection is gone (as busd's peer does it: close, keep the counts, resume later).
  void retire() {
    for (End* e : {&x, &y}) {
      if (e->l) {
        add(e->totals, e->l->rdma_counters());
        // What busd's counters page shows (link::LinkCounters) agrees with the link's own counts.
        const RdmaCounters& rc = e->l->rdma_counters();
        const link::LinkCounters& lc = e->l->counters();
        REQUIRE(lc.doorbells == rc.doorbells);
        REQUIRE(lc.credit_stalls == rc.ring_stalls + rc.recv_credit_stalls);
        REQUIRE(lc.queue_stalls == rc.sq_stalls);
        REQUIRE(lc.completion_errors == rc.wc_errors);
        e->bytes_out += e->l->counters().bytes_out;
        for (const auto& v : e->fv->violations()) e->violations.push_back(v);
        REQUIRE(e->fv->max_outstanding_seen() <= e->fv->limits().max_send_wr);
        REQUIRE(e->fv->max_cq_seen() <= e->fv->limits().cq_depth);
      }
    }
    x.l.reset();
    y.l.reset();
    x.s.on_disconnected();
    y.s.on_disconnected();
  }

  [[nodiscard]] bool done() const { return x.expect > total && y.expect > total; }

  // One turn of both poll loops. False when a link went Down.
  bool step() {
    for (End* e : {&x, &y}) {
      const int k = static_cast<int>(rng() % 12);
      for (int i = 0; i < k && e->next_to_offer <= total; ++i) {
        make_body(e->body, e->next_to_offer, e->salt, max_body);
        if (!e->s.can_offer(e->body.size())) break;
        REQUIRE(e->s.offer(e->body));
        ++e->next_to_offer;
      }
      if (rng() % 3 == 0) e->s.flush_ack();
      if (!e->l->transmit(e->s)) return false;
    }
    x.fv->run(rng() % (wire_max + 1));
    y.fv->run(rng() % (wire_max + 1));
    for (End* e : {&x, &y}) {
      if (recv_skip != 0 && rng() % recv_skip == 0) continue;
      End& from = e == &x ? y : x;
      e->frames.clear();
      auto got = e->l->receive(e->frames, 1 + rng() % 48);
      if (!got) return false;
      REQUIRE(*got == e->frames.size());
      for (const link::Frame& f : e->frames) {
        auto in = e->s.on_frame(f);
        INFO("frame type " << static_cast<int>(f.type) << " value " << f.value);
        REQUIRE(in);
        if (*in == link::Session::Inbound::Deliver) check_body(f.body, e->expect++, from.salt, max_body);
      }
    }
    return true;
  }

  void run_to_end(uint64_t max_steps) {
    uint64_t steps = 0;
    while (!done()) {
      if (++steps >= max_steps) {
        for (End* e : {&x, &y}) {
          const auto& c = e->l->rdma_counters();
          WARN((e == &x ? "x" : "y") << ": offered " << e->next_to_offer - 1 << " got " << e->expect - 1 << " held "
                                     << e->s.held_bytes() << " acked " << e->s.last_acked() << " resumed " << e->s.resumed()
                                     << " outstanding " << e->l->outstanding() << " fake pending " << e->fv->pending_sends()
                                     << " cq " << e->fv->cq_size() << " recvs posted " << e->fv->posted_recvs() << " stalls ring "
                                     << c.ring_stalls << " rc " << c.recv_credit_stalls << " sq " << c.sq_stalls << " credits out "
                                     << c.credit_returns_sent << " in " << c.credit_returns_received << " has_input "
                                     << e->l->has_input() << " timer " << e->l->timer_ns() << "\n  " << e->l->debug_state());
        }
        FAIL("no progress");
      }
      if (!step()) FAIL("a link went down: " << x.l->error() << " / " << y.l->error());
    }
  }

  void finish() {
    retire();
    INFO((x.violations.empty() ? std::string() : x.violations.front()) << (y.violations.empty() ? std::string() : y.violations.front()));
    REQUIRE(x.violations.empty());
    REQUIRE(y.violations.empty());
  }
};

Options small(uint32_t ring, uint32_t max_frame, uint32_t send_depth, uint32_t recv_depth, uint32_t sig, uint32_t batch) {
  Options o;
  o.ring_bytes = ring;
  o.max_frame = max_frame;
  o.send_depth = send_depth;
  o.recv_depth = recv_depth;
  o.signal_every = sig;
  o.batch_wrs = batch;
  return o;
}

}  // namespace

TEST_CASE("random sizes both ways over many seeds: exactly once, in order, rings wrapping", "[rdma]") {
  const uint64_t seeds = bus::test::scaled(160);
  uint64_t wraps_seen = 0;
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    std::mt19937_64 pick(seed);
    // Each side its own ring and depths; frames up to a quarter of the smaller ring.
    const uint32_t ring_a = 4096u << (pick() % 5);
    const uint32_t ring_b = 4096u << (pick() % 5);
    const uint32_t max_frame = std::min(ring_a, ring_b) / 4 - 4;
    const uint32_t sd = 4u << (pick() % 5), rd = 4u << (pick() % 5);
    Options a = small(ring_a, max_frame, sd, rd, 1 + static_cast<uint32_t>(pick() % (sd / 2)), 1 + static_cast<uint32_t>(pick() % 32));
    Options b = small(ring_b, max_frame, 4u << (pick() % 5), 4u << (pick() % 5), 1, 32);
    b.signal_every = 1 + static_cast<uint32_t>(pick() % (b.send_depth / 2));
    b.batch_wrs = std::min(b.batch_wrs, b.send_depth);
    a.batch_wrs = std::min(a.batch_wrs, a.send_depth);
    const uint32_t inline_sizes[] = {0, 16, 64, 256};
    Harness h(seed, a, b, inline_sizes[pick() % 4], inline_sizes[pick() % 4]);
    h.total = 1500;
    h.wire_max = 1 + static_cast<uint32_t>(pick() % 16);
    h.recv_skip = pick() % 2 ? 0 : 2 + static_cast<uint32_t>(pick() % 3);  // sometimes a side skips a turn's read
    INFO("seed " << seed << " rings " << ring_a << "/" << ring_b << " depths " << a.send_depth << "/" << a.recv_depth << " "
                 << b.send_depth << "/" << b.recv_depth);
    h.connect();
    h.run_to_end(400000);
    h.finish();
    REQUIRE(h.x.totals.wc_errors == 0);
    REQUIRE(h.y.totals.wc_errors == 0);
    REQUIRE(h.x.totals.doorbells <= h.x.totals.wrs_posted);
    if (h.x.bytes_out > 3ull * ring_b) ++wraps_seen;
  }
  REQUIRE(wraps_seen > seeds / 2);  // most runs went round their rings several times
}

TEST_CASE("ring credits exhausted and returned", "[rdma]") {
  Options o = small(4096, 1012, 64, 64, 8, 16);
  Harness h(7, o, o, 64, 64);
  h.connect();
  // x offers far more than y's ring holds; y does not read.
  std::vector<std::byte> body;
  for (uint64_t i = 0; i < 200; ++i) {
    make_body(body, h.x.next_to_offer, h.x.salt, h.max_body);
    if (!h.x.s.can_offer(body.size())) break;
    REQUIRE(h.x.s.offer(body));
    ++h.x.next_to_offer;
  }
  // y's Resume first, so that x's Data may flow.
  REQUIRE(h.y.l->transmit(h.y.s));
  h.y.fv->run();
  h.x.frames.clear();
  REQUIRE(h.x.l->receive(h.x.frames, 64));
  for (const auto& f : h.x.frames) REQUIRE(h.x.s.on_frame(f));
  for (int i = 0; i < 20; ++i) {
    REQUIRE(h.x.l->transmit(h.x.s));
    h.x.fv->run();
  }
  const RdmaCounters& c = h.x.l->rdma_counters();
  REQUIRE(c.ring_stalls > 0);              // the ring is full: output held back
  REQUIRE(h.x.l->counters().credit_stalls == c.ring_stalls);  // busctl links' STALLS, the page's credit_stalls
  REQUIRE(h.x.l->counters().bytes_out <= 4096);  // never more than the ring in flight
  REQUIRE(h.x.l->timer_ns() == UINT64_MAX);  // nothing came back yet: no reason to call again
  // y reads: frames out, ring space back once consumed (its next receive), credit returned.
  h.y.frames.clear();
  REQUIRE(h.y.l->receive(h.y.frames, 1000));
  REQUIRE(!h.y.frames.empty());
  for (const auto& f : h.y.frames) {
    auto in = h.y.s.on_frame(f);
    REQUIRE(in);
    if (*in == link::Session::Inbound::Deliver) check_body(f.body, h.y.expect++, h.x.salt, h.max_body);
  }
  REQUIRE(h.y.l->has_input());  // consumed and not yet returned: the next receive() returns it
  h.y.frames.clear();
  REQUIRE(h.y.l->receive(h.y.frames, 0));  // takes nothing new: releases what it handed out
  REQUIRE(h.y.l->rdma_counters().credit_returns_sent > 0);
  h.y.fv->run();
  REQUIRE(h.x.l->has_input());
  h.x.frames.clear();
  REQUIRE(h.x.l->receive(h.x.frames, 64));
  REQUIRE(h.x.l->rdma_counters().credit_returns_received > 0);
  REQUIRE(h.x.l->timer_ns() == 0);  // credit came back while output waited: transmit now
  const uint64_t before = h.x.l->counters().bytes_out;
  REQUIRE(h.x.l->transmit(h.x.s));
  REQUIRE(h.x.l->counters().bytes_out > before);
  // And the rest flows to the end.
  h.total = 3000;
  h.run_to_end(200000);
  h.finish();
}

TEST_CASE("receive credits: never a write without a receive posted at the peer", "[rdma]") {
  // Four receive WRs at y, many small frames from x, batches of one frame per WR (the wire is
  // slow and y reads rarely): x must stall on y's receive credits, never cause an RNR.
  Options a = small(1u << 16, 4000, 64, 4, 4, 64);
  Options b = small(1u << 16, 4000, 64, 4, 4, 64);
  Harness h(11, a, b, 64, 64);
  h.total = 4000;
  h.wire_max = 1;
  h.recv_skip = 2;
  h.connect();
  h.run_to_end(400000);
  h.finish();
  REQUIRE(h.x.totals.recv_credit_stalls + h.y.totals.recv_credit_stalls > 0);
  REQUIRE(h.x.totals.credit_returns_received > 0);
}

TEST_CASE("send queue: selective signaling, never more outstanding than the queue", "[rdma]") {
  Options a = small(1u << 16, 4000, 4, 64, 2, 4);
  Harness h(13, a, a, 64, 64);
  h.total = 3000;
  h.wire_max = 1;  // one WR per turn: the send queue fills
  h.connect();
  h.run_to_end(400000);
  h.finish();
  REQUIRE(h.x.totals.sq_stalls + h.y.totals.sq_stalls > 0);
  // Signaled: about one in signal_every (plus the queue-filling ones), never all.
  REQUIRE(h.x.totals.wrs_signaled > 0);
  REQUIRE(h.x.totals.wrs_signaled < h.x.totals.wrs_posted);
}

TEST_CASE("batches: one doorbell per chain of work requests", "[rdma]") {
  Options a = small(1u << 20, 16000, 256, 256, 16, 32);
  Harness h(17, a, a, 256, 256);
  h.connect();
  h.total = 5000;
  h.run_to_end(100000);
  h.finish();
  REQUIRE(h.x.totals.wrs_posted > 0);
  // Many frames per WRITE (a contiguous batch in the ring), several WRs per doorbell at times.
  REQUIRE(h.x.totals.wrs_posted < 5000);
}

TEST_CASE("inline data within the device's max_inline_data, none when it has none", "[rdma]") {
  for (uint32_t inl : {0u, 16u, 64u, 512u}) {
    Options a = small(1u << 16, 4000, 64, 64, 8, 16);
    Harness h(19 + inl, a, a, inl, inl);
    h.total = 1500;
    h.connect();
    h.run_to_end(200000);
    const uint64_t fake_inline = h.x.fv->inline_posted();
    h.finish();  // a WR above max_inline flagged inline would be a violation
    INFO("max_inline " << inl);
    if (inl < kCreditBytes) {
      REQUIRE(fake_inline == 0);
    } else {
      REQUIRE(fake_inline > 0);
      REQUIRE(h.x.totals.wrs_inline > 0);
    }
  }
}

TEST_CASE("a completion queue too small for the queues is refused with a clear reason", "[rdma]") {
  Options o = small(1u << 16, 4000, 64, 64, 8, 16);
  Limits l = fitting_limits(o);
  l.cq_depth = 127;
  auto [p, q] = fake_pair(o, l, o, fitting_limits(o));
  RdmaLink x(std::move(p), o, "y");
  REQUIRE(x.state() == link::LinkState::Down);
  REQUIRE_THAT(x.error(), Contains("completion queue of 127 entries"));
}

TEST_CASE("a peer's ring too small for max_frame is refused with a clear reason", "[rdma]") {
  Options big = small(1u << 20, 60000, 64, 64, 8, 16);
  Options tiny = small(4096, 1000, 64, 64, 8, 16);
  auto [p, q] = fake_pair(big, fitting_limits(big), tiny, fitting_limits(tiny));
  RdmaLink x(std::move(p), big, "y");
  REQUIRE(x.state() == link::LinkState::Down);
  REQUIRE_THAT(x.error(), Contains("peer's ring of 4096 bytes"));
}

TEST_CASE("completion errors take the link down with the verbs status; a new connection resumes without loss",
          "[rdma]") {
  const ibv_wc_status statuses[] = {IBV_WC_RETRY_EXC_ERR, IBV_WC_REM_ACCESS_ERR};
  const uint64_t seeds = bus::test::scaled(24);
  for (uint64_t seed = 1; seed <= seeds; ++seed) {
    const ibv_wc_status st = statuses[seed % 2];
    Options a = small(4096u << (seed % 4), 1000, 16, 16, 4, 8);
    Harness h(100 + seed, a, a, 64, 64);
    h.total = 3000;
    h.wire_max = 1 + seed % 8;
    h.connect();
    uint64_t breaks = 0, steps = 0;
    std::mt19937_64 r(seed);
    End* injected = nullptr;
    uint64_t next_inject = 10 + r() % 100;
    while (!h.done()) {
      REQUIRE(++steps < 600000);
      // Now and then (mid-batch: WRs are queued at the fake), one side's next WRs fail.
      if (breaks < 4 && injected == nullptr && steps >= next_inject && h.x.expect < h.total * 3 / 4) {
        End& e = r() % 2 ? h.x : h.y;
        if (e.fv->pending_sends() > 0) {
          e.fv->fail_next(st, r() % e.fv->pending_sends());
          injected = &e;
          next_inject = steps + 20 + r() % 200;
        }
      }
      if (h.step()) continue;
      REQUIRE(injected != nullptr);  // nothing else breaks a link here
      // The side whose write failed sees the status (the other may have seen its QP flushed
      // first: a remote access error breaks both queue pairs).
      End& bad = *injected;
      End& other = &bad == &h.x ? h.y : h.x;
      std::vector<link::Frame> none;
      for (int i = 0; i < 4 && bad.l->state() == link::LinkState::Up; ++i) (void)bad.l->receive(none, 0);
      INFO("seed " << seed << ": " << bad.l->error() << " / other: " << other.l->error());
      REQUIRE(bad.l->state() == link::LinkState::Down);
      REQUIRE_THAT(bad.l->error(), Contains(ibv_wc_status_str(st)));
      REQUIRE(bad.l->rdma_counters().wc_errors >= 1);
      injected = nullptr;
      // busd's peer closes it (the other side sees its queue pair flushed) and reconnects.
      bad.l->close(bad.l->error());
      // The other side: its queue pair flushed, or (its writes meeting a broken peer) retries
      // exceeded.
      auto flushed_or_retried = [](const std::string& e) {
        return e.find(ibv_wc_status_str(IBV_WC_WR_FLUSH_ERR)) != std::string::npos ||
               e.find(ibv_wc_status_str(IBV_WC_RETRY_EXC_ERR)) != std::string::npos;
      };
      if (other.l->state() == link::LinkState::Down) {
        REQUIRE(flushed_or_retried(other.l->error()));
      } else {
        other.frames.clear();
        for (int i = 0; i < 4 && other.l->state() == link::LinkState::Up; ++i) (void)other.l->receive(other.frames, 1);
        REQUIRE(other.l->state() == link::LinkState::Down);
        REQUIRE(flushed_or_retried(other.l->error()));
        // Frames it may have taken before are not delivered: the session resends them.
      }
      h.retire();
      h.connect();
      ++breaks;
    }
    REQUIRE(breaks > 0);
    h.finish();
    REQUIRE(h.x.s.stats().resumes >= breaks);
  }
}

TEST_CASE("a completion queue overrun takes the link down with the reason, and is counted", "[rdma]") {
  Options a = small(1u << 16, 4000, 16, 16, 4, 8);
  Harness h(5, a, a, 64, 64);
  h.total = 2000;
  h.connect();
  for (int i = 0; i < 50; ++i) REQUIRE(h.step());
  h.y.fv->overrun_cq();
  std::vector<link::Frame> f;
  auto r = h.y.l->receive(f, 16);
  REQUIRE(!r);
  REQUIRE(r.error() == Errc::Closed);
  REQUIRE(h.y.l->state() == link::LinkState::Down);
  REQUIRE_THAT(h.y.l->error(), Contains("completion queue"));
  REQUIRE(h.y.l->rdma_counters().wc_errors == 1);
  REQUIRE(!h.y.l->has_input());  // Down: nothing more to do but close it
  // busd's peer closes it and reconnects: the sessions resume.
  h.y.l->close(h.y.l->error());
  h.retire();
  h.connect();
  h.run_to_end(200000);
  h.finish();
}

// ---------------------------------------------------------------- a peer that breaks the rules

namespace {
struct Raw {
  // x: a link; y: raw fake verbs that the test drives by hand.
  Options o = small(1u << 16, 4000, 32, 32, 4, 8);
  std::unique_ptr<FakeVerbs> yv;
  std::unique_ptr<RdmaLink> x;
  std::vector<std::byte> mem = std::vector<std::byte>(8192);
  Region reg;
  Raw() {
    auto [p, q] = fake_pair(o, fitting_limits(o), o, fitting_limits(o));
    yv = std::move(q);
    x = std::make_unique<RdmaLink>(std::move(p), o, "y");
    REQUIRE(yv->progress() == ConnState::Up);
    reg = *yv->register_local(mem.size());
  }
  void write(uint64_t remote, uint32_t len, uint32_t imm) {
    ibv_sge g{reinterpret_cast<uintptr_t>(reg.addr), len, reg.lkey};
    ibv_send_wr w{};
    w.sg_list = &g;
    w.num_sge = 1;
    w.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    w.imm_data = htonl(imm);
    w.wr.rdma.remote_addr = remote;
    w.wr.rdma.rkey = yv->peer().rkey;
    w.send_flags = IBV_SEND_SIGNALED;
    ibv_send_wr* bad = nullptr;
    REQUIRE(yv->post_send(&w, &bad) == 0);
    yv->run();
    ibv_wc wc[4];
    while (yv->poll_cq(4, wc) > 0) {
    }
  }
  std::string receive_error() {
    std::vector<link::Frame> f;
    auto r = x->receive(f, 16);
    REQUIRE(!r);
    REQUIRE(x->state() == link::LinkState::Down);
    return x->error();
  }
};
}  // namespace

TEST_CASE("a peer that breaks the rules: the link goes down with the reason, never reads out of bounds", "[rdma]") {
  SECTION("a frame above max_frame") {
    Raw t;
    const uint32_t huge = 1u << 20;
    std::memcpy(t.reg.addr, &huge, 4);
    t.write(t.yv->peer().ring_addr, 64, 64);
    REQUIRE_THAT(t.receive_error(), Contains("above the maximum"));
  }
  SECTION("garbage where a link frame belongs") {
    Raw t;
    const uint32_t len = 12;
    std::memcpy(t.reg.addr, &len, 4);
    std::memset(t.reg.addr + 4, 0x77, 12);  // type 0x77: no such frame
    t.write(t.yv->peer().ring_addr, 16, 16);
    const std::string e = t.receive_error();
    REQUIRE_THAT(e, Contains("from y"));
  }
  SECTION("a write that ends mid-frame") {
    Raw t;
    const uint32_t len = 100;
    std::memcpy(t.reg.addr, &len, 4);
    t.write(t.yv->peer().ring_addr, 50, 50);
    REQUIRE_THAT(t.receive_error(), Contains("mid-frame"));
  }
  SECTION("more than the ring (beyond its credit)") {
    Raw t;
    // Lengths that add up past the ring without waiting for credit.
    for (int i = 0; i < 17; ++i) t.write(t.yv->peer().ring_addr + (i % 16) * 4096, 16, 4096);
    REQUIRE_THAT(t.receive_error(), Contains("beyond the credit"));
  }
  SECTION("a credit return out of sequence") {
    Raw t;
    t.write(t.yv->peer().credit_addr, 16, (1u << 31) | 5);
    REQUIRE_THAT(t.receive_error(), Contains("out of sequence"));
  }
  SECTION("a credit return beyond what was sent") {
    Raw t;
    const uint64_t v[2] = {1u << 20, 0};
    std::memcpy(t.reg.addr, v, 16);
    t.write(t.yv->peer().credit_addr, 16, 1u << 31);
    REQUIRE_THAT(t.receive_error(), Contains("beyond what was sent"));
  }
}
