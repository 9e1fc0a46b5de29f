#!/usr/bin/env bash
# Distillation on the digits: the CNN of examples/digits/cnn.toml (151,306 parameters, 40
# epochs) teaches the MLP of examples/digits/student.toml (2,410 parameters); the student is
# trained alone and distilled with the same seed, data and epochs, for SEEDS seeds and each
# (alpha, temperature) in SETTINGS. Prints each test accuracy and the medians.
#
#   bench/compress/distill.sh
#   SEEDS="1 2 3" SETTINGS="0.5:4 0.7:2" EPOCHS=40 bench/compress/distill.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-/var/tmp/trainyard-target}
BIN=${BIN:-$TARGET/debug/trainyard}
PORT=${PORT:-18117}
SEEDS=${SEEDS:-1 2 3}
SETTINGS=${SETTINGS:-0.5:4 0.7:2}
EPOCHS=${EPOCHS:-40}
log() { printf '[distill] %s\n' "$*" >&2; }
"$ROOT/examples/digits/fetch.sh" >/dev/null
DATA=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"' EXIT
"$BIN" up --data-dir "$DATA" --listen "127.0.0.1:$PORT" >"$DATA/server.log" 2>&1 &
SERVER=$!
export TRAINYARD_SERVER=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf "$TRAINYARD_SERVER/healthz" >/dev/null && break; sleep 0.2; done
export TRAINYARD_TOKEN=$(cat "$DATA/admin-token")
ty() { "$BIN" "$@"; }
accuracy() { awk '/^test: accuracy/ && !found { print $3; found = 1 }'; }

ty dataset import digits "$ROOT/examples/digits/data/digits.csv.gz" >/dev/null
ty dataset process digits --steps "$ROOT/examples/digits/steps.toml" >/dev/null
teacher=$(ty train "$ROOT/examples/digits/cnn.toml" | accuracy)
log "teacher digits-cnn:1: test accuracy $teacher"
echo "| seed | alone | $(for s in $SETTINGS; do printf 'distilled α %s T %s | ' "${s%%:*}" "${s##*:}"; done)"
for seed in $SEEDS; do
  student="$DATA/student-$seed.toml"
  sed -e "s/^seed = .*/seed = $seed/" -e "s/^epochs = .*/epochs = $EPOCHS/" \
    "$ROOT/examples/digits/student.toml" >"$student"
  row="| $seed | $(ty train "$student" | accuracy) |"
  for s in $SETTINGS; do
    a=$(ty compress digits-cnn:1 --distill "$student" --alpha "${s%%:*}" --temperature "${s##*:}" | accuracy)
    row="$row $a |"
  done
  echo "$row"
done
