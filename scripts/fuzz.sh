#!/bin/sh
# Runs each libFuzzer target for N seconds on its corpus (tests/fuzz/corpus/NAME) and dictionary
# (tests/fuzz/NAME.dict); new inputs go to a scratch copy, so the committed corpus only changes on purpose.
set -eu
seconds=$1
shift
status=0
for bin in "$@"; do
    name=$(basename "$bin")
    corpus="tests/fuzz/corpus/$name"
    work=$(mktemp -d)
    [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null || true
    dict=""
    [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
    log="build/fuzz/$name.log"
    # Crash inputs go to build/fuzz/, never into the source tree.
    if "$bin" $dict -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix=build/fuzz/ "$work" >"$log" 2>&1; then
        execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || echo "?")
        echo "fuzz $name: ${seconds}s, $execs executions, 0 crashes"
    else
        echo "fuzz $name: FAILED (see $log)"
        tail -30 "$log"
        status=1
    fi
    rm -rf "$work"
done
exit $status
