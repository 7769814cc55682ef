#!/usr/bin/env bash
# Start, stop and inspect a local stockraft cluster described by cluster.toml.
#
#   scripts/cluster.sh up       build (release), start every node in cluster.toml, wait for a leader
#   scripts/cluster.sh up --tls the same with mutual TLS between nodes and HTTPS for clients
#                               (a throwaway CA and certificates made by `stockraft certs` in
#                               run/tls; clients trust run/tls/ca.pem)
#   scripts/cluster.sh up --restore FILE [--force]
#                               restore the backup FILE into every node's data directory (a new
#                               cluster: new cluster id, the backup's state; refused if a data
#                               directory is not empty, unless --force), then start as `up`
#   scripts/cluster.sh down     stop exactly the nodes `up` started (by PID)
#   scripts/cluster.sh status   role, term, commit and applied index per node
#   scripts/cluster.sh add N    start node N (clients on port 21000+N, peers on 22000+N) and join
#                               it as a learner, then promote it to voter
#   scripts/cluster.sh remove N remove node N from the cluster, stop it, delete its data directory
#   scripts/cluster.sh restart N
#                               restart node N (SIGTERM: a leader hands leadership over first),
#                               then wait until it has applied everything the leader committed
#   scripts/cluster.sh restart --rolling
#                               restart every node that way, one at a time, followers first and
#                               the leader last (an upgrade: rebuild, then this)
#
# Environment: STOCKRAFT_CONFIG (default: cluster.toml at the repo root), STOCKRAFT_RUN_DIR
# (default: run/ at the repo root; logs, PIDs, the secret and certificates live there),
# STOCKRAFT_BIN (a binary to run instead of building target/release/stockraft).
#
# The cluster secret is not committed anywhere: `up` writes a random one to run/secret (owner
# only) on first use and hands it to nodes and the admin CLI as STOCKRAFT_SECRET_FILE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${STOCKRAFT_CONFIG:-$ROOT/cluster.toml}"
RUN_DIR="${STOCKRAFT_RUN_DIR:-$ROOT/run}"
BIN="${STOCKRAFT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/stockraft}"
READY_TIMEOUT_S=60
export STOCKRAFT_SECRET_FILE="$RUN_DIR/secret"
TLS_DIR="$RUN_DIR/tls"

say() { printf 'cluster: %s\n' "$*"; }

# Prints "id addr" for each [[nodes]] entry of the config.
# One line per node: id, then the address clients use (client_addr, else addr); with
# `nodes peer`, the peer address (addr) instead.
nodes() {
  awk -v want="${1:-client}" '
    function flush() { if (id != "") print id, (want == "client" && client != "" ? client : addr) }
    /^\[\[nodes\]\]/ { flush(); in_node = 1; id = ""; addr = ""; client = ""; next }
    /^\[/ { flush(); in_node = 0; id = "" }
    in_node && /^[[:space:]]*id[[:space:]]*=/ { gsub(/[^0-9]/, "", $0); id = $0 }
    in_node && /^[[:space:]]*addr[[:space:]]*=/ {
      match($0, /"[^"]*"/); addr = substr($0, RSTART + 1, RLENGTH - 2)
    }
    in_node && /^[[:space:]]*client_addr[[:space:]]*=/ {
      match($0, /"[^"]*"/); client = substr($0, RSTART + 1, RLENGTH - 2)
    }
    END { flush() }
  ' "$CONFIG"
}

tls_on() { [ -e "$RUN_DIR/tls-on" ]; }
scheme() { if tls_on; then echo https; else echo http; fi; }

make_secret() {
  if [ ! -s "$STOCKRAFT_SECRET_FILE" ]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STOCKRAFT_SECRET_FILE")
    say "generated a random cluster secret in $STOCKRAFT_SECRET_FILE"
  fi
}

# Node environment for TLS ({id} is filled in by the node itself).
tls_env() {
  if tls_on; then
    export STOCKRAFT_TLS_CA="$TLS_DIR/ca.pem"
    export STOCKRAFT_TLS_CERT="$TLS_DIR/node-{id}.pem"
    export STOCKRAFT_TLS_KEY="$TLS_DIR/node-{id}-key.pem"
    export STOCKRAFT_TLS_DIR="$TLS_DIR"
  fi
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

health() {
  if tls_on; then
    curl -fsS --max-time 2 --cacert "$TLS_DIR/ca.pem" "https://$1/api/health" 2>/dev/null
  else
    curl -fsS --max-time 2 "http://$1/api/health" 2>/dev/null
  fi
}

json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d.get(sys.argv[1]))' "$1"; }

cmd_up() {
  local tls=0 restore="" force=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --tls) tls=1 ;;
      --restore) restore="${2:?usage: $0 up --restore FILE}"; shift ;;
      --force) force=--force ;;
      *) echo "usage: $0 up [--tls] [--restore FILE [--force]]" >&2; return 2 ;;
    esac
    shift
  done
  if [ -n "$(running_pids)" ]; then
    say "already running (PIDs: $(running_pids | tr '\n' ' ')); use 'scripts/cluster.sh status' or 'down'"
    return 0
  fi
  if [ -z "${STOCKRAFT_BIN:-}" ]; then
    say "building release binary"
    (cd "$ROOT" && cargo build --release --quiet --bin stockraft)
  fi
  mkdir -p "$RUN_DIR"
  chmod 700 "$RUN_DIR"
  make_secret
  rm -f "$RUN_DIR/tls-on"
  if [ $tls = 1 ]; then
    if [ ! -e "$TLS_DIR/ca.pem" ]; then
      "$BIN" certs --out "$TLS_DIR" --nodes "$(nodes | cut -d' ' -f1 | paste -sd,)"
    fi
    touch "$RUN_DIR/tls-on"
  fi
  tls_env
  if [ -n "$restore" ]; then
    say "restoring $restore into a new cluster"
    "$BIN" restore --from "$restore" --config "$CONFIG" $force
  fi
  while read -r id addr; do
    : >"$RUN_DIR/node-$id.log"
    start_node "$id"
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
      while read -r id addr; do say "  node $id: $(scheme)://$addr"; done < <(nodes)
      tls_on && say "clients trust $TLS_DIR/ca.pem (curl --cacert $TLS_DIR/ca.pem)"
      return 0
    fi
    sleep 0.3
  done
  say "not ready after ${READY_TIMEOUT_S}s; logs are in $RUN_DIR"
  return 1
}

