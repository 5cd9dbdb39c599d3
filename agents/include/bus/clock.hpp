// Clocks and deadlines.
//
// On a host every timestamp is CLOCK_MONOTONIC nanoseconds: immune to wall-clock steps, and the
// same clock in every process. Across hosts monotonic clocks mean nothing to each other, so a
// link converts Header.timestamp_ns to CLOCK_REALTIME on the way out and back on the way in
// (observational only: skew between hosts shows up in latency figures, never in correctness).
//
// Deadlines are carried as a budget, never as an absolute time, so hosts need not share a clock:
//   on a host:  deadline = timestamp_ns + deadline_budget_ns
//   on a link:  deadline_budget_ns = time left when the frame was sent; the receiver's deadline
//               is its own now + budget (transit time is not charged, see wire_ingress()).
#pragma once

#include <cstdint>
#include <ctime>

namespace bus::clock {

[[nodiscard]] inline uint64_t mono_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

[[nodiscard]] inline uint64_t real_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

/// The time fields of a Header that clocks touch.
struct Stamp {
  uint64_t timestamp_ns = 0;
  uint64_t budget_ns = 0;
  bool has_deadline = false;
};

/// Host-local deadline (CLOCK_MONOTONIC) of a stamp; UINT64_MAX without one.
[[nodiscard]] constexpr uint64_t deadline_of(const Stamp& s) noexcept {
  if (!s.has_deadline) return UINT64_MAX;
  const uint64_t d = s.timestamp_ns + s.budget_ns;
  return d < s.timestamp_ns ? UINT64_MAX : d;  // saturate on overflow
}

/// A stamp sent at `now` that must be answered within `timeout_ns` (0 = no deadline).
[[nodiscard]] constexpr Stamp stamp(uint64_t now_mono, uint64_t timeout_ns) noexcept {
  return Stamp{now_mono, timeout_ns, timeout_ns != 0};
}

/// Leaving the host: timestamp to CLOCK_REALTIME, budget to what is left at `now`.
[[nodiscard]] constexpr Stamp wire_egress(const Stamp& s, uint64_t now_mono,
                                          uint64_t now_real) noexcept {
  const uint64_t age = now_mono > s.timestamp_ns ? now_mono - s.timestamp_ns : 0;
  Stamp out{now_real - age, 0, s.has_deadline};
  if (s.has_deadline) out.budget_ns = s.budget_ns > age ? s.budget_ns - age : 0;
  return out;
}

/// Arriving on the host: timestamp back to CLOCK_MONOTONIC (clamped to now, so skew never puts
/// a message in the future), deadline = now + budget, re-expressed against the new timestamp.
[[nodiscard]] constexpr Stamp wire_ingress(const Stamp& s, uint64_t now_mono,
                                           uint64_t now_real) noexcept {
  const uint64_t age = now_real > s.timestamp_ns ? now_real - s.timestamp_ns : 0;
  const uint64_t ts = now_mono > age ? now_mono - age : 0;
  Stamp out{ts, 0, s.has_deadline};
  if (s.has_deadline) out.budget_ns = (now_mono - ts) + s.budget_ns;
  return out;
}

}  // namespace bus::clock
