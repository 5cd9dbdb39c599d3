#!/usr/bin/env bash
# Two hosts as network namespaces joined by a veth pair; one busd in each with a DPDK link on
# net_af_packet (the kernel hands the veth's frames to DPDK; the link's IPv4 addresses are not
# the kernel's, so the kernel stack ignores them). Everything this test makes it removes.
#   the link comes up (the peer's MAC learned by ARP)
#   pub/sub both ways: exactly once, in order, intact (sequence numbers and payload hashes)
#   a queue group with members on both hosts, and request/reply across the link
#   interop: tcpdump captures the link's traffic in a namespace; tcpdump reads it back as UDP,
#     and flatc --json --raw-binary decodes envelopes cut out of the capture (by a script that
#     uses no busd code) to the subject and message ids the subscriber received
#   faults on the wire, publishing under way, every message checked at the end: loss,
#     duplication and corruption (tc netem on the veth, or where the kernel has no netem,
#     nftables on its egress) and reordering (netem, or the port's own impair_reorder):
#     corrupt frames are dropped and counted (link_datagrams_corrupt), busd does not crash
#   kill -9 of one busd: the other reports the link down; it comes back after a restart
#   two links on one port: a third busd on b's end of the veth; busd a links to b and to it
#   through its one port, told apart by UDP port; messages from both arrive
# Needs root, namespaces and a busd built with DPDK: otherwise it prints why and exits 77.
#   dpdk_netns.sh BUSD BUSCTL LINK_AGENT SCHEMA_DIR
set -uo pipefail
busd=$1 busctl=$2 agent=$3 schemas=$4
here=$(cd "$(dirname "$0")" && pwd)
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "creating network namespaces needs root"
command -v ip >/dev/null || skip "ip (iproute2) is not installed"
"$busd" --help 2>&1 | grep -q . || skip "no busd"
if ! "$busd" --version 2>/dev/null | grep -q dpdk; then
  skip "busd was built without DPDK (libdpdk-dev missing at build time)"
fi

tag=bd$(( $$ % 100000 ))
net="10.$(( 100 + $$ % 100 )).$(( ($$ / 100) % 250 ))"   # the kernel's addresses on the veths
dnet="10.$(( 100 + $$ % 100 )).$(( ($$ / 100) % 250 + 1 ))"  # the DPDK link's (not the kernel's)
dir=$(mktemp -d /tmp/busd-dpdk-netns-XXXXXX)
declare -A busd_pid ip lcore ns_of links_of
ip[a]=$dnet.1 ip[b]=$dnet.2 lcore[a]=0 lcore[b]=1
# A host's links: "LOCAL_UDP_PORT>PEER_IP:PEER_UDP_PORT ...", all on its one port.
links_of[a]="7400>${ip[b]}:7400" links_of[b]="7400>${ip[a]}:7400"
failures=0
scale=${BUS_TEST_SCALE:-1}
n() { local v=$(( $1 / scale )); echo $(( v > 10 ? v : 10 )); }

cleanup() {
  for h in "${!busd_pid[@]}"; do kill -9 "${busd_pid[$h]}" 2>/dev/null; done
  jobs -p | xargs -r kill -9 2>/dev/null
  wait 2>/dev/null
  for h in a b c; do ip netns del "${tag}$h" 2>/dev/null; rm -rf "/var/run/dpdk/${tag}$h"; done
  if [ "$failures" -eq 0 ] || [ -z "${BUS_TEST_KEEP:-}" ]; then rm -rf "$dir"; else echo "kept $dir"; fi
}
trap cleanup EXIT
# in_ns, global, wait_for, links_up_is, ready, check_flow, ok, fail
. "$here/netns_lib.sh"

ip netns add "${tag}a" 2>"$dir/err" || skip "ip netns add: $(cat "$dir/err")"
ip netns add "${tag}b"
ip link add "${tag}a" type veth peer name "${tag}b" || skip "no veth support"
i=1
for h in a b; do
  ip link set "${tag}$h" netns "${tag}$h"
  ip -n "${tag}$h" addr add "$net.$i/24" dev "${tag}$h"
  ip -n "${tag}$h" link set "${tag}$h" up
  ip -n "${tag}$h" link set lo up
  ip netns exec "${tag}$h" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null
  i=$((i + 1))
done

