#!/usr/bin/env bash
# Model-formats benchmark, one run on one machine: the digits CNN trained by the built-in
# engine (its model.onnx written and checked at registration) against the same network,
# with the same weights, exported by PyTorch (torch.onnx.export), both imported into and
# served by the same `trainyard up` on ONNX Runtime. Measures export time (Trainyard: the
# time the training job prints for writing and checking model.onnx; PyTorch: its exporter
# on the same weights) and /v2 throughput with perf_analyzer (HTTP binary tensors and gRPC,
# concurrency 1 and 8). Results: bench/models/results/<time>/summary.md.
#
#   bench/models/run.sh     # TRAINYARD_BIN defaults to the release build
# Needs a PyTorch venv (large; never in CI): TRAINYARD_TORCH_VENV, default
# /var/tmp/trainyard-torch-venv, with torch, onnx, onnxscript, safetensors and numpy.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${TRAINYARD_BIN:-${CARGO_TARGET_DIR:-/var/tmp/trainyard-target}/release/trainyard}"
TORCH_PY="${TRAINYARD_TORCH_VENV:-/var/tmp/trainyard-torch-venv}/bin/python"
WINDOW_MS="${PA_WINDOW_MS:-3000}"
[[ -x "$BIN" ]] || { echo "build first: cargo build --release -p trainyard-cli" >&2; exit 2; }
"$TORCH_PY" -c 'import torch, onnx, safetensors' || { echo "no PyTorch venv at $TORCH_PY" >&2; exit 2; }
PA=$("$ROOT/tests/triton_client/perf_analyzer.sh" --prepare)
SERVE_PY=$("$ROOT/tests/triton_client/run.sh" --prepare)
export LD_LIBRARY_PATH="$(ls -d "$(dirname "$PA")"/../lib/python3*/site-packages/nvidia/cuda_runtime/lib)"
"$ROOT/examples/digits/fetch.sh" >/dev/null

OUT="$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)"
WORK=$(mktemp -d /tmp/trainyard-bench-models.XXXXXX)
mkdir -p "$OUT"
SERVER=""
stop() { if [[ -n "$SERVER" ]]; then kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=""; fi; }
trap 'stop; rm -rf "$WORK"' EXIT
{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/ {print $2}') GiB"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "trainyard: $("$BIN" --version); torch $("$TORCH_PY" -c 'import torch; print(torch.__version__)'); perf_analyzer $("$PA" --version 2>&1 | head -1)"
} >"$OUT/machine.txt"

export TRAINYARD_SERVER=http://127.0.0.1:18500 TRAINYARD_TOKEN="bench-models-token-$$-0123456789"
TRAINYARD_ORT_LIB=$(ls "$(dirname "$SERVE_PY")"/../lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | sort | tail -1) \
TRAINYARD_ADMIN_TOKEN=$TRAINYARD_TOKEN "$BIN" up --listen 127.0.0.1:18500 --grpc-listen 127.0.0.1:18501 \
  --data-dir "$WORK/data" --cpus 2 --anonymous-inference --serve-runtime onnxruntime >"$OUT/trainyard.log" 2>&1 &
SERVER=$!
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/18500) 2>/dev/null && break; sleep 0.1; done

"$BIN" dataset import digits "$ROOT/examples/digits/data/digits.csv.gz" >/dev/null
"$BIN" dataset process digits --steps "$ROOT/examples/digits/steps.toml" >/dev/null
sed 's/^epochs = 40/epochs = 5/' "$ROOT/examples/digits/cnn.toml" >"$WORK/cnn.toml"
"$BIN" train "$WORK/cnn.toml" | tee "$OUT/train.log" | grep -E "exported|registered"
"$BIN" models export digits-cnn:1 --format safetensors -o "$WORK/cnn.safetensors"
"$TORCH_PY" "$HERE/torch_export.py" "$WORK/cnn.safetensors" "$WORK/torch.onnx" | tee "$OUT/torch_export.json"
"$BIN" models import "$WORK/torch.onnx" --name digits-cnn-torch | tee "$OUT/import.log"
"$SERVE_PY" "$HERE/same_outputs.py" 127.0.0.1:18500 digits-cnn digits-cnn-torch | tee "$OUT/same_outputs.txt"

"$SERVE_PY" -c "
import json, random
rng = random.Random(1234)
json.dump({'data': [{'input': {'content': [round(rng.uniform(-2, 2), 6) for _ in range(64)], 'shape': [1, 8, 8]}}]}, open('$WORK/input.json', 'w'))"
# ROUNDS rounds, the order of the two models swapped every round, so neither always runs
# on a machine the other has just warmed (or heated).
for round in $(seq "${ROUNDS:-4}"); do
  models="digits-cnn digits-cnn-torch"
  (( round % 2 == 0 )) && models="digits-cnn-torch digits-cnn"
  for model in $models; do
    for proto in http grpc; do
      port=$([[ $proto == http ]] && echo 18500 || echo 18501)
      echo "bench: round $round $model $proto" >&2
      "$PA" -m "$model" -u "127.0.0.1:$port" -i "$proto" --input-data "$WORK/input.json" \
        --concurrency-range 1:8:7 -p "$WINDOW_MS" -s 25 -r 15 \
        -f "$OUT/pa-$model-$proto-r$round.csv" >"$OUT/pa-$model-$proto-r$round.log" 2>&1 \
        || echo "bench: perf_analyzer failed for $model $proto (see its log)" >&2
    done
  done
done
stop
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
"$SERVE_PY" "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.md"
