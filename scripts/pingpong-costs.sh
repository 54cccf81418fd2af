#!/usr/bin/env bash
# pingpong-costs.sh: what one round trip of the ping-pong path costs a node:
# syscalls (strace -c), event-loop wake-ups (eventfd writes), allocations
# (uprobes on glibc's malloc family, through perf) and a CPU profile (perf).
#
#   scripts/pingpong-costs.sh [memory] [redis]     (default: both)
#
#   N=50000        round trips of the counted run
#   LOOPS=1000     closed loops (connections)
#   OUT=DIR        output directory (default reports/pingpong-costs/<UTC timestamp>)
#   SKIP_BUILD=1   use the existing .build-release binaries
#   SWITCHBOARD=F BENCH=F   measure with these binaries instead
#
# Method. A node (release build) runs pinned to CPU 0, Redis with it, and
# `switchboard-bench pingpong` on CPU 1. Every counter is read twice, over a
# run of LOOPS loops that stops after 1 round trip (setup: connect,
# subscribe, close) and over one that stops after N; per round trip =
# (counted - setup) / (N - 1). strace slows the node several times over,
# which changes how many events one epoll_wait returns, so the syscall counts
# are those of a node kept busy; perf's uprobes count every malloc, calloc,
# realloc, posix_memalign and free call in the node's process.
#
# Needs strace and perf; uprobes need root and tracefs (mounted at
# /sys/kernel/tracing when missing). Loopback only; every run is bounded by
# --max-round-trips and --timeout; stops only the processes it started.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
brokers=("$@")
((${#brokers[@]})) || brokers=(memory redis)
n=${N:-50000}
loops=${LOOPS:-1000}
out=${OUT:-$repo/reports/pingpong-costs/$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$out"
if [[ -z ${SKIP_BUILD:-} ]]; then
  swift build -c release --scratch-path .build-release --product switchboard 2>&1 | tail -n 2
  swift build -c release --scratch-path .build-release --product switchboard-bench 2>&1 | tail -n 2
fi
sb=${SWITCHBOARD:-$repo/.build-release/release/switchboard}
bench=${BENCH:-$repo/.build-release/release/switchboard-bench}
[[ -x $sb && -x $bench ]] || { echo "pingpong-costs: release binaries missing" >&2; exit 1; }
pin_server=() pin_load=()
if (($(nproc) >= 2)); then pin_server=(taskset -c 0) pin_load=(--cpus 1); fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

start_node() { # start_node BROKER: sets spid sport
  local broker=memory
  if [[ $1 == redis ]]; then
    local rport
    rport=$(free_port)
    "${pin_server[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$out" \
      --logfile "$out/redis.log" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    broker=redis://127.0.0.1:$rport
  fi
  sport=$(free_port)
  "${pin_server[@]}" "$sb" serve --port "$sport" --broker "$broker" --log-level error --commands-per-second 1000000 --command-burst 1000000 --max-connections-per-ip 1000000 >"$out/node-$1.log" 2>&1 &
  spid=$!
  pids+=("$spid")
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$sport") 2>/dev/null && break; sleep 0.1; done
}

pingpong() { # pingpong MAX LABEL [extra...]
  local max=$1 label=$2
  shift 2
  "$bench" pingpong --url "ws://127.0.0.1:$sport/ws" -n "$loops" --max-round-trips "$max" --duration 120 \
    --timeout 200 --server-pid "$spid" --quiet "${pin_load[@]}" --json "$out/$label.json" "$@" >"$out/$label.txt" 2>&1
}

# counted RUNLABEL COMMAND...: runs COMMAND attached to the node around a setup run and a counted run
with_tracer() { # with_tracer KIND MAX LABEL
  local kind=$1 max=$2 label=$3 tracer
  case $kind in
    strace) strace -c -f -q -o "$out/$label.strace" -p "$spid" & ;;
    trace) strace -f -q -e trace=read,readv,write,writev,sendmsg,recvmsg,epoll_wait,epoll_ctl,eventfd2 \
      -o "$out/$label.trace" -p "$spid" & ;;
    malloc) perf stat -x, -e 'probe_libc:malloc,probe_libc:calloc,probe_libc:realloc,probe_libc:posix_memalign,probe_libc:free' \
      -p "$spid" -o "$out/$label.perfstat" & ;;
  esac
  tracer=$!
  sleep 1
  pingpong "$max" "$label"
  kill -INT "$tracer" 2>/dev/null || true
  wait "$tracer" 2>/dev/null || true
}

if ! ls /sys/kernel/tracing/uprobe_events >/dev/null 2>&1; then mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true; fi
probes_added=0
if ! perf list 2>/dev/null | grep -q probe_libc:malloc; then
  libc=$(ldd "$sb" | awk '/libc\.so/{print $3}')
  if perf probe -q -x "$libc" -a malloc -a calloc -a realloc -a posix_memalign -a free 2>/dev/null; then probes_added=1; fi
fi

for broker in "${brokers[@]}"; do
  start_node "$broker"
  ls -l "/proc/$spid/fd" 2>/dev/null | awk '{print $NF}' | sort | uniq -c | sort -rn | head >"$out/$broker-fds.txt" || true
  # a plain run first: the figures without any tracer
  pingpong 100000000 "$broker-plain" --duration 10
  for kind in strace malloc; do
    with_tracer "$kind" 1 "$broker-$kind-setup"
    with_tracer "$kind" "$n" "$broker-$kind-counted"
  done
  # a full trace of a small run, to tell eventfd writes (wake-ups of another loop) from socket I/O
  with_tracer trace 1 "$broker-trace-setup"
  with_tracer trace "$(((n + 9) / 10))" "$broker-trace-counted"
  ls -l "/proc/$spid/fd" 2>/dev/null | awk '$NF ~ /eventfd|eventpoll|timerfd/ {split($9,a,"/"); print a[length(a)], $NF}' \
    >"$out/$broker-fd-kinds.txt" || true
  # CPU profile over 10 s of unthrottled ping-pong
  perf record -F 999 -g -p "$spid" -o "$out/$broker-perf.data" -- sleep 12 >/dev/null 2>&1 &
  perfpid=$!
  sleep 1
  pingpong 100000000 "$broker-profile" --duration 10
  wait "$perfpid" || true
  perf report -i "$out/$broker-perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null |
    swift demangle --simplified | grep -v '^#' | grep -v '^$' | head -40 >"$out/$broker-perf-top.txt" || true
  perf report -i "$out/$broker-perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -12 >"$out/$broker-perf-dso.txt" || true
  stop_all
done
if ((probes_added)); then perf probe -q -d 'probe_libc:*' 2>/dev/null || true; fi

python3 - "$out" "$n" "${brokers[@]}" <<'EOF'
import json, os, re, sys
out, n, brokers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def strace_counts(path):
    calls = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and not line.strip().startswith("100.00"):
            name = f[-1]
            try:
                calls[name] = int(f[3])
            except ValueError:
                pass
    return calls

def perfstat(path):
    counts = {}
    for line in open(path):
        f = line.strip().split(",")
        if len(f) > 2 and f[2].startswith("probe_libc:"):
            counts[f[2].split(":")[1]] = int(f[0]) if f[0].isdigit() else 0
    return counts

def trace_kinds(path, kinds):
    """Counts per (syscall, fd kind) in a strace -f log."""
    counts = {}
    for line in open(path):
        m = re.match(r"\d+\s+(\w+)\((\d+)", line)
        if not m:
            continue
        call, fd = m.group(1), m.group(2)
        kind = "eventfd" if kinds.get(fd, "").find("eventfd") >= 0 else ("epoll" if call.startswith("epoll") else "socket")
        counts[f"{call} {kind}"] = counts.get(f"{call} {kind}", 0) + 1
    return counts

report = []
for b in brokers:
    plain = json.load(open(os.path.join(out, f"{b}-plain.json")))["pingpong"]
    report.append(f"## {b} broker\n")
    report.append(f"untraced: {plain['round_trips_per_s']:.0f} round trips/s, server CPU "
                  f"{plain.get('server_cpu_us_per_round_trip') or 0:.1f} µs per round trip, p50 {plain['latency_ms']['p50']} ms, "
                  f"p99 {plain['latency_ms']['p99']} ms, lost {plain['lost']}\n")
    def sent(label):  # round trips the run really made (the duration may end it before N)
        return json.load(open(os.path.join(out, f"{b}-{label}.json")))["pingpong"]["round_trips"]
    d = max(1, sent("strace-counted") - sent("strace-setup"))
    setup, counted = strace_counts(os.path.join(out, f"{b}-strace-setup.strace")), strace_counts(os.path.join(out, f"{b}-strace-counted.strace"))
    rows = sorted(((counted.get(k, 0) - setup.get(k, 0)) / d, k) for k in set(counted) | set(setup))
    total = sum(r for r, _ in rows)
    report.append(f"syscalls per round trip (strace -c, (counted - setup) / {d}): total {total:.2f}")
    report += [f"  {k:<16} {r:6.2f}" for r, k in reversed(rows) if abs(r) >= 0.01]
    ms, mc = perfstat(os.path.join(out, f"{b}-malloc-setup.perfstat")), perfstat(os.path.join(out, f"{b}-malloc-counted.perfstat"))
    d = max(1, sent("malloc-counted") - sent("malloc-setup"))
    allocs = {k: (mc.get(k, 0) - ms.get(k, 0)) / d for k in mc}
    report.append(f"allocator calls per round trip (uprobes, / {d}): " + ", ".join(f"{k} {v:.2f}" for k, v in allocs.items()))
    kinds = {}
    for line in open(os.path.join(out, f"{b}-fd-kinds.txt")):
        f = line.split()
        if len(f) == 2:
            kinds[f[0]] = f[1]
    ts, tc = trace_kinds(os.path.join(out, f"{b}-trace-setup.trace"), kinds), trace_kinds(os.path.join(out, f"{b}-trace-counted.trace"), kinds)
    d = max(1, sent("trace-counted") - sent("trace-setup"))
    report.append(f"by descriptor kind, per round trip (strace -f, / {d}): " + ", ".join(
        f"{k} {(tc.get(k, 0) - ts.get(k, 0)) / d:.2f}" for k in sorted(set(tc) | set(ts)) if abs(tc.get(k, 0) - ts.get(k, 0)) >= 10))
    report.append("")
open(os.path.join(out, "summary.md"), "w").write("\n".join(report) + "\n")
print("\n".join(report))
EOF
echo "pingpong-costs: results in $out (summary.md, *-perf-top.txt)"
