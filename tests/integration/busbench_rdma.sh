#!/usr/bin/env bash
# busbench --transport rdma: pingpong and pubsub across an RDMA link between two private busd
# (busd A's rdma_listen on this host's RDMA interface, busd B dials it from there), next to two
# busd linked over TCP in the same run.
#   1. The options --transport rdma refuses (exit 1, naming the option): --netns, --dpdk,
#      --dpdk-idle; --rdma-addr without --transport rdma; a scenario other than pingpong/pubsub.
#   2. busbench pingpong|pubsub --transport rdma --quick. Without an RDMA device (this project's
#      CI: its kernel has no InfiniBand support) or in a build without rdma-core, each must exit
#      77 with exactly one line, "busbench: --transport rdma: <why>", and <why> must be the reason
#      this host has (the build, ibv_get_device_list's error, no device listed): a 77 for any
#      other reason fails. Then the test is SKIP. With a device: the JSON (schema checked) has the
#      rdma and tcp pairs' rows, the raw TCP row, the same-run ratio lines (rdma link / tcp link:
#      p50 and p99; msgs/s batched and unbatched), and the traffic crossed the RDMA link.
# Without a device: about 1 s. With one: about as long as busbench_links' dpdk part (< 2 min).
#   busbench_rdma.sh BUSBENCH CHECK_JSON_PY HAVE_RDMA(true|false)
set -euo pipefail
busbench=$1
check=$2
have_rdma=$3
source "$(dirname "$0")/bench_lib.sh"
scale=${BUS_TEST_SCALE:-1}
trips=$(( 2000 / scale > 200 ? 2000 / scale : 200 ))

# refused ARGS... -- WANT: busbench ARGS exits 1 and says WANT.
refused() {
  local args=() want
  while [ "$1" != -- ]; do args+=("$1"); shift; done
  want=$2
  local rc=0
  "$busbench" "${args[@]}" --quiet > "$out/refused.txt" 2>&1 || rc=$?
  if [ "$rc" != 1 ] || ! grep -qF -- "$want" "$out/refused.txt"; then
    echo "busbench ${args[*]}: wanted exit 1 saying '$want', got exit $rc:"
    cat "$out/refused.txt"
    exit 1
  fi
  echo "== busbench ${args[*]}: refused (exit 1): $(grep -F -- "$want" "$out/refused.txt")"
}
refused pingpong --transport rdma --netns --quick -- "--netns goes with --transport tcp or dpdk"
refused pubsub --transport rdma --dpdk memif --quick -- "--dpdk goes with --transport dpdk"
refused pingpong --transport rdma --dpdk-idle busy --quick -- "--dpdk-idle goes with --transport dpdk"
refused pingpong --transport tcp --rdma-addr 192.0.2.1 --quick -- "--rdma-addr goes with --transport rdma"
refused scatter --transport rdma --quick -- "--transport rdma: pingpong and pubsub measure links"
refused pingpong --transport rdma --address /nonexistent/busd.sock --quick -- "--transport rdma starts its own linked pairs"

# Why this host cannot run an RDMA link, as busbench must say it (an extended regex), or "" when
# the kernel lists a verbs device (uverbs*), so that busbench must run.
expected_reason() {
  if [ "$have_rdma" != true ]; then
    echo "was built without RDMA"
  elif ! ls /sys/class/infiniband_verbs/uverbs* > /dev/null 2>&1; then
    # No verbs device: ibv_get_device_list fails (ENOSYS where the kernel has no uverbs at all)
    # or lists none.
    echo "ibv_get_device_list: |no RDMA device: "
  fi
}
reason=$(expected_reason)

