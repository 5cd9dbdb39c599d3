// busbench pingpong and pubsub with --transport tcp|dpdk|rdma: two private busd linked (LinkedPair),
// busbench and its requester or publisher on busd B, the responder or subscriber process on
// busd A, next to raw baselines between the same two endpoints, interleaved run by run.
//   tcp   one pair, linked over TCP (B dials A), next to raw TCP between the same two addresses
//         (with --netns: the same two network namespaces and veth pair).
//   dpdk  two pairs measured in turn: one linked over DPDK (memif between two busd on this host,
//         or af_packet on the veth pair between two namespaces) and one linked over TCP on the
//         same path (loopback; the same namespaces and veth pair), so that the DPDK link is seen
//         next to busd's TCP link; next to raw TCP and, over memif, the raw DPDK floor
//         (dpdk_pingpong: two processes busy-polling memif, no busd).
//   rdma  two pairs measured in turn, as dpdk: one linked over RDMA (busd A's rdma_listen on this
//         host's RDMA interface, busd B dials it from there: both on one port of the device) and
//         one linked over TCP on loopback, so that the RDMA link is seen next to busd's TCP link;
//         next to raw TCP. There is no raw RDMA row (no busd, rdma_cm and verbs alone): the
//         comparison is busd's RDMA link against busd's TCP link, same run.
// While one pair is measured the other sits idle: its agent sleeps (standby); a TCP pair's busd
// sleep, an RDMA pair's too (busd's loop sleeps on the completion channel), and a DPDK pair is
// stopped (its poll threads are never quiet: see LinkedPair::idle).
//
// Per-hop breakdown (of the first pair: the DPDK or RDMA link, or the one TCP link). The busd a message
// enters writes its two hop times (Flags::Timed: agent -> busd, held in busd) into the copy it
// sends on the link, and the busd at the other end leaves them: the responder sees busd B's,
// busbench sees busd A's in the reply. With every Header timestamp (the link takes it to
// CLOCK_REALTIME and back: clock::wire_egress / wire_ingress; on one host that is one clock) each
// one-way time splits into: to the first busd, held there, and the rest (the link, the second
// busd and its delivery), which is not split further.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>

#include "baselines.hpp"
#include "bus/clock.hpp"
#include "bus/counters.hpp"
#include "dpdk_kit.hpp"
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

constexpr const char* kRawTcpRow = "raw TCP ping-pong";
constexpr const char* kRawMemifRow = "raw memif ping-pong";
constexpr size_t kNoLeg = SIZE_MAX;  // Rig::only: a baseline is measured
constexpr const char* kTakingTurnsDpdk =
    "runs: the baselines, then each pair in turn (the order alternates run by run); meanwhile the other pair's "
    "agent sleeps, and the DPDK pair is stopped (SIGSTOP: its poll threads wake every 100 us at most, or never "
    "sleep) while the TCP pair's busd sleep";
constexpr const char* kTakingTurnsRdma =
    "runs: the baselines, then each pair in turn (the order alternates run by run); meanwhile the other pair's "
    "agent sleeps and its two busd sleep (an RDMA link's busd sleeps on its completion channel)";
const char* taking_turns(const BusOptions& o) { return o.transport == "rdma" ? kTakingTurnsRdma : kTakingTurnsDpdk; }
// "DPDK", "RDMA": the link the first pair of a two-pair run measures.
const char* upper_kind(const BusOptions& o) { return o.transport == "rdma" ? "RDMA" : "DPDK"; }

double mib(pid_t pid) { return static_cast<double>(memory_of(pid).rss) / (1 << 20); }

// One linked pair busbench measures through: its peer agent (the responder or the subscriber)
// on busd A, busbench's client on busd B.
struct Leg {
  std::string label;  // "dpdk" or "rdma", "tcp" (--transport dpdk|rdma); "" for the one pair of --transport tcp
  std::unique_ptr<LinkedPair> pair;
  Child peer;
  std::unique_ptr<Client> client;

