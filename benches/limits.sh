#!/usr/bin/env bash
# benches/limits.sh: peak RSS and throughput of 1,000 concurrent blob pulls (issue 19, defect 4),
# for one or two patchpull binaries side by side ("before" and "after").
#
# A real distribution registry on 127.0.0.1 is the upstream; one blob of BENCH_BLOB_SIZE
# random bytes is pushed into it. For each binary and scenario a fresh patchpull process is
# started and BENCH_CLIENTS transfers of that blob run at once (curl --parallel, 4 processes
# of up to 250 transfers each; curl caps --parallel-max at 300):
#   cold  - empty store: every transfer arrives before anything is cached
#   warm  - the blob is in the store (primed by one GET, then the process is restarted)
#   h2    - warm, HTTP/2 prior knowledge, --parallel-immediate: curl opens a connection per
#           transfer (1,000 connections at once, one stream each), as the earlier runs did
#   h2mux - warm, HTTP/2 prior knowledge, multiplexed: each curl waits for its first
#           connection and puts up to the server's stream limit (100) on each connection.
#           Not in the default list: it needs curl >= 8.0; 7.88 (Debian 12) fails every
#           transfer that reuses a prior-knowledge connection with "Error in the HTTP2
#           framing layer" before sending it (curl/curl#10634, fixed by #10643)
# Reported: VmHWM of the patchpull process (/proc/PID/status), wall time, aggregate MiB/s,
# and how many transfers did not end 200 with the full size.
#
# Usage: BENCH_BEFORE=/work/main/target/release/patchpull BENCH_AFTER=target/release/patchpull benches/limits.sh
# Everything it starts lives under one temp directory and is stopped by PID on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BLOB_SIZE="${BENCH_BLOB_SIZE:-8M}"
CLIENTS="${BENCH_CLIENTS:-1000}"
SCENARIOS="${BENCH_SCENARIOS:-cold warm h2}"
BEFORE="${BENCH_BEFORE:-}"
AFTER="${BENCH_AFTER:-$ROOT/target/release/patchpull}"
TIMEOUT="${BENCH_TIMEOUT:-300}"
WORK_PARENT="${BENCH_TMPDIR:-${TMPDIR:-/tmp}}"
RESULTS_FILE="${BENCH_RESULTS:-}"
# Extra `[server]` lines, e.g. BENCH_SERVER_EXTRA='http2_max_concurrent_streams = 250'.
SERVER_EXTRA="${BENCH_SERVER_EXTRA:-}"

log() { printf '[limits %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
for tool in docker-registry curl python3 sha256sum timeout; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install docker-registry curl)"
done
[[ -x "$AFTER" ]] || die "no binary at $AFTER (cargo build --release, or set BENCH_AFTER)"
[[ -z "$BEFORE" || -x "$BEFORE" ]] || die "no binary at $BEFORE"
# 1,000 client sockets plus 1,000 server sockets.
ulimit -n "$(ulimit -Hn)"

WORK="$(mktemp -d "$WORK_PARENT/patchpull-limits.XXXXXX")"
# patchpull refuses a storage.path under a directory its sandbox user cannot search.
chmod 711 "$WORK"
declare -a PIDS=()
cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    [[ -n "${PP_PID:-}" ]] && ! kill -0 "$PP_PID" 2>/dev/null && break
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)" == 200 ]] && return 0
    sleep 0.1
  done
  [[ -s "$WORK/pp.err" ]] && tail -n 20 "$WORK/pp.err" >&2
  die "$1 did not answer"
}

UP_PORT="$(free_port)"
cat >"$WORK/upstream.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/upstream}, delete: {enabled: false}}
http: {addr: 127.0.0.1:$UP_PORT}
YML
docker-registry serve "$WORK/upstream.yml" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
UP="http://127.0.0.1:$UP_PORT"
wait_http "$UP/v2/"

