#include "bus_kit.hpp"

#include <time.h>
#include <unistd.h>

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
    auto r = c->poll(std::chrono::milliseconds(50));
    if (!r && c->state() != ConnectionState::Connected) {
      return agent_failed(ctl, name + ": " + std::string(errc_name(r.error())));
    }
  }
  return 0;
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
  t.busd_wait = o.busd_wait;
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
