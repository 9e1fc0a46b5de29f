#!/usr/bin/env bash
# Serving benchmark, one run on one machine: Trainyard vs a real Triton 2.51 (python backend
# calling onnxruntime, dynamic batching on) vs MLServer 1.7.1 (custom onnxruntime runtime,
# in-process), with ONNX Runtime called in-process as the limit. Same perf_analyzer 2.51
# client and the same input data for every server; MLP and CNN; concurrency 1 and 8; HTTP
# (binary tensors; JSON for MLServer, which has no binary) and gRPC; then cold load
# (unload -> load -> first answer). Results: bench/serving/results/<time>/summary.md.
#
#   bench/serving/run.sh            # TRAINYARD_BIN defaults to the release build
#   bench/serving/run.sh --prepare  # only build the bench-only environments
# Environments (large; never in CI): /var/tmp/trainyard-bench-serving/{pt,ml}.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${TRAINYARD_BIN:-${CARGO_TARGET_DIR:-/var/tmp/trainyard-target}/release/trainyard}"
ENVS="${TRAINYARD_BENCH_ENVS:-/var/tmp/trainyard-bench-serving}"
WINDOW_MS="${PA_WINDOW_MS:-3000}"
COLD_CYCLES="${COLD_CYCLES:-10}"

mkdir -p "$ENVS"
if [[ ! -x "$ENVS/pt/bin/python" ]]; then
  python3 -m venv "$ENVS/pt" && "$ENVS/pt/bin/pip" install -q nvidia-pytriton==0.7.0 onnxruntime==1.32.0 numpy==1.26.4
fi
if [[ ! -x "$ENVS/ml/bin/mlserver" ]]; then
  python3 -m venv "$ENVS/ml" && "$ENVS/ml/bin/pip" install -q mlserver==1.7.1 onnx==1.23.2 onnxruntime==1.32.0 numpy==2.4.6 uvloop==0.21.0
fi
PA=$("$ROOT/tests/triton_client/perf_analyzer.sh" --prepare)
PY=$("$ROOT/tests/triton_client/run.sh" --prepare)
export LD_LIBRARY_PATH="$(ls -d "$(dirname "$PA")"/../lib/python3*/site-packages/nvidia/cuda_runtime/lib)"
[[ "${1:-}" == "--prepare" ]] && exit 0
[[ -x "$BIN" ]] || { echo "build first: cargo build --release -p trainyard-cli" >&2; exit 2; }

OUT="$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)"
WORK=$(mktemp -d /tmp/trainyard-bench-serving.XXXXXX)
mkdir -p "$OUT"
SERVER=""
stop() { if [[ -n "$SERVER" ]]; then kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=""; fi; }
trap 'stop; rm -rf "$WORK"' EXIT
ready() { # ready PORT: until GET /v2/health/ready answers 200 (120 s at most)
  for _ in $(seq 1200); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$1/v2/health/ready")" == 200 ]] && return 0
    sleep 0.1
  done
  echo "server on $1 never became ready" >&2; return 1
}
pa() { # pa SERVER MODEL PROTOCOL HOST:PORT [extra args]
  local name=$1 model=$2 proto=$3 url=$4; shift 4
  echo "bench: $name $model $proto" >&2
  "$PA" -m "$model" -u "$url" -i "$proto" --input-data "$WORK/data/$model.json" \
    --concurrency-range 1:8:7 -p "$WINDOW_MS" -s 25 -r 15 "$@" \
    -f "$OUT/pa-$name-$model-$proto.csv" >"$OUT/pa-$name-$model-$proto.log" 2>&1 \
    || echo "bench: perf_analyzer failed for $name $model $proto (see its log)" >&2
}
cold() { # cold SERVER HTTP_PORT [TOKEN] [--on-demand]
  local name=$1 port=$2; shift 2
  for model in mlp cnn; do
    "$PY" "$HERE/cold_load.py" "http://127.0.0.1:$port" "$model" "$COLD_CYCLES" "$@" \
      | sed "s/^{/{\"server\": \"$name\", /" >>"$OUT/cold.jsonl" || true
  done
}

"$PY" "$ROOT/tests/triton_client/make_models.py" "$WORK/onnx"
"$PY" "$HERE/mlserver/data.py" "$WORK/data"
{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/ {print $2}') GiB"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "trainyard: $("$BIN" --version); perf_analyzer $("$PA" --version 2>&1 | head -1)"
  echo "onnxruntime (Trainyard, limit): $("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)'); onnxruntime (Triton model.py): $("$ENVS/pt/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)')"
} >"$OUT/machine.txt"

# Trainyard: ONNX Runtime from the serve venv; no token for perf_analyzer (it sends no gRPC metadata).
TOKEN="bench-serving-token-$$-0123456789"
TRAINYARD_ORT_LIB=$(ls "$(dirname "$PY")"/../lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | sort | tail -1) \
TRAINYARD_ADMIN_TOKEN=$TOKEN "$BIN" serve --model-repository "$WORK/onnx" --listen 127.0.0.1:18400 \
  --grpc-listen 127.0.0.1:18401 --anonymous-inference --serve-runtime onnxruntime >"$OUT/trainyard.log" 2>&1 &
SERVER=$!
ready 18400
for model in mlp cnn; do
  pa trainyard $model http 127.0.0.1:18400
  pa trainyard $model grpc 127.0.0.1:18401
done
cold trainyard 18400 "$TOKEN"
cold trainyard 18400 "$TOKEN" --on-demand
stop

TRITON_VENV="$ENVS/pt" "$HERE/triton/start.sh" "$WORK/onnx" "$WORK/triton" 18200 18201 18202 >"$OUT/triton.log" 2>&1 &
SERVER=$!
ready 18200
for model in mlp cnn; do
  pa triton $model http 127.0.0.1:18200
  pa triton $model grpc 127.0.0.1:18201
done
cold triton 18200
stop

MLSERVER_VENV="$ENVS/ml" "$HERE/mlserver/start.sh" "$WORK/onnx" "$WORK/mlserver" 18300 18301 18302 >"$OUT/mlserver.log" 2>&1 &
SERVER=$!
ready 18300
for model in mlp cnn; do
  pa mlserver $model http 127.0.0.1:18300 --input-tensor-format json --output-tensor-format json
done
cold mlserver 18300
stop

for model in mlp cnn; do
  for c in 1 8; do
    "$PY" "$HERE/ort_limit.py" "$WORK/onnx" "$model" "$c" 10 >>"$OUT/ort.jsonl"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
"$PY" "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.md"
