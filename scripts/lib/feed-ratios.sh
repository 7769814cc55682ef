# Sourced by bench.sh for `--feed ROUNDS`: writes with the event feed against writes before it
# (issue 32: >= 0.9x), and with subscribers reading the feed on the followers (>= 0.8x, every
# subscriber receives every event in order, and the delay from acknowledgement to delivery).
#
# Each round starts three fresh three-node clusters (throwaway-cluster.sh), one after the other,
# and runs the spread scenario on each (32 clients over $skus SKUs, $seconds, through every node):
#   base         the build before the feed, $STOCKRAFT_BASE_BIN (skipped when unset: no ratios)
#   feed         this build ($BIN)
#   subscribers  this build, with `stockraft bench --subscribers N` (N = 100; 4 in a smoke)
# The load generator is always this build's `stockraft bench` (the wire of a spread run is the
# same on both), so only the servers differ. Then each round's figures, the ratios to base in
# the same round, their median and range, and the delivery delays; fails if any subscriber
# missed an event or a run produced no result. Uses bench.sh's BIN, WORK, OUT, seconds, skus,
# stock, smoke and say.

FEED_SUBSCRIBERS=100
FEED_SUBSCRIBERS_SMOKE=4

feed_ratios() {
  local rounds="$1" base_bin="${STOCKRAFT_BASE_BIN:-}" feed_bin="$BIN" subscribers round failed=0
  [[ "$rounds" =~ ^[1-9][0-9]*$ ]] ||
    { echo "bench.sh: --feed takes a number of rounds, not $rounds" >&2; exit 2; }
  if [ -n "$base_bin" ] && [ ! -x "$base_bin" ]; then
    echo "bench.sh: STOCKRAFT_BASE_BIN=$base_bin is not an executable" >&2; exit 2
  fi
  subscribers=$FEED_SUBSCRIBERS
  [ "$smoke" = 1 ] && subscribers=$FEED_SUBSCRIBERS_SMOKE
  if [ -n "$base_bin" ]; then
    say "feed: base $base_bin, this build $feed_bin"
  else
    say "feed: STOCKRAFT_BASE_BIN is not set: this build only, no ratios to the build before the feed"
  fi
  : >"$OUT"
  for round in $(seq 1 "$rounds"); do
    if [ -n "$base_bin" ]; then
      feed_run "base-$round" "$base_bin" "$feed_bin" 0 || failed=1
    fi
    feed_run "feed-$round" "$feed_bin" "$feed_bin" 0 || failed=1
    feed_run "subscribers-$round" "$feed_bin" "$feed_bin" "$subscribers" || failed=1
  done
  python3 - "$OUT" "$rounds" "$([ -n "$base_bin" ] && echo 1 || echo 0)" <<'PY' || failed=1
import json, statistics, sys
runs = {r["label"]: r for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip())}
rounds, with_base = int(sys.argv[2]), sys.argv[3] == "1"
builds = (["base"] if with_base else []) + ["feed", "subscribers"]
missing = [f"{b}-{n}" for n in range(1, rounds + 1) for b in builds if f"{b}-{n}" not in runs]
ratios = {"feed": [], "subscribers": []}
delivery_p99 = []
print()
header = f"{'round':<6}"
for build in builds:
    header += f" | {build + ' ops/s':>17} {'p99 ms':>7}" + ("" if build == "base" else f" {'ratio':>6}")
print(header + f" | {'delivery p50/p99 ms':>19} | subscribers complete")
for n in range(1, rounds + 1):
    base = runs.get(f"base-{n}")
    line = f"{n:<6}"
    for build in builds:
        r = runs.get(f"{build}-{n}")
        if r is None:
            line += f" | {'-':>17} {'-':>7}" + ("" if build == "base" else f" {'-':>6}")
            continue
        line += f" | {r['opsPerSec']:>17.0f} {r['p99Ms']:>7.2f}"
        if build != "base":
            if base:
                ratio = r["opsPerSec"] / base["opsPerSec"]
                ratios[build].append(ratio)
                line += f" {ratio:>5.2f}x"
            else:
                line += f" {'-':>6}"
    s = runs.get(f"subscribers-{n}")
    if s and "subscribers" in s:
        delivery_p99.append(s["deliveryP99Ms"])
        line += (f" | {s['deliveryP50Ms']:>8.2f}/{s['deliveryP99Ms']:<10.2f} | "
                 f"{s['subscribersComplete']}/{s['subscribers']}, {s['eventsDelivered']} events, "
                 f"{s['subscriberReconnects']} reconnects")
    print(line)
