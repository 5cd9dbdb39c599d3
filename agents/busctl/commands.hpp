// busctl's subcommands. Each returns the process exit code: 0 ok, 1 busd not running or its page
// missing/unreadable (a message on stderr names the paths), 2 usage (main.cpp).
#pragma once

#include <string>

namespace bus::ctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitNotRunning = 1;
inline constexpr int kExitUsage = 2;

struct Options {
  std::string counters;  // --counters PATH; empty: look beside the socket (bus/address.hpp)
  bool json = false;
  bool all = false;  // lanes --all: closed lanes too
};

int run_stat(const Options& o);
int run_agents(const Options& o);
int run_lanes(const Options& o);

}  // namespace bus::ctl
