// bus::dpdk::Port between two processes over memif (see scenario.hpp): ARP learning, numbered
// payloads both ways with their content checked, two endpoints demultiplexed by UDP port, strays
// counted as "not ours", a failed open that can be retried, and the test-only impairment.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "scenario.hpp"

using namespace dpdk_test;

TEST_CASE("dpdk Port over memif between two processes", "[dpdk][memif]") {
  char dir_template[] = "/tmp/busd_dpdk_memif_XXXXXX";
  const char* dir = ::mkdtemp(dir_template);
  REQUIRE(dir != nullptr);
  const std::string sock = std::string(dir) + "/memif.sock";
  const std::string pid = std::to_string(::getpid());
  const char* bsize = std::getenv("BUS_DPDK_TEST_MEMIF_BSIZE");
  auto memif = [&](int n, const char* role, const std::string& path) {
    return "--vdev=net_memif" + std::to_string(n) + ",role=" + role + ",id=" + std::to_string(n) + ",socket=" + path +
           ",socket-abstract=no" + (bsize != nullptr ? std::string(",bsize=") + bsize : std::string());
  };
  // Distinct lcores and file prefixes per process; 256 MB each without hugepages.
  const std::vector<std::string> common = {"--no-huge", "-m", "256", "--no-pci", "--no-telemetry"};

  SideSpec a;
  a.role = 'A';
  a.eal_args = {"-l", "0"};
  a.eal_args.insert(a.eal_args.end(), common.begin(), common.end());
  a.eal_args.push_back("--file-prefix=busdt_ma_" + pid);
  a.eal_args.push_back(memif(0, "server", sock));
  a.eal_args.push_back(memif(1, "server", sock));
  a.port_name = "net_memif0";
  a.impair_port_name = "net_memif1";

  SideSpec b = a;
  b.role = 'B';
  b.eal_args = {"-l", "1"};
  b.eal_args.insert(b.eal_args.end(), common.begin(), common.end());
  b.eal_args.push_back("--file-prefix=busdt_mb_" + pid);
  b.eal_args.push_back(memif(0, "client", sock));
  b.eal_args.push_back(memif(1, "client", sock));
  b.eal_args.push_back(memif(2, "client", std::string(dir) + "/nobody.sock"));
  b.fail_port_name = "net_memif2";

  // For experiments by hand: BUS_DPDK_TEST_MTU=9000, BUS_DPDK_TEST_BUSY=1 (two busy poll
  // threads: the machine's two cores).
  if (const char* m = std::getenv("BUS_DPDK_TEST_MTU")) a.mtu = b.mtu = static_cast<uint16_t>(std::atoi(m));
  if (std::getenv("BUS_DPDK_TEST_BUSY") != nullptr) a.idle = b.idle = PortOptions::Idle::Busy;

  const Outcome out = run_pair(a, b);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);

  check_main(out, a, 95);
  CHECK(out.b.failed_open_retryable == 1);
  check_impair(out);
}
