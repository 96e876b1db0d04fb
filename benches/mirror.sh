#!/usr/bin/env bash
# benches/mirror.sh: patchpull against distribution's pull-through cache, side by side.
#
# One run starts a real distribution registry as the upstream on 127.0.0.1, pushes a small
# test image and a 1 GiB blob into it with curl, then puts two proxies in front of it
# (distribution in proxy mode, and patchpull) and measures, one proxy at a time:
#   - warm manifest GET by tag and by digest (wrk, 2 threads, 32 connections)
#   - cold 1 GiB blob GET (fresh store every run), cached 1 GiB blob GET (second GET)
#   - peak RSS (VmHWM of a freshly started process) while serving 8 concurrent 1 GiB GETs,
#     once from a warm store and once cold (all 8 arrive before anything is cached)
# plus plain-copy baselines of the same file. Prints one table at the end.
#
# Everything it starts lives under one temp directory and is stopped by PID on exit.
# Usage: benches/mirror.sh            (see benches/README.md for the knobs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# --- knobs -------------------------------------------------------------------------------
BLOB_SIZE="${BENCH_BLOB_SIZE:-1G}"            # head -c syntax: 1G = 1 GiB
WRK_THREADS="${BENCH_WRK_THREADS:-2}"
WRK_CONNS="${BENCH_WRK_CONNS:-32}"
WRK_DURATION="${BENCH_WRK_DURATION:-10s}"
COLD_RUNS="${BENCH_COLD_RUNS:-3}"              # each on a fresh store; the median is reported
CACHED_RUNS="${BENCH_CACHED_RUNS:-3}"          # median reported
CONCURRENT="${BENCH_CONCURRENT:-8}"            # parallel GETs for the RSS measurement
PROXIES="${BENCH_PROXIES:-distribution patchpull}"
BLOB_TIMEOUT="${BENCH_BLOB_TIMEOUT:-300}"      # seconds, per 1 GiB transfer
START_TIMEOUT="${BENCH_START_TIMEOUT:-30}"     # seconds, per process start
WORK_PARENT="${BENCH_TMPDIR:-${TMPDIR:-/tmp}}"
KEEP="${BENCH_KEEP:-0}"                        # 1: keep the temp dir (logs, stores)
RESULTS_FILE="${BENCH_RESULTS:-}"              # also write key=value results here
PATCHPULL_BIN="${BENCH_PATCHPULL_BIN:-}"       # skip the build and use this binary
# (not PATCHPULL_*: patchpull reads every PATCHPULL_* variable as configuration)
ACCEPT="application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

SMALL_REPO="bench/small"
BIG_REPO="bench/big"
TAG="latest"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

for tool in docker-registry wrk curl python3 sha256sum gzip tar busybox timeout; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install docker-registry wrk curl busybox)"
done

# build first, so that a failing build wastes nothing and its load is over before measuring
if [[ " $PROXIES " == *" patchpull "* && -z "$PATCHPULL_BIN" ]]; then
  log "cargo build --release (bounded to 30 min)"
  (cd "$ROOT" && timeout 1800 cargo build --release --bin patchpull >&2) || die "release build failed"
  PATCHPULL_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/patchpull"
fi
[[ " $PROXIES " != *" patchpull "* || -x "$PATCHPULL_BIN" ]] || die "no patchpull binary at $PATCHPULL_BIN"

# --- processes and cleanup ------------------------------------------------------------------
WORK="$(mktemp -d "$WORK_PARENT/patchpull-bench.XXXXXX")"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
declare -a PIDS=()

