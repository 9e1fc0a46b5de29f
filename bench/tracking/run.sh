#!/usr/bin/env bash
# Benchmark Trainyard's MLflow-compatible tracking API against `mlflow server` on this machine,
# both driven by the same client (MlflowClient from mlflow 3.17.2).
#
#   bench/tracking/run.sh                          # full size, both servers
#   bench/tracking/run.sh --scale 0.1              # smoke run: 10x fewer points/calls/runs
#   bench/tracking/run.sh --only mlflow            # one side only (or --only trainyard)
#   BIG_POINTS=1000000 bench/tracking/run.sh       # smaller Trainyard-only ingest row
#
# Options (each also settable through the environment variable in brackets):
#   --only mlflow|trainyard   one side only                  [SYSTEMS="mlflow trainyard"]
#   --scale F                 multiply every size            [SCALE=1]
#   --big-points N            Trainyard-only ingest size     [BIG_POINTS=10000000 x scale]
#   --out DIR                 results dir                    [OUT=bench/tracking/results/<timestamp>]
# Environment:
#   VENV              venv with mlflow (created if missing; default /var/tmp/trainyard-bench-mlflow-venv)
#   MLFLOW_VERSION    (default 3.17.2)
#   MLFLOW_LISTEN     (default 127.0.0.1:15000)
#   TRAINYARD_BIN     server binary (default /var/tmp/trainyard-target/release/trainyard)
#   TRAINYARD_LISTEN  (default 127.0.0.1:18090)
#   TRAINYARD_HEALTH  readiness path (default /healthz; the harness self-test points
#                     TRAINYARD_BIN at a script running `mlflow server` and sets /health)
#   BENCH_ARGS        extra bench.py arguments (e.g. "--reps 5 --big-procs 3")
#   BENCH_TIMEOUT     per-system limit in seconds (default 7200)
#   KEEP_DATA=1       keep the servers' temp data dirs
# Run on an otherwise idle machine: servers and client share its CPUs with anything else.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SYSTEMS=${SYSTEMS:-mlflow trainyard}
SCALE=${SCALE:-1}
BIG_POINTS=${BIG_POINTS:-}
OUT=${OUT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --only) SYSTEMS=$2; shift 2 ;;
    --only=*) SYSTEMS=${1#*=}; shift ;;
    --scale) SCALE=$2; shift 2 ;;
    --scale=*) SCALE=${1#*=}; shift ;;
    --big-points) BIG_POINTS=$2; shift 2 ;;
    --big-points=*) BIG_POINTS=${1#*=}; shift ;;
    --out) OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for s in $SYSTEMS; do
  case "$s" in mlflow|trainyard) ;; *) echo "run.sh: unknown system '$s' (mlflow, trainyard)" >&2; exit 2 ;; esac
done
OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
VENV=${VENV:-/var/tmp/trainyard-bench-mlflow-venv}
MLFLOW_VERSION=${MLFLOW_VERSION:-3.17.2}
MLFLOW_LISTEN=${MLFLOW_LISTEN:-127.0.0.1:15000}
TRAINYARD_BIN=${TRAINYARD_BIN:-/var/tmp/trainyard-target/release/trainyard}
TRAINYARD_LISTEN=${TRAINYARD_LISTEN:-127.0.0.1:18090}
TRAINYARD_HEALTH=${TRAINYARD_HEALTH:-/healthz}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-7200}
read -r -a EXTRA <<<"${BENCH_ARGS:-}"
[ -n "$BIG_POINTS" ] && EXTRA+=(--big-points "$BIG_POINTS")
mkdir -p "$OUT"
# no usage reporting from the mlflow client or server (there is no network here anyway)
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log() { printf '[run] %s\n' "$*" >&2; }