# rdma_run NAME SCENARIO ARGS...: runs busbench; 0 (the JSON checked), or 77 with the reason
# checked; anything else fails.
skips=0
rdma_run() {
  local name=$1 scenario=$2
  shift 2
  echo "== busbench $*"
  local rc=0
  "$busbench" "$@" --quiet --json "$out/$name.json" > "$out/$name.txt" 2>&1 || rc=$?
  cat "$out/$name.txt"
  if [ "$rc" = 77 ]; then
    local lines
    lines=$(wc -l < "$out/$name.txt")
    if [ "$lines" != 1 ] || ! grep -q "^busbench: --transport rdma: " "$out/$name.txt"; then
      echo "busbench $*: exit 77 must come with exactly one line 'busbench: --transport rdma: <why>' (got $lines)"
      exit 1
    fi
    if [ -z "$reason" ]; then
      echo "busbench $*: skipped, but this host has verbs devices ($(ls /sys/class/infiniband_verbs | tr '\n' ' '))"
      exit 1
    fi
    if ! grep -qE -- "^busbench: --transport rdma: .*($reason)" "$out/$name.txt"; then
      echo "busbench $*: skipped for another reason than this host's: wanted '$reason'"
      exit 1
    fi
    if [ -e "$out/$name.json" ]; then
      echo "busbench $*: skipped, yet wrote a JSON report"
      exit 1
    fi
    skips=$((skips + 1))
    return 0
  fi
  if [ "$rc" != 0 ]; then
    echo "busbench $* failed (exit $rc)"
    exit 1
  fi
  python3 "$check" "$out/$name.json" --scenario "$scenario"
}

rdma_run pingpong pingpong-rdma pingpong --transport rdma --quick --count "$trips"
rdma_run pubsub pubsub-rdma pubsub --transport rdma --quick
if [ "$skips" = 2 ]; then
  echo "SKIP: busbench --transport rdma cannot run here: $(sed 's/^busbench: --transport rdma: //' "$out/pingpong.txt") (the refusals above were checked)"
  exit 77
fi
if [ "$skips" != 0 ]; then
  echo "one of the two runs skipped and the other did not"
  exit 1
fi

grep -q "one RDMA interface: busd B dials busd A's rdma_listen at " "$out/pingpong.txt"
grep -q "no raw RDMA row" "$out/pingpong.txt"

python3 - "$out" "$check" <<'PY'
import os, sys
out = sys.argv[1]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[2])))
from check_bench_json import fact_value as fact, load

pp = load(out, "pingpong")
rows = {r["name"]: r for r in pp["latency_ns"]}
assert set(rows) == {"raw TCP ping-pong", "busd rdma link pingpong", "busd tcp link pingpong"}, set(rows)
for name, r in rows.items():
    assert r["p50"] > 0 and r["baseline"] == name.startswith("raw "), r
# The RDMA link carried the round trips: busd B sent the requests on it, two link messages each.
assert fact(pp, "link messages out of busd B (rdma link)") > 0, pp["facts"]
assert 1.9 <= fact(pp, "link messages per round trip (rdma link)") <= 2.1, pp["facts"]
assert fact(pp, "link messages out of busd B (tcp link)") > 0, pp["facts"]
assert fact(pp, "requests failed") == 0
procs = {p["name"] for p in pp["processes"]}
assert {"busd B (rdma link)", "busd A (rdma link)", "busd B (tcp link)", "busd A (tcp link)"} <= procs, procs
targets = {t["name"]: t for t in pp["targets"]}
for what in ("p50", "p99"):
    t = targets["pingpong, busd rdma link / busd tcp link: " + what]
    assert t["value"] > 0 and t["limit"] is None, t

ps = load(out, "pubsub")
thr = {r["name"]: r for r in ps["throughput"]}
assert set(thr) == {"raw TCP B -> A, batch 32", "busd rdma link pubsub B -> A, batch 32",
                    "busd rdma link pubsub B -> A, unbatched", "busd tcp link pubsub B -> A, batch 32",
                    "busd tcp link pubsub B -> A, unbatched"}, set(thr)
for r in thr.values():
    assert r["msgs_per_s"] > 0 and len(r["per_run"]) == 3, r
assert fact(ps, "link messages out of busd B (rdma link)") > 0, ps["facts"]
assert 0.99 <= fact(ps, "link messages per message delivered (rdma link)") <= 1.01, ps["facts"]
assert fact(ps, "messages duplicated or out of order") == 0
assert fact(ps, "publish failures") == 0
pt = {t["name"]: t for t in ps["targets"]}
for what in ("batch 32", "unbatched"):
    assert pt["pubsub %s, busd rdma link / busd tcp link: msgs/s" % what]["value"] > 0, pt
print("busbench rdma: ok; pingpong p50 %.1f us over rdma, %.1f us over tcp (%.2fx); pubsub batch 32 %.0f msgs/s over rdma"
      % (rows["busd rdma link pingpong"]["p50"] / 1e3, rows["busd tcp link pingpong"]["p50"] / 1e3,
         targets["pingpong, busd rdma link / busd tcp link: p50"]["value"],
         thr["busd rdma link pubsub B -> A, batch 32"]["msgs_per_s"]))
PY