start_busd() {  # host, extra [[dpdk.ports]] keys (the namespace: ns_of[host], else the host's own)
  local h=$1 extra=${2:-} ns=${ns_of[$1]:-$1} l
  mkdir -p "$dir/$h"
  {
    printf '[busd]\nsocket = "%s"\nlog_level = "info"\nlanes = false\n' "$dir/$h/busd.sock"
    printf '[cluster]\nname = "dpdk-netns"\nnode = "%s"\n' "$h"
    printf 'heartbeat_ms = 200\ndead_after_ms = 1000\nbackoff_min_ms = 50\nbackoff_max_ms = 400\n'
    printf '[dpdk]\neal = ["-l", "%s", "--no-huge", "-m", "256", "--no-pci", "--no-telemetry", ' "${lcore[$h]}"
    printf '"--log-level=lib.eal:warning", "--file-prefix=%s", "--vdev=net_af_packet0,iface=%s,qpairs=1"]\n' "${tag}$h" "${tag}$ns"
    printf '[[dpdk.ports]]\nname = "net_af_packet0"\n%s\n' "$extra"
    for l in ${links_of[$h]}; do
      printf '[[links]]\nkind = "dpdk"\nport = "net_af_packet0"\nlocal = "%s:%s"\npeer = "%s"\n' "${ip[$h]}" "${l%%>*}" "${l#*>}"
    done
  } > "$dir/$h/busd.toml"
  (exec ip netns exec "${tag}$ns" "$busd" --config "$dir/$h/busd.toml" >> "$dir/$h/busd.log" 2>&1) &
  busd_pid[$h]=$!
}

start_busd a
start_busd b
wait_for 15 links_up_is a 1 && wait_for 15 links_up_is b 1 ||
  { for h in a b; do tail -5 "$dir/$h/busd.log"; done; fail "the DPDK link did not come up"; exit 1; }
grep -q 'peer_mac=arp' "$dir/a/busd.log" && ok "DPDK link up over af_packet on a veth pair (the peer's MAC by ARP)" ||
  fail "the link came up but not by ARP"

# ---- pub/sub both ways, queue group, request/reply
COUNT=$(n 5000) check_flow a_to_b a:0 -- b
COUNT=$(n 5000) check_flow b_to_a b:0 -- a
check_serve "queue group with members on both hosts" dn.svc b "$(n 400)" a b
check_serve "request/reply across the link" dn.only_a b "$(n 200)" a

# ---- interop: tcpdump and flatc, tools nobody here wrote
if command -v tcpdump >/dev/null && command -v flatc >/dev/null; then
  # exec all the way down (as for busd): $! is tcpdump itself, which the kill below must reach.
  (exec ip netns exec "${tag}b" tcpdump -i "${tag}b" -U -n -w "$dir/link.pcap" udp port 7400 > "$dir/tcpdump.log" 2>&1) &
  td=$!
  sleep 1
  in_ns b "$agent" check dn.capture --publishers 1 --count 20 --print-ids 20 --timeout-s 10 > "$dir/check-capture.log" 2>&1 & ck=$!
  wait_for 10 ready "$dir/check-capture.log"; sleep 0.5
  in_ns a "$agent" pub dn.capture --publisher 1 --count 20 --rate 200 > /dev/null 2>&1
  wait "$ck"
  sleep 0.5
  kill "$td" 2>/dev/null; wait "$td" 2>/dev/null
  udp_lines=$(tcpdump -r "$dir/link.pcap" -n 2>/dev/null | grep -c "UDP, length")
  [ "$udp_lines" -gt 0 ] && ok "tcpdump reads the captured link traffic as UDP ($udp_lines datagrams)" ||
    fail "tcpdump found no UDP datagrams in the capture"
  python3 "$here/dgram_pcap.py" "$dir/link.pcap" "$dir/envs" 5 > "$dir/pcap.log" 2>&1 || fail "dgram_pcap.py: $(tail -1 "$dir/pcap.log")"
  grep -q "crc BAD" "$dir/pcap.log" && fail "a captured datagram has a bad CRC32C: $(grep -m1 'crc BAD' "$dir/pcap.log")"
  decoded=0 matched=0
  for env in "$dir"/envs/env-*.bin; do
    [ -f "$env" ] || continue
    flatc --json --raw-binary --strict-json -o "$dir/envs" "$schemas/envelope.fbs" -- "$env" 2>>"$dir/flatc.log" || continue
    json="${env%.bin}.json"
    [ -f "$json" ] || continue
    decoded=$((decoded + 1))
    read -r subject msg_id < <(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['subject'], d['header']['msg_id'])" "$json")
    grep -q "^id $subject $msg_id\$" "$dir/check-capture.log" && matched=$((matched + 1))
  done
  if [ "$decoded" -gt 0 ] && [ "$matched" -eq "$decoded" ]; then
    ok "flatc decodes $decoded envelopes cut from the capture to the subject and message ids the subscriber got (e.g. $(head -c 300 "$dir"/envs/env-0.json | tr -d '\n ' | head -c 120)...)"
  else
    fail "interop: $decoded envelopes decoded, $matched matched the received ids ($(cat "$dir/flatc.log" 2>/dev/null | tail -2))"
  fi
else
  echo "note: tcpdump or flatc missing: the interop check is skipped (deploy/install-deps.sh installs both)"
fi

# ---- faults
has_netem=0
if ip netns exec "${tag}a" tc qdisc add dev "${tag}a" root netem delay 1ms 2>/dev/null; then
  has_netem=1
  ip netns exec "${tag}a" tc qdisc del dev "${tag}a" root
