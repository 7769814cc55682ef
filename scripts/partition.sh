#!/usr/bin/env bash
# Partition failover on real processes: a three-node cluster, each node in a network namespace
# of its own, cut apart by blackhole routes while clients still reach every node.
#
#   scripts/partition.sh            the full run (about 3 minutes): the leader isolated 4 times
#                                   for 5 s, a follower isolated twice for 5 s, the leader's link
#                                   flapping (10 cycles of 1 s cut, 1 s healed)
#   scripts/partition.sh --short    a few seconds of each scenario (CI)
#   --scenarios leader,follower,flapping   which to run (default: all three)
#   --node-binary PATH              run the nodes from another build (before/after figures);
#                                   the load always comes from this one
#   SR_EXTRA_CONFIG="[raft] ..."    appended to the nodes' cluster.toml (to compare settings)
#
# Needs root (it creates network namespaces); exits 1 at once, saying so, otherwise.
#
# The network, all of it inside namespaces this script creates (named sr<PID>-*), nothing in
# the host's: a hub namespace holding a bridge (10.203.0.254/24, the clients' address) and one
# namespace per node (10.203.0.N/24 on a veth pair whose other end is on the bridge). Cutting a
# node off adds blackhole routes (`ip route add blackhole`) on both sides of each of its peer
# links, so neither side can reach the other, while the hub (the clients) reaches every node.
# The kernel here has no netem: a cut is all or nothing. Everything made (processes, routes,
# namespaces, the temporary directory) is removed on exit, also on failure or Ctrl-C.
#
# The load in each scenario is `stockraft bench --scenario failover` run in the hub namespace:
# 8 keyed writers and 3 linearizable readers over all three nodes. Each scenario prints its
# `failover:` summary; at the end a table of acknowledged writes lost, stale reads, replica
# agreement and the longest write gap. Exits 1 if any write was lost or applied twice, any read
# was stale, or the replicas disagree (the gap is reported, not judged).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
short=0 scenarios="leader,follower,flapping" node_binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --short) short=1; shift ;;
    --scenarios) scenarios="$2"; shift 2 ;;
    --node-binary) node_binary="$2"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "partition.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "partition.sh: needs root (it creates network namespaces and routes); nothing was run" >&2
  exit 1
fi
command -v ip >/dev/null || { echo "partition.sh: needs iproute2 (ip)" >&2; exit 1; }

# Timing, in seconds: how long each cut lasts, the quiet time after it, how many rounds, the
# flapping link's half period and cycles, and the load before the first fault and after the last.
if [ "$short" = 1 ]; then
  rounds_leader=1 rounds_follower=1 cut_s=2 after_cut_s=1 flap_s=0.5 flap_cycles=3 settle_s=1
else
  rounds_leader=4 rounds_follower=2 cut_s=5 after_cut_s=8 flap_s=1 flap_cycles=10 settle_s=3
fi
WRITERS=8 READERS=3
# Bounds each scenario's load however the faults go.
LOAD_SECONDS_MAX=300
SUBNET=10.203.0
HUB_ADDR="$SUBNET.254"
PEER_PORT=7000 CLIENT_PORT=8000

say() { printf 'partition: %s\n' "$*"; }