def spread(values, unit):
    return (f"median {statistics.median(values):.2f}{unit} (range {min(values):.2f}-"
            f"{max(values):.2f}{unit}, {len(values)} rounds)")
for build, target in (("feed", 0.9), ("subscribers", 0.8)):
    if ratios[build]:
        print(f"{build}/base: {spread(ratios[build], 'x')}; target >= {target}x")
for build in ("feed", "subscribers"):
    values = [runs[f"{build}-{n}"]["opsPerSec"] for n in range(1, rounds + 1) if f"{build}-{n}" in runs]
    if values and not ratios[build]:
        print(f"{build}: {spread(values, ' ops/s')} (no base build: no ratio)")
if delivery_p99:
    print(f"delivery p99 (acknowledgement to arrival on a follower): {spread(delivery_p99, ' ms')}")
bad = False
if missing:
    print("NO RESULT for", missing)
    bad = True
for n in range(1, rounds + 1):
    s = runs.get(f"subscribers-{n}")
    if s and s.get("subscribersComplete") != s.get("subscribers"):
        print(f"SUBSCRIBERS MISSED EVENTS in round {n}:", s.get("subscriberFailures"))
        bad = True
    elif s and "subscribers" not in s:
        print(f"round {n}: the subscribers run reported no subscribers")
        bad = True
sys.exit(1 if bad else 0)
PY
  [ "$smoke" = 1 ] && say "smoke run: figures are not meaningful"
  return "$failed"
}

# feed_run LABEL SERVER_BINARY BENCH_BINARY SUBSCRIBERS: one spread run on a fresh cluster.
feed_run() {
  local label="$1" server="$2" bench_bin="$3" subscribers="$4" all_sr status=0 extra=()
  BIN="$server" start_stockraft
  wait_for_stockraft_leader >/dev/null
  all_sr="$(IFS=,; echo "${SR_ADDRS[*]}")"
  [ "$subscribers" -gt 0 ] && extra=(--subscribers "$subscribers")
  say "feed: $label, spread, C=32, ${seconds}s${extra[*]:+, ${extra[*]}}"
  times >"$WORK/times-before"
  "$bench_bin" bench --target stockraft --nodes "$all_sr" --scenario spread --clients 32 \
    --seconds "$seconds" --skus "$skus" --stock "$stock" --label "$label" "${extra[@]}" |
    tee -a "$WORK/bench.log" | sed -n 's/^BENCH //p' >>"$OUT" || status=$?
  # CPU seconds: the three nodes over their whole life (start, setup, run), and the load
  # generator (with its subscribers) over its run: where the cores went.
  times >"$WORK/times-after"
  say "feed: $label: CPU $(nodes_cpu_s) s in the nodes, $(awk -v a="$(children_cpu_s after)" \
    -v b="$(children_cpu_s before)" 'BEGIN { printf "%.1f", a - b }') s in the load generator"
  stop_stockraft
  [ "$status" = 0 ] || say "feed: $label: the bench exited with status $status"
  return "$status"
}

# Stops the cluster start_stockraft started (TERM, wait) and removes its data, so that the next
# start_stockraft begins afresh.
stop_stockraft() {
  local pid kept=()
  for pid in "${SR_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SR_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    [[ " ${SR_PIDS[*]} " == *" $pid "* ]] || kept+=("$pid")
  done
  PIDS=("${kept[@]}")
  SR_PIDS=()
  rm -rf "$WORK/stockraft"
}

# CPU seconds (user + system) of this shell's children that had ended when feed_run wrote
# $WORK/times-$1 (bash's `times`, run in this shell: a command substitution is another one).
children_cpu_s() {
  tail -1 "$WORK/times-$1" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, t, "m"); sub("s", "", t[2]);
    s += t[1] * 60 + t[2] } printf "%.2f", s }'
}

# CPU seconds (user + system) the running cluster's nodes have used (Linux /proc).
nodes_cpu_s() {
  local pid ticks=0 tick_hz
  tick_hz="$(getconf CLK_TCK)"
  for pid in "${SR_PIDS[@]}"; do
    ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  awk -v t="$ticks" -v hz="$tick_hz" 'BEGIN { printf "%.1f", t / hz }'
}
