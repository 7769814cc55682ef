# Sourced by bench.sh for `--holds LIVE,DUE`: reservations at scale on a fresh three-node
# stockraft cluster (throwaway-cluster.sh). Uses bench.sh's BIN, WORK, OUT, seconds, skus, smoke
# and say. Measures, in order:
#   1. fresh:   plain reserves, 32 clients over $skus SKUs: the reference p99;
#   2. live:    LIVE holds with a one-hour TTL (`stockraft bench --scenario hold --ops LIVE`),
#               then each node's RSS (now and peak) beside the live data, the size of a snapshot
#               of the whole state built on the leader right then;
#   3. steady:  plain reserves again with the LIVE holds in place;
#   4. due:     DUE more holds, each with the TTL that makes it fall due at one instant T
#               (`--hold-due-at-ms`), made before T;
#   5. storm:   plain reserves from 3 s before T while the DUE holds expire: p99 against fresh
#               and steady, and how long after T the leader's held count was back to what it
#               was before the DUE holds were made.

# Milliseconds since the epoch. (No interpreter is started while the storm is measured: the
# polling below would otherwise take CPU from the nodes it measures.)
now_ms() { date +%s%3N; }

# A field of the last BENCH line with label $1 in $OUT.
bench_field() {
  python3 - "$OUT" "$1" "$2" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print([r for r in runs if r["label"] == sys.argv[2]][-1][sys.argv[3]])
PY
}

# Reservations held in node $1's applied state (its /api/metrics).
held_on() {
  curl -fsS --max-time 2 "http://$1/api/metrics" | sed -n 's/.*"reservations":{"held":\([0-9]*\).*/\1/p'
}

holds_at_scale() {
  local live="${1%,*}" due="${1#*,}" leader leader_addr all_sr storm_s pause
  [[ "$live" =~ ^[0-9]+$ && "$due" =~ ^[0-9]+$ && "$1" == *,* ]] ||
    { echo "bench.sh: --holds takes LIVE,DUE (two counts), not $1" >&2; exit 2; }
  storm_s=15
  [ "$smoke" = 1 ] && storm_s=4
  start_stockraft
  leader="$(wait_for_stockraft_leader)"
  leader_addr="${SR_ADDRS[$((leader - 1))]}"
  all_sr="$(IFS=,; echo "${SR_ADDRS[*]}")"
  : >"$OUT"
  run() {
    "$BIN" bench --target stockraft --nodes "$all_sr" --clients 32 --skus "$skus" "$@" |
      tee -a "$WORK/bench.log" | sed -n 's/^BENCH //p' >>"$OUT"
  }

  say "holds: fresh cluster (leader node $leader): plain reserves, ${seconds}s, the reference"
  run --scenario spread --seconds "$seconds" --label fresh
  say "holds: $live live holds, TTL one hour"
  run --scenario hold --ops "$live" --seconds 36000 --label live
  [ "$(bench_field live ok)" -ge "$live" ] || { say "only $(bench_field live ok) holds were made"; exit 1; }

  # Each node's RSS now, then (after the snapshot below) the live data: a snapshot of the whole
  # state, built on the leader. RSS is read again after the steady run, with the live holds
  # still in place.
  : >"$WORK/rss"
  rss_now() {
    local id
    for id in 1 2 3; do
      awk -v id="$id" -v at="$1" '/^VmRSS/ { rss = $2 } /^VmHWM/ { hwm = $2 }
        END { printf "%s %s %d %d\n", at, id, rss / 1024, hwm / 1024 }' \
        "/proc/${SR_PIDS[$id]}/status" >>"$WORK/rss"
    done
  }
  rss_now loaded
  curl -fsS -o /dev/null -X POST -H "x-stockraft-secret: $SR_SECRET" \
    "http://$leader_addr/api/cluster/snapshot"
  local snapshot_bytes
  snapshot_bytes="$(curl -fsS "http://$leader_addr/metrics" |
    sed -n 's/^stockraft_snapshot_last_size_bytes{phase="build"} \([0-9]*\).*/\1/p')"
  # Clients finish the holds in flight when --ops is reached: count what is held.
  local live_held
  live_held="$(held_on "$leader_addr")"
  say "holds: held on the leader: $live_held; snapshot $snapshot_bytes bytes"

  say "holds: plain reserves with the live holds in place, ${seconds}s"
  run --scenario spread --seconds "$seconds" --label steady
  rss_now steady

  # The due holds all fall due at T: far enough ahead to make them at the rate the live ones
  # were made, with room to spare.
  local rate due_at_ms
  rate="$(bench_field live opsPerSec)"
  due_at_ms=$(( $(now_ms) + $(python3 -c "print(int(($due / max($rate, 1.0)) * 1.5 * 1000) + 10000)") ))
  say "holds: $due holds due at $due_at_ms (in $(( (due_at_ms - $(now_ms)) / 1000 )) s)"
  run --scenario hold --ops "$due" --seconds 36000 --hold-due-at-ms "$due_at_ms" --label due
  [ "$(bench_field due ok)" -ge "$due" ] || { say "only $(bench_field due ok) due holds were made"; exit 1; }
  pause=$(( due_at_ms - 3000 - $(now_ms) ))
  [ "$pause" -gt 0 ] || { say "the due holds took longer than planned to make; rerun"; exit 1; }
  sleep "$(python3 -c "print($pause / 1000)")"

  say "holds: plain reserves while the $due holds expire, ${storm_s}s from 3 s before they fall due"
  run --scenario spread --seconds "$storm_s" --label storm &
  local storm_pid=$! drained_ms="" held
  while kill -0 "$storm_pid" 2>/dev/null || [ -z "$drained_ms" ]; do
    held="$(held_on "$leader_addr" 2>/dev/null || echo)"
    if [ -z "$drained_ms" ] && [ -n "$held" ] && [ "$(now_ms)" -ge "$due_at_ms" ] &&
      [ "$held" -le "$live_held" ]; then
      drained_ms=$(( $(now_ms) - due_at_ms ))
    fi
    # Give up waiting for the drain a minute after T (reported as not drained).
    [ "$(now_ms)" -gt $(( due_at_ms + 60000 )) ] && break
    sleep 0.5
  done
  wait "$storm_pid"

  python3 - "$OUT" "$WORK/rss" "$snapshot_bytes" "$live" "$due" "${drained_ms:-}" <<'PY'
