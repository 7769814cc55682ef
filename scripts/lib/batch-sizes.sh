# Sourced by bench.sh for `--batch SIZES`: reserves sent as batches against single reserves, in
# one run (issue 33: >= 100,000 reserve lines/s committed with batches of 1,000-8,000 lines from 8
# clients over 100,000 SKUs, and >= 10x the single requests of the same run).
#
# One fresh three-node cluster (throwaway-cluster.sh); every run drives every node, $seconds
# long, over its own $BATCH_SKUS SKUs (--skus to change; 50 in a smoke), created before it is
# timed:
#   single-c8       single reserves, 8 clients (as many as send batches)
#   batch-SIZE      for each SIZE: reserve batches of SIZE lines, 8 clients, `--batch-policy`
#                   (bench.sh --batch-policy; default reject-everything)
#   single-c32      single reserves, 32 clients (the standard figure of bench.sh)
# Then the table: batches/s, lines committed per second and their ratio to both single runs,
# p50/p99 per batch (per request for the single runs). Fails if a run produced no result, or a
# batch run applied nothing or had a line fail (the spread stock never runs out). Uses
# bench.sh's BIN, WORK, OUT, seconds, skus, skus_given, stock, smoke, batch_policy and say.

BATCH_CLIENTS=8
BATCH_SKUS=100000

batch_sizes() {
  local sizes="$1" all_sr size batch_skus="$BATCH_SKUS"
  [[ "$sizes" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
    { echo "bench.sh: --batch takes batch sizes such as 100,1000,8000, not $sizes" >&2; exit 2; }
  { [ "$smoke" = 1 ] || [ "$skus_given" = 1 ]; } && batch_skus="$skus"
  start_stockraft
  say "batch: leader is node $(wait_for_stockraft_leader); binary $BIN; $batch_skus SKUs per run, ${seconds}s per run"
  all_sr="$(IFS=,; echo "${SR_ADDRS[*]}")"
  : >"$OUT"
  batch_run single-c8 "$all_sr" "$batch_skus" --clients "$BATCH_CLIENTS"
  for size in ${sizes//,/ }; do
    batch_run "batch-$size" "$all_sr" "$batch_skus" --clients "$BATCH_CLIENTS" \
      --batch "$size" --batch-policy "$batch_policy"
  done
  batch_run single-c32 "$all_sr" "$batch_skus" --clients 32
  python3 - "$OUT" "$sizes" <<'PY'
import json, sys
runs = {r["label"]: r for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip())}
sizes = [int(size) for size in sys.argv[2].split(",")]
labels = ["single-c8"] + [f"batch-{size}" for size in sizes] + ["single-c32"]
single8, single32 = runs.get("single-c8"), runs.get("single-c32")
def lines_per_sec(r):
    return r["linesPerSec"] if "batchSize" in r else r["opsPerSec"]
def ratio(r, base):
    return f"{lines_per_sec(r) / base['opsPerSec']:.1f}x" if base and base["opsPerSec"] else "-"
print()
print(f"{'run':<12} {'C':>3} {'policy':<19} | {'requests/s':>10} {'lines/s':>9} {'vs single C=8':>13} "
      f"{'vs C=32':>8} | {'p50 ms':>8} {'p99 ms':>8} | lines applied/failed")
bad = []
for label in labels:
    r = runs.get(label)
    if r is None:
        print(f"{label:<12} NO RESULT")
        bad.append(f"{label}: no result")
        continue
    policy = r.get("batchPolicy", "single requests")
    counts = (f"{r['linesApplied']}/{r['linesFailed']}" if "batchSize" in r
              else f"{r['ok']}/{sum(v for k, v in r['outcomes'].items() if k != 'ok')}")
    print(f"{label:<12} {r['clients']:>3} {policy:<19} | {r['opsPerSec']:>10.0f} {lines_per_sec(r):>9.0f} "
          f"{ratio(r, single8):>13} {ratio(r, single32):>8} | {r['p50Ms']:>8.2f} {r['p99Ms']:>8.2f} | {counts}")
    if "batchSize" in r and (r["linesApplied"] == 0 or r["linesFailed"] > 0):
        bad.append(f"{label}: {r['linesApplied']} lines applied, {r['linesFailed']} failed, "
                   f"outcomes {r['outcomes']}")
print("(a batch run's requests/s and p50/p99 are per batch; lines/s are lines committed per second)")
for problem in bad:
    print("FAILED:", problem)
sys.exit(1 if bad else 0)
PY
  [ "$smoke" = 1 ] && say "smoke run: figures are not meaningful"
  return 0
}

# batch_run LABEL NODES SKUS [stockraft bench arguments...]: one spread run, its JSON line to $OUT.
batch_run() {
  local label="$1" nodes="$2" run_skus="$3"
  shift 3
  say "batch: $label ($*), ${seconds}s"
  "$BIN" bench --target stockraft --nodes "$nodes" --scenario spread --seconds "$seconds" \
    --skus "$run_skus" --stock "$stock" --label "$label" "$@" |
    tee -a "$WORK/bench.log" | sed -n 's/^BENCH //p' >>"$OUT" ||
    say "batch: $label: the bench exited with status $?"
}
