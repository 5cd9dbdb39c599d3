// What pingpong and pubsub share with their runs across a link (scenario_links.cpp): the
// responder and subscriber processes, one measured run of round trips, one measured burst of
// published messages.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "bus/envelope.hpp"
#include "bus_kit.hpp"

namespace bus::bench {

// ---- pingpong (scenario_pingpong.cpp)

/// The responder echoes at the front of its reply (payloads of kEcho bytes or more) the request's
/// timestamp, when it received it and the hop timing busd wrote into it.
constexpr size_t kEcho = 24;
struct Echo {
  uint64_t request_ts;
  uint64_t received_ns;
  uint32_t to_busd_ns;
  uint32_t in_busd_ns;
};
static_assert(sizeof(Echo) == kEcho);

/// The responder process: echoes every request on `subject` (with Echo at the front), counts
/// them in ctl.count; requests and replies carry Flags::Timed.
int responder_main(const std::string& socket, const std::string& subject, const BusOptions& o, AgentCtl& ctl);

/// What one round trip tells about its hops, CLOCK_MONOTONIC ns (on one host every process and
/// busd read the same clock; a link converts timestamps to CLOCK_REALTIME and back).
struct TripTimes {
  Echo request{};                         // as the responder echoed it
  uint64_t reply_ts = 0;                  // the reply's Header timestamp (when the responder sent it)
  std::optional<HopTiming> reply_timing;  // what busd wrote into the reply
  uint64_t back_ns = 0;                   // when the reply was back in busbench
};
using TripSink = std::function<void(const TripTimes&)>;

struct RunResult {
  Histogram h;
  double seconds = 0;        // the measured part
  double total_seconds = 0;  // including warm-up
  uint64_t trips = 0;        // including warm-up
  uint64_t failed = 0;
  std::string first_error;
};

/// One measured run of request/reply round trips on `subject` (--count or --duration, --warmup,
/// --rate), into a histogram; every measured trip whose reply carries an Echo goes to `hops`
/// (if any), outside the timed part. `stall_ctl`: the responder told to stall halfway.
RunResult measure(Client& c, const std::string& subject, const BusOptions& o, const Clock& clk, const TripSink* hops,
                  AgentCtl* stall_ctl);
/// One run's result into `rep`'s latency row `name`.
void add_run(Report& rep, const std::string& name, const std::string& note, bool baseline, const RunResult& r);
/// Open or closed loop, and what that means for coordinated omission.
std::string loop_note(const BusOptions& o);
/// Per-hop rows of one run's hops into `rep` (h[k] into hop row names[k]).
void add_hops(Report& rep, const std::vector<std::string>& names, const std::vector<Histogram>& h, double seconds);

// ---- pubsub (scenario_pubsub.cpp)

/// A subscriber process: counts the messages on `subject` and checks their sequence numbers
/// (the first 8 payload bytes); stamps done_ns when its count reaches ctl.target.
int subscriber_main(const std::string& socket, const std::string& subject, int index, const BusOptions& o,
                    AgentCtl& ctl);

/// Measured bursts of published messages from busbench to subscriber processes.
class Burst {
 public:
  /// `subs`: the subscribers' control blocks (n of them), each running subscriber_main.
  Burst(Client& c, std::string subject, AgentCtl* subs, uint32_t n, uint32_t payload);

  /// Publishes (sequence numbers continue) until every subscriber has received one, for when a
  /// subscription has to reach the publisher's busd over a link first; then waits until nothing
  /// more arrives and counts from there, forgiving the gap the unrouted probes left. Throws if
  /// nothing arrives within `ms`.
  void probe(int ms);
  /// `count` messages, a flush every `batch` (1: every publish wakes busd), until every
  /// subscriber has them: messages delivered per second from the first publish to the last
  /// subscriber's last message. CPU of `cpu`'s processes per million messages published into
  /// `rep`. `dropped` (one subscriber only): busd's running count of messages it dropped on
  /// the way (a link's hold buffer full); the burst then ends when the subscriber has the rest.
  double run(uint64_t count, uint32_t batch, CpuMeter& cpu, Report& rep,
             const std::function<uint64_t()>& dropped = {});
  /// What busd dropped of the last burst (with `dropped`).
  [[nodiscard]] uint64_t last_dropped() const noexcept { return last_dropped_; }
  /// Messages delivered so far to the first subscriber.
  [[nodiscard]] uint64_t delivered() const noexcept { return delivered_; }
  /// Publishes that failed so far.
  [[nodiscard]] uint64_t failed() const noexcept { return failed_; }
  /// Messages the subscribers saw out of order or missing (a gap counts once).
  [[nodiscard]] uint64_t out_of_order() const noexcept;
  /// Messages the subscribers saw after a later one (duplicates or reordering; gaps are not).
  [[nodiscard]] uint64_t backwards() const noexcept;

 private:
  Client& c_;
  std::string subject_;
  AgentCtl* subs_;
  uint32_t n_;
  std::vector<std::byte> msg_;
  uint64_t seq_ = 0;
  uint64_t delivered_ = 0;  // per subscriber, so far
  uint64_t failed_ = 0;
  uint64_t last_dropped_ = 0;
};

}  // namespace bus::bench
