// busctl's subcommands that read busd's counters page (status, agents, subjects, links, lanes,
// top). Each returns the process exit code (the table below; main.cpp prints it in --help).
#pragma once

#include <cstdint>
#include <string>

namespace bus::ctl {

// Exit codes scripts can rely on.
inline constexpr int kExitOk = 0;
inline constexpr int kExitNotRunning = 1;   // busd not running: no page, a stale page, no socket
inline constexpr int kExitUsage = 2;        // bad command line
inline constexpr int kExitTimeout = 3;      // req: no reply in time; sub: --timeout before --count
inline constexpr int kExitNoResponders = 4; // req: nobody subscribed to the subject
inline constexpr int kExitBadInput = 5;     // bad subject, JSON, schema, payload (too large, not decodable)
inline constexpr int kExitConfigInvalid = 6;// config check: the file is refused (or unreadable)
inline constexpr int kExitRefused = 7;      // busd or the responder refused: ACL, limits, an error reply

struct Options {
  std::string counters;  // --counters PATH; empty: look beside the socket (bus/address.hpp)
  std::string socket;    // --socket PATH|tcp://...; empty: $BUS_SOCKET, then the default lookup
  bool json = false;
  bool all = false;  // lanes/links --all: closed slots too
};

struct TopOptions {
  std::string interval = "1s";  // --interval
  uint64_t iterations = 0;      // --iterations: frames to show, 0 = until q / Ctrl-C
  size_t rows = 0;              // --rows: agents/links/subjects rows per table, 0 = fit the terminal
};

int run_status(const Options& o);
int run_agents(const Options& o);
int run_subjects(const Options& o);
int run_links(const Options& o);
int run_lanes(const Options& o);
int run_top(const Options& o, const TopOptions& t);

}  // namespace bus::ctl
