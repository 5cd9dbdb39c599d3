// After warm-up, while the ring is neither empty nor full, moving records costs no allocation
// and no system call: counted by a replaced operator new, the endpoints' wake/sleep counters and
// the kernel's own per-thread counters (voluntary context switches, read/write system calls).
#define BUS_COUNTING_ALLOC_DEFINE
#include "../../support/counting_alloc.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <cstring>

#include "../../support/heap_ring.hpp"
#include "../../support/proc_stats.hpp"
#include "shm/ring.hpp"

using namespace bus;
using namespace bus::shm;
using bus::test::HeapRing;

TEST_CASE("1M records through a half-full ring: 0 allocations, 0 system calls", "[ring]") {
  HeapRing r(1 << 16);
  auto data = EventFd::create();
  auto space = EventFd::create();
  REQUIRE(data);
  REQUIRE(space);
  const RingFds fds{data->fd(), space->fd()};
  auto p = r.producer(fds);
  auto c = r.consumer(fds);
  // The default strategy (adaptive) on both sides: it would sleep, and so make system calls,
  // the moment it found the ring empty or full.
  const WaitStrategy ws = WaitStrategy::adaptive();
  std::array<std::byte, 64> rec{};
  std::array<std::byte, 64> out{};

  // Warm-up: half fill (the ring stays neither empty nor full from here on).
  for (int i = 0; i < 256; ++i) REQUIRE(p.write(rec, ws));

  // The /proc readings cost read(2) calls themselves: measure that cost back to back, then read
  // once before and once after. Context switches are read tight around the loop.
  const auto io_a = bus::test::read_write_calls();
  const auto io_b = bus::test::read_write_calls();
  const uint64_t allocs_before = bus::test::allocations;
  const uint64_t switches_before = bus::test::voluntary_switches();
  bool ok = true;
  constexpr uint64_t kRecords = 1'000'000;
  for (uint64_t i = 0; i < kRecords; ++i) {
    std::memcpy(rec.data(), &i, sizeof i);
    ok &= p.write(rec, ws).has_value();
    ok &= c.wait_readable(ws).has_value();
    auto n = c.try_read_copy(out);
    ok &= n.has_value() && *n == rec.size();
    c.release();
  }
  const uint64_t switches = bus::test::voluntary_switches() - switches_before;
  const uint64_t allocs = bus::test::allocations - allocs_before;
  const auto io_c = bus::test::read_write_calls();

  REQUIRE(ok);
  CHECK(allocs == 0);
  CHECK(p.stats().wakes_sent + p.stats().sleeps + c.stats().wakes_sent + c.stats().sleeps == 0);
  CHECK(switches == 0);
  if (io_a && io_b && io_c) {
    const uint64_t reading_cost = *io_b - *io_a;
    CHECK(*io_c - *io_b == reading_cost);
  } else {
    WARN("/proc/thread-self/io not available: read/write system calls not counted");
  }
}
