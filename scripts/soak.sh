#!/usr/bin/env bash
# The aging soak: does stockraft hold its speed and its disk over time, under keyed writes and
# leader failures? Minutes long; not part of the test suite (CI runs --smoke).
#
#   scripts/soak.sh                    10 intervals of 30 s (about 6 minutes)
#   scripts/soak.sh --intervals 20 --seconds 60
#   scripts/soak.sh --smoke            2 short intervals: checks the script works end to end
#   scripts/soak.sh --figures-seconds 0   skip the fresh / after-soak figures below
#
# Starts a fresh three-node cluster on loopback (release binary, free ports, temporary data),
# then runs `stockraft bench --scenario spread --keyed` (32 clients, a key on every reserve)
# interval after interval, while the current leader is alternately killed (SIGKILL, restarted
# 1 s later) or frozen (SIGSTOP, resumed 3 s later) every --fault-every seconds. After each
# interval it prints the throughput and each node's data-directory size; at the end, where
# each node's bytes are, the medians of the first and last three intervals (steadier than
# single intervals when comparing builds), and how many snapshot installs the nodes logged.
#
# Before the first interval and after the last (faults stopped, every node up), it also measures
# the benchmark's figures on the same cluster, unkeyed: 32 clients spread over the SKUs, 32 on one
# hot SKU, and one client spread (--figures-seconds each, 10 by default), and prints each
# after-soak figure as a share of the fresh one.
#
# Fails (exit 1) if the last interval's throughput is below 80% of the first's, if an after-soak
# figure is worse than 80% of the fresh one (throughput below 0.8x, or latency above 1.25x), or if a node's
# data directory exceeds the bound ARCHITECTURE.md documents: 128 MiB (the log behind
# `snapshot_log_bytes`, one segment and slack) plus 7 times the newest snapshot S (a state
# larger than a quarter of `snapshot_log_bytes` keeps a log as large as S before the next
# snapshot: 1 S; two snapshot files and a third being built: 3 S; the state's own files,
# two images and the journal since the newest: about 3 S + 64 MiB; sled, which held the state
# before, measured up to 3.4 S).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
intervals=10 seconds=30 fault_every=7 clients=32 skus=1000 smoke=0 figures_seconds=10
while [ $# -gt 0 ]; do
  case "$1" in
    --intervals) intervals="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --fault-every) fault_every="$2"; shift 2 ;;
    --figures-seconds) figures_seconds="$2"; shift 2 ;;
    --smoke) smoke=1 intervals=2 seconds=4 fault_every=3 clients=4 skus=50 figures_seconds=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
BOUND_FIXED_BYTES=$((128 << 20))
THROUGHPUT_KEPT_PERCENT_MIN=80

say() { printf 'soak: %s\n' "$*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockraft-soak.XXXXXX")"
PIDS=()
cleanup() {
  local file
  [ -n "${FAULTS_PID:-}" ] && kill "$FAULTS_PID" 2>/dev/null || true
  # Nodes the fault loop restarted are known only by their PID files.
  for file in "$WORK"/node-*.pid; do
    [ -e "$file" ] && PIDS+=("$(cat "$file")")
  done
  # (frozen ones are resumed first, so that they can stop)
  stop_started_processes
  rm -rf "$WORK"
}
trap cleanup EXIT

# Nodes log warnings, and each snapshot install (counted at the end).
export SR_NODE_LOG="warn,stockraft::raft::snapshot=info"
# shellcheck source=lib/throwaway-cluster.sh
. "$ROOT/scripts/lib/throwaway-cluster.sh"
# A smoke checks the script, not the speed: it reuses the debug build the tests made.
if [ "$smoke" = 1 ]; then use_stockraft_binary debug; else use_stockraft_binary release; fi
start_stockraft
say "leader is node $(wait_for_stockraft_leader)"
all_nodes="$(IFS=,; echo "${SR_ADDRS[*]}")"

# The benchmark's figures on this cluster, one JSON line each, into file $1.
figures() {
  : >"$1"
  [ "$figures_seconds" != 0 ] || return 0
  local args
  for args in "spread 32" "hot 32" "spread 1"; do
    set -- "$1" $args
    "$BIN" bench --target stockraft --scenario "$2" --clients "$3" --skus "$skus" \
      --stock 100000000 --nodes "$all_nodes" --seconds "$figures_seconds" \
      --label "$2-C$3" 2>>"$WORK/bench.log" | sed -n 's/^BENCH //p' >>"$1"
  done
}
figures "$WORK/figures-fresh"

