// The fake verbs layer itself: it must refuse what a real device refuses (the link's tests rely
// on it), complete work requests the way real queue pairs do, and the connect window must
// round-trip and reject garbage. Expected duration: well under a second.
#include <catch2/catch.hpp>

#include <arpa/inet.h>

#include <cstring>
#include <vector>

#include "rdma/fake_verbs.hpp"
#include "rdma/verbs.hpp"

using namespace bus;
using namespace bus::rdma;
using Catch::Matchers::Contains;

namespace {

Options opts(uint32_t send_depth, uint32_t recv_depth) {
  Options o;
  o.ring_bytes = 1u << 16;
  o.max_frame = 4000;
  o.send_depth = send_depth;
  o.recv_depth = recv_depth;
  o.signal_every = 2;
  return o;
}

struct Pair {
  Pair(const Options& o, const Limits& l) {
    auto [p, q] = fake_pair(o, l, o, l);
    a = std::move(p);
    b = std::move(q);
    REQUIRE(a->progress() == ConnState::Up);
    REQUIRE(b->progress() == ConnState::Up);
    ra = *a->register_local(4096);
  }
  std::unique_ptr<FakeVerbs> a, b;
  Region ra;
  ibv_sge g{};
  ibv_send_wr w{};

  // One WRITE WITH IMMEDIATE of `len` bytes from a's local region into b's ring.
  int write(uint64_t id, uint32_t len, unsigned flags, ibv_send_wr** bad = nullptr) {
    g = {reinterpret_cast<uintptr_t>(ra.addr), len, ra.lkey};
    w = ibv_send_wr{};
    w.wr_id = id;
    w.sg_list = &g;
    w.num_sge = 1;
    w.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    w.imm_data = htonl(static_cast<uint32_t>(id));
    w.wr.rdma.remote_addr = a->peer().ring_addr;
    w.wr.rdma.rkey = a->peer().rkey;
    w.send_flags = flags;
    ibv_send_wr* b2 = nullptr;
    return a->post_send(&w, bad != nullptr ? bad : &b2);
  }
  void post_recvs(FakeVerbs& v, int n) {
    std::vector<ibv_recv_wr> r(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      r[static_cast<size_t>(i)].wr_id = 1000 + static_cast<uint64_t>(i);
      r[static_cast<size_t>(i)].next = i + 1 < n ? &r[static_cast<size_t>(i) + 1] : nullptr;
    }
    ibv_recv_wr* bad = nullptr;
    REQUIRE(v.post_recv(r.data(), &bad) == 0);
  }
};

}  // namespace

TEST_CASE("fake verbs: a write with immediate lands in the peer's ring and completes there", "[rdma][fake]") {
  Options o = opts(8, 8);
  Pair p(o, fitting_limits(o));
  p.post_recvs(*p.b, 1);
  std::memcpy(p.ra.addr, "hello, ring", 11);
  REQUIRE(p.write(7, 11, IBV_SEND_SIGNALED) == 0);
  ibv_wc wc[4];
  REQUIRE(p.b->poll_cq(4, wc) == 0);  // nothing moved until the wire runs
  REQUIRE(p.a->run() == 1);
  REQUIRE(std::memcmp(p.b->inbound().addr, "hello, ring", 11) == 0);
  REQUIRE(p.b->poll_cq(4, wc) == 1);
  REQUIRE(wc[0].status == IBV_WC_SUCCESS);
  REQUIRE(wc[0].opcode == IBV_WC_RECV_RDMA_WITH_IMM);
  REQUIRE((wc[0].wc_flags & IBV_WC_WITH_IMM) != 0);
  REQUIRE(ntohl(wc[0].imm_data) == 7);
  REQUIRE(wc[0].byte_len == 11);
  REQUIRE(p.a->poll_cq(4, wc) == 1);
  REQUIRE(wc[0].wr_id == 7);
  REQUIRE(wc[0].opcode == IBV_WC_RDMA_WRITE);
  REQUIRE(p.a->violations().empty());
}

TEST_CASE("fake verbs: the send queue holds max_send_wr; a signaled completion retires those before it",
          "[rdma][fake]") {
  Options o = opts(4, 16);
  Pair p(o, fitting_limits(o));
  p.post_recvs(*p.b, 16);
  REQUIRE(p.write(1, 8, 0) == 0);
  REQUIRE(p.write(2, 8, 0) == 0);
  REQUIRE(p.write(3, 8, 0) == 0);
  REQUIRE(p.write(4, 8, IBV_SEND_SIGNALED) == 0);
  ibv_send_wr* bad = nullptr;
  REQUIRE(p.write(5, 8, 0, &bad) == ENOMEM);  // a fifth: the queue is full
  REQUIRE(bad == &p.w);
  REQUIRE(p.a->violations().size() == 1);
  p.a->run();
  REQUIRE(p.a->outstanding_sends() == 4);  // done, but not retired until the completion is polled
  ibv_wc wc[8];
  REQUIRE(p.a->poll_cq(8, wc) == 1);  // one completion: the unsignaled ones make none
  REQUIRE(wc[0].wr_id == 4);
  REQUIRE(p.a->outstanding_sends() == 0);
  REQUIRE(p.write(6, 8, 0) == 0);
}

