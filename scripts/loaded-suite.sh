#!/usr/bin/env bash
# The whole test suite (JS unit tests, Swift tests, e2e, browser, Autobahn), RUNS times in a row
# (default 3), with a fan-out benchmark running beside them the whole time
# (a node of its own, `switchboard-bench fanout` again and again, each run
# bounded by --timeout). Records one line per suite per run in
# $OUT/summary.txt and each pytest log there; exits non-zero if any run of
# any suite failed. Needs the binaries built and the venv of scripts/test.sh.
#
#   scripts/loaded-suite.sh [RUNS]
#
# SUITES="e2e browser" picks suites (default: js swift e2e browser autobahn); BENCH=0 runs
# no benchmark (for a second instance beside one that does); FIRST_RUN=N
# numbers the runs from N (to continue a series).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
VENV=${VENV:-.venv-e2e}
BIN=${SWITCHBOARD_BIN:-.build/debug/switchboard}
BENCH=${BENCH_BIN:-.build/debug/switchboard-bench}
OUT=${OUT:-.build/loaded-suite}
export SWITCHBOARD_BIN=$BIN PYTHONDONTWRITEBYTECODE=1
mkdir -p "$OUT"
: >> "$OUT/summary.txt"

SUITES=${SUITES:-js swift e2e browser autobahn}
NODE_PID=
BENCH_LOOP_PID=
cleanup() {
    [ -n "$BENCH_LOOP_PID" ] && kill "$BENCH_LOOP_PID" 2>/dev/null || true
    [ -n "$BENCH_LOOP_PID" ] && wait "$BENCH_LOOP_PID" 2>/dev/null || true
    [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null || true
    [ -n "$NODE_PID" ] && wait "$NODE_PID" 2>/dev/null || true
}
trap cleanup EXIT
if [ "${BENCH:-1}" != 0 ]; then
# The node the benchmark loads, on a port of its own.
# Limits lifted: the benchmark is one address and its publisher one connection sending 2,000
# commands/s, far over the defaults (1,000 connections per address, 100 commands/s).
"$BIN" serve --host 127.0.0.1 --port 0 --api-key bench --max-connections-per-ip 1000000 \
    --commands-per-second 1000000 --command-burst 1000000 > "$OUT/bench-node.log" 2>&1 &
NODE_PID=$!
URL=
for _ in $(seq 100); do  # bounded: 10 s for the node to print its address
    URL=$(grep -o 'ws://127.0.0.1:[0-9]*/ws' "$OUT/bench-node.log" | head -1 || true)
    [ -n "$URL" ] && break
    sleep 0.1
done
[ -n "$URL" ] || { echo "the benchmark's node did not start" >&2; exit 1; }

# The benchmark, over and over (each one bounded), until the runs are over (at most 500 rounds).
(
    for i in $(seq 500); do
        "$BENCH" fanout --url "$URL" --subscribers 500 --channels 1 --messages 20000 --rate 2000 \
            --timeout 60 --quiet > "$OUT/bench-$i.txt" 2>&1 || true
    done
) &
BENCH_LOOP_PID=$!
fi

FAILED=0
FIRST_RUN=${FIRST_RUN:-1}
for run in $(seq "$FIRST_RUN" "$((FIRST_RUN + RUNS - 1))"); do
    for suite in $SUITES; do
        t0=$SECONDS
        load=$(cut -d' ' -f1 /proc/loadavg)
        set +e
        case $suite in
            js) node --test clients/js/test/*.test.mjs > "$OUT/run$run-$suite.log" 2>&1 ;;
            swift) env SWIFTNIO_STRICT=1 swift test > "$OUT/run$run-$suite.log" 2>&1 ;;
            autobahn) scripts/autobahn.sh > "$OUT/run$run-$suite.log" 2>&1 ;;
            e2e) "$VENV/bin/python" -m pytest -q -p no:cacheprovider IntegrationTests/e2e > "$OUT/run$run-$suite.log" 2>&1 ;;
            browser) "$VENV/bin/python" -m pytest -q -p no:cacheprovider IntegrationTests/browser > "$OUT/run$run-$suite.log" 2>&1 ;;
        esac
        rc=$?
        set -e
        [ $rc -eq 0 ] || FAILED=1
        result=$(grep -E '^# (pass|fail) |passed|failed|Test run with|autobahn: ' "$OUT/run$run-$suite.log" | tail -2 | tr '\n' ' ')
        line="run $run $suite: exit $rc, $((SECONDS - t0)) s, load $load -> $(cut -d' ' -f1 /proc/loadavg): $result"
        echo "$line" | tee -a "$OUT/summary.txt"
    done
done
exit $FAILED
