#!/usr/bin/env bash
# Backups under load, end to end, on this machine (README "Backup and restore").
#
#   scripts/backup.sh                 fresh three-node cluster (release build) holding --skus
#                                     records; `stockraft bench` (spread, C=32) without a backup,
#                                     then again while a follower serves backups back to back
#                                     (`stockraft admin backup --out`): both p99s and their ratio;
#                                     then the last backup verified, a damaged copy refused by
#                                     `stockraft restore`, and the backup restored into a new
#                                     cluster (new ports, new directories) that must serve every
#                                     record with its version and present a new cluster id.
#   scripts/backup.sh --seconds 20 --skus 100000
#   scripts/backup.sh --smoke         seconds-long runs, 50 SKUs, the debug build (CI)
#
# Every process it starts is stopped on exit; its files live in a temporary directory, deleted
# on success (kept, and named, on failure).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=20 skus=100000 smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --skus) skus="$2"; shift 2 ;;
    --smoke) seconds=2 skus=50 smoke=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "backup.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'backup.sh: %s\n' "$*" >&2; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockraft-backup.XXXXXX")"
PIDS=()
# shellcheck source=lib/throwaway-cluster.sh
. "$ROOT/scripts/lib/throwaway-cluster.sh"
finish() {
  local status=$?
  stop_started_processes
  if [ $status -eq 0 ]; then rm -rf "$WORK"; else say "failed; files kept in $WORK"; fi
}
trap finish EXIT

# A smoke runs the debug build, as every other smoke in CI does (no release build there).
if [ "$smoke" = 1 ]; then use_stockraft_binary debug; else use_stockraft_binary release; fi
start_stockraft
leader="$(wait_for_stockraft_leader)"
follower=$((leader % 3 + 1))
all="$(IFS=,; echo "${SR_ADDRS[*]}")"
follower_addr="${SR_ADDRS[$((follower - 1))]}"
say "leader is node $leader; backups from node $follower ($follower_addr)"

bench() {
  "$BIN" bench --nodes "$all" --scenario spread --clients 32 --skus "$skus" --seconds "$seconds" \
    --label "$1" | tee -a "$WORK/bench.log" | sed -n 's/^BENCH //p' >>"$WORK/bench.jsonl"
}
backup() { "$BIN" admin --node "$follower_addr" --secret "$SR_SECRET" backup "$@"; }

say "spread, C=32, no backup (the first run also creates $skus records)"
bench setup >/dev/null
bench without-backup
say "spread, C=32, a backup being taken from node $follower all along"
: >"$WORK/backups.log"
(
  while [ ! -e "$WORK/stop" ]; do
    start=$(date +%s.%N)
    backup --out "$WORK/cluster.srb" >/dev/null
    printf '%s\n' "$(python3 -c "import sys; print(round($(date +%s.%N) - $start, 3))")" >>"$WORK/backups.log"
  done
) &
backups_pid=$!
PIDS+=("$backups_pid")
bench with-backup
touch "$WORK/stop"
wait "$backups_pid"

python3 - "$WORK/bench.jsonl" "$WORK/backups.log" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    run = json.loads(line)
    runs[run["label"]] = run
took = [float(x) for x in open(sys.argv[2]) if x.strip()]
a, b = runs["without-backup"], runs["with-backup"]
print(f"{'run':<16} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
for name, run in (("without-backup", a), ("with-backup", b)):
    print(f"{name:<16} {run['opsPerSec']:>9.0f} {run['p50Ms']:>8.2f} {run['p99Ms']:>8.2f} {run['maxMs']:>8.2f}")
print(f"p99 with/without: {b['p99Ms'] / a['p99Ms']:.2f}x; {len(took)} backups taken, "
      f"{min(took):.2f}-{max(took):.2f} s each")
PY

say "one more backup, now that writes have stopped, checked"
backup --out "$WORK/cluster.srb"
backup --verify "$WORK/cluster.srb"
old_cluster="$(curl -fsS "http://${SR_ADDRS[0]}/raft/status" -H "x-stockraft-secret: $SR_SECRET" -D - -o /dev/null |
  tr -d '\r' | sed -n 's/^x-stockraft-cluster: //Ip')"

say "a damaged copy is refused (one byte flipped in the middle)"
cp "$WORK/cluster.srb" "$WORK/damaged.srb"
python3 - "$WORK/damaged.srb" <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(os.path.getsize(sys.argv[1]) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 0xFF]))
PY
NEW="$WORK/restored"
mkdir -p "$NEW"
{
  printf '[cluster]\nsecret = "%s"\n\n' "$SR_SECRET"
  for id in 1 2 3; do printf '[[nodes]]\nid = %s\naddr = "127.0.0.1:%s"\n\n' "$id" "$(free_port)"; done
  printf '[storage]\ndata_dir = "data"\n'
} >"$NEW/cluster.toml"
if "$BIN" restore --from "$WORK/damaged.srb" --config "$NEW/cluster.toml"; then
  say "a damaged backup was restored"; exit 1
fi

say "restored into a new cluster"
"$BIN" restore --from "$WORK/cluster.srb" --config "$NEW/cluster.toml"
new_addrs=()
for id in 1 2 3; do
  new_addrs+=("$(awk -v id="$id" '/^id = / { n = $3 } /^addr = / && n == id { gsub(/"/, "", $3); print $3 }' "$NEW/cluster.toml")")
  RUST_LOG=warn "$BIN" serve --id "$id" --config "$NEW/cluster.toml" >>"$NEW/node-$id.log" 2>&1 &
  PIDS+=($!)
done
deadline=$((SECONDS + 60))
until curl -fsS --max-time 1 "http://${new_addrs[0]}/api/health" 2>/dev/null | grep -q '"leaderId":[0-9]'; do
  [ $SECONDS -lt $deadline ] || { say "the restored cluster elected no leader"; exit 1; }
  sleep 0.2
done
new_cluster="$(curl -fsS "http://${new_addrs[0]}/raft/status" -H "x-stockraft-secret: $SR_SECRET" -D - -o /dev/null |
  tr -d '\r' | sed -n 's/^x-stockraft-cluster: //Ip')"
say "old cluster id $old_cluster, restored cluster id $new_cluster"
[ -n "$new_cluster" ] && [ "$new_cluster" != "$old_cluster" ] || { say "the cluster id did not change"; exit 1; }
# SKUs of the backup (every one in a smoke run, 2,000 spread over them otherwise), each read
# from the restored cluster and from the old one, quiet since the last backup began: every store
# holding it (one per bench run) with the same quantity and version.
python3 - "${SR_ADDRS[0]}" "${new_addrs[0]}" "$skus" <<'PY'
import json, sys, urllib.request
old, new, skus = sys.argv[1], sys.argv[2], int(sys.argv[3])
def view(addr, sku):
    data = json.load(urllib.request.urlopen(f"http://{addr}/api/inventory/skus/{sku}"))["data"]
    return sorted((r["storeId"], r["qty"], r["reserved"], r["version"]) for r in data["stores"])
step = max(1, skus // 2000)
checked = 0
for i in range(0, skus, step):
    a, b = view(old, f"sku-{i}"), view(new, f"sku-{i}")
    assert a and a == b, f"sku-{i}: old cluster {a}, restored {b}"
    checked += len(b)
print(f"the restored cluster serves the {checked} records checked with the old cluster's "
      f"quantities, holds and versions")
PY
