#!/usr/bin/env bash
# benches/patch.sh: patchpull's native patch against the BuildKit route copa takes, on a real
# Debian image, in one run.
#
# One run debootstraps bookworm minbase, makes it look like the official debian:bookworm image
# (deb822 sources with bookworm, bookworm-updates and bookworm-security; the docker-* apt and
# dpkg settings), packs it into a one-layer OCI image and pushes it to a loopback distribution
# registry. Then, in rounds (one run of every scenario per round, so that load from anything
# else on the machine spreads over all of them alike):
#   - patchpull: `patchpull patch --insecure REG/debian:bookworm --push`, cold (empty store and
#     scan cache: pulls the image, downloads indexes and .debs) and warm (same store and cache:
#     packages already downloaded);
#   - Debian's dockerd with its built-in BuildKit: `docker build` of FROM REG/debian:bookworm +
#     RUN apt-get update && apt-get install -y --only-upgrade <the planned packages>, cold
#     (--no-cache, apt downloads everything), cold with the lists removed in the same RUN, and
#     warm (cache mounts for apt's lists and archives, primed by one earlier build; the RUN made
#     new by a build argument, since BuildKit deletes a --no-cache build's cache mounts).
# BuildKit is warmed up and the cache mounts primed before the first round, untimed.
# It checks that patchpull plans the set `apt-get upgrade` installs, and prints wall times
# (median), the new layer's size (as pushed, tar, gzip -6 of the tar) and the ratios.
#
# Everything it starts lives under one temp directory and is stopped by PID on exit.
# Usage: benches/patch.sh            (see benches/README.md for the knobs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# --- images: minbase and the richer image, side by side in one run -----------------------------
# BENCH_IMAGES names the images (default both); each is measured by this same script in turn,
# with one release build, and the results are printed together at the end.
#   minbase: debootstrap --variant=minbase (6 security fixes on 2026-11-27)
#   rich:    + ca-certificates, openssl, curl, python3-minimal, sqlite3 (22 fixes on 2026-12-07,
#            ca-certificates' trigger and python3's byte-compilation among their scripts)
RICH_INCLUDE="ca-certificates,openssl,curl,python3-minimal,sqlite3"
if [[ -z "${BENCH_ONE_IMAGE:-}" ]]; then
  images="${BENCH_IMAGES:-minbase rich}"
  if [[ -z "${BENCH_PATCHPULL_BIN:-}" && " ${BENCH_SCENARIOS:-patchpull} " == *" patchpull "* ]]; then
    (cd "$ROOT" && timeout 1800 cargo build --release --bin patchpull >&2) || { echo "release build failed" >&2; exit 1; }
    export BENCH_PATCHPULL_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/patchpull"
  fi
  summary=""
  for image in $images; do
    case "$image" in
      minbase) include="${BENCH_INCLUDE:-}" ;;
      rich) include="$RICH_INCLUDE${BENCH_INCLUDE:+,$BENCH_INCLUDE}" ;;
      *) echo "BENCH_IMAGES: unknown image $image (minbase, rich)" >&2; exit 1 ;;
    esac
    out="$(BENCH_ONE_IMAGE="$image" BENCH_INCLUDE="$include" "$0" "$@")" || exit 1
    summary+=$'\n'"=== image: $image"$'\n'"$out"$'\n'
  done
  printf '%s\n' "$summary"
  exit 0
fi

# --- knobs -------------------------------------------------------------------------------
REPS="${BENCH_REPS:-3}"                        # timed runs per scenario; the median is reported
SUITE="${BENCH_SUITE:-bookworm}"
ARCHIVE="${BENCH_ARCHIVE:-http://deb.debian.org/debian}"
SECURITY="${BENCH_SECURITY:-http://deb.debian.org/debian-security}"
INCLUDE="${BENCH_INCLUDE:-}"                   # extra packages for debootstrap --include=a,b
SCENARIOS="${BENCH_SCENARIOS:-patchpull docker floor}"
STEP_TIMEOUT="${BENCH_STEP_TIMEOUT:-900}"      # seconds, per patch / build / debootstrap
START_TIMEOUT="${BENCH_START_TIMEOUT:-60}"     # seconds, per daemon start
WORK_PARENT="${BENCH_TMPDIR:-${TMPDIR:-/tmp}}"
KEEP="${BENCH_KEEP:-0}"                        # 1: keep the temp dir (logs, layers, stores)
RESULTS_FILE="${BENCH_RESULTS:-}"              # also write key=value results here
PATCHPULL_BIN="${BENCH_PATCHPULL_BIN:-}"       # skip the build and use this binary
# (not PATCHPULL_*: patchpull reads every PATCHPULL_* variable as configuration)
DOCKER=/usr/bin/docker                         # Debian's 20.10 CLI, not whatever is first in PATH
DOCKERD=/usr/sbin/dockerd
ACCEPT="application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "run as root (debootstrap, dockerd)"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive number"

# --- tools -----------------------------------------------------------------------------------
need=()
for pair in docker-registry:docker-registry skopeo:skopeo debootstrap:debootstrap "$DOCKERD":docker.io \
  "$DOCKER":docker.io curl:curl jq:jq gzip:gzip python3:python3 /usr/bin/time:time; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  timeout 600 apt-get update -qq >&2 || die "apt-get update failed"
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
fi

