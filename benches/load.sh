#!/usr/bin/env bash
# benches/load.sh: peak RSS of `patchpull serve` under 1,000 concurrent cold pulls of one tag
# with patching on, and of one blob (issue 19, "Load"). Runs tests/load.rs, which also
# asserts one upstream request per digest and one patch job, and prints its figures:
#   load: 1000 cold pulls of a tag (patching on): 1 patch job, 5 upstream requests, peak RSS ... MiB
#   load: 1000 cold pulls of a 8 MiB blob: 1 upstream GET, peak RSS ... MiB
# The throughput and RSS of blob transfers at this concurrency, cold, warm and over
# HTTP/2, are benches/limits.sh's.
#
#   benches/load.sh                        # debug build, 1,000 clients, 8 MiB blob
#   LOAD_PROFILE=release benches/load.sh   # the release build (builds the tests with it)
#   LOAD_CLIENTS=2000 LOAD_BLOB_MIB=32 benches/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export LOAD_CLIENTS="${LOAD_CLIENTS:-1000}" LOAD_BLOB_MIB="${LOAD_BLOB_MIB:-8}"
profile=()
[ "${LOAD_PROFILE:-debug}" = release ] && profile=(--release)
ulimit -n "$(ulimit -Hn)"
cargo test "${profile[@]}" --test load -- --nocapture 2>&1 | tee /dev/stderr | grep '^load: ' \
  || { echo "load.sh: the load test failed (output above)" >&2; exit 1; }