stop_pid() { # stop_pid PID: TERM, then KILL after 10 s; only our own children
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
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

# --- upstream: a real distribution registry -------------------------------------------------
write_registry_config() { # write_registry_config FILE STOREDIR PORT [REMOTEURL]
  local file="$1" store="$2" port="$3" remote="${4:-}"
  cat >"$file" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $store
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: false
http:
  addr: 127.0.0.1:$port
EOF
  if [[ -n "$remote" ]]; then
    printf 'proxy:\n  remoteurl: %s\n' "$remote" >>"$file"
  fi
}

UP_PORT="$(free_port)"
UP="http://127.0.0.1:$UP_PORT"
mkdir -p "$WORK/upstream"
write_registry_config "$WORK/upstream.yml" "$WORK/upstream/store" "$UP_PORT"
docker-registry serve "$WORK/upstream.yml" >"$WORK/upstream/log" 2>&1 &
PIDS+=($!)
wait_http "$UP/v2/"
log "upstream distribution on $UP"

# --- a tiny pusher ---------------------------------------------------------------------------
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

push_blob() { # push_blob REPO FILE: monolithic upload (POST, then PUT ?digest=)
  local repo="$1" file="$2" digest location code
  digest="sha256:$(sha256_of "$file")"
  location="$(curl -sS --max-time 30 -X POST -o /dev/null -D - "$UP/v2/$repo/blobs/uploads/" \
    | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')"
  [[ -n "$location" ]] || die "no upload location for $repo"
  [[ "$location" == /* ]] && location="$UP$location"
  if [[ "$location" == *\?* ]]; then location="$location&digest=$digest"; else location="$location?digest=$digest"; fi
  # -T streams the file; --data-binary @file would hold 1 GiB in curl's memory.
  code="$(curl -sS --max-time "$BLOB_TIMEOUT" -o /dev/null -w '%{http_code}' -X PUT \
    -H 'Content-Type: application/octet-stream' -T "$file" "$location")"
  [[ "$code" == 201 ]] || die "blob upload of $file to $repo answered $code"
  printf '%s' "$digest"
}

push_manifest() { # push_manifest REPO TAG FILE MEDIATYPE: prints the digest upstream reports
  local repo="$1" tag="$2" file="$3" mt="$4" out code digest
  out="$(curl -sS --max-time 30 -X PUT -H "Content-Type: $mt" --data-binary "@$file" \
    -D - -o /dev/null -w '%{http_code}' "$UP/v2/$repo/manifests/$tag" | tr -d '\r')"
  code="$(tail -n1 <<<"$out")"
  [[ "$code" == 201 ]] || die "manifest PUT $repo:$tag answered $code"
  digest="$(sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p' <<<"$out")"
  [[ "$digest" == "sha256:$(sha256_of "$file")" ]] || die "upstream digest $digest differs from the pushed bytes"
  printf '%s' "$digest"
}

make_image() { # make_image REPO LAYERFILE LAYERMEDIATYPE DIFFID: pushes config+layer+manifest
  local repo="$1" layer="$2" layer_mt="$3" diff_id="$4" dir="$WORK/img-${1//\//_}"
  local layer_digest layer_size config_digest config_size
  mkdir -p "$dir"
  layer_digest="$(push_blob "$repo" "$layer")"
  layer_size="$(stat -c %s "$layer")"
  printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$diff_id" >"$dir/config.json"
  config_digest="$(push_blob "$repo" "$dir/config.json")"
  config_size="$(stat -c %s "$dir/config.json")"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"%s","digest":"%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_mt" "$layer_digest" "$layer_size" >"$dir/manifest.json"
  push_manifest "$repo" "$TAG" "$dir/manifest.json" "application/vnd.oci.image.manifest.v1+json"
}

# Small image: one gzip layer holding one file.
mkdir -p "$WORK/small/root/etc"
echo "patchpull bench $(date +%s)" >"$WORK/small/root/etc/bench"
tar --sort=name --mtime=@0 --owner=0 --group=0 -C "$WORK/small/root" -cf "$WORK/small/layer.tar" etc
gzip -n -c "$WORK/small/layer.tar" >"$WORK/small/layer.tar.gz"
SMALL_DIGEST="$(make_image "$SMALL_REPO" "$WORK/small/layer.tar.gz" \
  application/vnd.oci.image.layer.v1.tar+gzip "sha256:$(sha256_of "$WORK/small/layer.tar")")"
log "pushed $SMALL_REPO:$TAG = $SMALL_DIGEST"

# Big image: one uncompressed layer of random bytes (registries never look inside layers).
mkdir -p "$WORK/big"
BLOB="$WORK/big/blob"
log "writing $BLOB_SIZE of /dev/urandom"
head -c "$BLOB_SIZE" /dev/urandom >"$BLOB"
BLOB_BYTES="$(stat -c %s "$BLOB")"
BLOB_HEX="$(sha256_of "$BLOB")"
BLOB_DIGEST="sha256:$BLOB_HEX"
if ((BLOB_BYTES == 1073741824)); then BLOB_LABEL="1 GiB"; else BLOB_LABEL="$BLOB_SIZE"; fi
log "pushing the $BLOB_BYTES-byte blob $BLOB_DIGEST"
BIG_DIGEST="$(make_image "$BIG_REPO" "$BLOB" application/vnd.oci.image.layer.v1.tar "$BLOB_DIGEST")"
log "pushed $BIG_REPO:$TAG = $BIG_DIGEST"
BLOB_PATH="/v2/$BIG_REPO/blobs/$BLOB_DIGEST"

# --- measurement helpers -----------------------------------------------------------------------
declare -A R=()   # results: R[proxy.metric]=value

mib_s() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

median() { # median v1 v2 ...: middle value (lower middle for an even count)
  printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

get_blob() { # get_blob URL: prints bytes/s; dies unless 200 with the full size
  local url="$1" out code size speed
  out="$(curl -sS --max-time "$BLOB_TIMEOUT" -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$url")" \
    || die "GET $url failed"
  read -r code size speed <<<"$out"
  [[ "$code" == 200 && "$size" == "$BLOB_BYTES" ]] || die "GET $url: status $code, $size bytes (want 200, $BLOB_BYTES)"
  printf '%s' "$speed"
}

verify_blob() { # verify_blob URL: the bytes served hash to the digest (untimed)
  local got
  got="$(curl -sS --max-time "$BLOB_TIMEOUT" "$1" | sha256sum | cut -d' ' -f1)"
  [[ "$got" == "$BLOB_HEX" ]] || die "GET $1 served content with sha256 $got, want $BLOB_HEX"
}

wait_settled() { # wait_settled DIR: the store holds the blob and has stopped growing (fills finish after the client does)
  local dir="$1" prev=-1 cur stable=0 deadline=$((SECONDS + BLOB_TIMEOUT))
  while ((SECONDS < deadline)); do
    cur="$(du -sb "$dir" 2>/dev/null | cut -f1)"
    if ((cur >= BLOB_BYTES)) && [[ "$cur" == "$prev" ]]; then
      stable=$((stable + 1))
      if ((stable >= 3)); then return 0; fi
    else
      stable=0
    fi
    prev="$cur"
    sleep 0.5
  done
  die "$dir did not settle within ${BLOB_TIMEOUT}s"
}

to_ms() { # to_ms 1.23ms | 850.00us | 1.2s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
    else printf "%s", v }'
}

run_wrk() { # run_wrk PROXY METRIC URL
  local proxy="$1" metric="$2" url="$3" out rps p99 non2xx errors code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Accept: $ACCEPT" "$url" || true)"
  [[ "$code" == 200 ]] || die "$proxy: GET $url answered $code before wrk"
  out="$(timeout 120 wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 5s --latency \
    -H "Accept: $ACCEPT" "$url")" || die "wrk against $url failed"
  printf '%s\n' "$out" >>"$WORK/wrk-$proxy.txt"
  rps="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")"
  p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")"
  errors="$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' <<<"$out")"
  R[$proxy.$metric.rps]="$rps"
  R[$proxy.$metric.p99]="$p99"
  R[$proxy.$metric.bad]="$((${non2xx:-0} + ${errors:-0}))"
  log "$proxy $metric: $rps req/s, p99 $p99 ms, non-2xx/socket errors ${R[$proxy.$metric.bad]}"
}

# --- baselines -------------------------------------------------------------------------------
# page cache read: the file is hot (it was just written and hashed)
t0="$(date +%s.%N)"
cat "$BLOB" >/dev/null
t1="$(date +%s.%N)"
R[base.cat]="$(awk -v b="$BLOB_BYTES" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.0f", b / (z - a) }')"
R[base.curlfile]="$(curl -sS --max-time "$BLOB_TIMEOUT" -o /dev/null -w '%{speed_download}' "file://$BLOB")"
# loopback HTTP copy from a trivial static server (busybox httpd, one process per connection)
HTTPD_PORT="$(free_port)"
mkdir -p "$WORK/static"
ln "$BLOB" "$WORK/static/blob"
busybox httpd -f -p "127.0.0.1:$HTTPD_PORT" -h "$WORK/static" &
PIDS+=($!)
deadline=$((SECONDS + START_TIMEOUT))
until curl -s -o /dev/null --max-time 1 -r 0-0 "http://127.0.0.1:$HTTPD_PORT/blob"; do
  ((SECONDS < deadline)) || die "busybox httpd did not start"
  sleep 0.1
done
speeds=()
for i in $(seq 1 "$CACHED_RUNS"); do speeds+=("$(get_blob "http://127.0.0.1:$HTTPD_PORT/blob")"); done
R[base.httpd]="$(median "${speeds[@]}")"
# the upstream registry itself, no proxy
speeds=()
for i in $(seq 1 "$CACHED_RUNS"); do speeds+=("$(get_blob "$UP$BLOB_PATH")"); done
R[base.upstream]="$(median "${speeds[@]}")"
log "baselines: cat $(mib_s "${R[base.cat]}") MiB/s, curl file:// $(mib_s "${R[base.curlfile]}") MiB/s," \
  "busybox httpd $(mib_s "${R[base.httpd]}") MiB/s, upstream direct $(mib_s "${R[base.upstream]}") MiB/s"

# --- the proxies -----------------------------------------------------------------------------
PROXY_PID=""
PROXY_URL=""

start_proxy() { # start_proxy KIND STOREDIR
  local kind="$1" store="$2" port deadline line
  mkdir -p "$store"
  case "$kind" in
    distribution)
      port="$(free_port)"
      write_registry_config "$WORK/dist.yml" "$store" "$port" "$UP"
      docker-registry serve "$WORK/dist.yml" >>"$WORK/dist.log" 2>&1 &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      PROXY_URL="http://127.0.0.1:$port"
      ;;
    patchpull)
      cat >"$WORK/patchpull.toml" <<EOF
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[storage]
path = "$store"
max_size = "20GiB"

[log]
level = "warn"

# The mirror alone: a tag pull of these synthetic images must not start a patch job.
[patch]
mode = "off"

[[upstream]]
name = "bench-upstream"
url = "$UP"
default = true
EOF
      : >"$WORK/patchpull.out"
      # the config file alone decides: drop any PATCHPULL_* variable from the caller's env
      # shellcheck disable=SC2046
      env $(compgen -e | grep '^PATCHPULL_' | sed 's/^/-u /') \
        "$PATCHPULL_BIN" serve --config "$WORK/patchpull.toml" >"$WORK/patchpull.out" 2>>"$WORK/patchpull.log" &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      deadline=$((SECONDS + START_TIMEOUT))
      PROXY_URL=""
      while [[ -z "$PROXY_URL" ]]; do
        line="$(grep -m1 -o 'patchpull listening on http://[0-9.:]*' "$WORK/patchpull.out" || true)"
        PROXY_URL="${line#patchpull listening on }"
        [[ -n "$PROXY_URL" ]] && break
        kill -0 "$PROXY_PID" 2>/dev/null || die "patchpull exited: $(tail -n 20 "$WORK/patchpull.log")"
        ((SECONDS < deadline)) || die "patchpull printed no listening line within ${START_TIMEOUT}s"
        sleep 0.1
      done
      ;;
  esac
  wait_http "$PROXY_URL/v2/"
}

stop_proxy() {
  if [[ -n "$PROXY_PID" ]]; then stop_pid "$PROXY_PID"; fi
  PROXY_PID=""
}

kib_of() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

concurrent_gets() { # concurrent_gets PROXY LABEL: CONCURRENT parallel blob GETs on a fresh process
  local proxy="$1" label="$2" i pids=() t0 t1 peak=0 rss hwm
  t0="$(date +%s.%N)"
  for i in $(seq 1 "$CONCURRENT"); do
    curl -sS --max-time "$BLOB_TIMEOUT" -o /dev/null -w '%{http_code} %{size_download}\n' \
      "$PROXY_URL$BLOB_PATH" >"$WORK/conc-$i.out" 2>&1 &
    pids+=($!)
  done
  # poll VmRSS too, as a cross-check of VmHWM
  while :; do
    rss="$(kib_of "$PROXY_PID" VmRSS || echo 0)"
    if ((rss > peak)); then peak="$rss"; fi
    local running=0
    for i in "${pids[@]}"; do if kill -0 "$i" 2>/dev/null; then running=1; fi; done
    if ((running == 0)); then break; fi
    sleep 0.05
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  t1="$(date +%s.%N)"
  hwm="$(kib_of "$PROXY_PID" VmHWM)"
  for i in $(seq 1 "$CONCURRENT"); do
    [[ "$(cat "$WORK/conc-$i.out")" == "200 $BLOB_BYTES" ]] \
      || die "$proxy $label concurrent GET $i: $(cat "$WORK/conc-$i.out")"
  done
  R[$proxy.hwm_$label]="$hwm"
  R[$proxy.rsspoll_$label]="$peak"
  R[$proxy.agg_$label]="$(awk -v b="$BLOB_BYTES" -v n="$CONCURRENT" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.0f", b * n / (z - a) }')"
  log "$proxy $label ${CONCURRENT}x: VmHWM $((hwm / 1024)) MiB (polled VmRSS max $((peak / 1024)) MiB)," \
    "aggregate $(mib_s "${R[$proxy.agg_$label]}") MiB/s"
}

bench_proxy() {
  local proxy="$1" i store speeds=()

  # cold: a fresh store and a fresh process every run
  for i in $(seq 1 "$COLD_RUNS"); do
    store="$WORK/$proxy-store"
    rm -rf "$store"
    start_proxy "$proxy" "$store"
    speeds+=("$(get_blob "$PROXY_URL$BLOB_PATH")")
    log "$proxy cold run $i: $(mib_s "${speeds[-1]}") MiB/s"
    if ((i < COLD_RUNS)); then stop_proxy; fi
  done
  R[$proxy.cold]="$(median "${speeds[@]}")"

  # cached: the same process, once its store holds the whole blob
  wait_settled "$store"
  speeds=()
  for i in $(seq 1 "$CACHED_RUNS"); do
    speeds+=("$(get_blob "$PROXY_URL$BLOB_PATH")")
    log "$proxy cached run $i: $(mib_s "${speeds[-1]}") MiB/s"
  done
  R[$proxy.cached]="$(median "${speeds[@]}")"
  verify_blob "$PROXY_URL$BLOB_PATH"

  # warm manifests
  run_wrk "$proxy" tag "$PROXY_URL/v2/$SMALL_REPO/manifests/$TAG"
  run_wrk "$proxy" digest "$PROXY_URL/v2/$SMALL_REPO/manifests/$SMALL_DIGEST"
  stop_proxy

  # peak RSS, warm store, fresh process
  start_proxy "$proxy" "$store"
  R[$proxy.idle_rss]="$(kib_of "$PROXY_PID" VmRSS)"
  concurrent_gets "$proxy" cached
  stop_proxy

  # peak RSS, cold store, fresh process: all requests arrive before anything is cached
  rm -rf "$store"
  start_proxy "$proxy" "$store"
  concurrent_gets "$proxy" cold
  stop_proxy
  rm -rf "$store"
}

for proxy in $PROXIES; do
  log "=== $proxy ==="
  bench_proxy "$proxy"
done

# --- report ------------------------------------------------------------------------------------
val() { printf '%s' "${R[$1]:-n/a}"; }
mib_or_na() { [[ -n "${R[$1]:-}" ]] && mib_s "${R[$1]}" || printf 'n/a'; }
kib_to_mib() { [[ -n "${R[$1]:-}" ]] && awk -v k="${R[$1]}" 'BEGIN { printf "%.1f", k / 1024 }' || printf 'n/a'; }

row() { printf '%-44s %14s %14s\n' "$@"; }
{
  echo
  echo "patchpull mirror benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, blob $BLOB_BYTES bytes"
  echo "load average at start: $LOAD_AT_START (anything else busy on the machine skews every figure)"
  echo "wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION --latency; cold/cached = median of $COLD_RUNS/$CACHED_RUNS runs"
  echo
  row "metric" "distribution" "patchpull"
  row "--------------------------------------------" "------------" "---------"
  row "manifest by tag, req/s" "$(val distribution.tag.rps)" "$(val patchpull.tag.rps)"
  row "manifest by tag, p99 ms" "$(val distribution.tag.p99)" "$(val patchpull.tag.p99)"
  row "manifest by digest, req/s" "$(val distribution.digest.rps)" "$(val patchpull.digest.rps)"
  row "manifest by digest, p99 ms" "$(val distribution.digest.p99)" "$(val patchpull.digest.p99)"
  row "manifest non-2xx + socket errors (tag/digest)" \
    "$(val distribution.tag.bad)/$(val distribution.digest.bad)" "$(val patchpull.tag.bad)/$(val patchpull.digest.bad)"
  row "cold $BLOB_LABEL GET, MiB/s" "$(mib_or_na distribution.cold)" "$(mib_or_na patchpull.cold)"
  row "cached $BLOB_LABEL GET, MiB/s" "$(mib_or_na distribution.cached)" "$(mib_or_na patchpull.cached)"
  row "idle RSS after start, MiB" "$(kib_to_mib distribution.idle_rss)" "$(kib_to_mib patchpull.idle_rss)"
  row "peak RSS, ${CONCURRENT}x cached GET (VmHWM), MiB" "$(kib_to_mib distribution.hwm_cached)" "$(kib_to_mib patchpull.hwm_cached)"
  row "peak RSS, ${CONCURRENT}x cold GET (VmHWM), MiB" "$(kib_to_mib distribution.hwm_cold)" "$(kib_to_mib patchpull.hwm_cold)"
  row "${CONCURRENT}x cached GET aggregate, MiB/s" "$(mib_or_na distribution.agg_cached)" "$(mib_or_na patchpull.agg_cached)"
  row "${CONCURRENT}x cold GET aggregate, MiB/s" "$(mib_or_na distribution.agg_cold)" "$(mib_or_na patchpull.agg_cold)"
  echo
  echo "baselines (same file, same machine):"
  printf '  %-40s %8s MiB/s\n' "cat FILE > /dev/null (page cache)" "$(mib_s "${R[base.cat]}")"
  printf '  %-40s %8s MiB/s\n' "curl -o /dev/null file://FILE" "$(mib_s "${R[base.curlfile]}")"
  printf '  %-40s %8s MiB/s\n' "curl from busybox httpd (loopback copy)" "$(mib_s "${R[base.httpd]}")"
  printf '  %-40s %8s MiB/s\n' "curl from the upstream registry direct" "$(mib_s "${R[base.upstream]}")"
  echo "  (the last two: median of $CACHED_RUNS runs)"
} | tee "$WORK/table.txt"

# targets from the issue; "plain copy" = curl from busybox httpd over loopback
if [[ -n "${R[patchpull.cold]:-}" ]]; then
  check() { # check NAME CONDITION(awk expr over a,b)
    local name="$1" a="$2" b="$3" expr="$4" ok
    ok="$(awk -v a="$a" -v b="$b" "BEGIN { print (($expr) ? \"PASS\" : \"FAIL\") }")"
    printf '  %-4s %s\n' "$ok" "$name"
  }
  {
    echo
    echo "targets (patchpull):"
    check "manifest by tag >= 20000 req/s, p99 < 10 ms" "$(val patchpull.tag.rps)" "$(val patchpull.tag.p99)" 'a >= 20000 && b < 10'
    check "manifest by digest >= 20000 req/s, p99 < 10 ms" "$(val patchpull.digest.rps)" "$(val patchpull.digest.p99)" 'a >= 20000 && b < 10'
    if [[ -n "${R[distribution.cold]:-}" ]]; then
      check "cold $BLOB_LABEL >= 1.5x distribution ($(awk -v a="${R[patchpull.cold]}" -v b="${R[distribution.cold]}" 'BEGIN { printf "%.2fx", a / b }'))" \
        "${R[patchpull.cold]}" "${R[distribution.cold]}" 'a >= 1.5 * b'
      check "cached $BLOB_LABEL >= distribution" "${R[patchpull.cached]}" "${R[distribution.cached]}" 'a >= b'
    fi
    check "cached $BLOB_LABEL >= 90% of the loopback copy ($(awk -v a="${R[patchpull.cached]}" -v b="${R[base.httpd]}" 'BEGIN { printf "%.0f%%", 100 * a / b }'))" \
      "${R[patchpull.cached]}" "${R[base.httpd]}" 'a >= 0.9 * b'
    check "peak RSS < 64 MiB, ${CONCURRENT}x cached" "${R[patchpull.hwm_cached]}" 0 'a < 65536'
    check "peak RSS < 64 MiB, ${CONCURRENT}x cold" "${R[patchpull.hwm_cold]}" 0 'a < 65536'
  } | tee -a "$WORK/table.txt"
fi

if [[ -n "$RESULTS_FILE" ]]; then
  for k in $(printf '%s\n' "${!R[@]}" | sort); do printf '%s=%s\n' "$k" "${R[$k]}"; done >"$RESULTS_FILE"
  log "results written to $RESULTS_FILE"
fi