# build first, so that a failing build wastes nothing and its load is over before measuring
if [[ " $SCENARIOS " == *" patchpull "* && -z "$PATCHPULL_BIN" ]]; then
  log "cargo build --release (bounded to 30 min)"
  (cd "$ROOT" && timeout 1800 cargo build --release --bin patchpull >&2) || die "release build failed"
  PATCHPULL_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/patchpull"
fi
[[ " $SCENARIOS " != *" patchpull "* || -x "$PATCHPULL_BIN" ]] || die "no patchpull binary at $PATCHPULL_BIN"

# --- processes and cleanup ------------------------------------------------------------------
WORK="$(mktemp -d "$WORK_PARENT/patchpull-bench-patch.XXXXXX")"
chmod 0711 "$WORK"   # patchpull's script sandbox runs as an unprivileged user below it
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
declare -a PIDS=()
DOCKERD_PID=""

stop_pid() { # stop_pid PID [SECONDS]: TERM, then KILL after SECONDS (10); only our own children
  local pid="$1" grace="${2:-10}"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}

descendants() { # descendants PID: every process below PID, deepest last
  local pid="$1" child
  cat /proc/"$pid"/task/*/children 2>/dev/null | tr ' ' '\n' | while read -r child; do
    [[ -n "$child" ]] || continue
    echo "$child"
    descendants "$child"
  done
}

stop_dockerd() {
  [[ -n "$DOCKERD_PID" ]] || return 0
  local below pid
  below="$(descendants "$DOCKERD_PID" | tr '\n' ' ')"
  stop_pid "$DOCKERD_PID" 60
  # its supervised containerd and shims normally go with it; anything left was ours too
  for pid in $below; do stop_pid "$pid" 5; done
  DOCKERD_PID=""
}

cleanup() {
  local rc=$? pid
  stop_dockerd
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  # dockerd's overlay and netns mounts, deepest first, only under our temp dir
  awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r \
    | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
  if [[ "$KEEP" == 1 ]]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # wait_http URL: until it answers 200, bounded by START_TIMEOUT
  local url="$1" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" == 200 ]]; then return 0; fi
    sleep 0.1
  done
  die "$url did not answer 200 within ${START_TIMEOUT}s"
}

median() { # median v1 v2 ...: middle value (lower middle for an even count)
  printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

now() { printf '%s' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v z="$2" 'BEGIN { printf "%.2f", z - a }'; }

# --- the registry ------------------------------------------------------------------------------
REG_PORT="$(free_port)"
REG="127.0.0.1:$REG_PORT"
mkdir -p "$WORK/registry"
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry/store
  delete:
    enabled: true
http:
  addr: $REG
EOF
docker-registry serve "$WORK/registry.yml" >"$WORK/registry/log" 2>&1 &
PIDS+=($!)
wait_http "http://$REG/v2/"
log "registry on $REG"

# --- the Debian image ----------------------------------------------------------------------------
ROOTFS="$WORK/rootfs"
log "debootstrap --variant=minbase $SUITE${INCLUDE:+ --include=$INCLUDE} (bounded to ${STEP_TIMEOUT}s)"
timeout "$STEP_TIMEOUT" debootstrap --variant=minbase ${INCLUDE:+--include="$INCLUDE"} "$SUITE" "$ROOTFS" "$ARCHIVE" \
  >"$WORK/debootstrap.log" 2>&1 || die "debootstrap failed: $(tail -n 5 "$WORK/debootstrap.log")"

# What the official image has (debuerreotype): deb822 sources for the three suites, and the
# slimming settings. docker-clean is why a plain `apt-get install` leaves no .debs in a layer.
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $ARCHIVE
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$ROOTFS/etc/apt/apt.conf.d/docker-autoremove-suggests"
echo 'Acquire::GzipIndexes "true";' >"$ROOTFS/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Acquire::Languages "none";' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"
echo 'force-unsafe-io' >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

log "packing the root into a one-layer OCI image"
IMG="$WORK/image"
mkdir -p "$IMG/oci/blobs/sha256"
# top-level names, not ./, like docker's own layers; /dev, /proc, /sys empty
(cd "$ROOTFS" && mapfile -t top < <(ls -A) \
  && tar --sort=name --numeric-owner --format=gnu --exclude='dev/*' --exclude='proc/*' --exclude='sys/*' \
    -cf "$IMG/layer.tar" "${top[@]}")
gzip -6 -n -c "$IMG/layer.tar" >"$IMG/layer.tar.gz"
DIFF_ID="sha256:$(sha256_of "$IMG/layer.tar")"
LAYER_HEX="$(sha256_of "$IMG/layer.tar.gz")"
cp "$IMG/layer.tar.gz" "$IMG/oci/blobs/sha256/$LAYER_HEX"
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["bash"]},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created_by":"debootstrap --variant=minbase %s"}]}' \
  "$DIFF_ID" "$SUITE" >"$IMG/config.json"
CONFIG_HEX="$(sha256_of "$IMG/config.json")"
cp "$IMG/config.json" "$IMG/oci/blobs/sha256/$CONFIG_HEX"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$CONFIG_HEX" "$(stat -c %s "$IMG/config.json")" "$LAYER_HEX" "$(stat -c %s "$IMG/layer.tar.gz")" >"$IMG/manifest.json"
MANIFEST_HEX="$(sha256_of "$IMG/manifest.json")"
cp "$IMG/manifest.json" "$IMG/oci/blobs/sha256/$MANIFEST_HEX"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$MANIFEST_HEX" "$(stat -c %s "$IMG/manifest.json")" "$SUITE" >"$IMG/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$IMG/oci/oci-layout"
BASE="$REG/debian:$SUITE"
timeout 300 skopeo copy -q --dest-tls-verify=false "oci:$IMG/oci:$SUITE" "docker://$BASE" >&2 || die "skopeo copy failed"
BASE_LAYER_BYTES="$(stat -c %s "$IMG/layer.tar.gz")"
BASE_TAR_BYTES="$(stat -c %s "$IMG/layer.tar")"
log "pushed $BASE = sha256:$MANIFEST_HEX (layer $BASE_LAYER_BYTES bytes gzip, $BASE_TAR_BYTES tar)"
rm -f "$IMG/layer.tar"
# the floor scenario runs dpkg in a plain chroot of this same root
if [[ " $SCENARIOS " == *" floor "* ]]; then mkdir -p "$WORK/floor" && mv "$ROOTFS" "$WORK/floor/base"; else rm -rf "$ROOTFS"; fi

declare -A R=()   # results: R[scenario.metric]=value

layer_sizes() { # layer_sizes KEY TARFILE: tar bytes and gzip -6 bytes of an uncompressed layer
  R[$1.tar]="$(stat -c %s "$2")"
  R[$1.gz6]="$(gzip -6 -n -c "$2" | wc -c)"
}

manifest_last_layer() { # manifest_last_layer REPO TAG: "digest size" of the last layer as pushed
  curl -sS --max-time 30 -H "Accept: $ACCEPT" "http://$REG/v2/$1/manifests/$2" \
    | jq -r '.layers[-1] | "\(.digest) \(.size)"'
}

# --- patchpull ----------------------------------------------------------------------------------
PLAN_FILE="$WORK/plan.txt"   # "name version" lines: what patchpull plans
pp_run() { # pp_run SCENARIO REP [ARGS...]: one timed `patchpull patch`, ARGS appended
  local scenario="$1" rep="$2" out="$WORK/pp/$1-$2" t0 t1 line
  shift 2
  mkdir -p "$out"
  t0="$(now)"
  # the config file alone decides: drop any PATCHPULL_* variable from the caller's env
  # shellcheck disable=SC2046
  if ! { env $(compgen -e | grep '^PATCHPULL_' | sed 's/^/-u /') \
    /usr/bin/time -f '%e %U %S %M' -o "$out/time" \
    timeout "$STEP_TIMEOUT" "$PATCHPULL_BIN" --config "$WORK/pp/patchpull.toml" \
    patch --insecure "$BASE" --push "$@" 2>&1 1>"$out/stdout" \
    | while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$out/stderr"; }; then
    die "patchpull $scenario run $rep failed: $(tail -n 20 "$out/stderr")"
  fi
  t1="$(now)"
  R[$scenario.t$rep]="$(elapsed "$t0" "$t1")"
  # progress lines relative to the start, for a first look at where the time goes
  awk -v t0="$t0" '{ t = sprintf("%7.2fs", $1 - t0); sub(/^[^ ]+ /, ""); sub(/^[0-9-]+T[0-9:.]+Z +/, ""); print t, $0 }' \
    "$out/stderr" >"$out/progress"
  read -r _ user sys rss <"$out/time"
  log "patchpull $scenario run $rep: ${R[$scenario.t$rep]} s (CPU user $user s, sys $sys s, max RSS $((rss / 1024)) MiB)"
  sed 's/^/    /' "$out/progress" >&2
  grep -o 'pushed .*' "$out/stdout" | sed 's/^/    /' >&2 || true
}

patchpull_setup() {
  mkdir -p "$WORK/pp"
  # info: the engine's "patch stage done" lines, timestamped, show where the time goes
  cat >"$WORK/pp/patchpull.toml" <<EOT
[storage]
path = "$WORK/pp/store"

[log]
level = "info"

[scan]
cache_dir = "$WORK/pp/scan-cache"
# the release and -updates too, not only -security: the set apt upgrades
point_releases = true
EOT
}

patchpull_finish() { # the layer as pushed, and one digest for every run
  local digest layer s
  digest="$(sed -n 's/^pushed .*@//p' "$WORK"/pp/patchpull-*/stdout | sort -u)"
  if [[ "$(wc -l <<<"$digest")" == 1 ]]; then R[patchpull.same_digest]=yes; else
    R[patchpull.same_digest]=no
    log "WARN: runs pushed different digests: $(tr '\n' ' ' <<<"$digest")"
  fi
  R[patchpull.digest]="$(head -n1 <<<"$digest")"
  read -r layer 'R[patchpull.pushed]' <<<"$(manifest_last_layer debian "$SUITE-patched")"
  curl -sS --max-time 60 -o "$WORK/pp/layer.gz" "http://$REG/v2/debian/blobs/$layer"
  gzip -dc "$WORK/pp/layer.gz" >"$WORK/pp/layer.tar"
  layer_sizes patchpull "$WORK/pp/layer.tar"
  R[patchpull.entries]="$(tar -tf "$WORK/pp/layer.tar" | wc -l)"
  for s in patchpull-cold patchpull-warm; do
    R[$s.pushed]="${R[patchpull.pushed]}"
    R[$s.tar]="${R[patchpull.tar]}"
    R[$s.gz6]="${R[patchpull.gz6]}"
  done
  log "patchpull layer: $layer, ${R[patchpull.pushed]} bytes as pushed, ${R[patchpull.tar]} tar," \
    "${R[patchpull.gz6]} gzip -6, ${R[patchpull.entries]} entries; one digest for all runs: ${R[patchpull.same_digest]}"
}

