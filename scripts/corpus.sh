#!/usr/bin/env bash
# The corpus of issue 14 (tests/corpus.rs): real Debian and Ubuntu images, each patched on
# pull through `patchpull serve` and compared with real `apt-get upgrade` from the security
# suite. Runs the same test binary `cargo test` builds (no other profile), then prints the
# matrix (docs/patching.md) from the rows the tests wrote.
#
#   scripts/corpus.sh            every image (CORPUS=full)
#   scripts/corpus.sh rest       the images `cargo test` does not run (scripts/test.sh)
#   scripts/corpus.sh full bookworm_python --nocapture   one image, with its output
#   (the arguments after the first go to the test binary: filters and its options)
#
# Needs root, the network to deb.debian.org and archive.ubuntu.com, and the tools
# scripts/test.sh installs. CORPUS_THREADS images run at once (default 3: on 2 cores most
# of an image's time is downloads and child processes); CORPUS_KEEP=1 keeps the roots.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-full}"
if [ "$#" -gt 0 ]; then shift; fi
case "$mode" in
  full | rest) ;;
  *) echo "corpus.sh: the first argument is full or rest, not $mode" >&2; exit 2 ;;
esac

export CORPUS="$mode" DEBIAN_ARCHIVE_TESTS=1 REQUIRE_TEST_TOOLS=1
results="${CARGO_TARGET_DIR:-target}/tmp/corpus-results"
started=$(date +%s)
status=0
cargo test --test corpus -- --test-threads="${CORPUS_THREADS:-3}" "$@" || status=$?
echo "corpus.sh: CORPUS=$mode took $(( $(date +%s) - started )) s" >&2

if [ -d "$results" ] && ls "$results"/*.json >/dev/null 2>&1; then
  {
    echo "| image | packages fixed (patchpull / apt) | tree equal | dpkg --audit | dpkg --verify | CA bundle | programs | digest stable | seconds |"
    echo "|---|---|---|---|---|---|---|---|---|"
    jq -rs 'sort_by(.order)[] | [
        .image,
        "\(.fixed_by_patchpull // "-") / \(.fixed_by_apt // "-")",
        (if .tree_differences == null then "-" elif .tree_differences == 0 then "yes"
          else "no: \(.tree_differences) paths" end),
        (.audit // "-"),
        (.verify // "-"),
        (.ca_bundle // "-"),
        (.programs // "-"),
        (if .digest_stable == null then "-" elif .digest_stable then "yes" else "no" end),
        (.seconds.total | tostring)
      ] | "| " + join(" | ") + " |"' "$results"/*.json
  } > "$results/matrix.md"
  cat "$results/matrix.md"
  echo "corpus.sh: reports of every difference in $results/<image>.txt" >&2
fi
exit "$status"
