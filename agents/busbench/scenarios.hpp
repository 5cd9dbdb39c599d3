// busbench scenarios and their options (CLI in main.cpp).
#pragma once

#include <cstdint>
#include <string>

#include "bus/limits.hpp"
#include "shm/wait.hpp"

namespace bus::bench {

struct CommonOptions {
  int runs = 5;
  std::string json;      // --json FILE
  std::string hgrm_dir;  // --hgrm DIR
  bool quiet = false;    // no progress line
};

struct RingOptions : CommonOptions {
  uint32_t payload = 64;
  uint64_t rounds = 200'000;
  uint64_t warmup = 20'000;
  uint64_t stream = 10'000'000;
  uint32_t batch = 32;
  uint64_t capacity = 1 << 20;
  shm::WaitStrategy wait = shm::WaitStrategy::spin();
  int cpu_ping = 0;
  int cpu_pong = 1;
};

struct EnvelopeOptions : CommonOptions {
  uint32_t payload = 64;
  uint64_t iterations = 1'000'000;
};

int run_ring(const RingOptions& o);
int run_envelope(const EnvelopeOptions& o);

}  // namespace bus::bench