  /// "busd dpdk link pingpong"; "busd link pingpong" when it is the only pair.
  [[nodiscard]] std::string row(const std::string& what) const {
    std::string s = "busd ";
    if (!label.empty()) s.append(label).append(" ");
    return s.append("link ").append(what);
  }
  /// "busd B (dpdk link)"; "busd B" when it is the only pair.
  [[nodiscard]] std::string of(const std::string& what) const {
    return label.empty() ? what : std::string(what).append(" (").append(label).append(" link)");
  }
  /// "TCP link", "DPDK link (memif)": what the messages cross between busd B and busd A.
  [[nodiscard]] std::string link(const BusOptions& o) const {
    if (pair->kind() == LinkKind::rdma) return "RDMA link";
    return pair->kind() == LinkKind::dpdk ? std::string("DPDK link (").append(o.dpdk).append(")") : "TCP link";
  }
};

// The linked pairs of a run: one TCP-linked pair (--transport tcp), or a DPDK-linked pair and a
// TCP-linked pair beside it on the same path (--transport dpdk; they share the namespaces of
// --netns), or an RDMA-linked pair and a TCP-linked pair beside it (--transport rdma; no
// --netns). Each gets busbench's peer agent on its side A, forked while busbench has one thread;
// busbench then moves to B's side and connects to each busd B.
class Rig {
 public:
  using PeerMain = std::function<int(const std::string& socket, AgentCtl& ctl)>;
  Rig(const BusOptions& o, const std::string& peer_what, bool timed, const PeerMain& peer_main);
  ~Rig() { resume(); }
  Rig(const Rig&) = delete;
  Rig& operator=(const Rig&) = delete;

  [[nodiscard]] size_t size() const noexcept { return legs_.size(); }
  [[nodiscard]] std::vector<Leg>& legs() noexcept { return legs_; }
  [[nodiscard]] Leg& operator[](size_t i) noexcept { return legs_[i]; }
  [[nodiscard]] AgentCtl& ctl(size_t i) const noexcept { return ctl_[i]; }
  /// Only leg `active` works (kNoLeg: none, a baseline is measured): the others' agents sleep
  /// (standby) and their pairs sit idle (LinkedPair::idle).
  void only(size_t active);
  /// Tells the peer agents to stop, reaps them and closes busbench's clients.
  void stop();

 private:
  void resume();  // every pair back from idle: a stopped busd must not meet a goodbye or SIGTERM

  Shared<AgentCtl> ctl_;
  std::vector<Leg> legs_;
};

Rig::Rig(const BusOptions& o, const std::string& peer_what, bool timed, const PeerMain& peer_main)
    : ctl_(o.transport == "tcp" ? 1 : 2) {
  std::shared_ptr<NetnsPair> ns;
  if (o.netns) ns = std::make_shared<NetnsPair>();
  std::vector<std::pair<LinkKind, std::string>> kinds{{LinkKind::tcp, ""}};
  if (o.transport == "dpdk") kinds = {{LinkKind::dpdk, "dpdk"}, {LinkKind::tcp, "tcp"}};
  if (o.transport == "rdma") kinds = {{LinkKind::rdma, "rdma"}, {LinkKind::tcp, "tcp"}};
  legs_.resize(kinds.size());
  for (size_t i = 0; i < kinds.size(); ++i) {
    legs_[i].label = kinds[i].second;
    legs_[i].pair = std::make_unique<LinkedPair>(o, kinds[i].first, ns, kinds.size() > 1);
  }
  for (size_t i = 0; i < legs_.size(); ++i) {
    legs_[i].peer = Child::fork([&, i] {
      legs_[i].pair->enter(kSideA);
      return peer_main(legs_[i].pair->busd(kSideA).socket(), ctl_[i]);
    });
  }
  for (size_t i = 0; i < legs_.size(); ++i) {
    std::string what = peer_what;
    what.append(" (on busd A").append(legs_[i].label.empty() ? "" : " of the " + legs_[i].label + " link").append(")");
    wait_ready(ctl_[i], legs_[i].peer, what);
  }
  legs_.front().pair->enter(kSideB);  // the pairs share the namespaces
  pin_thread(pin_of(o, 0));
  for (Leg& leg : legs_) {
    leg.client = connect_agent(leg.pair->busd(kSideB).socket(), "busbench-" + std::to_string(::getpid()), o.wait, timed);
  }
}

