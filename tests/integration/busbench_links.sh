#!/usr/bin/env bash
# busbench --transport tcp: pingpong and pubsub across a link between two private busd (B dials
# A) on loopback, --quick: the table and the JSON come out (checked against its schema), the
# link rows sit next to raw TCP between the same endpoints with their same-run ratios, the
# traffic really crossed the link, nothing failed or was lost. --transport dpdk (when busd was
# built with DPDK, else it says why it skips that part): pingpong and pubsub over memif between
# two busd, next to a TCP-linked pair and the raw baselines, the traffic across the DPDK link.
# Then, when this is root and `ip netns add` works (else it says why it skips that part),
# pingpong between two network namespaces (--netns) over TCP and over DPDK af_packet on the veth
# pair, and nothing of them is left afterwards. (--transport rdma: busbench_rdma.sh.)
#   busbench_links.sh BUSBENCH CHECK_JSON_PY
set -euo pipefail
busbench=$1
check=$2
source "$(dirname "$0")/bench_lib.sh"
# Sanitizer builds run several times slower: BUS_TEST_SCALE divides the round trips.
scale=${BUS_TEST_SCALE:-1}
trips=$(( 5000 / scale > 200 ? 5000 / scale : 200 ))
# busd's DPDK link does on the order of a thousand round trips a second on a 2-core machine:
# fewer of them, so that the whole script stays within a minute.
dpdk_trips=$(( 1000 / scale > 100 ? 1000 / scale : 100 ))
run() { run_bench "$@"; }  # name, scenario (in the JSON), args...
busd=${BUSD_BIN:-$(dirname "$busbench")/../../bus/daemon/busd}

run pingpong pingpong-tcp pingpong --transport tcp --quick --count "$trips"
grep -q "raw TCP ping-pong (baseline)" "$out/pingpong.txt"
grep -q "busd link pingpong / raw TCP ping-pong" "$out/pingpong.txt"
grep -q "loopback: busd B dials busd A at 127.0.0.1:" "$out/pingpong.txt"
grep -q "request: held in busd B" "$out/pingpong.txt"

run pubsub pubsub-tcp pubsub --transport tcp --quick
grep -q "raw TCP B -> A, batch 32 (baseline)" "$out/pubsub.txt"

dpdk=skipped
if ! version=$("$busd" --version 2>&1); then
  echo "== --transport dpdk part skipped: '$busd --version' failed: $version"
elif [[ "$version" != *dpdk* ]]; then
  echo "== --transport dpdk part skipped: busd was built without DPDK ($version)"
else
  run dpdk_pingpong pingpong-dpdk pingpong --transport dpdk --quick --count "$dpdk_trips"
  grep -q "memif between two busd on this host" "$out/dpdk_pingpong.txt"
  grep -q "DPDK port poll threads (one per busd): idle adaptive" "$out/dpdk_pingpong.txt"
  grep -q "pingpong, busd dpdk link / busd tcp link: p50" "$out/dpdk_pingpong.txt"
  grep -q "request: held in busd B" "$out/dpdk_pingpong.txt"
  run dpdk_pubsub pubsub-dpdk pubsub --transport dpdk --quick
  grep -q "busd dpdk link pubsub B -> A, batch 32" "$out/dpdk_pubsub.txt"
  dpdk=ran
fi

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
  if [ "$dpdk" = ran ]; then
    echo "== busbench pingpong --transport dpdk --dpdk af_packet --netns --quick"
    "$busbench" pingpong --transport dpdk --dpdk af_packet --netns --quick --count "$dpdk_trips" --quiet \
      --json "$out/af_packet.json" > "$out/af_packet.txt" 2>&1 &
    pid=$!
    if ! wait "$pid"; then
      cat "$out/af_packet.txt"
      echo "busbench pingpong --transport dpdk --dpdk af_packet --netns failed"
      exit 1
    fi
    cat "$out/af_packet.txt"
    python3 "$check" "$out/af_packet.json" --scenario pingpong-dpdk
    grep -q "DPDK net_af_packet on each side's veth" "$out/af_packet.txt"
    grep -q "no raw memif ping-pong row: dpdk_pingpong runs over memif only" "$out/af_packet.txt"
    if ip netns list | grep -q "busbench-$pid-" || ls /var/run/dpdk 2>/dev/null | grep -q "busbench-$pid-"; then
      echo "busbench --dpdk af_packet left its namespaces or EAL runtime directories behind:"
      ip netns list
      ls /var/run/dpdk
      exit 1
    fi
    netns=ran+af_packet
  fi
fi

python3 - "$out" "$netns" "$check" "$dpdk" <<'PY'
import os, sys
out, netns, dpdk = sys.argv[1], sys.argv[2], sys.argv[4]
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

HOPS = {"request: busbench -> responder", "request: busbench -> busd B", "request: held in busd B",
        "request: link B -> A, busd A, -> responder", "responder: receive -> reply", "reply: responder -> busbench",
        "reply: responder -> busd A", "reply: held in busd A", "reply: link A -> B, busd B, -> busbench"}

