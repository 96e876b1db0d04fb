#!/usr/bin/env bash
# Long fuzzing runs (fuzz/README.md): each target (or the ones named) for FUZZ_SECONDS
# (default 600) on FUZZ_JOBS processes (default 1), growing fuzz/corpus-work/<target>
# (untracked) from the committed seeds. Crashes land in fuzz/artifacts/<target>/; the
# execution count of each run is printed at the end.
#
#   benches/fuzz.sh                     # every target, 10 minutes each
#   FUZZ_SECONDS=3600 benches/fuzz.sh deb layer
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-600}"
jobs="${FUZZ_JOBS:-1}"
sanitizer="${FUZZ_SANITIZER:-none}"
cargo +nightly fuzz build -s "$sanitizer"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

mkdir -p logs
for target in "${targets[@]}"; do
  mkdir -p "corpus-work/$target"
  log="logs/$target.log"
  status=ok
  cargo +nightly fuzz run -s "$sanitizer" "$target" "corpus-work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -jobs="$jobs" -workers="$jobs" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="artifacts/$target/" -print_final_stats=1 \
    >"$log" 2>&1 || status=CRASH
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s+=$2} END {print s+0}')
  echo "$target: $status, $execs executions in $seconds s (log fuzz/$log)"
done
