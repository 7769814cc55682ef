#!/usr/bin/env bash
# Runs every check and test stockraft has: formatting, lints, unit and storage tests,
# real-process cluster tests on loopback, the operator console in headless Chromium, and the
# deterministic simulation (--cfg madsim, in its own target directory so the two builds do not
# evict each other).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MADSIM_TARGET_DIR="${MADSIM_TARGET_DIR:-$ROOT/target-madsim}"

step() { printf "\n== [%ss] %s\n" "$SECONDS" "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "unit, storage and real-process cluster tests"
cargo test --lib --bins --tests

step "the operator console in headless Chromium (ESLint, then playwright)"
"$ROOT/scripts/ui-test.sh"

step "cargo clippy -D warnings (--cfg madsim)"
RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR="$MADSIM_TARGET_DIR" \
  cargo clippy --all-targets --quiet -- -D warnings

step "deterministic simulation (--cfg madsim): determinism, planted bugs"
RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR="$MADSIM_TARGET_DIR" \
  cargo test --test simulation -- --skip a_batch_of_seeds_with_faults_keeps_every_promise

step "deterministic simulation (--cfg madsim): CI batch of seeds with faults"
MADSIM_TARGET_DIR="$MADSIM_TARGET_DIR" "$ROOT/scripts/sim.sh" --seeds "${STOCKRAFT_CI_SEEDS:-100}"

step "all tests passed"
