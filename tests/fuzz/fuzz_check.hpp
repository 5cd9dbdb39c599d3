// Helpers shared by the fuzz targets: a check that aborts (so libFuzzer and the replay driver
// report it with the input), a sink that keeps reads from being optimized away, and an
// exactly-sized, 16-byte aligned copy of the input (AddressSanitizer sees one byte too far).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>

#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) ::bus::fuzz::check_failed(#cond, __FILE__, __LINE__);                    \
  } while (0)

namespace bus::fuzz {

[[noreturn]] inline void check_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", file, line, what);
  std::abort();
}

/// Stores into this keep reads from being optimized away.
inline volatile uint64_t g_sink = 0;

/// Reads every byte of `b` (ASan checks each access).
inline void touch(std::span<const std::byte> b) noexcept {
  uint8_t x = 0;
  for (std::byte c : b) x = static_cast<uint8_t>(x ^ static_cast<uint8_t>(c));
  g_sink = x;
}
inline void touch(std::string_view s) noexcept {
  touch(std::span<const std::byte>(reinterpret_cast<const std::byte*>(s.data()), s.size()));
}
template <class T>
inline void touch_value(T v) noexcept {
  g_sink = static_cast<uint64_t>(v);
}

/// True when [p, p + n) lies inside `whole`.
inline bool inside(const void* p, size_t n, std::span<const std::byte> whole) noexcept {
  const auto a = reinterpret_cast<uintptr_t>(p);
  const auto lo = reinterpret_cast<uintptr_t>(whole.data());
  return a >= lo && n <= whole.size() && a - lo <= whole.size() - n;
}

/// The input in a heap block of exactly its size (operator new[]: 16-byte aligned, so the
/// flatbuffers alignment checks, which are relative to the buffer start, hold in memory too).
class ExactCopy {
 public:
  ExactCopy(const uint8_t* data, size_t size) : mem_(new std::byte[size]), size_(size) {
    if (size != 0) std::memcpy(mem_.get(), data, size);
  }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {mem_.get(), size_}; }
  [[nodiscard]] std::span<std::byte> mutable_bytes() noexcept { return {mem_.get(), size_}; }

 private:
  std::unique_ptr<std::byte[]> mem_;
  size_t size_;
};

}  // namespace bus::fuzz
