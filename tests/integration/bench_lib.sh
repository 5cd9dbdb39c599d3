# Shared by the busbench_*.sh tests (sourced; $busbench and $check set first): $out, a temporary
# directory removed at exit, and run_bench.
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# run_bench NAME SCENARIO ARGS...: busbench ARGS --quiet --json $out/NAME.json, the table into
# $out/NAME.txt and onto stdout, the JSON checked against SCENARIO's schema; exits on failure.
run_bench() {
  local name=$1 scenario=$2
  shift 2
  echo "== busbench $*"
  "$busbench" "$@" --quiet --json "$out/$name.json" > "$out/$name.txt" 2>&1 || {
    cat "$out/$name.txt"
    echo "busbench $* failed"
    exit 1
  }
  cat "$out/$name.txt"
  python3 "$check" "$out/$name.json" --scenario "$scenario"
}
