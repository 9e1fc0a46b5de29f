#!/usr/bin/env bash
# Trainyard's int8 compression vs ONNX Runtime's own tool (onnxruntime.quantization), on the
# digits CNN: the same parent file, the same 512 calibration rows, the same evaluation rows,
# every resulting file timed by ONNX Runtime in the same process (bench.py).
#
#   bench/compress/run.sh               # trains examples/digits/cnn.toml (40 epochs), compresses, compares
#
# Environment:
#   BIN    trainyard binary (default /var/tmp/trainyard-target/debug/trainyard; the server only
#          trains and compresses here, every timing is ONNX Runtime's in bench.py)
#   DUMP   the dump_rows example (default: built with cargo into the shared target)
#   VENV   venv with onnxruntime, onnx and numpy (default /var/tmp/trainyard-serve-venv, made by
#          tests/triton_client/run.sh --prepare and scripts/test)
#   PORT   HTTP port (default 18107)
#   OUT    results dir (default bench/compress/results/<timestamp>)
# Run on an otherwise idle machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-/var/tmp/trainyard-target}
BIN=${BIN:-$TARGET/debug/trainyard}
VENV=${VENV:-/var/tmp/trainyard-serve-venv}
PORT=${PORT:-18107}
OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}
PY=$VENV/bin/python
log() { printf '[run] %s\n' "$*" >&2; }

"$PY" -c 'import onnxruntime, onnx, numpy' 2>/dev/null \
  || { log "$PY cannot import onnxruntime, onnx and numpy; set VENV"; exit 1; }
[ -x "$BIN" ] || { log "no $BIN: cargo build -p trainyard-cli"; exit 1; }
if [ -z "${DUMP:-}" ]; then
  (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q -p trainyard-tasks --example dump_rows)
  DUMP=$TARGET/debug/examples/dump_rows
fi
"$ROOT/examples/digits/fetch.sh" >/dev/null
mkdir -p "$OUT"
DATA=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"' EXIT
"$BIN" up --data-dir "$DATA" --listen "127.0.0.1:$PORT" >"$OUT/server.log" 2>&1 &
SERVER=$!
export TRAINYARD_SERVER=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf "$TRAINYARD_SERVER/healthz" >/dev/null && break; sleep 0.2; done
export TRAINYARD_TOKEN=$(cat "$DATA/admin-token")
ty() { "$BIN" "$@"; }

log "digits: import, process, train the CNN"
ty dataset import digits "$ROOT/examples/digits/data/digits.csv.gz" >/dev/null
ty dataset process digits --steps "$ROOT/examples/digits/steps.toml" >/dev/null
ty train "$ROOT/examples/digits/cnn.toml" >"$OUT/train.log"
log "trainyard compress: dynamic, static minmax per tensor, static minmax per channel, static entropy per channel, structured pruning"
ty compress digits-cnn:1 --int8 >"$OUT/compress-dynamic.log"
ty compress digits-cnn:1 --int8 --calibrate digits >"$OUT/compress-static.log"
ty compress digits-cnn:1 --int8 --calibrate digits --per-channel >"$OUT/compress-static-pc.log"
ty compress digits-cnn:1 --int8 --calibrate digits --per-channel --method entropy >"$OUT/compress-entropy-pc.log"
ty compress digits-cnn:1 --prune 0.5 --structured --finetune-epochs 3 >"$OUT/compress-prune.log"
for v in 1 2 3 4 5 6 7; do ty models export "digits-cnn:$v" --format onnx -o "$OUT/v$v.onnx" >/dev/null; done
log "the rows the jobs used"
"$DUMP" "$TRAINYARD_SERVER" "$TRAINYARD_TOKEN" digits-cnn:1 digits train 512 "$OUT/calibration" >&2
"$DUMP" "$TRAINYARD_SERVER" "$TRAINYARD_TOKEN" digits-cnn:1 digits test 0 "$OUT/eval" >&2
log "ONNX Runtime's tool on the same parent and rows, then every file timed"
"$PY" "$HERE/bench.py" "$OUT" | tee "$OUT/summary.md"
