// busbench pingpong and loaded: request/reply round trips between busbench (the requester)
// and a responder process through busd, interleaved run by run with the raw baselines, and
// (loaded) with a background publisher pushing a chosen rate through the same busd.
//
// Per-hop breakdown: requests and replies carry Flags::Timed, so busd writes into each copy how
// long the message took to reach it and how long it held it; the responder echoes the request's
// times at the front of its reply (payloads of 24 B or more).
#include <cstdio>
#include <cstring>
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
                 const uint64_t now = clock::mono_ns();
                 if (const uint32_t stall = ctl.stall_ms.exchange(0); stall != 0) {
                   std::this_thread::sleep_for(std::chrono::milliseconds(stall));
                 }
                 const auto in = m.payload();
                 out.resize(in.size());
                 if (!in.empty()) std::memcpy(out.data(), in.data(), in.size());
                 if (in.size() >= kEcho) {
                   const auto t = hop_timing(m.envelope().header()).value_or(HopTiming{});
                   const Echo e{m.envelope().header().timestamp_ns(), now, t.to_busd_ns, t.in_busd_ns};
                   std::memcpy(out.data(), &e, sizeof e);
                 }
                 if (!c.reply(m, out)) ctl.errors.fetch_add(1, std::memory_order_relaxed);
                 ctl.count.fetch_add(1, std::memory_order_relaxed);
               },
               true);
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

// One busd: each message's hop times are busd's own stamps, the rest by difference.
void record_hops(std::vector<Histogram>& h, const TripTimes& t) {
  const Echo& e = t.request;
  if (!t.reply_timing || e.received_ns < e.request_ts) return;
  const uint64_t req_at_busd_out = e.request_ts + e.to_busd_ns + e.in_busd_ns;
  const uint64_t rep_at_busd_out = t.reply_ts + t.reply_timing->to_busd_ns + t.reply_timing->in_busd_ns;
  auto d = [](uint64_t a, uint64_t b) { return a > b ? a - b : 0; };
  h[0].record(e.to_busd_ns);
  h[1].record(e.in_busd_ns);
  h[2].record(d(e.received_ns, req_at_busd_out));
  h[3].record(d(t.reply_ts, e.received_ns));
  h[4].record(t.reply_timing->to_busd_ns);
  h[5].record(t.reply_timing->in_busd_ns);
  h[6].record(d(t.back_ns, rep_at_busd_out));
}

}  // namespace