head -c "$BLOB_SIZE" /dev/urandom >"$WORK/blob"
BYTES="$(stat -c %s "$WORK/blob")"
DIGEST="sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)"
loc="$(curl -sS -X POST -D - -o /dev/null "$UP/v2/bench/big/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')"
[[ "$loc" == /* ]] && loc="$UP$loc"
[[ "$loc" == *\?* ]] && loc="$loc&digest=$DIGEST" || loc="$loc?digest=$DIGEST"
[[ "$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -T "$WORK/blob" "$loc")" == 201 ]] || die "blob push failed"
log "upstream $UP holds $DIGEST ($BYTES bytes)"

PP_PID=""; PP_URL=""
start_pp() { # start_pp BIN STORE
  local port; port="$(free_port)"
  cat >"$WORK/pp.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
$SERVER_EXTRA
[storage]
path = "$2"
[log]
level = "error"
[patch]
mode = "off"
[[upstream]]
name = "local"
url = "$UP"
default = true
TOML
  "$1" serve --config "$WORK/pp.toml" >"$WORK/pp.out" 2>"$WORK/pp.err" &
  PP_PID=$!
  PIDS+=("$PP_PID")
  PP_URL="http://127.0.0.1:$port"
  wait_http "$PP_URL/v2/"
}
stop_pp() { kill "$PP_PID" 2>/dev/null || true; wait "$PP_PID" 2>/dev/null || true; }

# run_clients URL [curl options]: CLIENTS transfers at once; prints "seconds failures".
run_clients() {
  local url="$1"; shift
  local per=$(( (CLIENTS + 3) / 4 )) i j start end
  start="$(date +%s.%N)"
  for ((i = 0; i < 4; i++)); do
    local args=()
    for ((j = 0; j < per && i * per + j < CLIENTS; j++)); do args+=(-o /dev/null "$url"); done
    timeout "$TIMEOUT" curl -s "$@" --parallel --parallel-max 300 \
      -w '%{http_code} %{size_download}\n' "${args[@]}" >"$WORK/clients.$i" 2>/dev/null &
  done
  wait   # a subshell (process substitution): its only children are the curls
  end="$(date +%s.%N)"
  local bad
  bad="$(cat "$WORK"/clients.* | awk -v n="$BYTES" '$1 != 200 || $2 != n' | wc -l)"
  local got; got="$(cat "$WORK"/clients.* | wc -l)"
  bad=$((bad + CLIENTS - got))
  rm -f "$WORK"/clients.*
  echo "$(echo "$end - $start" | bc -l) $bad"
}

hwm_mib() { awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

declare -A R=()
measure() { # measure LABEL BIN SCENARIO
  local label="$1" bin="$2" scenario="$3" store="$WORK/store-$1" secs bad url
  rm -rf "$store"
  url="/v2/bench/big/blobs/$DIGEST"
  if [[ "$scenario" != cold ]]; then
    start_pp "$bin" "$store"
    curl -sf -o /dev/null "$PP_URL$url" || die "priming GET failed"
    sleep 2   # the fill's fsync and commit
    stop_pp
  fi
  start_pp "$bin" "$store"
  local opts=(--parallel-immediate)
  [[ "$scenario" == h2 ]] && opts+=(--http2-prior-knowledge)
  [[ "$scenario" == h2mux ]] && opts=(--http2-prior-knowledge)
  nstat -n 2>/dev/null || true
  read -r secs bad < <(run_clients "$PP_URL$url" "${opts[@]}")
  # Resets for a cookie that failed its check: an overflowing listen backlog (docs/reliability.md).
  R[$label.$scenario.cookies]="$(nstat -z 2>/dev/null | awk '$1 == "TcpExtSyncookiesFailed" {print $2}')"
  R[$label.$scenario.rss]="$(hwm_mib "$PP_PID")"
  R[$label.$scenario.secs]="$(printf '%.2f' "$secs")"
  R[$label.$scenario.mibs]="$(echo "$CLIENTS * $BYTES / 1048576 / $secs" | bc -l | xargs printf '%.0f')"
  R[$label.$scenario.bad]="$bad"
  stop_pp
  R[$label.$scenario.load]="$(cut -d' ' -f1 /proc/loadavg)"
  log "$label $scenario: peak RSS ${R[$label.$scenario.rss]} MiB, ${R[$label.$scenario.secs]} s, ${R[$label.$scenario.mibs]} MiB/s, $bad not complete, SYN cookies failed ${R[$label.$scenario.cookies]:-?}, load ${R[$label.$scenario.load]}"
}

LABELS=()
[[ -n "$BEFORE" ]] && LABELS+=(before)
LABELS+=(after)
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for scenario in $SCENARIOS; do
  for label in "${LABELS[@]}"; do
    if [[ "$label" == before ]]; then bin="$BEFORE"; else bin="$AFTER"; fi
    measure "$label" "$bin" "$scenario"
  done
done

printf '\n%s transfers of one %s blob at once; load average at end %s\n\n' "$CLIENTS" "$BLOB_SIZE" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| scenario | binary | peak RSS (MiB) | wall (s) | aggregate MiB/s | not complete | SYN cookies failed | load (1 min) |\n|---|---|---:|---:|---:|---:|---:|---:|\n'
for scenario in $SCENARIOS; do
  for label in "${LABELS[@]}"; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$scenario" "$label" "${R[$label.$scenario.rss]}" \
      "${R[$label.$scenario.secs]}" "${R[$label.$scenario.mibs]}" "${R[$label.$scenario.bad]}" \
      "${R[$label.$scenario.cookies]:-?}" "${R[$label.$scenario.load]}"
  done
done
if [[ -n "$RESULTS_FILE" ]]; then
  for k in "${!R[@]}"; do echo "$k=${R[$k]}"; done | sort >"$RESULTS_FILE"
fi