TEST_CASE("fake verbs: inline data above max_inline_data is refused", "[rdma][fake]") {
  Options o = opts(8, 8);
  Pair p(o, fitting_limits(o, 32));
  REQUIRE(p.write(1, 32, IBV_SEND_INLINE) == 0);
  REQUIRE(p.write(2, 33, IBV_SEND_INLINE) == EINVAL);
  REQUIRE(p.a->violations().size() == 1);
  REQUIRE_THAT(p.a->violations()[0], Contains("max_inline_data 32"));
}

TEST_CASE("fake verbs: inline data is taken at post time", "[rdma][fake]") {
  Options o = opts(8, 8);
  Pair p(o, fitting_limits(o, 64));
  p.post_recvs(*p.b, 1);
  std::memcpy(p.ra.addr, "first", 5);
  REQUIRE(p.write(1, 5, IBV_SEND_INLINE) == 0);
  std::memcpy(p.ra.addr, "XXXXX", 5);  // the buffer is free again at once
  p.a->run();
  REQUIRE(std::memcmp(p.b->inbound().addr, "first", 5) == 0);
}

TEST_CASE("fake verbs: a message with no receive posted is an RNR error", "[rdma][fake]") {
  Options o = opts(8, 8);
  Pair p(o, fitting_limits(o));
  REQUIRE(p.write(1, 8, 0) == 0);  // unsignaled: its error completes anyway
  REQUIRE(p.write(2, 8, 0) == 0);
  p.a->run();
  ibv_wc wc[8];
  REQUIRE(p.a->poll_cq(8, wc) == 2);
  REQUIRE(wc[0].status == IBV_WC_RNR_RETRY_EXC_ERR);
  REQUIRE(wc[1].status == IBV_WC_WR_FLUSH_ERR);  // the QP is in error: the rest is flushed
  REQUIRE(p.a->qp_error());
  REQUIRE_THAT(p.a->violations()[0], Contains("RNR"));
}

TEST_CASE("fake verbs: receives beyond max_recv_wr are refused", "[rdma][fake]") {
  Options o = opts(8, 4);
  Pair p(o, fitting_limits(o));
  p.post_recvs(*p.b, 4);
  ibv_recv_wr r{};
  ibv_recv_wr* bad = nullptr;
  REQUIRE(p.b->post_recv(&r, &bad) == ENOMEM);
  REQUIRE(p.b->violations().size() == 1);
}

TEST_CASE("fake verbs: a completion queue overrun breaks it", "[rdma][fake]") {
  Options o = opts(8, 8);
  Limits l = fitting_limits(o);
  l.cq_depth = 3;
  Pair p(o, l);
  p.post_recvs(*p.b, 5);
  for (uint64_t i = 1; i <= 4; ++i) REQUIRE(p.write(i, 8, 0) == 0);
  p.a->run();  // four receive completions into b's CQ of three
  ibv_wc wc[8];
  REQUIRE(p.b->poll_cq(8, wc) < 0);
  REQUIRE_THAT(p.b->violations()[0], Contains("overrun"));
}

TEST_CASE("fake verbs: a write outside the peer's region is a remote access error on both sides", "[rdma][fake]") {
  Options o = opts(8, 8);
  Pair p(o, fitting_limits(o));
  p.post_recvs(*p.b, 2);
  p.g = {reinterpret_cast<uintptr_t>(p.ra.addr), 8, p.ra.lkey};
  p.w = ibv_send_wr{};
  p.w.sg_list = &p.g;
  p.w.num_sge = 1;
  p.w.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  p.w.wr.rdma.remote_addr = p.a->peer().ring_addr + p.b->inbound().len - 4;  // 4 bytes past the end
  p.w.wr.rdma.rkey = p.a->peer().rkey;
  ibv_send_wr* bad = nullptr;
  REQUIRE(p.a->post_send(&p.w, &bad) == 0);
  p.a->run();
  ibv_wc wc[4];
  REQUIRE(p.a->poll_cq(4, wc) == 1);
  REQUIRE(wc[0].status == IBV_WC_REM_ACCESS_ERR);
  REQUIRE(p.b->qp_error());
  REQUIRE(p.b->poll_cq(4, wc) == 2);  // its posted receives are flushed
  REQUIRE(wc[0].status == IBV_WC_WR_FLUSH_ERR);
  REQUIRE(std::string(ibv_wc_status_str(IBV_WC_REM_ACCESS_ERR)).size() > 0);
}