SRV_PID=
SRV_DATA=
stop_server() { # SIGTERM the server's whole process group (mlflow's uvicorn workers too), SIGKILL after 10 s
  [ -n "$SRV_PID" ] || return 0
  if kill -0 "$SRV_PID" 2>/dev/null; then
    log "stopping $1 (pid $SRV_PID, SIGTERM to its process group)"
    kill -TERM -- "-$SRV_PID" 2>/dev/null || kill -TERM "$SRV_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 -- "-$SRV_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 -- "-$SRV_PID" 2>/dev/null; then log "$1: processes left 10 s after SIGTERM; SIGKILL"; fi
  fi
  kill -KILL -- "-$SRV_PID" 2>/dev/null || true   # leftovers in the group
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=
  if [ -n "$SRV_DATA" ]; then
    if [ "${KEEP_DATA:-0}" = 1 ]; then log "kept data dir $SRV_DATA"; else rm -rf "$SRV_DATA"; fi
  fi
  SRV_DATA=
}
cleanup() {
  local rc=$?
  stop_server server
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

http_status() { # host:port path -> prints the HTTP status of GET path
  python3 -c '
import http.client, sys
h, p = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(h, int(p), timeout=2)
c.request("GET", sys.argv[2])
print(c.getresponse().status)' "$1" "$2"
}

port_free() { ! python3 -c '
import socket, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex((h, int(p))) == 0 else 1)' "$1"; }

# start_server NAME HOST:PORT HEALTH_PATH TOKEN_FILE(or "") CMD... : runs CMD in $SRV_DATA as the
# leader of a new session/process group, so that stopping it reaches every process it spawned
start_server() {
  local name=$1 listen=$2 health=$3 token_file=$4; shift 4
  port_free "$listen" || { log "$listen is already in use; set ${name^^}_LISTEN"; exit 1; }
  log "starting $name: $*"
  (cd "$SRV_DATA" && exec setsid "$@") >"$OUT/$name-server.log" 2>&1 &
  SRV_PID=$!
  local ok=0 code
  for _ in $(seq 1 900); do            # up to 180 s (mlflow migrates its new sqlite db first)
    kill -0 "$SRV_PID" 2>/dev/null || { tail -n 30 "$OUT/$name-server.log" >&2; log "$name exited"; exit 1; }
    code=$(http_status "$listen" "$health" 2>/dev/null || true)
    if [ "$code" = 200 ] && { [ -z "$token_file" ] || [ -s "$token_file" ]; }; then ok=1; break; fi
    sleep 0.2
  done
  [ $ok = 1 ] || { tail -n 30 "$OUT/$name-server.log" >&2; log "$name not healthy after 180 s"; exit 1; }
  sleep 2                                # let it settle before reading idle RSS
}

results=()
PY=$VENV/bin/python

# --------------------------------------------------------------------- the venv
if [ ! -x "$PY" ] || ! "$PY" -c 'import importlib.metadata as m, sys; sys.exit(m.version("mlflow") != sys.argv[1])' \
     "$MLFLOW_VERSION" 2>/dev/null; then
  log "creating $VENV with mlflow==$MLFLOW_VERSION (full package: server + client, ~2 min)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "mlflow==$MLFLOW_VERSION"
fi

# ----------------------------------------------------------------------- MLflow
if [[ " $SYSTEMS " == *" mlflow "* ]]; then
  SRV_DATA=$(mktemp -d /var/tmp/trainyard-bench-mlflow-data.XXXXXX)
  start_server mlflow "$MLFLOW_LISTEN" /health "" \
    "$VENV/bin/mlflow" server --backend-store-uri "sqlite:///$SRV_DATA/mlflow.db" \
    --artifacts-destination "$SRV_DATA/mlartifacts" --serve-artifacts \
    --host "${MLFLOW_LISTEN%:*}" --port "${MLFLOW_LISTEN##*:}"
  quiet_check
  env -u MLFLOW_TRACKING_TOKEN timeout "$BENCH_TIMEOUT" "$PY" "$HERE/bench.py" --system mlflow \
    --url "http://$MLFLOW_LISTEN" --server-pid "$SRV_PID" --scale "$SCALE" --data-dir "$SRV_DATA" \
    --out "$OUT/mlflow.json" --meta "server=mlflow server $MLFLOW_VERSION (sqlite, proxied artifacts, default workers)" \
    "${EXTRA[@]}"
  stop_server mlflow
  results+=("$OUT/mlflow.json")
fi

# -------------------------------------------------------------------- Trainyard
if [[ " $SYSTEMS " == *" trainyard "* ]]; then
  if [ ! -x "$TRAINYARD_BIN" ]; then
    log "trainyard binary $TRAINYARD_BIN not found; skipping trainyard (set TRAINYARD_BIN)"
  else
    SRV_DATA=$(mktemp -d /var/tmp/trainyard-bench-data.XXXXXX)
    start_server trainyard "$TRAINYARD_LISTEN" "$TRAINYARD_HEALTH" "$SRV_DATA/admin-token" \
      "$TRAINYARD_BIN" up --listen "$TRAINYARD_LISTEN" --data-dir "$SRV_DATA"
    quiet_check
    ver=$("$TRAINYARD_BIN" --version 2>/dev/null | head -n1 || true)
    MLFLOW_TRACKING_TOKEN=$(cat "$SRV_DATA/admin-token") timeout "$BENCH_TIMEOUT" "$PY" "$HERE/bench.py" \
      --system trainyard --url "http://$TRAINYARD_LISTEN" --server-pid "$SRV_PID" --scale "$SCALE" \
      --data-dir "$SRV_DATA" --out "$OUT/trainyard.json" \
      --meta "server=$ver" --meta "trainyard_bin=$TRAINYARD_BIN" "${EXTRA[@]}"
    stop_server trainyard
    results+=("$OUT/trainyard.json")
  fi
fi

echo
if [ ${#results[@]} -gt 0 ]; then
  python3 "$HERE/bench.py" --compare "${results[@]}" --markdown "$OUT/summary.md" \
    --summary-json "$OUT/summary.json"
fi
log "results in $OUT"
