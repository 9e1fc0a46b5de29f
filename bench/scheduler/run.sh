#!/usr/bin/env bash
# Benchmark Trainyard against a real single-node Slurm on this machine.
#
#   sudo bench/scheduler/run.sh                 # 1,000 jobs each
#   JOBS=50 bench/scheduler/run.sh              # quick trial
#   SYSTEMS=slurm bench/scheduler/run.sh        # one side only
#
# Environment:
#   JOBS           jobs per system (default 1000)
#   SYSTEMS        "slurm trainyard" (default), or one of them
#   OUT            results dir (default bench/scheduler/results/<timestamp>)
#   TRAINYARD_BIN  server binary (default /var/tmp/trainyard-target/release/trainyard)
#   TRAINYARD_LISTEN  (default 127.0.0.1:18080)
#   BENCH_ARGS     extra bench.py arguments (e.g. "--probe 0")
#   KEEP_SLURM=1   leave Slurm running afterwards
# Slurm needs root (slurm-up.sh installs and starts it). Run on an otherwise idle
# machine: both systems share its CPUs with anything else running.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
JOBS=${JOBS:-1000}
SYSTEMS=${SYSTEMS:-slurm trainyard}
OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
TRAINYARD_BIN=${TRAINYARD_BIN:-/var/tmp/trainyard-target/release/trainyard}
TRAINYARD_LISTEN=${TRAINYARD_LISTEN:-127.0.0.1:18080}
read -r -a EXTRA <<<"${BENCH_ARGS:-}"
mkdir -p "$OUT"

log() { printf '[run] %s\n' "$*" >&2; }

SLURM_STARTED=0
TY_PID=
TY_DATA=
cleanup() {
  local rc=$?
  if [ -n "$TY_PID" ] && kill -0 "$TY_PID" 2>/dev/null; then
    log "stopping trainyard (pid $TY_PID)"
    kill -TERM "$TY_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$TY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TY_PID" 2>/dev/null || true
  fi
  if [ "$SLURM_STARTED" = 1 ] && [ "${KEEP_SLURM:-0}" != 1 ]; then
    "$HERE/slurm-down.sh" || true
  fi
  [ -n "$TY_DATA" ] && rm -rf "$TY_DATA"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

quiet_check() {
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  if awk "BEGIN{exit !($load > 0.5)}"; then
    log "WARNING: load average is $load; other work on this machine will skew the numbers"
  fi
}

healthz() { # host:port -> prints the HTTP status of GET /healthz
  python3 -c '
import http.client, sys
h, p = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(h, int(p), timeout=2)
c.request("GET", "/healthz")
print(c.getresponse().status)' "$1"
}

results=()

# ------------------------------------------------------------------------ Slurm
if [[ " $SYSTEMS " == *" slurm "* ]]; then
  BASE=${BASE:-/var/tmp/trainyard-bench-slurm}
  # stop it afterwards only if it was not already running before us
  if ! { [ -s "$BASE/slurmctld.pid" ] && kill -0 "$(cat "$BASE/slurmctld.pid")" 2>/dev/null; }; then
    SLURM_STARTED=1
  fi
  up=$("$HERE/slurm-up.sh")
  eval "$up"                           # export SLURM_CONF=...
  pids=(--server-pid "$(cat "$BASE/slurmctld.pid")" --server-pid "$(cat "$BASE/slurmd.pid")")
  [ -s /run/munge/munged.pid ] && pids+=(--server-pid "$(cat /run/munge/munged.pid)")
  quiet_check
  timeout 1800 python3 "$HERE/bench.py" --system slurm --jobs "$JOBS" --out "$OUT/slurm.json" \
    "${pids[@]}" --meta "slurm_version=$(sinfo -V)" "${EXTRA[@]}"
  if [ "${KEEP_SLURM:-0}" != 1 ]; then "$HERE/slurm-down.sh"; SLURM_STARTED=0; fi
  results+=("$OUT/slurm.json")
fi

# -------------------------------------------------------------------- Trainyard
if [[ " $SYSTEMS " == *" trainyard "* ]]; then
  if [ ! -x "$TRAINYARD_BIN" ]; then
    log "trainyard binary $TRAINYARD_BIN not found; skipping trainyard (set TRAINYARD_BIN)"
  else
    TY_DATA=$(mktemp -d /var/tmp/trainyard-bench-data.XXXXXX)
    log "starting $TRAINYARD_BIN up --listen $TRAINYARD_LISTEN --data-dir $TY_DATA"
    "$TRAINYARD_BIN" up --listen "$TRAINYARD_LISTEN" --data-dir "$TY_DATA" \
      >"$OUT/trainyard-server.log" 2>&1 &
    TY_PID=$!
    export TRAINYARD_SERVER="http://$TRAINYARD_LISTEN" TRAINYARD_DATA_DIR="$TY_DATA"
    ok=0
    for _ in $(seq 1 300); do           # up to 60 s
      kill -0 "$TY_PID" 2>/dev/null || { tail -n 30 "$OUT/trainyard-server.log" >&2; log "trainyard exited"; exit 1; }
      code=$(healthz "$TRAINYARD_LISTEN" 2>/dev/null || true)
      if [ "$code" = 200 ] && [ -s "$TY_DATA/admin-token" ]; then ok=1; break; fi
      sleep 0.2
    done
    [ $ok = 1 ] || { tail -n 30 "$OUT/trainyard-server.log" >&2; log "trainyard not healthy after 60 s"; exit 1; }
    sleep 2                               # let it settle before reading idle RSS
    quiet_check
    ver=$("$TRAINYARD_BIN" --version 2>/dev/null | head -n1 || true)
    timeout 1800 python3 "$HERE/bench.py" --system trainyard --jobs "$JOBS" --out "$OUT/trainyard.json" \
      --server-pid "$TY_PID" --meta "trainyard_bin=$TRAINYARD_BIN" --meta "trainyard_version=$ver" "${EXTRA[@]}"
    log "stopping trainyard (SIGTERM)"
    kill -TERM "$TY_PID"
    for _ in $(seq 1 100); do kill -0 "$TY_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$TY_PID" 2>/dev/null; then log "trainyard ignored SIGTERM for 10 s; SIGKILL"; kill -KILL "$TY_PID"; fi
    wait "$TY_PID" 2>/dev/null || true
    TY_PID=
    results+=("$OUT/trainyard.json")
  fi
fi

echo
[ ${#results[@]} -gt 0 ] && python3 "$HERE/bench.py" --compare "${results[@]}" | tee "$OUT/summary.txt"
log "results in $OUT"
