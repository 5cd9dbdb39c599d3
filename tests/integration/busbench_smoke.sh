#!/usr/bin/env bash
# busbench ring and envelope, short runs: the table and the JSON come out, every figure is
# positive, and the ring round trip is within a sane factor of the same-run cache-line baseline.
set -euo pipefail
busbench=$1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$busbench" ring --runs 2 --rounds 5000 --warmup 500 --stream 200000 --quiet \
  --json "$out/ring.json" --hgrm "$out" | tee "$out/ring.txt"
grep -q "cache line ping-pong (baseline)" "$out/ring.txt"
grep -q "busd ring / cache line ping-pong" "$out/ring.txt"
ls "$out"/ring-*.hgrm >/dev/null

"$busbench" envelope --runs 2 --iterations 100000 --quiet --json "$out/env.json" | tee "$out/env.txt"
grep -q "EnvelopeTemplate::write" "$out/env.txt"

python3 - "$out/ring.json" "$out/env.json" <<'PY'
import json, sys
ring = json.load(open(sys.argv[1]))
env = json.load(open(sys.argv[2]))
lat = {r["name"]: r for r in ring["latency_ns"]}
base, r = lat["cache line ping-pong"], lat["busd ring"]
assert base["baseline"] and not r["baseline"], lat
for row in ring["latency_ns"]:
    assert 0 < row["p50"] <= row["p99"] <= row["max"], row
    assert row["runs"] == 2 and len(row["p50_per_run"]) == 2, row
# Same-run ratio: a ring round trip is two ring hops; on a shared 2-vCPU VM allow wide noise.
assert 0.5 < r["p50_vs_baseline"] < 50, r
for t in ring["throughput"]:
    assert t["msgs_per_s"] > 10_000, t
costs = {c["name"]: c["ns"] for c in env["cost_ns_per_op"]}
assert all(v > 0 for v in costs.values()), costs
print("busbench smoke: ok, ring p50 %.0f ns = %.2fx baseline" % (r["p50"], r["p50_vs_baseline"]))
PY
