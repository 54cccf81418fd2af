#!/usr/bin/env bash
# The whole test suite: swift build, swift test, the Python end-to-end suite
# against the real binary, the browser tests (headless Chromium on the demo
# page and clients/js/switchboard.js, with Redis and HAProxy), and the
# Autobahn WebSocket conformance run.
#
#   ./scripts/test.sh            (from anywhere; it works from the repo root)
#
# Installs what is missing (Debian packages via apt-get, among them
# redis-server for the multi-node e2e tests, prometheus for its promtool,
# chromium, chromium-driver and
# haproxy for the browser tests, the e2e venv in .venv-e2e (Selenium too),
# Autobahn in .build-autobahn, nodejs for the browser client's unit tests
# in clients/js/test). Every step runs even when an
# earlier one failed, unless it needs the binary and the build failed.
# Exits non-zero when any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

VENV=.venv-e2e
BIN=.build/debug/switchboard
export SWITCHBOARD_BIN=$BIN
export PYTHONDONTWRITEBYTECODE=1

STEPS=()
STATUS=()
FAILED=0

# step NAME CMD...: run CMD in a subshell with `set -e`, record the result.
step() {
    local name=$1
    shift
    echo
    echo "==== [$name] $*"
    local t0=$SECONDS rc
    set +e
    ( set -e; "$@" )
    rc=$?
    set -e
    STEPS+=("$name")
    if [ "$rc" -eq 0 ]; then
        STATUS+=("ok")
        echo "==== [$name] ok ($((SECONDS - t0)) s)"
    else
        STATUS+=("FAILED")
        FAILED=1
        echo "==== [$name] FAILED with status $rc ($((SECONDS - t0)) s)"
    fi
    return 0
}

skip() {
    STEPS+=("$1")
    STATUS+=("skipped")
    FAILED=1
    echo
    echo "==== [$1] skipped: $2"
}

last_ok() { [ "${STATUS[${#STATUS[@]}-1]}" = ok ]; }

system_deps() {
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    # `python3 -m venv` needs ensurepip (Debian's python3-venv for the system python).
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        local v
        v=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        apt_install python3-venv "python$v-venv"
    fi
    ensure_c_compiler
    ensure_redis_server
    ensure_promtool
    command -v swift >/dev/null 2>&1 || { echo "swift is not on PATH (install the Swift toolchain)" >&2; return 1; }
    command -v timeout >/dev/null 2>&1 || apt_install coreutils
    command -v openssl >/dev/null 2>&1 || apt_install openssl  # TLS certificates for the Redis TLS and balancer tests
}

python_venv() {
    if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "removing broken $VENV"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r IntegrationTests/e2e/requirements.txt
    "$VENV/bin/python" -c 'import websockets, pytest, requests; print("e2e venv:", "websockets", websockets.__version__, "pytest", pytest.__version__, "requests", requests.__version__)'
}

e2e() {
    ensure_haproxy  # IntegrationTests/e2e/test_deploy_proxies.py
    ensure_nginx
    command -v openssl >/dev/null 2>&1 || apt_install openssl  # test_balancer.py makes TLS certificates
    "$BIN" serve --help >/dev/null
    "$VENV/bin/python" -m pytest -q IntegrationTests/e2e
}

js_unit() {
    ensure_nodejs
    node clients/js/build.mjs --check   # the served switchboard.js is the bundle of clients/js/src/
    node --test clients/js/test/*.test.mjs
}

browser() {
    ensure_browser
    ensure_haproxy
    ensure_redis_server
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r IntegrationTests/browser/requirements.txt
    "$VENV/bin/python" -c 'import selenium; print("browser tests: selenium", selenium.__version__)'
    "$BIN" serve --help >/dev/null
    "$VENV/bin/python" -m pytest -q IntegrationTests/browser
}

step "system packages" system_deps
step "js client (node --test)" js_unit
step "swift build" swift build
if last_ok; then
    # SWIFTNIO_STRICT=1: NIO traps on misuse it otherwise only logs (work scheduled on a stopped
    # event loop, for one), so such a bug fails the suite instead of printing a line nobody reads.
    step "swift test" env SWIFTNIO_STRICT=1 swift test
    step "e2e venv" python_venv
    if last_ok; then
        step "e2e (pytest)" e2e
        step "browser" browser
    else
        skip "e2e (pytest)" "no venv"
        skip "browser" "no venv"
    fi
    step "autobahn" scripts/autobahn.sh
else
    skip "swift test" "build failed"
    skip "e2e (pytest)" "build failed"
    skip "browser" "build failed"
    skip "autobahn" "build failed"
fi

echo
summary=""
for i in "${!STEPS[@]}"; do
    summary+="${summary:+, }${STEPS[$i]}: ${STATUS[$i]}"
done
if [ "$FAILED" -eq 0 ]; then
    echo "test.sh: PASSED in $SECONDS s ($summary)"
else
    echo "test.sh: FAILED in $SECONDS s ($summary)"
fi
exit "$FAILED"
