#!/usr/bin/env bash
# Trainyard in front of a cluster engine vs the engine alone, on this machine:
# Trainyard→Slurm vs `sbatch`, Trainyard→Ray vs Ray's Jobs API. Starts the engines of
# tests/cluster/start.sh and one `trainyard up` with a Slurm pool and a Ray pool, runs
#   1. idle submit→start, one job at a time, both paths in turns (PROBES each, per engine)
#   2. a burst of JOBS jobs through each Slurm path
#   3. a trial of RAY_TRIAL jobs through each Ray path, then a burst of RAY_JOBS each
# and stops everything (also on failure or Ctrl-C).
#
#   sudo bench/cluster/run.sh                    # the whole comparison (about an hour)
#   JOBS=50 RAY_JOBS=20 RAY_TRIAL=0 PROBES=5 bench/cluster/run.sh   # quick trial
#   JOBS=0 RAY_JOBS=0 RAY_TRIAL=0 PROBES=60 bench/cluster/run.sh    # idle latency only
#
# Environment:
#   TRAINYARD_BIN  server binary (default /var/tmp/trainyard-target/release/trainyard)
#   JOBS           Slurm jobs per path (default 1000; 0 = no Slurm burst)
#   RAY_JOBS       Ray jobs per path (default auto: 1000 unless the trial says 1000 would
#                  take over RAY_BUDGET_S on the slower path, then RAY_FALLBACK=200;
#                  0 = no Ray burst)
#   RAY_TRIAL      jobs per path in the Ray trial (default 50; 0 = none)
#   PROBES         idle one-at-a-time jobs per path and engine (default 30)
#   ENGINES        "slurm ray" (default), or one of them
#   ORDER          how the Slurm bursts run: "abba" (default: JOBS/2 direct, JOBS/2
#                  Trainyard, JOBS/2 Trainyard, JOBS/2 direct, pooled per path in the
#                  report) or "ab" (JOBS direct, then JOBS Trainyard). slurmctld keeps ended
#                  jobs MinJobAge (600) s, so in "ab" the second burst always runs beside the
#                  first one's ~JOBS records; "abba" gives both paths the same share.
#   CLUSTER_DIR    the engines' folder (default /tmp/bench-cluster)
#   OUT            results (default bench/cluster/results/<time>, git-ignored)
#   LISTEN, GRPC_LISTEN  Trainyard's ports (default 127.0.0.1:18600, :18601)
# Root is needed (the engines run as root). Run on an otherwise idle machine.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TRAINYARD_BIN=${TRAINYARD_BIN:-/var/tmp/trainyard-target/release/trainyard}
JOBS=${JOBS:-1000}
RAY_JOBS=${RAY_JOBS:-auto}
RAY_TRIAL=${RAY_TRIAL:-50}
RAY_BUDGET_S=${RAY_BUDGET_S:-900}
RAY_FALLBACK=${RAY_FALLBACK:-200}
PROBES=${PROBES:-30}
# engine_queue of both pools (empty: the server's default).
ENGINE_QUEUE=${ENGINE_QUEUE:-}
ENGINES=${ENGINES:-slurm ray}
ORDER=${ORDER:-abba}
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/bench-cluster}
OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
LISTEN=${LISTEN:-127.0.0.1:18600}
GRPC_LISTEN=${GRPC_LISTEN:-127.0.0.1:18601}
BENCH=(python3 "$HERE/bench.py")
FAILED=0

