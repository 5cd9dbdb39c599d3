#!/usr/bin/env bash
# Builds the libFuzzer fuzz targets of a -Dfuzzing=true build and runs each for SECONDS over a
# copy of its seed corpus (the committed corpus/ is never written to), FUZZ_JOBS of them at a
# time (default 2: one per core of the CI machine), the longest first. New inputs and crash
# reproducers stay in WORKDIR (default: a new directory under /tmp); add the interesting ones to
# make_corpus.cpp. Called by tests/run.sh (stage fuzz).
#
#   CC=clang CXX=clang++ meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined \
#     -Db_lundef=false
#   tests/fuzz/run-libfuzzer.sh build-fuzz 30 [TARGET[=SECONDS]...]
#
# A TARGET=SECONDS argument gives that target its own time; without targets, every fuzz target
# the build defines runs SECONDS. E.g. CI: the six decoders issue 8 names 60 s, the rest 10 s:
#   tests/fuzz/run-libfuzzer.sh build-fuzz 10 fuzz_frames=60 fuzz_envelope=60 ... fuzz_log
#
# Exit status: 0 when no target found anything. A crash leaves WORKDIR/<target>/crash-* (replay
# it with build-fuzz/tests/fuzz/<target> FILE, or in a normal build with -mutations=0 FILE).
# Each target's figures (runs, cov:, ft:, corpus size) are printed when it ends.
set -euo pipefail

usage() { echo "usage: $0 BUILD_DIR [SECONDS] [TARGET[=SECONDS]...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
build=$1
secs=${2:-30}
[ $# -ge 2 ] && shift 2 || shift 1
jobs=${FUZZ_JOBS:-2}
# Default: every fuzz target the build defines (each decoder has one), asked of meson itself.
if [ $# -gt 0 ]; then
  specs=("$@")
else
  read -r -a specs <<<"$(meson introspect "$build" --targets | python3 -c '
import json, sys
print(" ".join(sorted(t["name"] for t in json.load(sys.stdin)
                      if t["name"].startswith("fuzz_") and t["type"] == "executable")))')"
fi
here=$(cd "$(dirname "$0")" && pwd)
work=${WORKDIR:-$(mktemp -d /tmp/busd-fuzz.XXXXXX)}

# "name seconds" lines, the longest first (two slots: the long ones overlap, the short ones fill).
plan=$(for s in "${specs[@]}"; do
  case $s in
    *=*) printf '%s %s\n' "${s%%=*}" "${s#*=}" ;;
    *) printf '%s %s\n' "$s" "$secs" ;;
  esac
done | sort -k2,2nr -s)

# Only the fuzz targets: the rest of a fuzzing build is not needed here.
# shellcheck disable=SC2046
ninja -C "$build" $(awk '{printf "tests/fuzz/%s ", $1}' <<<"$plan")

# run_one TARGET SECONDS: one fuzzer; its summary goes to WORKDIR/TARGET/summary, its exit status
# to WORKDIR/TARGET/status.
run_one() {
  local t=$1 s=$2 exe=$build/tests/fuzz/$1 log rc=0
  log=$work/$t/fuzz.log
  mkdir -p "$work/$t/corpus"
  cp "$here/corpus/$t/"* "$work/$t/corpus/"
  "$exe" -max_total_time="$s" -print_final_stats=1 -artifact_prefix="$work/$t/" \
    "$work/$t/corpus" >"$log" 2>&1 || rc=$?
  {
    echo "== $t: ${s}s, log $log"
    if [ "$rc" -ne 0 ]; then
      echo "!! $t FOUND A PROBLEM (exit $rc): see $log and $work/$t/crash-* / leak-* / timeout-*"
      grep -E 'ERROR|fuzz check failed|runtime error|SUMMARY' "$log" | head -5 || true
    fi
    # e.g. "#1234567 DONE cov: 812 ft: 2331 corp: 171/9Kb ..." and the final statistics.
    grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 || true
    grep -E '^Done [0-9]+ runs' "$log" || true
    grep -E 'stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
    echo "corpus: $(find "$work/$t/corpus" -type f | wc -l) files"
  } >"$work/$t/summary"
  echo "$rc" >"$work/$t/status"
}

for t in $(awk '{print $1}' <<<"$plan"); do
  [ -x "$build/tests/fuzz/$t" ] || { echo "$build/tests/fuzz/$t: not built (ninja -C $build tests/fuzz/$t)" >&2; exit 2; }
done
running=0
while read -r t s; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  echo "-- start $t (${s}s)"
  run_one "$t" "$s" &
  running=$((running + 1))
done <<<"$plan"
wait || true

status=0
while read -r t s; do
  cat "$work/$t/summary" 2>/dev/null || echo "== $t: no summary (killed?)"
  [ "$(cat "$work/$t/status" 2>/dev/null || echo 1)" = 0 ] || status=1
done <<<"$plan"
echo "work directory: $work"
exit $status
