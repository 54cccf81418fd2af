# Shared helpers for scripts/test.sh and scripts/autobahn.sh (sourced, not run).

_SB_APT_UPDATED=0

# apt_install PKG...: install the Debian packages that are not installed yet.
# Runs `apt-get update` once per script run, and only when something is missing.
apt_install() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing packages ${missing[*]} and no apt-get to install them" >&2
        return 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    echo "installing system packages: ${missing[*]}"
    if [ "$_SB_APT_UPDATED" -eq 0 ]; then
        "${sudo[@]}" apt-get update -q
        _SB_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ensure_c_compiler: the Autobahn install compiles two small C extensions.
ensure_c_compiler() {
    if ! command -v gcc >/dev/null 2>&1 && ! command -v cc >/dev/null 2>&1; then
        apt_install gcc libc6-dev
    fi
}

# ensure_redis_server: the multi-node e2e tests (IntegrationTests/e2e/test_cluster.py)
# start their own redis-server processes on free loopback ports. Debian's
# package also ships redis-cli. Where the package's service may start, it
# listens on 6379 only, which the tests never use.
ensure_redis_server() {
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
    fi
    command -v redis-server >/dev/null 2>&1 || { echo "redis-server is still not on PATH" >&2; return 1; }
}

# ensure_browser: the browser tests (IntegrationTests/browser) drive Debian's Chromium
# through its chromedriver (/usr/bin/chromedriver), headless.
ensure_browser() {
    if ! command -v chromium >/dev/null 2>&1 || [ ! -x /usr/bin/chromedriver ]; then
        apt_install chromium chromium-driver
    fi
    command -v chromium >/dev/null 2>&1 || { echo "chromium is still not on PATH" >&2; return 1; }
    [ -x /usr/bin/chromedriver ] || { echo "/usr/bin/chromedriver is still missing" >&2; return 1; }
}

# ensure_haproxy: the browser tests put HAProxy (round-robin, no stickiness)
# in front of the nodes. Debian installs it in /usr/sbin; its service, where
# it may start, uses the packaged config and none of the tests' ports.
ensure_haproxy() {
    if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
        apt_install haproxy
    fi
    command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || { echo "haproxy is still missing" >&2; return 1; }
}

# ensure_nginx: IntegrationTests/e2e/test_deploy_proxies.py runs deploy/nginx/nginx.conf
# with the real nginx (Debian's 1.22); the tests start their own copy.
ensure_nginx() {
    if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
        apt_install nginx
    fi
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { echo "nginx is still missing" >&2; return 1; }
}

# ensure_promtool: IntegrationTests/e2e/test_metrics.py runs `promtool check metrics`
# on a node's /metrics. Debian's `prometheus` package ships promtool; its
# service, where it may start, listens on 9090, which the tests never use.
ensure_promtool() {
    if ! command -v promtool >/dev/null 2>&1; then
        apt_install prometheus
    fi
    command -v promtool >/dev/null 2>&1 || { echo "promtool is still not on PATH" >&2; return 1; }
}

# ensure_nodejs: the browser client's unit tests (clients/js/test) run on
# Node's built-in test runner (`node --test`, Node 18 or later; no npm).
ensure_nodejs() {
    if ! command -v node >/dev/null 2>&1; then
        apt_install nodejs
    fi
    command -v node >/dev/null 2>&1 || { echo "node is still not on PATH" >&2; return 1; }
    local major
    major=$(node -p 'process.versions.node.split(".")[0]')
    if [ "$major" -lt 18 ]; then
        echo "node $(node --version) is too old for clients/js/test (needs 18 or later)" >&2
        return 1
    fi
}
