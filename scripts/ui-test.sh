#!/usr/bin/env bash
# The operator console (`/ui/`) in a real browser: ESLint over its script, then headless
# Chromium driven by Python playwright (tests/ui/test_console.py) against two throwaway
# three-node clusters on loopback, one with client tokens and one without.
#
#   scripts/ui-test.sh            lint and browser tests (about 25 s once installed and built)
#   scripts/ui-test.sh --lint     the lint only
#
# Installs what a fresh machine lacks: Debian's `chromium` (apt-get) when $CHROMIUM
# (/usr/bin/chromium) is absent, Debian's `npm` when there is none, `playwright` from PyPI (it
# drives that Chromium; no `playwright install`), and eslint from npm into target/ui-tools (a
# cache; the flat config is src/api/console/eslint.config.mjs). Screenshots of every panel go
# to target/ui-screenshots/ (CI keeps the folder as an artifact). Uses the debug binary
# (STOCKRAFT_BIN to run another); stops exactly the processes it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lint_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --lint) lint_only=true; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "ui-test.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'ui-test: %s\n' "$*"; }
# shellcheck source=lib/install.sh
. "$ROOT/scripts/lib/install.sh"

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
TOOLS="${CARGO_TARGET_DIR:-$ROOT/target}/ui-tools"
ESLINT_VERSION=9.39.5
ESLINT="$TOOLS/node_modules/.bin/eslint"

if ! command -v npm >/dev/null; then
  say "installing Debian's npm"
  apt_install npm
fi
if [ ! -x "$ESLINT" ] || ! "$ESLINT" --version | grep -qx "v$ESLINT_VERSION"; then
  say "installing eslint $ESLINT_VERSION from npm into $TOOLS"
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund --silent "eslint@$ESLINT_VERSION"
fi
say "eslint src/api/console/"
(cd "$ROOT/src/api/console" && "$ESLINT" --config eslint.config.mjs --max-warnings 0 .)
$lint_only && exit 0

if [ ! -x "$CHROMIUM" ]; then
  say "installing Debian's chromium"
  apt_install chromium
fi
if ! python3 -c 'import playwright' 2>/dev/null; then
  say "installing playwright from PyPI"
  pip_install 'playwright>=1.45,<2'
fi

BASE="$(mktemp -d "${TMPDIR:-/tmp}/stockraft-ui.XXXXXX")"
PIDS=()
cleanup() {
  stop_started_processes
  rm -rf "$BASE"
}
trap cleanup EXIT

# shellcheck source=lib/throwaway-cluster.sh
. "$ROOT/scripts/lib/throwaway-cluster.sh"
use_stockraft_binary debug

# Starts a cluster under $BASE/$1 with extra config $2 and exports, for the browser test,
# UI_<NAME>_ADDRS (nodes 1..3, comma-separated), UI_<NAME>_PIDS and UI_<NAME>_CONFIG.
start_cluster() {
  local name="$1" upper
  upper="$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')"
  WORK="$BASE/$name"
  mkdir -p "$WORK"
  SR_EXTRA_CONFIG="$2" start_stockraft
  export "UI_${upper}_ADDRS=$(IFS=,; echo "${SR_ADDRS[*]}")"
  export "UI_${upper}_PIDS=${SR_PIDS[1]},${SR_PIDS[2]},${SR_PIDS[3]}"
  export "UI_${upper}_CONFIG=$WORK/cluster.toml"
  wait_for_stockraft_leader >/dev/null
}

# The tokens the browser test types in (throwaway values for a throwaway cluster).
TOKENS_CONFIG='
[[cluster.client_tokens]]
name = "reader"
token = "ui-reader-token-0001"
scopes = ["read"]

[[cluster.client_tokens]]
name = "operator"
token = "ui-operator-token-01"
scopes = ["read", "write", "reserve"]
'
start_cluster tokens "$TOKENS_CONFIG"
start_cluster open ""
say "clusters up: tokens $UI_TOKENS_ADDRS, open $UI_OPEN_ADDRS"

export STOCKRAFT_BIN="$BIN" CHROMIUM
export UI_SCREENSHOTS="${UI_SCREENSHOTS:-${CARGO_TARGET_DIR:-$ROOT/target}/ui-screenshots}"
rm -rf "$UI_SCREENSHOTS"
# The test kills nodes on purpose; bash would report each as "Killed" on this script's stderr
# (the group's), so that goes nowhere while the test's own stderr (fd 3) goes through.
{ python3 "$ROOT/tests/ui/test_console.py" 2>&3; } 3>&2 2>/dev/null
say "screenshots in $UI_SCREENSHOTS"
