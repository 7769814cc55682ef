#!/usr/bin/env bash
# Runs the deterministic simulation (madsim) for a range of seeds and prints
#   sim: N seeds, F failed, K ops checked, T s
#
#   scripts/sim.sh --seeds 100            seeds 1..100 (the CI batch)
#   scripts/sim.sh --seeds 5000 --seed 1000   a soak: 5000 seeds from 1000
#   scripts/sim.sh --seed 12345           exactly one seed, with its full event trace
#   scripts/sim.sh --seeds 200 --nodes 5  five-node clusters
#   scripts/sim.sh --seeds 5 --bug 8      with planted bug 8 (src/sim/bugs.rs): must fail
#
# A failing seed prints the command that reruns exactly it. The build uses --cfg madsim in its
# own target directory (target-madsim) so it does not evict the normal build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seeds="" seed="" nodes=3 trace=0 bug=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --trace) trace=1; shift ;;
    --bug) bug="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "sim.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$seeds" ] && [ -n "$seed" ]; then
  seeds=1 trace=1
fi
seeds="${seeds:-100}" seed="${seed:-1}"

export RUSTFLAGS="--cfg madsim"
export CARGO_TARGET_DIR="${MADSIM_TARGET_DIR:-$ROOT/target-madsim}"
export STOCKRAFT_SIM_SEED="$seed" STOCKRAFT_SIM_SEEDS="$seeds" STOCKRAFT_SIM_NODES="$nodes"
[ "$trace" = 1 ] && export STOCKRAFT_SIM_TRACE=1
[ "$bug" != 0 ] && export STOCKRAFT_SIM_BUG="$bug"
echo "sim.sh: $seeds seed(s) from $seed, $nodes nodes$([ "$bug" != 0 ] && echo ", planted bug $bug")"
cd "$ROOT"
cargo test --quiet --test simulation a_batch_of_seeds_with_faults_keeps_every_promise -- --nocapture