# --- Docker + BuildKit -------------------------------------------------------------------------
DSOCK="$WORK/docker/sock"
dk() { "$DOCKER" -H "unix://$DSOCK" "$@"; }

start_dockerd() {
  mkdir -p "$WORK/docker/data" "$WORK/docker/exec" "$WORK/docker/ctx"
  if [[ -S /run/containerd/containerd.sock ]]; then
    log "WARN: a containerd serves /run/containerd/containerd.sock; dockerd 20.10 will use it instead of its own"
  fi
  # as /work/shared/reference/environment.md says, plus a private pidfile
  "$DOCKERD" --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    --data-root "$WORK/docker/data" --exec-root "$WORK/docker/exec" --pidfile "$WORK/docker/pid" \
    -H "unix://$DSOCK" --insecure-registry "$REG" >"$WORK/docker/log" 2>&1 &
  DOCKERD_PID=$!
  local deadline=$((SECONDS + START_TIMEOUT))
  until dk version >/dev/null 2>&1; do
    kill -0 "$DOCKERD_PID" 2>/dev/null || die "dockerd exited: $(tail -n 20 "$WORK/docker/log")"
    ((SECONDS < deadline)) || die "dockerd did not answer within ${START_TIMEOUT}s"
    sleep 0.2
  done
  log "dockerd $(dk version --format '{{.Server.Version}}') on $DSOCK"
}

