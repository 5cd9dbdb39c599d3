#!/usr/bin/env bash
# busbench --transport tcp: pingpong and pubsub across a link between two private busd (B dials
# A) on loopback, --quick: the table and the JSON come out (checked against its schema), the
# link rows sit next to raw TCP between the same endpoints with their same-run ratios, the
# traffic really crossed the link, nothing failed or was lost. Then pingpong between two network
# namespaces (--netns) when this is root and `ip netns add` works (else it says why it skips
# that part), and nothing of them is left afterwards.
#   busbench_links.sh BUSBENCH CHECK_JSON_PY
set -euo pipefail
busbench=$1
check=$2
source "$(dirname "$0")/bench_lib.sh"
# Sanitizer builds run several times slower: BUS_TEST_SCALE divides the round trips.
scale=${BUS_TEST_SCALE:-1}
trips=$(( 5000 / scale > 200 ? 5000 / scale : 200 ))
run() { run_bench "$@"; }  # name, scenario (in the JSON), args...

run pingpong pingpong-tcp pingpong --transport tcp --quick --count "$trips"
grep -q "raw TCP ping-pong (baseline)" "$out/pingpong.txt"
grep -q "busd link pingpong / raw TCP ping-pong" "$out/pingpong.txt"
grep -q "loopback: busd B dials busd A at 127.0.0.1:" "$out/pingpong.txt"
grep -q "request: held in busd B" "$out/pingpong.txt"

run pubsub pubsub-tcp pubsub --transport tcp --quick
grep -q "raw TCP B -> A, batch 32 (baseline)" "$out/pubsub.txt"

# The other transports are refused, naming the issue that brings them.
for t in dpdk rdma; do
  if "$busbench" pingpong --transport "$t" --quick --quiet > "$out/$t.txt" 2>&1; then
    echo "busbench pingpong --transport $t should have been refused"
    exit 1
  fi
  grep -q "\[$t\]" "$out/$t.txt" || { cat "$out/$t.txt"; exit 1; }
done

netns=skipped
probe="busbench-probe-$$"
if [ "$(id -u)" != 0 ]; then
  echo "== --netns part skipped: not root (busbench --netns creates network namespaces and a veth pair)"
elif ! why=$(ip netns add "$probe" 2>&1); then
  echo "== --netns part skipped: 'ip netns add' does not work here: $why"
else
  ip netns del "$probe"
  echo "== busbench pingpong --transport tcp --netns --quick"
  "$busbench" pingpong --transport tcp --netns --quick --count "$trips" --quiet --json "$out/netns.json" \
    > "$out/netns.txt" 2>&1 &
  pid=$!
  if ! wait "$pid"; then
    cat "$out/netns.txt"
    echo "busbench pingpong --transport tcp --netns failed"
    exit 1
  fi
  cat "$out/netns.txt"
  python3 "$check" "$out/netns.json" --scenario pingpong-tcp
  grep -q "namespaces busbench-$pid-a (10\." "$out/netns.txt"
  grep -q "namespace b, 10\..* -> namespace a, 10\." "$out/netns.txt"
  if ip netns list | grep -q "busbench-$pid-"; then
    echo "busbench left its namespaces behind:"
    ip netns list
    exit 1
  fi
  if ip -o link | grep -q "bb${pid}[ab]"; then
    echo "busbench left its veth pair behind"
    exit 1
  fi
  netns=ran
fi

python3 - "$out" "$netns" "$check" <<'PY'
import os, sys
out, netns = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[3])))
from check_bench_json import fact_value as fact, load, named as row
def doc(name):
    return load(out, name)

