#!/usr/bin/env bash
# Autobahn TestSuite (wstest fuzzingclient), cases 1.* - 11.*, against the
# node's echo endpoint. Installs the suite into .build-autobahn/ once (Python
# 2.7 recipe from shared/AUTOBAHN.md), starts `switchboard serve --port 0
# --echo-endpoint`, runs the cases, writes reports/autobahn/ and fails when any
# case's behavior is FAILED.
#
#   SWITCHBOARD_BIN   server binary (default .build/debug/switchboard)
#   PYTHON27          Python 2.7 interpreter (default: pyenv 2.7.18, then python2.7)
#   AUTOBAHN_CASES    case patterns, space separated (default "1.* ... 11.*")
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

BIN=${SWITCHBOARD_BIN:-.build/debug/switchboard}
AB_DIR=.build-autobahn
WSTEST=$AB_DIR/venv27/bin/wstest
OUTDIR=reports/autobahn
DEFAULT_CASES="1.* 2.* 3.* 4.* 5.* 6.* 7.* 8.* 9.* 10.* 11.*"
CASES=${AUTOBAHN_CASES:-$DEFAULT_CASES}
MIN_CASES=1
if [ "$CASES" = "$DEFAULT_CASES" ]; then MIN_CASES=300; fi  # cases 1-11 are 301

find_python27() {
    local c
    for c in "${PYTHON27:-}" /root/.pyenv/versions/2.7.18/bin/python2.7 "$(command -v python2.7 || true)"; do
        [ -n "$c" ] && [ -x "$c" ] || continue
        if "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

install_autobahn() {
    local p27
    if ! p27=$(find_python27); then
        echo "autobahn: no Python 2.7 found (set PYTHON27); the Autobahn TestSuite is Python 2 code" >&2
        return 1
    fi
    ensure_c_compiler
    echo "autobahn: installing autobahntestsuite 0.8.2 into $AB_DIR with $p27 (about a minute)"
    rm -rf "$AB_DIR/venv27" "$AB_DIR/py27tools"
    mkdir -p "$AB_DIR"
    "$p27" -m pip install -q --disable-pip-version-check --target "$AB_DIR/py27tools" virtualenv==20.15.1
    PYTHONPATH="$AB_DIR/py27tools" "$p27" -m virtualenv -q "$AB_DIR/venv27"
    "$AB_DIR/venv27/bin/pip" install -q --disable-pip-version-check autobahntestsuite==0.8.2
    if [ ! -x "$WSTEST" ]; then
        echo "autobahn: install finished but $WSTEST is missing" >&2
        return 1
    fi
}

if [ -x "$WSTEST" ]; then
    echo "autobahn: using cached $WSTEST"
else
    install_autobahn
fi

if [ "${AUTOBAHN_INSTALL_ONLY:-0}" = 1 ]; then
    echo "autobahn: install only, done"
    exit 0
fi

if [ ! -x "$BIN" ]; then
    echo "autobahn: server binary $BIN not found (build with swift build)" >&2
    exit 1
fi

TMP=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "autobahn: server did not stop on SIGTERM, killing it" >&2
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN" serve --port 0 --echo-endpoint --log-level error >"$TMP/stdout" 2>"$TMP/stderr" &
SERVER_PID=$!

PORT=""
for _ in $(seq 1 300); do  # up to 30 s
    line=$(grep -m1 -oE 'ws://[^ /]+:[0-9]+/ws' "$TMP/stdout" || true)
    if [ -n "$line" ]; then
        PORT=$(echo "$line" | sed -E 's#^ws://[^ /]+:([0-9]+)/ws$#\1#')
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "autobahn: server exited before listening" >&2
        cat "$TMP/stdout" "$TMP/stderr" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$PORT" ]; then
    echo "autobahn: no 'ws://HOST:PORT/ws' line on the server's stdout within 30 s" >&2
    cat "$TMP/stdout" "$TMP/stderr" >&2
    exit 1
fi
echo "autobahn: server pid $SERVER_PID on port $PORT; cases: $CASES"

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
python3 - "$TMP/spec.json" "$PORT" "$OUTDIR" $CASES <<'PY'
import json, sys
path, port, outdir, cases = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
spec = {
    "outdir": "./" + outdir,
    "servers": [{"agent": "switchboard", "url": f"ws://127.0.0.1:{port}/echo"}],
    "cases": cases,
    "exclude-cases": ["12.*", "13.*"],
    "exclude-agent-cases": {},
}
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
PY
cp "$TMP/spec.json" "$OUTDIR/spec.json"

start=$SECONDS
set +e
timeout 900 "$WSTEST" -m fuzzingclient -s "$TMP/spec.json" >"$OUTDIR/wstest.log" 2>&1
rc=$?
set -e
echo "autobahn: wstest finished in $((SECONDS - start)) s with status $rc (log: $OUTDIR/wstest.log)"
if [ "$rc" -ne 0 ]; then
    tail -n 30 "$OUTDIR/wstest.log" >&2
    exit 1
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "autobahn: the server died during the run" >&2
    cat "$TMP/stderr" >&2
    exit 1
fi

python3 - "$OUTDIR/index.json" "$MIN_CASES" <<'PY'
import collections, json, sys

def case_key(cid):
    return [int(p) if p.isdigit() else p for p in cid.split(".")]

try:
    with open(sys.argv[1]) as f:
        index = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"autobahn: cannot read {sys.argv[1]}: {e}")
agent = index.get("switchboard")
if not agent:
    sys.exit(f"autobahn: no results for agent 'switchboard' in index.json (agents: {list(index)})")
counts = collections.Counter(r.get("behavior") for r in agent.values())
close_counts = collections.Counter(r.get("behaviorClose") for r in agent.values())
failed = sorted((c for c, r in agent.items() if r.get("behavior") == "FAILED"), key=case_key)
close_failed = sorted((c for c, r in agent.items() if r.get("behaviorClose") == "FAILED"), key=case_key)
print(f"autobahn: {len(agent)} cases; behavior: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=str)))
print("autobahn: behaviorClose: " + ", ".join(f"{k}={v}" for k, v in sorted(close_counts.items(), key=str)))
if close_failed:
    print("autobahn: cases with behaviorClose FAILED (not gated): " + " ".join(close_failed))
if len(agent) < int(sys.argv[2]):
    sys.exit(f"autobahn: only {len(agent)} cases ran, expected at least {sys.argv[2]}")
if failed:
    print("autobahn: FAILED cases: " + " ".join(failed))
    sys.exit(1)
print("autobahn: no case FAILED")
PY
