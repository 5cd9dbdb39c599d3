// What the scenarios through busd share: agent processes and their control block, CPU
// accounting per process, the raw baselines interleaved with the bus runs, and the output.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bus/client.hpp"
#include "clock.hpp"
#include "proc.hpp"
#include "report.hpp"
#include "scenarios.hpp"
#include "target.hpp"

namespace bus::bench {

/// Shared between busbench and one of its agent processes.
struct alignas(64) AgentCtl {
  std::atomic<int> ready{0};
  std::atomic<int> stop{0};
  std::atomic<int> failed{0};
  std::atomic<int> pause{0};          // load publisher: paused
  std::atomic<uint32_t> stall_ms{0};  // responder: stall once for this long on the next request
  std::atomic<uint64_t> count{0};     // requests handled / messages received / published
  std::atomic<uint64_t> target{0};    // subscriber: stamp done_ns when count reaches it
  std::atomic<uint64_t> done_ns{0};
  std::atomic<uint64_t> errors{0};    // out-of-order messages, failed replies
  std::atomic<uint64_t> backwards{0}; // subscriber: sequence numbers not above the last one (duplicates, reordering)
  std::atomic<int> standby{0};        // serve(): set by busbench while it measures something else
  std::atomic<int> standby_ack{0};    // serve(): the agent's answer (it sleeps while this is 1)
  char error[240] = {};
};

/// Connects one of busbench's agents; throws std::runtime_error naming the agent.
std::unique_ptr<Client> connect_agent(const std::string& socket, const std::string& name, const std::string& wait,
                                      bool hop_timing = false);
/// The body of a serving agent process: connects as `name`, subscribes `handler` to `subject`
/// (in queue group `group` if not empty), says ready, and dispatches until told to stop.
/// On standby (ctl.standby) it sleeps instead, polling now and then to answer busd's heartbeats,
/// so that a spinning agent is not spinning while something else is measured.
/// The exit code; failures are recorded in `ctl`.
int serve(const std::string& socket, const std::string& name, const std::string& subject, const std::string& group,
          const BusOptions& o, AgentCtl& ctl, const std::function<void(Client&, const Message&)>& handler,
          bool hop_timing = false);
/// serve() with a handler that echoes every request's payload and counts it in ctl.count.
int serve_echo(const std::string& socket, const std::string& name, const std::string& subject, const std::string& group,
               const BusOptions& o, AgentCtl& ctl);

/// Puts serving agents on standby (`on`) or wakes them, and waits until each one says so (an
/// agent on standby sleeps: it never competes for a CPU with what is measured meanwhile).
/// Throws naming the agent if one fails, or does not answer within 5 s.
void set_standby(const std::vector<AgentCtl*>& ctls, bool on);

/// Of the `n` busd variants' agents (`serving(v)`: variant v's), only variant `active`'s work;
/// the others go on standby.
template <class F>
void only_serving(size_t n, size_t active, F&& serving) {
  for (size_t other = 0; other < n; ++other) {
    if (other != active) set_standby(serving(other), true);
  }
  set_standby(serving(active), false);
}

/// A busd busbench measures through. --lanes both gives two private busd, lanes on and lanes
/// off, each with its own agents and its own client in busbench; their runs are interleaved
/// with each other and with the baselines, so every ratio is against a baseline of the same run.
struct Variant {
  int lanes = -1;     // 1 lanes on, 0 lanes off, -1 not chosen (--address, or a scenario without --lanes)
  std::string label;  // "lanes", "no lanes", "" (not chosen)
  std::unique_ptr<BusTarget> bus;
  /// `base` as this variant's row: "busd pingpong (lanes)"; `base` itself when not chosen.
  [[nodiscard]] std::string row(const std::string& base) const;
  /// `what` as this variant's hop row: "[lanes] request: busbench -> busd".
  [[nodiscard]] std::string hop(const std::string& what) const;
};
/// Starts the busd of every variant --lanes asks for (or finds the one at --address).
std::vector<Variant> start_variants(const BusOptions& o);
/// In which order run `run` measures `n` variants: alternating, so that none always comes
/// right after the baselines.
std::vector<size_t> run_order(size_t n, int run);
/// Of the messages a client sent between two snapshots of its stats, the share (0..1) that went
/// over lanes; -1 when it sent none.
double lane_share(const Client::Stats& before, const Client::Stats& after);
/// "busd (lanes): no message went over a lane ..." when the lanes variant used none: the note
/// for the report, or "" when lanes carried messages (or the variant is not the lanes one).
std::string lane_use_note(const Variant& v, double share);

/// In an agent process: record why it failed (busbench prints it) and return its exit code.
int agent_failed(AgentCtl& ctl, const std::string& why);
/// Waits until the agent says ready; throws with its error if it fails, dies or takes > `ms`.
void wait_ready(AgentCtl& ctl, Child& child, const std::string& what, int ms = 20'000);
/// The busd to measure, from the common options.
TargetOptions target_options(const BusOptions& o);
/// Forks `n` agent processes, the i-th running body(i) with control block ctl(i), and waits
/// until every one is ready (`what` i names it in errors).
std::vector<Child> start_agents(size_t n, const std::string& what, const std::function<AgentCtl&(size_t)>& ctl,
                                const std::function<int(size_t)>& body, int ready_ms = 20'000);
/// stop_agents for agents whose control blocks ctl(i) match children[i].
void stop_all(std::vector<Child>& children, const std::function<AgentCtl&(size_t)>& ctl);

/// Tells agents to stop and reaps them (kills those that do not stop within 3 s).
void stop_agents(std::vector<AgentCtl*> ctls, std::vector<Child*> children);

/// "busbench.<pid>": busbench's subjects, so runs against a shared busd do not mix.
std::string subject_prefix();

/// CPU seconds of a set of processes over a measured window, per million messages.
class CpuMeter {
 public:
  /// pid 0: busbench itself. Several pids under one name are summed.
  void add(const std::string& name, const std::string& note, std::vector<pid_t> pids);
  void start();
  void stop(Report& rep, double messages);

 private:
  struct Entry {
    std::string name, note;
    std::vector<pid_t> pids;
    double at_start = 0;
  };
  double total(const Entry& e) const;
  std::vector<Entry> entries_;
};

/// The raw round-trip baselines (cache line, eventfd wake, TCP loopback), one run each, into
/// `rep` as baseline rows. `cpus`: the two CPUs for the two sides.
void run_rtt_baselines(Report& rep, const BusOptions& o, const Clock& clk, uint64_t rounds);

/// The progress line (stderr, only when it is a terminal and not --quiet).
void progress(const BusOptions& o, int run, const char* what);
/// Prints the report and writes --json, --hgrm and --plot; the exit code.
int finish(const Report& rep, const BusOptions& o, int rc);

/// One summary line on how every process waited and was pinned.
std::string who_waits(const BusOptions& o, const BusTarget& bus, const std::string& peers);
/// The same for every variant's busd.
std::string who_waits(const BusOptions& o, const std::vector<Variant>& vars, const std::string& peers);
/// CPU for role i of --pin (busbench 0, its agents 1, busd 2); -1 = not pinned.
int pin_of(const BusOptions& o, size_t i);

/// A number as people write it: "50000", "0.5", "13.167" (up to 3 decimals).
std::string num(double v);

/// Sleeps (or spins, when close) until CLOCK_MONOTONIC `t_ns`.
void sleep_until_ns(uint64_t t_ns);

}  // namespace bus::bench
