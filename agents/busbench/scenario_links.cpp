// busbench pingpong and pubsub with --transport tcp: two private busd linked over TCP (B dials
// A; LinkedPair), busbench and its requester or publisher on busd B, the responder or subscriber
// process on busd A, next to raw TCP between the same two endpoints (the same addresses and,
// with --netns, the same two network namespaces and veth pair), interleaved run by run.
//
// Per-hop breakdown. The busd a message enters writes its two hop times (Flags::Timed: agent ->
// busd, held in busd) into the copy it sends on the link, and the busd at the other end leaves
// them: the responder sees busd B's, busbench sees busd A's in the reply. With every Header
// timestamp (the link takes it to CLOCK_REALTIME and back: clock::wire_egress / wire_ingress; on
// one host that is one clock) each one-way time splits into: to the first busd, held there, and
// the rest (the link, the second busd and its delivery), which is not split further.
#include <cstdio>
#include <cstring>
#include <thread>

#include "baselines.hpp"
#include "bus/clock.hpp"
#include "bus/counters.hpp"
#include "link_pair.hpp"
#include "scenario_kit.hpp"

namespace bus::bench {
namespace {

using counters::Global;

// ---- the per-hop rows of a round trip across the link, in path order
struct HopRow {
  const char* name;
  int measured;  // index into the run's histograms
  const char* note;
};
constexpr HopRow kLinkHops[] = {
    {"request: busbench -> responder", 0,
     "one way, through busd B, the link and busd A: the responder's receive time - the request's timestamp"},
    {"request: busbench -> busd B", 1, "busd B's stamp: from the request's timestamp to busd B reading it"},
    {"request: held in busd B", 2, "busd B's stamp: from reading it to handing it to the link"},
    {"request: link B -> A, busd A, -> responder", 3, "the one-way time less busd B's two hops"},
    {"responder: receive -> reply", 4, "the responder's own time: its reply's timestamp - its receive time"},
    {"reply: responder -> busbench", 5,
     "one way, through busd A, the link and busd B: busbench's receive time - the reply's timestamp"},
    {"reply: responder -> busd A", 6, "busd A's stamp: from the reply's timestamp to busd A reading it"},
    {"reply: held in busd A", 7, "busd A's stamp: from reading it to handing it to the link"},
    {"reply: link A -> B, busd B, -> busbench", 8, "the one-way time less busd A's two hops"},
};
constexpr int kMeasuredHops = 9;

double mib(pid_t pid) { return static_cast<double>(memory_of(pid).rss) / (1 << 20); }

void rss_facts(Report& rep, LinkedPair& pair) {
  rep.fact("busd A RSS", "MiB", true).values.push_back(mib(pair.busd(kSideA).pid()));
  rep.fact("busd B RSS", "MiB", true).values.push_back(mib(pair.busd(kSideB).pid()));
}

// The link's counters on both sides, for an error message.
std::string link_counters(LinkedPair& pair) {
  std::string s;
  for (Side side : {kSideB, kSideA}) {
    BusTarget& b = pair.busd(side);
    s.append(side == kSideB ? "busd B: " : "; busd A: ");
    for (Global g : {Global::links_up, Global::link_connects, Global::link_disconnects, Global::link_messages_out,
                     Global::link_messages_in, Global::link_drops_held_full, Global::link_drops_no_route,
                     Global::drops_slow_consumer, Global::published_no_subscribers}) {
      s.append(counters::global_info(g).name).append("=").append(std::to_string(b.global(g))).append(" ");
    }
  }
  return s;
}

std::string waits(const BusOptions& o, LinkedPair& pair, const std::string& mine, const std::string& peer) {
  auto pin = [&](size_t i) { return pin_of(o, i) >= 0 ? ", cpu " + std::to_string(pin_of(o, i)) : ""; };
  return std::string("  busbench (").append(mine).append(", on B): wait=").append(o.wait).append(pin(0))
      .append("; ").append(peer).append(" (on A): wait=").append(o.wait).append(pin(1))
      .append("\n  ").append(pair.busd(kSideA).describe())
      .append("\n  ").append(pair.busd(kSideB).describe())
      .append("\n  ").append(pair.where());
}

// The baselines' note: where their two sockets are.
std::string raw_path_note(const BusOptions& o, const LinkedPair& pair, Side sender) {
  const Side receiver = sender == kSideA ? kSideB : kSideA;
  auto at = [&](Side s) {
    return std::string(o.netns ? (s == kSideA ? "namespace a, " : "namespace b, ") : "").append(pair.ip(s));
  };
  return std::string("two processes, sockets at ").append(at(sender)).append(" -> ").append(at(receiver))
      .append(o.netns ? " (across the veth pair the link uses)" : " (the link's loopback address)");
}

// busbench's peer agent (the responder or the subscriber) forked onto A's side, while busbench
// has one thread, and ready; then busbench itself moves to B's side and connects to busd B.
struct Sides {
  Child peer;
  std::unique_ptr<Client> client;
};
Sides start_sides(LinkedPair& pair, const BusOptions& o, AgentCtl& ctl, const std::string& what, bool timed,
                  const std::function<int(const std::string& socket)>& peer_main) {
  Sides s;
  s.peer = Child::fork([&] {
    pair.enter(kSideA);
    return peer_main(pair.busd(kSideA).socket());
  });
  wait_ready(ctl, s.peer, what + " (on busd A)");
  pair.enter(kSideB);
  pin_thread(pin_of(o, 0));
  s.client = connect_agent(pair.busd(kSideB).socket(), "busbench-" + std::to_string(::getpid()), o.wait, timed);
  return s;
}

}  // namespace

int run_link_pingpong(const BusOptions& o) {
  if (o.runs < 1 || (o.count == 0 && o.duration_s <= 0)) throw std::runtime_error("nothing to measure: --count or --duration");
  const Clock clk = Clock::calibrate();
  LinkedPair pair(o);
  const std::string ping = subject_prefix() + ".ping";

  Shared<AgentCtl> ctl(1);
  Sides sides = start_sides(pair, o, ctl[0], "responder", true,
                            [&](const std::string& socket) { return responder_main(socket, ping, o, ctl[0]); });
  Child& responder = sides.peer;
  auto& client = sides.client;
  // The responder's subscription reaches busd B as interest over the link: until it has, a
  // request finds no responder.
  {
    const uint64_t end = clock::mono_ns() + 10'000'000'000ull;
    std::vector<std::byte> probe(o.payload, std::byte{0x42});
    while (!client->request(ping, probe, std::chrono::milliseconds(500))) {
      if (clock::mono_ns() > end) throw std::runtime_error("no request reached the responder on busd A within 10 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  const std::string header =
      "busbench pingpong --transport tcp: request/reply round trips across a link between two busd, " +
      std::to_string(o.payload) + " B payload, " +
      (o.duration_s > 0 ? num(o.duration_s) + " s" : std::to_string(o.count) + " trips") + " x " +
      std::to_string(o.runs) + " runs (+" + std::to_string(o.warmup) + " warm-up)\n" +
      waits(o, pair, "requester", "responder") + "\n  clock " + clk.describe() + "; timeout " +
      std::to_string(o.timeout_ms) + " ms per request";
  Report rep("pingpong-tcp", header);
  for (const auto& n : o.wait_notes) rep.note(n);
  rep.note(loop_note(o));

  CpuMeter cpu;
  cpu.add("busbench (requester) on B", "wait=" + o.wait, {0});
  cpu.add("busd B", "wait per busd config", {pair.busd(kSideB).pid()});
  cpu.add("busd A", "wait per busd config", {pair.busd(kSideA).pid()});
  cpu.add("responder on A", "wait=" + o.wait, {responder.pid()});
  const std::string raw_row = "raw TCP ping-pong";
  const std::string bus_row = "busd link pingpong";
  for (const HopRow& h : kLinkHops) (void)rep.hop(h.name, h.note);
  std::vector<std::string> hop_names(kMeasuredHops);
  for (const HopRow& h : kLinkHops) {
    if (h.measured >= 0) hop_names[static_cast<size_t>(h.measured)] = h.name;
  }

  RttParams raw;
  raw.payload = o.payload;
  raw.rounds = std::min<uint64_t>(o.count ? o.count : 20'000, 20'000);
  raw.warmup = std::max<uint64_t>(raw.rounds / 10, 100);
  raw.cpu_a = pin_of(o, 0);
  raw.cpu_b = pin_of(o, 1);
  raw.tcp = pair.tcp_path(kSideA);  // busbench's side (B) connects to A's address, as the link does
  uint64_t failed = 0, stamped = 0;
  std::string first_error;
  for (int run = 0; run < o.runs; ++run) {
    if (o.baseline) {
      progress(o, run, "raw TCP ping-pong");
      Histogram h;
      const double secs = rtt_tcp(raw, clk, h);
      auto& row = rep.latency(raw_row, raw_path_note(o, pair, kSideB) + ", TCP_NODELAY, blocking, " +
                                           std::to_string(o.payload) + " B each way",
                              true);
      row.runs.push_back(summarize(h, secs));
      row.merged.add(h);
    }
    progress(o, run, "busd link pingpong");
    std::vector<Histogram> hops(kMeasuredHops);
    const TripSink sink = [&](const TripTimes& t) {
      const Echo& e = t.request;
      if (e.received_ns < e.request_ts || t.reply_ts < e.received_ns || t.back_ns < t.reply_ts) return;
      const uint64_t out = e.received_ns - e.request_ts, back = t.back_ns - t.reply_ts;
      hops[0].record(out);
      hops[4].record(t.reply_ts - e.received_ns);
      hops[5].record(back);
      if (e.to_busd_ns != 0 || e.in_busd_ns != 0) {
        ++stamped;
        hops[1].record(e.to_busd_ns);
        hops[2].record(e.in_busd_ns);
        const uint64_t b = uint64_t{e.to_busd_ns} + e.in_busd_ns;
        hops[3].record(out > b ? out - b : 0);
      }
      if (t.reply_timing) {
        hops[6].record(t.reply_timing->to_busd_ns);
        hops[7].record(t.reply_timing->in_busd_ns);
        const uint64_t a = uint64_t{t.reply_timing->to_busd_ns} + t.reply_timing->in_busd_ns;
        hops[8].record(back > a ? back - a : 0);
      }
    };
    const uint64_t link_before = pair.busd(kSideB).global(Global::link_messages_out) +
                                 pair.busd(kSideB).global(Global::link_messages_in);
    cpu.start();
    RunResult r = measure(*client, ping, o, clk, &sink, nullptr);
    cpu.stop(rep, 2.0 * static_cast<double>(r.trips));
    const uint64_t link_after = pair.busd(kSideB).global(Global::link_messages_out) +
                                pair.busd(kSideB).global(Global::link_messages_in);
    failed += r.failed;
    if (first_error.empty()) first_error = r.first_error;
    add_run(rep, bus_row, "busbench -> busd B -> TCP link -> busd A -> responder, and back; wait=" + o.wait, false, r);
    add_hops(rep, hop_names, hops, r.seconds);
    if (r.trips > 0) {
      rep.fact("link messages per round trip", "(request and reply: 2)")
          .values.push_back(static_cast<double>(link_after - link_before) / static_cast<double>(r.trips));
    }
    rss_facts(rep, pair);
    pair.check("during run " + std::to_string(run + 1));
  }
  rep.fact("requests failed (timeout, error)", "", true).values.push_back(static_cast<double>(failed));
  if (o.baseline) {
    const auto& rows = rep.latency_rows();
    const LatencyRow* bus = nullptr;
    const LatencyRow* base = nullptr;
    for (const auto& row : rows) (row.baseline ? base : bus) = &row;
    const double x = same_run_ratio(*bus, *base, &LatencySummary::p50);
    char line[160];
    std::snprintf(line, sizeof line, "goal: busd link p50 at most 3x raw TCP p50 between the same endpoints: %.2fx, %s", x,
                  x <= 3.0 ? "met" : "NOT met");
    rep.note(line);
  }
  if (o.payload < kEcho) rep.note("no per-hop breakdown: the payload is under 24 B (the responder echoes times in it)");
  rep.note("one host: busbench, the responder and both busd read one CLOCK_MONOTONIC, so the one-way hops are "
           "exact; between hosts they would include the clocks' skew");
  if (stamped == 0) rep.note("no request carried busd B's hop stamps: the busd hops could not be split");
  rep.note("CPU per million messages (= CPU-us per message): a round trip is two messages (request and reply)");
  client.reset();
  stop_agents({&ctl[0]}, {&responder});
  if (failed > 0) {
    std::fprintf(stderr, "busbench: %llu requests failed; first: %s\n", static_cast<unsigned long long>(failed),
                 first_error.c_str());
  }
  return finish(rep, o, failed > 0 ? 1 : 0);
}

int run_link_pubsub(const BusOptions& o) {
  if (o.subscribers != 1) throw std::runtime_error("pubsub --transport tcp: one subscriber (on busd A)");
  if (o.count == 0) throw std::runtime_error("pubsub needs --count (messages per run)");
  const Clock clk = Clock::calibrate();
  LinkedPair pair(o);
  const std::string subject = subject_prefix() + ".pub";

  Shared<AgentCtl> ctl(1);
  Sides sides = start_sides(pair, o, ctl[0], "subscriber", false,
                            [&](const std::string& socket) { return subscriber_main(socket, subject, 0, o, ctl[0]); });
  Child& sub = sides.peer;
  auto& client = sides.client;
  Burst burst(*client, subject, ctl.get(), 1, o.payload);
  burst.probe(10'000);  // until the subscription has crossed the link

  auto tmpl = EnvelopeTemplate::make({subject});
  if (!tmpl) throw std::runtime_error(tmpl.error().message());
  const auto record = static_cast<uint32_t>(tmpl->size_for(o.payload));
  const std::string header =
      "busbench pubsub --transport tcp: 1 publisher (busbench) -> busd B -> TCP link -> busd A -> 1 subscriber "
      "process, " +
      std::to_string(o.payload) + " B payload (" + std::to_string(record) + " B encoded), " + std::to_string(o.count) +
      " messages x " + std::to_string(o.runs) + " runs\n" + waits(o, pair, "publisher", "subscriber") +
      "\n  clock " + clk.describe();
  Report rep("pubsub-tcp", header);
  for (const auto& n : o.wait_notes) rep.note(n);
  rep.note("msgs/s: messages delivered per second (from the first publish to the subscriber's last message); MB/s "
           "counts payload bytes (encoded bytes for raw TCP)");
  rep.note("CPU seconds per million messages = CPU-us per message published, of each process over the burst");

  const std::string batch = std::to_string(o.batch);
  CpuMeter batched, unbatched;
  for (auto [meter, suffix] : {std::pair{&batched, ", batch " + batch}, std::pair{&unbatched, std::string(", unbatched")}}) {
    meter->add("publisher on B (busbench)" + suffix, "wait=" + o.wait, {0});
    meter->add("busd B" + suffix, "wait per busd config", {pair.busd(kSideB).pid()});
    meter->add("busd A" + suffix, "wait per busd config", {pair.busd(kSideA).pid()});
    meter->add("subscriber on A" + suffix, "wait=" + o.wait, {sub.pid()});
  }
  const std::string sender_row = "raw TCP sender on B, batch " + batch;
  const std::string receiver_row = "raw TCP receiver on A";
  const TcpPath stream_path = pair.tcp_path(kSideB);  // the sender (the child) on B's side, as the publisher
  const uint64_t raw_records = std::max<uint64_t>(o.count, 100'000);
  const std::function<uint64_t()> link_drops = [&pair] { return pair.busd(kSideB).global(Global::link_drops_held_full); };
  uint64_t total_dropped = 0;
  for (int run = 0; run < o.runs; ++run) {
    if (o.baseline) {
      progress(o, run, "raw TCP streaming");
      const StreamResult s = stream_tcp_on(record, raw_records, o.batch, stream_path);
      rep.throughput("raw TCP B -> A, batch " + batch,
                     raw_path_note(o, pair, kSideB) + ", " + std::to_string(record) + " B records, " + batch +
                         " per send(), TCP_NODELAY",
                     true, record)
          .msgs_per_s.push_back(s.msgs_per_s);
      rep.process(sender_row, batch + " records per send()")
          .cpu_s_per_million.push_back(s.sender_cpu_s / static_cast<double>(raw_records) * 1e6);
      rep.process(receiver_row, "recv() 64 KiB at a time")
          .cpu_s_per_million.push_back(s.receiver_cpu_s / static_cast<double>(raw_records) * 1e6);
    }
    const uint64_t link_before = pair.busd(kSideB).global(Global::link_messages_out);
    const uint64_t delivered_before = burst.delivered();
    // busd B counts what it drops at the link; anything else lost fails the run, saying what
    // busd counted.
    uint64_t dropped = 0;
    auto burst_run = [&](uint32_t per_flush, CpuMeter& cpu) {
      try {
        const double r = burst.run(o.count, per_flush, cpu, rep, link_drops);
        dropped += burst.last_dropped();
        return r;
      } catch (const std::runtime_error& e) {
        throw std::runtime_error(std::string(e.what()) + "; " + link_counters(pair));
      }
    };
    progress(o, run, "busd link pubsub, batched");
    rep.throughput("busd link pubsub B -> A, batch " + batch, "publish(Flush::Later), flush every " + batch, false,
                   o.payload)
        .msgs_per_s.push_back(burst_run(o.batch, batched));
    progress(o, run, "busd link pubsub, unbatched");
    rep.throughput("busd link pubsub B -> A, unbatched", "every publish() wakes busd B", false, o.payload)
        .msgs_per_s.push_back(burst_run(1, unbatched));
    const uint64_t delivered = burst.delivered() - delivered_before;
    if (delivered > 0) {
      rep.fact("link messages per message delivered", "(1)")
          .values.push_back(static_cast<double>(pair.busd(kSideB).global(Global::link_messages_out) - link_before) /
                            static_cast<double>(delivered));
    }
    rep.fact("messages dropped by busd B at the link", "(hold buffer full)", true)
        .values.push_back(static_cast<double>(dropped));
    total_dropped += dropped;
    rss_facts(rep, pair);
    pair.check("during run " + std::to_string(run + 1));
  }
  const uint64_t backwards = burst.backwards();
  const uint64_t failed = burst.failed();
  rep.fact("messages duplicated or out of order", "", true).values.push_back(static_cast<double>(backwards));
  rep.fact("publish failures", "", true).values.push_back(static_cast<double>(failed));
  if (total_dropped > 0) {
    rep.note("WARNING: busd B dropped " + std::to_string(total_dropped) +
             " messages at the link (link_drops_held_full): its hold buffer for A (hold_bytes, 8 MiB by default) "
             "filled while the link was up, and busd does not hold a local publisher back for a peer that "
             "acknowledges slowly. msgs/s counts the messages delivered");
  }
  client.reset();
  stop_agents({&ctl[0]}, {&sub});
  return finish(rep, o, backwards + failed > 0 ? 1 : 0);
}

}  // namespace bus::bench
