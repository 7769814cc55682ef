# Sourced by bench.sh and soak.sh: a three-node stockraft cluster on loopback with free ports and
# a fresh data directory under $WORK, started from the binary $BIN (release; debug for smokes).
# Every process started is recorded in PIDS (the caller's EXIT trap stops them).
#
#   start_stockraft [extra cluster.toml lines]   sets SR_ADDRS (host:port of nodes 1..3), SR_PIDS,
#                                                SR_SECRET (the cluster secret it generated);
#                                                $SR_EXTRA_CONFIG is appended to the file too,
#                                                right after [storage] (to compare settings: a
#                                                bare key such as "cache_bytes = 268435456"
#                                                lands in [storage]; "[runtime]
#                                                worker_threads = 2" opens a section)
#   wait_for_stockraft_leader                    prints the leader's id (fails after 60 s)
#   restart_stockraft_node ID                    starts node ID again on its data directory
#                                                (nodes log at $SR_NODE_LOG, default warn)

#   use_stockraft_binary release|debug           sets BIN: $STOCKRAFT_BIN if set (an older build,
#                                                to compare before and after), else builds it
#   stop_started_processes                       TERM, then wait for, every PID in PIDS

use_stockraft_binary() {
  local profile="$1" flags=()
  if [ -n "${STOCKRAFT_BIN:-}" ]; then
    BIN="$STOCKRAFT_BIN"
    return
  fi
  [ "$profile" = release ] && flags=(--release)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$profile/stockraft"
  printf 'building the %s binary\n' "$profile" >&2
  (cd "$ROOT" && cargo build "${flags[@]}" --quiet --bin stockraft)
}

stop_started_processes() {
  local pid
  for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

start_stockraft() {
  local extra="${1:-}" port id
  SR_SECRET="throwaway-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  SR_ADDRS=()
  {
    printf '[cluster]\nsecret = "%s"\n\n' "$SR_SECRET"
    for id in 1 2 3; do
      port="$(free_port)"; SR_ADDRS+=("127.0.0.1:$port")
      printf '[[nodes]]\nid = %s\naddr = "127.0.0.1:%s"\n\n' "$id" "$port"
    done
    printf '[storage]\ndata_dir = "%s"\n%s\n' "$WORK/stockraft" "$extra"
    printf '%s\n' "${SR_EXTRA_CONFIG:-}"
  } >"$WORK/cluster.toml"
  SR_PIDS=()
  for id in 1 2 3; do restart_stockraft_node "$id"; done
}

restart_stockraft_node() {
  local id="$1"
  RUST_LOG="${SR_NODE_LOG:-warn}" "$BIN" serve --id "$id" --config "$WORK/cluster.toml" >>"$WORK/stockraft-$id.log" 2>&1 &
  SR_PIDS[$id]=$!
  PIDS+=($!)
}

wait_for_stockraft_leader() {
  local deadline=$((SECONDS + 60)) leader="" addr
  while [ -z "$leader" ]; do
    if [ $SECONDS -ge $deadline ]; then
      echo "no stockraft leader after 60 s; logs in $WORK" >&2
      tail -5 "$WORK"/stockraft-*.log >&2
      return 1
    fi
    for addr in "${SR_ADDRS[@]}"; do
      leader="$(curl -fsS --max-time 1 "http://$addr/api/health" 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["data"].get("leaderId") or "")' 2>/dev/null || true)"
      [ -n "$leader" ] && break
    done
    [ -n "$leader" ] || sleep 0.2
  done
  echo "$leader"
}
