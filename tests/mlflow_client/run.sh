#!/usr/bin/env bash
# Run the MLflow-client compatibility suite against the server named by
# MLFLOW_TRACKING_URI (and optionally MLFLOW_TRACKING_TOKEN).
#
#   MLFLOW_TRACKING_URI=http://127.0.0.1:25081 tests/mlflow_client/run.sh [pytest args...]
#   tests/mlflow_client/run.sh --prepare     # only build the venv (prints its python)
#
# The client venv lives at ${TRAINYARD_MLFLOW_VENV:-/var/tmp/trainyard-mlflow-venv}; it is
# (re)built only when requirements.txt changes (hash stored inside the venv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${TRAINYARD_MLFLOW_VENV:-/var/tmp/trainyard-mlflow-venv}"
PYTHON="${TRAINYARD_MLFLOW_PYTHON:-python3}"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.trainyard-requirements.sha256"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ ! -x "$VENV/bin/python" || "$want" != "$have" ]]; then
  echo "run.sh: preparing client venv at $VENV" >&2
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ" >&2
  echo "$want" > "$STAMP"
fi
if [[ "${1:-}" == "--prepare" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi
if [[ -z "${MLFLOW_TRACKING_URI:-}" ]]; then
  echo "run.sh: MLFLOW_TRACKING_URI must name the server under test (e.g. http://127.0.0.1:25081)" >&2
  exit 2
fi

# Test paths may be given relative to the caller's directory or to this folder; with none,
# the whole folder runs.
args=()
for a in "$@"; do
  p="${a%%::*}"
  if [[ "$a" != -* && -e "$p" ]]; then
    args+=("$(cd "$(dirname "$p")" && pwd)/$(basename "$p")${a:${#p}}")
  else
    args+=("$a")
  fi
done
cd "$HERE"
# No parallel workers, no cache dir inside the repo.
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -rfEsxX ${args[@]+"${args[@]}"}
