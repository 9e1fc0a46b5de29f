#!/usr/bin/env bash
# perf_analyzer (from the tritonclient 2.51.0 wheel, the last that bundles it for glibc 2.36)
# against `trainyard serve`: HTTP with binary tensors and gRPC, MLP and CNN, concurrency 2.
# perf_analyzer sends no gRPC metadata, so the server runs with --anonymous-inference; the
# check below proves load/unload still need the token.
#
#   tests/triton_client/perf_analyzer.sh            # TRAINYARD_BIN: the binary under test
#   tests/triton_client/perf_analyzer.sh --prepare  # only install (prints the binary)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PA_VENV="${TRAINYARD_PA_VENV:-/var/tmp/trainyard-pa-venv}"
BIN="${TRAINYARD_BIN:-${CARGO_TARGET_DIR:-/var/tmp/trainyard-target}/debug/trainyard}"
# Below the kernel's ephemeral range (32768-60999), so no outgoing connection holds them.
PORT="${TRAINYARD_PA_PORT:-28110}"
GPORT="${TRAINYARD_PA_GRPC_PORT:-28111}"

if [[ ! -x "$PA_VENV/bin/perf_analyzer" ]]; then
  echo "perf_analyzer.sh: installing perf_analyzer into $PA_VENV" >&2
  if ! ldconfig -p | grep -q libb64.so.0d; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null
  fi
  python3 -m venv "$PA_VENV"
  "$PA_VENV/bin/pip" install -q --disable-pip-version-check 'tritonclient[http]==2.51.0' \
    'nvidia-cuda-runtime-cu12==12.9.79' >&2
fi
# It links libcudart even on CPU.
export LD_LIBRARY_PATH="$(ls -d "$PA_VENV"/lib/python3*/site-packages/nvidia/cuda_runtime/lib)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PA="$PA_VENV/bin/perf_analyzer"
if [[ "${1:-}" == "--prepare" ]]; then
  echo "$PA"
  exit 0
fi

SERVE_PY=$("$HERE/run.sh" --prepare)
WORK=$(mktemp -d /tmp/trainyard-pa.XXXXXX)
SERVER=""
trap '[[ -n "$SERVER" ]] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT
"$SERVE_PY" "$HERE/make_models.py" "$WORK/repo"
TRAINYARD_ORT_LIB=$(ls "$(dirname "$SERVE_PY")"/../lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | sort | tail -1) \
TRAINYARD_ADMIN_TOKEN="perf-analyzer-check-$$-token" \
  "$BIN" serve --model-repository "$WORK/repo" --listen "127.0.0.1:$PORT" \
    --grpc-listen "127.0.0.1:$GPORT" --anonymous-inference >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$GPORT") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$GPORT") 2>/dev/null || { echo "the server did not come up:" >&2; tail -30 "$WORK/serve.log" >&2; exit 1; }

code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/v2/repository/models/mlp/unload")
[[ "$code" == 401 ]] || { echo "unload without a token answered $code, not 401" >&2; exit 1; }

for model in mlp cnn; do
  for proto in http grpc; do
    port=$PORT; [[ $proto == grpc ]] && port=$GPORT
    out="$WORK/$model-$proto.txt"
    if ! "$PA" -m "$model" -u "127.0.0.1:$port" -i "$proto" --concurrency-range 2 \
        -p 1000 -r 10 -s 100 >"$out" 2>&1; then
      cat "$out"; tail -20 "$WORK/serve.log"; exit 1
    fi
    grep -q "Throughput:" "$out" || { cat "$out"; exit 1; }
    echo "perf_analyzer $model over $proto: $(grep -m1 -E 'Concurrency: 2, throughput' "$out")"
  done
done
