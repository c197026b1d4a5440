#!/usr/bin/env bash
# Fuzzes what the server reads from devices and from its own disk: every target in fuzz/ runs
# for SECONDS (default 300), one after another (never in parallel: the machine is shared), with
# libFuzzer through cargo-fuzz on the nightly toolchain (optimised, with AddressSanitizer, debug
# assertions and overflow checks on). Prints a table of
# executions, exec/s, crashes and final corpus size per target; a crash's input is kept in
# fuzz/artifacts/TARGET/ and the script exits non-zero. Not part of CI (the property tests are).
# Usage: bench/fuzz.sh [SECONDS] [TARGET...]
# Needs: `rustup toolchain install nightly`, `cargo install cargo-fuzz`.
# The working corpus grows in fuzz/corpus/TARGET (not checked in); it starts from the seeds in
# fuzz/seeds/TARGET (python3 fuzz/seed.py writes them). Build output goes to
# $CARGO_TARGET_DIR (default /work/target-fuzz): sanitizer builds cannot share the stable one.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-fuzz}
logs=$(mktemp -d)
# Inputs libFuzzer kept because they crashed, leaked, hung or ran out of memory.
artifacts() {
  find "fuzz/artifacts/$1" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
    -o -name 'oom-*' \) | wc -l
}
trap 'rm -rf "$logs"' EXIT

echo "machine: $(nproc) cores, $(uname -sr); $(cargo +nightly --version); $(date -u +%FT%TZ)"
cargo +nightly fuzz build >&2
rows=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  before=$(artifacts "$t")
  echo "fuzzing $t for ${seconds}s ..." >&2
  set +e
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$logs/$t.log" 2>&1
  rc=$?
  set -e
  crashes=$(( $(artifacts "$t") - before ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$logs/$t.log" | tail -1)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  execs=${execs:-0}
  took=${took:-$seconds}
  rate=$(( took > 0 ? execs / took : 0 ))
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    [ "$crashes" -gt 0 ] || crashes="? (exit $rc)"
    grep -m5 -E 'panicked|ERROR|SUMMARY' "$logs/$t.log" >&2 || true
    echo "  input kept in fuzz/artifacts/$t/; log: fuzz/artifacts/$t/last.log" >&2
    cp "$logs/$t.log" "fuzz/artifacts/$t/last.log"
  fi
  rows+=("$(printf '| %-16s | %7s | %12s | %8s | %7s | %6s |' "$t" "$took" "$execs" "$rate" "$crashes" "$corpus")")
done

printf '| %-16s | %7s | %12s | %8s | %7s | %6s |\n' target seconds executions exec/s crashes corpus
printf '%s\n' '|------------------|--------:|-------------:|---------:|--------:|-------:|'
printf '%s\n' "${rows[@]}"
exit "$failed"
