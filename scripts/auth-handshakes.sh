#!/usr/bin/env bash
# auth-handshakes.sh: issue 13's handshake target, measured with switchboard-bench connect.
#
# Handshakes with a valid token against the same build without tokens: RS256 at least 85 % of the
# no-auth rate, HS256 90 %, ES256 75 %. One node in dev mode (no token key: the baseline) and one
# node with an HS256 secret, an RSA-2048 and a P-256 public key, both release builds, run one after
# the other. Two ways of presenting tokens, both minted by PyJWT with the key's `kid`:
#   hs256, rs256, es256                   a different token per connection (--token-file; fresh
#                                         tokens every round), so every signature is verified: the
#                                         cost of first connects;
#   hs256-reused, rs256-reused, es256-reused   one token for every connection, as in a reconnect
#                                         storm where each client comes back with the token it had:
#                                         after the first, the node's verified-token cache answers.
# Every variant runs ROUNDS times, interleaved (none, hs256, ..., es256-reused, none, ...), so drift
# on a shared machine hits all alike. Reported per variant: handshakes/s (median of the rounds) and
# the node's CPU µs per handshake (from /proc, connect and close), and both as ratios to the no-auth
# baseline of the same run.
#
#   scripts/auth-handshakes.sh                8,000 connections per run, 5 rounds (about 5 min)
#   N=4000 ROUNDS=3 scripts/auth-handshakes.sh   a quicker, noisier look
#
# Needs .build-release (swift build -c release --build-path .build-release) and the e2e venv
# (.venv-e2e, with PyJWT and cryptography). The node runs on CPU 0 and the load on CPU 1 when there
# are two or more CPUs. Loopback only; every run is bounded by --timeout; the nodes are stopped on exit.
# Output: reports/auth-handshakes/<UTC timestamp>/ (JSON per run, summary.txt).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bin=${SWITCHBOARD_BIN:-$repo/.build-release/release/switchboard}
bench=${SWITCHBOARD_BENCH:-$repo/.build-release/release/switchboard-bench}
py=$repo/.venv-e2e/bin/python
n=${N:-8000}
rounds=${ROUNDS:-5}
for f in "$bin" "$bench" "$py"; do [[ -x $f ]] || { echo "auth-handshakes: $f missing (see the header)" >&2; exit 2; }; done
out=$repo/reports/auth-handshakes/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
pin_server=() pin_load=()
if (($(nproc) >= 2)); then pin_server=(taskset -c 0) pin_load=(--cpus 1); fi

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$out/rsa.pem" 2>/dev/null
openssl pkey -in "$out/rsa.pem" -pubout -out "$out/rsa.pub.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/ec.pem" 2>/dev/null
openssl pkey -in "$out/ec.pem" -pubout -out "$out/ec.pub.pem"
secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n/+=' | head -c 64)
cat >"$out/keyed.json" <<JSON
{"tokens": {"hmac": [{"kid": "h1", "secret": "$secret", "algorithms": ["HS256"]}],
            "publicKeys": [{"kid": "r1", "file": "rsa.pub.pem"}, {"kid": "e1", "file": "ec.pub.pem"}]}}
