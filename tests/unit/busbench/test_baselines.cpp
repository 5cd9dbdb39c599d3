#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include "baselines.hpp"
#include "clock.hpp"
#include "histogram.hpp"

using bus::bench::Clock;
using bus::bench::Histogram;
using bus::bench::RttParams;

// This machine may have two cores: no test runs more than two spinning threads at once.

namespace {

const Clock& test_clock() {
  static const Clock clk = Clock::calibrate();
  return clk;
}

RttParams small(uint32_t payload) {
  RttParams p;
  p.payload = payload;
  p.rounds = 2000;
  p.warmup = 200;
  return p;
}

/// Pins the two sides to cpus 0 and 1 where the machine has two.
RttParams pinned(RttParams p) {
  if (std::thread::hardware_concurrency() >= 2) {
    p.cpu_a = 0;
    p.cpu_b = 1;
  }
  return p;
}

bool no_child_left() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

// A round trip slower than 20 ms at the median is a broken baseline, not a slow machine.
constexpr uint64_t kImplausibleNs = 20'000'000;

using RttFn = double (*)(const RttParams&, const Clock&, Histogram&);

uint64_t check_rtt(const char* name, RttFn fn, const RttParams& p, uint64_t floor_ns) {
  INFO(name << ", payload " << p.payload << " B, cpus " << p.cpu_a << "/" << p.cpu_b);
  Histogram h;
  const double secs = fn(p, test_clock(), h);
  CHECK(secs > 0);
  CHECK(h.count() == p.rounds);
  const uint64_t p50 = h.percentile(50);
  CHECK(p50 > floor_ns);
  CHECK(p50 < kImplausibleNs);
  CHECK(no_child_left());
  std::printf("  %-14s %5u B  cpus %2d/%2d  p50 %7.2f us  p99 %8.2f us  (%.3f s)\n", name, p.payload,
              p.cpu_a, p.cpu_b, static_cast<double>(p50) / 1e3,
              static_cast<double>(h.percentile(99)) / 1e3, secs);
  return p50;
}

}  // namespace

TEST_CASE("cache line ping-pong measures every round trip", "[baselines]") {
  // Pinned apart: two unpinned spinners that the scheduler puts on one cpu (it happens when
  // something else keeps the other busy) hand over once per time slice, milliseconds a trip.
  RttParams p = pinned(small(64));
  if (p.cpu_a < 0) p.rounds = 50;  // one cpu: every trip waits for a time slice
  check_rtt("cacheline", bus::bench::rtt_cacheline, p, 0);
}

TEST_CASE("eventfd round trip between two processes carries the payload", "[baselines]") {
  // Four system calls and two wake-ups per round trip: well above 100 ns.
  for (uint32_t payload : {64u, 1u, 4096u, 0u}) {
    check_rtt("eventfd", bus::bench::rtt_eventfd, small(payload), 100);
  }
  check_rtt("eventfd", bus::bench::rtt_eventfd, pinned(small(64)), 100);
}

TEST_CASE("TCP round trip over loopback carries the payload", "[baselines]") {
  for (uint32_t payload : {64u, 1u, 4096u}) {
    check_rtt("tcp", bus::bench::rtt_tcp, small(payload), 100);
  }
  check_rtt("tcp", bus::bench::rtt_tcp, pinned(small(64)), 100);
  Histogram h;
  CHECK_THROWS_AS(bus::bench::rtt_tcp(small(0), test_clock(), h), std::runtime_error);
  CHECK(no_child_left());
}

TEST_CASE("ring streaming with copies in and out runs for odd record sizes and batches",
          "[baselines]") {
  const int a = std::thread::hardware_concurrency() >= 2 ? 0 : -1;
  const int b = a < 0 ? -1 : 1;
  for (uint32_t bytes : {128u, 1000u}) {
    for (uint32_t batch : {1u, 32u}) {
      INFO(bytes << " B, batch " << batch);
      const double rate = bus::bench::stream_ring_copy(bytes, 200'000, batch, b, a);
      CHECK(rate > 0);
      std::printf("  ring copy      %5u B  batch %2u  %.2f M msgs/s\n", bytes, batch, rate / 1e6);
    }
  }
  CHECK(bus::bench::stream_ring_copy(0, 1000, 7, -1, -1) > 0);
  CHECK_THROWS_AS(bus::bench::stream_ring_copy(64, 1000, 0, -1, -1), std::runtime_error);
}

TEST_CASE("TCP streaming between two processes moves every byte, batched or not", "[baselines]") {
  for (uint32_t batch : {1u, 32u, 1000u}) {
    INFO("batch " << batch);
    CHECK(bus::bench::stream_tcp(200, 20'001, batch) > 0);  // a last batch that is short
  }
  CHECK(bus::bench::stream_tcp(1, 5'000, 7) > 0);
  CHECK_THROWS_AS(bus::bench::stream_tcp(64, 1000, 0), std::runtime_error);
}

TEST_CASE("a side that cannot start fails the run quickly, with no child left", "[baselines]") {
  // No machine this runs on has cpu 1000: the side that pins to it fails at once.
  constexpr int kNoSuchCpu = 1000;
  const auto started = std::chrono::steady_clock::now();
  Histogram h;
  RttParams p = small(64);
  p.cpu_b = kNoSuchCpu;
  CHECK_THROWS_WITH(bus::bench::rtt_cacheline(p, test_clock(), h), Catch::Contains("cpu 1000"));
  CHECK_THROWS_WITH(bus::bench::rtt_eventfd(p, test_clock(), h), Catch::Contains("could not pin"));
  CHECK_THROWS_WITH(bus::bench::rtt_tcp(p, test_clock(), h), Catch::Contains("could not pin"));
  CHECK(no_child_left());
  p.cpu_b = -1;
  p.cpu_a = kNoSuchCpu;
  CHECK_THROWS_WITH(bus::bench::rtt_eventfd(p, test_clock(), h), Catch::Contains("cpu 1000"));
  CHECK_THROWS_WITH(bus::bench::rtt_tcp(p, test_clock(), h), Catch::Contains("cpu 1000"));
  CHECK_THROWS_WITH(bus::bench::stream_ring_copy(64, 1000, 1, kNoSuchCpu, -1),
                    Catch::Contains("cpu 1000"));
  CHECK_THROWS_WITH(bus::bench::stream_ring_copy(64, 1000, 1, -1, kNoSuchCpu),
                    Catch::Contains("cpu 1000"));
  CHECK(no_child_left());
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(8));
}

TEST_CASE("no baseline leaves a child process behind", "[baselines]") {
  Histogram h;
  (void)bus::bench::rtt_eventfd(small(64), test_clock(), h);
  (void)bus::bench::rtt_tcp(small(64), test_clock(), h);
  CHECK(no_child_left());
}
