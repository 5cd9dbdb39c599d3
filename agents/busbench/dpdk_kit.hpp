// What busbench's DPDK runs need besides busd (`--transport dpdk`): where EAL keeps the runtime
// files of a process it leaves behind, and the raw DPDK baseline, transports/dpdk's
// dpdk_pingpong over memif (two processes busy-polling rte_eth_rx_burst: no busd, no poll
// thread, no reliability layer), which busbench spawns and whose JSON line it reads.
#pragma once

#include <cstdint>
#include <string>

namespace bus::bench {

/// EAL's runtime directory of a process started with --file-prefix=`prefix` (what EAL makes:
/// /var/run/dpdk/PREFIX as root, else $XDG_RUNTIME_DIR or /tmp, then dpdk/PREFIX).
std::string eal_runtime_dir(const std::string& prefix);
/// Removes it, for a busd or dpdk_pingpong that was killed (one that exits removes its own):
/// only a busbench prefix ("busbench-..."), never anything else.
void remove_eal_runtime_dir(const std::string& prefix) noexcept;

/// dpdk_pingpong of this build (its path comes from meson: BUSBENCH_DPDK_PINGPONG), or "" with
/// the reason in `why_not` (a build without DPDK, or the binary is not there).
std::string dpdk_pingpong_tool(std::string& why_not);

/// One run of dpdk_pingpong: what its client reports, ns.
struct MemifRtt {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
  double round_trips_per_s = 0;
  uint64_t count = 0;
};
struct MemifParams {
  uint32_t frame_bytes = 64;  // Ethernet frame without FCS, 60..1514
  uint64_t rounds = 20'000;   // measured round trips
  uint64_t warmup = 2'000;
  int server_lcore = 0, client_lcore = 1;
};
/// Runs dpdk_pingpong's server and client (EAL file prefixes of their own, a memif socket in a
/// temporary directory, both removed afterwards) and parses the client's JSON line. Throws
/// std::runtime_error with both sides' output when either fails. Fork only while the process
/// has one thread.
MemifRtt rtt_memif(const std::string& tool, const MemifParams& p);

}  // namespace bus::bench
