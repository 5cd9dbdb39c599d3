// busbench scatter: one coordinator (busbench) sends a request to each of N worker processes
// and waits for all replies, or for a quorum of k, or the deadline: the latency of one
// coordination round, and rounds/s.
#include <cstdio>
#include <cstring>

#include "bus/clock.hpp"
#include "bus_kit.hpp"

namespace bus::bench {
int run_scatter(const BusOptions& o) {
  if (o.workers < 1 || o.workers > 64) throw std::runtime_error("--workers must be 1..64");
  if (o.quorum > o.workers) throw std::runtime_error("--quorum must be at most --workers");
  const uint32_t need = o.quorum == 0 ? o.workers : o.quorum;
  const Clock clk = Clock::calibrate();
  BusTarget bus(target_options(o));
  const std::string prefix = subject_prefix() + ".scatter.";

  Shared<AgentCtl> ctl(o.workers);
  auto ctl_of = [&](size_t i) -> AgentCtl& { return ctl[i]; };
  std::vector<Child> workers = start_agents(o.workers, "worker", ctl_of, [&](size_t i) {
    return serve_echo(bus.socket(), "busbench-worker" + std::to_string(i) + "-" + std::to_string(::getppid()),
                      prefix + std::to_string(i), "", o, ctl[i]);
  });
  pin_thread(pin_of(o, 0));
  auto client = connect_agent(bus.socket(), "busbench-" + std::to_string(::getpid()), o.wait);

  // Replies arrive through on_reply; a round counts those for its own requests (ids from
  // first_id on); stragglers of a quorum round arrive later and are ignored.
  uint64_t first_id = UINT64_MAX;
  uint32_t got = 0, errors = 0, late = 0;
  client->on_reply([&](uint64_t id, const Expected<Message>& m) {
    if (id < first_id) {
      ++late;
    } else if (m) {
      ++got;
    } else {
      ++errors;
    }
  });

  std::string subjects_note = std::to_string(o.workers) + " worker processes, one request each";
  std::string header = "busbench scatter: one coordinator, " + std::to_string(o.workers) + " workers, " +
                       (o.quorum ? "quorum " + std::to_string(need) + " of " + std::to_string(o.workers)
                                 : std::string("all replies")) +
                       ", " + std::to_string(o.payload) + " B payload, " +
                       (o.duration_s > 0 ? num(o.duration_s) + " s" : std::to_string(o.count) + " rounds") +
                       " x " + std::to_string(o.runs) + " runs (+" + std::to_string(o.warmup) + " warm-up)\n" +
                       who_waits(o, bus, "workers") + "\n  clock " + clk.describe() + "; deadline " +
                       std::to_string(o.timeout_ms) + " ms per round";
  Report rep("scatter", header);
  rep.set_latency_unit("round");
  rep.note(o.rate > 0 ? "open loop at " + num(o.rate) + " rounds/s, coordinated omission corrected (HdrHistogram expected interval)"
                      : "closed loop (the next round starts when the last one ends): NOT corrected for coordinated omission");
  rep.note("a round: " + std::to_string(o.workers) + " send_request() calls, then poll() until " + std::to_string(need) +
           " replies; CPU per million messages counts requests and replies");
  CpuMeter cpu;
  cpu.add("busbench (coordinator)", "wait=" + o.wait, {0});
  std::vector<pid_t> pids;
  for (auto& w : workers) pids.push_back(w.pid());
  cpu.add("workers (" + std::to_string(o.workers) + ", summed)", "wait=" + o.wait, pids);
  if (bus.pid() > 0) cpu.add("busd", "wait per busd config", {bus.pid()});

  std::vector<std::byte> msg(o.payload, std::byte{0x33});
  const uint64_t interval = o.rate > 0 ? static_cast<uint64_t>(1e9 / o.rate) : 0;
  const auto timeout = std::chrono::milliseconds(o.timeout_ms);
  const std::string row_name = "busd scatter " + std::to_string(need) + "/" + std::to_string(o.workers);
  uint64_t failed_rounds = 0;
  for (int run = 0; run < o.runs; ++run) {
    if (o.baseline) {
      progress(o, run, "raw baselines");
      run_rtt_baselines(rep, o, clk, std::min<uint64_t>(o.count ? o.count : 20'000, 20'000));
    }
    progress(o, run, "busd scatter rounds");
    Histogram h;
    uint64_t rounds = 0, measured = 0;
    const uint64_t count = o.duration_s > 0 && o.count == 0 ? UINT64_MAX : o.count;
    const double cap_s = o.duration_s > 0 ? o.duration_s : 60.0;
    cpu.start();
    const uint64_t start = clock::mono_ns();
    uint64_t measured_start = 0;
    uint64_t next = start;
    while (measured < count) {
      const bool warm = rounds >= o.warmup;
      if (warm && measured_start == 0) measured_start = clock::mono_ns();
      const uint64_t now = clock::mono_ns();
      if (warm && now - measured_start >= static_cast<uint64_t>(cap_s * 1e9)) break;
      if (interval != 0) {
        sleep_until_ns(next);
        next += interval;
      }
      got = errors = 0;
      first_id = UINT64_MAX;
      const uint64_t t0 = clk.now();
      bool send_failed = false;
      for (uint32_t i = 0; i < o.workers; ++i) {
        auto id = client->send_request(prefix + std::to_string(i), msg, timeout);
        if (!id) {
          send_failed = true;
          break;
        }
        if (i == 0) first_id = *id;
      }
      const uint64_t deadline = clock::mono_ns() + static_cast<uint64_t>(o.timeout_ms) * 1'000'000u;
      while (!send_failed && got < need && got + errors < o.workers && clock::mono_ns() < deadline) {
        (void)client->poll(std::chrono::nanoseconds(deadline - clock::mono_ns()));
      }
      const uint64_t t1 = clk.now();
      ++rounds;
      if (interval != 0 && clock::mono_ns() > next) next = clock::mono_ns();
      if (send_failed || got < need) {
        ++failed_rounds;
        if (client->state() != ConnectionState::Connected) break;
        continue;
      }
      if (!warm) continue;
      ++measured;
      const uint64_t lat = clk.to_ns(t1 - t0);
      if (interval != 0) {
        h.record_corrected(lat, interval);
      } else {
        h.record(lat);
      }
    }
    const double secs = static_cast<double>(clock::mono_ns() - (measured_start ? measured_start : start)) / 1e9;
    cpu.stop(rep, 2.0 * o.workers * static_cast<double>(rounds));
    auto& row = rep.latency(row_name, subjects_note, false);
    row.runs.push_back(summarize(h, secs));
    row.merged.add(h);
    if (bus.pid() > 0) rep.fact("busd RSS", "MiB", true).values.push_back(static_cast<double>(memory_of(bus.pid()).rss) / (1 << 20));
    if (!bus.alive()) throw std::runtime_error("busd died during the run");
    // Let the stragglers of the last quorum round arrive before the next run's baselines.
    (void)client->poll(std::chrono::milliseconds(1));
  }
  rep.fact("rounds failed (deadline or error)", "", true).values.push_back(static_cast<double>(failed_rounds));
  if (o.quorum > 0) rep.fact("replies after their round ended", "").values.push_back(late);
  client.reset();
  stop_all(workers, ctl_of);
  return finish(rep, o, failed_rounds > 0 ? 1 : 0);
}

}  // namespace bus::bench
