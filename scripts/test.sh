#!/usr/bin/env bash
# Everything CI checks, in order, failing fast: install the real components the integration
# tests drive (only what is missing, only as root), then rustfmt, clippy, and the whole test
# suite with REQUIRE_TEST_TOOLS=1 so no test may skip for want of a tool.
#
# Extra arguments go to the test binaries, e.g. `scripts/test.sh faults` or `-- --nocapture`.
set -euo pipefail
cd "$(dirname "$0")/.."

# binary -> Debian package that provides it
declare -A PACKAGE_OF=(
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [curl]=curl
  [wrk]=wrk
  [jq]=jq
  [htpasswd]=apache2-utils
  [gpg]=gnupg
  [apt-ftparchive]=apt-utils
  [xz]=xz-utils
  [zstd]=zstd
  [dpkg-deb]=dpkg
  [rpm]=rpm
  [debootstrap]=debootstrap
  [umoci]=umoci
  [faketime]=faketime
  [openssl]=openssl
  [update-ca-certificates]=ca-certificates
  [dockerd]=docker.io
  [mount]=mount
  [chromium]=chromium
  [redis-server]=redis-server
)

missing=()
for bin in "${!PACKAGE_OF[@]}"; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("${PACKAGE_OF[$bin]}")
  fi
done
# The runnable test image copies the host's busybox into a rootfs: it must be static.
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
  missing+=(busybox-static)
fi

# The status page's screenshot needs a font (Chromium draws boxes without one).
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  missing+=(fonts-dejavu-core)
fi

# The deploy manifests and the Helm chart are checked with kubernetes-validate, in a venv
# (scripts/validate-deploy.sh; helm comes from PyPI into it too: scripts/install-helm.sh).
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

# The built-in scanner verifies Debian's signed indexes with the archive keyring.
if [ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
  missing+=(debian-archive-keyring)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing packages: ${missing[*]}; install them or run as root" >&2
    exit 1
  fi
  echo "test.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

echo "test.sh: cargo fmt --check" >&2
cargo fmt --all -- --check

echo "test.sh: cargo clippy" >&2
cargo clippy --all-targets -- -D warnings

echo "test.sh: deploy manifests" >&2
scripts/validate-deploy.sh

echo "test.sh: cargo test" >&2
# Each test has its own ports, temp dirs, registry and containerd, so tests run in parallel;
# a few more threads than cores, since most of the time is spent waiting on child processes.
export REQUIRE_TEST_TOOLS=1
# Debian's archive is reachable from CI: scan against the real bookworm-security suite.
export DEBIAN_ARCHIVE_TESTS="${DEBIAN_ARCHIVE_TESTS:-1}"
cargo test --lib --bins --tests -- --test-threads="${RUST_TEST_THREADS:-4}" "$@"

# A short run of every fuzz target (fuzz/README.md), on the nightly toolchain: one binary in
# the dev profile, about 3.5 minutes from nothing on 2 cores (docs/reliability.md, "Cost").
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "test.sh: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "test.sh: installing the nightly toolchain" >&2
  rustup toolchain install nightly --profile minimal
fi
echo "test.sh: fuzz smoke run" >&2
scripts/fuzz-smoke.sh

# The whole corpus (scripts/corpus.sh full: all 16 images match apt-get upgrade since
# 2026-12-07, docs/patching.md "The corpus") is not run here: it takes 15 to 20 minutes on
# 2 cores, which would put CI past 30. `cargo test` runs its fast images (bookworm-curl and
# its distroless variant).
