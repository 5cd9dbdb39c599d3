// A 64-bit mixer (MurmurHash3's finalizer) for tests that derive message contents and sizes
// from a number, so that the receiver can check what it got without a copy of what was sent.
#pragma once

#include <cstdint>

namespace bus::test {

[[nodiscard]] constexpr uint64_t mix64(uint64_t x) noexcept {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

}  // namespace bus::test
