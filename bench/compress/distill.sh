#!/usr/bin/env bash
# Distillation: the CNN of examples/EXAMPLE/cnn.toml teaches the MLP of
# examples/EXAMPLE/student.toml; the student is trained alone and distilled with the same
# seed, data and epochs, for SEEDS seeds and each (alpha, temperature) in SETTINGS. Prints
# each test accuracy.
#   digits: CNN 151,306 parameters (40 epochs), student 2,410 (1,437 training rows)
#   mnist:  CNN 106,826 parameters (8 epochs), student 25,450 (4,000 training rows)
#
#   bench/compress/distill.sh
#   EXAMPLE=mnist SEEDS="1 2 3" SETTINGS="0.5:4 0.7:2" EPOCHS=8 bench/compress/distill.sh
#   STUDENT=my-student.toml bench/compress/distill.sh
#   FEW=0.1 EPOCHS=60 bench/compress/distill.sh   # the student has labels for 10 % of the rows
#
# FEW=F splits the rows three ways (stratified, seed 7): `few` (F), `train` (0.8 − F) and
# `test` (0.2). The teacher learns from `train`; the student, alone and distilled, from `few`
# only: the regime of Hinton et al. (2015, section 5), where soft targets act as a
# regularizer for a student with few labelled rows. Without FEW both learn from all 80 %.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-/var/tmp/trainyard-target}
BIN=${BIN:-$TARGET/debug/trainyard}
PORT=${PORT:-18117}
SEEDS=${SEEDS:-1 2 3}
SETTINGS=${SETTINGS:-0.1:4 0.5:4 0.7:2}
EXAMPLE=${EXAMPLE:-digits}
case "$EXAMPLE" in
  digits) DEFAULT_EPOCHS=40 FILE=digits.csv.gz ;;
  mnist) DEFAULT_EPOCHS=8 FILE=mnist_5k.csv.gz ;;
  *) echo "EXAMPLE=$EXAMPLE: digits or mnist" >&2; exit 2 ;;
esac
EPOCHS=${EPOCHS:-$DEFAULT_EPOCHS}
FEW=${FEW:-}
EX="$ROOT/examples/$EXAMPLE"
STUDENT=${STUDENT:-$EX/student.toml}   # another student file (same dataset) to distil into
log() { printf '[distill] %s\n' "$*" >&2; }
"$EX/fetch.sh" >/dev/null
DATA=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"' EXIT
"$BIN" up --data-dir "$DATA" --listen "127.0.0.1:$PORT" --grpc-listen "127.0.0.1:$((PORT + 1000))" >"$DATA/server.log" 2>&1 &
SERVER=$!
export TRAINYARD_SERVER=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf "$TRAINYARD_SERVER/healthz" >/dev/null && break; sleep 0.2; done
export TRAINYARD_TOKEN=$(cat "$DATA/admin-token")
ty() { "$BIN" "$@"; }
accuracy() { awk '/^test: accuracy/ && !found { print $3; found = 1 }'; }

ty dataset import "$EXAMPLE" "$EX/data/$FILE" >/dev/null
STEPS="$EX/steps.toml"
STUDENT_SPLIT=train
if [ -n "$FEW" ]; then
  awk -v f="$FEW" 'BEGIN { exit !(f > 0 && f < 0.8) }' || { echo "FEW=$FEW: a fraction in (0, 0.8)" >&2; exit 2; }
  STEPS="$DATA/steps.toml"
  rest=$(awk -v f="$FEW" 'BEGIN { printf "%.4f", 0.8 - f }')
  grep -q '^ratios = { train = 0.8, test = 0.2 }$' "$EX/steps.toml" \
    || { echo "$EX/steps.toml: no 80/20 split line to divide" >&2; exit 2; }
  sed "s/^ratios = { train = 0.8, test = 0.2 }$/ratios = { few = $FEW, train = $rest, test = 0.2 }/" \
    "$EX/steps.toml" >"$STEPS"
  STUDENT_SPLIT=few
  log "the student learns from the split 'few' ($FEW of the rows), the teacher from 'train' ($rest)"
fi
ty dataset process "$EXAMPLE" --steps "$STEPS" >/dev/null
teacher=$(ty train "$EX/cnn.toml" | accuracy)
log "teacher $EXAMPLE-cnn:1: test accuracy $teacher"
echo "| seed | alone | $(for s in $SETTINGS; do printf 'distilled α %s T %s | ' "${s%%:*}" "${s##*:}"; done)"
for seed in $SEEDS; do
  student="$DATA/student-$seed.toml"
  sed -e "s/^seed = .*/seed = $seed/" -e "s/^epochs = .*/epochs = $EPOCHS/" \
    -e "s/^train_split = .*/train_split = \"$STUDENT_SPLIT\"/" "$STUDENT" >"$student"
  if [ -n "$FEW" ] && ! grep -q "^train_split = \"$STUDENT_SPLIT\"" "$student"; then
    echo "$STUDENT: no train_split line to point at '$STUDENT_SPLIT'" >&2; exit 2
  fi
  row="| $seed | $(ty train "$student" | accuracy) |"
  for s in $SETTINGS; do
    a=$(ty compress "$EXAMPLE-cnn:1" --distill "$student" --alpha "${s%%:*}" --temperature "${s##*:}" | accuracy)
    row="$row $a |"
  done
  echo "$row"
done
