// dpdk_pingpong: the raw floor for busd's DPDK link. Two processes bounce one Ethernet/IPv4/UDP
// frame over memif with plain rte_eth_rx_burst/rte_eth_tx_burst busy polling on their EAL main
// lcore: no Port, no poll thread, no rings, no reliability layer. busd's link over the same memif
// is compared with this.
//
//   dpdk_pingpong --role server --socket /tmp/pp/memif.sock --lcore 0 &
//   dpdk_pingpong --role client --socket /tmp/pp/memif.sock --lcore 1 --count 100000
//
// The client prints the round-trip time percentiles (ns) and round trips per second (--json: one
// JSON object on one line). Both exit by themselves: the client after --count round trips (it
// then sends a final frame), the server when it sees that frame or after 10 s without any.
#include <sched.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace {

constexpr uint32_t kHeaders = 14 + 20 + 8;
constexpr uint32_t kMinSize = 60;    // Ethernet minimum without FCS
constexpr uint32_t kMaxSize = 1514;  // one 1500-byte MTU frame
constexpr uint8_t kFlagFinal = 1;
constexpr double kServerIdleSeconds = 10;
constexpr double kClientReplySeconds = 2;

struct Options {
  std::string role;
  std::string socket;
  uint64_t count = 100000;
  uint64_t warmup = 1000;
  uint32_t size = 64;
  std::string file_prefix;
  int lcore = -1;
  bool json = false;
};

// The frame: Ethernet (broadcast, memif is point to point), IPv4 10.99.0.1 -> 10.99.0.2, UDP
// 9000 -> 9000, then the sequence number (8 bytes) and a flags byte; zeros up to --size.
void build_frame(uint8_t* f, uint32_t size) {
  std::memset(f, 0, size);
  std::memset(f, 0xff, 6);
  const uint8_t src[6] = {0x02, 0, 0, 0, 0x99, 0x01};
  std::memcpy(f + 6, src, 6);
  f[12] = 0x08;
  f[13] = 0x00;
  uint8_t* ip = f + 14;
  ip[0] = 0x45;
  const uint16_t total = rte_cpu_to_be_16(static_cast<uint16_t>(size - 14));
  std::memcpy(ip + 2, &total, 2);
  ip[6] = 0x40;  // DF
  ip[8] = 64;
  ip[9] = 17;
  const uint8_t addrs[8] = {10, 99, 0, 1, 10, 99, 0, 2};
  std::memcpy(ip + 12, addrs, 8);
  const uint16_t csum = rte_ipv4_cksum(reinterpret_cast<const rte_ipv4_hdr*>(ip));
  std::memcpy(ip + 10, &csum, 2);
  uint8_t* udp = ip + 20;
  const uint16_t port = rte_cpu_to_be_16(9000);
  std::memcpy(udp, &port, 2);
  std::memcpy(udp + 2, &port, 2);
  const uint16_t udp_len = rte_cpu_to_be_16(static_cast<uint16_t>(size - 14 - 20));
  std::memcpy(udp + 4, &udp_len, 2);
}

uint64_t frame_seq(const rte_mbuf* m) {
  uint64_t seq = 0;
  if (m->data_len >= kHeaders + 9) std::memcpy(&seq, rte_pktmbuf_mtod_offset(m, const uint8_t*, kHeaders), 8);
  return seq;
}
uint8_t frame_flags(const rte_mbuf* m) {
  return m->data_len >= kHeaders + 9 ? *rte_pktmbuf_mtod_offset(m, const uint8_t*, kHeaders + 8) : 0;
}

