#!/bin/sh
# Builds the libFuzzer fuzz targets of a -Dfuzzing=true build and runs each for SECONDS over a
# copy of its seed corpus (the committed corpus/ is never written to). New inputs and crash
# reproducers stay in WORKDIR (default: a new directory under /tmp); add the interesting ones to
# make_corpus.cpp. Called by tests/run.sh (stage fuzz).
#
#   CC=clang CXX=clang++ meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined \
#     -Db_lundef=false
#   tests/fuzz/run-libfuzzer.sh build-fuzz 30 [TARGET...]
#
# Exit status: 0 when no target found anything. A crash leaves WORKDIR/<target>/crash-* (replay
# it with build-fuzz/tests/fuzz/<target> FILE, or in a normal build with -mutations=0 FILE).
set -eu

usage() { echo "usage: $0 BUILD_DIR [SECONDS] [TARGET...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
build=$1
secs=${2:-30}
[ $# -ge 2 ] && shift 2 || shift 1
# Default: every fuzz target the build defines (each decoder has one), asked of meson itself.
if [ $# -gt 0 ]; then
  targets=$*
else
  targets=$(meson introspect "$build" --targets | python3 -c '
import json, sys
print(" ".join(sorted(t["name"] for t in json.load(sys.stdin)
                      if t["name"].startswith("fuzz_") and t["type"] == "executable")))')
fi
here=$(cd "$(dirname "$0")" && pwd)
work=${WORKDIR:-$(mktemp -d /tmp/busd-fuzz.XXXXXX)}

# Only the fuzz targets: the rest of a fuzzing build is not needed here.
# shellcheck disable=SC2086
ninja -C "$build" $(for t in $targets; do printf 'tests/fuzz/%s ' "$t"; done)

status=0
for t in $targets; do
  exe=$build/tests/fuzz/$t
  [ -x "$exe" ] || { echo "$exe: not built (ninja -C $build tests/fuzz/$t)" >&2; exit 2; }
  mkdir -p "$work/$t/corpus"
  cp "$here/corpus/$t/"* "$work/$t/corpus/"
  log=$work/$t/fuzz.log
  echo "== $t: ${secs}s, log $log"
  if "$exe" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$work/$t/" \
      "$work/$t/corpus" >"$log" 2>&1; then
    :
  else
    status=1
    echo "!! $t FOUND A PROBLEM: see $log and $work/$t/crash-* / leak-* / timeout-*"
    grep -E 'ERROR|fuzz check failed|runtime error|SUMMARY' "$log" | head -5 || true
  fi
  # e.g. "Done 1234567 runs in 31 second(s)" and the final coverage line.
  grep -E '^#[0-9]+.*(DONE|pulse|NEW)' "$log" | tail -1 || true
  grep -E '^Done [0-9]+ runs' "$log" || true
  grep -E 'stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
done
echo "work directory: $work"
exit $status
