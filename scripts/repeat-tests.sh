#!/usr/bin/env bash
# Runs the real-process test files round after round, to show that a flaky test is gone (or
# to catch it failing, with its nodes' logs).
#
#   scripts/repeat-tests.sh                         20 rounds of every real-process test file
#   scripts/repeat-tests.sh --rounds 20 --files cluster
#   scripts/repeat-tests.sh --rounds 5 --files "membership identity security"
#   scripts/repeat-tests.sh --busy 2                two busy loops run alongside (a loaded machine)
#   scripts/repeat-tests.sh --minutes 60            start no round after 60 minutes (default 240)
#
# Builds the test executables and the stockraft binary once and copies them into a work
# directory, so that a rebuild meanwhile (another checkout sharing the target directory) does
# not change what runs. Then, each round, runs every file's tests as `cargo test --test FILE`
# would (each run at most --file-minutes, default 20), the nodes started from the copied
# binary (STOCKRAFT_TEST_BINARY). A failed run's output is kept in the work directory: it ends
# with each node's Raft position and log tail (tests/support), and the whole node logs are kept
# beside it (STOCKRAFT_TEST_KEEP_LOGS). Prints a line per run and pass/fail counts per file;
# exits 1 if any run failed. Stops exactly the busy loops it started; deletes the work directory
# at the end unless a run failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Every tests/*.rs that starts `stockraft serve` processes (through tests/support).
FILES_DEFAULT="cluster membership identity security disk_space overload api_contract \
api_operations seed_contract openapi decode_fuzz"
rounds=20 files="$FILES_DEFAULT" minutes=240 file_minutes=20 busy=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --minutes) minutes="$2"; shift 2 ;;
    --file-minutes) file_minutes="$2"; shift 2 ;;
    --busy) busy="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "repeat-tests.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'repeat-tests: %s\n' "$*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockraft-repeat.XXXXXX")"
BUSY_PIDS=()
cleanup() {
  local pid
  for pid in "${BUSY_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${BUSY_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK/bin"
}
trap cleanup EXIT

cd "$ROOT"
test_args=()
for file in $files; do test_args+=(--test "$file"); done
say "building ${files// /, } and the stockraft binary"
cargo test --no-run --message-format=json "${test_args[@]}" >"$WORK/build.json"
mkdir -p "$WORK/bin" "$WORK/logs"
# The artifacts: "NAME KIND EXECUTABLE" for the test executables and the stockraft binary.
python3 - "$WORK/build.json" >"$WORK/artifacts" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    message = json.loads(line)
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    target = message["target"]
    print(target["name"], target["kind"][0], message["executable"])
EOF
while read -r name kind executable; do
  case "$kind" in
    bin) [ "$name" = stockraft ] && cp "$executable" "$WORK/bin/stockraft" ;;
    test) cp "$executable" "$WORK/bin/test-$name" ;;
  esac
done <"$WORK/artifacts"
[ -x "$WORK/bin/stockraft" ] || { say "the build named no stockraft binary" >&2; exit 1; }
export STOCKRAFT_TEST_BINARY="$WORK/bin/stockraft"
export STOCKRAFT_TEST_KEEP_LOGS="$WORK/logs"

for _ in $(seq "$busy"); do
  timeout "$((minutes * 60 + file_minutes * 60))" sh -c 'while :; do :; done' &
  BUSY_PIDS+=("$!")
done
[ "$busy" -gt 0 ] && say "started $busy busy loops (PIDs ${BUSY_PIDS[*]})"

declare -A passed failed
for file in $files; do passed[$file]=0 failed[$file]=0; done
deadline=$((SECONDS + minutes * 60))
round=0
while [ "$round" -lt "$rounds" ] && [ "$SECONDS" -lt "$deadline" ]; do
  round=$((round + 1))
  for file in $files; do
    started=$SECONDS
    output="$WORK/round-$round-$file.out"
    if (cd "$ROOT" && timeout "$((file_minutes * 60))" "$WORK/bin/test-$file") >"$output" 2>&1; then
      passed[$file]=$((passed[$file] + 1))
      say "round $round/$rounds: $file passed ($((SECONDS - started)) s, $(uptime | sed 's/.*load average: //') load)"
      rm "$output"
    else
      failed[$file]=$((failed[$file] + 1))
      say "round $round/$rounds: $file FAILED ($((SECONDS - started)) s): $output"
      # Which tests, and the line after each "panicked at" (the assertion's message).
      grep -E '^test .* FAILED$' "$output" | sed 's/^/    /' || true
      grep -A1 "^thread '.*' .*panicked at " "$output" | grep -v "panicked at \|^--$" |
        head -5 | sed 's/^/    /' || true
    fi
  done
done
[ "$round" -lt "$rounds" ] && say "stopped after $round rounds: the $minutes minutes are up"

any_failed=0
say "results after $round rounds:"
for file in $files; do
  printf '  %-16s passed %3d  failed %3d\n' "$file" "${passed[$file]}" "${failed[$file]}"
  [ "${failed[$file]}" -eq 0 ] || any_failed=1
done
if [ "$any_failed" -eq 1 ]; then
  say "the failed runs' output and their nodes' whole logs are in $WORK"
  exit 1
fi
rm -rf "$WORK"
