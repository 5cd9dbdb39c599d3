// busbench pingpong and loaded: request/reply round trips between busbench (the requester)
// and a responder process through busd, interleaved run by run with the raw baselines, and
// (loaded) with a background publisher pushing a chosen rate through the same busd.
//
// Per-hop breakdown: requests and replies carry Flags::Timed, so busd writes into each copy how
// long the message took to reach it and how long it held it; the responder echoes the request's
// times at the front of its reply (payloads of 24 B or more).
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <optional>
#include <thread>

#include "bus/clock.hpp"
#include "bus/envelope.hpp"
#include "scenario_kit.hpp"

namespace bus::bench {

// ---- the responder process
int responder_main(const std::string& socket, const std::string& subject, const BusOptions& o, AgentCtl& ctl) {
  std::vector<std::byte> out(o.payload);
  return serve(socket, "busbench-responder-" + std::to_string(::getppid()), subject, "", o, ctl,
               [&](Client& c, const Message& m) {
                 const uint64_t now = o.hops ? clock::mono_ns() : 0;  // --no-hops: no clock read on the path
                 if (const uint32_t stall = ctl.stall_ms.exchange(0); stall != 0) {
                   std::this_thread::sleep_for(std::chrono::milliseconds(stall));
                 }
                 const auto in = m.payload();
                 out.resize(in.size());
                 if (!in.empty()) std::memcpy(out.data(), in.data(), in.size());
                 if (o.hops && in.size() >= kEcho) {
                   const auto t = hop_timing(m.envelope().header()).value_or(HopTiming{});
                   const Echo e{m.envelope().header().timestamp_ns(), now, t.to_busd_ns, t.in_busd_ns};
                   std::memcpy(out.data(), &e, sizeof e);
                 }
                 if (!c.reply(m, out)) ctl.errors.fetch_add(1, std::memory_order_relaxed);
                 ctl.count.fetch_add(1, std::memory_order_relaxed);
               },
               o.hops);
}

namespace {

// ---- the background publisher and its sink (loaded)
int load_publisher_main(const std::string& socket, const std::string& subject, const BusOptions& o, AgentCtl& ctl) {
  std::unique_ptr<Client> c;
  try {
    c = connect_agent(socket, "busbench-load-" + std::to_string(::getppid()), o.wait);
  } catch (const std::exception& e) {
    return agent_failed(ctl, e.what());
  }
  ctl.ready.store(1);
  std::vector<std::byte> msg(o.payload, std::byte{0x11});
  constexpr uint64_t kTickNs = 1'000'000;  // publish each millisecond's share as one batch
  const double per_tick = o.load_rate * static_cast<double>(kTickNs) / 1e9;
  double owed = 0;
  uint64_t next = clock::mono_ns();
  while (ctl.stop.load(std::memory_order_relaxed) == 0) {
    next += kTickNs;
    sleep_until_ns(next);
    const uint64_t now = clock::mono_ns();
    if (now > next + 100 * kTickNs) next = now;  // far behind (paused, descheduled): re-anchor
    if (ctl.pause.load(std::memory_order_relaxed) != 0) {
      owed = 0;
      continue;
    }
    owed += per_tick;
    uint64_t n = 0;
    for (; owed >= 1; owed -= 1, ++n) {
      if (!c->publish(subject, msg, Flush::Later)) {
        ctl.errors.fetch_add(1, std::memory_order_relaxed);
        break;
      }
    }
    c->flush();
    ctl.count.fetch_add(n, std::memory_order_relaxed);
  }
  return 0;
}

int sink_main(const std::string& socket, const std::string& subject, const BusOptions& o, AgentCtl& ctl) {
  return serve(socket, "busbench-sink-" + std::to_string(::getppid()), subject, "", o, ctl,
               [&ctl](Client&, const Message&) { ctl.count.fetch_add(1, std::memory_order_relaxed); });
}

// ---- one measured run of round trips
constexpr int kHops = 7;
const char* const kHopNames[kHops] = {
    "request: busbench -> busd",  "request: held in busd", "request: busd -> responder",
    "responder: receive -> reply", "reply: responder -> busd", "reply: held in busd",
    "reply: busd -> busbench"};
// Round trips that went over a lane both ways: busd wrote no hop times into them.
constexpr int kLaneHops = 3;
const char* const kLaneHopNames[kLaneHops] = {
    "lane: busbench -> responder", "lane: responder receive -> reply", "lane: responder -> busbench"};

struct Hops {
  std::vector<Histogram> busd = std::vector<Histogram>(kHops);      // trips through busd both ways
  std::vector<Histogram> lane = std::vector<Histogram>(kLaneHops);  // trips over a lane both ways
};

// One busd: each message's hop times are busd's own stamps, the rest by difference. A message
// that went over a lane carries Flags::Timed with no times in it (busd never saw it).
void record_hops(Hops& h, const TripTimes& t) {
  const Echo& e = t.request;
  if (!t.reply_timing || e.received_ns < e.request_ts) return;
  const bool request_via_busd = e.to_busd_ns != 0 || e.in_busd_ns != 0;
  const bool reply_via_busd = t.reply_timing->to_busd_ns != 0 || t.reply_timing->in_busd_ns != 0;
  auto d = [](uint64_t a, uint64_t b) { return a > b ? a - b : 0; };
  if (!request_via_busd && !reply_via_busd) {
    h.lane[0].record(e.received_ns - e.request_ts);
    h.lane[1].record(d(t.reply_ts, e.received_ns));
    h.lane[2].record(d(t.back_ns, t.reply_ts));
    return;
  }
  if (!request_via_busd || !reply_via_busd) return;  // one way each (a lane opening or closing): not split
  const uint64_t req_at_busd_out = e.request_ts + e.to_busd_ns + e.in_busd_ns;
  const uint64_t rep_at_busd_out = t.reply_ts + t.reply_timing->to_busd_ns + t.reply_timing->in_busd_ns;
  h.busd[0].record(e.to_busd_ns);
  h.busd[1].record(e.in_busd_ns);
  h.busd[2].record(d(e.received_ns, req_at_busd_out));
  h.busd[3].record(d(t.reply_ts, e.received_ns));
  h.busd[4].record(t.reply_timing->to_busd_ns);
  h.busd[5].record(t.reply_timing->in_busd_ns);
  h.busd[6].record(d(t.back_ns, rep_at_busd_out));
}

}  // namespace

RunResult measure(Client& c, const std::string& subject, const BusOptions& o, const Clock& clk, const TripSink* hops,
                  AgentCtl* stall_ctl) {
  RunResult res;
  std::vector<std::byte> msg(o.payload, std::byte{0x42});
  const uint64_t interval = o.rate > 0 ? static_cast<uint64_t>(1e9 / o.rate) : 0;
  const auto timeout = std::chrono::milliseconds(o.timeout_ms);
  const uint64_t count = o.duration_s > 0 && o.count == 0 ? UINT64_MAX : o.count;
  double cap_s = o.duration_s > 0 ? o.duration_s : 60.0;  // every run stops by itself
  if (o.slow_cap_s > 0) cap_s = std::min(cap_s, o.slow_cap_s);
  const uint64_t start = clock::mono_ns();
  // A set-up known to be slow (plan_waits) warms up for at most half its cap.
  const uint64_t warm_ns = o.slow_cap_s > 0 ? static_cast<uint64_t>(o.slow_cap_s * 0.5e9) : o.warmup * 1'000'000u;
  const uint64_t warm_until = o.slow_cap_s > 0 ? start + warm_ns : UINT64_MAX;
  const uint64_t end = start + static_cast<uint64_t>(cap_s * 1e9) + warm_ns;
  uint64_t next = start;
  uint64_t measured_start = 0;
  uint64_t measured = 0;
  bool warm = false;
  for (uint64_t i = 0; measured < count; ++i) {
    if (!warm) warm = i >= o.warmup || clock::mono_ns() >= warm_until;
    if (warm && measured_start == 0) measured_start = clock::mono_ns();
    if (warm && o.duration_s > 0 && clock::mono_ns() - measured_start >= static_cast<uint64_t>(o.duration_s * 1e9)) break;
    if (clock::mono_ns() > end) break;
    if (interval != 0) {
      sleep_until_ns(next);
      next += interval;
    }
    if (stall_ctl != nullptr && warm && measured == count / 2 && count != UINT64_MAX) {
      stall_ctl->stall_ms.store(o.stall_ms);
      stall_ctl = nullptr;
    }
    const uint64_t t0 = clk.now();
    auto r = c.request(subject, msg, timeout);
    const uint64_t t1 = clk.now();
    const uint64_t back = clock::mono_ns();
    ++res.trips;
    if (!r) {
      ++res.failed;
      if (res.first_error.empty()) res.first_error = r.error().message();
      if (r.error().code() == Errc::Closed) break;
      continue;
    }
    if (interval != 0) {
      // Open loop, HdrHistogram-style: the schedule is re-anchored after a late reply, and the
      // requests that would have been sent meanwhile are recorded by record_corrected.
      if (back > next) next = back;
    }
    if (!warm) continue;
    ++measured;
    const uint64_t lat = clk.to_ns(t1 - t0);
    if (interval != 0) {
      res.h.record_corrected(lat, interval);
    } else {
      res.h.record(lat);
    }
    if (hops != nullptr && r->payload().size() >= kEcho) {
      TripTimes t;
      std::memcpy(&t.request, r->payload().data(), sizeof t.request);
      const auto& rh = r->envelope().header();
      t.reply_ts = rh.timestamp_ns();
      t.reply_timing = hop_timing(rh);
      t.back_ns = back;
      (*hops)(t);
    }
  }
  res.seconds = static_cast<double>(clock::mono_ns() - (measured_start ? measured_start : start)) / 1e9;
  res.total_seconds = static_cast<double>(clock::mono_ns() - start) / 1e9;
  return res;
}

void add_run(Report& rep, const std::string& name, const std::string& note, bool baseline, const RunResult& r) {
  auto& row = rep.latency(name, note, baseline);
  row.runs.push_back(summarize(r.h, r.seconds));
  row.merged.add(r.h);
}

std::string loop_note(const BusOptions& o) {
  if (o.rate > 0) {
    char b[200];
    std::snprintf(b, sizeof b,
                  "open loop at %.0f/s: coordinated omission corrected as HdrHistogram does "
                  "(recordValueWithExpectedInterval, interval %.1f us)",
                  o.rate, 1e6 / o.rate);
    return b;
  }
  return "closed loop (the next request leaves when the reply is back): NOT corrected for coordinated omission; "
         "a stall shows in max only (use --rate R for an open-loop run)";
}

void add_hops(Report& rep, const std::vector<std::string>& names, const std::vector<Histogram>& h, double seconds) {
  for (size_t k = 0; k < names.size() && k < h.size(); ++k) {
    auto& row = rep.hop(names[k]);
    row.runs.push_back(summarize(h[k], seconds));
    row.merged.add(h[k]);
  }
}

namespace {

// The [lanes] issue's pingpong targets, per variant, from the same-run ratios.
void add_targets(Report& rep, const BusOptions& o, const std::vector<Variant>& vars, const std::string& bus_row) {
  const auto& rows = rep.latency_rows();
  auto find = [&](const std::string& name) -> const LatencyRow* {
    for (const auto& r : rows) {
      if (r.name == name) return &r;
    }
    return nullptr;
  };
  const auto kind = shm::parse_wait_strategy(o.wait);
  const bool spin = kind && kind->kind == shm::WaitKind::Spin;
  const bool adaptive = kind && kind->kind == shm::WaitKind::Adaptive;
  const LatencyRow* cache = find("cache line ping-pong");
  const LatencyRow* wake = find("eventfd wake ping-pong");
  const bool pinned = pin_of(o, 0) >= 0 && pin_of(o, 1) >= 0 && pin_of(o, 0) != pin_of(o, 1);
  std::string setup;  // how this run differs from the set-up ("" = it does not)
  auto differs = [&setup](const std::string& what) { setup.append(setup.empty() ? "" : ", ").append(what); };
  if (o.payload != 64) differs("payload " + std::to_string(o.payload) + " B, not 64 B");
  if (spin && !pinned) differs("busbench and the responder not pinned to two CPUs (--pin 0,1)");
  if (o.rate > 0) differs("open loop (--rate)");
  for (const auto& v : vars) {
    const LatencyRow* bus = find(v.row(bus_row));
    if (bus == nullptr) continue;
    const std::string why_not = measured_any(*bus) ? setup : "nothing measured (see the notes)";
    TargetLine t;
    t.variant = v.label;
    t.unit = "x";
    // The targets are for lanes; the busd at --address (lanes not chosen) is judged too. The
    // busd without lanes gets the same lines without a target, for comparison.
    const bool for_lanes = v.lanes != 0;
    auto judge = [&](double limit, const std::string& why) {
      t.limit = for_lanes ? limit : 0;
      t.judged = for_lanes && why.empty();
      t.note = for_lanes ? why : "for comparison; the target (\u2264 " + num(limit) + "x) is for lanes";
    };
    if (spin && cache != nullptr) {
      t.name = "pingpong spin, " + v.row("busd") + ": p50";
      t.of = "cache line";
      t.value = same_run_ratio(*bus, *cache, &LatencySummary::p50);
      judge(2.0, why_not);
      rep.target(t);
      t.name = "pingpong spin, " + v.row("busd") + ": p99";
      t.value = same_run_ratio(*bus, *cache, &LatencySummary::p99);
      judge(3.0, why_not);
      rep.target(t);
    } else if (!spin && wake != nullptr) {
      t.name = "pingpong wait=" + o.wait + ", " + v.row("busd") + ": p50";
      t.of = "eventfd wake";
      t.value = same_run_ratio(*bus, *wake, &LatencySummary::p50);
      judge(1.3, adaptive ? why_not : std::string("the target is for adaptive wait"));
      rep.target(t);
    }
  }
  if (vars.size() == 2) {
    const LatencyRow* on = find(vars[0].row(bus_row));
    const LatencyRow* off = find(vars[1].row(bus_row));
    if (on != nullptr && off != nullptr) {
      for (auto [what, field] : {std::pair{"p50", &LatencySummary::p50}, std::pair{"p99", &LatencySummary::p99}}) {
        TargetLine t;
        t.name = std::string("pingpong, busd (lanes) / busd (no lanes): ") + what;
        t.value = same_run_ratio(*on, *off, field);
        t.unit = "x";
        t.note = "same-run ratio, for comparison";
        rep.target(t);
      }
    }
  }
  if (!o.baseline) rep.note("no baselines in this run (--no-baseline): no target lines");
}

int run_bus_rtt(const BusOptions& o, bool loaded) {
  if (o.runs < 1 || (o.count == 0 && o.duration_s <= 0)) throw std::runtime_error("nothing to measure: --count or --duration");
  const Clock clk = Clock::calibrate();
  std::vector<Variant> vars = start_variants(o);
  const size_t nv = vars.size();
  const std::string prefix = subject_prefix();
  const std::string ping = prefix + ".ping";
  const std::string load = prefix + ".load";

  // Agent processes first, while busbench has one thread. Per variant: the responder, the load
  // publisher and its sink (loaded).
  Shared<AgentCtl> ctl(3 * nv);
  auto responder_ctl = [&](size_t v) -> AgentCtl& { return ctl[3 * v]; };
  auto publisher_ctl = [&](size_t v) -> AgentCtl& { return ctl[3 * v + 1]; };
  auto sink_ctl = [&](size_t v) -> AgentCtl& { return ctl[3 * v + 2]; };
  std::vector<Child> responders(nv), publishers(nv), sinks(nv);
  for (size_t v = 0; v < nv; ++v) {
    const std::string socket = vars[v].bus->socket();
    responders[v] = Child::fork([&, socket, v] { return responder_main(socket, ping, o, responder_ctl(v)); });
    if (loaded) {
      publisher_ctl(v).pause.store(1);
      sinks[v] = Child::fork([&, socket, v] { return sink_main(socket, load, o, sink_ctl(v)); });
      publishers[v] = Child::fork([&, socket, v] { return load_publisher_main(socket, load, o, publisher_ctl(v)); });
    }
  }
  for (size_t v = 0; v < nv; ++v) {
    wait_ready(responder_ctl(v), responders[v], vars[v].row("responder"));
    if (loaded) {
      wait_ready(sink_ctl(v), sinks[v], vars[v].row("load sink"));
      wait_ready(publisher_ctl(v), publishers[v], vars[v].row("load publisher"));
    }
  }
  // The serving agents of each variant (on standby while anything else is measured).
  auto serving = [&](size_t v) {
    std::vector<AgentCtl*> s{&responder_ctl(v)};
    if (loaded) s.push_back(&sink_ctl(v));
    return s;
  };
  pin_thread(pin_of(o, 0));
  std::vector<std::unique_ptr<Client>> clients;
  for (size_t v = 0; v < nv; ++v) {
    clients.push_back(connect_agent(vars[v].bus->socket(), "busbench-" + std::to_string(::getpid()), o.wait, o.hops));
  }

  const std::string header =
      std::string("busbench ") + (loaded ? "loaded" : "pingpong") + ": request/reply round trips through busd, " +
      std::to_string(o.payload) + " B payload, " +
      (o.duration_s > 0 ? num(o.duration_s) + " s" : std::to_string(o.count) + " trips") + " x " +
      std::to_string(o.runs) + " runs (+" + std::to_string(o.warmup) + " warm-up)" +
      (nv > 1 ? ", lanes on and off (one private busd each, runs interleaved)" : "") +
      (loaded ? ", background load " + num(o.load_rate) + " msgs/s (publisher process -> busd -> sink process)" : "") +
      "\n" + who_waits(o, vars, loaded ? "responder, load publisher, sink" : "responder") + "\n  clock " +
      clk.describe() + "; timeout " + std::to_string(o.timeout_ms) + " ms per request";
  Report rep(loaded ? "loaded" : "pingpong", header);
  rep.set_targets_title("targets of the [lanes] issue (medians of same-run ratios)");
  rep.note(loop_note(o));
  for (const auto& n : o.wait_notes) rep.note(n);
  if (o.stall_ms > 0) {
    rep.note("the responder stalled once for " + std::to_string(o.stall_ms) + " ms, halfway through run 1 (" +
             vars[0].row("busd") + ")");
  }

  std::vector<CpuMeter> cpu(nv);
  for (size_t v = 0; v < nv; ++v) {
    const Variant& var = vars[v];
    cpu[v].add(var.row("busbench (requester)"), "wait=" + o.wait, {0});
    cpu[v].add(var.row("responder"), "wait=" + o.wait, {responders[v].pid()});
    if (var.bus->pid() > 0) cpu[v].add(var.row("busd"), "wait per busd config", {var.bus->pid()});
    if (loaded) {
      cpu[v].add(var.row("load publisher"), "batches of 1 ms", {publishers[v].pid()});
      cpu[v].add(var.row("load sink"), "wait=" + o.wait, {sinks[v].pid()});
    }
  }
  const std::string bus_row = loaded ? "busd pingpong, loaded" : "busd pingpong";
  const std::string bus_note = "busbench -> busd -> responder -> busd -> busbench, wait=" + o.wait;
  const uint64_t baseline_rounds = std::min<uint64_t>(o.count ? o.count : 20'000, 20'000);
  uint64_t failed = 0;
  std::string first_error;
  std::vector<double> lane_shares(nv, -1);
  for (int run = 0; run < o.runs; ++run) {
    if (o.baseline) {
      // Every agent sleeps meanwhile: a spinning responder would take a CPU from the baselines.
      for (size_t v = 0; v < nv; ++v) set_standby(serving(v), true);
      progress(o, run, "raw baselines");
      run_rtt_baselines(rep, o, clk, baseline_rounds);
    }
    for (const size_t v : run_order(nv, run)) {
      const Variant& var = vars[v];
      Client& client = *clients[v];
      only_serving(nv, v, serving);
      if (loaded) {
        progress(o, run, "busd pingpong, idle bus");
        publisher_ctl(v).pause.store(1);
        RunResult idle = measure(client, ping, o, clk, nullptr, nullptr);
        failed += idle.failed;
        add_run(rep, var.row("busd pingpong, idle"), "the same pair with the load publisher paused", true, idle);
        publisher_ctl(v).pause.store(0);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // load flowing first
      }
      progress(o, run, loaded ? "busd pingpong under load" : var.row("busd pingpong").c_str());
      Hops hops;
      const TripSink hop_sink = [&hops](const TripTimes& t) { record_hops(hops, t); };
      const uint64_t load_before = publisher_ctl(v).count.load();
      const uint64_t sunk_before = sink_ctl(v).count.load();
      const Client::Stats stats_before = client.stats();
      cpu[v].start();
      const bool stall = run == 0 && v == 0 && o.stall_ms > 0;
      RunResult r = measure(client, ping, o, clk, o.hops ? &hop_sink : nullptr, stall ? &responder_ctl(v) : nullptr);
      const double load_msgs = static_cast<double>(publisher_ctl(v).count.load() - load_before);
      cpu[v].stop(rep, 2.0 * static_cast<double>(r.trips) + load_msgs);
      lane_shares[v] = std::max(lane_shares[v], lane_share(stats_before, client.stats()));
      if (loaded) {
        publisher_ctl(v).pause.store(1);
        rep.fact("background load published", "msgs/s").values.push_back(load_msgs / r.total_seconds);
        rep.fact("background load received by the sink", "msgs/s")
            .values.push_back(static_cast<double>(sink_ctl(v).count.load() - sunk_before) / r.total_seconds);
      }
      failed += r.failed;
      if (first_error.empty()) first_error = r.first_error;
      const std::string row_note = var.lanes == 1 ? "busbench -> responder -> busbench over a lane once busd opened one (else "
                                                "through busd), wait=" + o.wait
                                              : bus_note;
      add_run(rep, var.row(bus_row), row_note, false, r);
      rep.latency(var.row(bus_row), bus_note, false).lanes = var.lanes;
      // Hop rows for the paths the trips took (through busd, over a lane, or both over the runs).
      auto add_hop = [&](const std::string& name, const Histogram& h, const std::string& note) {
        if (h.count() == 0) return;
        auto& row = rep.hop(var.hop(name), note);
        row.runs.push_back(summarize(h, r.seconds));
        row.merged.add(h);
      };
      for (int k = 0; k < kHops; ++k) add_hop(kHopNames[k], hops.busd[k], "");
      for (int k = 0; k < kLaneHops; ++k) {
        add_hop(kLaneHopNames[k], hops.lane[k],
                k == 0 ? "round trips over a lane both ways (busd wrote no hop times into them)" : "");
      }
      if (var.bus->pid() > 0) {
        const Memory m = memory_of(var.bus->pid());
        rep.fact(var.row("busd RSS"), "MiB", true).values.push_back(static_cast<double>(m.rss) / (1 << 20));
      }
      if (!var.bus->alive()) throw std::runtime_error(var.row("busd") + " died during the run");
    }
  }
  rep.fact("requests failed (timeout, error)", "", true).values.push_back(static_cast<double>(failed));
  for (size_t v = 0; v < nv; ++v) {
    if (vars[v].lanes < 0 || lane_shares[v] < 0) continue;
    rep.fact("sent over a lane, " + vars[v].row("busd"), "% of busbench's messages").values.push_back(100 * lane_shares[v]);
    if (auto n = lane_use_note(vars[v], lane_shares[v]); !n.empty()) rep.note(n);
  }
  if (!o.hops) {
    rep.note("no per-hop breakdown (--no-hops): no hop times in the messages, no clock read in the responder");
  } else if (o.payload < kEcho) {
    rep.note("no per-hop breakdown: the payload is under 24 B (the responder echoes times in it)");
  }
  rep.note("CPU per million messages: a round trip is two messages (request and reply)");
  if (nv > 1) {
    rep.note("runs: the baselines, then each busd in turn (the order alternates run by run); the agents of the busd "
             "not measured sleep meanwhile");
  }
  if (!loaded) add_targets(rep, o, vars, bus_row);
  std::vector<AgentCtl*> ctls;
  std::vector<Child*> kids;
  for (size_t v = 0; v < nv; ++v) {
    ctls.push_back(&responder_ctl(v));
    kids.push_back(&responders[v]);
    if (loaded) {
      ctls.push_back(&publisher_ctl(v));
      ctls.push_back(&sink_ctl(v));
      kids.push_back(&publishers[v]);
      kids.push_back(&sinks[v]);
    }
  }
  clients.clear();
  stop_agents(ctls, kids);
  if (failed > 0) std::fprintf(stderr, "busbench: %llu requests failed; first: %s\n", static_cast<unsigned long long>(failed), first_error.c_str());
  return finish(rep, o, failed > 0 ? 1 : 0);
}

}  // namespace

int run_pingpong(const BusOptions& o) { return run_bus_rtt(o, false); }
int run_loaded(const BusOptions& o) { return run_bus_rtt(o, true); }

}  // namespace bus::bench