JSON
mint() {  # alg kid key count [file]: one token per line, each with its own sub and jti
  "$py" - "$@" <<'PY'
import sys, time, uuid, jwt
alg, kid, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if not alg.startswith("HS"):
    # Parsed once: PyJWT would parse (and check) a PEM text again for every token.
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    key = load_pem_private_key(open(key, "rb").read(), password=None)
exp = int(time.time()) + 3600
for i in range(count):
    print(jwt.encode({"sub": f"user{i}", "jti": uuid.uuid4().hex, "exp": exp}, key, algorithm=alg, headers={"kid": kid}))
PY
}
declare -A token keyfile kid
keyfile[hs256]=$secret kid[hs256]=h1
keyfile[rs256]=$out/rsa.pem kid[rs256]=r1
keyfile[es256]=$out/ec.pem kid[es256]=e1
for a in hs256 rs256 es256; do token[$a]=$(mint "${a^^}" "${kid[$a]}" "${keyfile[$a]}" 1); done

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start_node() {  # name [config]: prints "pid port"
  local name=$1 config=${2:-} args=(serve --host 127.0.0.1 --port 0 --log-level error --max-connections-per-ip 20000)
  [[ -n $config ]] && args+=(--config "$config")
  "${pin_server[@]}" "$bin" "${args[@]}" >"$out/$name.out" 2>"$out/$name.err" &
  local pid=$! port=""
  for _ in $(seq 100); do
    port=$(grep -oE 'ws://127\.0\.0\.1:[0-9]+' "$out/$name.out" | head -1 | sed 's/.*://') || true
    [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || { echo "auth-handshakes: node $name did not start" >&2; cat "$out/$name.err" >&2; exit 1; }
  pids+=("$pid")
  echo "$pid $port"
}
read -r plain_pid plain_port < <(start_node plain)
read -r keyed_pid keyed_port < <(start_node keyed "$out/keyed.json")
pids=("$plain_pid" "$keyed_pid")

# Waits (at most 15 s) until the node holds no more than its idle file descriptors: every
# connection of the last run closed and cleaned up.
settle() {
  local i
  for i in $(seq 150); do
    (( $(ls "/proc/$1/fd" | wc -l) <= ${idle_fds[$1]} + 2 )) && return 0
    sleep 0.1
  done
  echo "auth-handshakes: node $1 still holds $(ls "/proc/$1/fd" | wc -l) descriptors" >&2
}
declare -A idle_fds
idle_fds[$plain_pid]=$(ls "/proc/$plain_pid/fd" | wc -l)
idle_fds[$keyed_pid]=$(ls "/proc/$keyed_pid/fd" | wc -l)
# The node's CPU time (user + system) in clock ticks, from /proc.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
variants=(none hs256 rs256 es256 hs256-reused rs256-reused es256-reused)
for r in $(seq "$rounds"); do
  for a in hs256 rs256 es256; do mint "${a^^}" "${kid[$a]}" "${keyfile[$a]}" "$n" >"$out/tokens-$a-$r.txt"; done
  for v in "${variants[@]}"; do
    case $v in
      none) port=$plain_port pid=$plain_pid tok=() ;;
      *-reused) port=$keyed_port pid=$keyed_pid tok=(--token "${token[${v%-reused}]}") ;;
      *) port=$keyed_port pid=$keyed_pid tok=(--token-file "$out/tokens-$v-$r.txt") ;;
    esac
    settle "$pid"
    before=$(cpu_ticks "$pid")
    "$bench" connect --url "ws://127.0.0.1:$port/ws" -n "$n" --rate 0 --no-subscribe --hold 0.5 --timeout 120 \
      --server-pid "$pid" --quiet "${pin_load[@]}" "${tok[@]}" --json "$out/$v-$r.json" >"$out/$v-$r.txt" 2>&1 \
      || echo "auth-handshakes: run $v-$r exited $? (see $out/$v-$r.txt)" >&2
    # Includes the connections' close after --hold (waited for, so that it is not counted in the
    # next variant's run on the same node): the same work for every variant.
    settle "$pid"
    echo "$(( $(cpu_ticks "$pid") - before )) $(getconf CLK_TCK)" >"$out/$v-$r.cpu"
  done
done

"$py" - "$out" "$rounds" "$n" <<'PY' | tee "$out/summary.txt"
import json, os, statistics, sys
out, rounds, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {}
for v in ("none", "hs256", "rs256", "es256", "hs256-reused", "rs256-reused", "es256-reused"):
    rates, cpus, failed = [], [], 0
    for r in range(1, rounds + 1):
        p = os.path.join(out, f"{v}-{r}.json")
        if not os.path.exists(p):
            continue
        d = json.load(open(p))
        c = d["connections"]
        failed += c["failed"]
        rates.append(c["handshakes_per_s"])
        ticks, hz = (int(x) for x in open(p[:-5] + ".cpu").read().split())
        cpu = ticks / hz
        if c["established"]:
            cpus.append(cpu * 1e6 / c["established"])
    rows[v] = (statistics.median(rates) if rates else 0, statistics.median(cpus) if cpus else 0, failed, len(rates))
base_rate, base_cpu = rows["none"][0], rows["none"][1]
target = {"none": None, "hs256": 0.90, "rs256": 0.85, "es256": 0.75, "hs256-reused": 0.90, "rs256-reused": 0.85,
          "es256-reused": 0.75}
print(f"auth-handshakes: {n} connections per run, {rounds} rounds interleaved, medians; node on CPU 0, load on CPU 1")
print(f"{'variant':13} {'handshakes/s':>13} {'÷ none':>7} {'target':>7} {'server µs/handshake':>20} {'÷ none':>7} {'failed':>7}")
for v, (rate, cpu, failed, runs) in rows.items():
    t = target[v]
    print(f"{v:13} {rate:13.0f} {rate / base_rate if base_rate else 0:7.2f} {('>= %.2f' % t) if t else '':>7} "
          f"{cpu:20.1f} {cpu / base_cpu if base_cpu else 0:7.2f} {failed:7d}")
PY
