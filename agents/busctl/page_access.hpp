// Opening busd's counters page and judging whether busd is live: shared by the table commands
// (commands.cpp) and top (top.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "bus/counters.hpp"
#include "commands.hpp"

namespace bus::ctl {

/// Opens the page (--counters, else beside --socket / the socket lookup) or says why not on
/// stderr. `path` gets the page's path.
[[nodiscard]] std::optional<counters::CountersView> open_page(const Options& o, std::string& path);

struct Liveness {
  bool live = false;
  bool pid_alive = false;
  uint64_t now = 0;
  uint64_t heartbeat = 0;
  uint64_t heartbeat_age = 0;  // 0 when the heartbeat is ahead of our clock
  uint64_t uptime = 0;         // to now when live, else to the last heartbeat
};

[[nodiscard]] Liveness liveness(const counters::CountersView& v);
/// "live (heartbeat 0.4s ago)", "NOT RUNNING (...)".
[[nodiscard]] std::string status_line(const counters::CountersView& v, const Liveness& l);
/// kExitOk when live; else a message on stderr and kExitNotRunning (the numbers were shown).
int finish(const counters::CountersView& v, const Liveness& l, const std::string& path);

}  // namespace bus::ctl
