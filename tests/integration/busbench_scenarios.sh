#!/usr/bin/env bash
# Every busbench scenario through a private busd, with tiny counts: the table, the JSON (checked
# against its schema), the .hgrm files and the plot come out; nothing is left unanswered; and a
# 100 ms responder stall shows in p99 of an open-loop run (coordinated omission corrected) but
# not in p99 of a closed-loop one, which says that it does not correct.
#   busbench_scenarios.sh BUSBENCH CHECK_JSON_PY
set -euo pipefail
busbench=$1
check=$2
source "$(dirname "$0")/bench_lib.sh"
# Sanitizer builds run several times slower: BUS_TEST_SCALE (8 under ASan, see
# tests/support/scale.hpp) divides the message counts; no assertion depends on them.
scale=${BUS_TEST_SCALE:-1}
n() { local v=$(( $1 / scale )); echo $(( v > 0 ? v : 1 )); }

run() {  # name, args... (the first arg, the scenario, names the JSON schema)
  local name=$1
  shift
  run_bench "$name" "$1" "$@"
}

run pingpong pingpong --runs 2 --count "$(n 2000)" --warmup 200 --hgrm "$out" --plot "$out/pp.svg"
grep -q "cache line ping-pong (baseline)" "$out/pingpong.txt"
grep -q "eventfd wake ping-pong (baseline)" "$out/pingpong.txt"
grep -q "TCP loopback ping-pong (baseline)" "$out/pingpong.txt"
grep -q "busd pingpong / TCP loopback ping-pong" "$out/pingpong.txt"
grep -q "per-hop breakdown" "$out/pingpong.txt"
grep -q "CPU seconds per million messages" "$out/pingpong.txt"
ls "$out"/pingpong-*.hgrm > /dev/null
grep -q "</svg>" "$out/pp.svg"
grep -q "busd pingpong" "$out/pp.svg"

run loaded loaded --runs 1 --count "$(n 1000)" --warmup 100 --load-rate 5000
run scatter scatter --runs 1 --count "$(n 300)" --warmup 30 --workers 4
run scatter_quorum scatter --runs 1 --count "$(n 300)" --warmup 30 --workers 4 --quorum 2
run pubsub pubsub --runs 1 --count "$(n 20000)" --subscribers 2
run agents agents --agents 20 --services 2 --duration 1 --agent-rate 20

# Coordinated omission: one 100 ms stall in 2000 requests.
run open_stall pingpong --runs 1 --count 2000 --warmup 100 --rate 2000 --stall-ms 100 --no-baseline
run closed_stall pingpong --runs 1 --count 2000 --warmup 100 --stall-ms 100 --no-baseline
grep -q "NOT corrected for coordinated omission" "$out/closed_stall.txt"
grep -q "coordinated omission corrected" "$out/open_stall.txt"

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def doc(name):
    return json.load(open(os.path.join(out, name + ".json")))
def fact(d, name):
    for f in d["facts"]:
        if f["name"].startswith(name):
            return f["value"]
    raise SystemExit(f"{d['scenario']}: no fact {name!r}")
def row(d, name):
    for r in d["latency_ns"]:
        if r["name"] == name:
            return r
    raise SystemExit(f"{d['scenario']}: no row {name!r}: {[r['name'] for r in d['latency_ns']]}")

pp = doc("pingpong")
bus = row(pp, "busd pingpong")
assert not bus["baseline"] and bus["p50"] > 0, bus
assert set(bus["vs"]) == {"cache line ping-pong", "eventfd wake ping-pong", "TCP loopback ping-pong"}, bus["vs"]
assert len(pp["hops_ns"]) == 7, pp["hops_ns"]
# The hops are parts of the round trip: their medians cannot add up to much more than it.
assert sum(h["p50"] for h in pp["hops_ns"]) < 3 * bus["p50"] + 10_000, (pp["hops_ns"], bus["p50"])
procs = {p["name"] for p in pp["processes"]}
assert {"busd", "responder", "busbench (requester)"} <= procs, procs
assert all(p["cpu_s_per_million"] > 0 for p in pp["processes"]), pp["processes"]
assert 0 < fact(pp, "busd RSS") < 512, pp["facts"]
assert fact(pp, "requests failed") == 0

ld = doc("loaded")
assert row(ld, "busd pingpong, idle")["baseline"]
assert fact(ld, "background load received") > 1000, ld["facts"]

for name in ("scatter", "scatter_quorum"):
    d = doc(name)
    assert d["latency_unit"] == "round"
    assert fact(d, "rounds failed") == 0, d["facts"]
    assert d["latency_ns"][0]["ops_per_s"] > 0

ps = doc("pubsub")
names = [t["name"] for t in ps["throughput"]]
assert any("batch 32" in n and "busd" in n for n in names) and any("unbatched" in n for n in names), names
assert any(t["baseline"] for t in ps["throughput"]), names
assert fact(ps, "messages out of order or missing") == 0
assert {c["name"] for c in ps["cost_ns_per_op"]} >= {"envelope build (EnvelopeTemplate::write)", "envelope verify (EnvelopeView::verify)"}

ag = doc("agents")
assert fact(ag, "requests unanswered") == 0, ag["facts"]
assert fact(ag, "requests sent") >= 20 * 20 * 0.8, ag["facts"]

opened = row(doc("open_stall"), "busd pingpong")
closed = row(doc("closed_stall"), "busd pingpong")
# Open loop at 2000/s: the stall stands for ~200 delayed requests, so p99 sits in the stall.
assert opened["p99"] >= 50e6 and opened["max"] >= 100e6, opened
# Closed loop: one slow sample in 2000 reaches max only.
assert closed["max"] >= 100e6 and closed["p99"] < 50e6, closed
print("busbench scenarios: ok; pingpong p50 %.1f us (%.2fx TCP loopback), open-loop stall p99 %.0f ms, closed p99 %.2f ms"
      % (bus["p50"] / 1e3, bus["vs"]["TCP loopback ping-pong"]["p50"], opened["p99"] / 1e6, closed["p99"] / 1e6))
PY
