#!/usr/bin/env bash
# stockraft side by side with etcd, on this machine, at full durability on both sides.
#
#   scripts/bench.sh                 the standard runs (10 s each), then one table with ratios
#   scripts/bench.sh --seconds 30    longer runs
#   scripts/bench.sh --smoke         seconds-long runs: checks the script works end to end (CI)
#
# Installs etcd from Debian's packages if it is missing (apt-get), builds the release binary,
# starts a three-node stockraft cluster and a three-member etcd cluster on loopback with fresh
# data directories and free ports, runs `stockraft bench` (scenarios hot and spread, C=1 and
# C=32, through every node; plus C=1 through the stockraft leader alone, to show the forwarding
# cost; and stockraft's holds and commits of holds, C=32 over the same SKUs, beside its plain
# reserves), prints the table, and stops exactly the processes it started. Raw results (one JSON
# line per run) are kept in $BENCH_OUT (default: a temporary file, printed at the end).
#
#   scripts/bench.sh --holds 1000000,100000
#       instead of the above, reservations at scale on a fresh stockraft cluster (no etcd):
#       plain reserves for a reference p99; then LIVE holds (TTL one hour) and each node's RSS
#       beside the live data (the size of a snapshot of the state); then DUE more holds made to
#       fall due in the same second, and plain reserves while they expire: their p99 against
#       the reference, and how long the expiry took. With --smoke: tiny counts.
#
#   scripts/bench.sh --hold-ratios 3
#       instead of the above, holds and commits against plain reserves only (no etcd): 3 rounds
#       of spread, hold and commit (C=32) on one fresh stockraft cluster, each round's ratios
#       and their median and range. STOCKRAFT_BIN=<binary> compares another build.
#
#   STOCKRAFT_BASE_BIN=<build before the feed> scripts/bench.sh --feed 3
#       instead of the above, the event feed's cost (no etcd): 3 rounds, each of three fresh
#       clusters running spread (C=32): the base build, this build, and this build with 100
#       subscribers reading the feed on the followers (`stockraft bench --subscribers`); each
#       round's figures, the ratios to base, their median and range, the delivery delay (write
#       acknowledged -> event on a follower); fails if a subscriber missed an event. Without
#       STOCKRAFT_BASE_BIN it runs this build only (no ratios). With --smoke: 4 subscribers.
#
#   scripts/bench.sh --batch 100,1000,8000 [--batch-policy reject-failed-lines]
#       instead of the above, reserves sent as batches (no etcd): on one fresh cluster, single
#       reserves (8 clients), batches of each size (8 clients, `stockraft bench --batch`; policy
#       reject-everything unless told), single reserves (32 clients), each over 100,000 SKUs of
#       its own (--skus); the table of lines committed per second beside the single requests'
#       figures, p50/p99 per batch. With --smoke: 50 SKUs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=10 skus=1000 skus_given=0 stock=100000 smoke=0 holds="" hold_ratios="" feed=""
batch="" batch_policy=reject-everything
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --skus) skus="$2" skus_given=1; shift 2 ;;
    --smoke) smoke=1 seconds=1 skus=50 stock=500; shift ;;
    --holds) holds="$2"; shift 2 ;;
    --hold-ratios) hold_ratios="$2"; shift 2 ;;
    --feed) feed="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --batch-policy) batch_policy="$2"; shift 2 ;;
    -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'bench: %s\n' "$*"; }

