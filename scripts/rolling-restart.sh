#!/usr/bin/env bash
# What a rolling restart costs clients: acknowledged writes lost (must be 0) and the longest
# write gap, measured under keyed writers (`stockraft bench --scenario failover`).
#
#   scripts/rolling-restart.sh                 restart every node, followers first, the leader
#                                              last (`scripts/cluster.sh restart --rolling`:
#                                              SIGTERM, the leader hands over, wait until caught up)
#   scripts/rolling-restart.sh --kill-leader   instead, SIGKILL the leader and start it again: what
#                                              an unplanned loss (or a stop without hand-over) costs
#   --writers N (8)  --readers N (0)  --settle-seconds S (3: load before and after the restarts)
#   --node-binary PATH   run the nodes from another build (e.g. one before the hand-over), the
#                        load always from this one
#   STOCKRAFT_BIN=PATH   a binary to run (load and nodes) instead of building target/release
#   SR_EXTRA_CONFIG="[raft] ..."   appended to the nodes' cluster.toml (to compare settings)
#
# Starts a fresh three-node cluster with scripts/cluster.sh on free loopback ports and a
# temporary run directory, and stops it and deletes everything on exit. Prints the load's
# `failover:` summary and `FAILOVER {json}` line; exits 1 if a write was lost or duplicated, a
# read was stale or the replicas disagree (the gap is reported, not judged).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
writers=8 readers=0 settle_seconds=3 mode=rolling node_binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kill-leader) mode=kill; shift ;;
    --writers) writers="$2"; shift 2 ;;
    --readers) readers="$2"; shift 2 ;;
    --settle-seconds) settle_seconds="$2"; shift 2 ;;
    --node-binary) node_binary="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "rolling-restart.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
# Bounds the load however the restarts go (each waits at most a minute per node).
LOAD_SECONDS_MAX=600

say() { printf 'rolling-restart: %s\n' "$*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockraft-rolling.XXXXXX")"
export STOCKRAFT_CONFIG="$WORK/cluster.toml" STOCKRAFT_RUN_DIR="$WORK/run"
CLUSTER="$ROOT/scripts/cluster.sh"
LOAD_PID=""
cleanup() {
  [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null && wait "$LOAD_PID" 2>/dev/null
  "$CLUSTER" down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -n "${STOCKRAFT_BIN:-}" ]; then
  LOAD_BIN="$STOCKRAFT_BIN"
else
  say "building the release binary"
  (cd "$ROOT" && cargo build --release --quiet --bin stockraft)
  LOAD_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/stockraft"
fi
[ -n "$node_binary" ] && export STOCKRAFT_BIN="$node_binary"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
client_addrs=()
# (the secret comes from scripts/cluster.sh, as STOCKRAFT_SECRET_FILE)
printf '[cluster]\n\n' >"$STOCKRAFT_CONFIG"
for id in 1 2 3; do
  client="127.0.0.1:$(free_port)"
  client_addrs+=("$client")
  printf '[[nodes]]\nid = %s\naddr = "127.0.0.1:%s"\nclient_addr = "%s"\n\n' "$id" "$(free_port)" "$client"
done >>"$STOCKRAFT_CONFIG"
printf '[storage]\ndata_dir = "%s"\n%s\n' "$WORK/data" "${SR_EXTRA_CONFIG:-}" >>"$STOCKRAFT_CONFIG"
mkdir -p "$STOCKRAFT_RUN_DIR"
"$CLUSTER" up

"$LOAD_BIN" bench --scenario failover --clients "$writers" --readers "$readers" \
  --nodes "$(IFS=,; echo "${client_addrs[*]}")" --seconds "$LOAD_SECONDS_MAX" \
  --stop-file "$WORK/stop" >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD_PID=$!
until grep -q 'set up' "$WORK/load.err" 2>/dev/null; do
  kill -0 "$LOAD_PID" 2>/dev/null || { cat "$WORK/load.err" >&2; exit 1; }
  sleep 0.1
done
say "load running ($writers writers, $readers readers); ${settle_seconds} s before the restarts"
sleep "$settle_seconds"

if [ "$mode" = rolling ]; then
  "$CLUSTER" restart --rolling
else
  leader="$("$CLUSTER" status | awk 'NR > 1 && $3 == "leader" { print $1 }')"
  say "SIGKILL leader $leader, then starting it again"
  kill -KILL "$(cat "$STOCKRAFT_RUN_DIR/node-$leader.pid")"
  "$CLUSTER" restart "$leader"
fi

say "restarts done; ${settle_seconds} s more load"
sleep "$settle_seconds"
touch "$WORK/stop"
status=0
wait "$LOAD_PID" || status=$?
LOAD_PID=""
cat "$WORK/load.out"
[ "$status" = 0 ] || { say "FAIL: a promise was broken (see above)"; tail -5 "$WORK/load.err" >&2; }
exit "$status"
