#!/usr/bin/env bash
# The tritonclient suite against real Trainyard servers:
#   1. `trainyard serve` over a generated model repository, on ONNX Runtime, then on tract;
#   2. the eviction test: ten models over a memory budget, random concurrent requests;
#   3. the whole platform (`trainyard up`), on ONNX Runtime, then on tract: a scikit-learn
#      model imported with `trainyard models import`, the digits CNN trained with
#      `trainyard train`, and an ONNX model written with the `onnx` package (imported, made
#      native, fine-tuned), each served from the registry and checked against its origin.
#
#   tests/triton_client/run.sh [pytest args...]     # needs TRAINYARD_BIN (default: debug build)
#   tests/triton_client/run.sh --prepare            # only build the venv (prints its python)
#
# The venv lives at ${TRAINYARD_SERVE_VENV:-/var/tmp/trainyard-serve-venv}; it is rebuilt
# only when requirements.txt changes. ONNX Runtime's library comes from its `onnxruntime`
# package (TRAINYARD_ORT_LIB).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${TRAINYARD_SERVE_VENV:-/var/tmp/trainyard-serve-venv}"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.trainyard-requirements.sha256"
BIN="${TRAINYARD_BIN:-${CARGO_TARGET_DIR:-/var/tmp/trainyard-target}/debug/trainyard}"
# Below the kernel's ephemeral range (32768-60999), so no outgoing connection holds them.
HTTP_PORT="${TRAINYARD_TEST_HTTP_PORT:-28100}"
GRPC_PORT="${TRAINYARD_TEST_GRPC_PORT:-28101}"
UP_HTTP_PORT="${TRAINYARD_TEST_UP_HTTP_PORT:-28102}"
UP_GRPC_PORT="${TRAINYARD_TEST_UP_GRPC_PORT:-28103}"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ ! -x "$VENV/bin/python" || "$want" != "$have" ]]; then
  echo "run.sh: preparing client venv at $VENV" >&2
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ" >&2
  echo "$want" > "$STAMP"
fi
if [[ "${1:-}" == "--prepare" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi

WORK=$(mktemp -d /tmp/trainyard-triton.XXXXXX)
SERVER=""
stop_server() { if [[ -n "$SERVER" ]]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=""; fi; }
trap 'stop_server; rm -rf "$WORK"' EXIT
wait_port() {
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

export TRAINYARD_ORT_LIB
TRAINYARD_ORT_LIB=$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | sort | tail -1)
export TRAINYARD_ADMIN_TOKEN="triton-suite-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TRAINYARD_TEST_TOKEN="$TRAINYARD_ADMIN_TOKEN"
export TRAINYARD_TEST_HTTP="127.0.0.1:$HTTP_PORT" TRAINYARD_TEST_GRPC="127.0.0.1:$GRPC_PORT"
"$VENV/bin/python" "$HERE/make_models.py" "$WORK/repo" --extra-mlps 10 --hidden 4096
export TRAINYARD_TEST_REPO="$WORK/repo"

start_server() { # start_server LOG ARGS...
  local log=$1; shift
  "$BIN" serve --model-repository "$WORK/repo" --listen "$TRAINYARD_TEST_HTTP" \
    --grpc-listen "$TRAINYARD_TEST_GRPC" "$@" >"$log" 2>&1 &
  SERVER=$!
  if ! { wait_port "$HTTP_PORT" && wait_port "$GRPC_PORT"; }; then
    echo "run.sh: the server did not come up; its log:" >&2
    tail -30 "$log" >&2
    return 1
  fi
}

cd "$HERE"
status=0
for runtime in onnxruntime tract; do
  echo "run.sh: protocol suite, runtime $runtime" >&2
  start_server "$WORK/serve-$runtime.log" --serve-runtime "$runtime" --serve-max-body 16MiB
  TRAINYARD_TEST_RUNTIME=$runtime "$VENV/bin/python" -m pytest -q -p no:cacheprovider -rfE \
    test_protocol.py "$@" || { status=1; tail -30 "$WORK/serve-$runtime.log"; }
  stop_server
done

echo "run.sh: eviction under a 128 MiB budget (ONNX Runtime)" >&2
start_server "$WORK/serve-evict.log" --serve-runtime onnxruntime --serve-memory-limit 128MiB
TRAINYARD_TEST_SERVER_PID=$SERVER TRAINYARD_TEST_BUDGET=$((128 << 20)) \
  "$VENV/bin/python" -m pytest -q -s -p no:cacheprovider -rfE test_eviction.py "$@" \
  || { status=1; tail -30 "$WORK/serve-evict.log"; }
stop_server

# As a user starts it: jobs run as the server's default job account (under root,
# `trainyard-job`, which has no home). Each runtime gets a fresh data dir, so the models
# registered there are the only ones.
for runtime in onnxruntime tract; do
  echo "run.sh: trainyard up (registry + /v2), runtime $runtime" >&2
  log="$WORK/up-$runtime.log"
  "$BIN" up --listen "127.0.0.1:$UP_HTTP_PORT" --grpc-listen "127.0.0.1:$UP_GRPC_PORT" \
    --data-dir "$WORK/up-$runtime" --cpus 2 --serve-runtime "$runtime" \
    >"$log" 2>&1 &
  SERVER=$!
  if wait_port "$UP_HTTP_PORT" && wait_port "$UP_GRPC_PORT"; then
    TRAINYARD_TEST_HTTP="127.0.0.1:$UP_HTTP_PORT" TRAINYARD_TEST_GRPC="127.0.0.1:$UP_GRPC_PORT" \
    TRAINYARD_TEST_RUNTIME=$runtime TRAINYARD_TEST_BIN="$(realpath "$BIN")" \
    TRAINYARD_TEST_ROOT="$(cd "$HERE/../.." && pwd)" \
      "$VENV/bin/python" -m pytest -q -p no:cacheprovider -rfEsP \
      test_sklearn_import.py test_trained_cnn.py test_onnx_script_import.py "$@" || { status=1; tail -30 "$log"; }
  else
    echo "run.sh: trainyard up did not come up; its log:" >&2
    tail -30 "$log" >&2
    status=1
  fi
  stop_server
done
exit $status
