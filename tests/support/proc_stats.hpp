// Per-thread kernel counters to show that a code path made no system calls: voluntary context
// switches (every sleep is one; getrusage) and read/write system calls (/proc/thread-self/io,
// present when the kernel has task I/O accounting).
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace bus::test {

/// Voluntary context switches of this thread: getrusage only, nothing that could block itself,
/// so two readings tight around a loop count the loop's alone.
inline uint64_t voluntary_switches() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return static_cast<uint64_t>(ru.ru_nvcsw);
}

/// read/write system calls of this thread so far (syscr + syscw); nullopt if not available.
inline std::optional<uint64_t> read_write_calls() {
  std::optional<uint64_t> out;
  // Exactly one open, one read and one close per call, so that two calls in a row differ by a
  // constant that the caller can measure (no stdio buffering or locale set-up in between).
  const int fd = ::open("/proc/thread-self/io", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return out;
  buf[n] = '\0';
  const char* r = std::strstr(buf, "syscr:");
  const char* w = std::strstr(buf, "syscw:");
  if (r != nullptr && w != nullptr) {
    out = std::strtoull(r + 6, nullptr, 10) + std::strtoull(w + 6, nullptr, 10);
  }
  return out;
}

}  // namespace bus::test
