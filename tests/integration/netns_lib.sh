# What the network-namespace link tests share (sourced by links_netns.sh and dpdk_netns.sh).
# The caller sets: dir (its temporary directory), tag (namespace name prefix: host h is
# namespace ${tag}h, its busd's files in $dir/h; or ns_of[h] names the namespace it shares with
# another host), agent (link_agent), busctl, and failures=0.

declare -p ns_of >/dev/null 2>&1 || declare -A ns_of=()  # no host shares a namespace
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
in_ns() { local h=$1; shift; BUS_SOCKET="$dir/$h/busd.sock" ip netns exec "${tag}${ns_of[$h]:-$h}" "$@"; }
# The same in a subshell of its own, exec'd all the way down: (in_ns_exec h cmd) & makes $! the
# command itself, so that a kill reaches it.
in_ns_exec() { local h=$1; shift; BUS_SOCKET="$dir/$h/busd.sock" exec ip netns exec "${tag}${ns_of[$h]:-$h}" "$@"; }

global() {  # host, counter name
  "$busctl" --counters "$dir/$1/busd.counters" stat --json 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(d['counters']['$2'])" 2>/dev/null || echo -1
}

wait_for() {  # seconds, command...
  local end=$(( SECONDS + $1 )); shift
  until "$@"; do
    [ $SECONDS -ge $end ] && return 1
    sleep 0.05
  done
}
links_up_is() { [ "$(global "$1" links_up)" = "$2" ]; }
ready() { grep -q '^ready' "$1" 2>/dev/null; }

# Requests from one host to responders on others (a queue group when there are several), each
# answering with its name: every responder serves, none is lost.
check_serve() {  # name, subject, requester host, count, responder hosts...
  local name=$1 subject=$2 from=$3 count=$4 h pids=() out ok_all=1
  shift 4
  local group=()
  [ $# -gt 1 ] && group=(--group workers)
  for h in "$@"; do
    (in_ns_exec "$h" "$agent" serve "$subject" "${group[@]}" --name "svc-$h" > "$dir/serve-$subject-$h.log" 2>&1) &
    pids+=($!)
  done
  for h in "$@"; do wait_for 10 ready "$dir/serve-$subject-$h.log" || fail "$name: responder on $h not ready"; done
  sleep 0.5
  out=$(in_ns "$from" "$agent" ping "$subject" --count "$count")
  echo "   $out"
  for h in "$@"; do [[ "$out" == *"svc-$h="* ]] || ok_all=0; done
  if [ $ok_all -eq 1 ] && [[ "$out" == *"errors=0"* ]]; then
    ok "$name: requests from $from answered by $*, none lost"
  else
    fail "$name: $out"
  fi
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
}

# Subscribers first (ready), a moment for their interest to cross, then the publishers.
check_flow() {  # name, publishers ("host:rate" ...) -- checkers (hosts) -- fault command (run 1 s in)
  local name=$1; shift
  local pubs=() checks=() fault=()
  while [ "$1" != "--" ]; do pubs+=("$1"); shift; done; shift
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do checks+=("$1"); shift; done
  [ $# -gt 0 ] && { shift; fault=("$@"); }
  local count=${COUNT:-2000} k=${#pubs[@]} cpids=() h
  for h in "${checks[@]}"; do
    in_ns "$h" "$agent" check "ns.$name" --publishers "$k" --count "$count" --timeout-s 40 > "$dir/check-$name-$h.log" 2>&1 &
    cpids+=($!)
  done
  for h in "${checks[@]}"; do wait_for 10 ready "$dir/check-$name-$h.log" || fail "$name: checker on $h not ready"; done
  sleep 0.5
  local p=1 ppids=() spec
  for spec in "${pubs[@]}"; do
    in_ns "${spec%%:*}" "$agent" pub "ns.$name" --publisher $p --count "$count" --rate "${spec#*:}" > "$dir/pub-$name-$p.log" 2>&1 &
    ppids+=($!)
    p=$((p + 1))
  done
  if [ ${#fault[@]} -gt 0 ]; then sleep 1; "${fault[@]}"; fi
  for pid in "${ppids[@]}"; do wait "$pid" || fail "$name: a publisher failed"; done
  local all=0
  for i in "${!cpids[@]}"; do
    if wait "${cpids[$i]}"; then :; else all=1; fi
    echo "   ${checks[$i]}: $(tail -1 "$dir/check-$name-${checks[$i]}.log")"
  done
  [ $all -eq 0 ] && ok "$name: $((count * k)) messages to ${#checks[@]} subscriber(s), exactly once, in order" ||
    fail "$name: see the lines above"
}

