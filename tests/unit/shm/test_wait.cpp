// Wait strategies, sleeping and waking. These tests sleep and time things: not parallel.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

#include "../../support/heap_ring.hpp"
#include "bus/clock.hpp"
#include "shm/ring.hpp"

using namespace bus;
using namespace bus::shm;
using bus::test::bytes_of;
using bus::test::HeapRing;

namespace {

struct Fds {
  EventFd data = *EventFd::create();
  EventFd space = *EventFd::create();
  RingFds ring() const { return {data.fd(), space.fd()}; }
};

constexpr uint64_t kMs = 1'000'000;

}  // namespace

TEST_CASE("wait strategies parse and print", "[wait]") {
  CHECK(parse_wait_strategy("spin")->kind == WaitKind::Spin);
  CHECK(parse_wait_strategy("yield")->kind == WaitKind::Yield);
  CHECK(parse_wait_strategy("block")->kind == WaitKind::Block);
  auto a = parse_wait_strategy("adaptive");
  REQUIRE(a);
  CHECK(a->kind == WaitKind::Adaptive);
  CHECK(a->spin_ns == defaults::kAdaptiveSpinNs);
  CHECK(parse_wait_strategy("adaptive:50us")->spin_ns == 50'000);
  CHECK(parse_wait_strategy("adaptive:2ms")->spin_ns == 2'000'000);
  CHECK(to_string(*parse_wait_strategy("adaptive:50us")) == "adaptive:50us");
  CHECK(to_string(WaitStrategy::block()) == "block");
  for (const char* bad : {"", "busy", "adaptive:", "adaptive:5", "adaptive:5s", "adaptive:x us",
                          "adaptive:99999999ms"}) {
    INFO(bad);
    auto r = parse_wait_strategy(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == Errc::InvalidArgument);
  }
}

TEST_CASE("waiting on an empty ring times out under every strategy", "[wait]") {
  HeapRing r(4096);
  Fds fds;
  auto c = r.consumer(fds.ring());
  for (auto ws : {WaitStrategy::spin(), WaitStrategy::yield(), WaitStrategy::adaptive(100'000),
                  WaitStrategy::block()}) {
    INFO(to_string(ws));
    const uint64_t t0 = clock::mono_ns();
    auto w = c.wait_readable(ws, Deadline::at(t0 + 5 * kMs));
    const uint64_t took = clock::mono_ns() - t0;
    REQUIRE_FALSE(w);
    CHECK(w.error() == Errc::Timeout);
    CHECK(took >= 5 * kMs);
    CHECK(took < 2'000 * kMs);
  }
  // Only the sleeping strategies slept.
  CHECK(c.stats().sleeps >= 2);
}

TEST_CASE("a blocked consumer is woken by publish, once", "[wait]") {
  HeapRing r(4096);
  Fds fds;
  auto p = r.producer(fds.ring());
  auto c = r.consumer(fds.ring());
  std::atomic<bool> woke{false};
  std::thread t([&] {
    auto w = c.wait_readable(WaitStrategy::block(), Deadline::after(5'000 * kMs));
    woke = w.has_value();
  });
  // Wait until the consumer announced its sleep, then publish.
  while (r.shared().sleep.consumer_sleeping.load() == 0) std::this_thread::yield();
  REQUIRE(p.try_write(bytes_of("wake up")));
  t.join();
  CHECK(woke);
  CHECK(c.stats().sleeps >= 1);
  CHECK(p.stats().wakes_sent == 1);
  REQUIRE(c.try_peek());
}

TEST_CASE("a consumer ahead of the published tail sleeps, wakes on publish, honours deadlines",
          "[wait]") {
  // Records are visible on commit, before the batch's publish(): the consumer can be ahead of
  // the tail. It must still be able to sleep (and time out), and publish() must wake it.
  HeapRing r(4096);
  Fds fds;
  auto p = r.producer(fds.ring());
  auto c = r.consumer(fds.ring());
  auto claim = p.try_claim(4);
  REQUIRE(claim);
  p.commit(4);  // committed, not published
  REQUIRE(c.try_peek());
  c.advance();
  c.release();
  CHECK(r.shared().prod.tail.load() == 0);  // head is ahead of the published tail
  for (auto ws : {WaitStrategy::block(), WaitStrategy::adaptive(1'000)}) {
    INFO(to_string(ws));
    const uint64_t t0 = clock::mono_ns();
    auto w = c.wait_readable(ws, Deadline::after(20 * kMs));
    REQUIRE_FALSE(w);
    CHECK(w.error() == Errc::Timeout);
    CHECK(clock::mono_ns() - t0 < 2'000 * kMs);
  }
  CHECK(c.stats().sleeps >= 2);  // it slept instead of spinning
  std::atomic<bool> woke{false};
  std::thread t([&] { woke = c.wait_readable(WaitStrategy::block(), Deadline::after(5'000 * kMs)).has_value(); });
  while (r.shared().sleep.consumer_sleeping.load() == 0) std::this_thread::yield();
  auto next = p.try_claim(4);
  REQUIRE(next);
  p.commit(4);
  p.publish();
  t.join();
  CHECK(woke);
}

TEST_CASE("no wake-up system call while the consumer is awake", "[wait]") {
  HeapRing r(1 << 16);
  Fds fds;
  auto p = r.producer(fds.ring());
  auto c = r.consumer(fds.ring());
  for (int i = 0; i < 10'000; ++i) {
    REQUIRE(p.try_write(bytes_of("x")));
    REQUIRE(c.try_peek());
    c.advance();
    c.release();
  }
  CHECK(p.stats().wakes_sent == 0);
  CHECK(c.stats().wakes_sent == 0);
}

TEST_CASE("a producer waiting on a full ring is woken by release", "[wait]") {
  HeapRing r(4096);
  Fds fds;
  auto p = r.producer(fds.ring());
  auto c = r.consumer(fds.ring());
  const std::vector<std::byte> rec(48);
  while (p.try_write(rec)) {
  }
  std::atomic<int> result{-1};
  std::thread t([&] {
    auto w = p.write(rec, WaitStrategy::block(), Deadline::after(5'000 * kMs));
    result = w ? 0 : static_cast<int>(w.error());
  });
  while (r.shared().sleep.producer_sleeping.load() == 0) std::this_thread::yield();
  REQUIRE(c.try_peek());
  c.advance();
  c.release();
  t.join();
  CHECK(result == 0);
  CHECK(c.stats().wakes_sent == 1);
  CHECK(p.stats().sleeps >= 1);
}

TEST_CASE("a producer waits for room with epoll: arm_space / disarm_space", "[wait]") {
  HeapRing r(4096);
  Fds fds;
  auto p = r.producer(fds.ring());
  auto c = r.consumer(fds.ring());
  CHECK_FALSE(p.arm_space(48));  // room now: do not sleep
  const std::vector<std::byte> rec(48);
  while (p.try_write(rec)) {
  }
  REQUIRE(p.arm_space(48));
  REQUIRE(c.try_peek());
  c.advance();
  c.release();  // sees the flag: signals the space eventfd
  pollfd pfd{fds.space.fd(), POLLIN, 0};
  CHECK(::poll(&pfd, 1, 1000) == 1);
  p.disarm_space();
  CHECK(::poll(&pfd, 1, 0) == 0);  // drained
  CHECK(p.try_write(rec));
  CHECK(c.stats().wakes_sent == 1);
}

TEST_CASE("a producer on a full ring times out when nobody reads", "[wait]") {
  HeapRing r(4096);
  Fds fds;
  auto p = r.producer(fds.ring());
  const std::vector<std::byte> rec(48);
  while (p.try_write(rec)) {
  }
  auto w = p.write(rec, WaitStrategy::adaptive(10'000), Deadline::after(5 * kMs));
  REQUIRE_FALSE(w);
  CHECK(w.error() == Errc::Timeout);
}

TEST_CASE("one thread waits on many rings with one epoll call", "[wait]") {
  constexpr int kRings = 8;
  std::vector<std::unique_ptr<HeapRing>> rings;
  std::vector<Fds> fds(kRings);
  std::vector<RingConsumer> cons;
  std::vector<RingProducer> prods;
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  REQUIRE(ep >= 0);
  for (int i = 0; i < kRings; ++i) {
    rings.push_back(std::make_unique<HeapRing>(4096));
    cons.push_back(rings[i]->consumer(fds[i].ring()));
    prods.push_back(rings[i]->producer(fds[i].ring()));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    REQUIRE(::epoll_ctl(ep, EPOLL_CTL_ADD, fds[i].data.fd(), &ev) == 0);
  }
  // A ring with data refuses to arm: the caller must not sleep.
  REQUIRE(prods[2].try_write(bytes_of("early")));
  CHECK_FALSE(cons[2].arm_sleep());
  REQUIRE(cons[2].try_peek());
  cons[2].advance();
  cons[2].release();

  for (auto& c : cons) REQUIRE(c.arm_sleep());
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(prods[5].try_write(bytes_of("for five")));
  });
  std::array<epoll_event, kRings> evs{};
  const int n = ::epoll_wait(ep, evs.data(), kRings, 5'000);
  t.join();
  REQUIRE(n == 1);
  CHECK(evs[0].data.u32 == 5);
  for (auto& c : cons) c.disarm();
  CHECK(cons[5].try_peek());
  CHECK(prods[5].stats().wakes_sent == 1);
  for (int i = 0; i < kRings; ++i) {
    if (i != 5) CHECK(prods[i].stats().wakes_sent == 0);
  }
  ::close(ep);
}