ensure_etcd() {
  command -v etcd >/dev/null && return 0
  say "installing etcd from Debian's packages"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
  command -v etcd >/dev/null || { echo "bench.sh: etcd did not install" >&2; exit 1; }
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockraft-bench.XXXXXX")"
OUT="${BENCH_OUT:-$WORK/results.jsonl}"
PIDS=()
cleanup() {
  stop_started_processes
  [ "$OUT" = "$WORK/results.jsonl" ] && cp "$OUT" "${TMPDIR:-/tmp}/stockraft-bench-last.jsonl" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=lib/throwaway-cluster.sh
. "$ROOT/scripts/lib/throwaway-cluster.sh"
if [ -n "$holds" ]; then
  # shellcheck source=lib/holds-at-scale.sh
  . "$ROOT/scripts/lib/holds-at-scale.sh"
  if [ "$smoke" = 1 ]; then use_stockraft_binary debug; else use_stockraft_binary release; fi
  holds_at_scale "$holds"
  exit 0
fi
if [ -n "$hold_ratios" ]; then
  # shellcheck source=lib/hold-ratios.sh
  . "$ROOT/scripts/lib/hold-ratios.sh"
  if [ "$smoke" = 1 ]; then use_stockraft_binary debug; else use_stockraft_binary release; fi
  hold_ratios "$hold_ratios"
  exit 0
fi
if [ -n "$feed" ]; then
  # shellcheck source=lib/feed-ratios.sh
  . "$ROOT/scripts/lib/feed-ratios.sh"
  if [ "$smoke" = 1 ]; then use_stockraft_binary debug; else use_stockraft_binary release; fi
  feed_ratios "$feed"
  exit 0
fi
if [ -n "$batch" ]; then
  # shellcheck source=lib/batch-sizes.sh
  . "$ROOT/scripts/lib/batch-sizes.sh"
  if [ "$smoke" = 1 ]; then use_stockraft_binary debug; else use_stockraft_binary release; fi
  batch_sizes "$batch"
  exit 0
fi
ensure_etcd
# A smoke checks the script, not the speed: it reuses the debug build the tests made.
if [ "$smoke" = 1 ]; then use_stockraft_binary debug; else use_stockraft_binary release; fi

# --- stockraft: three nodes ------------------------------------------------------------------
start_stockraft

# --- etcd: three members -----------------------------------------------------------------------
ETCD_ADDRS=() initial=""
declare -A PEER
for name in e1 e2 e3; do
  PEER[$name]="$(free_port)"
  initial+="${initial:+,}$name=http://127.0.0.1:${PEER[$name]}"
done
for name in e1 e2 e3; do
  client="$(free_port)"; ETCD_ADDRS+=("127.0.0.1:$client")
  etcd --name "$name" --data-dir "$WORK/etcd-$name" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:${PEER[$name]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${PEER[$name]}" \
    --initial-cluster "$initial" --initial-cluster-state new \
    --initial-cluster-token "bench-$$" >"$WORK/etcd-$name.log" 2>&1 &
  PIDS+=($!)
done

# --- wait for both ---------------------------------------------------------------------------
leader="$(wait_for_stockraft_leader)"
deadline=$((SECONDS + 60))
for addr in "${ETCD_ADDRS[@]}"; do
  until curl -fsS --max-time 2 "http://$addr/health" 2>/dev/null | grep -q true; do
    [ $SECONDS -lt $deadline ] || { say "etcd did not become healthy; logs in $WORK"; tail -5 "$WORK"/etcd-*.log; exit 1; }
    sleep 0.2
  done
done
say "stockraft leader is node $leader; etcd $(etcd --version | head -1)"

all_sr="$(IFS=,; echo "${SR_ADDRS[*]}")"
all_etcd="$(IFS=,; echo "${ETCD_ADDRS[*]}")"
leader_addr="${SR_ADDRS[$((leader - 1))]}"

bench() {
  "$BIN" bench --seconds "$seconds" --skus "$skus" --stock "$stock" "$@" | tee -a "$WORK/bench.log" |
    sed -n 's/^BENCH //p' >>"$OUT"
}
: >"$OUT"
for scenario in hot spread; do
  for clients in 1 32; do
    say "$scenario, C=$clients"
    bench --target stockraft --nodes "$all_sr" --scenario "$scenario" --clients "$clients" --label any-node
    bench --target etcd --nodes "$all_etcd" --scenario "$scenario" --clients "$clients" --label any-node
  done
  say "$scenario, C=1, stockraft leader only"
  bench --target stockraft --nodes "$leader_addr" --scenario "$scenario" --clients 1 --label leader
done
# Reservations (issue 31): a hold is a reserve with ttlSeconds; commit commits holds made just
# before (untimed). Same SKUs, same clients as spread C=32, so the ratios compare like with like.
for scenario in hold commit; do
  say "$scenario, C=32, stockraft"
  bench --target stockraft --nodes "$all_sr" --scenario "$scenario" --clients 32 --label any-node
done

python3 - "$OUT" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def find(target, scenario, clients, label):
    for r in runs:
        if (r["target"], r["scenario"], r["clients"], r["label"]) == (target, scenario, clients, label):
            return r
def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"
print()
print(f"{'scenario':<8} {'C':>3} {'via':<9} | {'stockraft ops/s':>15} {'etcd ops/s':>10} {'ratio':>7} | "
      f"{'p50 ms s/e':>13} {'ratio':>6} | {'p99 ms s/e':>15} {'ratio':>6} | oversell s/e")
for scenario in ("hot", "spread"):
    for clients in (1, 32):
        s, e = find("stockraft", scenario, clients, "any-node"), find("etcd", scenario, clients, "any-node")
        if not s or not e:
            continue
        print(f"{scenario:<8} {clients:>3} {'any node':<9} | {s['opsPerSec']:>15.0f} {e['opsPerSec']:>10.0f} "
              f"{ratio(s['opsPerSec'], e['opsPerSec']):>7} | {s['p50Ms']:>6.2f}/{e['p50Ms']:<6.2f} "
              f"{ratio(s['p50Ms'], e['p50Ms']):>6} | {s['p99Ms']:>7.2f}/{e['p99Ms']:<7.2f} "
              f"{ratio(s['p99Ms'], e['p99Ms']):>6} | {s['oversell']}/{e['oversell']}")
    l, s = find("stockraft", scenario, 1, "leader"), find("stockraft", scenario, 1, "any-node")
    if l and s:
        print(f"{scenario:<8} {1:>3} {'leader':<9} | {l['opsPerSec']:>15.0f} {'':>10} {'':>7} | "
              f"{l['p50Ms']:>6.2f} (any node {ratio(s['p50Ms'], l['p50Ms'])} of it)")
plain = find("stockraft", "spread", 32, "any-node")
for scenario in ("hold", "commit"):
    r = find("stockraft", scenario, 32, "any-node")
    if r and plain:
        print(f"{scenario:<8} {32:>3} {'any node':<9} | {r['opsPerSec']:>15.0f} "
              f"(plain reserve {plain['opsPerSec']:.0f}/s: {ratio(r['opsPerSec'], plain['opsPerSec'])}) | "
              f"p50 {r['p50Ms']:.2f} ms, p99 {r['p99Ms']:.2f} ms ({ratio(r['p99Ms'], plain['p99Ms'])} of plain)")
bad = [r for r in runs if (r.get("oversell") or 0) > 0]
if bad:
    print("OVERSELL in", [(r["target"], r["scenario"], r["clients"]) for r in bad])
    sys.exit(1)
PY
if [ "$OUT" = "$WORK/results.jsonl" ]; then
  say "raw results (one JSON line per run): ${TMPDIR:-/tmp}/stockraft-bench-last.jsonl"
else
  say "raw results (one JSON line per run): $OUT"
fi
[ "$smoke" = 1 ] && say "smoke run: figures are not meaningful"
exit 0