build() { # build KEY TAG DOCKERFILE: one timed `docker build`, its RUN never from the cache
  local key="$1" tag="$2" file="$3" t0 t1 fresh=(--no-cache)
  # Dockerfiles with cache mounts get a new BENCH_RUN instead: BuildKit deletes the cache
  # mounts of a --no-cache build, which would leave nothing warm for the next one.
  grep -q '^ARG BENCH_RUN' "$file" && fresh=(--build-arg "BENCH_RUN=$key-$RANDOM$RANDOM")
  t0="$(now)"
  DOCKER_BUILDKIT=1 timeout "$STEP_TIMEOUT" "$DOCKER" -H "unix://$DSOCK" build --network host "${fresh[@]}" \
    --progress=plain -t "$tag" -f "$file" "$WORK/docker/ctx" >"$WORK/docker/$key.log" 2>&1 \
    || die "docker build $key failed: $(tail -n 20 "$WORK/docker/$key.log")"
  t1="$(now)"
  printf '%s' "$(elapsed "$t0" "$t1")"
}

docker_layer() { # docker_layer SCENARIO TAG: sizes of the image's last layer
  local scenario="$1" tag="$2" saved="$WORK/docker/$1.tar" last
  dk save -o "$saved" "$tag"
  last="$(tar -xOf "$saved" manifest.json | jq -r '.[0].Layers[-1]')"
  tar -xOf "$saved" "$last" >"$WORK/docker/$scenario-layer.tar"
  layer_sizes "$scenario" "$WORK/docker/$scenario-layer.tar"
  rm -f "$saved"
  # as docker itself ships it: push, read the manifest
  dk tag "$tag" "$REG/bench/$scenario:latest"
  timeout 300 "$DOCKER" -H "unix://$DSOCK" push -q "$REG/bench/$scenario:latest" >/dev/null \
    || die "docker push $scenario failed"
  read -r _ "R[$scenario.pushed]" <<<"$(manifest_last_layer "bench/$scenario" latest)"
  log "$scenario layer: ${R[$scenario.pushed]} bytes as pushed, ${R[$scenario.tar]} tar, ${R[$scenario.gz6]} gzip -6"
}

docker_setup() { # dockerd, the image, and apt's own view of it
  start_dockerd
  timeout 300 "$DOCKER" -H "unix://$DSOCK" pull -q "$BASE" >/dev/null || die "docker pull $BASE failed"
  # what `apt-get upgrade` installs, with versions
  timeout "$STEP_TIMEOUT" "$DOCKER" -H "unix://$DSOCK" run --rm --network host "$BASE" \
    sh -c 'apt-get update -qq >/dev/null && apt-get -s upgrade' >"$WORK/apt-upgrade.txt" 2>&1 \
    || die "apt-get -s upgrade in the image failed: $(tail -n 5 "$WORK/apt-upgrade.txt")"
  awk '$1 == "Inst" { v = $4; sub(/^\(/, "", v); print $2, v }' "$WORK/apt-upgrade.txt" | sort >"$WORK/apt-plan.txt"
  log "apt-get upgrade would install: $(cut -d' ' -f1 "$WORK/apt-plan.txt" | tr '\n' ' ')"
}

