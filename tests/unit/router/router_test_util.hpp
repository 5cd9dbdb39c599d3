// Shared by the router tests: a deterministic PRNG, random patterns and subjects over a small
// token alphabet, and printing SubRef in Catch2 messages.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <sstream>
#include <string>

#include "router/trie.hpp"

namespace bus::router::test {

struct Rng {  // splitmix64: the same sequence everywhere
  uint64_t s;
  uint64_t next() noexcept {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint32_t below(uint32_t n) noexcept { return static_cast<uint32_t>(next() % n); }
};

inline const char* const kTokens[] = {"a", "b", "c", "dd"};

/// 1..max_tokens tokens; '*' and a final '>' now and then.
inline std::string random_pattern(Rng& r, uint32_t max_tokens) {
  const uint32_t n = 1 + r.below(max_tokens);
  std::string p;
  for (uint32_t i = 0; i < n; ++i) {
    if (i != 0) p += '.';
    const uint32_t k = r.below(10);
    if (i + 1 == n && k == 0) {
      p += '>';
    } else if (k <= 2) {
      p += '*';
    } else {
      p += kTokens[r.below(4)];
    }
  }
  return p;
}

inline std::string random_subject(Rng& r, uint32_t max_tokens) {
  const uint32_t n = 1 + r.below(max_tokens);
  std::string s;
  for (uint32_t i = 0; i < n; ++i) {
    if (i != 0) s += '.';
    s += i == 0 || r.below(6) != 0 ? kTokens[r.below(4)] : "zz";  // zz: a token nobody names
  }
  return s;
}

}  // namespace bus::router::test

namespace Catch {
template <>
struct StringMaker<bus::router::SubRef> {
  static std::string convert(const bus::router::SubRef& r) {
    std::ostringstream o;
    o << "{agent " << r.agent << ", sid " << r.sid << ", group " << r.group << "}";
    return o.str();
  }
};
}  // namespace Catch
