#!/usr/bin/env bash
# benches/scaleout.sh: one replica against three (issue 16, "Measure"), on this machine, same
# upstream (a real docker-registry on loopback), each topology behind the loopback TCP
# balancer of tests/scaleout.rs, with its own stores, backing registry (docker-registry)
# and Redis (redis-server):
#   local-1      one replica, storage.backend = "local"
#   registry-1   one replica, storage.backend = "registry" + Redis
#   registry-3   three replicas, storage.backend = "registry" + Redis
# and, for each: the first full pull (skopeo) of a cold image (scan + patch + store, then
# every blob), warm manifest GETs by tag (wrk --latency: rate and p99), and the throughput
# of a cached 64 MiB blob (6 GETs, each on a new connection, so the balancer spreads them).
# The measurements are tests/scaleout/bench.rs's (#[ignore]d test), run against the release
# binary; this script builds it, runs it and prints the table, the ratios and the issue's
# target: warm manifest GET by tag over the registry backend at least 50 % of the local
# store's rate, p99 under 10 ms.
#
# On 2 cores the replicas, the registries, Redis, the balancer and wrk share the CPU, so
# the ratios say more than the absolute figures.
#
#   benches/scaleout.sh
#   SCALEOUT_WRK_DURATION=20s SCALEOUT_WRK_CONNS=64 benches/scaleout.sh
#   BENCH_PATCHPULL_BIN=target/release/patchpull benches/scaleout.sh   # skip the build
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[scaleout %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for tool in docker-registry redis-server skopeo wrk; do
  command -v "$tool" >/dev/null || { log "$tool is not installed (apt-get install docker-registry redis-server skopeo wrk)"; exit 1; }
done

if [[ -z "${BENCH_PATCHPULL_BIN:-}" ]]; then
  log "cargo build --release --bin patchpull (nice, bounded to 40 min)"
  timeout 2400 nice cargo build --release --bin patchpull >&2
  BENCH_PATCHPULL_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/patchpull"
fi
# The test's working directory is not ours: a relative path would not be found.
BENCH_PATCHPULL_BIN="$(realpath "$BENCH_PATCHPULL_BIN")"
export BENCH_PATCHPULL_BIN
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
out="$(timeout 1500 nice cargo test --test scaleout bench_one_replica_against_three \
  -- --ignored --nocapture 2>&1)" || { printf '%s\n' "$out" >&2; log "the benchmark failed"; exit 1; }
lines="$(printf '%s\n' "$out" | grep '^scaleout: ')" || { printf '%s\n' "$out" >&2; exit 1; }
log "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$lines" <<'PY'
import sys

rows = {}
for line in sys.argv[1].splitlines():
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    rows[fields["topology"]] = fields

def f(t, k):
    return float(rows[t][k])

print(f"{'topology':<12} {'replicas':>8} {'cold first pull':>16} {'patch runs':>10} "
      f"{'manifest by tag':>16} {'p99':>9} {'cached blob':>12}")
for t, r in rows.items():
    print(f"{t:<12} {r['replicas']:>8} {r['cold_first_pull_ms']:>13} ms {r['patch_runs']:>10} "
          f"{r['manifest_tag_rps']:>12} r/s {r['manifest_tag_p99_ms']:>6} ms "
          f"{r['cached_blob_mibps']:>7} MiB/s")
local, reg1, reg3 = "local-1", "registry-1", "registry-3"
ratio = f(reg1, "manifest_tag_rps") / f(local, "manifest_tag_rps")
print(f"registry-1 / local-1 manifest rate: {ratio:.2f}")
print(f"registry-3 / registry-1 manifest rate: "
      f"{f(reg3, 'manifest_tag_rps') / f(reg1, 'manifest_tag_rps'):.2f}")
print(f"registry-3 / local-1 manifest rate: "
      f"{f(reg3, 'manifest_tag_rps') / f(local, 'manifest_tag_rps'):.2f}")
print(f"registry-1 / local-1 cached blob: "
      f"{f(reg1, 'cached_blob_mibps') / f(local, 'cached_blob_mibps'):.2f}")
print(f"cold first pull, registry-3 / local-1: "
      f"{f(reg3, 'cold_first_pull_ms') / f(local, 'cold_first_pull_ms'):.2f}, "
      f"registry-3 / registry-1: "
      f"{f(reg3, 'cold_first_pull_ms') / f(reg1, 'cold_first_pull_ms'):.2f}")
p99 = max(f(reg1, "manifest_tag_p99_ms"), f(reg3, "manifest_tag_p99_ms"))
ok = ratio >= 0.5 and p99 < 10
print(f"target (registry >= 50 % of local, p99 < 10 ms): {'PASS' if ok else 'FAIL'} "
      f"(ratio {ratio:.2f}, p99 {p99:.2f} ms)")
PY
