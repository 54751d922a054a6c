#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after another, and prints per
# target the number of executions and whether it crashed.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Environment:
#   RUSTC_BOOTSTRAP=1   set here: only a stable toolchain is installed and cargo-fuzz passes
#                       nightly-only flags (-Z...) to rustc. Harmless on a nightly toolchain.
#   FUZZ_SANITIZER      cargo fuzz's -s value; default `none` (the library denies unsafe code, and
#                       ASan builds of candle/tokenizers are slow on 2 cores). `address` also works.
# Requires cargo-fuzz (`cargo install cargo-fuzz --locked`).
#
# New corpus units go to fuzz/corpus-work/<target>/ (git-ignored); the committed seeds in
# fuzz/corpus/<target>/ are only read. Crash inputs land in fuzz/artifacts/<target>/.
set -u
SECONDS_PER_TARGET="${1:?usage: fuzz/run.sh SECONDS [TARGET...]}"
shift
FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ_DIR")"
export RUSTC_BOOTSTRAP=1
SANITIZER="${FUZZ_SANITIZER:-none}"

ALL_TARGETS=(safetensors_header pickle zip_container config_json tokenizer_json image_decode wav_decode msgpack hdf5)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

max_len_of() {
    case "$1" in
        safetensors_header) echo 65536 ;;
        pickle) echo 131072 ;;
        zip_container) echo 131072 ;;
        config_json) echo 16384 ;;
        tokenizer_json) echo 16384 ;;
        image_decode) echo 65536 ;;
        wav_decode) echo 65536 ;;
        msgpack) echo 16384 ;;
        hdf5) echo 32768 ;;
        *) echo 65536 ;;
    esac
}

cd "$ROOT" || exit 2
mkdir -p "$FUZZ_DIR/logs"
echo "building fuzz targets (sanitizer: $SANITIZER)..."
if ! cargo fuzz build -s "$SANITIZER" >"$FUZZ_DIR/logs/build.log" 2>&1; then
    echo "build failed; see $FUZZ_DIR/logs/build.log" >&2
    tail -30 "$FUZZ_DIR/logs/build.log" >&2
    exit 2
fi

mkdir -p "$FUZZ_DIR/logs"
SUMMARY=()
ANY_CRASH=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$FUZZ_DIR/corpus-work/$t" "$FUZZ_DIR/corpus/$t"
    log="$FUZZ_DIR/logs/$t.log"
    echo "=== $t: ${SECONDS_PER_TARGET}s (log: $log)"
    cargo fuzz run -s "$SANITIZER" "$t" "$FUZZ_DIR/corpus-work/$t" "$FUZZ_DIR/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len_of "$t")" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')"
    if [ -z "$execs" ]; then execs="$(grep -o '^Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]\+')"; fi
    if [ -z "$execs" ]; then execs="$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')"; fi
    if [ "$rc" -eq 0 ]; then
        status="ok"
    else
        ANY_CRASH=1
        kind="$(grep -o 'ERROR: libFuzzer: [a-z -]*' "$log" | head -1 | sed 's/ERROR: libFuzzer: //')"
        artifact="$(grep -o 'Test unit written to [^ ]*' "$log" | head -1 | sed 's/Test unit written to //')"
        status="CRASH (${kind:-exit $rc}) ${artifact}"
    fi
    line="$(printf '%-20s execs=%-12s %s' "$t" "${execs:-?}" "$status")"
    echo "$line"
    SUMMARY+=("$line")
done

echo
echo "summary (${SECONDS_PER_TARGET}s per target):"
printf '%s\n' "${SUMMARY[@]}"
exit "$ANY_CRASH"
