#!/usr/bin/env bash
# A short run of every fuzz target (fuzz/README.md): builds them once, then runs each from
# its committed seed corpus for FUZZ_SMOKE_RUNS executions (default 2000) beyond the seeds,
# failing on the first crash, timeout or out-of-memory. The corpora are not grown here (new
# inputs go to a scratch copy), so CI leaves the tree clean.
#
# Needs the nightly toolchain and cargo-fuzz (scripts/test.sh installs cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

runs="${FUZZ_SMOKE_RUNS:-2000}"
# The crate forbids unsafe code, so AddressSanitizer finds little that a panic would not,
# and costs a third of the build and half the speed; debug assertions stay on.
sanitizer="${FUZZ_SANITIZER:-none}"

start=$(date +%s)
cargo +nightly fuzz build -s "$sanitizer"
built=$(date +%s)
echo "fuzz-smoke: built in $((built - start)) s" >&2

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$target"
  t0=$(date +%s)
  if ! cargo +nightly fuzz run -s "$sanitizer" "$target" "$scratch/$target" "corpus/$target" -- \
    -runs="$runs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$target/" >"$scratch/$target.log" 2>&1; then
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz-smoke: $target FAILED; the input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  echo "fuzz-smoke: $target ok ($(($(date +%s) - t0)) s, $(grep -o 'Done [0-9]* runs' "$scratch/$target.log" | tail -1))" >&2
done
echo "fuzz-smoke: all targets ok in $(($(date +%s) - start)) s" >&2
