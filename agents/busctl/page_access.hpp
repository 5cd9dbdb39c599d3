// What the table commands (commands.cpp) and top (top.cpp) share: opening busd's counters page,
// judging whether busd is live, and a few ways of showing what it holds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bus/counters.hpp"
#include "commands.hpp"
#include "format.hpp"

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

/// "up", "down", or "closed" for a peer busd forgot.
[[nodiscard]] std::string link_state(const counters::LinkSnapshot& k);
/// Appends an agent's queue figures (pending requests, bytes queued each way and held for it
/// as a slow consumer, high-water marks), as `agents --json` and `top --json` show them.
JsonObject& agent_queues_json(JsonObject& j, const counters::AgentSnapshot& a);

/// The quantiles busctl shows of a latency histogram, as (label, q).
inline constexpr std::pair<const char*, double> kQuantiles[] = {
    {"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}, {"p99.9", 0.999}};
/// A histogram's count, mean, quantiles and max (`status --json`, `top --json`); with
/// `buckets`, its non-empty buckets as [low_ns, high_ns, count] too.
JsonObject& histogram_json(JsonObject& j, const counters::HistogramSnapshot& h, bool buckets);
/// One table row: name, count, p50, p90, p99, p99.9, max, mean.
[[nodiscard]] std::vector<std::string> histogram_row(const counters::HistogramSnapshot& h);

}  // namespace bus::ctl