# Starts node $1: a node of the config as `up` does, one `add` started on its own addresses
# (its data directory already holds its membership, so no --join).
start_node() {
  local id="$1" addr
  tls_env
  addr="$(nodes | awk -v id="$id" '$1 == id { print $2 }')"
  if [ -n "$addr" ]; then
    say "starting node $id on $addr (log: $RUN_DIR/node-$id.log)"
    nohup "$BIN" serve --id "$id" --config "$CONFIG" >>"$RUN_DIR/node-$id.log" 2>&1 &
  else
    say "starting node $id on 127.0.0.1:$((21000 + id)) (log: $RUN_DIR/node-$id.log)"
    nohup "$BIN" serve --id "$id" --addr "127.0.0.1:$((22000 + id))" \
      --client-addr "127.0.0.1:$((21000 + id))" --config "$CONFIG" >>"$RUN_DIR/node-$id.log" 2>&1 &
  fi
  echo $! >"$RUN_DIR/node-$id.pid"
}

# SIGTERM to the process of PID file $1 (a leader hands over, every node drains), then waits
# for it to exit: SIGKILL after 10 s. Removes the PID file. Succeeds if a process was stopped.
stop_pid_file() {
  local pid stopped=1
  pid="$(cat "$1")"
  if pid_alive "$pid"; then
    kill -TERM "$pid" && stopped=0
    local deadline=$((SECONDS + 10))
    while pid_alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    pid_alive "$pid" && kill -KILL "$pid"
  fi
  rm -f "$1"
  return $stopped
}

cmd_down() {
  local f stopped=0
  for f in "$RUN_DIR"/node-*.pid; do
    [ -e "$f" ] || continue
    if stop_pid_file "$f"; then stopped=$((stopped + 1)); fi
  done
  say "stopped $stopped node(s)"
}

# The address clients reach node $1 at (nodes of the config, else those `add` gives).
node_addr() {
  local addr
  addr="$(nodes | awk -v id="$1" '$1 == id { print $2 }')"
  echo "${addr:-127.0.0.1:$((21000 + $1))}"
}

# The ids of the running nodes (by PID file), in order.
running_ids() {
  local f
  for f in "$RUN_DIR"/node-*.pid; do
    [ -e "$f" ] || continue
    pid_alive "$(cat "$f")" && basename "$f" .pid | sed 's/^node-//'
  done | sort -n
}

# The leader's id and commit index, as the first answering node and then the leader report them.
leader_commit() {
  local id leader body
  for id in $(running_ids); do
    leader="$(health "$(node_addr "$id")" | json_field leaderId 2>/dev/null || true)"
    [ -n "$leader" ] && [ "$leader" != None ] && break
  done
  [ -n "$leader" ] && [ "$leader" != None ] || return 1
  body="$(health "$(node_addr "$leader")")" || return 1
  echo "$leader $(printf '%s' "$body" | json_field committedIndex)"
}

