// busbench scenarios and their options (CLI in main.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bus/limits.hpp"
#include "shm/wait.hpp"

namespace bus::bench {

struct CommonOptions {
  int runs = 5;
  std::string json;      // --json FILE
  std::string hgrm_dir;  // --hgrm DIR
  bool quiet = false;    // no progress line
};

struct RingOptions : CommonOptions {
  uint32_t payload = 64;
  uint64_t rounds = 200'000;
  uint64_t warmup = 20'000;
  uint64_t stream = 10'000'000;
  uint32_t batch = 32;
  uint64_t capacity = 1 << 20;
  shm::WaitStrategy wait = shm::WaitStrategy::spin();
  int cpu_ping = 0;
  int cpu_pong = 1;
};

struct EnvelopeOptions : CommonOptions {
  uint32_t payload = 64;
  uint64_t iterations = 1'000'000;
};

/// Scenarios through busd (pingpong, loaded, scatter, pubsub, agents).
struct BusOptions : CommonOptions {
  // Where and how.
  std::string address;              // an existing busd; "" = start a private one
  std::string transport = "shm";     // "tcp", "dpdk", "rdma": pingpong and pubsub between two linked busd
  bool netns = false;               // tcp, dpdk: busd A and B in two network namespaces joined by a veth pair
  std::string dpdk = "memif";       // dpdk: "memif" (two busd on this host) or "af_packet" (on the veth, --netns)
  std::string dpdk_idle = "adaptive";  // dpdk: the ports' poll threads: "adaptive" or "busy" (never sleep)
  std::string rdma_addr;             // rdma: the RDMA interface's address ("": $BUS_RDMA_ADDR, else the first IPv4)
  std::string busd_bin;
  std::string busd_wait;            // "" (no --busd-wait): plan_waits() picks adaptive, or block
                                    // when busbench's spinning agents fill every CPU
  std::string wait = "adaptive";    // busbench's own agents
  std::vector<int> pin;             // CPUs: busbench, its peer agents, busd (-1 = not pinned)
  std::string lanes;                // pingpong, pubsub, scatter: "on", "off", "both" (one private busd
                                    // each, runs interleaved); "": not chosen (--address, busd's default)
  bool force_spin = false;          // --force-spin: more busy-spinning parties than CPUs anyway
  double slow_cap_s = 0;            // > 0: every run stops after this long (plan_waits: a set-up known to be slow)
  std::vector<std::string> wait_notes;  // what plan_waits() chose and why, for the report
  bool baseline = true;             // raw baselines interleaved with the bus runs
  std::string plot;                 // --plot FILE.svg
  // What.
  uint32_t payload = 64;
  uint64_t count = 20'000;          // per run: round trips, rounds, messages or requests
  double duration_s = 0;            // per run instead of count (count then only caps it)
  uint64_t warmup = 1'000;
  double rate = 0;                  // open loop at this many per second (0: closed loop)
  uint32_t timeout_ms = 2'000;      // per request
  uint32_t stall_ms = 0;            // pingpong: the responder stalls once, mid-run (CO demo)
  bool hops = true;                 // pingpong: hop times in the messages, echoed by the responder
  // loaded
  double load_rate = 50'000;
  // scatter
  uint32_t workers = 4;
  uint32_t quorum = 0;              // 0 = all
  // pubsub
  uint32_t subscribers = 1;
  uint32_t batch = 32;
  // agents
  uint32_t agents = 100;
  uint32_t services = 2;
  double agent_rate = 10;           // requests/s per agent
};

/// Checks and settles how busbench's parties wait, before anything starts:
///  * refuses more busy-spinning parties (wait=spin, and the DPDK ports' poll threads with
///    --dpdk-idle busy: one per busd of the DPDK link) than CPUs, unless --force-spin (each run is
///    then capped at 5 s): `agents` is how many of busbench's agent processes wait as --wait
///    says (`agents_what` names them), `busds` how many busd it starts;
///  * without --busd-wait, picks busd's wait: adaptive, or block when the spinning parties fill
///    every CPU (a busd that spins or waits adaptively would get a CPU once per scheduler
///    tick: milliseconds per message);
///  * caps each run at 5 s (o.slow_cap_s, when the scenario's runs are `capped` by it: round trips
///    and rounds) when the set-up is known to be that slow anyway (--busd-wait given).
/// What it chose and why goes to o.wait_notes. Throws std::runtime_error on refusal.
void plan_waits(BusOptions& o, const std::string& scenario, uint32_t agents, const std::string& agents_what,
                size_t busds, bool capped);

int run_pingpong(const BusOptions& o);
int run_loaded(const BusOptions& o);
int run_scatter(const BusOptions& o);
int run_pubsub(const BusOptions& o);
int run_agents(const BusOptions& o);
/// --transport tcp|dpdk|rdma (scenario_links.cpp): busbench on busd B, its peer agent on busd A
/// (dpdk, rdma: a DPDK- or RDMA-linked pair and a TCP-linked pair beside it, measured in turn).
int run_link_pingpong(const BusOptions& o);
int run_link_pubsub(const BusOptions& o);

int run_ring(const RingOptions& o);
int run_envelope(const EnvelopeOptions& o);

}  // namespace bus::bench
