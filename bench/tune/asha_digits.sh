#!/usr/bin/env bash
# ASHA against running every trial to the full budget, on examples/digits' CNN with epochs
# as the resource: the same configurations (a Sobol sequence with one seed) in both studies,
# so the only difference is the rule. Prints best test accuracy, total epochs trained and
# wall time of each. bench/tune/asha_replay.py replays other rules over the full-budget
# study's recorded curves without training again.
#
#   BIN=/var/tmp/trainyard-target/release/trainyard SEED=4 bench/tune/asha_digits.sh
#   TRIALS=27 MAX_EPOCHS=9 MIN_RESOURCE=1 ETA=3 bench/tune/asha_digits.sh      # the first, smaller setting
#
# Variables: TRIALS (configurations; 81), MAX_EPOCHS (27), SEED (the Sobol sequence's; 1),
# MIN_RESOURCE (ASHA's first rung, epochs; 3), ETA (its reduction factor; 4), FULL_FROM (the
# results folder of an earlier run with the same SEED, TRIALS and MAX_EPOCHS: its full-budget
# study is reused instead of trained again).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${BIN:-/var/tmp/trainyard-target/release/trainyard}
TRIALS=${TRIALS:-81}
MAX=${MAX_EPOCHS:-27}
SEED=${SEED:-1}
MIN_RESOURCE=${MIN_RESOURCE:-3}
ETA=${ETA:-4}
FULL_FROM=${FULL_FROM:-}
PORT=${PORT:-18099}
OUT=${OUT:-$HERE/results/asha-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
"$ROOT/examples/digits/fetch.sh" >/dev/null
DIR=$(mktemp -d /var/tmp/trainyard-bench-asha.XXXXXX)
PID=
stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true; rm -rf "$DIR"; }
trap stop EXIT
"$BIN" up --listen 127.0.0.1:$PORT --grpc-listen 127.0.0.1:$((PORT + 1)) --data-dir "$DIR/data" \
    --cpus "$(nproc)" >"$OUT/server.log" 2>&1 &
PID=$!
for _ in $(seq 200); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && [ -s "$DIR/data/admin-token" ] && break; sleep 0.1; done
export TRAINYARD_SERVER=http://127.0.0.1:$PORT TRAINYARD_TOKEN=$(cat "$DIR/data/admin-token")
"$BIN" dataset import digits "$ROOT/examples/digits/data/digits.csv.gz" >/dev/null
"$BIN" dataset process digits --steps "$ROOT/examples/digits/steps.toml" >/dev/null
cp "$ROOT/examples/digits/tune-cnn.toml" "$DIR/"
study() { # name pruner-table
  cat >"$DIR/$1.toml" <<TOML
name = "$1"
parallelism = 1
[space.lr]
type = "float"
low = 1e-4
high = 3e-2
log = true
[space.dense]
type = "categorical"
choices = [32, 64, 128, 256]
[space.batch]
type = "categorical"
choices = [16, 32, 64, 128]
[objective]
metric = "val_accuracy"
direction = "maximize"
[sampler]
kind = "sobol"
seed = $SEED
$2
[budget]
trials = $TRIALS
[trial]
train_file = "tune-cnn.toml"
resources = { cpus = $(nproc) }
TOML
  local start end
  start=$(date +%s.%N)
  "$BIN" tune "$DIR/$1.toml" -o json >"$OUT/$1.json"
  end=$(date +%s.%N)
  "$BIN" studies show "$1" -o json >"$OUT/$1-trials.json"
  echo "$1 $(echo "$end - $start" | bc)" >>"$OUT/wall.txt"
}
# Full budget: every trial trains MAX epochs (the template's epochs, set here).
sed -i "s/^epochs = .*/epochs = $MAX/" "$DIR/tune-cnn.toml"
if [ -n "$FULL_FROM" ]; then
    cp "$FULL_FROM/full.json" "$FULL_FROM/full-trials.json" "$OUT/"
    grep '^full ' "$FULL_FROM/wall.txt" >>"$OUT/wall.txt"
else
    study full ""
fi
study asha "[pruner]
kind = \"asha\"
min_resource = $MIN_RESOURCE
max_resource = $MAX
reduction_factor = $ETA"
python3 - "$OUT" "$MAX" <<'PY'
import json, pathlib, sys
out, top = pathlib.Path(sys.argv[1]), int(sys.argv[2])
wall = dict(l.split() for l in (out / "wall.txt").read_text().splitlines())
rows = {}
for name in ["full", "asha"]:
    shown = json.loads((out / f"{name}-trials.json").read_text())
    trials = shown["trials"]
    epochs = sum(t["resource"] for t in trials) if name == "asha" else top * sum(1 for t in trials if t["state"] == "complete")
    best = shown["study"]["best"]
    rows[name] = (best["value"], best["number"], epochs, float(wall[name]), len(trials))
print("| study | trials | best test accuracy (trial) | epochs trained | wall time, s |")
print("|---|--:|--:|--:|--:|")
for name, (acc, n, epochs, w, count) in rows.items():
    print(f"| {name} | {count} | {acc:.4f} (#{n}) | {epochs} | {w:.0f} |")
full, asha = rows["full"], rows["asha"]
print(f"\nASHA: accuracy {asha[0] - full[0]:+.4f} against the full budget; "
      f"{full[2] / asha[2]:.2f}x fewer epochs, {full[3] / asha[3]:.2f}x less wall time.")
PY