TEST_CASE("fake verbs: injected errors, and a disconnect flushes the peer", "[rdma][fake]") {
  Options o = opts(8, 8);
  Pair p(o, fitting_limits(o));
  p.post_recvs(*p.b, 4);
  p.a->fail_next(IBV_WC_RETRY_EXC_ERR, 1);
  for (uint64_t i = 1; i <= 3; ++i) REQUIRE(p.write(i, 8, 0) == 0);
  p.a->run();
  ibv_wc wc[8];
  REQUIRE(p.a->poll_cq(8, wc) == 2);
  REQUIRE(wc[0].wr_id == 2);
  REQUIRE(wc[0].status == IBV_WC_RETRY_EXC_ERR);
  REQUIRE(wc[1].status == IBV_WC_WR_FLUSH_ERR);
  REQUIRE(p.b->poll_cq(8, wc) == 1);  // the first write arrived
  REQUIRE(wc[0].status == IBV_WC_SUCCESS);
  p.a->disconnect();
  REQUIRE(p.a->progress() == ConnState::Down);
  REQUIRE(p.b->progress() == ConnState::Down);
  REQUIRE_THAT(p.b->error(), Contains("DISCONNECTED"));
  REQUIRE(p.b->poll_cq(8, wc) == 3);  // its three other receives, flushed
  REQUIRE(wc[0].status == IBV_WC_WR_FLUSH_ERR);
  REQUIRE(p.a->violations().empty());
}

TEST_CASE("fake verbs: SEND lands in the receive's buffer", "[rdma][fake]") {
  Options o = opts(8, 8);
  Pair p(o, fitting_limits(o));
  Region rb = *p.b->register_local(64);
  ibv_sge rg{reinterpret_cast<uintptr_t>(rb.addr), 64, rb.lkey};
  ibv_recv_wr r{};
  r.wr_id = 9;
  r.sg_list = &rg;
  r.num_sge = 1;
  ibv_recv_wr* rbad = nullptr;
  REQUIRE(p.b->post_recv(&r, &rbad) == 0);
  std::memcpy(p.ra.addr, "a send", 6);
  p.g = {reinterpret_cast<uintptr_t>(p.ra.addr), 6, p.ra.lkey};
  p.w = ibv_send_wr{};
  p.w.sg_list = &p.g;
  p.w.num_sge = 1;
  p.w.opcode = IBV_WR_SEND;
  ibv_send_wr* bad = nullptr;
  REQUIRE(p.a->post_send(&p.w, &bad) == 0);
  p.a->run();
  ibv_wc wc[2];
  REQUIRE(p.b->poll_cq(2, wc) == 1);
  REQUIRE(wc[0].opcode == IBV_WC_RECV);
  REQUIRE(wc[0].byte_len == 6);
  REQUIRE(std::memcmp(rb.addr, "a send", 6) == 0);
}

TEST_CASE("the connect window round-trips and garbage is refused", "[rdma]") {
  Window w;
  w.ring_addr = 0x7f0012345000;
  w.rkey = 0xabcdef;
  w.ring_bytes = 1u << 20;
  w.credit_addr = w.ring_addr + w.ring_bytes;
  w.credit_slots = 256;
  w.max_frame = 65536;
  std::byte buf[kWindowBytes];
  encode_window(w, buf);
  auto d = decode_window(buf, sizeof buf);
  REQUIRE(d);
  REQUIRE(d->ring_addr == w.ring_addr);
  REQUIRE(d->rkey == w.rkey);
  REQUIRE(d->ring_bytes == w.ring_bytes);
  REQUIRE(d->credit_addr == w.credit_addr);
  REQUIRE(d->credit_slots == w.credit_slots);
  REQUIRE(d->max_frame == w.max_frame);
  REQUIRE_THAT(decode_window(buf, 12).error().message(), Contains("not an RDMA window"));
  REQUIRE_THAT(decode_window(nullptr, 0).error().message(), Contains("not an RDMA window"));
  buf[0] = std::byte{0};
  REQUIRE_THAT(decode_window(buf, sizeof buf).error().message(), Contains("magic"));
  encode_window(w, buf);
  buf[4] = std::byte{9};
  REQUIRE(decode_window(buf, sizeof buf).error() == Errc::VersionMismatch);
  w.ring_bytes = 100;
  encode_window(w, buf);
  REQUIRE_THAT(decode_window(buf, sizeof buf).error().message(), Contains("outside 4 KiB"));
}

TEST_CASE("options are checked, the message names the knob", "[rdma]") {
  Options o;
  REQUIRE(check(o));
  o.ring_bytes = 8192;
  o.max_frame = 4000;
  REQUIRE_THAT(check(o).error().message(), Contains("4 x (max_frame + 4)"));
  o = Options{};
  o.signal_every = o.send_depth;
  REQUIRE_THAT(check(o).error().message(), Contains("signal_every"));
  o = Options{};
  o.recv_depth = 2;
  REQUIRE_THAT(check(o).error().message(), Contains("recv_depth"));
}
