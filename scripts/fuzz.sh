#!/usr/bin/env bash
# Fuzz the decoders that read network bytes (JSON commands, RESP, WebSocket
# frames through a real session, the SSE/long-polling HTTP inputs, and the
# /poll, /rpc and SSE bodies through a whole node on a broker with the Redis
# broker's offset arithmetic, tokens and JWK Sets, the balancer's request heads,
# PROXY protocol headers and origins) with libFuzzer + AddressSanitizer, a bounded
# number of runs each. The recipe and its traps: FUZZING.md in the shared
# notes next to this repository; the targets and results: Fuzz/README.md.
#
#   ./scripts/fuzz.sh [RUNS] [TARGET...]   (default 200000 runs, every target)
#
# Seeds are read from Fuzz/Corpus/<Name>/ (checked in, with the reproducers of
# past findings); what libFuzzer adds goes to Fuzz/.build-fuzz/corpus/<Name>/,
# never into the checked-in corpus. Findings land in Fuzz/fuzz-artifacts/.
# Reproduce one: SWIFT_BACKTRACE=enable=no Fuzz/.build-fuzz/release/<Target> <file>
#
# Exit 0: every target ran all its runs without a crash, leak or timeout.
set -euo pipefail
cd "$(dirname "$0")/../Fuzz"
RUNS=${1:-200000}
shift || true
TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
    TARGETS=(FuzzJSONCommand FuzzRESP FuzzWebSocketFrames FuzzHTTPTransport FuzzHTTPBodies FuzzTokens FuzzBalancerHead)
fi
case "$RUNS" in
    '' | *[!0-9]*) echo "fuzz: RUNS must be a number, not '$RUNS'" >&2; exit 2 ;;
esac
mkdir -p fuzz-artifacts
status=0
for target in "${TARGETS[@]}"; do
    seeds=Corpus/${target#Fuzz}
    work=.build-fuzz/corpus/${target#Fuzz}
    if [ ! -d "Sources/$target" ] || [ ! -d "$seeds" ]; then
        echo "fuzz: unknown target $target (no Sources/$target or $seeds)" >&2
        exit 2
    fi
    # Both flags are needed: --sanitize=fuzzer alone links libFuzzer but instruments nothing;
    # -sanitize=fuzzer,address alone leaves Swift's empty main, which exits at once.
    swift build -c release --scratch-path .build-fuzz --product "$target" \
        --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address
    mkdir -p "$work"
    log=$(mktemp)
    set +e
    # Without SWIFT_BACKTRACE=enable=no, Swift's crash handler makes ASan report a bogus error.
    SWIFT_BACKTRACE=enable=no ".build-fuzz/release/$target" -runs="$RUNS" -max_len=4096 -timeout=10 \
        -rss_limit_mb=2048 -seed=1 -print_final_stats=1 -artifact_prefix=fuzz-artifacts/ \
        "$work" "$seeds" >"$log" 2>&1
    rc=$?
    set -e
    grep -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|^==[0-9]+==ERROR|^SUMMARY|Fatal error|Test unit written' "$log" || true
    if [ "$rc" -ne 0 ] || ! grep -q "^Done $RUNS runs" "$log"; then
        echo "fuzz: $target FAILED (exit $rc); log: $PWD/fuzz-artifacts/$target.log"
        cp "$log" "fuzz-artifacts/$target.log"
        status=1
    else
        echo "fuzz: $target ok ($RUNS runs)"
    fi
    rm -f "$log"
done
exit "$status"