decide_packages() { # PKGS: patchpull's plan (from its first run), else apt's set; compared
  if [[ -s "$PLAN_FILE" && -f "$WORK/apt-plan.txt" ]]; then
    log "patchpull plans | apt-get upgrade installs:"
    join -a1 -a2 -e '-' -o '0,1.2,2.2' "$PLAN_FILE" "$WORK/apt-plan.txt" \
      | awk '{ printf "    %-24s %-32s %-32s %s\n", $1, $2, $3, ($2 == $3 ? "" : "DIFFERS") }' >&2
    if cmp -s "$PLAN_FILE" "$WORK/apt-plan.txt"; then
      R[plan.same]=yes
    else
      R[plan.same]=no
      log "WARN: patchpull's plan and apt's upgrade set differ; the builds install patchpull's set"
    fi
  fi
  if [[ -s "$PLAN_FILE" ]]; then PKGS="$(cut -d' ' -f1 "$PLAN_FILE" | tr '\n' ' ')"
  else PKGS="$(cut -d' ' -f1 "$WORK/apt-plan.txt" | tr '\n' ' ')"; fi
  PKGS="${PKGS% }"
  [[ -n "$PKGS" ]] || die "nothing to upgrade in $BASE"
  R[plan.packages]="$PKGS"
  log "packages: $PKGS"
}

docker_prepare() { # the Dockerfiles; BuildKit warmed up and the cache mounts primed, untimed
  local run="apt-get update && apt-get install -y --only-upgrade $PKGS" d="$WORK/docker"
  printf 'FROM %s\nRUN true\n' "$BASE" >"$d/Dockerfile.warmup"
  printf 'FROM %s\nARG DEBIAN_FRONTEND=noninteractive\nRUN %s\n' "$BASE" "$run" >"$d/Dockerfile.cold"
  printf 'FROM %s\nARG DEBIAN_FRONTEND=noninteractive\nRUN %s && rm -rf /var/lib/apt/lists/*\n' "$BASE" "$run" \
    >"$d/Dockerfile.lean"
  # /var/cache/apt rather than only its archives/: apt writes pkgcache.bin there once docker-clean is gone
  printf 'FROM %s\nARG DEBIAN_FRONTEND=noninteractive\nARG BENCH_RUN\nRUN --mount=type=cache,target=/var/cache/apt,sharing=locked --mount=type=cache,target=/var/lib/apt/lists,sharing=locked rm -f /etc/apt/apt.conf.d/docker-clean && %s\n' \
    "$BASE" "$run" >"$d/Dockerfile.warm"
  log "BuildKit warm-up (untimed): FROM + RUN true"
  build warmup bench/warmup "$d/Dockerfile.warmup" >/dev/null
  log "priming the cache mounts (untimed)"
  build warm-prime bench/docker-warm:prime "$d/Dockerfile.warm" >/dev/null
}

docker_runs() { # docker_runs REP
  local scenario
  for scenario in cold lean warm; do
    R[docker-$scenario.t$1]="$(build "$scenario-$1" "bench/docker-$scenario:$1" "$WORK/docker/Dockerfile.$scenario")"
    log "docker-$scenario run $1: ${R[docker-$scenario.t$1]} s"
  done
  # warm means apt found its lists and packages on the cache mounts: nothing but InRelease fetched
  R[docker-warm.fetched.t$1]="$(grep -E ' Get:[0-9]+ ' "$WORK/docker/warm-$1.log" | grep -cv 'InRelease' || true)"
  ((R[docker-warm.fetched.t$1] == 0)) \
    || log "WARN: docker-warm run $1 downloaded ${R[docker-warm.fetched.t$1]} lists or packages: not warm"
}

# The floor: what dpkg itself spends on the same upgrade in a plain chroot of the image (no
# container, no sandbox, no apt, packages on disk, --force-unsafe-io like the image's
# docker-apt-speedup). "dpkg-scripts" runs only the maintainer scripts of the unpack phase, as
# dpkg calls them (old prerm upgrade NEW, new preinst upgrade OLD, old postrm upgrade NEW);
# `dpkg --unpack` of all the .debs, as apt would order it: a package whose pre-dependency is
# unpacked in the same run (libpam-modules on libpam-modules-bin) is refused; it is unpacked
# after the others are configured.
FLOOR_UNPACK='f=""; for d in /debs/*.deb; do dpkg --force-unsafe-io --unpack "$d" || f="$f $d"; done; [ -z "$f" ] || { dpkg --configure -a && dpkg --force-unsafe-io --unpack $f; }'
# "dpkg-configure" is `dpkg --configure -a` after `dpkg --unpack`: the postinst scripts and
# triggers. Their sum is the least any engine that runs the scripts can take.
FLOOR_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive)
floor_chroot() { # floor_chroot ROOT PKG SCRIPT ARGS...: one maintainer script as dpkg runs it
  local root="$1" pkg="$2" script="$3"
  shift 3
  chroot "$root" "${FLOOR_ENV[@]}" DPKG_MAINTSCRIPT_PACKAGE="$pkg" DPKG_MAINTSCRIPT_NAME="${script##*.}" \
    DPKG_MAINTSCRIPT_ARCH="${FLOOR_ARCH[$pkg]:-amd64}" DPKG_RUNNING_VERSION="$FLOOR_DPKG_VERSION" \
    DPKG_ADMINDIR=/var/lib/dpkg DPKG_ROOT= "$script" "$@" </dev/null >/dev/null 2>&1
}

