#!/usr/bin/env bash
# Installs every Debian 12 package that busd's build, tests and benchmarks need.
# Idempotent, non-interactive; safe to run again. Run as root (or with sudo available).
set -euo pipefail

packages=(
  # toolchain and build
  build-essential g++ pkg-config meson ninja-build python3
  # clang + libFuzzer runtime for the fuzz stage
  clang libclang-rt-14-dev
  # chosen libraries
  libflatbuffers-dev flatbuffers-compiler   # wire format + flatc (build step)
  libconcurrentqueue-dev                    # moodycamel ConcurrentQueue
  catch2                                    # unit tests (v2, header-only)
  libcli11-dev                              # command lines
  libexpected-dev                           # tl::expected (g++ 12 has no std::expected in C++20)
  libtomlplusplus-dev                       # busd config files
  libssl-dev openssl                        # TLS on links and remote agents (tests make certificates with the CLI)
  # optional transports: the build detects them and leaves out what is missing
  libdpdk-dev dpdk                          # DPDK 22.11 (kernel-bypass link)
  libibverbs-dev librdmacm-dev ibverbs-utils # rdma-core (RDMA link; ibv_devices)
  # tests and tools: procps (ps, /proc readers), iproute2 (netns, veth, tc and ss for link tests), nftables (packet loss where the kernel has no netem), util-linux (taskset), tcpdump (the DPDK link's interop check)
  procps iproute2 nftables util-linux tcpdump
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
