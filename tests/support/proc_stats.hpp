// Per-thread kernel counters, read from /proc, to show that a code path made no system calls:
// voluntary context switches (every sleep is one) and read/write system calls
// (/proc/thread-self/io, present when the kernel has task I/O accounting).
#pragma once

#include <sys/resource.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

namespace bus::test {

struct ThreadSyscalls {
  uint64_t voluntary_switches = 0;
  std::optional<uint64_t> read_write_calls;  // syscr + syscw; nullopt if not available
};

inline ThreadSyscalls thread_syscalls() {
  ThreadSyscalls out;
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  out.voluntary_switches = static_cast<uint64_t>(ru.ru_nvcsw);
  std::ifstream io("/proc/thread-self/io");
  std::string key;
  uint64_t value = 0;
  uint64_t sum = 0;
  int found = 0;
  while (io >> key >> value) {
    if (key == "syscr:" || key == "syscw:") {
      sum += value;
      ++found;
    }
  }
  if (found == 2) out.read_write_calls = sum;
  return out;
}

}  // namespace bus::test