floor_copy() { # floor_copy DIR: a fresh copy of the image root with the planned .debs in /debs
  local d="$1"
  umount -l "$d/proc" 2>/dev/null || true
  rm -rf "$d"
  cp -a "$WORK/floor/base" "$d"
  mkdir -p "$d/debs" "$d/ctl"
  cp "$WORK"/floor/debs/*.deb "$d/debs/"
  cp "$WORK"/floor/ctl/*.preinst "$d/ctl/" 2>/dev/null || true
  mount -t proc proc "$d/proc"
}

declare -A FLOOR_OLD=() FLOOR_NEW=() FLOOR_INFO=() FLOOR_ARCH=()
floor_setup() { # each planned package's verified .deb (the version planned), versions and names
  local f pkg version planned base="$WORK/floor/base"
  mkdir -p "$WORK/floor/debs" "$WORK/floor/ctl"
  for f in "$WORK"/pp/scan-cache/debs/*.deb; do
    [[ -e "$f" ]] || die "floor: no packages in patchpull's cache"
    pkg="$(dpkg-deb -f "$f" Package)"
    version="$(dpkg-deb -f "$f" Version)"
    planned="$(awk -v p="$pkg" '$1 == p { print $2 }' "$PLAN_FILE")"
    [[ -n "$planned" && "$version" == "$planned" ]] || continue
    cp "$f" "$WORK/floor/debs/$pkg.deb"
    mkdir -p "$WORK/floor/ctl/$pkg"
    dpkg-deb -e "$f" "$WORK/floor/ctl/$pkg"
    [[ -x "$WORK/floor/ctl/$pkg/preinst" ]] && cp "$WORK/floor/ctl/$pkg/preinst" "$WORK/floor/ctl/$pkg.preinst"
    FLOOR_NEW[$pkg]="$version"
    FLOOR_ARCH[$pkg]="$(dpkg-deb -f "$f" Architecture)"
  done
  for pkg in $PKGS; do
    [[ -n "${FLOOR_NEW[$pkg]:-}" ]] || die "floor: no .deb of $pkg at the planned version in patchpull's cache"
    FLOOR_OLD[$pkg]="$(chroot "$base" dpkg-query -W -f '${Version}' "$pkg")" \
      || die "floor: $pkg is not installed in the image (a new dependency: not measured)"
    # Multi-Arch: same packages keep their scripts as <name>:<arch>.<script>
    FLOOR_INFO[$pkg]="/var/lib/dpkg/info/$(chroot "$base" dpkg-query -W -f '${binary:Package}' "$pkg")"
    [[ -e "$base${FLOOR_INFO[$pkg]}.list" ]] || FLOOR_INFO[$pkg]="/var/lib/dpkg/info/$pkg"
  done
  FLOOR_DPKG_VERSION="$(chroot "$base" dpkg-query -W -f '${Version}' dpkg)"
}

floor_runs() { # floor_runs REP
  local d="$WORK/floor/run" pkg info t0 t1 t2 t3
  floor_copy "$d"
  t0="$(now)"
  for pkg in $PKGS; do
    info="${FLOOR_INFO[$pkg]}"
    if [[ -x "$d$info.prerm" ]]; then
      floor_chroot "$d" "$pkg" "$info.prerm" upgrade "${FLOOR_NEW[$pkg]}" || die "$pkg prerm failed"
    fi
    if [[ -x "$d/ctl/$pkg.preinst" ]]; then
      floor_chroot "$d" "$pkg" "/ctl/$pkg.preinst" upgrade "${FLOOR_OLD[$pkg]}" || die "$pkg preinst failed"
    fi
    if [[ -x "$d$info.postrm" ]]; then
      floor_chroot "$d" "$pkg" "$info.postrm" upgrade "${FLOOR_NEW[$pkg]}" || die "$pkg postrm failed"
    fi
  done
  t1="$(now)"
  floor_copy "$d"
  t2="$(now)"
  chroot "$d" "${FLOOR_ENV[@]}" sh -c "$FLOOR_UNPACK" >"$WORK/floor/unpack-$1.log" 2>&1 \
    || die "dpkg --unpack failed: $(tail -n 5 "$WORK/floor/unpack-$1.log")"
  t3="$(now)"
  chroot "$d" "${FLOOR_ENV[@]}" dpkg --force-unsafe-io --configure -a >"$WORK/floor/configure-$1.log" 2>&1 \
    || die "dpkg --configure failed: $(tail -n 5 "$WORK/floor/configure-$1.log")"
  R[dpkg-scripts.t$1]="$(elapsed "$t0" "$t1")"
  R[dpkg-unpack.t$1]="$(elapsed "$t2" "$t3")"
  R[dpkg-configure.t$1]="$(elapsed "$t3" "$(now)")"
  # the configure phase's scripts alone, called directly on an unpacked copy: each new
  # postinst configure OLD, then libc-bin's ldconfig trigger (the one these packages activate)
  floor_copy "$d"
  chroot "$d" "${FLOOR_ENV[@]}" sh -c "$FLOOR_UNPACK" >/dev/null 2>&1 \
    || die "dpkg --unpack failed"
  t0="$(now)"
  for pkg in $PKGS; do
    info="${FLOOR_INFO[$pkg]}"
    if [[ -x "$d$info.postinst" ]]; then
      floor_chroot "$d" "$pkg" "$info.postinst" configure "${FLOOR_OLD[$pkg]}" || die "$pkg postinst failed"
    fi
  done
  if grep -qs 'ldconfig' "$WORK"/floor/ctl/*/triggers && [[ -x "$d/var/lib/dpkg/info/libc-bin.postinst" ]]; then
    floor_chroot "$d" libc-bin /var/lib/dpkg/info/libc-bin.postinst triggered ldconfig || die "ldconfig trigger failed"
  fi
  R[dpkg-postinst.t$1]="$(elapsed "$t0" "$(now)")"
  umount -l "$d/proc"
  log "floor run $1: unpack-phase scripts ${R[dpkg-scripts.t$1]} s, postinst scripts and trigger ${R[dpkg-postinst.t$1]} s, dpkg --unpack ${R[dpkg-unpack.t$1]} s, dpkg --configure ${R[dpkg-configure.t$1]} s"
}

