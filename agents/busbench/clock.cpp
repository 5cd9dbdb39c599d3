#include "clock.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace bus::bench {
namespace {

bool invariant_tsc() {
#if defined(__x86_64__)
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) {
      return line.find(" constant_tsc") != std::string::npos &&
             line.find(" nonstop_tsc") != std::string::npos;
    }
  }
#endif
  return false;
}

}  // namespace

Clock Clock::calibrate() {
  Clock c;
  c.tsc_ = invariant_tsc() && std::getenv("BUSBENCH_NO_TSC") == nullptr;
  if (c.tsc_) {
    // Ticks per ns over ~50 ms of busy time, three times; keep the median.
    std::vector<double> rates;
    for (int i = 0; i < 3; ++i) {
      const uint64_t n0 = clock::mono_ns();
      const uint64_t t0 = c.now();
      while (clock::mono_ns() - n0 < 16'000'000) {
      }
      const uint64_t n1 = clock::mono_ns();
      const uint64_t t1 = c.now();
      rates.push_back(static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0));
    }
    std::sort(rates.begin(), rates.end());
    c.ns_per_tick_ = rates[1];
  }
  std::vector<uint64_t> costs;
  for (int i = 0; i < 1001; ++i) {
    const uint64_t a = c.now();
    const uint64_t b = c.now();
    costs.push_back(b - a);
  }
  std::nth_element(costs.begin(), costs.begin() + 500, costs.end());
  c.overhead_ns_ = static_cast<double>(costs[500]) * c.ns_per_tick_;
  return c;
}

std::string Clock::describe() const {
  char buf[96];
  if (tsc_) {
    std::snprintf(buf, sizeof buf, "tsc %.2f GHz, %.0f ns/read", ghz(), overhead_ns_);
  } else {
    std::snprintf(buf, sizeof buf, "clock_gettime(MONOTONIC), %.0f ns/read", overhead_ns_);
  }
  return buf;
}

}  // namespace bus::bench
