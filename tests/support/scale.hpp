// Iteration counts for stress tests. Sanitizer builds divide them (meson sets BUS_TEST_SCALE:
// 8 under ASan+UBSan, 20 under TSan); BUS_TEST_MULT=<k> in the environment multiplies them for
// long runs by hand.
#pragma once

#include <cstdint>
#include <cstdlib>

#ifndef BUS_TEST_SCALE
#define BUS_TEST_SCALE 1
#endif

namespace bus::test {

inline uint64_t scaled(uint64_t n) {
  static const uint64_t mult = [] {
    const char* m = std::getenv("BUS_TEST_MULT");
    const long v = m != nullptr ? std::atol(m) : 1;
    return static_cast<uint64_t>(v > 0 ? v : 1);
  }();
  const uint64_t r = n * mult / BUS_TEST_SCALE;
  return r == 0 ? 1 : r;
}

}  // namespace bus::test
