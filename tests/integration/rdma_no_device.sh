#!/usr/bin/env bash
# busd configured for RDMA on a host without an RDMA device (or busd built without RDMA) exits at
# start with one clear line, not a crash, and leaves nothing behind:
#   for each of: a kind = "rdma" link; [cluster] rdma_listen alone; an rdma link next to a tcp
#   link and a TCP [cluster] listen:
#     busd --check-config accepts the file (it does not look for a device)
#     busd exits non-zero, by exit() and not by a signal, within 10 s
#     stderr is exactly one line, "busd: ...", naming the link (or rdma_listen) and the reason
#       (ibv_get_device_list's error or "no RDMA device"; built without RDMA: says so)
#     no control socket and no counters page are left, nothing else in the directory
# On a host that has an RDMA device this does not apply: it prints why and exits 77.
# About 1 s.
#   rdma_no_device.sh BUSD HAVE_RDMA(true|false)
set -uo pipefail
busd=$1 have_rdma=$2
skip() { echo "SKIP: $*"; exit 77; }
if [ "$have_rdma" = true ] && [ -d /sys/class/infiniband ] && [ -n "$(ls -A /sys/class/infiniband 2>/dev/null)" ]; then
  skip "this host has an RDMA device ($(ls /sys/class/infiniband | tr '\n' ' ')): busd starts its links; the device test covers it"
fi
dir=$(mktemp -d /tmp/busd-rdma-nodev.XXXXXX)
trap 'rm -rf "$dir"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# check NAME EXPECTED_SUBJECT CONFIG_BODY
check() {
  local name=$1 subject=$2 body=$3
  local run="$dir/$name" before=$failures
  mkdir -p "$run"
  printf '[busd]\nsocket = "%s/busd.sock"\nshm_dir = "%s"\n\n%s\n' "$run" "$run" "$body" >"$run/busd.toml"
  if ! out=$("$busd" --config "$run/busd.toml" --check-config 2>&1); then
    fail "$name: --check-config refused the file: $out"
  fi
  timeout -s KILL 10 "$busd" --config "$run/busd.toml" >"$run/stdout" 2>"$run/stderr"
  local rc=$?
  if [ "$rc" = 0 ]; then
    fail "$name: busd exited 0"
  elif [ "$rc" = 137 ]; then
    fail "$name: busd did not exit within 10 s (it started?)"
  elif [ "$rc" -gt 128 ]; then
    fail "$name: busd died of signal $((rc - 128))"
  fi
  local lines
  lines=$(wc -l <"$run/stderr")
  [ "$lines" = 1 ] || fail "$name: $lines lines on stderr, not 1: $(cat "$run/stderr")"
  [ -s "$run/stdout" ] && fail "$name: stdout not empty: $(cat "$run/stdout")"
  local line
  line=$(head -n 1 "$run/stderr")
  case "$line" in
    "busd: "*) ;;
    *) fail "$name: the line does not start with 'busd: ': $line" ;;
  esac
  case "$line" in
    *"$subject"*) ;;
    *) fail "$name: the line does not name $subject: $line" ;;
  esac
  if [ "$have_rdma" = true ]; then
    case "$line" in
      *"ibv_get_device_list"* | *"no RDMA device"*) ;;
      *) fail "$name: the line does not give the device problem: $line" ;;
    esac
  else
    case "$line" in
      *"built without RDMA"*) ;;
      *) fail "$name: the line does not say busd was built without RDMA: $line" ;;
    esac
  fi
  local left
  left=$(cd "$run" && ls -A | grep -v -x -e busd.toml -e stdout -e stderr)
  [ -z "$left" ] && ! [ -e "$run/busd.sock" ] || fail "$name: left behind: $left"
  [ "$failures" = "$before" ] && echo "ok: $name: rc=$rc: $line"
}

check link 'link to 10.0.0.2:7471 (kind = "rdma")' '[[links]]
kind = "rdma"
peer = "10.0.0.2:7471"
local = "10.0.0.1"
send_depth = 128'

check listen 'cluster.rdma_listen = "10.0.0.1:7471"' '[cluster]
rdma_listen = "10.0.0.1:7471"'

# The rdma link second, after a tcp one, with a TCP listener: still one line, before any bind.
port=$((20000 + RANDOM % 20000))
check mixed 'link to [fd00::2]:7471 (kind = "rdma")' "[cluster]
listen = \"127.0.0.1:$port\"
rdma_listen = \"10.0.0.1:7471\"

[[links]]
peer = \"127.0.0.1:1\"

[[links]]
kind = \"rdma\"
peer = \"[fd00::2]:7471\""

[ "$failures" = 0 ] || exit 1
echo "PASS"
