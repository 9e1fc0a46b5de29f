#!/usr/bin/env bash
# Builds the Optuna client venv (only when requirements.txt changes) and prints its python,
# for `crates/cli/tests/tuning.rs` (TRAINYARD_TEST_OPTUNA_PYTHON).
#
#   tests/optuna_client/run.sh --prepare
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${TRAINYARD_OPTUNA_VENV:-/var/tmp/trainyard-optuna-client-venv}"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.trainyard-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$want" != "$(cat "$STAMP" 2>/dev/null || true)" ]]; then
  echo "run.sh: preparing the Optuna client venv at $VENV" >&2
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ" >&2
  echo "$want" > "$STAMP"
fi
echo "$VENV/bin/python"
