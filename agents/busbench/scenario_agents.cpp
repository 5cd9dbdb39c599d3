// busbench agents: K agent processes (up to thousands) connected to busd at once, each sending
// requests at a fixed rate (open loop, coordinated omission corrected) to a queue group of
// service processes: latency percentiles over all of them, busd's RSS and CPU, and the
// requests left unanswered (which must be none).
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "bus/clock.hpp"
#include "bus_kit.hpp"

namespace bus::bench {
namespace {

constexpr size_t kMaxPairs = 512;  // distinct histogram buckets one agent hands back

struct Go {
  std::atomic<uint32_t> seq{0};      // run number; agents start run `seq` at start_ns
  std::atomic<uint64_t> start_ns{0};
  std::atomic<uint64_t> window_ns{0};
};

struct AgentSlot {
  AgentCtl ctl;
  std::atomic<uint32_t> done_seq{0};  // the run this agent has reported
  uint64_t sent = 0, answered = 0, failed = 0, lost_samples = 0;
  uint32_t pairs = 0;
  uint64_t value[kMaxPairs];
  uint64_t count[kMaxPairs];
  char first_error[120];
};

int agent_main(const std::string& socket, const std::string& subject, int index, const BusOptions& o, const Go& go,
               AgentSlot& slot) {
  std::unique_ptr<Client> c;
  try {
    c = connect_agent(socket, "busbench-a" + std::to_string(index) + "-" + std::to_string(::getppid()), o.wait);
  } catch (const std::exception& e) {
    return agent_failed(slot.ctl, e.what());
  }
  slot.ctl.ready.store(1);
  std::vector<std::byte> msg(o.payload, std::byte{0x77});
  const uint64_t interval = static_cast<uint64_t>(1e9 / o.agent_rate);
  std::mt19937_64 rng(static_cast<uint64_t>(index) * 7919u + 1);
  uint32_t done = 0;
  while (slot.ctl.stop.load(std::memory_order_relaxed) == 0) {
    if (go.seq.load(std::memory_order_acquire) == done) {
      // Between runs: keep answering heartbeats, sleep mostly.
      (void)c->poll(std::chrono::milliseconds(100));
      continue;
    }
    const uint32_t run = go.seq.load(std::memory_order_acquire);
    Histogram h(60'000'000'000ull, 2);
    uint64_t sent = 0, answered = 0, failed = 0;
    std::string first_error;
    // Spread the agents' sends over the interval: they are independent, not synchronised.
    uint64_t next = go.start_ns.load() + rng() % interval;
    const uint64_t end = go.start_ns.load() + go.window_ns.load();
    while (next < end && slot.ctl.stop.load(std::memory_order_relaxed) == 0) {
      while (clock::mono_ns() + 20'000'000 < next) (void)c->poll(std::chrono::nanoseconds(next - clock::mono_ns() - 10'000'000));
      sleep_until_ns(next);
      next += interval;
      const uint64_t t0 = clock::mono_ns();
      auto r = c->request(subject, msg, std::chrono::milliseconds(o.timeout_ms));
      const uint64_t t1 = clock::mono_ns();
      ++sent;
      if (!r) {
        ++failed;
        if (first_error.empty()) first_error = r.error().message();
        continue;
      }
      ++answered;
      h.record_corrected(t1 - t0, interval);
      if (t1 > next) next = t1;  // late: the next request leaves now (HdrHistogram-style)
    }
    slot.sent = sent;
    slot.answered = answered;
    slot.failed = failed;
    put_text(slot.first_error, first_error);
    uint32_t n = 0;
    uint64_t lost = 0;
    h.for_each_bucket([&](uint64_t v, uint64_t k) {
      if (n < kMaxPairs) {
        slot.value[n] = v;
        slot.count[n] = k;
        ++n;
      } else {
        lost += k;
      }
    });
    slot.pairs = n;
    slot.lost_samples = lost;
    done = run;
    slot.done_seq.store(run, std::memory_order_release);
  }
  return 0;
}

}  // namespace

int run_agents(const BusOptions& o) {
  if (o.agents < 1 || o.agents > 100'000) throw std::runtime_error("--agents must be 1..100000");
  if (o.services < 1 || o.services > 64) throw std::runtime_error("--services must be 1..64");
  if (o.agent_rate <= 0) throw std::runtime_error("--agent-rate must be positive");
  const double window_s = o.duration_s > 0 ? o.duration_s : 10.0;
  TargetOptions to = target_options(o);
  to.agents = o.agents + o.services + 8;  // room for busctl and friends
  BusTarget bus(to);
  const std::string subject = subject_prefix() + ".svc";

  Shared<AgentCtl> sctl(o.services);
  Shared<Go> go(1);
  Shared<AgentSlot> slots(o.agents);
  auto sctl_of = [&](size_t i) -> AgentCtl& { return sctl[i]; };
  auto actl_of = [&](size_t i) -> AgentCtl& { return slots[i].ctl; };
  std::vector<Child> services = start_agents(o.services, "service", sctl_of, [&](size_t i) {
    return serve_echo(bus.socket(), "busbench-svc" + std::to_string(i) + "-" + std::to_string(::getppid()), subject,
                      "svc", o, sctl[i]);
  });
  const uint64_t t_connect = clock::mono_ns();
  if (!o.quiet) std::fprintf(stderr, "\r  starting %u agents", o.agents);
  std::vector<Child> agents = start_agents(
      o.agents, "agent", actl_of,
      [&](size_t i) { return agent_main(bus.socket(), subject, static_cast<int>(i), o, *go.get(), slots[i]); }, 120'000);
  const double connect_s = static_cast<double>(clock::mono_ns() - t_connect) / 1e9;

  const std::string header =
      "busbench agents: " + std::to_string(o.agents) + " agent processes, each " + num(o.agent_rate) +
      " requests/s (open loop) to a queue group of " + std::to_string(o.services) + " service processes, " +
      std::to_string(o.payload) + " B payload, " + num(window_s) + " s x " + std::to_string(o.runs) +
      " runs\n" + who_waits(o, bus, "agents and services") + "\n  clock CLOCK_MONOTONIC in each agent";
  Report rep("agents", header);
  for (const auto& n : o.wait_notes) rep.note(n);
  rep.set_latency_unit("request");
  rep.note("open loop per agent: coordinated omission corrected (HdrHistogram expected interval " +
           num(1000.0 / o.agent_rate) + " ms); agents keep 2 significant digits");
  rep.note("all " + std::to_string(o.agents) + " agents connected in " + num(connect_s) + " s");
  CpuMeter cpu;
  if (bus.pid() > 0) cpu.add("busd", "wait per busd config", {bus.pid()});
  std::vector<pid_t> spids, apids;
  for (auto& s : services) spids.push_back(s.pid());
  for (auto& a : agents) apids.push_back(a.pid());
  cpu.add("services (" + std::to_string(o.services) + ", summed)", "wait=" + o.wait, spids);
  cpu.add("agents (" + std::to_string(o.agents) + ", summed)", "wait=" + o.wait, apids);

  uint64_t unanswered_total = 0;
  std::string first_error;
  for (int run = 0; run < o.runs; ++run) {
    progress(o, run, "agents sending");
    const uint64_t window = static_cast<uint64_t>(window_s * 1e9);
    go->start_ns.store(clock::mono_ns() + 500'000'000);  // everyone sees the go (they poll every 100 ms) first
    go->window_ns.store(window);
    cpu.start();
    go->seq.store(static_cast<uint32_t>(run + 1), std::memory_order_release);
    sleep_until_ns(go->start_ns.load() + window);
    // Wait for every agent's report (its last request may still be in flight until its timeout).
    const uint64_t give_up = clock::mono_ns() + static_cast<uint64_t>(o.timeout_ms) * 1'000'000u + 30'000'000'000ull;
    for (uint32_t i = 0; i < o.agents; ++i) {
      while (slots[i].done_seq.load(std::memory_order_acquire) != static_cast<uint32_t>(run + 1)) {
        if (clock::mono_ns() > give_up || !agents[i].alive()) {
          throw std::runtime_error("agent " + std::to_string(i) + " did not report" +
                                   (slots[i].ctl.error[0] ? std::string(": ") + slots[i].ctl.error : ""));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    Histogram h;
    uint64_t sent = 0, answered = 0, failed = 0, lost = 0;
    for (uint32_t i = 0; i < o.agents; ++i) {
      const AgentSlot& s = slots[i];
      for (uint32_t k = 0; k < s.pairs; ++k) h.record_n(s.value[k], s.count[k]);
      sent += s.sent;
      answered += s.answered;
      failed += s.failed;
      lost += s.lost_samples;
      if (first_error.empty() && s.first_error[0] != '\0') first_error = s.first_error;
    }
    cpu.stop(rep, 2.0 * static_cast<double>(sent));
    auto& row = rep.latency("busd request/reply, " + std::to_string(o.agents) + " agents", "all agents' requests", false);
    LatencySummary sum = summarize(h, window_s);
    sum.ops_per_s = static_cast<double>(answered) / window_s;  // requests answered per second, not samples
    row.runs.push_back(sum);
    row.merged.add(h);
    rep.fact("requests sent", "").values.push_back(static_cast<double>(sent));
    // A request is answered, or failed (timeout, error): nothing else.
    if (sent != answered + failed) throw std::runtime_error("agent counts disagree: sent != answered + failed");
    rep.fact("requests unanswered (must be 0)", "", true).values.push_back(static_cast<double>(failed));
    unanswered_total += failed;
    if (lost > 0) rep.fact("samples not handed back (agent slot full)", "", true).values.push_back(static_cast<double>(lost));
    if (bus.pid() > 0) {
      const Memory m = memory_of(bus.pid());
      rep.fact("busd RSS", "MiB", true).values.push_back(static_cast<double>(m.rss) / (1 << 20));
      rep.fact("busd peak RSS", "MiB", true).values.push_back(static_cast<double>(m.peak) / (1 << 20));
    }
    if (!bus.alive()) throw std::runtime_error("busd died during the run");
  }
  stop_all(services, sctl_of);
  stop_all(agents, actl_of);
  if (unanswered_total > 0) std::fprintf(stderr, "busbench: %llu requests unanswered; first error: %s\n",
                                         static_cast<unsigned long long>(unanswered_total), first_error.c_str());
  return finish(rep, o, unanswered_total > 0 ? 1 : 0);
}

}  // namespace bus::bench
