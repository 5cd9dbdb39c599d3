// The RDMA link's data path allocates nothing: once warm, transmit(), receive(), has_input()
// and arm() of two links exchanging messages both ways (sessions on top) make no heap
// allocation. The fake verbs under them allocate (they are a test device), so allocations are
// counted only while the link's own code runs, not inside the verbs calls it makes.
// Expected duration: well under a second.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "link/session.hpp"
#include "rdma/fake_verbs.hpp"
#include "rdma/rdma_link.hpp"

// GCC 12 takes the free() in these replacements for a mismatch with the operator new that
// make_unique inlines (it is this file's own, which mallocs): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
bool g_counting = false;
bool g_in_verbs = false;
uint64_t g_allocs = 0;
}  // namespace

void* operator new(std::size_t n) {
  if (g_counting && !g_in_verbs) ++g_allocs;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// Every form, so that no allocation pairs a sanitizer's operator new with this delete.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  if (g_counting && !g_in_verbs) ++g_allocs;
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

using namespace bus;
using namespace bus::rdma;

namespace {

// Passes every call through, marking the time spent inside the (fake) device.
class Guarded final : public Verbs {
 public:
  explicit Guarded(std::unique_ptr<Verbs> v) : v_(std::move(v)) {}
  struct In {
    In() { g_in_verbs = true; }
    ~In() { g_in_verbs = false; }
  };
  ConnState progress() override {
    In g;
    return v_->progress();
  }
  const std::string& error() const noexcept override { return v_->error(); }
  const Limits& limits() const noexcept override { return v_->limits(); }
  const Region& inbound() const noexcept override { return v_->inbound(); }
  const Window& peer() const noexcept override { return v_->peer(); }
  Expected<Region> register_local(size_t bytes) override {
    In g;
    return v_->register_local(bytes);
  }
  void disconnect() noexcept override {
    In g;
    v_->disconnect();
  }
  int post_send(ibv_send_wr* wr, ibv_send_wr** bad) noexcept override {
    In g;
    return v_->post_send(wr, bad);
  }
  int post_recv(ibv_recv_wr* wr, ibv_recv_wr** bad) noexcept override {
    In g;
    return v_->post_recv(wr, bad);
  }
  int poll_cq(int n, ibv_wc* wc) noexcept override {
    In g;
    return v_->poll_cq(n, wc);
  }
  int wait_fd() const noexcept override { return v_->wait_fd(); }
  void arm() noexcept override { v_->arm(); }
  void disarm() noexcept override { v_->disarm(); }

 private:
  std::unique_ptr<Verbs> v_;
};

struct End {
  explicit End(uint64_t id) : s(link::SessionOptions{1u << 20, 32}, id) {}
  link::Session s;
  std::unique_ptr<RdmaLink> l;
  FakeVerbs* fv = nullptr;
  std::vector<link::Frame> frames;
  uint64_t delivered = 0;
};

}  // namespace

TEST_CASE("the RDMA link's data path makes no allocation once warm", "[rdma]") {
  Options o;
  o.ring_bytes = 1u << 16;
  o.max_frame = 4000;
  o.send_depth = 32;
  o.recv_depth = 32;
  o.signal_every = 8;
  o.batch_wrs = 16;
  auto [p, q] = fake_pair(o, fitting_limits(o, 64), o, fitting_limits(o, 64));
  End x(1), y(2);
  x.fv = p.get();
  y.fv = q.get();
  x.l = std::make_unique<RdmaLink>(std::make_unique<Guarded>(std::move(p)), o, "y");
  y.l = std::make_unique<RdmaLink>(std::make_unique<Guarded>(std::move(q)), o, "x");
  REQUIRE(x.l->state() == link::LinkState::Up);
  REQUIRE(y.l->state() == link::LinkState::Up);
  x.s.on_connected();
  y.s.on_connected();
  x.frames.reserve(64);
  y.frames.reserve(64);
  std::vector<std::byte> body(300, std::byte{1});

  auto run = [&](int turns, bool count) {
    uint64_t offered = 0;
    for (int t = 0; t < turns; ++t) {
      for (End* e : {&x, &y}) {
        for (int i = 0; i < 5; ++i) {
          body.resize(16 + static_cast<size_t>((t * 7 + i * 131) % 2000));
          if (e->s.can_offer(body.size()) && e->s.offer(body)) ++offered;
        }
        g_counting = count;
        const bool sent = e->l->transmit(e->s).has_value();
        g_counting = false;
        REQUIRE(sent);
      }
      x.fv->run(1 + t % 7);
      y.fv->run(1 + t % 5);
      for (End* e : {&x, &y}) {
        e->frames.clear();
        g_counting = count;
        const bool hi = e->l->has_input();
        auto r = e->l->receive(e->frames, 64);
        const bool armed = e->l->arm();
        e->l->disarm();
        g_counting = false;
        (void)hi;
        (void)armed;
        REQUIRE(r.has_value());
        for (const auto& f : e->frames) {
          auto in = e->s.on_frame(f);
          REQUIRE(in.has_value());
          if (*in == link::Session::Inbound::Deliver) ++e->delivered;
        }
        e->s.flush_ack();
      }
    }
    return offered;
  };
  run(500, false);  // warm: vectors at their capacity, rings wrapped
  const uint64_t before = x.delivered + y.delivered;
  g_allocs = 0;
  const uint64_t offered = run(2000, true);
  INFO("offered " << offered);
  REQUIRE(offered > 5000);
  REQUIRE(x.delivered + y.delivered - before > 5000);
  REQUIRE(x.l->counters().bytes_out > 4 * o.ring_bytes);
  REQUIRE(g_allocs == 0);
  REQUIRE(x.fv->violations().empty());
  REQUIRE(y.fv->violations().empty());
}