# The fault loop: a subshell that only signals processes by PID, bounded by the soak's length.
# It restarts a killed node itself, so it keeps the node PIDs in a file the main shell reads.
pid_file() { echo "$WORK/node-$1.pid"; }
for id in 1 2 3; do echo "${SR_PIDS[$id]}" >"$(pid_file "$id")"; done
faults() {
  local end=$((SECONDS + intervals * seconds + 30)) round=0 leader pid
  while [ $SECONDS -lt $end ]; do
    sleep "$fault_every"
    leader="$(wait_for_stockraft_leader 2>/dev/null || true)"
    [ -n "$leader" ] || continue
    pid="$(cat "$(pid_file "$leader")")"
    round=$((round + 1))
    if [ $((round % 2)) = 1 ]; then
      echo "fault: SIGKILL leader $leader" >>"$WORK/faults.log"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      RUST_LOG="$SR_NODE_LOG" "$BIN" serve --id "$leader" --config "$WORK/cluster.toml" >>"$WORK/stockraft-$leader.log" 2>&1 &
      echo $! >"$(pid_file "$leader")"
    else
      echo "fault: SIGSTOP leader $leader" >>"$WORK/faults.log"
      kill -STOP "$pid" 2>/dev/null || true
      sleep 3
      kill -CONT "$pid" 2>/dev/null || true
    fi
  done
}
# Its stderr, where bash reports each node it killed as "Killed", goes to faults.err: not to
# the terminal, and not to the fault log, whose lines are counted below.
faults 2>>"$WORK/faults.err" &
FAULTS_PID=$!
PIDS+=("$FAULTS_PID")

data_dir_bytes() { du -sb "$WORK/stockraft/node-$1" 2>/dev/null | cut -f1; }
snapshot_bytes() {
  local newest
  newest="$(ls -1 "$WORK/stockraft/node-$1/snapshots/"*.snap 2>/dev/null | sort | tail -1)"
  [ -n "$newest" ] && stat -c %s "$newest" || echo 0
}

printf '\n%-9s %10s %9s %9s %12s %12s %12s %6s\n' interval "ops/s" "p50 ms" "p99 ms" node1 node2 node3 faults
first="" last="" over="" all_ops=()
for interval in $(seq 1 "$intervals"); do
  line="$("$BIN" bench --target stockraft --scenario spread --keyed --nodes "$all_nodes" \
    --clients "$clients" --skus "$skus" --seconds "$seconds" 2>>"$WORK/bench.log" | sed -n 's/^BENCH //p')"
  read -r ops p50 p99 < <(printf '%s' "$line" | python3 -c \
    'import json,sys; r=json.load(sys.stdin); print(round(r["opsPerSec"]), round(r["p50Ms"],2), round(r["p99Ms"],2))')
  sizes=()
  for id in 1 2 3; do
    bytes="$(data_dir_bytes "$id")"; sizes+=("$bytes")
    bound=$((BOUND_FIXED_BYTES + 7 * $(snapshot_bytes "$id")))
    [ "$bytes" -le "$bound" ] || over+=" node $id: $bytes bytes > bound $bound;"
  done
  printf '%-9s %10s %9s %9s %12s %12s %12s %6s\n' "$interval" "$ops" "$p50" "$p99" \
    "${sizes[0]}" "${sizes[1]}" "${sizes[2]}" "$(wc -l <"$WORK/faults.log" 2>/dev/null || echo 0)"
  [ -n "$first" ] || first="$ops"
  last="$ops"
  all_ops+=("$ops")
done

# The figures again, on the aged cluster: faults stopped, frozen nodes resumed, every node up.
kill "$FAULTS_PID" 2>/dev/null || true
wait "$FAULTS_PID" 2>/dev/null || true
for id in 1 2 3; do
  pid="$(cat "$(pid_file "$id")")"
  kill -CONT "$pid" 2>/dev/null || true
  if ! kill -0 "$pid" 2>/dev/null; then
    RUST_LOG="$SR_NODE_LOG" "$BIN" serve --id "$id" --config "$WORK/cluster.toml" >>"$WORK/stockraft-$id.log" 2>&1 &
    echo $! >"$(pid_file "$id")"
  fi