# --- run ------------------------------------------------------------------------------------------
# Interleaved, one round of every scenario per repetition, so that load from anything else on
# the machine spreads over all of them alike.
PKGS=""
with() { [[ " $SCENARIOS " == *" $1 "* ]]; }
with patchpull && patchpull_setup
with docker && docker_setup
for rep in $(seq 1 "$REPS"); do
  log "=== round $rep of $REPS ==="
  if with patchpull; then
    rm -rf "$WORK/pp/store" "$WORK/pp/scan-cache"
    pp_run patchpull-cold "$rep"
    pp_run patchpull-warm "$rep"
    if ((rep == 1)); then
      awk 'NF == 5 && $1 != "PACKAGE" && $4 ~ /^[0-9]+$/ { print $1, $3 }' "$WORK/pp/patchpull-cold-1/stdout" \
        | sort >"$PLAN_FILE"
      [[ -s "$PLAN_FILE" ]] || die "patchpull planned nothing: $(cat "$WORK/pp/patchpull-cold-1/stdout")"
    fi
  fi
  if with floor && with patchpull; then
    if ((rep == 1)); then [[ -n "$PKGS" ]] || PKGS="$(cut -d' ' -f1 "$PLAN_FILE" | tr '\n' ' ')"; floor_setup; fi
    floor_runs "$rep"
  fi
  if with docker; then
    if ((rep == 1)); then decide_packages; docker_prepare; fi
    docker_runs "$rep"
    if with patchpull; then
      # patchpull's BuildKit engine through the same dockerd; --no-cache (a unique value in
      # the step, else BuildKit answers the same plan from its cache) keeps apt's lists and
      # archives on the cache mounts, which round 1 primes, like docker-warm
      bk=(--engine buildkit --buildkit "docker-unix://$DSOCK" --tag-suffix patched-buildkit --no-cache)
      ((rep == 1)) && pp_run buildkit-engine 0 "${bk[@]}"
      pp_run buildkit-engine "$rep" "${bk[@]}"
    fi
  fi
done
with patchpull && patchpull_finish
if with docker; then
  for scenario in cold lean warm; do docker_layer "docker-$scenario" "bench/docker-$scenario:$REPS"; done
  stop_dockerd
fi

for s in patchpull-cold patchpull-warm buildkit-engine docker-cold docker-lean docker-warm \
  dpkg-scripts dpkg-unpack dpkg-configure dpkg-postinst; do
  [[ -n "${R[$s.t1]:-}" ]] || continue
  ts=()
  for rep in $(seq 1 "$REPS"); do ts+=("${R[$s.t$rep]}"); done
  R[$s.median]="$(median "${ts[@]}")"
  R[$s.min]="$(printf '%s\n' "${ts[@]}" | sort -g | head -n1)"
  R[$s.max]="$(printf '%s\n' "${ts[@]}" | sort -g | tail -n1)"
done