fi
corrupt_before=$(( $(global a link_datagrams_corrupt) + $(global b link_datagrams_corrupt) ))
if [ $has_netem -eq 1 ]; then
  for h in a b; do
    ip netns exec "${tag}$h" tc qdisc add dev "${tag}$h" root netem loss 5% duplicate 2% corrupt 2% delay 200us 100us reorder 10%
  done
  faults="tc netem: loss 5%, duplicate 2%, corrupt 2%, reorder 10%"
elif command -v nft >/dev/null && ip netns exec "${tag}a" nft add table netdev busdchaos 2>/dev/null; then
  ip netns exec "${tag}a" nft delete table netdev busdchaos
  # No netem in this kernel: loss, duplicates and corruption from nftables on each veth's
  # egress (af_packet taps the ingress before any ingress hook), reordering from the ports'
  # own fault injection (impair_reorder, per mille), which needs a restart of both busd.
  for h in a b; do
    ip netns exec "${tag}$h" nft -f - <<EOF
table netdev busdchaos {
  chain out {
    type filter hook egress device "${tag}$h" priority 0;
    meta l4proto udp numgen random mod 100 < 5 drop
    meta l4proto udp numgen random mod 100 < 2 @ih,512,8 set 0x5a
    meta l4proto udp numgen random mod 100 < 2 dup to "${tag}$h"
  }
}
EOF
  done
  for h in a b; do kill "${busd_pid[$h]}"; wait "${busd_pid[$h]}" 2>/dev/null; done
  start_busd a "impair_reorder = 100"
  start_busd b "impair_reorder = 100"
  wait_for 15 links_up_is a 1 && wait_for 15 links_up_is b 1 || fail "faults: the link did not come back up"
  corrupt_before=0
  faults="nftables (no netem in this kernel): loss 5%, duplicate 2%, corrupt 2%; the ports' impair_reorder: 10%"
else
  faults=""
  echo "note: no netem in this kernel and no nft: the fault phase is skipped"
fi
if [ -n "$faults" ]; then
  echo "   faults on both directions: $faults"
  COUNT=$(n 6000) check_flow faults_a_to_b a:3000 -- b
  COUNT=$(n 6000) check_flow faults_b_to_a b:3000 -- a
  sleep 1.5  # one counters tick
  corrupt=$(( $(global a link_datagrams_corrupt) + $(global b link_datagrams_corrupt) - corrupt_before ))
  rtx=$(( $(global a link_retransmits) + $(global b link_retransmits) ))
  naks=$(( $(global a link_naks) + $(global b link_naks) ))
  [ "$corrupt" -gt 0 ] && ok "corrupt datagrams dropped and counted: link_datagrams_corrupt $corrupt (retransmits $rtx, NAK ranges $naks)" ||
    fail "no corrupt datagram was counted under corruption (retransmits $rtx)"
  for h in a b; do kill -0 "${busd_pid[$h]}" 2>/dev/null || fail "busd $h died under faults"; done
  for h in a b; do
    ip netns exec "${tag}$h" tc qdisc del dev "${tag}$h" root 2>/dev/null
    ip netns exec "${tag}$h" nft delete table netdev busdchaos 2>/dev/null
  done
fi

# ---- kill -9 of busd a
downs_before=$(grep -c 'event=link_down' "$dir/b/busd.log")
kill -9 "${busd_pid[a]}"
wait "${busd_pid[a]}" 2>/dev/null
wait_for 10 bash -c "[ \$(grep -c 'event=link_down' '$dir/b/busd.log') -gt $downs_before ]" &&
  ok "kill -9 of a: b logged the link down" || fail "kill -9 of a: b did not log link_down"
start_busd a
wait_for 15 links_up_is a 1 && wait_for 15 links_up_is b 1 && ok "a restarted: the link is up again" ||
  fail "a did not come back"
COUNT=$(n 2000) check_flow after_restart b:0 -- a

# ---- two links on one port: busd c runs in b's namespace with a DPDK port on the same veth
# end; busd a (restarted with a second link) reaches b and c through its one port, told apart
# by its local UDP port (7400 for b, 7401 for c). c's port answers ARP for c's address; b's
# port sees c's datagrams too and drops them as not its own (and the other way round).
ip[c]=$dnet.3 lcore[c]=0 ns_of[c]=b
links_of[c]="7400>${ip[a]}:7401"
links_of[a]="7400>${ip[b]}:7400 7401>${ip[c]}:7400"
kill "${busd_pid[a]}"; wait "${busd_pid[a]}" 2>/dev/null
start_busd a
start_busd c
if wait_for 15 links_up_is a 2 && wait_for 15 links_up_is c 1 && wait_for 15 links_up_is b 1; then
  ok "two DPDK links on one port: a is linked to b (a:7400) and to c (a:7401) through net_af_packet0"
  COUNT=$(n 2000) check_flow shared_port b:0 c:0 -- a
else
  for h in a c; do tail -3 "$dir/$h/busd.log"; done
  fail "two links on one port: links_up a=$(global a links_up) b=$(global b links_up) c=$(global c links_up)"
fi

echo "== $failures failure(s)"
[ $failures -eq 0 ]
