#!/usr/bin/env bash
# Installs every Debian 12 package that busd's build, tests and benchmarks need, and the npm
# packages of the Kubernetes manifest validator (deploy/k8s/validator).
# Idempotent, non-interactive; safe to run again. Run as root (or with sudo available).
set -euo pipefail

packages=(
  # toolchain and build
  build-essential g++ pkg-config meson ninja-build python3
  python3-setuptools python3-pytest           # the Python SDK (python/): offline pip install, its tests
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
  # the metrics test parses busd's Prometheus text with prometheus_client's parser
  python3-prometheus-client
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node + npm for the Kubernetes manifest validator below: Debian's, unless a node with npm is
# already there (a nodejs from elsewhere bundles npm, and Debian's npm package would conflict).
if ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The offline Kubernetes manifest validator (tests/deploy/k8s_validate.sh): npm packages with the
# Kubernetes object schemas, at the exact versions of deploy/k8s/validator/package-lock.json, in
# their own directory (BUSD_K8S_VALIDATOR, default /opt/busd/k8s-validator); skipped when that
# lock file is what was installed last (installed.lock, written once npm ci succeeded).
validator_src="$(cd "$(dirname "$0")" && pwd)/k8s/validator"
validator_dir=${BUSD_K8S_VALIDATOR:-/opt/busd/k8s-validator}
if cmp -s "$validator_src/package-lock.json" "$validator_dir/installed.lock"; then
  echo "install-deps: k8s validator already installed in $validator_dir"
else
  echo "install-deps: installing the k8s validator (npm ci) into $validator_dir"
  $SUDO mkdir -p "$validator_dir"
  $SUDO rm -f "$validator_dir/installed.lock"
  $SUDO cp "$validator_src/package.json" "$validator_src/package-lock.json" "$validator_dir/"
  (cd "$validator_dir" && $SUDO npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
  $SUDO cp "$validator_src/package-lock.json" "$validator_dir/installed.lock"
fi
echo "install-deps: done"