log() { printf '[run %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

# ------------------------------------------------------------------------ checks
[ "$(id -u)" = 0 ] || die "run as root: tests/cluster/start.sh starts Slurm and Ray as root"
[ -x "$TRAINYARD_BIN" ] || die "no trainyard binary at $TRAINYARD_BIN (set TRAINYARD_BIN)"
command -v python3 >/dev/null || die "python3 is needed"
port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for p in "$LISTEN" "$GRPC_LISTEN" 127.0.0.1:56820 127.0.0.1:58265; do
  ! port_busy "$p" || die "$p is in use (another server, or engines still running: tests/cluster/stop.sh DIR)"
done
load=$(cut -d' ' -f1 /proc/loadavg)
if awk "BEGIN{exit !($load > 0.5)}"; then
  log "WARNING: load average is $load; other work on this machine will skew the numbers"
fi
mkdir -p "$OUT" "$CLUSTER_DIR"
exec > >(tee -a "$OUT/run.log") 2>&1

WORK=$(mktemp -d /var/tmp/trainyard-bench-cluster.XXXXXX)
TY_PID=
ENGINES_UP=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$TY_PID" ] && kill -0 "$TY_PID" 2>/dev/null; then
    log "stopping trainyard (pid $TY_PID)"
    kill -TERM "$TY_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$TY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TY_PID" 2>/dev/null || true
  fi
  if [ "$ENGINES_UP" = 1 ]; then
    log "stopping the engines"
    bash "$ROOT/tests/cluster/stop.sh" "$CLUSTER_DIR" || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------ engines
log "starting Slurm and Ray (tests/cluster/start.sh $CLUSTER_DIR)"
ENGINES_UP=1
bash "$ROOT/tests/cluster/start.sh" "$CLUSTER_DIR" > "$CLUSTER_DIR/env"
# shellcheck disable=SC1091
. "$CLUSTER_DIR/env"
export SLURM_CONF=/etc/slurm/slurm.conf   # the engines' Slurm, not bench/scheduler's

# ---------------------------------------------------------------------- Trainyard
cat > "$WORK/trainyard.toml" <<TOML
[[pools]]
name = "hpc"
executor = "slurm"
[pools.slurm]
url = "$TRAINYARD_TEST_SLURMRESTD_URL"
user = "root"
jwt_key_file = "$TRAINYARD_TEST_SLURM_JWT_KEY"
partition = "debug"

[[pools]]
name = "ray"
executor = "ray"
[pools.ray]
url = "$TRAINYARD_TEST_RAY_URL"
TOML
if [ -n "$ENGINE_QUEUE" ]; then
  sed -i "s/^executor = \(.*\)$/executor = \1\nengine_queue = $ENGINE_QUEUE/" "$WORK/trainyard.toml"
fi
cp "$WORK/trainyard.toml" "$OUT/trainyard.toml"
TRAINYARD_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export TRAINYARD_TOKEN TRAINYARD_SERVER="http://$LISTEN"
log "starting $TRAINYARD_BIN up --listen $LISTEN (data in $WORK/data)"
TRAINYARD_ADMIN_TOKEN=$TRAINYARD_TOKEN "$TRAINYARD_BIN" up --listen "$LISTEN" \
  --grpc-listen "$GRPC_LISTEN" --data-dir "$WORK/data" --config "$WORK/trainyard.toml" \
  > "$OUT/trainyard-server.log" 2>&1 &
TY_PID=$!
export TRAINYARD_PID=$TY_PID
ok=0
for _ in $(seq 1 300); do
  kill -0 "$TY_PID" 2>/dev/null || { tail -n 30 "$OUT/trainyard-server.log"; die "trainyard exited"; }
  if python3 -c 'import sys, urllib.request as u; sys.exit(u.urlopen(sys.argv[1], timeout=2).status != 200)' \
      "$TRAINYARD_SERVER/healthz" 2>/dev/null; then ok=1; break; fi
  sleep 0.2
done
[ $ok = 1 ] || { tail -n 30 "$OUT/trainyard-server.log"; die "trainyard not healthy after 60 s"; }
sleep 2

python3 - "$OUT/meta.json" <<PY
import json, os, platform, subprocess, sys
def sh(*a):
    try: return subprocess.run(a, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30).stdout.strip()
    except Exception as e: return str(e)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = open("/proc/meminfo").readline().split(":", 1)[1].strip()
json.dump({
  "date": sh("date", "-u", "+%Y-%m-%d %H:%M UTC"),
  "machine": f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, kernel {platform.release()}",
  "os": sh("sh", "-c", ". /etc/os-release; echo \$PRETTY_NAME"),
  "trainyard": sh("$TRAINYARD_BIN", "--version") + " ($TRAINYARD_BIN)",
  "slurm": sh("sinfo", "-V") + ", slurmrestd openapi/v0.0.38",
  "ray": sh("/var/tmp/trainyard-ray-venv/bin/python", "-c", "import ray; print(ray.__version__)"),
  "python": platform.python_version(),
  "jobs": "$JOBS", "order": "$ORDER", "probes": "$PROBES", "loadavg_at_start": open("/proc/loadavg").read().strip(),
}, open(sys.argv[1], "w"), indent=1)
PY
log "versions: $(tr -d '\n' < "$OUT/meta.json")"
COMMON=(--cluster-dir "$CLUSTER_DIR" --ray-url "$TRAINYARD_TEST_RAY_URL")
bench() { # a failed part is logged and the rest still runs
  "${BENCH[@]}" "$@" "${COMMON[@]}" || { log "bench.py $1 exited $?"; FAILED=1; }
}

# -------------------------------------------------------------------------- runs
if [[ " $ENGINES " == *" slurm "* ]]; then
  if [ "$PROBES" -gt 0 ]; then
    log "Slurm: idle probes, $PROBES each way"
    bench probe --engine slurm --probes "$PROBES" --out "$OUT/probe-slurm.json"
  fi
  case $ORDER in
    ab) parts=("direct $JOBS" "trainyard $JOBS") ;;
    abba)
      half=$((JOBS / 2))
      parts=("direct $half 1" "trainyard $half 1" "trainyard $((JOBS - half)) 2" "direct $((JOBS - half)) 2") ;;
    *) die "ORDER must be abba or ab, not $ORDER" ;;
  esac
  for part in "${parts[@]}"; do
    read -r via n k <<< "$part"
    [ "$n" -gt 0 ] || continue
    log "Slurm: burst of $n jobs, $via${k:+ (part $k)}"
    bench burst --engine slurm --via "$via" --jobs "$n" --out "$OUT/burst-slurm-$via${k:+-$k}.json"
  done