bool wait_link(uint16_t port, double seconds) {
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t end = rte_rdtsc() + static_cast<uint64_t>(seconds * static_cast<double>(hz));
  while (rte_rdtsc() < end) {
    rte_eth_link link;
    std::memset(&link, 0, sizeof link);
    if (rte_eth_link_get_nowait(port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP) return true;
    usleep(1000);
  }
  return false;
}

// A memif client's start fails while the server's socket is not there yet: retry for a while.
bool start_port(uint16_t port, double seconds) {
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t end = rte_rdtsc() + static_cast<uint64_t>(seconds * static_cast<double>(hz));
  while (rte_eth_dev_start(port) != 0) {
    if (rte_rdtsc() > end) return false;
    usleep(20000);
  }
  return true;
}

// Sends one mbuf, retrying while the ring is full (bounded). false: not sent (freed).
bool send_one(uint16_t port, rte_mbuf* m) {
  for (int i = 0; i < 1000000; ++i) {
    if (rte_eth_tx_burst(port, 0, &m, 1) == 1) return true;
  }
  rte_pktmbuf_free(m);
  return false;
}

int run_server(uint16_t port) {
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t idle_limit = static_cast<uint64_t>(kServerIdleSeconds * static_cast<double>(hz));
  uint64_t last = rte_rdtsc();
  uint64_t echoed = 0;
  rte_mbuf* pkts[32];
  for (;;) {
    const uint16_t n = rte_eth_rx_burst(port, 0, pkts, 32);
    if (n == 0) {
      if (rte_rdtsc() - last > idle_limit) {
        std::fprintf(stderr, "dpdk_pingpong server: 10 s without a frame, exiting (%" PRIu64 " echoed)\n", echoed);
        return echoed > 0 ? 0 : 1;
      }
      continue;
    }
    last = rte_rdtsc();
    bool final_seen = false;
    for (uint16_t i = 0; i < n; ++i) final_seen = final_seen || (frame_flags(pkts[i]) & kFlagFinal) != 0;
    // Echo the frames as they are (memif is point to point: no addresses to swap).
    const uint16_t sent = rte_eth_tx_burst(port, 0, pkts, n);
    if (sent < n) rte_pktmbuf_free_bulk(pkts + sent, n - sent);
    echoed += sent;
    if (final_seen) {
      std::fprintf(stderr, "dpdk_pingpong server: final frame seen, %" PRIu64 " echoed\n", echoed);
      return 0;
    }
  }
}

int run_client(uint16_t port, rte_mempool* pool, const Options& o) {
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t reply_limit = static_cast<uint64_t>(kClientReplySeconds * static_cast<double>(hz));
  std::vector<uint8_t> tmpl(o.size);
  build_frame(tmpl.data(), o.size);
  std::vector<uint64_t> rtt(o.count);
  rte_mbuf* pkts[32];
  uint64_t first_start = 0, last_end = 0;

  const uint64_t total = o.warmup + o.count;
  for (uint64_t seq = 0; seq < total; ++seq) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool);
    if (m == nullptr) {
      std::fprintf(stderr, "dpdk_pingpong client: mbuf pool empty\n");
      return 1;
    }
    uint8_t* f = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(o.size)));
    std::memcpy(f, tmpl.data(), o.size);
    std::memcpy(f + kHeaders, &seq, 8);
    const uint64_t t0 = rte_rdtsc();
    if (seq == o.warmup) first_start = t0;
    if (!send_one(port, m)) {
      std::fprintf(stderr, "dpdk_pingpong client: the port does not take frames (seq %" PRIu64 ")\n", seq);
      return 1;
    }
    bool back = false;
    while (!back) {
      const uint16_t n = rte_eth_rx_burst(port, 0, pkts, 32);
      for (uint16_t i = 0; i < n; ++i) back = back || frame_seq(pkts[i]) == seq;
      if (n > 0) rte_pktmbuf_free_bulk(pkts, n);
      if (!back && rte_rdtsc() - t0 > reply_limit) {
        std::fprintf(stderr, "dpdk_pingpong client: no reply to frame %" PRIu64 " within %.0f s\n", seq, kClientReplySeconds);
        return 1;
      }
    }
    const uint64_t t1 = rte_rdtsc();
    if (seq >= o.warmup) rtt[seq - o.warmup] = t1 - t0;
    last_end = t1;
  }
  // Tell the server to exit (a few times: it costs nothing and survives a full ring).
  for (int i = 0; i < 3; ++i) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool);
    if (m == nullptr) break;
    uint8_t* f = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(o.size)));
    std::memcpy(f, tmpl.data(), o.size);
    const uint64_t seq = ~uint64_t{0};
    std::memcpy(f + kHeaders, &seq, 8);
    f[kHeaders + 8] = kFlagFinal;
    (void)send_one(port, m);
  }

  std::sort(rtt.begin(), rtt.end());
  const double ns_per_cycle = 1e9 / static_cast<double>(hz);
  auto pct = [&](double p) {
    size_t i = static_cast<size_t>(p * static_cast<double>(rtt.size()));
    if (i >= rtt.size()) i = rtt.size() - 1;
    return static_cast<double>(rtt[i]) * ns_per_cycle;
  };
  const double seconds = static_cast<double>(last_end - first_start) / static_cast<double>(hz);
  const double per_s = seconds > 0 ? static_cast<double>(o.count) / seconds : 0;
  const double maxv = static_cast<double>(rtt.back()) * ns_per_cycle;
  if (o.json) {
    std::printf("{\"tool\":\"dpdk_pingpong\",\"transport\":\"memif\",\"wait\":\"busy-poll\",\"size\":%u,"
                "\"count\":%" PRIu64 ",\"warmup\":%" PRIu64 ",\"client_lcore\":%d,\"p50_ns\":%.0f,"
                "\"p90_ns\":%.0f,\"p99_ns\":%.0f,\"p999_ns\":%.0f,\"max_ns\":%.0f,\"round_trips_per_s\":%.0f}\n",
                o.size, o.count, o.warmup, o.lcore, pct(0.50), pct(0.90), pct(0.99), pct(0.999), maxv, per_s);
  } else {
    std::printf("dpdk_pingpong memif: %u-byte frames, %" PRIu64 " round trips (%" PRIu64
                " warm-up), both sides busy-poll rte_eth_rx_burst (client on lcore %d)\n",
                o.size, o.count, o.warmup, o.lcore);
    std::printf("  RTT ns: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n", pct(0.50), pct(0.90), pct(0.99),
                pct(0.999), maxv);
    std::printf("  round trips/s: %.0f\n", per_s);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Raw DPDK memif ping-pong (busy polling, no busd): the floor for busd's DPDK link"};
  app.add_option("--role", o.role, "server or client")->required()->check(CLI::IsMember({"server", "client"}));
  app.add_option("--socket", o.socket, "memif control socket path (its directory must exist)")->required();
  app.add_option("--count", o.count, "measured round trips (client)")->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
  app.add_option("--warmup", o.warmup, "round trips before measuring (client)");
  app.add_option("--size", o.size, "Ethernet frame bytes without FCS (60..1514)")->check(CLI::Range(kMinSize, kMaxSize));
  app.add_option("--file-prefix", o.file_prefix, "EAL --file-prefix (default dpdk_pingpong_<role>_<pid>)");
  app.add_option("--lcore", o.lcore, "EAL lcore (CPU) to run on (default: server 0, client 1)");
  app.add_flag("--json", o.json, "client: one JSON object on one line");
  CLI11_PARSE(app, argc, argv);

  const bool server = o.role == "server";
  if (o.lcore < 0) o.lcore = server ? 0 : 1;
  if (o.file_prefix.empty()) o.file_prefix = "dpdk_pingpong_" + o.role + "_" + std::to_string(getpid());

  // EAL's log lines go to stderr so that --json leaves stdout to the one JSON line.
  rte_openlog_stream(stderr);
  std::vector<std::string> args = {
      "dpdk_pingpong", "-l", std::to_string(o.lcore), "--no-huge", "-m", "256", "--no-pci", "--no-telemetry",
      "--log-level=lib.eal:warning", "--file-prefix=" + o.file_prefix,
      "--vdev=net_memif0,role=" + o.role + ",id=0,socket=" + o.socket + ",socket-abstract=no"};
  std::vector<char*> eal_argv;
  for (auto& a : args) eal_argv.push_back(a.data());
  eal_argv.push_back(nullptr);
  if (rte_eal_init(static_cast<int>(args.size()), eal_argv.data()) < 0) {
    std::fprintf(stderr, "dpdk_pingpong: rte_eal_init: %s\n", rte_strerror(rte_errno));
    return 1;
  }

  int rc = 1;
  uint16_t port = 0;
  rte_mempool* pool = nullptr;
  rte_eth_conf conf;
  std::memset(&conf, 0, sizeof conf);
  if (rte_eth_dev_get_port_by_name("net_memif0", &port) != 0) {
    std::fprintf(stderr, "dpdk_pingpong: no net_memif0 port\n");
  } else if ((pool = rte_pktmbuf_pool_create("pp_pool", 4095, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id())) == nullptr) {
    std::fprintf(stderr, "dpdk_pingpong: mbuf pool: %s\n", rte_strerror(rte_errno));
  } else if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 ||
             rte_eth_rx_queue_setup(port, 0, 1024, rte_socket_id(), nullptr, pool) != 0 ||
             rte_eth_tx_queue_setup(port, 0, 1024, rte_socket_id(), nullptr) != 0) {
    std::fprintf(stderr, "dpdk_pingpong: setting up net_memif0 failed\n");
  } else if (!start_port(port, 10)) {
    std::fprintf(stderr, "dpdk_pingpong %s: net_memif0 did not start within 10 s (no server on %s?)\n", o.role.c_str(),
                 o.socket.c_str());
  } else if (!wait_link(port, 10)) {
    std::fprintf(stderr, "dpdk_pingpong %s: memif link not up after 10 s (is the %s running on %s?)\n", o.role.c_str(),
                 server ? "client" : "server", o.socket.c_str());
  } else {
    rc = server ? run_server(port) : run_client(port, pool, o);
  }
  if (pool != nullptr) {
    (void)rte_eth_dev_stop(port);
    (void)rte_eth_dev_close(port);
    rte_mempool_free(pool);
  }
  // EAL leaves its runtime directory (/var/run/dpdk/<file-prefix>, a few MB of memory-backed
  // files) behind; the default prefix is new every run, so remove it.
  const std::string runtime_dir = rte_eal_get_runtime_dir();
  rte_eal_cleanup();
  std::error_code ec;
  if (runtime_dir.find("/dpdk/") != std::string::npos) std::filesystem::remove_all(runtime_dir, ec);
  return rc;
}
