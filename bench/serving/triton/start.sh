#!/usr/bin/env bash
# Start real Triton 2.51 (from the nvidia-pytriton wheel) on 127.0.0.1 serving mlp and cnn
# through the python backend + onnxruntime.
# usage: start.sh REPO_WITH_ONNX WORKDIR HTTP_PORT GRPC_PORT METRICS_PORT
set -euo pipefail
[ $# -eq 5 ] || { echo "usage: $0 REPO_WITH_ONNX WORKDIR HTTP_PORT GRPC_PORT METRICS_PORT" >&2; exit 2; }
SRC=$(realpath "$1"); WORK=$2; HTTP=$3; GRPC=$4; METRICS=$5
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${TRITON_VENV:-/var/tmp/trainyard-bench-serving/pt}
SITE=$(echo "$VENV"/lib/python3.*/site-packages)
TS=$SITE/pytriton/tritonserver
mkdir -p "$WORK"; WORK=$(realpath "$WORK")

# Triton repository: <m>/config.pbtxt from the template, <m>/1/{model.py,model.onnx}.
rm -rf "$WORK/repo"
for spec in "mlp:[ 784 ]" "cnn:[ 1, 28, 28 ]"; do
  m=${spec%%:*}; dims=${spec#*:}
  mkdir -p "$WORK/repo/$m/1"
  sed -e "s/NAME/$m/" -e "s/DIMS/$dims/" "$HERE/config.pbtxt.in" > "$WORK/repo/$m/config.pbtxt"
  cp "$HERE/model.py" "$WORK/repo/$m/1/model.py"
  cp "$SRC/$m/1/model.onnx" "$WORK/repo/$m/1/model.onnx"
done

# Backend dir: the wheel's python backend plus the 3.11 stub, which must sit next to it.
BK=$WORK/backends/python
mkdir -p "$BK"
cp "$TS/backends/python/libtriton_python.so" "$TS/backends/python/triton_python_backend_utils.py" "$BK/"
cp "$TS/python_backend_stubs/3.11/triton_python_backend_stub" "$BK/"
chmod +x "$BK/triton_python_backend_stub"

# The stub runs the venv's python (first on PATH); tritonserver needs the wheel's bundled libs.
export PATH=$VENV/bin:$PATH
export LD_LIBRARY_PATH=$SITE/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec "$TS/bin/tritonserver" --model-repository "$WORK/repo" --backend-directory "$WORK/backends" \
  --model-control-mode explicit --load-model '*' \
  --http-address 127.0.0.1 --grpc-address 127.0.0.1 --metrics-address 127.0.0.1 \
  --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS"