TAG="sr$$"
NS_HUB="$TAG-hub"
ns_of() { echo "$TAG-n$1"; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockraft-partition.XXXXXX")"
NAMESPACES=() NODE_PIDS=() CUTS=() LOAD_PID=""

cleanup() {
  local pid ns
  set +e
  [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null && wait "$LOAD_PID" 2>/dev/null
  for pid in "${NODE_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null; done
  for pid in "${NODE_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  # Deleting a namespace deletes its links, addresses and routes with it.
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=lib/throwaway-cluster.sh
. "$ROOT/scripts/lib/throwaway-cluster.sh"
# A short run checks the script and the promises, not the speed: the debug build the tests made.
if [ "$short" = 1 ]; then use_stockraft_binary debug; else use_stockraft_binary release; fi
LOAD_BIN="$BIN"
NODE_BIN="${node_binary:-$BIN}"

make_network() {
  local id ns
  ip netns add "$NS_HUB"; NAMESPACES+=("$NS_HUB")
  ip -n "$NS_HUB" link set lo up
  ip -n "$NS_HUB" link add br0 type bridge
  ip -n "$NS_HUB" addr add "$HUB_ADDR/24" dev br0
  ip -n "$NS_HUB" link set br0 up
  for id in 1 2 3; do
    ns="$(ns_of "$id")"
    ip netns add "$ns"; NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
    ip link add "v$TAG-$id" netns "$NS_HUB" type veth peer name eth0 netns "$ns"
    ip -n "$NS_HUB" link set "v$TAG-$id" master br0 up
    ip -n "$ns" addr add "$SUBNET.$id/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  say "network: hub $HUB_ADDR, nodes $SUBNET.1-3 (namespaces $TAG-*)"
}

start_nodes() {
  local id secret
  secret="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
  {
    printf '[cluster]\nsecret = "%s"\n\n' "$secret"
    for id in 1 2 3; do
      printf '[[nodes]]\nid = %s\naddr = "%s:%s"\nclient_addr = "%s:%s"\n\n' \
        "$id" "$SUBNET.$id" "$PEER_PORT" "$SUBNET.$id" "$CLIENT_PORT"
    done
    printf '[storage]\ndata_dir = "%s"\n' "$WORK/data"
    printf '%s\n' "${SR_EXTRA_CONFIG:-}"
  } >"$WORK/cluster.toml"
  chmod 600 "$WORK/cluster.toml"
  for id in 1 2 3; do
    RUST_LOG="${SR_NODE_LOG:-warn}" ip netns exec "$(ns_of "$id")" "$NODE_BIN" serve --id "$id" \
      --config "$WORK/cluster.toml" --insecure-open-client >>"$WORK/node-$id.log" 2>&1 &
    NODE_PIDS+=($!)
  done
}

# Prints "id role leader term" for node $1 as the hub sees it (nothing if it does not answer).
node_state() {
  ip netns exec "$NS_HUB" curl -fsS --max-time 1 "http://$SUBNET.$1:$CLIENT_PORT/api/health" 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(sys.argv[1], d["role"], d.get("leaderId"), d["term"])' "$1" 2>/dev/null || true
}

# Waits (60 s at most) until every node answers and all name the same leader; prints its id.
agreed_leader() {
  local deadline=$((SECONDS + 60)) states leaders
  while [ $SECONDS -lt $deadline ]; do
    states="$(for id in 1 2 3; do node_state "$id"; done)"
    leaders="$(printf '%s\n' "$states" | awk 'NF == 4 { print $3 }' | sort -u)"
    if [ "$(printf '%s\n' "$states" | grep -c .)" = 3 ] && [ "$(printf '%s\n' "$leaders" | wc -l)" = 1 ] &&
      [ "$leaders" != None ]; then
      echo "$leaders"
      return 0
    fi
    sleep 0.1
  done
  say "no agreed leader after 60 s: $states" >&2
  tail -5 "$WORK"/node-*.log >&2
  return 1
}

# The blackhole route in namespace of node $1 towards node $2, and its removal.
cut_route() { ip -n "$(ns_of "$1")" route add blackhole "$SUBNET.$2/32"; CUTS+=("$1 $2"); }
heal_route() { ip -n "$(ns_of "$1")" route del blackhole "$SUBNET.$2/32" 2>/dev/null || true; }

# Cuts node $1 off from both peers (both directions); the hub still reaches it.
isolate() {
  local peer
  for peer in 1 2 3; do
    [ "$peer" = "$1" ] && continue
    cut_route "$1" "$peer"
    cut_route "$peer" "$1"
  done
}

heal_all() {
  local cut
  for cut in "${CUTS[@]}"; do heal_route $cut; done
  CUTS=()
}

# Runs the failover load in the hub until `stop_load`; its output goes to $WORK/load-$1.*.
start_load() {
  rm -f "$WORK/stop"
  ip netns exec "$NS_HUB" "$LOAD_BIN" bench --scenario failover --clients "$WRITERS" \
    --readers "$READERS" --seconds "$LOAD_SECONDS_MAX" --stop-file "$WORK/stop" \
    --nodes "$SUBNET.1:$CLIENT_PORT,$SUBNET.2:$CLIENT_PORT,$SUBNET.3:$CLIENT_PORT" \
    >"$WORK/load-$1.out" 2>"$WORK/load-$1.err" &
  LOAD_PID=$!
  until grep -q 'set up' "$WORK/load-$1.err" 2>/dev/null; do
    kill -0 "$LOAD_PID" 2>/dev/null || { cat "$WORK/load-$1.err" >&2; return 1; }
    sleep 0.1
  done
}

# Ends the load; its status is that of the promises it checked.
stop_load() {
  local status=0
  touch "$WORK/stop"
  wait "$LOAD_PID" || status=$?
  LOAD_PID=""
  grep '^failover:' "$WORK/load-$1.out" | sed "s/^failover:/partition: $1:/"
  sed -n 's/^FAILOVER //p' "$WORK/load-$1.out" >"$WORK/report-$1.json"
  return "$status"
}

scenario_leader() {
  local round leader
  for round in $(seq "$rounds_leader"); do
    leader="$(agreed_leader)"
    say "leader: round $round, isolating leader $leader for ${cut_s} s"
    isolate "$leader"; sleep "$cut_s"; heal_all
    say "leader: healed; new leader $(agreed_leader)"
    sleep "$after_cut_s"
  done
}

scenario_follower() {
  local round leader follower
  for round in $(seq "$rounds_follower"); do
    leader="$(agreed_leader)"
    follower=$(( leader % 3 + 1 ))
    say "follower: round $round, isolating follower $follower for ${cut_s} s (leader $leader)"
    isolate "$follower"; sleep "$cut_s"; heal_all
    say "follower: healed; leader $(agreed_leader)"
    sleep "$after_cut_s"
  done
}

scenario_flapping() {
  local cycle node
  node="$(agreed_leader)"
  say "flapping: node $node's links cut and healed every ${flap_s} s, $flap_cycles times"
  for cycle in $(seq "$flap_cycles"); do
    isolate "$node"; sleep "$flap_s"; heal_all; sleep "$flap_s"
  done
  say "flapping: done; leader $(agreed_leader)"
}

make_network
start_nodes
say "cluster up; leader is node $(agreed_leader) (node logs in $WORK while running)"
failed=""
for scenario in ${scenarios//,/ }; do
  case "$scenario" in leader|follower|flapping) ;; *) say "unknown scenario $scenario"; exit 2 ;; esac
  start_load "$scenario"
  sleep "$settle_s"
  "scenario_$scenario"
  sleep "$settle_s"
  stop_load "$scenario" || failed+=" $scenario"
done

printf '\n%-10s %8s %6s %10s %8s %12s %9s %14s\n' scenario acked lost duplicated stale "lin. reads" agree "longest gap ms"
for scenario in ${scenarios//,/ }; do
  python3 - "$scenario" "$WORK/report-$scenario.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
print(f'{sys.argv[1]:<10} {r["acked"]:>8} {r["lost"]:>6} {r["duplicated"]:>10} {r["staleReads"]:>8} '
      f'{r["readsOk"]:>12} {str(r["replicasAgree"]).lower():>9} {r["longestGapMs"]:>14.0f}')
PY
done
if [ -n "$failed" ]; then
  say "FAIL: a promise was broken in:$failed (lost or duplicated writes, stale reads, or replicas that disagree)"
  exit 1
fi
say "every acknowledged write kept, no stale linearizable read, replicas agree"