def check_dpdk_pingpong(pp, memif):
    """--transport dpdk pingpong: both pairs' rows, the raw rows, the traffic across the DPDK link."""
    rows = {r["name"]: r for r in pp["latency_ns"]}
    no_memif = [n for n in pp["notes"] if n.startswith("no raw memif ping-pong row: ")]
    want = {"raw TCP ping-pong", "busd dpdk link pingpong", "busd tcp link pingpong"}
    if memif and not no_memif:
        want.add("raw memif ping-pong")
    assert set(rows) == want, (set(rows), no_memif)
    for name, r in rows.items():
        assert r["p50"] > 0 and r["baseline"] == name.startswith("raw "), r
    assert set(rows["busd dpdk link pingpong"]["vs"]) == want - {"busd dpdk link pingpong", "busd tcp link pingpong"}
    # The DPDK link carried the round trips: busd B sent the requests on it.
    assert fact(pp, "link messages out of busd B (dpdk link)") > 0, pp["facts"]
    assert 1.9 <= fact(pp, "link messages per round trip (dpdk link)") <= 2.1, pp["facts"]
    assert fact(pp, "link messages out of busd B (tcp link)") > 0, pp["facts"]
    assert fact(pp, "requests failed") == 0
    assert {h["name"] for h in pp["hops_ns"]} == HOPS, pp["hops_ns"]
    procs = {p["name"] for p in pp["processes"]}
    assert {"busd B (dpdk link)", "busd A (dpdk link)", "busd B (tcp link)", "busd A (tcp link)"} <= procs, procs
    targets = {t["name"]: t for t in pp["targets"]}
    vs_tcp = targets["pingpong, busd dpdk link / busd tcp link: p50"]
    assert vs_tcp["value"] > 0 and vs_tcp["limit"] is None, vs_tcp
    if "raw memif ping-pong" in want:
        aim = targets["pingpong, busd dpdk link / raw memif ping-pong: p50"]
        assert aim["limit"] == 2 and aim["met"] in (True, False) and aim["note"].startswith("aim: within 2x"), aim
    return rows, vs_tcp["value"]

if dpdk == "ran":
    drows, dratio = check_dpdk_pingpong(doc("dpdk_pingpong"), True)
    ds = doc("dpdk_pubsub")
    thr = {r["name"]: r for r in ds["throughput"]}
    assert set(thr) == {"raw TCP B -> A, batch 32", "busd dpdk link pubsub B -> A, batch 32",
                        "busd dpdk link pubsub B -> A, unbatched", "busd tcp link pubsub B -> A, batch 32",
                        "busd tcp link pubsub B -> A, unbatched"}, set(thr)
    for r in thr.values():
        assert r["msgs_per_s"] > 0 and len(r["per_run"]) == 3, r
    assert fact(ds, "link messages out of busd B (dpdk link)") > 0, ds["facts"]
    assert 0.99 <= fact(ds, "link messages per message delivered (dpdk link)") <= 1.01, ds["facts"]
    assert fact(ds, "messages duplicated or out of order") == 0
    assert fact(ds, "publish failures") == 0
    dt = {t["name"]: t for t in ds["targets"]}
    assert dt["pubsub batch 32, busd dpdk link / busd tcp link: msgs/s"]["value"] > 0, dt

line = ("busbench links: ok; pingpong p50 %.1f us (%.2fx raw TCP); pubsub batch 32 %.0f msgs/s (%.2fx raw TCP, "
        "%d dropped at the link in the worst run)"
        % (bus["p50"] / 1e3, ratio, batched["msgs_per_s"], batched["vs_baseline"], dropped))
if dpdk == "ran":
    memif = drows.get("raw memif ping-pong")
    line += ("; dpdk (memif) pingpong p50 %.1f us (%.2fx the tcp link%s), pubsub batch 32 %.0f msgs/s"
             % (drows["busd dpdk link pingpong"]["p50"] / 1e3, dratio,
                ", raw memif %.2f us" % (memif["p50"] / 1e3) if memif else "",
                thr["busd dpdk link pubsub B -> A, batch 32"]["msgs_per_s"]))
else:
    line += "; --transport dpdk part skipped (see above)"
if netns.startswith("ran"):
    nbus, nratio = check_pingpong(doc("netns"))
    line += "; --netns pingpong p50 %.1f us (%.2fx raw TCP across the veth)" % (nbus["p50"] / 1e3, nratio)
    if netns == "ran+af_packet":
        arows, aratio = check_dpdk_pingpong(doc("af_packet"), False)
        line += "; dpdk af_packet --netns pingpong p50 %.1f us (%.2fx the tcp link)" % (
            arows["busd dpdk link pingpong"]["p50"] / 1e3, aratio)
else:
    line += "; --netns part skipped (see above)"
print(line)
PY
