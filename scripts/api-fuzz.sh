#!/usr/bin/env bash
# Property-based API testing: schemathesis (PyPI) reads the cluster's own OpenAPI document
# (`GET /api/openapi.json`) and sends generated requests, valid and invalid, to a fresh
# three-node cluster on loopback. Fails on any 5xx, any status code the document does not list
# for the operation, and any answer whose body or content type does not match it.
#
#   scripts/api-fuzz.sh                  about a minute (CI runs this)
#   scripts/api-fuzz.sh --examples 500   longer
#
# Installs schemathesis with pip if missing. Admin routes get no secret here, so they answer
# 401 (documented) and the fuzzer cannot change the membership it is testing. Uses the debug
# binary (STOCKRAFT_BIN to run another); stops exactly the processes it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
examples=40
while [ $# -gt 0 ]; do
  case "$1" in
    --examples) examples="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "api-fuzz.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'api-fuzz: %s\n' "$*"; }

# shellcheck source=lib/install.sh
. "$ROOT/scripts/lib/install.sh"
if ! command -v schemathesis >/dev/null; then
  say "installing schemathesis from PyPI"
  pip_install 'schemathesis>=4,<5'
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockraft-fuzz.XXXXXX")"
PIDS=()
cleanup() {
  stop_started_processes
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=lib/throwaway-cluster.sh
. "$ROOT/scripts/lib/throwaway-cluster.sh"
use_stockraft_binary debug
start_stockraft
leader="$(wait_for_stockraft_leader)"
# Through a follower: every write is forwarded, the longer path.
node=$(( leader % 3 + 1 ))
url="http://${SR_ADDRS[$((node - 1))]}"
say "leader is node $leader; fuzzing node $node at $url"

# From the work directory: schemathesis keeps a cache where it runs.
cd "$WORK"
schemathesis run "$url/api/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" \
  --phases fuzzing \
  --workers 4 \
  --request-timeout 15 \
  --seed 1 \
  --generation-deterministic