done
wait_for_stockraft_leader >/dev/null
figures "$WORK/figures-after"
figures_failed=""
if [ "$figures_seconds" != 0 ]; then
  printf '\n%-10s %12s %12s %8s %12s %12s %8s %12s %12s %8s\n' figures "fresh ops/s" "after ops/s" share \
    "fresh p50" "after p50" share "fresh p99" "after p99" share
  python3 - "$WORK/figures-fresh" "$WORK/figures-after" "$WORK/figures-failed" <<'PY'
import json, sys
fresh = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
after = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
failed = []
for f, a in zip(fresh, after):
    ops, p50, p99 = a["opsPerSec"] / f["opsPerSec"], f["p50Ms"] / a["p50Ms"], f["p99Ms"] / a["p99Ms"]
    print(f'{f["label"]:<10} {f["opsPerSec"]:>12.0f} {a["opsPerSec"]:>12.0f} {ops:>7.0%} '
          f'{f["p50Ms"]:>12.2f} {a["p50Ms"]:>12.2f} {p50:>7.0%} {f["p99Ms"]:>12.2f} {a["p99Ms"]:>12.2f} {p99:>7.0%}')
    for name, share in (("ops/s", ops), ("p50", p50), ("p99", p99)):
        if share < 0.8:
            failed.append(f'{f["label"]} {name} at {share:.0%} of fresh')
if len(after) != len(fresh) or not fresh:
    failed.append(f"{len(after)} of {len(fresh)} after-soak figures measured")
open(sys.argv[3], "w").write("; ".join(failed))
PY
  figures_failed="$(cat "$WORK/figures-failed")"
fi

# Where each node's bytes are: the Raft log, the snapshot files, and the state machine's own
# files (its journal and images, state/).
for id in 1 2 3; do
  dir="$WORK/stockraft/node-$id"
  wal="$(du -sb "$dir/wal" 2>/dev/null | cut -f1 || echo 0)"
  snaps="$(du -sb "$dir/snapshots" 2>/dev/null | cut -f1 || echo 0)"
  total="$(data_dir_bytes "$id")"
  say "node $id: $total bytes = log $wal + snapshots $snaps (newest $(snapshot_bytes "$id")) + state machine (state/) $((total - wal - snaps))"
done
kept=$((last * 100 / (first > 0 ? first : 1)))
say "last interval at ${kept}% of the first (${last} vs ${first} reserves/s); faults: $(wc -l <"$WORK/faults.log" 2>/dev/null || echo 0)"
# Single 30 s intervals vary by several percent between runs of the same build: medians of the
# first and last three say more when comparing builds (the rule below is the issue's).
say "$(printf '%s\n' "${all_ops[@]}" | python3 -c '
import statistics, sys
ops = [int(line) for line in sys.stdin if line.strip()]
k = max(1, min(3, len(ops) // 2))
head, tail = statistics.median(ops[:k]), statistics.median(ops[-k:])
print(f"median of the first {k} intervals {head:.0f}, of the last {k} {tail:.0f} reserves/s ({100 * tail / max(head, 1):.0f}%)")')"
# Each snapshot install rewrites a node's whole state: they should be rare (the nodes log each
# one at INFO, `raft::snapshot::install`).
say "snapshot installs: $(cat "$WORK"/stockraft-*.log 2>/dev/null | grep -c 'installed a snapshot: the whole state replaced' || true)"
status=0
if [ -n "$over" ]; then
  say "FAIL: a data directory exceeded its bound:$over"
  status=1
fi
if [ "$smoke" = 0 ] && [ -n "$figures_failed" ]; then
  say "FAIL: after the soak, $figures_failed (a share is the after-soak figure over the fresh one; latency shares are fresh over after)"
  status=1
fi
if [ "$smoke" = 0 ] && [ "$kept" -lt "$THROUGHPUT_KEPT_PERCENT_MIN" ]; then
  say "FAIL: throughput fell below ${THROUGHPUT_KEPT_PERCENT_MIN}% of the first interval"
  status=1
fi
[ "$smoke" = 1 ] && say "smoke run: the throughput rule is not applied to seconds-long intervals"
exit "$status"
