// The busd a scenario measures: one busbench starts for itself (a private socket and shm
// directory, the embedded default config plus the chosen wait strategy), or one already running
// at --address.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "bus/counters.hpp"
#include "proc.hpp"

namespace bus::bench {

struct TargetOptions {
  std::string address;    // existing busd's socket; "" = start a private one
  std::string transport = "shm";
  std::string busd_bin;   // "" = $BUSD_BIN, next to busbench, in the build tree, then $PATH
  std::string busd_wait = "adaptive";
  int busd_cpu = -1;      // pin the spawned busd
  uint32_t agents = 0;    // agents the run connects: above busd's default max_agents, the
                          // spawned busd's limit is raised to fit (and the header says so)
  int lanes = -1;         // [busd] lanes: 1 on, 0 off, -1 not written (busd's default)
  uint32_t heartbeat_misses = 0;  // [busd] heartbeat_misses (0: busd's default)
  bool quiet = false;
  // Two linked busd (--transport tcp, dpdk) are two targets:
  std::string name;                 // "busd A": names it in describe() and errors ("" = "busd")
  std::string extra_config;         // TOML appended to the config busbench writes ([cluster], [[links]])
  std::function<void()> in_child;   // runs in the forked child before exec (enters a network namespace)
};

class BusTarget {
 public:
  /// Starts or finds busd; throws std::runtime_error with the reason when it cannot.
  explicit BusTarget(const TargetOptions& o);
  ~BusTarget();
  BusTarget(const BusTarget&) = delete;
  BusTarget& operator=(const BusTarget&) = delete;

  [[nodiscard]] const std::string& socket() const noexcept { return socket_; }
  /// busd's pid (for CPU and RSS); 0 if unknown (an existing busd without a counters page).
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// "private busd (wait=adaptive, lanes on), /usr/bin/busd" or "existing busd at PATH (pid N)".
  [[nodiscard]] const std::string& describe() const noexcept { return describe_; }
  /// busd still running (a private one that died fails the run).
  [[nodiscard]] bool alive();
  /// A global counter from busd's counters page (0 while there is no page).
  [[nodiscard]] uint64_t global(counters::Global g);
  /// What a private busd wrote to its log so far ("" for an existing busd).
  [[nodiscard]] std::string log() const;

 private:
  std::optional<counters::CountersView> page_;
  std::string dir_;
  std::string socket_;
  std::string describe_;
  pid_t pid_ = 0;
  Child child_;
};

/// Where busd's binary is: see TargetOptions::busd_bin.
std::string find_busd(const std::string& explicit_path);

}  // namespace bus::bench