# --- report -----------------------------------------------------------------------------------------
val() { printf '%s' "${R[$1]:-n/a}"; }
ratio() { # ratio A B: A / B
  if [[ -n "${R[$1]:-}" && -n "${R[$2]:-}" ]]; then
    awk -v a="${R[$1]}" -v b="${R[$2]}" 'BEGIN { if (b > 0) printf "%.1f", a / b; else printf "n/a" }'
  else
    printf 'n/a'
  fi
}
row() { printf '%-16s %8s %8s %8s %12s %12s %12s\n' "$@"; }
{
  echo
  echo "patchpull patch benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $REPS runs per scenario"
  echo "load average at start: $LOAD_AT_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "image: $BASE, debootstrap --variant=minbase $SUITE${INCLUDE:+ --include=$INCLUDE}, layer $BASE_LAYER_BYTES bytes gzip"
  echo "packages: $(val plan.packages) (patchpull's plan = apt-get upgrade's set: $(val plan.same))"
  echo
  row scenario "median s" "min s" "max s" "layer pushed" "layer tar" "tar gzip -6"
  row ---------------- -------- -------- -------- ------------ ------------ ------------
  for s in patchpull-cold patchpull-warm buildkit-engine docker-cold docker-lean docker-warm; do
    [[ -n "${R[$s.median]:-}" ]] || continue
    row "$s" "$(val "$s.median")" "$(val "$s.min")" "$(val "$s.max")" "$(val "$s.pushed")" "$(val "$s.tar")" "$(val "$s.gz6")"
  done
  if [[ -n "${R[dpkg-configure.median]:-}" ]]; then
    echo
    echo "floor: dpkg alone in a plain chroot of the image, packages on disk (medians, min-max):"
    printf '  %-52s %6s s (%s-%s)\n' "unpack-phase maintainer scripts (prerm, preinst, postrm)" \
      "$(val dpkg-scripts.median)" "$(val dpkg-scripts.min)" "$(val dpkg-scripts.max)"
    printf '  %-52s %6s s (%s-%s)\n' "dpkg --unpack (those scripts + the files)" \
      "$(val dpkg-unpack.median)" "$(val dpkg-unpack.min)" "$(val dpkg-unpack.max)"
    printf '  %-52s %6s s (%s-%s)\n' "dpkg --configure -a (postinst scripts, triggers)" \
      "$(val dpkg-configure.median)" "$(val dpkg-configure.min)" "$(val dpkg-configure.max)"
    printf '  %-52s %6s s (%s-%s)\n' "postinst scripts and trigger, called directly" \
      "$(val dpkg-postinst.median)" "$(val dpkg-postinst.min)" "$(val dpkg-postinst.max)"
    R[floor.scripts]="$(awk -v a="${R[dpkg-scripts.median]}" -v b="${R[dpkg-postinst.median]}" 'BEGIN { printf "%.2f", a + b }')"
    printf '  %-52s %6s s\n' "the scripts alone (first and last above)" "$(val floor.scripts)"
    if [[ -n "${R[docker-warm.median]:-}" ]]; then
      R[floor.budget]="$(awk -v a="${R[docker-warm.median]}" 'BEGIN { printf "%.2f", a / 10 }')"
      printf '  %-52s %6s s\n' "a 10x target's whole budget (docker-warm / 10)" "$(val floor.budget)"
    fi
  fi
  echo
  echo "ratios docker / patchpull (time: medians, and minimums, which a busy machine disturbs less;"
  echo "size: gzip -6 of the layer tar):"
  printf '  %-44s %6sx %6sx\n' "time, cold (docker-cold / patchpull-cold)" \
    "$(ratio docker-cold.median patchpull-cold.median)" "$(ratio docker-cold.min patchpull-cold.min)"
  printf '  %-44s %6sx %6sx\n' "time, cold (docker-lean / patchpull-cold)" \
    "$(ratio docker-lean.median patchpull-cold.median)" "$(ratio docker-lean.min patchpull-cold.min)"
  printf '  %-44s %6sx %6sx\n' "time, warm (docker-warm / patchpull-warm)" \
    "$(ratio docker-warm.median patchpull-warm.median)" "$(ratio docker-warm.min patchpull-warm.min)"
  printf '  %-44s %6sx %6sx\n' "engines (buildkit-engine / patchpull-warm)" \
    "$(ratio buildkit-engine.median patchpull-warm.median)" "$(ratio buildkit-engine.min patchpull-warm.min)"
  printf '  %-44s %6sx\n' "layer, docker-cold / patchpull" "$(ratio docker-cold.gz6 patchpull.gz6)"
  printf '  %-44s %6sx\n' "layer, docker-lean / patchpull" "$(ratio docker-lean.gz6 patchpull.gz6)"
  printf '  %-44s %6sx\n' "layer, docker-warm / patchpull" "$(ratio docker-warm.gz6 patchpull.gz6)"
  if [[ -n "${R[patchpull.gz6]:-}" && -n "${R[docker-warm.gz6]:-}" ]]; then
    check() { printf '  %-4s %s\n' "$(awk -v a="$1" -v b="$2" "BEGIN { print (($3) ? \"PASS\" : \"FAIL\") }")" "$4"; }
    echo
    echo "targets (from the issue):"
    check "$(ratio docker-cold.median patchpull-cold.median)" 0 'a >= 10' "10x faster, cold (medians)"
    check "$(ratio docker-warm.median patchpull-warm.median)" 0 'a >= 10' "10x faster, packages already downloaded (medians)"
    for d in docker-cold docker-lean docker-warm; do
      check "${R[patchpull.gz6]}" "${R[$d.gz6]}" 'a <= b' "patch layer no larger than $d's (gzip -6)"
    done
  fi
} | tee "$WORK/table.txt"

if [[ -n "$RESULTS_FILE" ]]; then
  for k in $(printf '%s\n' "${!R[@]}" | sort); do printf '%s=%s\n' "$k" "${R[$k]}"; done >"$RESULTS_FILE"
  log "results written to $RESULTS_FILE"
fi
