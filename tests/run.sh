#!/usr/bin/env bash
# The README's test command: every stage CI runs, each with a time budget (the whole run stays
# under 20 minutes on a 2-core machine; stage times seen on a clean clone on 2026-11-23 in the
# comments).
#
#   tests/run.sh                  all stages
#   STAGES="build unit" tests/run.sh   some of them
#
# Stages:
#   build   release build of everything, -Wall -Wextra -Werror          budget 6 min (seen ~3.6)
#   unit    unit + schema + fuzz-corpus replay + stress + integration + dpdk + the 2-minute soak
#                                                                         budget 8 min (seen ~5.5)
#   asan    ring, router, link and busd/libbus tests under ASan+UBSan, in the clang build the
#           fuzz stage uses too (one sanitizer build instead of two)    budget 10 min (seen ~4)
#   tsan    ring, router, link and lanes tests under ThreadSanitizer (gcc)  budget 5 min (seen ~2)
#   fuzz    libFuzzer (clang): issue 8's six decoders 60 s, the rest 5 s, 2 at once
#                                                                         budget 8 min (seen ~4.5)
set -euo pipefail
cd "$(dirname "$0")/.."

STAGES=${STAGES:-"build unit asan tsan fuzz"}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}              # each of the six decoders issue 8 names
FUZZ_OTHER_SECONDS=${FUZZ_OTHER_SECONDS:-5}   # each other fuzz target (their corpora replay in the unit stage too)
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}          # the clang -Dfuzzing=true build directory
JOBS=${JOBS:-$(nproc)}
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"

# Suites that run under the sanitizers: the ring, the router, the link layer and the lanes under
# both; busd and libbus with real processes (the integration tests marked 'sanitize') under
# ASan+UBSan too. busbench, busctl and the tests that measure time or build network namespaces
# run in the release build only: building them under ASan cost more than the rest together.
ASAN_SUITES="ring router link sanitize"
TSAN_SUITES="ring router link lanes"

log() { printf '\n=== %s\n' "$*"; }

# run_stage NAME BUDGET_SECONDS FUNCTION: runs it under a time limit and reports its duration.
run_stage() {
  local name=$1 budget=$2 fn=$3 t0 rc=0
  t0=$(date +%s)
  log "stage $name (budget ${budget}s)"
  # A stage function runs in a subshell under `timeout` so that a hang cannot eat the CI run.
  export -f "$fn" log setup
  export ASAN_SUITES TSAN_SUITES FUZZ_SECONDS FUZZ_OTHER_SECONDS FUZZ_BUILD JOBS
  timeout --foreground --kill-after=10 "$budget" bash -euo pipefail -c "$fn" || rc=$?
  local took=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 124 ]; then
    echo "stage $name: over its budget of ${budget}s" >&2
    exit 1
  elif [ "$rc" -ne 0 ]; then
    echo "stage $name: FAILED (exit $rc) after ${took}s" >&2
    exit "$rc"
  fi
  echo "stage $name: ok in ${took}s"
}

# setup DIR ARGS...: meson setup once, reconfigure when it exists.
setup() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
}

stage_build() {
  setup build --buildtype=release
  ninja -C build -j "$JOBS"
}

stage_unit() {
  # Non-parallel tests (is_parallel: false) run alone; the rest two at a time.
  meson test -C build --num-processes 2 --print-errorlogs \
    --suite unit --suite schema --suite fuzz --suite stress --suite integration --suite dpdk --suite soak
}

sanitizer_stage() {
  local dir=$1 sanitize=$2 wanted=$3 suites=()
  for s in $wanted; do suites+=(--suite "$s"); done
  # -O1: half the compile time of -O2 under sanitizers, still fast enough for the stress tests.
  setup "$dir" --buildtype=debugoptimized -Doptimization=1 -Db_sanitize="$sanitize" -Db_lundef=false
  # meson test builds only what the selected suites need (their executables and `depends`).
  meson test -C "$dir" --num-processes 2 --print-errorlogs "${suites[@]}"
}

# ASan+UBSan: clang, in the fuzzing build (-Dfuzzing=true builds the project as usual and adds
# the libFuzzer targets), so that the fuzz stage compiles only what is left.
setup_clang_sanitized() {
  if ! command -v clang++ >/dev/null; then
    echo "clang++ not found (deploy/install-deps.sh installs it)" >&2
    exit 1
  fi
  CC=clang CXX=clang++ setup "$FUZZ_BUILD" --buildtype=debugoptimized -Doptimization=1 \
    -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false
}
stage_asan() {
  local suites=() s
  for s in $ASAN_SUITES; do suites+=(--suite "$s"); done
  setup_clang_sanitized
  meson test -C "$FUZZ_BUILD" --num-processes 2 --print-errorlogs "${suites[@]}"
}
stage_tsan() { sanitizer_stage build-tsan thread "$TSAN_SUITES"; }

stage_fuzz() {
  setup_clang_sanitized
  # The decoders issue 8 names run FUZZ_SECONDS each, every other target FUZZ_OTHER_SECONDS;
  # two at a time (FUZZ_JOBS: one per core), the long ones first.
  local named=(fuzz_frames fuzz_envelope fuzz_control fuzz_config fuzz_dgram fuzz_handshake) args=() t
  for t in "${named[@]}"; do args+=("$t=$FUZZ_SECONDS"); done
  for t in $(meson introspect "$FUZZ_BUILD" --targets | python3 -c '
import json, sys
print(" ".join(sorted(t["name"] for t in json.load(sys.stdin)
                      if t["name"].startswith("fuzz_") and t["type"] == "executable")))'); do
    [[ " ${named[*]} " == *" $t "* ]] || args+=("$t=$FUZZ_OTHER_SECONDS")
  done
  FUZZ_JOBS=2 tests/fuzz/run-libfuzzer.sh "$FUZZ_BUILD" "$FUZZ_OTHER_SECONDS" "${args[@]}"
}

export -f stage_build stage_unit stage_asan stage_tsan stage_fuzz sanitizer_stage setup_clang_sanitized

started=$(date +%s)
for stage in $STAGES; do
  case $stage in
    build) run_stage build 360 stage_build ;;
    unit) run_stage unit 480 stage_unit ;;
    asan) run_stage asan 600 stage_asan ;;
    tsan) run_stage tsan 300 stage_tsan ;;
    fuzz) run_stage fuzz 480 stage_fuzz ;;
    *) echo "unknown stage '$stage' (build unit asan tsan fuzz)" >&2; exit 2 ;;
  esac
done
log "all stages passed in $(( $(date +%s) - started ))s: $STAGES"