fi

if [[ " $ENGINES " == *" ray "* ]]; then
  if [ "$PROBES" -gt 0 ]; then
    log "Ray: idle probes, $PROBES each way"
    bench probe --engine ray --probes "$PROBES" --out "$OUT/probe-ray.json"
  fi
  if [ "$RAY_TRIAL" -gt 0 ]; then
    for via in direct trainyard; do
      log "Ray: trial of $RAY_TRIAL jobs, $via"
      bench burst --engine ray --via "$via" --jobs "$RAY_TRIAL" --out "$OUT/trial-ray-$via.json"
    done
  fi
  if [ "$RAY_JOBS" = auto ]; then
    if [ "$RAY_TRIAL" -gt 0 ] && [ -s "$OUT/trial-ray-direct.json" ] && [ -s "$OUT/trial-ray-trainyard.json" ]; then
      RAY_JOBS=$("${BENCH[@]}" plan --trial "$OUT/trial-ray-direct.json" \
        --trial "$OUT/trial-ray-trainyard.json" --want 1000 --budget "$RAY_BUDGET_S" \
        --fallback "$RAY_FALLBACK")
    else
      RAY_JOBS=$RAY_FALLBACK
    fi
  fi
  echo "$RAY_JOBS" > "$OUT/ray-jobs"
  for via in direct trainyard; do
    [ "$RAY_JOBS" -gt 0 ] || break
    log "Ray: burst of $RAY_JOBS jobs, $via"
    bench burst --engine ray --via "$via" --jobs "$RAY_JOBS" --out "$OUT/burst-ray-$via.json"
  done
fi

"${BENCH[@]}" report "$OUT"
log "results in $OUT"
[ "$FAILED" = 0 ] || die "some part failed (see above)"
