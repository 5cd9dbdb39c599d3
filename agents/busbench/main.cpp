// busbench: the coordination-latency harness. Every scenario prints its baselines measured in
// the same run, medians over several runs, and how each side waited.
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "rdma_kit.hpp"
#include "scenarios.hpp"

namespace {

void add_common(CLI::App* app, bus::bench::CommonOptions& o) {
  app->add_option("--runs", o.runs, "repetitions; the table shows medians")->check(CLI::Range(1, 1000));
  app->add_option("--json", o.json, "also write the results as JSON to FILE");
  app->add_flag("--quiet", o.quiet, "no progress line on stderr (none unless stderr is a terminal)");
}

struct BusCli {
  bus::bench::BusOptions o;
  int baseline = 0;  // 0: the scenario's default; > 0 on; < 0 off
  bool quick = false;
  CLI::App* app = nullptr;
  std::vector<CLI::Option*> dpdk_only;  // --dpdk, --dpdk-idle: refused without --transport dpdk
  CLI::Option* rdma_addr = nullptr;     // --rdma-addr: refused without --transport rdma
};

// The exit status of a run that cannot happen on this host (meson and busbench's tests: SKIP).
constexpr int kSkip = 77;

// Options every scenario through busd takes.
void add_bus_common(CLI::App* app, BusCli& c) {
  auto& o = c.o;
  c.app = app;
  add_common(app, o);
  app->add_option("--hgrm", o.hgrm_dir, "write HdrHistogram .hgrm percentile files into DIR");
  app->add_option("--plot", o.plot, "draw latency by percentile (log scale) of the run and its baselines to FILE.svg");
  app->add_option("--payload", o.payload, "payload bytes per message")->check(CLI::Range(0u, 1u << 19));
  app->add_option("--count", o.count, "per run: round trips, rounds, messages or requests (a cap with --duration)");
  app->add_option("--duration", o.duration_s, "per run, seconds (instead of --count)")->check(CLI::Range(0.0, 3600.0));
  app->add_option("--warmup", o.warmup, "unmeasured round trips/rounds before each run");
  app->add_option("--rate", o.rate, "open loop: send at this many per second, coordinated omission corrected "
                                    "(default: closed loop, not corrected)")->check(CLI::Range(0.0, 1e9));
  app->add_option("--timeout-ms", o.timeout_ms, "per request (scatter: per round)")->check(CLI::Range(1u, 600'000u));
  app->add_option("--wait", o.wait, "wait strategy of busbench's agents: spin | yield | adaptive[:<n>us] | block");
  app->add_option("--busd-wait", o.busd_wait,
                  "wait strategy of the busd busbench starts (default: adaptive; block when busbench's spinning "
                  "agents fill every CPU)");
  app->add_flag("--force-spin", o.force_spin,
                "run even with more busy-spinning parties (--wait spin, --busd-wait spin) than CPUs; each run is "
                "then capped at 5 s");
  app->add_option("--pin", o.pin, "CPUs for busbench, its agents, busd (-1: not pinned), e.g. --pin 0,1,-1")
      ->delimiter(',')->expected(1, 3);
  app->add_option("--address", o.address, "measure the busd listening at this socket instead of starting one");
  app->add_option("--transport", o.transport,
                  "shm (one busd, local shared memory); tcp (pingpong and pubsub: two busd linked over TCP); dpdk "
                  "(pingpong and pubsub: two busd linked over DPDK, next to two linked over TCP); rdma (pingpong and "
                  "pubsub: two busd linked over RDMA on this host's RDMA interface, next to two linked over TCP; "
                  "without an RDMA device it says why and exits 77)");
  app->add_option("--busd", o.busd_bin, "busd binary to start (default: $BUSD_BIN, next to busbench, $PATH)");
  app->add_flag("--baseline,!--no-baseline", c.baseline, "interleave the raw baselines with busd's runs");
  app->add_flag("--quick", c.quick, "a short run (3 runs, fewer messages)");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"busbench: coordination latency and throughput of busd, with same-run baselines"};
  app.require_subcommand(1);

  bus::bench::RingOptions ring;
  std::string ring_wait = "spin";
  bool quick = false;
  auto* r = app.add_subcommand("ring", "shared-memory ring alone: round trip and streaming between two threads");
  add_common(r, ring);
  r->add_option("--hgrm", ring.hgrm_dir, "write HdrHistogram .hgrm percentile files into DIR");
  r->add_option("--payload", ring.payload, "record size in bytes")->check(CLI::Range(8u, 1u << 20));
  r->add_option("--rounds", ring.rounds, "round trips per run");
  r->add_option("--warmup", ring.warmup, "round trips before measuring");
  r->add_option("--stream", ring.stream, "records per streaming run (0: skip streaming)");
  r->add_option("--batch", ring.batch, "records per publish when streaming")->check(CLI::Range(1u, 4096u));
  r->add_option("--capacity", ring.capacity, "ring data bytes (power of two)");
  r->add_option("--wait", ring_wait, "spin | yield | adaptive[:<n>us] | block");
  r->add_option("--cpus", [&](const CLI::results_t& v) {
      if (v.size() != 2) return false;
      ring.cpu_ping = std::stoi(v[0]);
      ring.cpu_pong = std::stoi(v[1]);
      return true;
    }, "two CPUs to pin the two threads to (-1: no pinning)")->expected(2)->delimiter(',');
  r->add_flag("--quick", quick, "a short run: 3 runs of 20k round trips and 1M records");

  bus::bench::EnvelopeOptions env;
  auto* e = app.add_subcommand("envelope", "cost of building and verifying an Envelope per message");
  add_common(e, env);
  e->add_option("--payload", env.payload, "payload bytes")->check(CLI::Range(0u, 1u << 20));
  e->add_option("--iterations", env.iterations, "messages per run");

  BusCli pp, ld, sc, ps, ag;
  add_bus_common(app.add_subcommand("pingpong", "request/reply round trips through busd, next to raw baselines"), pp);
  add_bus_common(app.add_subcommand("loaded", "pingpong while a background publisher pushes --load-rate through the same busd"), ld);
  ld.app->add_option("--load-rate", ld.o.load_rate, "background messages per second")->check(CLI::Range(1.0, 1e8));
  auto* scatter = app.add_subcommand("scatter", "one coordinator, N workers: the latency of one coordination round");
  add_bus_common(scatter, sc);
  sc.o.count = 5'000;
  scatter->add_option("--workers", sc.o.workers, "worker processes (1..64)")->check(CLI::Range(1u, 64u));
  scatter->add_option("--quorum", sc.o.quorum, "a round ends at this many replies (default: all)");
  auto* pubsub = app.add_subcommand("pubsub", "one publisher to N subscribers: msgs/s and MB/s, batched and not");
  add_bus_common(pubsub, ps);
  ps.o.count = 500'000;
  pubsub->add_option("--subscribers", ps.o.subscribers, "subscriber processes")->check(CLI::Range(1u, 256u));
  pubsub->add_option("--batch", ps.o.batch, "messages per flush when batching")->check(CLI::Range(1u, 65536u));
  auto* agents = app.add_subcommand("agents", "K agent processes doing request/reply to a queue group of services");
  add_bus_common(agents, ag);
  ag.o.runs = 1;
  ag.o.count = 0;
  ag.o.duration_s = 10;
  ag.o.timeout_ms = 5'000;
  agents->add_option("--agents", ag.o.agents, "agent processes connected at once")->check(CLI::Range(1u, 100'000u));
  agents->add_option("--services", ag.o.services, "service processes in the queue group")->check(CLI::Range(1u, 64u));
  agents->add_option("--agent-rate", ag.o.agent_rate, "requests per second per agent")->check(CLI::Range(0.01, 1e6));
  for (BusCli* c : {&pp, &ps}) {
    c->app->add_flag("--netns", c->o.netns,
                     "with --transport tcp, or dpdk with --dpdk af_packet (root only): busd A and its agent in one "
                     "network namespace, busd B and busbench in another, joined by a veth pair (removed at the end)");
    c->dpdk_only.push_back(
        c->app->add_option("--dpdk", c->o.dpdk,
                           "with --transport dpdk: memif (default: between two busd on this host) or af_packet "
                           "(with --netns: each busd's DPDK port on its end of the veth pair)")
            ->check(CLI::IsMember({"memif", "af_packet"})));
    c->dpdk_only.push_back(
        c->app->add_option("--dpdk-idle", c->o.dpdk_idle,
                           "with --transport dpdk: how the busd's port poll threads wait: adaptive (default: poll, "
                           "then sleep), busy (never sleep: the two of them take two cores) or inline (no poll "
                           "thread: each busd polls its port in its own loop, sleeping at most 20 us)")
            ->check(CLI::IsMember({"adaptive", "busy", "inline"})));
    c->rdma_addr = c->app->add_option(
        "--rdma-addr", c->o.rdma_addr,
        "with --transport rdma: the address of this host's RDMA interface both busd of the RDMA pair use (busd A "
        "listens there, busd B dials from it; rdma_cm picks the device by it). Default: $BUS_RDMA_ADDR, else the "
        "first non-loopback IPv4 address");
  }
  for (BusCli* c : {&pp, &ps, &sc}) {
    c->app->add_option("--lanes", c->o.lanes,
                       "busd with direct lanes on, off, or both: two private busd, runs interleaved (default: both; "
                       "not with --address or --transport tcp|dpdk|rdma)")
        ->check(CLI::IsMember({"on", "off", "both"}));
  }
  pp.app->add_flag("--hops,!--no-hops", pp.o.hops,
                   "per-hop breakdown: busd stamps its hops into each message, the responder reads the clock and "
                   "echoes them (default on; off: nothing but the round trip is timed)");
  pp.app->add_option("--stall-ms", pp.o.stall_ms, "the responder stalls once for this long, halfway through run 1 "
                                                  "(shows what coordinated-omission correction does)");

  CLI11_PARSE(app, argc, argv);
  // The progress line rewrites itself with \r: only on a terminal.
  if (::isatty(STDERR_FILENO) == 0) ring.quiet = env.quiet = true;
  for (BusCli* c : {&pp, &ld, &sc, &ps, &ag}) {
    if (::isatty(STDERR_FILENO) == 0) c->o.quiet = true;
    if (!c->app->parsed()) continue;
    const bool default_baseline = c == &pp || c == &ps;
    c->o.baseline = c->baseline == 0 ? default_baseline : c->baseline > 0;
    if (c->quick) {
      c->o.runs = 3;
      if (c == &ps) {
        c->o.count = 100'000;
      } else if (c == &ag) {
        c->o.duration_s = 3;
      } else {
        c->o.count = std::min<uint64_t>(c->o.count, 5'000);
        c->o.warmup = std::min<uint64_t>(c->o.warmup, 500);
      }
    }
    try {
      auto& o = c->o;
      const bool lanes_scenario = c == &pp || c == &ps || c == &sc;
      if (lanes_scenario && !o.lanes.empty()) {
        if (!o.address.empty()) {
          throw std::runtime_error("--lanes: busbench sets [busd] lanes in the busd it starts; the busd at --address "
                                   "has lanes as its own config says (drop --lanes, or drop --address)");
        }
        if (o.transport != "shm") {
          throw std::runtime_error("--lanes: lanes join agents of one busd; --transport " + o.transport +
                                   " measures a link between two");
        }
      } else if (lanes_scenario && o.address.empty() && o.transport == "shm") {
        o.lanes = "both";
      }
      const bool linked = o.transport == "tcp" || o.transport == "dpdk" || o.transport == "rdma";
      if (c->rdma_addr != nullptr && c->rdma_addr->count() > 0 && o.transport != "rdma") {
        throw std::runtime_error("--rdma-addr goes with --transport rdma");
      }
      if (o.transport == "rdma" && o.netns) {
        throw std::runtime_error("--netns goes with --transport tcp or dpdk: the RDMA pair runs on this host's RDMA "
                                 "interface (--rdma-addr), not in network namespaces");
      }
      if (o.transport != "dpdk") {
        for (const CLI::Option* opt : c->dpdk_only) {
          if (opt->count() > 0) throw std::runtime_error(opt->get_name() + " goes with --transport dpdk");
        }
      } else if (o.dpdk == "af_packet" && !o.netns) {
        throw std::runtime_error("--dpdk af_packet puts each busd's DPDK port on its end of a veth pair between two "
                                 "network namespaces: add --netns (root)");
      } else if (o.dpdk == "memif" && o.netns) {
        throw std::runtime_error("--netns with --transport dpdk needs --dpdk af_packet: memif joins two busd on this "
                                 "host through shared memory, with no network to cross");
      }
      // How busbench's parties wait: spinners against CPUs, busd's wait (see plan_waits).
      const std::string scenario = c->app->get_name();
      // dpdk, rdma: the DPDK- or RDMA-linked pair and the TCP-linked pair beside it.
      const size_t busds = o.transport == "dpdk" || o.transport == "rdma" ? 4
                           : o.transport == "tcp"                          ? 2
                           : o.lanes == "both"                             ? 2
                                                                           : 1;
      if (c == &pp) {
        bus::bench::plan_waits(o, scenario, 1, "responder", busds, true);
      } else if (c == &ld) {
        bus::bench::plan_waits(o, scenario, 2, "responder, load sink", busds, true);
      } else if (c == &sc) {
        bus::bench::plan_waits(o, scenario, o.workers, std::to_string(o.workers) + " workers", busds, true);
      } else if (c == &ps) {
        bus::bench::plan_waits(o, scenario, o.subscribers, std::to_string(o.subscribers) + " subscribers", busds, false);
      } else {
        bus::bench::plan_waits(o, scenario, o.agents + o.services,
                               std::to_string(o.agents) + " agents, " + std::to_string(o.services) + " services", busds,
                               false);
      }
      if (linked) {
        if (!o.address.empty()) {
          throw std::runtime_error("--address measures one running busd; --transport " + o.transport +
                                   " starts its own linked pairs");
        }
        if (c != &pp && c != &ps) {
          throw std::runtime_error("--transport " + o.transport + ": pingpong and pubsub measure links; " +
                                   c->app->get_name() + " runs on one busd (--transport shm)");
        }
        // No RDMA device (or a build without rdma-core): nothing can run; say why, as a skip.
        if (o.transport == "rdma") {
          if (const std::string why = bus::bench::rdma_problem(); !why.empty()) {
            std::printf("busbench: --transport rdma: %s\n", why.c_str());
            std::fflush(stdout);
            return kSkip;
          }
        }
        if (c == &pp) return bus::bench::run_link_pingpong(o);
        return bus::bench::run_link_pubsub(o);
      }
      if (o.netns) {
        throw std::runtime_error("--netns puts two linked busd in two network namespaces: it needs --transport tcp or dpdk");
      }
      if (c == &pp) return bus::bench::run_pingpong(c->o);
      if (c == &ld) return bus::bench::run_loaded(c->o);
      if (c == &sc) return bus::bench::run_scatter(c->o);
      if (c == &ps) return bus::bench::run_pubsub(c->o);
      return bus::bench::run_agents(c->o);
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "\nbusbench: %s\n", ex.what());
      return 1;
    }
  }
  try {
    if (r->parsed()) {
      auto ws = bus::shm::parse_wait_strategy(ring_wait);
      if (!ws) {
        std::fprintf(stderr, "busbench: --wait: %s\n", ws.error().message().c_str());
        return 2;
      }
      ring.wait = *ws;
      if (quick) {
        ring.runs = 3;
        ring.rounds = 20'000;
        ring.warmup = 2'000;
        ring.stream = 1'000'000;
      }
      return bus::bench::run_ring(ring);
    }
    if (e->parsed()) return bus::bench::run_envelope(env);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "busbench: %s\n", ex.what());
    return 1;
  }
  return 2;
}