RunResult measure(Client& c, const std::string& subject, const BusOptions& o, const Clock& clk, const TripSink* hops,
                  AgentCtl* stall_ctl) {
  RunResult res;
  std::vector<std::byte> msg(o.payload, std::byte{0x42});
  const uint64_t interval = o.rate > 0 ? static_cast<uint64_t>(1e9 / o.rate) : 0;
  const auto timeout = std::chrono::milliseconds(o.timeout_ms);
  const uint64_t count = o.duration_s > 0 && o.count == 0 ? UINT64_MAX : o.count;
  const double cap_s = o.duration_s > 0 ? o.duration_s : 60.0;  // every run stops by itself
  const uint64_t start = clock::mono_ns();
  const uint64_t end = start + static_cast<uint64_t>(cap_s * 1e9) + static_cast<uint64_t>(o.warmup) * 1'000'000u;
  uint64_t next = start;
  uint64_t measured_start = 0;
  uint64_t measured = 0;
  for (uint64_t i = 0; measured < count; ++i) {
    const bool warm = i >= o.warmup;
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

int run_bus_rtt(const BusOptions& o, bool loaded) {
  if (o.runs < 1 || (o.count == 0 && o.duration_s <= 0)) throw std::runtime_error("nothing to measure: --count or --duration");
  const Clock clk = Clock::calibrate();
  BusTarget bus(target_options(o));
  const std::string prefix = subject_prefix();
  const std::string ping = prefix + ".ping";
  const std::string load = prefix + ".load";

  // Agent processes first, while busbench has one thread.
  Shared<AgentCtl> ctl(3);
  Child responder = Child::fork([&] { return responder_main(bus.socket(), ping, o, ctl[0]); });
  Child publisher, sink;
  if (loaded) {
    ctl[1].pause.store(1);
    sink = Child::fork([&] { return sink_main(bus.socket(), load, o, ctl[2]); });
    publisher = Child::fork([&] { return load_publisher_main(bus.socket(), load, o, ctl[1]); });
  }
  wait_ready(ctl[0], responder, "responder");
  if (loaded) {
    wait_ready(ctl[2], sink, "load sink");
    wait_ready(ctl[1], publisher, "load publisher");
  }
  pin_thread(pin_of(o, 0));
  auto client = connect_agent(bus.socket(), "busbench-" + std::to_string(::getpid()), o.wait, true);

  const std::string header =
      std::string("busbench ") + (loaded ? "loaded" : "pingpong") + ": request/reply round trips through busd, " +
      std::to_string(o.payload) + " B payload, " +
      (o.duration_s > 0 ? num(o.duration_s) + " s" : std::to_string(o.count) + " trips") + " x " +
      std::to_string(o.runs) + " runs (+" + std::to_string(o.warmup) + " warm-up)" +
      (loaded ? ", background load " + num(o.load_rate) + " msgs/s (publisher process -> busd -> sink process)" : "") +
      "\n" + who_waits(o, bus, loaded ? "responder, load publisher, sink" : "responder") + "\n  clock " +
      clk.describe() + "; timeout " + std::to_string(o.timeout_ms) + " ms per request";
  Report rep(loaded ? "loaded" : "pingpong", header);
  rep.note(loop_note(o));
  if (o.stall_ms > 0) {
    rep.note("the responder stalled once for " + std::to_string(o.stall_ms) + " ms, halfway through run 1");
  }

  CpuMeter cpu;
  cpu.add("busbench (requester)", "wait=" + o.wait, {0});
  cpu.add("responder", "wait=" + o.wait, {responder.pid()});
  if (bus.pid() > 0) cpu.add("busd", "wait per busd config", {bus.pid()});
  if (loaded) {
    cpu.add("load publisher", "batches of 1 ms", {publisher.pid()});
    cpu.add("load sink", "wait=" + o.wait, {sink.pid()});
  }
  const std::string bus_row = loaded ? "busd pingpong, loaded" : "busd pingpong";
  const std::string bus_note = "busbench -> busd -> responder -> busd -> busbench, wait=" + o.wait;
  const uint64_t baseline_rounds = std::min<uint64_t>(o.count ? o.count : 20'000, 20'000);
  uint64_t failed = 0;
  std::string first_error;
  for (int run = 0; run < o.runs; ++run) {
    if (o.baseline) {
      progress(o, run, "raw baselines");
      run_rtt_baselines(rep, o, clk, baseline_rounds);
    }
    if (loaded) {
      progress(o, run, "busd pingpong, idle bus");
      ctl[1].pause.store(1);
      RunResult idle = measure(*client, ping, o, clk, nullptr, nullptr);
      failed += idle.failed;
      add_run(rep, "busd pingpong, idle", "the same pair with the load publisher paused", true, idle);
      ctl[1].pause.store(0);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // load flowing first
    }
    progress(o, run, loaded ? "busd pingpong under load" : "busd pingpong");
    std::vector<Histogram> hops(kHops);
    const TripSink hop_sink = [&hops](const TripTimes& t) { record_hops(hops, t); };
    const uint64_t load_before = ctl[1].count.load();
    const uint64_t sunk_before = ctl[2].count.load();
    cpu.start();
    RunResult r = measure(*client, ping, o, clk, &hop_sink, run == 0 && o.stall_ms > 0 ? &ctl[0] : nullptr);
    const double load_msgs = static_cast<double>(ctl[1].count.load() - load_before);
    cpu.stop(rep, 2.0 * static_cast<double>(r.trips) + load_msgs);
    if (loaded) {
      ctl[1].pause.store(1);
      rep.fact("background load published", "msgs/s").values.push_back(load_msgs / r.total_seconds);
      rep.fact("background load received by the sink", "msgs/s")
          .values.push_back(static_cast<double>(ctl[2].count.load() - sunk_before) / r.total_seconds);
    }
    failed += r.failed;
    if (first_error.empty()) first_error = r.first_error;
    add_run(rep, bus_row, bus_note, false, r);
    add_hops(rep, std::vector<std::string>(std::begin(kHopNames), std::end(kHopNames)), hops, r.seconds);
    if (bus.pid() > 0) {
      const Memory m = memory_of(bus.pid());
      rep.fact("busd RSS", "MiB", true).values.push_back(static_cast<double>(m.rss) / (1 << 20));
    }
    if (!bus.alive()) throw std::runtime_error("busd died during the run");
  }
  rep.fact("requests failed (timeout, error)", "", true).values.push_back(static_cast<double>(failed));
  if (o.payload < kEcho) rep.note("no per-hop breakdown: the payload is under 24 B (the responder echoes times in it)");
  rep.note("CPU per million messages: a round trip is two messages (request and reply)");
  std::vector<AgentCtl*> ctls{&ctl[0]};
  std::vector<Child*> kids{&responder};
  if (loaded) {
    ctls.push_back(&ctl[1]);
    ctls.push_back(&ctl[2]);
    kids.push_back(&publisher);
    kids.push_back(&sink);
  }
  client.reset();
  stop_agents(ctls, kids);
  if (failed > 0) std::fprintf(stderr, "busbench: %llu requests failed; first: %s\n", static_cast<unsigned long long>(failed), first_error.c_str());
  return finish(rep, o, failed > 0 ? 1 : 0);
}

}  // namespace

int run_pingpong(const BusOptions& o) { return run_bus_rtt(o, false); }
int run_loaded(const BusOptions& o) { return run_bus_rtt(o, true); }

}  // namespace bus::bench
