#include <catch2/catch.hpp>

#include "bus/clock.hpp"

using namespace bus::clock;

TEST_CASE("monotonic clock moves forward", "[core]") {
  const uint64_t a = mono_ns();
  const uint64_t b = mono_ns();
  CHECK(b >= a);
  CHECK(real_ns() > 1'600'000'000ull * 1'000'000'000ull);  // after 2020
}

TEST_CASE("deadline of a stamp", "[core]") {
  CHECK(deadline_of(stamp(1000, 0)) == UINT64_MAX);  // no deadline
  CHECK(deadline_of(stamp(1000, 500)) == 1500);
  CHECK(deadline_of(Stamp{UINT64_MAX - 5, 100, true}) == UINT64_MAX);  // saturates
}

TEST_CASE("a deadline crosses hosts as a budget, whatever their clocks", "[core]") {
  // Host A: monotonic 1'000'000, realtime 5e18. Request sent at mono 990'000 with 100 us budget.
  const Stamp sent = stamp(990'000, 100'000);
  const Stamp wire = wire_egress(sent, 1'000'000, 5'000'000'000'000'000'000ull);
  CHECK(wire.has_deadline);
  CHECK(wire.budget_ns == 90'000);                                      // 10 us already spent
  CHECK(wire.timestamp_ns == 5'000'000'000'000'000'000ull - 10'000);     // realtime of send

  // Host B: monotonic clock unrelated (42'000), realtime 3 us later than A's.
  const Stamp in = wire_ingress(wire, 42'000, 5'000'000'000'000'003'000ull);
  CHECK(in.timestamp_ns == 42'000 - 13'000);  // age 13 us: 10 before egress + 3 in flight
  CHECK(deadline_of(in) == 42'000 + 90'000);  // remaining budget from arrival
}

TEST_CASE("expired budgets and clock skew clamp instead of wrapping", "[core]") {
  const Stamp late = wire_egress(stamp(0, 5), 100, 1'000'000);
  CHECK(late.has_deadline);
  CHECK(late.budget_ns == 0);  // expired, and says so
  // Peer's realtime is ahead of ours: the message would come from the future. Clamp to now.
  const Stamp in = wire_ingress(Stamp{2'000'000, 0, false}, 500, 1'000'000);
  CHECK(in.timestamp_ns == 500);
  CHECK(deadline_of(in) == UINT64_MAX);
  // A timestamp older than our monotonic clock's origin clamps to 0.
  CHECK(wire_ingress(Stamp{0, 10, true}, 5, 1'000'000).timestamp_ns == 0);
}
