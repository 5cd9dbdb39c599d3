// busbench's timestamp source: the CPU's invariant TSC, calibrated against CLOCK_MONOTONIC at
// start, where the CPU has one (constant_tsc and nonstop_tsc in /proc/cpuinfo); otherwise
// clock_gettime(CLOCK_MONOTONIC). Its own cost per reading is measured and printed.
#pragma once

#include <cstdint>
#include <string>

#include "bus/clock.hpp"

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace bus::bench {

class Clock {
 public:
  /// Picks the source and calibrates it (~50 ms).
  static Clock calibrate();

  /// Raw ticks. lfence keeps rdtsc from running ahead of the work it times.
  [[nodiscard]] uint64_t now() const noexcept {
#if defined(__x86_64__)
    if (tsc_) {
      _mm_lfence();
      const uint64_t t = __rdtsc();
      _mm_lfence();
      return t;
    }
#endif
    return clock::mono_ns();
  }

  [[nodiscard]] uint64_t to_ns(uint64_t ticks) const noexcept {
    return static_cast<uint64_t>(static_cast<double>(ticks) * ns_per_tick_ + 0.5);
  }

  [[nodiscard]] bool is_tsc() const noexcept { return tsc_; }
  [[nodiscard]] double ghz() const noexcept { return 1.0 / ns_per_tick_; }
  /// Cost of one now() in ns (median of many back-to-back reads).
  [[nodiscard]] double overhead_ns() const noexcept { return overhead_ns_; }
  /// "tsc 2.60 GHz, 9 ns/read" or "clock_gettime, 21 ns/read".
  [[nodiscard]] std::string describe() const;

 private:
  bool tsc_ = false;
  double ns_per_tick_ = 1.0;
  double overhead_ns_ = 0;
};

}  // namespace bus::bench
