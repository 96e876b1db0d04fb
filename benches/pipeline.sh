#!/usr/bin/env bash
# benches/pipeline.sh: patch on pull with a real Debian image, end to end, through `patchpull
# serve`, against a plain mirrored pull of the same image, in one run.
#
# One run debootstraps bookworm minbase, makes it look like the official debian:bookworm image
# (as benches/patch.sh does), pushes it to a loopback distribution registry, and starts two
# `patchpull serve` processes in front of it, alike but for `[patch] mode`:
#   - "patched": mode = "wait" (wait_timeout 300 s), its own store and scan cache;
#   - "plain":   mode = "off", a plain mirror.
# Then, with the same client (skopeo) on the same machine:
#   - cold: the first `skopeo copy docker://PROXY/local/debian:bookworm oci:DIR` through the
#     patched proxy, empty store and scan cache: the proxy pulls the image, scans it against
#     Debian's real repositories, patches it, and the client gets the patched image. Checked:
#     the digest the client got differs from upstream's and from `<tag>-original`'s. The patch
#     job's own duration and stage times come from /metrics;
#   - warm: rounds of a full pull (skopeo copy into a fresh directory) of the patched tag, of
#     the same tag through the plain mirror (whose store was filled by one untimed pull), and
#     of the patched image's exact bytes through the plain mirror (pushed to the registry
#     under another tag), interleaved with a rotating order; medians;
#   - manifests: wrk on GET /v2/local/debian/manifests/bookworm (and by digest) on both
#     proxies, alternating, req/s and p99.
# It prints a table and PASS/FAIL against the issue's target (warm patched pull within 5 % of
# the plain mirrored pull).
#
# Everything it starts lives under one temp directory and is stopped by PID on exit.
# Usage: benches/pipeline.sh            (see benches/README.md for the knobs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# --- knobs -------------------------------------------------------------------------------
REPS="${BENCH_REPS:-10}"                       # warm rounds; medians are reported
SUITE="${BENCH_SUITE:-bookworm}"
ARCHIVE="${BENCH_ARCHIVE:-http://deb.debian.org/debian}"
SECURITY="${BENCH_SECURITY:-http://deb.debian.org/debian-security}"
INCLUDE="${BENCH_INCLUDE:-}"                   # extra packages for debootstrap --include=a,b
WRK_THREADS="${BENCH_WRK_THREADS:-1}"
WRK_CONNS="${BENCH_WRK_CONNS:-8}"
WRK_DURATION="${BENCH_WRK_DURATION:-10s}"
WRK_ROUNDS="${BENCH_WRK_ROUNDS:-3}"            # wrk runs per proxy and target, alternating; median
TARGET_PCT="${BENCH_TARGET_PCT:-5}"            # the issue's bound on the warm overhead, percent
STEP_TIMEOUT="${BENCH_STEP_TIMEOUT:-900}"      # seconds, debootstrap and the cold pull
PULL_TIMEOUT="${BENCH_PULL_TIMEOUT:-300}"      # seconds, per warm pull
START_TIMEOUT="${BENCH_START_TIMEOUT:-60}"     # seconds, per daemon start
WORK_PARENT="${BENCH_TMPDIR:-${TMPDIR:-/tmp}}"
KEEP="${BENCH_KEEP:-0}"                        # 1: keep the temp dir (logs, stores, wrk output)
RESULTS_FILE="${BENCH_RESULTS:-}"              # also write key=value results here
PATCHPULL_BIN="${BENCH_PATCHPULL_BIN:-}"       # skip the build and use this binary
# (not PATCHPULL_*: patchpull reads every PATCHPULL_* variable as configuration)
ACCEPT_OCI="application/vnd.oci.image.manifest.v1+json"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "run as root (debootstrap)"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPS must be a positive number"
[[ "$WRK_ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_WRK_ROUNDS must be a positive number"

# --- tools -----------------------------------------------------------------------------------
need=()
for pair in docker-registry:docker-registry skopeo:skopeo debootstrap:debootstrap curl:curl jq:jq \
  gzip:gzip python3:python3 wrk:wrk; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  timeout 600 apt-get update -qq >&2 || die "apt-get update failed"
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
fi

# build first, so that a failing build wastes nothing and its load is over before measuring
if [[ -z "$PATCHPULL_BIN" ]]; then
  log "cargo build --release (bounded to 30 min)"
  (cd "$ROOT" && timeout 1800 cargo build --release --bin patchpull >&2) || die "release build failed"
  PATCHPULL_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/patchpull"
fi
[[ -x "$PATCHPULL_BIN" ]] || die "no patchpull binary at $PATCHPULL_BIN"

# --- processes and cleanup ------------------------------------------------------------------
WORK="$(mktemp -d "$WORK_PARENT/patchpull-bench-pipeline.XXXXXX")"
chmod 0711 "$WORK"   # patchpull's script sandbox runs as an unprivileged user below it
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
declare -a PIDS=()

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

cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
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
elapsed() { awk -v a="$1" -v z="$2" 'BEGIN { printf "%.3f", z - a }'; }

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

# --- the Debian image (as benches/patch.sh builds it) -----------------------------------------
ROOTFS="$WORK/rootfs"
log "debootstrap --variant=minbase $SUITE${INCLUDE:+ --include=$INCLUDE} (bounded to ${STEP_TIMEOUT}s)"
timeout "$STEP_TIMEOUT" debootstrap --variant=minbase ${INCLUDE:+--include="$INCLUDE"} "$SUITE" "$ROOTFS" "$ARCHIVE" \
  >"$WORK/debootstrap.log" 2>&1 || die "debootstrap failed: $(tail -n 5 "$WORK/debootstrap.log")"

# What the official image has (debuerreotype): deb822 sources for the three suites, and the
# slimming settings.
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
UPSTREAM_DIGEST="sha256:$MANIFEST_HEX"
BASE_LAYER_BYTES="$(stat -c %s "$IMG/layer.tar.gz")"
log "pushed $BASE = $UPSTREAM_DIGEST (layer $BASE_LAYER_BYTES bytes gzip)"
rm -rf "$ROOTFS" "$IMG"

declare -A R=()   # results: R[scenario.metric]=value

# --- the two proxies -------------------------------------------------------------------------------
declare -A URL=() PID=()

start_serve() { # start_serve NAME MODE: one `patchpull serve` in front of the registry
  local name="$1" mode="$2" dir="$WORK/$1" deadline line url=""
  mkdir -p "$dir"
  # alike but for patch.mode; info is quiet on requests (no access log) and shows the stages
  cat >"$dir/patchpull.toml" <<EOF
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"
idle_timeout = "360s"

[storage]
path = "$dir/store"

[log]
level = "info"

[scan]
cache_dir = "$dir/scan-cache"
debian_archive_url = "$ARCHIVE"
debian_security_url = "$SECURITY"

[patch]
mode = "$mode"
wait_timeout = "300s"

[[upstream]]
name = "local"
url = "http://$REG"
EOF
  : >"$dir/out"
  # the config file alone decides: drop any PATCHPULL_* variable from the caller's env
  # shellcheck disable=SC2046
  env $(compgen -e | grep '^PATCHPULL_' | sed 's/^/-u /') \
    "$PATCHPULL_BIN" serve --config "$dir/patchpull.toml" >"$dir/out" 2>"$dir/log" &
  PID[$name]=$!
  PIDS+=("${PID[$name]}")
  deadline=$((SECONDS + START_TIMEOUT))
  while [[ -z "$url" ]]; do
    line="$(grep -m1 -o 'patchpull listening on http://[0-9.:]*' "$dir/out" || true)"
    url="${line#patchpull listening on }"
    [[ -n "$url" ]] && break
    kill -0 "${PID[$name]}" 2>/dev/null || die "patchpull $name exited: $(tail -n 20 "$dir/log")"
    ((SECONDS < deadline)) || die "patchpull $name printed no listening line within ${START_TIMEOUT}s"
    sleep 0.1
  done
  wait_http "$url/v2/"
  URL[$name]="$url"
  log "patchpull $name (patch.mode = $mode) on $url"
}

start_serve patched wait
start_serve plain off

ticks() { # ticks PID: user + system CPU time of a process, in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
HZ="$(getconf CLK_TCK)"

head_digest() { # head_digest URL: Docker-Content-Digest of a manifest, OCI manifest accepted
  curl -sS --max-time 30 -o /dev/null -D - -H "Accept: $ACCEPT_OCI" -I "$1" \
    | tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

metric() { # metric PROXY NAME [LABELS]: a value from a proxy's /metrics, empty when absent
  local name="$2" labels="${3:-}"
  curl -sS --max-time 10 "${URL[$1]}/metrics" \
    | awk -v n="$name" -v l="$labels" '
        $1 == n || (l != "" && index($1, n "{") == 1 && index($1, l) > 0) { v = $2 }
        END { print v }'
}

served_bytes() { # served_bytes PROXY: patchpull_bytes_served_total over all routes
  curl -sS --max-time 10 "${URL[$1]}/metrics" \
    | awk 'index($1, "patchpull_bytes_served_total") == 1 { n += $2 } END { printf "%.0f", n }'
}

PULL_S=""        # pull's results: wall seconds, and the manifest digest the client got
PULL_DIGEST=""
pull() { # pull PROXY REF DEST TIMEOUT: one skopeo copy into DEST
  local proxy="$1" ref="$2" dest="$3" limit="$4" t0 t1 host="${URL[$1]#http://}"
  rm -rf "$dest"
  mkdir -p "$dest"
  t0="$(now)"
  timeout "$limit" skopeo copy -q --retry-times 0 --src-tls-verify=false --digestfile "$dest.digest" \
    "docker://$host/local/debian:$ref" "oci:$dest:$ref" >"$dest.log" 2>&1 \
    || die "skopeo copy from $proxy of debian:$ref failed: $(tail -n 5 "$dest.log")"
  t1="$(now)"
  PULL_S="$(elapsed "$t0" "$t1")"
  PULL_DIGEST="$(cat "$dest.digest")"
}

# --- cold: the first patched pull --------------------------------------------------------------
log "cold: first pull of local/debian:$SUITE through the patched proxy (empty store, empty scan cache)"
pull patched "$SUITE" "$WORK/pulls/cold" "$STEP_TIMEOUT"
R[cold.s]="$PULL_S"
PATCHED_DIGEST="$PULL_DIGEST"
log "cold pull: ${R[cold.s]} s, got $PATCHED_DIGEST"
ORIGINAL_DIGEST="$(head_digest "${URL[patched]}/v2/local/debian/manifests/$SUITE-original")"
[[ -n "$PATCHED_DIGEST" ]] || die "skopeo wrote no digest for the cold pull"
if [[ "$PATCHED_DIGEST" == "$UPSTREAM_DIGEST" || "$PATCHED_DIGEST" == "$ORIGINAL_DIGEST" ]]; then
  die "the cold pull got the original ($PATCHED_DIGEST; upstream $UPSTREAM_DIGEST, -original $ORIGINAL_DIGEST):" \
    "$(grep -iE 'error|fail|warn' "$WORK/patched/log" | tail -n 10)"
fi
[[ "$ORIGINAL_DIGEST" == "$UPSTREAM_DIGEST" ]] \
  || die "<tag>-original is $ORIGINAL_DIGEST, upstream's digest is $UPSTREAM_DIGEST"
COLD_LAYERS="$(jq '.layers | length' "$WORK/pulls/cold/blobs/sha256/${PATCHED_DIGEST#sha256:}")"
PATCH_LAYER_BYTES="$(jq '.layers[-1].size' "$WORK/pulls/cold/blobs/sha256/${PATCHED_DIGEST#sha256:}")"
R[cold.job_s]="$(metric patched patchpull_patch_duration_seconds_sum)"
R[cold.jobs]="$(metric patched patchpull_patch_jobs_total 'outcome="Patched"')"
R[cold.plan_s]="$(metric patched patchpull_patch_stage_duration_seconds_sum 'stage="Plan"')"
R[cold.build_s]="$(metric patched patchpull_patch_stage_duration_seconds_sum 'stage="Build"')"
R[cold.vulns]="$(metric patched patchpull_vulnerabilities_fixed_total)"
log "patch job: ${R[cold.job_s]} s (plan ${R[cold.plan_s]} s, build and verify ${R[cold.build_s]} s)," \
  "${R[cold.jobs]} job(s) patched, ${R[cold.vulns]} vulnerability ids fixed; image has $COLD_LAYERS layers," \
  "patch layer $PATCH_LAYER_BYTES bytes"
grep -o 'patch stage done.*' "$WORK/patched/log" | sed 's/^/    /' >&2 || true

# The patched image's exact bytes, upstream under another tag (not -patched/-original: those
# suffixes mean something to patchpull in every mode), for a plain mirrored pull of the same bytes.
SAME_TAG="$SUITE-pp"
timeout 300 skopeo copy -q --dest-tls-verify=false --digestfile "$WORK/same.digest" \
  "oci:$WORK/pulls/cold:$SUITE" "docker://$REG/debian:$SAME_TAG" >"$WORK/same.log" 2>&1 \
  || die "pushing the patched image to $REG/debian:$SAME_TAG failed: $(tail -n 5 "$WORK/same.log")"
[[ "$(cat "$WORK/same.digest")" == "$PATCHED_DIGEST" ]] \
  || die "the patched image pushed as $SAME_TAG has digest $(cat "$WORK/same.digest"), not $PATCHED_DIGEST"

# --- warm pulls ------------------------------------------------------------------------------------
# scenario -> "proxy tag expected-digest"
declare -A SCEN=(
  [patched]="patched $SUITE $PATCHED_DIGEST"
  [plain]="plain $SUITE $UPSTREAM_DIGEST"
  [plain-same]="plain $SAME_TAG $PATCHED_DIGEST"
)
ORDER=(patched plain plain-same)
log "warming up (untimed): one pull of each scenario"
for s in "${ORDER[@]}"; do
  read -r proxy tag want <<<"${SCEN[$s]}"
  pull "$proxy" "$tag" "$WORK/pulls/warmup-$s" "$PULL_TIMEOUT"
  [[ "$PULL_DIGEST" == "$want" ]] || die "$s warm-up pull got $PULL_DIGEST, want $want"
  rm -rf "$WORK/pulls/warmup-$s"
done
rm -rf "$WORK/pulls/cold"

declare -A CPU=() BYTES=()
for rep in $(seq 1 "$REPS"); do
  # rotate the order each round, so that no scenario always runs first or after the same one
  for i in 0 1 2; do
    s="${ORDER[$(((i + rep - 1) % 3))]}"
    read -r proxy tag want <<<"${SCEN[$s]}"
    c0="$(ticks "${PID[$proxy]}")"
    b0="$(served_bytes "$proxy")"
    pull "$proxy" "$tag" "$WORK/pulls/$s-$rep" "$PULL_TIMEOUT"
    c1="$(ticks "${PID[$proxy]}")"
    b1="$(served_bytes "$proxy")"
    BYTES[$s]=$((${BYTES[$s]:-0} + b1 - b0))
    # a pull that served less than the base layer did not fetch the image (skopeo reuses
    # nothing into a fresh oci: dir, so this would be a change in the client or the metric)
    ((b1 - b0 >= BASE_LAYER_BYTES)) || log "WARN: $s pull $rep: the proxy served $((b1 - b0)) body bytes, less than the layer"
    [[ "$PULL_DIGEST" == "$want" ]] || die "$s pull $rep got $PULL_DIGEST, want $want"
    R[$s.t$rep]="$PULL_S"
    CPU[$s]=$((${CPU[$s]:-0} + c1 - c0))
    rm -rf "$WORK/pulls/$s-$rep"
  done
  log "round $rep of $REPS: patched ${R[patched.t$rep]} s, plain ${R[plain.t$rep]} s, plain-same ${R[plain-same.t$rep]} s"
done
for s in "${ORDER[@]}"; do
  ts=()
  for rep in $(seq 1 "$REPS"); do ts+=("${R[$s.t$rep]}"); done
  R[$s.median]="$(median "${ts[@]}")"
  R[$s.min]="$(printf '%s\n' "${ts[@]}" | sort -g | head -n1)"
  R[$s.max]="$(printf '%s\n' "${ts[@]}" | sort -g | tail -n1)"
  R[$s.cpu_ms]="$(awk -v t="${CPU[$s]}" -v hz="$HZ" -v n="$REPS" 'BEGIN { printf "%.0f", 1000 * t / hz / n }')"
  R[$s.bytes]=$((${BYTES[$s]} / REPS))
done

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%+.1f", 100 * (a - b) / b; else printf "n/a" }'; }
R[warm.overhead_pct]="$(pct "${R[patched.median]}" "${R[plain.median]}")"
R[warm.overhead_min_pct]="$(pct "${R[patched.min]}" "${R[plain.min]}")"
R[warm.overhead_same_pct]="$(pct "${R[patched.median]}" "${R[plain-same.median]}")"

# --- manifests ----------------------------------------------------------------------------------
to_ms() { # to_ms 1.23ms | 850.00us | 1.2s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
    else printf "%s", v }'
}

run_wrk() { # run_wrk KEY PROXY URL WANT_DIGEST ROUND
  local key="$1" proxy="$2" url="$3" want="$4" round="$5" out got non2xx errors c0 c1 n
  got="$(head_digest "$url")"
  [[ "$got" == "$want" ]] || die "$key: $url answers $got, want $want"
  c0="$(ticks "${PID[$proxy]}")"
  out="$(timeout 120 wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 5s --latency \
    -H "Accept: $ACCEPT_OCI" "$url")" || die "wrk against $url failed"
  c1="$(ticks "${PID[$proxy]}")"
  n="$(awk '/requests in/ { print $1 }' <<<"$out")"
  # the proxy's CPU per request: steadier than req/s when something else shares the cores
  R[$key.cpu_us$round]="$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="${n:-0}" 'BEGIN { if (n > 0) printf "%.2f", 1e6 * t / hz / n; else print "n/a" }')"
  printf '%s\n' "$out" >>"$WORK/wrk-$key.txt"
  R[$key.rps$round]="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")"
  R[$key.p99_$round]="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")"
  errors="$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' <<<"$out")"
  R[$key.bad]=$((${R[$key.bad]:-0} + ${non2xx:-0} + ${errors:-0}))
  log "$key round $round: ${R[$key.rps$round]} req/s, p99 ${R[$key.p99_$round]} ms, proxy CPU ${R[$key.cpu_us$round]} us/request"
}

declare -A WRK_TARGETS=(
  [tag-patched]="patched ${URL[patched]}/v2/local/debian/manifests/$SUITE $PATCHED_DIGEST"
  [tag-plain]="plain ${URL[plain]}/v2/local/debian/manifests/$SUITE $UPSTREAM_DIGEST"
  [digest-patched]="patched ${URL[patched]}/v2/local/debian/manifests/$PATCHED_DIGEST $PATCHED_DIGEST"
  [digest-plain]="plain ${URL[plain]}/v2/local/debian/manifests/$UPSTREAM_DIGEST $UPSTREAM_DIGEST"
)
WRK_ORDER=(tag-patched tag-plain digest-patched digest-plain)
TAG_PULLS_BEFORE="$(metric patched patchpull_tag_pulls_total 'served="Patched"')"
log "manifests: wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION, $WRK_ROUNDS rounds, alternating"
for round in $(seq 1 "$WRK_ROUNDS"); do
  # patched first in odd rounds, plain first in even ones
  for i in 0 1 2 3; do
    if ((round % 2)); then key="${WRK_ORDER[$i]}"; else key="${WRK_ORDER[$((i ^ 1))]}"; fi
    read -r proxy url want <<<"${WRK_TARGETS[$key]}"
    run_wrk "$key" "$proxy" "$url" "$want" "$round"
  done
done
TAG_PULLS_AFTER="$(metric patched patchpull_tag_pulls_total 'served="Patched"')"
R[wrk.patched_served]="$(awk -v a="$TAG_PULLS_AFTER" -v b="$TAG_PULLS_BEFORE" 'BEGIN { printf "%.0f", a - b }')"
R[wrk.tag_requests]="$(awk '/requests in/ { n += $1 } END { print n }' "$WORK/wrk-tag-patched.txt")"
for key in "${WRK_ORDER[@]}"; do
  rs=() ps=() cs=()
  for round in $(seq 1 "$WRK_ROUNDS"); do
    rs+=("${R[$key.rps$round]}") ps+=("${R[$key.p99_$round]}") cs+=("${R[$key.cpu_us$round]}")
  done
  R[$key.rps]="$(median "${rs[@]}")"
  R[$key.p99]="$(median "${ps[@]}")"
  R[$key.cpu_us]="$(median "${cs[@]}")"
done
R[tag.overhead_pct]="$(pct "${R[tag-plain.rps]}" "${R[tag-patched.rps]}")"   # plain's req/s above patched's
R[digest.overhead_pct]="$(pct "${R[digest-plain.rps]}" "${R[digest-patched.rps]}")"
R[tag.extra_cpu_us]="$(awk -v a="${R[tag-patched.cpu_us]}" -v b="${R[tag-plain.cpu_us]}" 'BEGIN { printf "%+.2f", a - b }')"

# --- report -----------------------------------------------------------------------------------------
val() { printf '%s' "${R[$1]:-n/a}"; }
row() { printf '%-52s %12s %12s %12s %12s\n' "$1" "$2" "$3" "$4" "${5:-}"; }
{
  echo
  echo "patchpull pipeline benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $REPS warm rounds"
  echo "load average at start: $LOAD_AT_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "image: $BASE = $UPSTREAM_DIGEST, debootstrap --variant=minbase $SUITE${INCLUDE:+ --include=$INCLUDE}, layer $BASE_LAYER_BYTES bytes gzip"
  echo "patched: $PATCHED_DIGEST, $COLD_LAYERS layers, patch layer $PATCH_LAYER_BYTES bytes gzip"
  echo
  echo "cold, first patched pull (skopeo copy, empty store and scan cache):   $(val cold.s) s"
  echo "  patch job (patchpull_patch_duration_seconds_sum):                    $(val cold.job_s) s"
  echo "  stage plan / build and verify (patch_stage_duration_seconds_sum):   $(val cold.plan_s) s / $(val cold.build_s) s"
  echo
  row "warm full pull (skopeo copy to a fresh oci: dir), s" median min max
  row "----------------------------------------------------" ------------ ------------ ------------
  row "patched tag through the patched proxy" "$(val patched.median)" "$(val patched.min)" "$(val patched.max)"
  row "same tag through the plain mirror (original image)" "$(val plain.median)" "$(val plain.min)" "$(val plain.max)"
  row "patched bytes through the plain mirror ($SAME_TAG)" "$(val plain-same.median)" "$(val plain-same.min)" "$(val plain-same.max)"
  echo "  proxy CPU per pull, ms: patched $(val patched.cpu_ms), plain $(val plain.cpu_ms), plain-same $(val plain-same.cpu_ms)"
  echo "  body bytes the proxy served per pull: patched $(val patched.bytes), plain $(val plain.bytes), plain-same $(val plain-same.bytes)"
  echo "  overhead, patched vs plain mirror: median $(val warm.overhead_pct) %, min $(val warm.overhead_min_pct) %;" \
    "vs the same bytes plainly mirrored: median $(val warm.overhead_same_pct) %"
  echo
  row "manifest GET, wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION (median of $WRK_ROUNDS)" "req/s" "p99 ms" "CPU us/req" "bad"
  row "----------------------------------------------------" ------------ ------------ ------------ ------------
  for key in "${WRK_ORDER[@]}"; do
    row "$key" "$(val "$key.rps")" "$(val "$key.p99")" "$(val "$key.cpu_us")" "$(val "$key.bad")"
  done
  echo "  extra proxy CPU per tag request, patched vs plain: $(val tag.extra_cpu_us) us"
  echo "  plain's req/s above patched's: by tag $(val tag.overhead_pct) %, by digest $(val digest.overhead_pct) %"
  echo "  tag requests wrk completed on the patched proxy: $(val wrk.tag_requests); counted there as served Patched (plus one HEAD check a round and the requests in flight when wrk stopped): $(val wrk.patched_served)"
  echo
  echo "target (from the issue):"
  printf '  %-4s warm patched pull within %s %% of the plain mirrored pull (median: %s %%)\n' \
    "$(awk -v a="${R[warm.overhead_pct]}" -v t="$TARGET_PCT" 'BEGIN { print ((a + 0 <= t) ? "PASS" : "FAIL") }')" \
    "$TARGET_PCT" "$(val warm.overhead_pct)"
} | tee "$WORK/table.txt"

if [[ -n "$RESULTS_FILE" ]]; then
  for k in $(printf '%s\n' "${!R[@]}" | sort); do printf '%s=%s\n' "$k" "${R[$k]}"; done >"$RESULTS_FILE"
  log "results written to $RESULTS_FILE"
fi
