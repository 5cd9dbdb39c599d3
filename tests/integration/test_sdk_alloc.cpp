// libbus allocates nothing per message after warm-up: publish, receive (handler dispatch),
// request and reply, counted by a replaced global operator new on this thread. busd runs as a
// separate process; its allocations are not counted here.
#define BUS_COUNTING_ALLOC_DEFINE
#include "../support/counting_alloc.hpp"

#include <catch2/catch.hpp>

#include "bus/control.hpp"
#include "bus/inplace.hpp"
#include "busd_fixture.hpp"

using namespace bus;
using namespace bus::test;
using namespace std::chrono_literals;

TEST_CASE("publish and receive: no allocation per message after warm-up", "[sdk]") {
  // Through busd, and over a lane (the default once busd has set one up).
  const bool lanes = GENERATE(false, true);
  Busd d(lanes ? "" : "[busd]\nlanes = false\n");
  REQUIRE(d.started());
  auto pub = d.client("alloc-pub");
  auto sub = d.client("alloc-sub");
  REQUIRE((pub && sub));
  uint64_t got = 0;
  uint64_t bytes_seen = 0;
  REQUIRE(sub->subscribe("alloc.>", [&](const Message& m) {
    ++got;
    bytes_seen += m.payload().size() + m.subject().size();
  }));
  std::array<std::byte, 64> payload{};
  // Warm-up: the first message on a subject builds its envelope template; with lanes, the
  // route and the lane are set up on the next ones.
  uint32_t lane = 0;
  REQUIRE(sub->subscribe("warm.>", [&](const Message& m) { lane = m.lane(); }));
  for (int i = 0; i < 500 && (lanes ? lane == 0 : i < 1); ++i) {
    REQUIRE(pub->publish("warm.up", payload));
    (void)pub->publish("alloc.test", payload);
    (void)sub->poll(1ms);
    std::this_thread::sleep_for(1ms);
  }
  CHECK((lane != 0) == lanes);
  REQUIRE(pump_until(*sub, [&] { return got >= 1; }));
  got = 0;
  (void)sub->poll(50ms);
  got = 0;

  constexpr uint64_t kN = 20'000;
  const uint64_t before = bus::test::allocations;
  bool ok = true;
  for (uint64_t i = 0; i < kN; ++i) {
    std::memcpy(payload.data(), &i, 8);
    ok &= pub->publish("alloc.test", payload).has_value();
    if (i % 64 == 63) {
      while (got < i + 1) ok &= sub->poll(100ms).has_value();
    }
  }
  while (got < kN && ok) ok &= sub->poll(100ms).has_value();
  const uint64_t allocs = bus::test::allocations - before;
  REQUIRE(ok);
  CHECK(got == kN);
  CHECK(allocs == 0);
}

TEST_CASE("request and reply: no allocation per round trip after warm-up", "[sdk]") {
  const bool lanes = GENERATE(false, true);
  Busd d(lanes ? "" : "[busd]\nlanes = false\n");
  REQUIRE(d.started());
  auto requester = d.client("alloc-req");
  auto responder = d.client("alloc-rsp");
  REQUIRE((requester && responder));
  REQUIRE(responder->subscribe("svc.alloc", [&](const Message& m) { (void)responder->reply(m, m.payload()); }));
  // The responder answers from its own thread; only the requester's thread is counted.
  std::atomic<bool> done{false};
  std::thread t([&] {
    while (!done) (void)responder->poll(5ms);
  });
  std::array<std::byte, 64> payload{};
  // Warm-up: template, reply buffer; with lanes, until the replies come over the lane.
  for (int i = 0; i < 500; ++i) {
    auto r = requester->request("svc.alloc", payload, 2s);
    REQUIRE(r);
    if (!lanes || r->lane() != 0) break;
  }
  const uint64_t before = bus::test::allocations;
  uint64_t ok = 0;
  for (int i = 0; i < 2'000; ++i) ok += requester->request("svc.alloc", payload, 2s).has_value();
  const uint64_t allocs = bus::test::allocations - before;
  done = true;
  t.join();
  CHECK(ok == 2'000);
  CHECK(allocs == 0);
}

TEST_CASE("a FlatBuffer built in place (reserve, InPlaceBuilder, commit_built): no allocation", "[sdk]") {
  Busd d("[busd]\nlanes = false\n");
  REQUIRE(d.started());
  auto pub = d.client("alloc-fb-pub");
  auto sub = d.client("alloc-fb-sub");
  REQUIRE((pub && sub));
  uint64_t got = 0;
  REQUIRE(sub->subscribe("alloc.fb", [&](const Message& m) {
    got += control::GetControlMessage(m.payload().data())->seq() == got;
  }));
  // The builder's one buffer is the room: the heap is never asked.
  auto send = [&](uint64_t seq) {
    auto room = pub->reserve("alloc.fb", 256);
    if (!room) return false;
    InPlaceBuilder fbb(*room);
    const auto hb = control::CreateHeartbeat(fbb, seq, seq * 2);
    control::FinishControlMessageBuffer(fbb, control::CreateControlMessage(fbb, seq, control::Body::Heartbeat, hb.Union()));
    return pub->commit_built(fbb).has_value();
  };
  REQUIRE(send(0));  // warm-up: the subject's envelope template
  REQUIRE(pump_until(*sub, [&] { return got == 1; }));
  constexpr uint64_t kN = 20'000;
  const uint64_t before = bus::test::allocations;
  bool ok = true;
  for (uint64_t i = 1; i <= kN; ++i) {
    ok &= send(i);
    if (i % 64 == 0) {
      while (ok && got < i + 1) ok &= sub->poll(100ms).has_value();
    }
  }
  while (ok && got < kN + 1) ok &= sub->poll(100ms).has_value();
  const uint64_t allocs = bus::test::allocations - before;
  REQUIRE(ok);
  CHECK(got == kN + 1);
  CHECK(allocs == 0);
}
