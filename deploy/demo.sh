#!/usr/bin/env bash
# The README's main job: builds the tree, starts busd on its embedded default config, runs the
# example agents (ping/pong request/reply round trips, a planner with a queue group of workers),
# shows busctl, stops everything and checks that nothing is left behind; then busbench pingpong
# (through busd, next to its baselines) and a short busbench
# of the ring on its own, next to its same-run baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f build/build.ninja ]; then
  meson setup --reconfigure build --buildtype=release >/dev/null
else
  meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null
B=build

run=$(mktemp -d /tmp/busd-demo.XXXXXX)
shm_before=$(ls /dev/shm | sort)
export BUS_SOCKET=$run/busd.sock   # busd and every agent find each other through this
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${busd_pid:-}" ] && kill "$busd_pid" 2>/dev/null || true
}
trap cleanup EXIT

echo "== busd on its embedded default config (socket $BUS_SOCKET)"
$B/bus/daemon/busd 2>"$run/busd.log" &
busd_pid=$!
for _ in $(seq 100); do [ -S "$BUS_SOCKET" ] && break; sleep 0.05; done
[ -S "$BUS_SOCKET" ] || { cat "$run/busd.log"; echo "busd did not start" >&2; exit 1; }

echo "== examples/pong + examples/ping: request/reply through busd"
$B/examples/pong 2>>"$run/agents.log" & pids+=($!)
$B/examples/worker --name worker1 2>>"$run/agents.log" & pids+=($!)
$B/examples/worker --name worker2 2>>"$run/agents.log" & pids+=($!)
$B/examples/worker --name worker3 2>>"$run/agents.log" & pids+=($!)
sleep 0.3
$B/examples/ping --count 20000 --payload 64

echo "== examples/planner: tasks to a queue group of 3 workers, results gathered"
$B/examples/planner --tasks 3000 --in-flight 32

echo "== busctl agents / busctl stat"
$B/agents/busctl/busctl agents
$B/agents/busctl/busctl stat

echo "== stopping agents and busd"
for p in "${pids[@]}"; do kill -TERM "$p"; wait "$p" 2>/dev/null || true; done
pids=()
kill -TERM "$busd_pid"
wait "$busd_pid"
busd_pid=
left=$(find "$run" -mindepth 1 ! -name '*.log' | wc -l)
if [ "$left" -ne 0 ]; then
  echo "busd left files behind:" >&2
  find "$run" -mindepth 1 ! -name '*.log' >&2
  exit 1
fi
if [ "$(ls /dev/shm | sort)" != "$shm_before" ]; then
  echo "/dev/shm changed during the run" >&2
  exit 1
fi
echo "busd stopped; nothing left in $run but logs, nothing new in /dev/shm"
rm -rf "$run"

echo "== busbench pingpong: request/reply through two private busd (lanes on and off), interleaved with raw baselines"
$B/agents/busbench/busbench pingpong --busd "$B/bus/daemon/busd"
echo "== busbench ring --quick: the shared-memory ring alone, next to its same-run baselines"
$B/agents/busbench/busbench ring --quick