import json, sys
runs = {json.loads(l)["label"]: json.loads(l) for l in open(sys.argv[1]) if l.strip()}
rss = [line.split() for line in open(sys.argv[2]) if line.strip()]

snapshot_mib = int(sys.argv[3] or 0) / 2**20
live, due, drained = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
fresh, steady, storm = runs["fresh"], runs["steady"], runs["storm"]
print()
print(f"{live} live holds made at {runs['live']['opsPerSec']:.0f}/s; {due} due holds at "
      f"{runs['due']['opsPerSec']:.0f}/s")
print(f"live data (a snapshot of the whole state): {snapshot_mib:.0f} MiB")
for at, node, now, peak in rss:
    when = "after loading" if at == "loaded" else "after plain reserves on top"
    print(f"node {node} {when}: RSS {now} MiB (peak so far {peak} MiB): "
          f"{int(now) - snapshot_mib:+.0f} MiB beside the live data")
print(f"{'plain reserves':<28} | {'ops/s':>7} | {'p50 ms':>6} {'p99 ms':>7} {'max ms':>7}")
for name, r in (("fresh", fresh), ("with live holds", steady), ("while due holds expire", storm)):
    print(f"{name:<28} | {r['opsPerSec']:>7.0f} | {r['p50Ms']:>6.2f} {r['p99Ms']:>7.2f} {r['maxMs']:>7.1f}")
print(f"p99 while expiring: {storm['p99Ms'] / fresh['p99Ms']:.2f}x fresh, "
      f"{storm['p99Ms'] / steady['p99Ms']:.2f}x with live holds")
print(f"the {due} due holds had all expired {int(drained) / 1000:.1f} s after they fell due"
      if drained else f"the {due} due holds had not all expired a minute after they fell due")
PY
  [ "$smoke" = 1 ] && say "smoke run: figures are not meaningful"
  return 0
}
