#!/usr/bin/env bash
# Start, stop and inspect a local stockraft cluster described by cluster.toml.
#
#   scripts/cluster.sh up       build (release), start every node in cluster.toml, wait for a leader
#   scripts/cluster.sh down     stop exactly the nodes `up` started (by PID)
#   scripts/cluster.sh status   role, term, commit and applied index per node
#   scripts/cluster.sh add N    start node N on the next free port of 21001.. and join it as a
#                               learner, then promote it to voter
#   scripts/cluster.sh remove N remove node N from the cluster and stop it
#
# Environment: STOCKRAFT_CONFIG (default: cluster.toml at the repo root), STOCKRAFT_RUN_DIR
# (default: run/ at the repo root; logs and PIDs live there).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${STOCKRAFT_CONFIG:-$ROOT/cluster.toml}"
RUN_DIR="${STOCKRAFT_RUN_DIR:-$ROOT/run}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/stockraft"
READY_TIMEOUT_S=60

say() { printf 'cluster: %s\n' "$*"; }

# Prints "id addr" for each [[nodes]] entry of the config.
nodes() {
  awk '
    /^\[\[nodes\]\]/ { in_node = 1; id = ""; next }
    /^\[/ { in_node = 0 }
    in_node && /^[[:space:]]*id[[:space:]]*=/ { gsub(/[^0-9]/, "", $0); id = $0 }
    in_node && /^[[:space:]]*addr[[:space:]]*=/ {
      match($0, /"[^"]*"/); addr = substr($0, RSTART + 1, RLENGTH - 2)
      if (id != "") print id, addr
    }
  ' "$CONFIG"
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

running_pids() {
  local f
  for f in "$RUN_DIR"/node-*.pid; do
    [ -e "$f" ] || continue
    local pid; pid="$(cat "$f")"
    if pid_alive "$pid"; then echo "$pid"; fi
  done
}

health() { curl -fsS --max-time 2 "http://$1/api/health" 2>/dev/null; }

json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d.get(sys.argv[1]))' "$1"; }

cmd_up() {
  if [ -n "$(running_pids)" ]; then
    say "already running (PIDs: $(running_pids | tr '\n' ' ')); use 'scripts/cluster.sh status' or 'down'"
    return 0
  fi
  say "building release binary"
  (cd "$ROOT" && cargo build --release --quiet --bin stockraft)
  mkdir -p "$RUN_DIR"
  while read -r id addr; do
    say "starting node $id on $addr (log: $RUN_DIR/node-$id.log)"
    nohup "$BIN" serve --id "$id" --config "$CONFIG" >"$RUN_DIR/node-$id.log" 2>&1 &
    echo $! >"$RUN_DIR/node-$id.pid"
  done < <(nodes)

  local deadline=$((SECONDS + READY_TIMEOUT_S)) leader=""
  while [ $SECONDS -lt $deadline ]; do
    local all_up=1
    leader=""
    while read -r id addr; do
      local body
      if body="$(health "$addr")"; then
        local l; l="$(printf '%s' "$body" | json_field leaderId)"
        [ "$l" != "None" ] && leader="$l"
      else
        all_up=0
      fi
    done < <(nodes)
    if [ $all_up = 1 ] && [ -n "$leader" ]; then
      say "ready: every node answers, leader is node $leader"
      while read -r id addr; do say "  node $id: http://$addr"; done < <(nodes)
      return 0
    fi
    sleep 0.3
  done
  say "not ready after ${READY_TIMEOUT_S}s; logs are in $RUN_DIR"
  return 1
}

cmd_down() {
  local f stopped=0
  for f in "$RUN_DIR"/node-*.pid; do
    [ -e "$f" ] || continue
    local pid; pid="$(cat "$f")"
    if pid_alive "$pid"; then
      kill -TERM "$pid" && stopped=$((stopped + 1))
      local deadline=$((SECONDS + 10))
      while pid_alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
      pid_alive "$pid" && kill -KILL "$pid"
    fi
    rm -f "$f"
  done
  say "stopped $stopped node(s)"
}

cmd_status() {
  printf '%-5s %-22s %-10s %-6s %-8s %-8s %-8s\n' node addr role term leader commit applied
  while read -r id addr; do
    local body
    if body="$(health "$addr")"; then
      printf '%s' "$body" | python3 -c '
import json, sys
d = json.load(sys.stdin)["data"]
print("%-5s %-22s %-10s %-6s %-8s %-8s %-8s" % (sys.argv[1], sys.argv[2], d["role"], d["term"],
      d["leaderId"], d["committedIndex"], d["appliedIndex"]))' "$id" "$addr"
    else
      printf '%-5s %-22s %-10s\n' "$id" "$addr" unreachable
    fi
  done < <(nodes)
}

first_addr() { nodes | head -1 | cut -d' ' -f2; }

admin() { "$BIN" admin --node "$(first_addr)" --config "$CONFIG" "$@"; }

cmd_add() {
  local id="${1:?usage: cluster.sh add N}"
  local port=$((21000 + id)) addr
  addr="127.0.0.1:$port"
  if [ -e "$RUN_DIR/node-$id.pid" ] && pid_alive "$(cat "$RUN_DIR/node-$id.pid")"; then
    say "node $id is already running"; return 1
  fi
  say "starting node $id on $addr, joining through $(first_addr)"
  nohup "$BIN" serve --id "$id" --addr "$addr" --join "$(first_addr)" --config "$CONFIG" \
    >"$RUN_DIR/node-$id.log" 2>&1 &
  echo $! >"$RUN_DIR/node-$id.pid"
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until admin --json status 2>/dev/null | grep -q "\"$addr\""; do
    [ $SECONDS -lt $deadline ] || { say "node $id did not join; see $RUN_DIR/node-$id.log"; return 1; }
    sleep 0.3
  done
  say "node $id joined as a learner; promoting it to voter"
  admin promote --id "$id" >/dev/null
  admin status
}

cmd_remove() {
  local id="${1:?usage: cluster.sh remove N}"
  admin remove --id "$id" >/dev/null
  say "node $id removed from the cluster"
  if [ -e "$RUN_DIR/node-$id.pid" ]; then
    local pid; pid="$(cat "$RUN_DIR/node-$id.pid")"
    pid_alive "$pid" && kill -TERM "$pid"
    rm -f "$RUN_DIR/node-$id.pid"
    say "node $id stopped"
  fi
  admin status
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  add) cmd_add "${2:-}" ;;
  remove) cmd_remove "${2:-}" ;;
  *) echo "usage: $0 up|down|status|add N|remove N" >&2; exit 2 ;;
esac
