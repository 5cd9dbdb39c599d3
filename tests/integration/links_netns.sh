#!/usr/bin/env bash
# Three hosts as network namespaces on a bridge (in a fourth namespace), one busd each, a full
# mesh of TCP links (b dials a; c dials a and b). Everything this test makes it removes.
#   pub/sub from two hosts to subscribers on two others: exactly once, in order, intact
#   interest: a subject nobody subscribes to never crosses (link_messages_out stays put)
#   a queue group with members on two hosts, requests from a third: both serve, none lost
#   faults on the a-b link, each with publishing under way, every message checked at the end:
#     5% loss and 50 ms delay with reordering (tc netem; where the kernel has no netem, the
#     loss comes from nftables and the delay/reorder phase is skipped, saying so),
#     an outage longer than dead_after_ms (interface down), and the connection killed (ss -K)
#   kill -9 of busd a: b reports the link down, fails a pending request fast, and resumes when
#     a restarts
#   garbage, an oversize length and a truncated Hello on a's link port: logged, closed, and the
#     links keep flowing
# Needs root and namespaces: otherwise it prints why and exits 77 (meson: SKIP).
#   links_netns.sh BUSD BUSCTL LINK_AGENT
set -uo pipefail
busd=$1 busctl=$2 agent=$3
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "creating network namespaces needs root"
command -v ip >/dev/null || skip "ip (iproute2) is not installed"

tag=bl$(( $$ % 100000 ))
sw=${tag}sw
net="10.$(( 100 + $$ % 100 )).$(( ($$ / 100) % 250 ))"
dir=$(mktemp -d /tmp/busd-netns-XXXXXX)
declare -A busd_pid ip
failures=0
scale=${BUS_TEST_SCALE:-1}
n() { local v=$(( $1 / scale )); echo $(( v > 10 ? v : 10 )); }

cleanup() {
  for h in "${!busd_pid[@]}"; do kill -9 "${busd_pid[$h]}" 2>/dev/null; done
  jobs -p | xargs -r kill -9 2>/dev/null
  for h in a b c; do ip netns del "${tag}$h" 2>/dev/null; done
  ip netns del "$sw" 2>/dev/null
  if [ "$failures" -eq 0 ] || [ -z "${BUS_TEST_KEEP:-}" ]; then rm -rf "$dir"; else echo "kept $dir"; fi
}
trap cleanup EXIT
# in_ns, global, wait_for, links_up_is, ready, check_flow, ok, fail
. "$(dirname "$0")/netns_lib.sh"

ip netns add "$sw" 2>"$dir/err" || skip "ip netns add: $(cat "$dir/err")"
ip -n "$sw" link add br0 type bridge || skip "no bridge support"
ip -n "$sw" link set br0 up
i=1
for h in a b c; do
  ns=${tag}$h
  ip netns add "$ns"
  ip link add "${tag}$h" type veth peer name "${tag}${h}s"
  ip link set "${tag}$h" netns "$ns"
  ip link set "${tag}${h}s" netns "$sw"
  ip -n "$sw" link set "${tag}${h}s" master br0 up
  ip[$h]="$net.$i"
  ip -n "$ns" addr add "${ip[$h]}/24" dev "${tag}$h"
  ip -n "$ns" link set "${tag}$h" up
  ip -n "$ns" link set lo up
  i=$((i + 1))
done

start_busd() {  # host, peers...
  local h=$1; shift
  mkdir -p "$dir/$h"
  {
    printf '[busd]\nsocket = "%s"\nlog_level = "info"\n' "$dir/$h/busd.sock"
    printf '[cluster]\nname = "netns"\nnode = "%s"\nlisten = "%s:7400"\n' "$h" "${ip[$h]}"
    printf 'heartbeat_ms = 200\ndead_after_ms = 1000\nbackoff_min_ms = 50\nbackoff_max_ms = 400\n'
    for p in "$@"; do printf '[[links]]\nkind = "tcp"\npeer = "%s:7400"\n' "${ip[$p]}"; done
  } > "$dir/$h/busd.toml"
  # exec all the way down (ip netns exec execs too): $! is busd itself, for kill -9.
  (exec ip netns exec "${tag}$h" "$busd" --config "$dir/$h/busd.toml" >> "$dir/$h/busd.log" 2>&1) &
  busd_pid[$h]=$!
}

start_busd a
start_busd b a
start_busd c a b
wait_for 10 links_up_is a 2 && wait_for 10 links_up_is b 2 && wait_for 10 links_up_is c 2 ||
  { for h in a b c; do tail -5 "$dir/$h/busd.log"; done; fail "the mesh did not come up"; exit 1; }
ok "full mesh of three up (a, b, c at $net.1-3)"

# ---- pub/sub, interest, queue groups and request/reply
COUNT=$(n 5000) check_flow mesh b:0 c:0 -- a c
before=$(global b link_messages_out)
in_ns b "$agent" pub ns.nobody --count 500 > /dev/null 2>&1
sleep 0.2
after=$(global b link_messages_out)
[ "$before" = "$after" ] && ok "interest: 500 messages nobody subscribes to stayed on b (link_messages_out $after)" ||
  fail "interest: link_messages_out went from $before to $after"

check_serve "queue group across hosts" ns.svc b "$(n 400)" a c

# ---- faults on the a-b link (c stays clean)
has_netem=0
if ip netns exec "${tag}b" tc qdisc add dev "${tag}b" root netem delay 1ms 2>/dev/null; then
  has_netem=1
  ip netns exec "${tag}b" tc qdisc del dev "${tag}b" root
