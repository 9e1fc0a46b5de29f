#!/usr/bin/env bash
# Trainyard studies vs Optuna: sampler quality (regret on Branin, Hartmann6, Rosenbrock-10D and
# a noisy Hartmann6), per-ask time at 100 and 1,000 trials, and storage at 10,000 trials.
# Starts a fresh `trainyard up` on a temp data dir, runs bench.py against it and Optuna in the
# same process, one after the other, and prints a Markdown summary.
#
#   bench/tune/run.sh                               # full run (Optuna's side alone: ~8 min on 2 vCPUs,
#                                                   #   most of it 10,000 trials on SQLite)
#   QUICK=1 bench/tune/run.sh                       # smoke run: 3 seeds x 30 trials of Branin,
#                                                   #   timing to 100 trials, 500 storage trials
#   bench/tune/run.sh --seeds 5 --no-long-timing    # any bench.py option (after QUICK's; last wins)
#   SYSTEMS=optuna bench/tune/run.sh                # Optuna only, no server
#   bench/tune/run.sh --summarize bench/tune/results/<timestamp>   # rebuild a summary (no server)
#
# Environment:
#   BIN        trainyard binary (default /var/tmp/trainyard-target/release/trainyard)
#   VENV       venv with optuna 5.1, numpy, scipy (default /var/tmp/trainyard-optuna-venv; not created here)
#   PORT       HTTP port; PORT+1 is the gRPC port (default 18097)
#   OUT        results dir (default bench/tune/results/<timestamp>)
#   SYSTEMS    trainyard,optuna (default both)
#   KEEP_DATA  1 keeps the server's data dir
# Run on an otherwise idle machine: the server, its sampler and Optuna share its CPUs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-/var/tmp/trainyard-target/release/trainyard}
VENV=${VENV:-/var/tmp/trainyard-optuna-venv}
PORT=${PORT:-18097}
SYSTEMS=${SYSTEMS:-trainyard,optuna}
PY=$VENV/bin/python

log() { printf '[run] %s\n' "$*" >&2; }

if [ "${1:-}" = --summarize ]; then exec "$PY" "$HERE/bench.py" "$@"; fi
"$PY" -c 'import optuna, numpy, scipy' 2>/dev/null \
  || { log "$PY cannot import optuna, numpy and scipy; set VENV"; exit 1; }

ARGS=(--systems "$SYSTEMS")
if [ "${QUICK:-0}" = 1 ]; then
  ARGS+=(--seeds 3 --trials 30 --functions branin --storage-trials 500 --no-long-timing)
fi
ARGS+=("$@")

PID=
DIR=
stop() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; fi
  if [ -n "$DIR" ]; then
    if [ "${KEEP_DATA:-0}" = 1 ]; then log "kept data dir $DIR"; else rm -rf "$DIR"; fi
    DIR=
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

if [[ ",$SYSTEMS," == *,trainyard,* ]]; then
  [ -x "$BIN" ] || { log "no trainyard binary at $BIN (set BIN, or SYSTEMS=optuna)"; exit 1; }
  if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then log "port $PORT is in use; set PORT"; exit 1; fi
fi
OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

if [[ ",$SYSTEMS," == *,trainyard,* ]]; then
  DIR=$(mktemp -d /var/tmp/trainyard-bench-tune.XXXXXX)
  "$BIN" up --listen 127.0.0.1:$PORT --grpc-listen 127.0.0.1:$((PORT + 1)) --data-dir "$DIR" \
      >"$OUT/server.log" 2>&1 &
  PID=$!
  up=0
  for _ in $(seq 200); do
    if curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && [ -s "$DIR/admin-token" ]; then up=1; break; fi
    kill -0 "$PID" 2>/dev/null || { tail -n 30 "$OUT/server.log" >&2; log "server exited"; exit 1; }
    sleep 0.1
  done
  [ $up = 1 ] || { tail -n 30 "$OUT/server.log" >&2; log "server not up after 20 s"; exit 1; }
  ARGS=(--url "http://127.0.0.1:$PORT" --meta "trainyard=$("$BIN" --version 2>/dev/null | head -n1 || true)"
        --meta "trainyard_bin=$BIN" "${ARGS[@]}")
  export TRAINYARD_TOKEN
  TRAINYARD_TOKEN=$(cat "$DIR/admin-token")
fi

load=$(cut -d' ' -f1 /proc/loadavg)
if awk "BEGIN{exit !($load > 0.5)}"; then log "WARNING: load average is $load; other work will skew the timings"; fi

# Optuna's SQLite files go next to the server's data dir (same disk, same fsync cost).
"$PY" "$HERE/bench.py" --out "$OUT" --tmp-dir /var/tmp "${ARGS[@]}"
log "results in $OUT"
