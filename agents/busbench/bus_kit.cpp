#include "bus_kit.hpp"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "baselines.hpp"
#include "bus/clock.hpp"
#include "shm/wait.hpp"

namespace bus::bench {

std::unique_ptr<Client> connect_agent(const std::string& socket, const std::string& name, const std::string& wait,
                                      bool hop_timing) {
  ClientOptions co;
  co.name = name;
  co.address = socket;
  co.wait = wait;
  co.hop_timing = hop_timing;
  co.reconnect = false;  // a busd that goes away fails the run instead of skewing it
  co.connect_timeout = std::chrono::milliseconds(30'000);  // thousands may connect at once
  co.control_timeout = std::chrono::milliseconds(30'000);
  co.publish_timeout = std::chrono::milliseconds(10'000);
  auto c = Client::connect(co);
  if (!c) throw std::runtime_error("agent " + name + ": " + c.error().message());
  return std::move(*c);
}

int agent_failed(AgentCtl& ctl, const std::string& why) {
  put_text(ctl.error, why);
  ctl.failed.store(1);
  return 1;
}

int serve(const std::string& socket, const std::string& name, const std::string& subject, const std::string& group,
          const BusOptions& o, AgentCtl& ctl, const std::function<void(Client&, const Message&)>& handler,
          bool hop_timing) {
  pin_thread(pin_of(o, 1));
  std::unique_ptr<Client> c;
  try {
    c = connect_agent(socket, name, o.wait, hop_timing);
  } catch (const std::exception& e) {
    return agent_failed(ctl, e.what());
  }
  Client& self = *c;
  auto sub = c->subscribe(subject, [&](const Message& m) { handler(self, m); }, group);
  if (!sub) return agent_failed(ctl, "subscribe " + subject + ": " + sub.error().message());
  ctl.ready.store(1);
  while (ctl.stop.load(std::memory_order_relaxed) == 0) {
    const bool standby = ctl.standby.load(std::memory_order_acquire) != 0;
    if (ctl.standby_ack.load(std::memory_order_relaxed) != (standby ? 1 : 0)) {
      ctl.standby_ack.store(standby ? 1 : 0, std::memory_order_release);
    }
    if (standby) {
      // Something else is measured: sleep, and look at the control socket now and then (a short
      // poll answers busd's heartbeats) without spinning for long, whatever the wait strategy.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    auto r = standby ? c->poll(std::chrono::microseconds(100)) : c->poll(std::chrono::milliseconds(50));
    if (!r && c->state() != ConnectionState::Connected) {
      return agent_failed(ctl, name + ": " + std::string(errc_name(r.error())));
    }
  }
  return 0;
}

void set_standby(const std::vector<AgentCtl*>& ctls, bool on) {
  const int want = on ? 1 : 0;
  for (AgentCtl* c : ctls) c->standby.store(want, std::memory_order_release);
  const uint64_t end = clock::mono_ns() + 5'000'000'000ull;
  for (size_t i = 0; i < ctls.size(); ++i) {
    AgentCtl& c = *ctls[i];
    while (c.standby_ack.load(std::memory_order_acquire) != want) {
      const std::string who = "agent " + std::to_string(i + 1) + " of " + std::to_string(ctls.size());
      if (c.failed.load() != 0) throw std::runtime_error(who + ": " + c.error);
      if (clock::mono_ns() > end) {
        throw std::runtime_error(who + (on ? " did not go on standby" : " did not wake from standby") + " within 5 s");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
}

std::string Variant::row(const std::string& base) const {
  return label.empty() ? base : std::string(base).append(" (").append(label).append(")");
}

std::string Variant::hop(const std::string& what) const {
  return label.empty() ? what : std::string("[").append(label).append("] ").append(what);
}

std::vector<Variant> start_variants(const BusOptions& o) {
  std::vector<std::pair<int, std::string>> choice;
  if (o.lanes == "both") {
    choice = {{1, "lanes"}, {0, "no lanes"}};
  } else if (o.lanes == "on") {
    choice = {{1, "lanes"}};
  } else if (o.lanes == "off") {
    choice = {{0, "no lanes"}};
  } else if (o.lanes.empty()) {
    choice = {{-1, ""}};
  } else {
    throw std::runtime_error("--lanes " + o.lanes + ": on, off or both");
  }
  std::vector<Variant> vars;
  for (const auto& [lanes, label] : choice) {
    TargetOptions t = target_options(o);
    t.lanes = lanes;
    // With two busd, one sits idle while the other is measured (a --duration run may take
    // minutes), and busbench's client of the idle one reads its control socket only when used:
    // busd must not take its silence for a death.
    if (choice.size() > 1) t.heartbeat_misses = 1000;
    vars.push_back(Variant{lanes, label, std::make_unique<BusTarget>(t)});
  }
  return vars;
}

std::vector<size_t> run_order(size_t n, int run) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = run % 2 == 0 ? i : n - 1 - i;
  return order;
}

double lane_share(const Client::Stats& before, const Client::Stats& after) {
  const uint64_t sent = after.published - before.published;
  if (sent == 0) return -1;
  const uint64_t lane = after.lane_sent - before.lane_sent;
  return std::min(1.0, static_cast<double>(lane) / static_cast<double>(sent));
}

std::string lane_use_note(const Variant& v, double share) {
  if (v.lanes == 1 && share == 0) {
    return v.row("busd") +
           ": busbench sent no message over a lane (this busd and libbus do not open lanes yet, or the flow "
           "did not qualify): its rows measure the path through busd";
  }
  if (v.lanes == 0 && share > 0) return v.row("busd") + ": messages went over lanes although its config says lanes = false";
  return {};
}

void plan_waits(BusOptions& o, const std::string& scenario, uint32_t agents, const std::string& agents_what,
                size_t busds, bool capped) {
  constexpr double kSlowCapS = 5;
  auto kind_of = [](const std::string& option, const std::string& w) {
    auto k = shm::parse_wait_strategy(w);
    if (!k) throw std::runtime_error(option + " " + w + ": " + k.error().message());
    return k->kind;
  };
  const auto cpus = static_cast<uint64_t>(std::max(1, online_cpus()));
  const bool private_busd = o.address.empty();
  const uint64_t spinning = kind_of("--wait", o.wait) == shm::WaitKind::Spin ? 1 + uint64_t{agents} : 0;
  const bool busd_given = !o.busd_wait.empty();
  const bool busd_spins = private_busd && busd_given && kind_of("--busd-wait", o.busd_wait) == shm::WaitKind::Spin;
  // --dpdk-idle busy: the DPDK link's two busd poll their ports without ever sleeping.
  const uint64_t pollers = o.transport == "dpdk" && o.dpdk_idle == "busy" ? 2 : 0;
  const uint64_t spinners = spinning + (busd_spins ? busds : 0) + pollers;
  const uint64_t busy = spinning + pollers;  // what busd competes with unless it spins too
  const std::string on_cpus = " on " + std::to_string(cpus) + " CPU" + (cpus == 1 ? "" : "s");
  const std::string pollers_what = std::to_string(pollers) + " DPDK port poll threads (--dpdk-idle busy)";
  std::string filling;  // "busbench's 2 spinning parties", "the 2 DPDK port poll threads (--dpdk-idle busy)"
  if (spinning > 0) filling.append("busbench's ").append(std::to_string(spinning)).append(spinning == 1 ? " spinning party" : " spinning parties");
  if (pollers > 0) filling.append(spinning > 0 ? " and " : "").append("the ").append(pollers_what);
  // Round trips and rounds wait for each hand-over; a stream moves in bursts, and pubsub's and
  // agents' runs are bounded already (a burst gives up after 30 s, agents run for --duration).
  const std::string cap_note = capped ? "; each run stops after " + num(kSlowCapS) + " s" : std::string();
  const std::string slow = capped ? "milliseconds per message" : "messages move in bursts, one per tick";
  if (spinners > cpus) {
    std::string parties;
    auto add = [&parties](const std::string& p) { parties.append(parties.empty() ? "" : ", ").append(p); };
    if (spinning > 0) add("busbench");
    if (spinning > 1) add(agents_what);
    if (busd_spins) add(busds > 1 ? std::to_string(busds) + " busd" : std::string("busd"));
    if (pollers > 0) add(pollers_what);
    const std::string what = std::to_string(spinners) + " busy-spinning parties (" + parties + ")" + on_cpus;
    if (!o.force_spin) {
      throw std::runtime_error(scenario + ": " + what +
                               " would take turns once per scheduler tick (" + slow + "). Use --wait adaptive (the "
                               "default) or block" +
                               (busd_spins ? std::string(", a --busd-wait other than spin") : std::string()) +
                               (pollers > 0 ? std::string(", --dpdk-idle adaptive") : std::string()) +
                               (agents > 1 ? ", fewer agents" : "") + ", or --force-spin to measure it anyway" +
                               (capped ? " (each run is then capped at " + num(kSlowCapS) + " s)" : std::string()));
    }
    if (capped) o.slow_cap_s = kSlowCapS;
    o.wait_notes.push_back("--force-spin: " + what + " take turns once per scheduler tick (" + slow + ")" + cap_note);
  }
  if (!busd_given) {
    o.busd_wait = "adaptive";
    if (private_busd && busy >= cpus) {
      o.busd_wait = "block";
      o.wait_notes.push_back("busd wait=block (chosen: no --busd-wait): " + filling + " fill the " +
                             std::to_string(cpus) + " CPUs, so busd runs when a message wakes it; a busd that "
                             "spins or waits adaptively would get a CPU once per scheduler tick (" + slow + ")");
    }
    return;
  }
  if (busy >= cpus && spinners <= cpus) {
    if (capped) o.slow_cap_s = kSlowCapS;
    o.wait_notes.push_back(
        (private_busd ? "busd wait=" + o.busd_wait + " (--busd-wait)" : std::string("the busd at --address waits per its config")) +
        " while " + filling + " fill the " + std::to_string(cpus) +
        " CPUs: unless busd blocks, it gets a CPU once per scheduler tick (" + slow +
        (private_busd ? "; without --busd-wait busbench picks block" : "") + ")" + cap_note);
  }
}

int serve_echo(const std::string& socket, const std::string& name, const std::string& subject, const std::string& group,
               const BusOptions& o, AgentCtl& ctl) {
  return serve(socket, name, subject, group, o, ctl, [&ctl](Client& c, const Message& m) {
    if (!c.reply(m, m.payload())) ctl.errors.fetch_add(1, std::memory_order_relaxed);
    ctl.count.fetch_add(1, std::memory_order_relaxed);
  });
}

void wait_ready(AgentCtl& ctl, Child& child, const std::string& what, int ms) {
  const uint64_t end = clock::mono_ns() + static_cast<uint64_t>(ms) * 1'000'000u;
  while (ctl.ready.load() == 0) {
    if (ctl.failed.load() != 0) throw std::runtime_error(what + ": " + ctl.error);
    if (!child.alive()) throw std::runtime_error(what + " exited before it was ready" + (ctl.error[0] ? std::string(": ") + ctl.error : ""));
    if (clock::mono_ns() > end) throw std::runtime_error(what + " not ready after " + std::to_string(ms) + " ms");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

void stop_agents(std::vector<AgentCtl*> ctls, std::vector<Child*> children) {
  for (AgentCtl* c : ctls) c->stop.store(1);
  const uint64_t end = clock::mono_ns() + 3'000'000'000ull;
  for (Child* ch : children) {
    const uint64_t now = clock::mono_ns();
    const int left = now < end ? static_cast<int>((end - now) / 1'000'000u) : 0;
    if (ch->wait(left) < 0) ch->kill();
  }
}

TargetOptions target_options(const BusOptions& o) {
  TargetOptions t;
  t.address = o.address;
  t.transport = o.transport;
  t.busd_bin = o.busd_bin;
  t.busd_wait = o.busd_wait.empty() ? "adaptive" : o.busd_wait;  // plan_waits() settles it first
  t.busd_cpu = pin_of(o, 2);
  t.quiet = o.quiet;
  return t;
}

std::vector<Child> start_agents(size_t n, const std::string& what, const std::function<AgentCtl&(size_t)>& ctl,
                                const std::function<int(size_t)>& body, int ready_ms) {
  std::vector<Child> kids;
  kids.reserve(n);
  for (size_t i = 0; i < n; ++i) kids.push_back(Child::fork([&body, i] { return body(i); }));
  for (size_t i = 0; i < n; ++i) wait_ready(ctl(i), kids[i], what + " " + std::to_string(i), ready_ms);
  return kids;
}

void stop_all(std::vector<Child>& children, const std::function<AgentCtl&(size_t)>& ctl) {
  std::vector<AgentCtl*> ctls;
  std::vector<Child*> kids;
  for (size_t i = 0; i < children.size(); ++i) {
    ctls.push_back(&ctl(i));
    kids.push_back(&children[i]);
  }
  stop_agents(ctls, kids);
}

std::string subject_prefix() { return "busbench." + std::to_string(::getpid()); }

void CpuMeter::add(const std::string& name, const std::string& note, std::vector<pid_t> pids) {
  entries_.push_back(Entry{name, note, std::move(pids), 0});
}

double CpuMeter::total(const Entry& e) const {
  double t = 0;
  for (pid_t p : e.pids) {
    const double s = p == 0 ? self_cpu_seconds() : cpu_seconds(p);
    if (s > 0) t += s;
  }
  return t;
}

void CpuMeter::start() {
  for (auto& e : entries_) e.at_start = total(e);
}

void CpuMeter::stop(Report& rep, double messages) {
  if (messages <= 0) return;
  for (auto& e : entries_) {
    rep.process(e.name, e.note).cpu_s_per_million.push_back((total(e) - e.at_start) / messages * 1e6);
  }
}

int pin_of(const BusOptions& o, size_t i) { return i < o.pin.size() ? o.pin[i] : -1; }

void run_rtt_baselines(Report& rep, const BusOptions& o, const Clock& clk, uint64_t rounds) {
  // Each baseline pins its own sides and gives the calling thread its affinity back.
  const bool two = online_cpus() >= 2;
  RttParams p;
  p.payload = o.payload;
  p.rounds = rounds;
  p.warmup = std::max<uint64_t>(rounds / 10, 100);
  // The cache-line floor needs its two threads on two CPUs; the sleeping baselines run where
  // the scheduler puts them, as busd and its agents do (unless --pin says otherwise).
  {
    RttParams c = p;
    c.rounds = rounds * 5;  // ~0.2 us a trip: more of them for a stable figure
    c.cpu_a = pin_of(o, 0) >= 0 ? pin_of(o, 0) : (two ? 0 : -1);
    c.cpu_b = pin_of(o, 1) >= 0 ? pin_of(o, 1) : (two ? 1 : -1);
    Histogram h;
    const double secs = rtt_cacheline(c, clk, h);
    auto& row = rep.latency("cache line ping-pong", "two threads, one atomic word, spin, cpus " +
                                                        std::to_string(c.cpu_a) + "," + std::to_string(c.cpu_b) +
                                                        ": the floor for a shared-memory round trip", true);
    row.runs.push_back(summarize(h, secs));
    row.merged.add(h);
  }
  p.cpu_a = pin_of(o, 0);
  p.cpu_b = pin_of(o, 1);
  {
    Histogram h;
    const double secs = rtt_eventfd(p, clk, h);
    auto& row = rep.latency("eventfd wake ping-pong", "two processes, blocking read on an eventfd each way: "
                                                      "the floor for a round trip that sleeps", true);
    row.runs.push_back(summarize(h, secs));
    row.merged.add(h);
  }
  {
    Histogram h;
    const double secs = rtt_tcp(p, clk, h);
    auto& row = rep.latency("TCP loopback ping-pong", "two processes, 127.0.0.1, TCP_NODELAY, blocking, " +
                                                      std::to_string(o.payload) + " B each way", true);
    row.runs.push_back(summarize(h, secs));
    row.merged.add(h);
  }
}

void progress(const BusOptions& o, int run, const char* what) {
  if (!o.quiet) std::fprintf(stderr, "\r  run %d/%d: %-40s", run + 1, o.runs, what);
}

int finish(const Report& rep, const BusOptions& o, int rc) {
  if (!o.quiet) std::fprintf(stderr, "\r%70s\r", "");
  rep.print(stdout);
  if (!o.json.empty() && !rep.write_json(o.json)) {
    std::fprintf(stderr, "busbench: cannot write %s: %s\n", o.json.c_str(), std::strerror(errno));
    rc = 1;
  }
  if (!o.hgrm_dir.empty() && !rep.write_hgrm(o.hgrm_dir)) {
    std::fprintf(stderr, "busbench: cannot write .hgrm files in %s\n", o.hgrm_dir.c_str());
    rc = 1;
  }
  if (!o.plot.empty() && !rep.write_plot(o.plot)) {
    std::fprintf(stderr, "busbench: cannot write %s: %s\n", o.plot.c_str(), std::strerror(errno));
    rc = 1;
  }
  return rc;
}

std::string who_waits(const BusOptions& o, const BusTarget& bus, const std::string& peers) {
  auto pin = [&](size_t i) { return pin_of(o, i) >= 0 ? ", cpu " + std::to_string(pin_of(o, i)) : ""; };
  return "  busbench: wait=" + o.wait + pin(0) + "; " + peers + ": wait=" + o.wait + pin(1) + "; busd: " +
         bus.describe();
}

std::string who_waits(const BusOptions& o, const std::vector<Variant>& vars, const std::string& peers) {
  if (vars.size() == 1) return who_waits(o, *vars[0].bus, peers);
  auto pin = [&](size_t i) { return pin_of(o, i) >= 0 ? ", cpu " + std::to_string(pin_of(o, i)) : ""; };
  std::string s = "  busbench: wait=" + o.wait + pin(0) + "; " + peers + " (one set per busd): wait=" + o.wait + pin(1);
  for (const auto& v : vars) s.append("\n  ").append(v.row("busd")).append(": ").append(v.bus->describe());
  return s;
}

std::string num(double v) {
  char b[48];
  std::snprintf(b, sizeof b, "%.3f", v);
  std::string s = b;
  while (!s.empty() && s.back() == '0') s.pop_back();  // "10.000" -> "10", "0.500" -> "0.5"
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

void sleep_until_ns(uint64_t t_ns) {
  for (;;) {
    const uint64_t now = clock::mono_ns();
    if (now >= t_ns) return;
    if (t_ns - now < 50'000) {
      shm::cpu_relax();
      continue;
    }
    const uint64_t wake = t_ns - 30'000;  // wake a little early, spin the rest
    timespec ts{static_cast<time_t>(wake / 1'000'000'000u), static_cast<long>(wake % 1'000'000'000u)};
    ::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
  }
}

}  // namespace bus::bench
