#!/usr/bin/env bash
# Serve the bench ONNX models (mlp, cnn) with MLServer 1.7.1 + runtime.py (onnxruntime, CPU).
#
#   start.sh REPO_WITH_ONNX WORKDIR HTTP_PORT GRPC_PORT METRICS_PORT
#
# REPO_WITH_ONNX: output of tests/triton_client/make_models.py (REPO/<m>/1/model.onnx).
# WORKDIR: MLServer repository written here (settings.json, <m>/model-settings.json, runtime.py,
#          .metrics/, .envs/). Runs `mlserver start WORKDIR` in the foreground (exec), on
#          127.0.0.1, in-process inference (parallel_workers 0), access logs off (debug false).
# Env: MLSERVER_VENV (default /var/tmp/trainyard-bench-serving/ml), MODELS (default "mlp cnn").
set -euo pipefail

if [ $# -ne 5 ]; then
    echo "usage: $0 REPO_WITH_ONNX WORKDIR HTTP_PORT GRPC_PORT METRICS_PORT" >&2
    exit 2
fi
REPO=$(cd "$1" && pwd)
mkdir -p "$2"
WORKDIR=$(cd "$2" && pwd)
HTTP_PORT=$3 GRPC_PORT=$4 METRICS_PORT=$5
VENV=${MLSERVER_VENV:-/var/tmp/trainyard-bench-serving/ml}
MODELS=${MODELS:-mlp cnn}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

cp "$HERE/runtime.py" "$WORKDIR/runtime.py"

# Server settings. metrics_dir/environments_dir default to the cwd, so pin them to WORKDIR.
cat > "$WORKDIR/settings.json" <<JSON
{
  "host": "127.0.0.1",
  "http_port": $HTTP_PORT,
  "grpc_port": $GRPC_PORT,
  "metrics_port": $METRICS_PORT,
  "parallel_workers": 0,
  "debug": false,
  "metrics_dir": "$WORKDIR/.metrics",
  "environments_dir": "$WORKDIR/.envs"
}
JSON

# Input dims without the batch dim, per model.
dims_of() {
    case $1 in
        mlp) echo "784" ;;
        cnn) echo "1, 28, 28" ;;
        *) echo "unknown model $1" >&2; return 1 ;;
    esac
}

for m in $MODELS; do
    onnx="$REPO/$m/1/model.onnx"
    [ -f "$onnx" ] || { echo "missing $onnx" >&2; exit 1; }
    mkdir -p "$WORKDIR/$m"
    cat > "$WORKDIR/$m/model-settings.json" <<JSON
{
  "name": "$m",
  "implementation": "runtime.OnnxModel",
  "parameters": {"uri": "$onnx", "version": "1"},
  "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, $(dims_of "$m")]}],
  "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
}
JSON
done

cd "$WORKDIR"
exec "$VENV/bin/mlserver" start "$WORKDIR"
