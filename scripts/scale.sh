#!/usr/bin/env bash
# Does stockraft's cost grow with the size of its state? For each record count, a fresh
# three-node cluster on loopback is loaded with that many records (batch creates, concurrently)
# and driven by `stockraft bench --scenario spread` (32 clients, reserve qty 1 on random
# records). Halfway through each run the leader is asked for a snapshot (the whole state
# written to a file while writes go on), so the run's max latency shows any stall it causes.
# Then each node's RSS and data-directory size are read, and the live data: the size of the
# leader's newest snapshot file (the state as a snapshot writes it), against which the memory
# bound is set (RSS within live data + 200 MB). "load s" is the bench's setup: creating the
# records through the batch route. Prints one table.
#
#   scripts/scale.sh                              1,000 / 200,000 / 1,000,000 records, 10 s each
#   scripts/scale.sh --records 1000,200000 --seconds 20
#   scripts/scale.sh --smoke                      tiny counts, 1 s (checks the script works)
#
# STOCKRAFT_BIN runs a given binary instead of building the release one. Stops exactly the
# processes it started, also on failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
records="1000,200000,1000000" seconds=10 clients=32 smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --smoke) smoke=1 records="100,1000" seconds=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "scale.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'scale: %s\n' "$*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockraft-scale.XXXXXX")"
PIDS=()
stop_nodes() {
  stop_started_processes
  PIDS=()
}
cleanup() {
  stop_nodes
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=lib/throwaway-cluster.sh
. "$ROOT/scripts/lib/throwaway-cluster.sh"
# A smoke checks the script, not the speed: it reuses the debug build the tests made.
if [ "$smoke" = 1 ]; then use_stockraft_binary debug; else use_stockraft_binary release; fi

rss_mib() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }

: >"$WORK/rows"
IFS=, read -r -a counts <<<"$records"
for count in "${counts[@]}"; do
  rm -rf "$WORK/stockraft"
  start_stockraft
  leader="$(wait_for_stockraft_leader)"
  say "$count records: leader is node $leader; loading and running ${seconds}s, C=$clients"
  all_nodes="$(IFS=,; echo "${SR_ADDRS[*]}")"
  leader_addr="${SR_ADDRS[$((leader - 1))]}"
  : >"$WORK/bench.log"
  # The snapshot request waits for the bench's setup (record creation) to finish first.
  (
    until grep -q "set up" "$WORK/bench.log" 2>/dev/null; do sleep 0.2; done
    sleep "$(python3 -c "print($seconds / 2)")"
    # Its build time, or "failed" (and the status) if it was refused.
    curl -sS -o /dev/null -w '%{http_code} %{time_total}\n' -X POST \
      -H "x-stockraft-secret: $SR_SECRET" "http://$leader_addr/api/cluster/snapshot" |
      awk '{ print ($1 == 200 ? $2 : "failed-" $1) }' >"$WORK/snapshot-$count.time" 2>&1 || true
  ) &
  snapshot_pid=$!
  line="$("$BIN" bench --target stockraft --scenario spread --nodes "$all_nodes" \
    --clients "$clients" --seconds "$seconds" --skus "$count" --label "records-$count" 2>&1 |
    tee -a "$WORK/bench.log" | sed -n 's/^BENCH //p')"
  wait "$snapshot_pid" || true
  [ -n "$line" ] || { say "bench printed no result; see $WORK/bench.log"; tail -5 "$WORK/bench.log"; exit 1; }
  rss_max=0 data_max=0
  for id in 1 2 3; do
    rss="$(rss_mib "${SR_PIDS[$id]}")"
    data="$(du -sm "$WORK/stockraft/node-$id" 2>/dev/null | cut -f1 || echo 0)"
    [ "$rss" -gt "$rss_max" ] && rss_max="$rss"
    [ "${data:-0}" -gt "$data_max" ] && data_max="$data"
  done
  snapshot_s="$(cat "$WORK/snapshot-$count.time" 2>/dev/null || echo -)"
  # shellcheck disable=SC2012 # names are ours: <index>-<term>.snap
  newest="$(ls -1 "$WORK/stockraft/node-$leader/snapshots/"*.snap 2>/dev/null | sort | tail -1)"
  live="$(if [ -n "$newest" ]; then du -m --apparent-size "$newest" | cut -f1; else echo 0; fi)"
  load_s="$(sed -n 's/.* set up [0-9]* SKU(s) in \([0-9.]*\) s.*/\1/p' "$WORK/bench.log" | tail -1)"
  printf '%s %s %s %s %s %s %s\n' "$count" "$rss_max" "$data_max" "$live" "${load_s:--}" \
    "${snapshot_s:--}" "$line" >>"$WORK/rows"
  stop_nodes
done

python3 - "$WORK/rows" <<'PY'
import json, sys
rows = []
for raw in open(sys.argv[1]):
    count, rss, data, live, load, snap, line = raw.split(" ", 6)
    rows.append((int(count), int(rss), int(data), int(live), load, snap, json.loads(line)))
base = rows[0][6]
print()
print(f"{'records':>9} | {'ops/s':>7} {'vs first':>8} | {'p50 ms':>6} {'p99 ms':>7} {'vs first':>8} "
      f"{'max ms':>7} | {'snapshot s':>10} | {'RSS MiB':>7} {'data MiB':>8} {'live MiB':>8} | "
      f"{'load s':>6}  (RSS, data: largest node)")
for count, rss, data, live, load, snap, r in rows:
    print(f"{count:>9} | {r['opsPerSec']:>7.0f} {r['opsPerSec'] / base['opsPerSec']:>7.2f}x | "
          f"{r['p50Ms']:>6.2f} {r['p99Ms']:>7.2f} {r['p99Ms'] / base['p99Ms']:>7.2f}x "
          f"{r['maxMs']:>7.1f} | {snap:>10} | {rss:>7} {data:>8} {live:>8} | {load:>6}")
PY
[ "$smoke" = 1 ] && say "smoke run: figures are not meaningful"
exit 0
