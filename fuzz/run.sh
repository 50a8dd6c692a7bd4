#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, from a seed corpus made from
# fixtures/ and ../shared (see docs/fuzzing.md). Exits 1 when a target finds a failure; the
# failing input is left in fuzz/artifacts/TARGET/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      # default: 60 s per target, all targets
#
# The toolchain is the project's stable one: without a sanitizer (`-s none`) cargo fuzz passes
# only flags stable rustc accepts (sanitizer-coverage passes, `--cfg fuzzing`); the code under
# test is safe Rust but for the walker's `from_utf8_unchecked`, whose character boundaries the
# debug assertions (`-a`) check.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-60}
shift || true
if ! command -v cargo-fuzz > /dev/null; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
work=${FUZZ_WORK:-target/work}
rm -rf "$work/seeds"
python3 seed.py "$work/seeds"

# One build for all targets; -a keeps debug assertions (and the walker's UTF-8 boundary
# checks) on, as `cargo fuzz` does by default in its dev-like release profile.
cargo fuzz build -s none -a

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "artifacts/$t" "$work/seeds/$t"
    echo "== $t: $secs s"
    if cargo fuzz run -s none -a "$t" "$work/corpus/$t" "$work/seeds/$t" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" > "$work/$t.log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$t")
    fi
    execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' | tail -n1 || true)
    corpus=$(find "$work/corpus/$t" -type f | wc -l)
    echo "   $status: ${execs:-?} executions, corpus $corpus inputs (log: fuzz/$work/$t.log)"
    if [ "$status" = FAILED ]; then
        grep -a -m3 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$work/$t.log" | sed 's/^/   /' || true
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: failures in ${failed[*]}; inputs in fuzz/artifacts/" >&2
    exit 1
fi
