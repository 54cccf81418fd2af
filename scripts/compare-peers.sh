#!/usr/bin/env bash
# compare-peers.sh: the side-by-side readings of docs/performance.md.
#
# Builds switchboard in release (into .build-release), sets up the reference
# peers of ../shared/peers (Go + gorilla, Node + ws, Centrifuge 0.15, NATS),
# then runs the harness's `compare` for every measurement in
# docs/performance.md, one `compare` run per table, so that every ratio is
# taken within one run. Tables, logs and wsbench JSON go to
# reports/perf/<UTC timestamp>/.
#
#   scripts/compare-peers.sh              memory handshake fanout fanout2 (about 25-35 min on 2 shared cores)
#   scripts/compare-peers.sh STEP...      only these steps:
#        issue12        the readings issues 11 and 12 are judged by, in one run: pingpong, pingpong-redis,
#                       latency, latency2, connect, memory (about 20 min)
#        pingpong       1,000 closed loops, 15 s; switchboard with the memory broker, against nats, go, centrifuge
#        pingpong-nohistory
#                       the memory broker with history off (scripts/no-history.json), NATS's work, against nats
#        pingpong-redis the same with switchboard on Redis, against go and centrifuge
#        pingpong-redis-nohistory
#                       the same with history off (scripts/no-history.json), the go peer's work
#        latency        10k subscribers on one node, one channel: 40 publications at 2/s, then 60 at 5/s (p99)
#        latency2       the same over 2 nodes (switchboard through Redis, each peer its own way)
#        connect        15,000 connections unpaced, each subscribing: server CPU per accepted connection
#        memory         connect -n 19000 -rate 2000 -hold 10 (KB per idle connection, one subscription each)
#        handshake      connect -n 10000 -rate 0 (handshakes/s)
#        fanout         10k subscribers on one node: capacity (500 msg/s) and moderate (5 msg/s) load
#        fanout2        the same over 2 nodes through Redis
#        profile        switchboard alone under the same loads: profile-memory (/proc, smaps_rollup,
#                       glibc malloc_stats), profile-heap (heaptrack, 5k connections), profile-cpu
#                       (perf: fan-out, connect+subscribe, connect without subscribe)
#   OUT=DIR        write into DIR instead of reports/perf/<UTC timestamp>
#   PIN=0          do not pin (default: servers and Redis on CPU 0, the load generator on CPU 1,
#                  via compare's -server-cpus 0 -load-cpus 1; needs 2 or more CPUs)
#   SKIP_BUILD=1   use the existing .build-release binary
#   SWITCHBOARD=F  measure this switchboard binary instead (implies nothing about SKIP_BUILD)
#   PEERS=DIR      run the harness from DIR (a copy already set up) instead of the shared folder
#
# The shared peers folder is read-only on these machines; its harness writes
# into its own .build/, so when that is not writable the folder is copied to
# $PEERS_COPY (default /tmp/peers) and run from there.
#
# Loopback only; every wsbench run is bounded by -timeout; compare stops only
# the processes it started (by PID). Other work on the machine skews absolute
# figures: read the ratios within one table and the load1 / uptime lines.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
steps=("$@")
((${#steps[@]})) || steps=(memory handshake fanout fanout2)
want() { local s; for s in "${steps[@]}"; do [[ $s == "$1" || ($s == issue12 && " pingpong pingpong-redis latency latency2 connect memory " == *" $1 "*) ]] && return 0; done; return 1; }
pin=()
if [[ ${PIN:-1} != 0 ]] && (($(nproc) >= 2)); then pin=(-server-cpus 0 -load-cpus 1); fi

out=${OUT:-$repo/reports/perf/$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$out"
tables=$out/tables.md
echo "# compare-peers $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname), $(nproc) cores: ${steps[*]}" >>"$tables"

machine() {
  {
    echo "== $1 $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    uptime
    free -m | sed -n 1,2p
    echo "busiest processes:"
    ps -eo pid,pcpu,rss,etime,comm --sort=-pcpu | head -8
  } >>"$out/machine.txt"
}

# 1. switchboard, release build
machine "before build"
if [[ -z ${SKIP_BUILD:-} ]]; then
  echo "compare-peers: swift build -c release (first build takes several minutes)"
  swift build -c release --scratch-path .build-release --product switchboard 2>&1 | tail -n 3
fi
sb=${SWITCHBOARD:-$repo/.build-release/release/switchboard}
[[ -x $sb ]] || { echo "compare-peers: $sb missing after the build" >&2; exit 1; }

# 2. the peers: run from the shared folder when its .build/ is writable, else from a copy
peers=$repo/../shared/peers
if [[ -n ${PEERS:-} ]]; then
  peers=$PEERS # an already set-up copy of the harness
elif [[ $(stat -c %A "$peers") != ??w* ]] || ! (mkdir -p "$peers/.build" && touch "$peers/.build/.w" && rm -f "$peers/.build/.w") 2>/dev/null; then
  copy=${PEERS_COPY:-/tmp/peers}
  echo "compare-peers: $peers is read-only; running from a copy in $copy"
  mkdir -p "$copy"
  # refresh the sources, keep the copy's .build/ (built binaries, Go cache)
  (cd "$peers" && tar --exclude=./.build -cf - .) | (cd "$copy" && tar -xf -)
  chmod -R u+w "$copy"
  peers=$copy
fi
"$peers/setup"

# The node's defaults protect it from one address (1,000 connections, 100 commands/s each); a
# benchmark is one address asking for much more, so those limits are lifted here (and only here).
export SWITCHBOARD_CMD="$sb serve --port {port} --broker {redis} --log-level error --api-key bench --commands-per-second 1000000 --command-burst 1000000 --max-connections-per-ip 1000000"

run() { # run NAME compare-args...
  local name=$1
  shift
  machine "$name"
  echo "compare-peers: $name: compare $*"
  echo -e "\n## $name\n" >>"$tables"
  "$peers/compare" "$@" "${pin[@]}" -md "$tables" -json-dir "$out/json-$name" 2>"$out/$name.log" | tee "$out/$name.txt" ||
    echo "compare-peers: $name failed (see $out/$name.log)"
}

all=switchboard,go,centrifuge,nats,node

if want memory; then
  # ~19k idle connections on one node (one process holds at most ~19.9k sockets), one subscription each
  run memory connect -targets "$all" -n 19000 -rate 2000 -hold 10 -timeout 100
fi
if want pingpong; then
  # the memory broker: one node has no need of Redis (nats has none either); go and centrifuge use Redis
  SWITCHBOARD_CMD="$sb serve --port {port} --broker memory --log-level error --api-key bench --commands-per-second 1000000 --command-burst 1000000 --max-connections-per-ip 1000000" \
    run pingpong pingpong -targets switchboard,nats,go,centrifuge -baseline nats -n 1000 -duration 15
fi
if want pingpong-nohistory; then
  # the memory broker with NATS's work: no history (no offsets, nothing stored per publication)
  SWITCHBOARD_CMD="$sb serve --port {port} --broker memory --config $repo/scripts/no-history.json --log-level error --api-key bench --commands-per-second 1000000 --command-burst 1000000 --max-connections-per-ip 1000000" \
    run pingpong-nohistory pingpong -targets switchboard,nats -baseline nats -n 1000 -duration 15
fi
if want pingpong-redis; then
  run pingpong-redis pingpong -targets switchboard,go,centrifuge -baseline go -n 1000 -duration 15
fi
if want pingpong-redis-nohistory; then
  # the same work as the go peer: no history, so the Redis script is a PUBLISH (no offsets, no recovery)
  SWITCHBOARD_CMD="$sb serve --port {port} --broker {redis} --config $repo/scripts/no-history.json --log-level error --api-key bench --commands-per-second 1000000 --command-burst 1000000 --max-connections-per-ip 1000000" \
    run pingpong-redis-nohistory pingpong -targets switchboard,go -baseline go -n 1000 -duration 15
fi
if want latency; then
  # light load: 2 and 5 publications/s to 10k subscribers on one channel (20k and 50k deliveries/s offered)
  run latency-2 fanout -targets switchboard,nats,centrifuge,go -baseline centrifuge -n 10000 -msgs 40 -msg-rate 2 -size 64
  run latency-5 fanout -targets switchboard,nats,centrifuge,go -baseline centrifuge -n 10000 -msgs 60 -msg-rate 5 -size 64
fi
if want latency2; then
  run latency2-2 fanout -nodes 2 -targets switchboard,nats,centrifuge,go -baseline centrifuge -n 10000 -msgs 40 -msg-rate 2 -size 64
  run latency2-5 fanout -nodes 2 -targets switchboard,nats,centrifuge,go -baseline centrifuge -n 10000 -msgs 60 -msg-rate 5 -size 64
fi
if want connect; then
  # server CPU per accepted connection: 15,000 connect + subscribe, unpaced
  run connect connect -targets switchboard,go,centrifuge,nats -baseline go -n 15000 -rate 0 -hold 2
fi
if want handshake; then
  run handshake connect -targets "$all" -n 10000 -rate 0 -hold 2
fi
if want fanout; then
  # capacity: 10k subscribers on one channel, 200 messages at 500/s offered = 5M deliveries/s (saturated)
  run fanout-capacity fanout -targets switchboard,nats,centrifuge,go -baseline nats -n 10000 -msgs 200 -msg-rate 500 -size 64
  # moderate: 5 messages/s = 50k deliveries/s offered, below every server's capacity: latency without queueing
  run fanout-moderate fanout -targets switchboard,nats,centrifuge,go -baseline centrifuge -n 10000 -msgs 100 -msg-rate 5 -size 64
fi
if want fanout2; then
  run fanout2-capacity fanout -nodes 2 -targets switchboard,nats,centrifuge,go -baseline nats -n 10000 -msgs 200 -msg-rate 500 -size 64
  run fanout2-moderate fanout -nodes 2 -targets switchboard,nats,centrifuge,go -baseline centrifuge -n 10000 -msgs 100 -msg-rate 5 -size 64
fi
# ---- profiling: switchboard alone, under the same loads (not a comparison) ----
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
prof_pids=()
prof_stop() { # TERM the server first (heaptrack writes its data when it exits), then the rest
  local p
  [[ -n ${spid:-} ]] && kill "$spid" 2>/dev/null && for _ in $(seq 100); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  for p in "${prof_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${prof_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  prof_pids=() spid=
}
prof_start() { # prof_start [wrapper...]: redis + one switchboard node; sets rport sport spid
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$out" \
    --logfile "$out/prof-redis.log" >/dev/null 2>&1 &
  prof_pids+=($!)
  for _ in $(seq 50); do redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  sport=$(free_port)
  "$@" "$sb" serve --port "$sport" --broker "redis://127.0.0.1:$rport" --log-level error --api-key bench \
    >"$out/prof-switchboard.log" 2>&1 &
  local launcher=$!
  prof_pids+=("$launcher")
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$sport") 2>/dev/null && break; sleep 0.1; done
  spid=$launcher
  if (($#)); then # behind a wrapper (heaptrack): the server is the wrapper's child named switchboard
    spid=$(ps -o pid=,comm= --ppid "$launcher" | awk '$2=="switchboard"{print $1; exit}')
  fi
}
wsb() { "$peers/.build/bin/wsbench" -procs auto -proto switchboard -url "ws://127.0.0.1:$sport/ws" -server-pid "$spid" -src 127.0.9.1 "$@"; }
demangle() { if command -v swift-demangle >/dev/null; then swift-demangle --simplified; else swift demangle --simplified; fi; }
perf_top() { # perf_top DATA OUT: flat profile by symbol, then by DSO
  perf report -i "$1" --no-children --sort symbol --stdio -g none 2>/dev/null | demangle | grep -v '^$' | head -60 >"$2" || true
  perf report -i "$1" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12 >>"$2" || true
}
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

if want profile || want profile-memory; then
  # (a) ~19k idle connections: /proc status, smaps_rollup, glibc arenas, once all are open
  trap prof_stop EXIT
  prof_start
  machine "profile-memory"
  { echo "== idle, before"; grep -E 'VmRSS|RssAnon|RssFile|Threads' "/proc/$spid/status"; } >"$out/prof-memory.txt"
  wsb -scenario connect -n 19000 -rate 2000 -hold 15 -timeout 100 >"$out/prof-memory-wsbench.txt" 2>&1 &
  wpid=$!
  for _ in $(seq 900); do (($(fds "$spid") >= 19000)) && break; kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
  sleep 3
  {
    echo "== $(($(fds "$spid"))) descriptors open"
    grep -E 'VmRSS|RssAnon|RssFile|Threads' "/proc/$spid/status"
    cat "/proc/$spid/smaps_rollup"
    echo "== largest mappings (Rss kB)"
    awk '/^[0-9a-f]+-[0-9a-f]+ /{m=$0} /^Rss:/{print $2, m}' "/proc/$spid/smaps" | sort -rn | head -8
    echo "== glibc malloc_stats (printed to the server's stderr)"
  } >>"$out/prof-memory.txt"
  gdb -p "$spid" -batch -ex 'call (void) malloc_stats()' >/dev/null 2>&1 || true
  sleep 1
  grep -A40 '^Arena 0' "$out/prof-switchboard.log" >>"$out/prof-memory.txt" || true
  wait "$wpid" || true
  prof_stop
  trap - EXIT
fi
if (want profile || want profile-heap) && command -v heaptrack >/dev/null; then
  # (b) who allocates what per connection: heaptrack's peak consumers over 5,000 held connections
  trap prof_stop EXIT
  rm -f "$out"/heaptrack-idle*
  prof_start heaptrack -o "$out/heaptrack-idle"
  wsb -scenario connect -n 5000 -rate 1000 -hold 5 -timeout 100 >"$out/prof-heaptrack-wsbench.txt" 2>&1 || true
  prof_stop
  trap - EXIT
  f=$(ls "$out"/heaptrack-idle* 2>/dev/null | head -1 || true)
  if [[ -n $f ]]; then
    heaptrack_print -f "$f" --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
      --peak-limit 40 --sub-peak-limit 0 --merge-backtraces 0 2>/dev/null | demangle >"$out/prof-heaptrack-stacks.txt" || true
    tail -6 "$out/prof-heaptrack-stacks.txt"
  fi
fi
if (want profile || want profile-cpu) && command -v perf >/dev/null; then
  # (c) CPU of the fan-out: perf samples (software clock) while 10k subscribers take 200 messages at 500/s
  trap prof_stop EXIT
  prof_start
  machine "profile-fanout"
  wsb -scenario fanout -n 10000 -msgs 200 -msg-rate 500 -size 64 -timeout 100 >"$out/prof-fanout-wsbench.txt" 2>&1 &
  wpid=$!
  for _ in $(seq 600); do (($(fds "$spid") >= 10000)) && break; kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
  perf record -e cpu-clock -F 499 -g -p "$spid" -o "$out/perf-fanout.data" -- sleep 10 >/dev/null 2>&1 || true
  wait "$wpid" || true
  prof_stop
  perf_top "$out/perf-fanout.data" "$out/prof-fanout-perf.txt"
  # (d) connections with one subscription each, unpaced (the handshake and subscribe path)
  prof_start
  machine "profile-connect"
  wsb -scenario connect -n 10000 -rate 0 -hold 1 -timeout 100 >"$out/prof-connect-wsbench.txt" 2>&1 &
  wpid=$!
  perf record -e cpu-clock -F 499 -g -p "$spid" -o "$out/perf-connect.data" -- sleep 8 >/dev/null 2>&1 || true
  wait "$wpid" || true
  prof_stop
  perf_top "$out/perf-connect.data" "$out/prof-connect-perf.txt"
  # (e) the same without the subscription: what the handshake alone costs
  prof_start
  wsb -scenario connect -n 10000 -rate 0 -hold 1 -subscribe=false -timeout 100 >"$out/prof-connect-nosub-wsbench.txt" 2>&1 || true
  prof_stop
  trap - EXIT
fi
machine "end"
echo "compare-peers: results in $out (tables.md, machine.txt, *.txt, json-*/)"
