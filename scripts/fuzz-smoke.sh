#!/usr/bin/env bash
# A short run of every fuzz target (fuzz/README.md), cheap enough for CI: one binary, `all`
# (fuzz/fuzz_targets/all.rs), built once with the dev profile and no sanitizer, then run on
# each target's committed seeds (PATCHPULL_FUZZ_TARGET picks the target) for
# FUZZ_SMOKE_RUNS executions (default 2000) or FUZZ_SMOKE_SECONDS (default 20) each,
# whichever comes first, failing on the first crash, timeout or out-of-memory. The corpora
# are not grown here (new inputs go to a scratch copy), so CI leaves the tree clean.
#
# Needs the nightly toolchain and cargo-fuzz (scripts/test.sh installs both when missing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

runs="${FUZZ_SMOKE_RUNS:-2000}"
seconds="${FUZZ_SMOKE_SECONDS:-20}"

start=$(date +%s)
# The crate forbids unsafe code, so AddressSanitizer finds little that a panic would not;
# the dev profile keeps debug assertions and overflow checks and builds in a fraction of
# the release profile's time (docs/reliability.md, "Cost").
cargo +nightly fuzz build --dev -s none all
built=$(date +%s)
echo "fuzz-smoke: built in $((built - start)) s" >&2
bin=target/x86_64-unknown-linux-gnu/debug/all

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
  [ "$target" = all ] && continue
  mkdir -p "$scratch/$target" "artifacts/$target"
  t0=$(date +%s)
  if ! PATCHPULL_FUZZ_TARGET="$target" "$bin" "$scratch/$target" "corpus/$target" \
    -runs="$runs" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$target/" >"$scratch/$target.log" 2>&1; then
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz-smoke: $target FAILED; the input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  echo "fuzz-smoke: $target ok ($(($(date +%s) - t0)) s, $(grep -o 'Done [0-9]* runs' "$scratch/$target.log" | tail -1))" >&2
done
echo "fuzz-smoke: all targets ok in $(($(date +%s) - start)) s" >&2