void Rig::only(size_t active) {
  for (size_t i = 0; i < legs_.size(); ++i) {
    if (i == active) continue;
    set_standby({&ctl_[i]}, true);
    legs_[i].pair->idle(true);
  }
  if (active < legs_.size()) {
    legs_[active].pair->idle(false);
    set_standby({&ctl_[active]}, false);
  }
}

void Rig::resume() {
  for (Leg& leg : legs_) {
    if (leg.pair) leg.pair->idle(false);
  }
}

void Rig::stop() {
  resume();
  std::vector<AgentCtl*> ctls;
  std::vector<Child*> kids;
  for (size_t i = 0; i < legs_.size(); ++i) {
    legs_[i].client.reset();
    ctls.push_back(&ctl_[i]);
    kids.push_back(&legs_[i].peer);
  }
  stop_agents(ctls, kids);
}

void rss_facts(Report& rep, Leg& leg) {
  rep.fact(leg.of("busd A RSS"), "MiB", true).values.push_back(mib(leg.pair->busd(kSideA).pid()));
  rep.fact(leg.of("busd B RSS"), "MiB", true).values.push_back(mib(leg.pair->busd(kSideB).pid()));
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

// The header's lines on who waits how and where each pair runs.
std::string waits(const BusOptions& o, Rig& rig, const std::string& mine, const std::string& peer) {
  auto pin = [&](size_t i) { return pin_of(o, i) >= 0 ? ", cpu " + std::to_string(pin_of(o, i)) : ""; };
  std::string s = std::string("  busbench (").append(mine).append(", on B): wait=").append(o.wait).append(pin(0))
                      .append("; ").append(peer).append(" (on A): wait=").append(o.wait).append(pin(1));
  if (rig.size() > 1) s.append(" (one per pair; the other pair's sleeps while one is measured)");
  for (Leg& leg : rig.legs()) {
    const std::string pre = leg.label.empty() ? std::string() : std::string(leg.label).append(" link: ");
    s.append("\n  ").append(pre).append(leg.pair->busd(kSideA).describe())
        .append("\n  ").append(pre).append(leg.pair->busd(kSideB).describe())
        .append("\n  ").append(pre).append(leg.pair->where());
    if (const std::string p = leg.pair->poll_threads(); !p.empty()) s.append("\n  ").append(pre).append(p);
  }
  return s;
}

// The raw TCP baselines' note: where their two sockets are.
std::string raw_path_note(const BusOptions& o, const LinkedPair& pair, Side sender) {
  const Side receiver = sender == kSideA ? kSideB : kSideA;
  auto at = [&](Side s) {
    return std::string(o.netns ? (s == kSideA ? "namespace a, " : "namespace b, ") : "").append(pair.host_ip(s));
  };
  const bool dpdk = o.transport != "tcp";  // a TCP-linked pair beside a DPDK or RDMA one
  return std::string("two processes, sockets at ").append(at(sender)).append(" -> ").append(at(receiver))
      .append(o.netns ? (dpdk ? " (across the veth pair both links use)" : " (across the veth pair the link uses)")
                      : (dpdk ? " (loopback, the tcp link's path)" : " (the link's loopback address)"));
}

// dpdk_pingpong's figures as a latency run. It reports no p99.99, mean or stddev: the p99.99
// column gets its max (the row's note says so), mean and stddev stay 0.
LatencySummary memif_summary(const MemifRtt& m) {
  LatencySummary s;
  s.p50 = m.p50;
  s.p90 = m.p90;
  s.p99 = m.p99;
  s.p999 = m.p999;
  s.p9999 = m.max;
  s.max = m.max;
  s.ops_per_s = m.round_trips_per_s;
  s.count = m.count;
  return s;
}

const LatencyRow* latency_row(const Report& rep, const std::string& name) {
  for (const auto& r : rep.latency_rows()) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

const ThroughputRow* throughput_row(const Report& rep, const std::string& name) {
  for (const auto& r : rep.throughput_rows()) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

// --transport dpdk|rdma, pingpong: the DPDK or RDMA link against busd's TCP link and (dpdk)
// against the raw memif floor, as target lines (medians of same-run ratios).
void pingpong_targets(Report& rep, const BusOptions& o, Rig& rig) {
  rep.set_targets_title(std::string("the ").append(upper_kind(o)).append(" link (medians of same-run ratios)"));
  const LatencyRow* dpdk = latency_row(rep, rig[0].row("pingpong"));
  const LatencyRow* tcp = latency_row(rep, rig[1].row("pingpong"));
  const LatencyRow* memif = latency_row(rep, kRawMemifRow);
  using Field = double LatencySummary::*;
  const std::pair<const char*, Field> fields[] = {{"p50", &LatencySummary::p50}, {"p99", &LatencySummary::p99}};
  if (dpdk != nullptr && tcp != nullptr) {
    for (const auto& [what, field] : fields) {
      TargetLine t;
      t.name = std::string("pingpong, busd ").append(rig[0].label).append(" link / busd tcp link: ").append(what);
      t.value = same_run_ratio(*dpdk, *tcp, field);
      t.unit = "x";
      t.note = "same-run ratio, for comparison";
      rep.target(t);
    }
  }
  if (dpdk == nullptr || memif == nullptr) return;
  // What the raw floor does that busd's link does not (or does): for the reader of a NOT met.
  const std::string setup = std::string("raw memif busy-polls both sides; busd's port poll threads idle ")
                                .append(o.dpdk_idle)
                                .append(o.payload + 42 > 1514 ? "; the raw frame is capped at 1514 B" : "");
  for (const auto& [what, field] : fields) {
    TargetLine t;
    t.name = std::string("pingpong, busd dpdk link / raw memif ping-pong: ").append(what);
    t.value = same_run_ratio(*dpdk, *memif, field);
    t.unit = "x";
    if (field == &LatencySummary::p50) {
      t.limit = 2;
      t.judged = measured_any(*dpdk);
      t.note = std::string("aim: within 2x (").append(setup).append(")");
    } else {
      t.note = "for comparison; the aim (within 2x) is for p50";
    }
    rep.target(t);
  }
}

}  // namespace

int run_link_pingpong(const BusOptions& o) {
  if (o.runs < 1 || (o.count == 0 && o.duration_s <= 0)) throw std::runtime_error("nothing to measure: --count or --duration");
  const bool dpdk = o.transport == "dpdk";
  const bool rdma = o.transport == "rdma";
  const Clock clk = Clock::calibrate();
  const std::string ping = subject_prefix() + ".ping";
  Rig rig(o, "responder", true,
          [&](const std::string& socket, AgentCtl& ctl) { return responder_main(socket, ping, o, ctl); });
  // The responder's subscription reaches busd B as interest over the link: until it has, a
  // request finds no responder.
  for (Leg& leg : rig.legs()) {
    const uint64_t end = clock::mono_ns() + 10'000'000'000ull;
    std::vector<std::byte> probe(o.payload, std::byte{0x42});
    while (!leg.client->request(ping, probe, std::chrono::milliseconds(500))) {
      if (clock::mono_ns() > end) {
        throw std::runtime_error(std::string("no request reached the responder on busd A").append(leg.of("")).append(" within 10 s"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  // The raw DPDK floor: over memif only.
  std::string memif_tool, no_memif;
  if (dpdk && o.baseline) {
    if (o.dpdk == "memif") {
      memif_tool = dpdk_pingpong_tool(no_memif);
    } else {
      no_memif = "dpdk_pingpong runs over memif only: across the veth pair the raw baseline is TCP";
    }
  }

  std::string header = std::string("busbench pingpong --transport ").append(o.transport)
                           .append(": request/reply round trips across ");
  if (dpdk) {
    header.append("a DPDK link between two busd (").append(o.dpdk)
        .append("), next to a TCP link between two more on the same path, ");
  } else if (rdma) {
    header.append("an RDMA link between two busd, next to a TCP link between two more on loopback (no raw RDMA "
                  "baseline: busd's RDMA link is compared with busd's TCP link and raw TCP), ");
  } else {
    header.append("a link between two busd, ");
  }
  header.append(std::to_string(o.payload)).append(" B payload, ")
      .append(o.duration_s > 0 ? num(o.duration_s) + " s" : std::to_string(o.count) + " trips").append(" x ")
      .append(std::to_string(o.runs)).append(" runs (+").append(std::to_string(o.warmup)).append(" warm-up)\n")
      .append(waits(o, rig, "requester", "responder")).append("\n  clock ").append(clk.describe())
      .append("; timeout ").append(std::to_string(o.timeout_ms)).append(" ms per request");
  Report rep(std::string("pingpong-").append(o.transport), header);
  for (const auto& n : o.wait_notes) rep.note(n);
  rep.note(loop_note(o));

  std::vector<CpuMeter> cpu(rig.size());
  for (size_t i = 0; i < rig.size(); ++i) {
    Leg& leg = rig[i];
    cpu[i].add(leg.of("busbench (requester) on B"), "wait=" + o.wait, {0});
    cpu[i].add(leg.of("busd B"), "wait per busd config", {leg.pair->busd(kSideB).pid()});
    cpu[i].add(leg.of("busd A"), "wait per busd config", {leg.pair->busd(kSideA).pid()});
    cpu[i].add(leg.of("responder on A"), "wait=" + o.wait, {leg.peer.pid()});
  }
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
  raw.tcp = rig[0].pair->tcp_path(kSideA);  // busbench's side (B) connects to A's address, as a TCP link does
  MemifParams memif;
  memif.frame_bytes = std::clamp<uint32_t>(o.payload + 42, 60, 1514);  // Ethernet, IPv4, UDP and the payload
  memif.rounds = raw.rounds;
  memif.warmup = raw.warmup;
  memif.client_lcore = online_cpus() >= 2 ? 1 : 0;
  uint64_t failed = 0, stamped = 0;
  std::string first_error;
  for (int run = 0; run < o.runs; ++run) {
    if (o.baseline) {
      rig.only(kNoLeg);
      progress(o, run, kRawTcpRow);
      Histogram h;
      const double secs = rtt_tcp(raw, clk, h);
      auto& row = rep.latency(kRawTcpRow, raw_path_note(o, *rig[0].pair, kSideB) + ", TCP_NODELAY, blocking, " +
                                              std::to_string(o.payload) + " B each way",
                              true);
      row.runs.push_back(summarize(h, secs));
      row.merged.add(h);
      if (!memif_tool.empty()) {
        progress(o, run, kRawMemifRow);
        const MemifRtt m = rtt_memif(memif_tool, memif);
        std::string note = "dpdk_pingpong: two processes (server on EAL lcore ";
        note.append(std::to_string(memif.server_lcore)).append(", client on lcore ")
            .append(std::to_string(memif.client_lcore))
            .append(") busy-polling rte_eth_rx_burst over memif, no busd; ")
            .append(std::to_string(memif.frame_bytes)).append(" B frames (")
            .append(std::to_string(memif.frame_bytes - 42))
            .append(" B UDP payload). It reports p50, p90, p99, p99.9 and max: its p99.99 column is the max; mean "
                    "and stddev are not reported (0)");
        rep.latency(kRawMemifRow, note, true).runs.push_back(memif_summary(m));
      }
    }
    for (const size_t i : run_order(rig.size(), run)) {
      Leg& leg = rig[i];
      rig.only(i);
      const std::string bus_row = leg.row("pingpong");
      progress(o, run, bus_row.c_str());
      std::vector<Histogram> hops(kMeasuredHops);
      const TripSink sink = [&](const TripTimes& t) {
        const Echo& e = t.request;
        if (e.received_ns < e.request_ts || t.reply_ts < e.received_ns || t.back_ns < t.reply_ts) return;
        const uint64_t out = e.received_ns - e.request_ts, back = t.back_ns - t.reply_ts;
        hops[0].record(out);
        hops[4].record(t.reply_ts - e.received_ns);
        hops[5].record(back);
        if (e.to_busd_ns != 0 || e.in_busd_ns != 0) {
          if (i == 0) ++stamped;
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
      BusTarget& busd_b = leg.pair->busd(kSideB);
      const uint64_t out_before = busd_b.global(Global::link_messages_out);
      const uint64_t link_before = out_before + busd_b.global(Global::link_messages_in);
      cpu[i].start();
      RunResult r = measure(*leg.client, ping, o, clk, &sink, nullptr);
      cpu[i].stop(rep, 2.0 * static_cast<double>(r.trips));
      const uint64_t out_after = busd_b.global(Global::link_messages_out);
      const uint64_t link_after = out_after + busd_b.global(Global::link_messages_in);
      failed += r.failed;
      if (first_error.empty()) first_error = r.first_error;
      add_run(rep, bus_row,
              std::string("busbench -> busd B -> ").append(leg.link(o)).append(" -> busd A -> responder, and back; wait=")
                  .append(o.wait),
              false, r);
      if (i == 0) add_hops(rep, hop_names, hops, r.seconds);  // the breakdown is the first pair's
      if (r.trips > 0) {
        rep.fact(leg.of("link messages per round trip"), "(request and reply: 2)")
            .values.push_back(static_cast<double>(link_after - link_before) / static_cast<double>(r.trips));
      }
      rep.fact(leg.of("link messages out of busd B"), "(link_messages_out over the run)")
          .values.push_back(static_cast<double>(out_after - out_before));
      rss_facts(rep, leg);
      leg.pair->check("during run " + std::to_string(run + 1));
    }
  }
  rep.fact("requests failed (timeout, error)", "", true).values.push_back(static_cast<double>(failed));
  if (o.baseline && rig.size() == 1) {
    const LatencyRow* bus = latency_row(rep, rig[0].row("pingpong"));
    const LatencyRow* base = latency_row(rep, kRawTcpRow);
    const double x = bus != nullptr && base != nullptr ? same_run_ratio(*bus, *base, &LatencySummary::p50) : 0;
    char line[160];
    std::snprintf(line, sizeof line, "goal: busd link p50 at most 3x raw TCP p50 between the same endpoints: %.2fx, %s", x,
                  x > 0 && x <= 3.0 ? "met" : "NOT met");
    rep.note(line);
  }
  if (rig.size() > 1) {
    pingpong_targets(rep, o, rig);
    if (!no_memif.empty()) rep.note(std::string("no raw memif ping-pong row: ").append(no_memif));
    if (rdma) rep.note("no raw RDMA row: the RDMA link is measured against busd's TCP link in the same run");
    rep.note(std::string("per-hop breakdown: the ").append(upper_kind(o)).append(" link's pair (")
                 .append(rig[0].row("pingpong")).append(")"));
  }
  if (o.payload < kEcho) rep.note("no per-hop breakdown: the payload is under 24 B (the responder echoes times in it)");
  rep.note("one host: busbench, the responder and both busd read one CLOCK_MONOTONIC, so the one-way hops are "
           "exact; between hosts they would include the clocks' skew");
  if (stamped == 0) rep.note("no request carried busd B's hop stamps: the busd hops could not be split");
  rep.note("CPU per million messages (= CPU-us per message): a round trip is two messages (request and reply)");
  if (rig.size() > 1) {
    rep.note(taking_turns(o));
  }
  rig.stop();
  if (failed > 0) {
    std::fprintf(stderr, "busbench: %llu requests failed; first: %s\n", static_cast<unsigned long long>(failed),
                 first_error.c_str());
  }
  return finish(rep, o, failed > 0 ? 1 : 0);
}

int run_link_pubsub(const BusOptions& o) {
  if (o.subscribers != 1) throw std::runtime_error("pubsub --transport " + o.transport + ": one subscriber (on busd A)");
  if (o.count == 0) throw std::runtime_error("pubsub needs --count (messages per run)");
  const bool beside = o.transport != "tcp";  // dpdk, rdma: a TCP-linked pair beside the first
  const Clock clk = Clock::calibrate();
  const std::string subject = subject_prefix() + ".pub";
  Rig rig(o, "subscriber", false,
          [&](const std::string& socket, AgentCtl& ctl) { return subscriber_main(socket, subject, 0, o, ctl); });
  std::vector<std::unique_ptr<Burst>> bursts;
  for (size_t i = 0; i < rig.size(); ++i) {
    bursts.push_back(std::make_unique<Burst>(*rig[i].client, subject, &rig.ctl(i), 1, o.payload));
    bursts.back()->probe(10'000);  // until the subscription has crossed the link
  }

  auto tmpl = EnvelopeTemplate::make({subject});
  if (!tmpl) throw std::runtime_error(tmpl.error().message());
  const auto record = static_cast<uint32_t>(tmpl->size_for(o.payload));
  std::string header = std::string("busbench pubsub --transport ").append(o.transport)
                           .append(": 1 publisher (busbench) -> busd B -> ").append(rig[0].link(o))
                           .append(" -> busd A -> 1 subscriber process, ");
  if (beside) {
    header.append("next to the same over a TCP link between two more busd ")
        .append(o.transport == "rdma" ? "on loopback, " : "on the same path, ");
  }
  header.append(std::to_string(o.payload)).append(" B payload (").append(std::to_string(record))
      .append(" B encoded), ").append(std::to_string(o.count)).append(" messages x ").append(std::to_string(o.runs))
      .append(" runs\n").append(waits(o, rig, "publisher", "subscriber")).append("\n  clock ").append(clk.describe());
  Report rep(std::string("pubsub-").append(o.transport), header);
  for (const auto& n : o.wait_notes) rep.note(n);
  rep.note("msgs/s: messages delivered per second (from the first publish to the subscriber's last message); MB/s "
           "counts payload bytes (encoded bytes for raw TCP)");
  rep.note("CPU seconds per million messages = CPU-us per message published, of each process over the burst");

  const std::string batch = std::to_string(o.batch);
  std::vector<CpuMeter> batched(rig.size()), unbatched(rig.size());
  for (size_t i = 0; i < rig.size(); ++i) {
    Leg& leg = rig[i];
    for (auto [meter, suffix] : {std::pair{&batched[i], ", batch " + batch}, std::pair{&unbatched[i], std::string(", unbatched")}}) {
      meter->add(leg.of("publisher on B (busbench)") + suffix, "wait=" + o.wait, {0});
      meter->add(leg.of("busd B") + suffix, "wait per busd config", {leg.pair->busd(kSideB).pid()});
      meter->add(leg.of("busd A") + suffix, "wait per busd config", {leg.pair->busd(kSideA).pid()});
      meter->add(leg.of("subscriber on A") + suffix, "wait=" + o.wait, {leg.peer.pid()});
    }
  }
  const std::string sender_row = "raw TCP sender on B, batch " + batch;
  const std::string receiver_row = "raw TCP receiver on A";
  const TcpPath stream_path = rig[0].pair->tcp_path(kSideB);  // the sender (the child) on B's side, as the publisher
  const uint64_t raw_records = std::max<uint64_t>(o.count, 100'000);
  std::vector<uint64_t> total_dropped(rig.size(), 0);
  for (int run = 0; run < o.runs; ++run) {
    if (o.baseline) {
      rig.only(kNoLeg);
      progress(o, run, "raw TCP streaming");
      const StreamResult s = stream_tcp_on(record, raw_records, o.batch, stream_path);
      rep.throughput("raw TCP B -> A, batch " + batch,
                     raw_path_note(o, *rig[0].pair, kSideB) + ", " + std::to_string(record) + " B records, " + batch +
                         " per send(), TCP_NODELAY",
                     true, record)
          .msgs_per_s.push_back(s.msgs_per_s);
      rep.process(sender_row, batch + " records per send()")
          .cpu_s_per_million.push_back(s.sender_cpu_s / static_cast<double>(raw_records) * 1e6);
      rep.process(receiver_row, "recv() 64 KiB at a time")
          .cpu_s_per_million.push_back(s.receiver_cpu_s / static_cast<double>(raw_records) * 1e6);
    }
    for (const size_t i : run_order(rig.size(), run)) {
      Leg& leg = rig[i];
      Burst& burst = *bursts[i];
      rig.only(i);
      BusTarget& b = leg.pair->busd(kSideB);
      const uint64_t link_before = b.global(Global::link_messages_out);
      const uint64_t delivered_before = burst.delivered();
      // busd B counts what it drops at the link; anything else lost fails the run, saying what
      // busd counted.
      const std::function<uint64_t()> link_drops = [&b] { return b.global(Global::link_drops_held_full); };
      uint64_t dropped = 0;
      auto burst_run = [&](uint32_t per_flush, CpuMeter& cpu) {
        try {
          const double r = burst.run(o.count, per_flush, cpu, rep, link_drops);
          dropped += burst.last_dropped();
          return r;
        } catch (const std::runtime_error& e) {
          throw std::runtime_error(std::string(e.what()).append("; ").append(link_counters(*leg.pair)));
        }
      };
      const std::string batched_row = leg.row("pubsub B -> A, batch " + batch);
      progress(o, run, batched_row.c_str());
      rep.throughput(batched_row, "publish(Flush::Later), flush every " + batch, false, o.payload)
          .msgs_per_s.push_back(burst_run(o.batch, batched[i]));
      const std::string unbatched_row = leg.row("pubsub B -> A, unbatched");
      progress(o, run, unbatched_row.c_str());
      rep.throughput(unbatched_row, "every publish() wakes busd B", false, o.payload)
          .msgs_per_s.push_back(burst_run(1, unbatched[i]));
      const uint64_t delivered = burst.delivered() - delivered_before;
      const uint64_t link_out = b.global(Global::link_messages_out) - link_before;
      if (delivered > 0) {
        rep.fact(leg.of("link messages per message delivered"), "(1)")
            .values.push_back(static_cast<double>(link_out) / static_cast<double>(delivered));
      }
      rep.fact(leg.of("link messages out of busd B"), "(link_messages_out over the run)")
          .values.push_back(static_cast<double>(link_out));
      rep.fact(leg.of("messages dropped by busd B at the link"), "(hold buffer full)", true)
          .values.push_back(static_cast<double>(dropped));
      total_dropped[i] += dropped;
      rss_facts(rep, leg);
      leg.pair->check("during run " + std::to_string(run + 1));
    }
  }
  uint64_t backwards = 0, failed = 0;
  for (const auto& burst : bursts) {
    backwards += burst->backwards();
    failed += burst->failed();
  }
  rep.fact("messages duplicated or out of order", "", true).values.push_back(static_cast<double>(backwards));
  rep.fact("publish failures", "", true).values.push_back(static_cast<double>(failed));
  for (size_t i = 0; i < rig.size(); ++i) {
    if (total_dropped[i] == 0) continue;
    rep.note("WARNING: " + rig[i].of("busd B") + " dropped " + std::to_string(total_dropped[i]) +
             " messages at the link (link_drops_held_full): its hold buffer for A (hold_bytes, 8 MiB by default) "
             "filled while the link was up, and busd does not hold a local publisher back for a peer that "
             "acknowledges slowly. msgs/s counts the messages delivered");
  }
  if (beside) {
    rep.set_targets_title(std::string("the ").append(upper_kind(o)).append(" link (medians of same-run ratios)"));
    for (const std::string& what : {"batch " + batch, std::string("unbatched")}) {
      const ThroughputRow* d = throughput_row(rep, rig[0].row("pubsub B -> A, " + what));
      const ThroughputRow* t = throughput_row(rep, rig[1].row("pubsub B -> A, " + what));
      if (d == nullptr || t == nullptr) continue;
      TargetLine line;
      line.name = std::string("pubsub ").append(what).append(", busd ").append(rig[0].label).append(" link / busd tcp link: msgs/s");
      line.value = same_run_ratio(*d, *t);
      line.unit = "x";
      line.note = "same-run ratio, for comparison";
      rep.target(line);
    }
    if (o.transport == "dpdk") {
      rep.note("no raw DPDK row: dpdk_pingpong measures round trips (one frame in flight), not a one-way stream; the "
               "raw baseline is TCP");
    } else {
      rep.note("no raw RDMA row: the RDMA link is measured against busd's TCP link in the same run; the raw baseline "
               "is TCP");
    }
    rep.note(taking_turns(o));
  }
  bursts.clear();
  rig.stop();
  return finish(rep, o, backwards + failed > 0 ? 1 : 0);
}

}  // namespace bus::bench
