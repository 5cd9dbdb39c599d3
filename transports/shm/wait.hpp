// How an endpoint waits for its ring: the wait strategies and the eventfd wake-up.
//
//   spin      busy-poll; lowest latency, burns a core (never more spinners than cores)
//   yield     poll, sched_yield() between polls
//   adaptive  spin for spin_ns, then sleep on the eventfd (default: idle costs ~0% CPU,
//             busy makes no system calls)
//   block     sleep on the eventfd at once
//
// Sleeping: the sleeper sets its flag in the ring's SleepLine, re-checks the index, and only
// then sleeps on its eventfd; the other side, after publishing its index, reads the flag and
// writes the eventfd only when it is set. Both the index store and the flag load are seq_cst,
// so one of the two sides always sees the other (no lost wake-up) and a side that is not asleep
// never costs the other a system call. eventfds, not futexes, so one thread can wait on many
// rings with one epoll call (see RingConsumer::arm_sleep).
#pragma once

#include <cstdint>
#include <string_view>

#include "bus/error.hpp"
#include "bus/limits.hpp"

namespace bus::shm {

enum class WaitKind : uint8_t { Spin, Yield, Adaptive, Block };

struct WaitStrategy {
  WaitKind kind = WaitKind::Adaptive;
  uint64_t spin_ns = defaults::kAdaptiveSpinNs;  // Adaptive only

  static constexpr WaitStrategy spin() noexcept { return {WaitKind::Spin, 0}; }
  static constexpr WaitStrategy yield() noexcept { return {WaitKind::Yield, 0}; }
  static constexpr WaitStrategy adaptive(uint64_t spin_ns = defaults::kAdaptiveSpinNs) noexcept {
    return {WaitKind::Adaptive, spin_ns};
  }
  static constexpr WaitStrategy block() noexcept { return {WaitKind::Block, 0}; }
};

/// "spin", "yield", "block", "adaptive" or "adaptive:<n>us|ns|ms" (spin time).
[[nodiscard]] Expected<WaitStrategy> parse_wait_strategy(std::string_view text);
/// The inverse of parse_wait_strategy, e.g. "adaptive:20us".
[[nodiscard]] std::string to_string(const WaitStrategy& ws);

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// Deadline for "wait forever".
inline constexpr uint64_t kForever = UINT64_MAX;

/// When a wait gives up. A relative deadline reads the clock only once the call really has to
/// wait, so a timeout passed to a call that returns at once costs nothing.
class Deadline {
 public:
  [[nodiscard]] static constexpr Deadline never() noexcept { return Deadline(kForever, false); }
  /// At this CLOCK_MONOTONIC time.
  [[nodiscard]] static constexpr Deadline at(uint64_t mono_ns) noexcept { return Deadline(mono_ns, false); }
  /// This long after the call starts waiting.
  [[nodiscard]] static constexpr Deadline after(uint64_t ns) noexcept { return Deadline(ns, true); }

  /// The absolute CLOCK_MONOTONIC time (kForever for never); fixes a relative deadline.
  uint64_t resolve() noexcept;
  [[nodiscard]] bool is_never() const noexcept { return !relative_ && value_ == kForever; }

 private:
  constexpr Deadline(uint64_t v, bool relative) noexcept : value_(v), relative_(relative) {}
  uint64_t value_;
  bool relative_;
};

/// Owning eventfd (non-blocking, close-on-exec), the wake-up channel of one ring direction.
class EventFd {
 public:
  EventFd() = default;
  explicit EventFd(int fd) noexcept : fd_(fd) {}
  EventFd(EventFd&& o) noexcept : fd_(o.release()) {}
  EventFd& operator=(EventFd&& o) noexcept;
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  ~EventFd();

  [[nodiscard]] static Expected<EventFd> create();
  [[nodiscard]] int fd() const noexcept { return fd_; }
  int release() noexcept {
    const int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_ = -1;
};

namespace wake {
/// Adds 1 to the eventfd (one write(2)).
void signal(int fd) noexcept;
/// Clears the eventfd's count (one read(2)); harmless when it is already zero.
void drain(int fd) noexcept;
/// Sleeps until the eventfd is readable or `deadline_ns` (CLOCK_MONOTONIC) passes; returns false
/// on timeout. Does not drain.
bool sleep_until(int fd, uint64_t deadline_ns) noexcept;
}  // namespace wake

}  // namespace bus::shm