def check_pingpong(pp):
    base = row(pp["latency_ns"], "raw TCP ping-pong")
    bus = row(pp["latency_ns"], "busd link pingpong")
    assert base["baseline"] and base["p50"] > 0, base
    assert not bus["baseline"] and bus["p50"] > 0, bus
    assert set(bus["vs"]) == {"raw TCP ping-pong"}, bus["vs"]
    ratio = bus["vs"]["raw TCP ping-pong"]["p50"]
    # A round trip through two busd and a link costs more than raw TCP; more than 1000x is broken.
    assert 0.5 < ratio < 1000 and bus["p50_vs_baseline"] == ratio, bus
    hops = {h["name"]: h for h in pp["hops_ns"]}
    assert set(hops) == {"request: busbench -> responder", "request: busbench -> busd B",
                         "request: held in busd B", "request: link B -> A, busd A, -> responder",
                         "responder: receive -> reply", "reply: responder -> busbench",
                         "reply: responder -> busd A", "reply: held in busd A",
                         "reply: link A -> B, busd B, -> busbench"}, hops
    # The one-way hops are parts of the round trip.
    assert hops["request: busbench -> responder"]["p50"] > 0 and hops["reply: responder -> busbench"]["p50"] > 0
    one_way = hops["request: busbench -> responder"]["p50"] + hops["reply: responder -> busbench"]["p50"]
    assert one_way < 3 * bus["p50"] + 10_000, (hops, bus["p50"])
    # Each busd stamped its two hops into what it sent on the link: they are parts of a one-way time.
    assert hops["request: busbench -> busd B"]["p50"] > 0 and hops["reply: responder -> busd A"]["p50"] > 0, hops
    assert hops["request: held in busd B"]["p50"] <= hops["request: busbench -> responder"]["p50"], hops
    assert pp["hops_not_measured"] == [], pp["hops_not_measured"]
    procs = {p["name"]: p["cpu_s_per_million"] for p in pp["processes"]}
    assert set(procs) == {"busbench (requester) on B", "busd B", "busd A", "responder on A"}, procs
    assert all(v > 0 for v in procs.values()), procs
    assert 1.9 <= fact(pp, "link messages per round trip") <= 2.1, pp["facts"]
    assert fact(pp, "requests failed") == 0
    assert any(n.startswith("goal: busd link p50 at most 3x raw TCP p50") for n in pp["notes"]), pp["notes"]
    return bus, ratio

bus, ratio = check_pingpong(doc("pingpong"))

ps = doc("pubsub")
thr = ps["throughput"]
raw = row(thr, "raw TCP B -> A, batch 32")
batched = row(thr, "busd link pubsub B -> A, batch 32")
unbatched = row(thr, "busd link pubsub B -> A, unbatched")
assert raw["baseline"] and not batched["baseline"] and not unbatched["baseline"], thr
assert raw["record_bytes"] > 64 and batched["record_bytes"] == 64, thr
for r in (batched, unbatched):
    assert r["msgs_per_s"] > 1000 and r["vs_baseline"] > 0 and len(r["per_run"]) == 3, r
procs = {p["name"]: p["cpu_s_per_million"] for p in ps["processes"]}
want = {"raw TCP sender on B, batch 32", "raw TCP receiver on A"}
for suffix in (", batch 32", ", unbatched"):
    want |= {n + suffix for n in ("publisher on B (busbench)", "busd B", "busd A", "subscriber on A")}
assert set(procs) == want, procs
assert all(v >= 0 for v in procs.values()) and procs["busd B, batch 32"] > 0 and procs["busd A, batch 32"] > 0, procs
# Every message delivered crossed the link once. busd B may drop at the link when its hold
# buffer fills (it does not hold a local publisher back): busbench counts those and says so;
# anything else lost would have failed the run.
assert 0.99 <= fact(ps, "link messages per message delivered") <= 1.01, ps["facts"]
assert fact(ps, "messages duplicated or out of order") == 0
assert fact(ps, "publish failures") == 0
dropped = fact(ps, "messages dropped by busd B at the link")
assert dropped == 0 or any(n.startswith("WARNING: busd B dropped") for n in ps["notes"]), ps["notes"]

line = ("busbench links: ok; pingpong p50 %.1f us (%.2fx raw TCP); pubsub batch 32 %.0f msgs/s (%.2fx raw TCP, "
        "%d dropped at the link in the worst run)"
        % (bus["p50"] / 1e3, ratio, batched["msgs_per_s"], batched["vs_baseline"], dropped))
if netns == "ran":
    nbus, nratio = check_pingpong(doc("netns"))
    line += "; --netns pingpong p50 %.1f us (%.2fx raw TCP across the veth)" % (nbus["p50"] / 1e3, nratio)
else:
    line += "; --netns part skipped (see above)"
print(line)
PY
