#!/usr/bin/env bash
# Fuzz the decoders that read network bytes (JSON commands, RESP, WebSocket
# frames through a real session) with libFuzzer + AddressSanitizer, a bounded
# number of runs each. Recipe: ../shared/FUZZING.md.
#
#   ./scripts/fuzz.sh [RUNS]        (default 200000 runs per target)
#
# Exit 0: every target ran all its runs without a crash, leak or timeout.
set -euo pipefail
cd "$(dirname "$0")/../Fuzz"
RUNS=${1:-200000}
status=0
for target in FuzzJSONCommand FuzzRESP FuzzWebSocketFrames; do
    corpus=Corpus/${target#Fuzz}
    swift build -c release --scratch-path .build-fuzz --product "$target" \
        --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address
    mkdir -p fuzz-artifacts "$corpus"
    log=$(mktemp)
    set +e
    SWIFT_BACKTRACE=enable=no ".build-fuzz/release/$target" -runs="$RUNS" -max_len=4096 -timeout=10 \
        -rss_limit_mb=2048 -seed=1 -artifact_prefix=fuzz-artifacts/ "$corpus" >"$log" 2>&1
    rc=$?
    set -e
    tail -n 3 "$log"
    if [ "$rc" -ne 0 ] || ! grep -q "^Done $RUNS runs" "$log"; then
        echo "fuzz: $target FAILED (exit $rc); see fuzz-artifacts/"
        status=1
    else
        echo "fuzz: $target ok ($RUNS runs)"
    fi
    rm -f "$log"
done
exit "$status"
