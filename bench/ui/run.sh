#!/usr/bin/env bash
# bench/ui: the web UI's speed at scale, measured in Debian's Chromium (playwright-core),
# side by side with the MLflow UI on the same data when MLFLOW=1.
#
#   bench/ui/run.sh                                   # 100,000 runs, 10,000,000 points, 100 × 10,000
#   RUNS=20000 LONG=1000000 bench/ui/run.sh           # smaller
#   MLFLOW=1 bench/ui/run.sh                          # and `mlflow server` 3.x (its own venv)
#
# Variables: BIN (trainyard, default the release build), RUNS, LONG (points of one metric),
# OVERLAY (runs) × STEPS, REPEAT (cold loads per figure, default 3), MLFLOW, MLFLOW_RUNS,
# MLFLOW_LONG, MLFLOW_SEED_WAY (`db`, the default: the same rows written straight into MLflow's
# SQLite store by seed_mlflow_db.py, minutes; `rest`: through its REST API like Trainyard, ~20
# runs a second here). Results: bench/ui/results/ui-*.json and screenshots.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-/var/tmp/trainyard-target}
BIN=${BIN:-$TARGET/release/trainyard}
RUNS=${RUNS:-100000}
LONG=${LONG:-10000000}
OVERLAY=${OVERLAY:-100}
STEPS=${STEPS:-10000}
REPEAT=${REPEAT:-3}
MLFLOW=${MLFLOW:-0}
MLFLOW_RUNS=${MLFLOW_RUNS:-$RUNS}
MLFLOW_LONG=${MLFLOW_LONG:-$LONG}
MLFLOW_SEED_WAY=${MLFLOW_SEED_WAY:-db}
case "$MLFLOW_SEED_WAY" in db|rest) ;; *) echo "MLFLOW_SEED_WAY=$MLFLOW_SEED_WAY: db or rest" >&2; exit 2 ;; esac
PORT=${PORT:-18181}
MLFLOW_PORT=${MLFLOW_PORT:-18182}
PY=${PY:-/var/tmp/trainyard-mlflow-venv/bin/python}
MLFLOW_VENV=${MLFLOW_VENV:-/var/tmp/trainyard-bench-mlflow-venv}
RESULTS="$HERE/results"
log() { printf '[ui] %s\n' "$*" >&2; }
mkdir -p "$RESULTS"

[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p trainyard-cli (or BIN=…)" >&2; exit 2; }
command -v chromium >/dev/null || { echo "no chromium: apt install chromium" >&2; exit 2; }
[ -d "$ROOT/web/node_modules/playwright-core" ] || npm ci --prefix "$ROOT/web" --ignore-scripts --no-audit --no-fund --loglevel=error
"$PY" -c 'import requests' 2>/dev/null || { echo "$PY has no requests (PY=… a python with requests)" >&2; exit 2; }

DATA=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
"$BIN" up --data-dir "$DATA/trainyard" --listen "127.0.0.1:$PORT" --grpc-listen "127.0.0.1:$((PORT + 1000))" >"$DATA/trainyard.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
TOKEN=$(cat "$DATA/trainyard/admin-token")
log "seeding Trainyard: $RUNS runs, $LONG points, $OVERLAY × $STEPS"
SEED=$("$PY" "$HERE/seed.py" --url "http://127.0.0.1:$PORT" --token "$TOKEN" --runs "$RUNS" \
    --long-points "$LONG" --overlay "$OVERLAY" --overlay-steps "$STEPS")

MLFLOW_ENV=()
if [ "$MLFLOW" = 1 ]; then
    if ! "$MLFLOW_VENV/bin/python" -c 'import mlflow.server' 2>/dev/null; then
        log "installing mlflow 3 into $MLFLOW_VENV"
        python3 -m venv "$MLFLOW_VENV"
        "$MLFLOW_VENV/bin/pip" install -q --disable-pip-version-check "mlflow>=3,<4"
    fi
    "$MLFLOW_VENV/bin/mlflow" server --backend-store-uri "sqlite:///$DATA/mlflow.db" \
        --default-artifact-root "$DATA/mlflow-artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" \
        --workers 2 >"$DATA/mlflow.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null && break; sleep 0.5; done
    log "seeding MLflow ($MLFLOW_SEED_WAY): $MLFLOW_RUNS runs, $MLFLOW_LONG points, $OVERLAY × $STEPS"
    if [ "$MLFLOW_SEED_WAY" = db ]; then
        MSEED=$("$PY" "$HERE/seed_mlflow_db.py" --url "http://127.0.0.1:$MLFLOW_PORT" --db "$DATA/mlflow.db" \
            --runs "$MLFLOW_RUNS" \
            --long-points "$MLFLOW_LONG" --overlay "$OVERLAY" --overlay-steps "$STEPS")
    else
        MSEED=$("$PY" "$HERE/seed.py" --url "http://127.0.0.1:$MLFLOW_PORT" --runs "$MLFLOW_RUNS" \
            --long-points "$MLFLOW_LONG" --overlay "$OVERLAY" --overlay-steps "$STEPS")
    fi
    MLFLOW_ENV=(MLFLOW_URL="http://127.0.0.1:$MLFLOW_PORT" MLFLOW_SEED="$MSEED")
fi

log "measuring (REPEAT=$REPEAT cold loads per figure)"
OUT="$RESULTS/ui-$(date +%Y%m%d-%H%M%S).json"
env TRAINYARD_URL="http://127.0.0.1:$PORT" TRAINYARD_TOKEN="$TOKEN" SEED="$SEED" REPEAT="$REPEAT" \
    SHOTS="$RESULTS" "${MLFLOW_ENV[@]}" node "$HERE/measure.mjs" | tee "$OUT"
log "results in $OUT"
