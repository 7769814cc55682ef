# Sourced by bench.sh for `--hold-ratios ROUNDS`: holds and commits against plain reserves
# (issue 31: each at >= 0.9x), ROUNDS rounds on one fresh three-node stockraft cluster
# (throwaway-cluster.sh). Each round runs the spread, hold and commit scenarios, 32 clients over
# $skus SKUs, $seconds each, through every node, as the standard runs do; then each round's
# figures and the median and range of the ratios. Uses bench.sh's BIN, WORK, OUT, seconds,
# skus, stock, smoke and say.

hold_ratios() {
  local rounds="$1" all_sr round scenario
  [[ "$rounds" =~ ^[1-9][0-9]*$ ]] ||
    { echo "bench.sh: --hold-ratios takes a number of rounds, not $rounds" >&2; exit 2; }
  start_stockraft
  say "hold ratios: leader is node $(wait_for_stockraft_leader); binary $BIN"
  all_sr="$(IFS=,; echo "${SR_ADDRS[*]}")"
  : >"$OUT"
  for round in $(seq 1 "$rounds"); do
    for scenario in spread hold commit; do
      say "hold ratios: round $round, $scenario, C=32, ${seconds}s"
      "$BIN" bench --target stockraft --nodes "$all_sr" --scenario "$scenario" --clients 32 \
        --seconds "$seconds" --skus "$skus" --stock "$stock" --label "round-$round" |
        tee -a "$WORK/bench.log" | sed -n 's/^BENCH //p' >>"$OUT"
    done
  done
  python3 - "$OUT" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rounds = sorted({r["label"] for r in runs}, key=lambda label: int(label.split("-")[1]))
ratios = {"hold": [], "commit": []}
print()
print(f"{'round':<8} | {'plain/s':>8} {'p99 ms':>7} | {'hold/s':>8} {'p99 ms':>7} {'ratio':>6} | "
      f"{'commit/s':>8} {'p99 ms':>7} {'ratio':>6}")
for label in rounds:
    by = {r["scenario"]: r for r in runs if r["label"] == label}
    plain = by["spread"]
    cells = [f"{label:<8}", f"{plain['opsPerSec']:>8.0f} {plain['p99Ms']:>7.2f}"]
    for scenario in ("hold", "commit"):
        r = by[scenario]
        ratio = r["opsPerSec"] / plain["opsPerSec"]
        ratios[scenario].append(ratio)
        cells.append(f"{r['opsPerSec']:>8.0f} {r['p99Ms']:>7.2f} {ratio:>5.2f}x")
    print(" | ".join(cells))
for scenario, values in ratios.items():
    print(f"{scenario}: median {statistics.median(values):.2f}x of plain reserves "
          f"(range {min(values):.2f}-{max(values):.2f}x, {len(values)} rounds)")
bad = [r for r in runs if (r.get("oversell") or 0) > 0]
if bad:
    print("OVERSELL in", [(r["scenario"], r["label"]) for r in bad])
    sys.exit(1)
PY
  [ "$smoke" = 1 ] && say "smoke run: figures are not meaningful"
  return 0
}
