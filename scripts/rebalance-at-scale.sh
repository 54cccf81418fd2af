#!/usr/bin/env bash
# rebalance-at-scale.sh: issue 14's rebalancing measurement at its size, with real processes.
#
# Runs IntegrationTests/e2e/test_rebalance.py (redis-server, 2 nodes, then 2 more) with 8,000
# WebSocket subscribers (Python `websockets`, each recovering from its last offset on every
# reconnect) on the first two nodes, 1,000 more arriving after the scale-out, the default hold and
# window (10 s, 30 s), one publication per second on the channel everyone follows. Each variant
# (clients placed directly, through `switchboard balance`, through HAProxy leastconn) checks:
# max/min connections per node <= 1.10 within hold + window + 10 s (two windows behind HAProxy);
# clients asked to move <= 1.1 x the excess at scale-out; every publication received once, in order.
#
#   scripts/rebalance-at-scale.sh            all three variants (about 10 min on 2 shared cores)
#   scripts/rebalance-at-scale.sh -k haproxy one of them (pytest -k)
#   CLIENTS=4000 LATE=500 ...                 a smaller run
#
# Needs the e2e venv (.venv-e2e, made by scripts/test.sh) and a built binary (SWITCHBOARD_BIN,
# default .build/debug/switchboard; a release build is lighter on the shared cores). The load
# process holds one socket per client: keep CLIENTS + LATE under 19,000 (the open-files limit).
# Output: reports/rebalance/<UTC timestamp>.txt.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=reports/rebalance
mkdir -p "$out"
log=$out/$(date -u +%Y%m%dT%H%MZ).txt
export SWITCHBOARD_BIN=${SWITCHBOARD_BIN:-$repo/.build/debug/switchboard}
export REBALANCE_CLIENTS=${CLIENTS:-8000}
export REBALANCE_LATE_CLIENTS=${LATE:-1000}
export REBALANCE_HOLD_WINDOW=${HOLD_WINDOW:-10,30}
export REBALANCE_PUBLISH_RATE=${PUBLISH_RATE:-1}
echo "rebalance-at-scale: $REBALANCE_CLIENTS clients + $REBALANCE_LATE_CLIENTS late, hold,window $REBALANCE_HOLD_WINDOW, $SWITCHBOARD_BIN" | tee "$log"
uptime | tee -a "$log"
set +e
.venv-e2e/bin/python -m pytest -q -s -p no:cacheprovider IntegrationTests/e2e/test_rebalance.py "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
uptime | tee -a "$log"
echo "rebalance-at-scale: exit $rc; log $log"
exit "$rc"