fi
if [ $has_netem -eq 1 ]; then
  ip netns exec "${tag}b" tc qdisc add dev "${tag}b" root netem loss 5%
  COUNT=$(n 3000) check_flow loss b:1500 -- a
  ip netns exec "${tag}b" tc qdisc change dev "${tag}b" root netem delay 50ms 10ms reorder 25% 50%
  COUNT=$(n 3000) check_flow delay b:1500 -- a
  ip netns exec "${tag}b" tc qdisc del dev "${tag}b" root
elif command -v nft >/dev/null && ip netns exec "${tag}b" nft add table inet busdloss 2>/dev/null; then
  echo "note: this kernel has no netem (CONFIG_NET_SCH_NETEM): 5% loss from nftables; the 50 ms delay and reordering phase is skipped"
  ip netns exec "${tag}b" nft add chain inet busdloss out '{ type filter hook output priority 0; }'
  ip netns exec "${tag}b" nft add chain inet busdloss in '{ type filter hook input priority 0; }'
  ip netns exec "${tag}b" nft add rule inet busdloss out ip daddr "${ip[a]}" numgen random mod 100 '<' 5 drop
  ip netns exec "${tag}b" nft add rule inet busdloss in ip saddr "${ip[a]}" numgen random mod 100 '<' 5 drop
  COUNT=$(n 3000) check_flow loss b:1500 -- a
  ip netns exec "${tag}b" nft delete table inet busdloss
else
  echo "note: no netem in this kernel and no nft: the loss, delay and reorder phases are skipped"
fi

outage() {
  ip -n "${tag}b" link set "${tag}b" down
  sleep 2.5  # longer than dead_after_ms (1000): both sides declare the link dead
  ip -n "${tag}b" link set "${tag}b" up
}
disc_before=$(global b link_disconnects)
COUNT=$(n 5000) check_flow outage b:1000 -- a -- outage
disc_after=$(global b link_disconnects)
[ "$disc_after" -gt "$disc_before" ] && grep -q 'event=link_down' "$dir/b/busd.log" &&
  ok "outage: b logged link_down and reconnected (link_disconnects $disc_before -> $disc_after)" ||
  fail "outage: no disconnect was counted ($disc_before -> $disc_after)"
wait_for 10 links_up_is b 2 || fail "outage: the a-b link did not come back"

kill_conn() { ip netns exec "${tag}b" ss -K -t state established dst "${ip[a]}" > /dev/null; }
disc_before=$(global b link_disconnects)
COUNT=$(n 3000) check_flow reset b:1000 -- a -- kill_conn
disc_after=$(global b link_disconnects)
[ "$disc_after" -gt "$disc_before" ] && ok "reset: ss -K killed the connection and b made a new one" ||
  fail "reset: ss -K did not end the connection ($disc_before -> $disc_after)"

# ---- kill -9 of busd a
(in_ns_exec a "$agent" serve ns.slow --silent --name never-answers > "$dir/serve-slow.log" 2>&1) &
wait_for 10 ready "$dir/serve-slow.log"
sleep 0.5
start_ns=$(date +%s%N)
in_ns b "$agent" ping ns.slow --count 1 --timeout-ms 20000 > "$dir/ping-slow.log" 2>&1 & pp=$!
sleep 0.5
downs_before=$(grep -c 'event=link_down.*node=a' "$dir/b/busd.log")
kill -9 "${busd_pid[a]}"
wait "$pp"
took_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
if grep -q "Closed=1" "$dir/ping-slow.log" && [ $took_ms -lt 5000 ]; then
  ok "kill -9 of a: the pending request failed fast (Closed after $took_ms ms, deadline 20 s)"
else
  fail "kill -9 of a: $(cat "$dir/ping-slow.log") after $took_ms ms"
fi
[ "$(grep -c 'event=link_down.*node=a' "$dir/b/busd.log")" -gt "$downs_before" ] && ok "b logged the link to a down" ||
  fail "b did not log link_down for a"
grep -q 'event=busd_started' "$dir/a/busd.log" && [ "$(grep -c 'event=busd_started' "$dir/a/busd.log")" -eq 1 ] ||
  fail "a was started more than once before the kill"
start_busd a
wait_for 10 links_up_is a 2 && wait_for 10 links_up_is b 2 || fail "a did not come back into the mesh"
COUNT=$(n 2000) check_flow after_restart b:0 -- a

# ---- garbage on a's link port, from b
refused_before=$(global a link_refused)
for bytes in 'GET / HTTP/1.0\r\n\r\n' '\xff\xff\xff\x7fxx' '\x10\x00\x00\x00\x05\x00'; do
  ip netns exec "${tag}b" bash -c "exec 3<>/dev/tcp/${ip[a]}/7400 && printf '$bytes' >&3 && sleep 0.2" 2>/dev/null
done
wait_for 5 bash -c "[ \$(\"$busctl\" --counters \"$dir/a/busd.counters\" stat --json | python3 -c \"import json,sys; print(json.load(sys.stdin)['counters']['link_refused'])\") -ge $(( refused_before + 3 )) ]" &&
  grep -q 'event=link_refused' "$dir/a/busd.log" &&
  ok "garbage: three bad connections refused and logged" || fail "garbage was not refused/logged"
links_up_is a 2 && ok "the links kept flowing" || fail "a lost a link to garbage"
COUNT=$(n 1000) check_flow after_garbage b:0 c:0 -- a

echo "== $failures failure(s)"
[ $failures -eq 0 ]
