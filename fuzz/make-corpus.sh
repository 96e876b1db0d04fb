#!/usr/bin/env bash
# Regenerates the seed corpora under fuzz/corpus/ from the repo's fixtures and a few
# hand-written inputs. Needs python3, dpkg-deb, xz, gzip, zstd, gpg. The output is
# committed; run this only to change the seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
C=fuzz/corpus
rm -rf "$C"
mkdir -p "$C"
python3 fuzz/make_corpus.py