# Waits until node $1 answers, knows a leader, and has applied the leader's commit index as it
# was once the node answered: then it is caught up, and the next node may stop.
wait_caught_up() {
  local id="$1" deadline=$((SECONDS + READY_TIMEOUT_S)) target="" body applied
  while [ $SECONDS -lt $deadline ]; do
    if body="$(health "$(node_addr "$id")")"; then
      if [ -z "$target" ]; then
        target="$(leader_commit | cut -d' ' -f2 || true)"
        [ "$target" = None ] && target=""
      fi
      applied="$(printf '%s' "$body" | json_field appliedIndex)"
      if [ -n "$target" ] && [ "$applied" != None ] && [ "$applied" -ge "$target" ]; then
        say "node $id is caught up (applied $applied >= the leader's commit $target)"
        return 0
      fi
    fi
    sleep 0.1
  done
  say "node $id did not catch up within ${READY_TIMEOUT_S}s; see $RUN_DIR/node-$id.log"
  return 1
}

restart_node() {
  local id="$1" began=$SECONDS
  [ -e "$RUN_DIR/node-$id.pid" ] || { say "node $id is not running (no $RUN_DIR/node-$id.pid)"; return 1; }
  say "stopping node $id (SIGTERM)"
  stop_pid_file "$RUN_DIR/node-$id.pid" || say "node $id was not running"
  start_node "$id"
  wait_caught_up "$id"
  say "node $id restarted in $((SECONDS - began)) s"
}

cmd_restart() {
  case "${1:-}" in
    --rolling)
      local leader ids id
      leader="$(leader_commit | cut -d' ' -f1)" || { say "no leader: not restarting"; return 1; }
      # Followers first: the leader goes last, handing over once to a node already restarted.
      ids="$(running_ids | grep -vx "$leader" || true) $leader"
      say "rolling restart, in this order: $(echo $ids)"
      for id in $ids; do restart_node "$id"; done
      say "rolling restart done; leader is node $(leader_commit | cut -d' ' -f1)"
      ;;
    "" | -*) echo "usage: $0 restart N|--rolling" >&2; return 2 ;;
    *) restart_node "$1" ;;
  esac
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

# The first node's peer address: admin calls and joins go there (a client listener takes no
# cluster secret).
first_addr() { nodes peer | head -1 | cut -d' ' -f2; }

admin() { tls_env; "$BIN" admin --node "$(first_addr)" --config "$CONFIG" "$@"; }

cmd_add() {
  local id="${1:?usage: cluster.sh add N}"
  local addr="127.0.0.1:$((22000 + id))" client_addr="127.0.0.1:$((21000 + id))"
  tls_env
  if tls_on && [ ! -e "$TLS_DIR/node-$id.pem" ]; then
    "$BIN" certs --out "$TLS_DIR" --nodes "$id"
  fi
  if [ -e "$RUN_DIR/node-$id.pid" ] && pid_alive "$(cat "$RUN_DIR/node-$id.pid")"; then
    say "node $id is already running"; return 1
  fi
  say "starting node $id (clients: $client_addr, peers: $addr), joining through $(first_addr)"
  nohup "$BIN" serve --id "$id" --addr "$addr" --client-addr "$client_addr" \
    --join "$(first_addr)" --config "$CONFIG" >"$RUN_DIR/node-$id.log" 2>&1 &
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

# The data directory of node N (storage.data_dir of the configuration, relative to it, or
# STOCKRAFT_DATA_DIR).
node_data_dir() {
  local dir="${STOCKRAFT_DATA_DIR:-}"
  if [ -z "$dir" ]; then
    dir="$(awk '/^\[storage\]/ { s = 1; next } /^\[/ { s = 0 }
      s && /^[[:space:]]*data_dir[[:space:]]*=/ { match($0, /"[^"]*"/); print substr($0, RSTART + 1, RLENGTH - 2) }' "$CONFIG")"
    dir="${dir:-data}"
    case "$dir" in /*) ;; *) dir="$(dirname "$CONFIG")/$dir" ;; esac
  fi
  echo "$dir/node-$1"
}

cmd_remove() {
  local id="${1:?usage: cluster.sh remove N}"
  admin remove --id "$id" >/dev/null
  say "node $id removed from the cluster"
  if [ -e "$RUN_DIR/node-$id.pid" ]; then
    local pid; pid="$(cat "$RUN_DIR/node-$id.pid")"
    if pid_alive "$pid"; then
      kill -TERM "$pid"
      local deadline=$((SECONDS + 10))
      while pid_alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    fi
    rm -f "$RUN_DIR/node-$id.pid"
    # A removed member's Raft state is of no use (it is no longer in the cluster) and would make
    # a later `add` start from a stale membership: `add` starts it empty instead.
    rm -rf "$(node_data_dir "$id")"
    say "node $id stopped and its data directory deleted"
  fi
  admin status
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  add) cmd_add "${2:-}" ;;
  remove) cmd_remove "${2:-}" ;;
  restart) cmd_restart "${2:-}" ;;
  *) echo "usage: $0 up [--tls] [--restore FILE [--force]]|down|status|add N|remove N|restart N|restart --rolling" >&2; exit 2 ;;
esac
