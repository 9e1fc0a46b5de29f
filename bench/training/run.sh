#!/usr/bin/env bash
# Training benchmark, one run on one machine (see docs/benchmarks.md):
#  1. the engine vs PyTorch on CPU, same thread count, same models, batch sizes, optimizer
#     (Adam 1e-3) and synthetic data: the MLP 784-256-128-10 (batch 128) and the PyTorch
#     MNIST CNN (batch 64); each side run REPEAT times, alternating;
#  2. `trainyard run -- python overhead_script.py` vs the same script bare (wall time);
#  3. the data loader on an image-folder dataset (PNG decode + random crop + flip).
# The PyTorch venv is large and bench-only: /var/tmp/trainyard-bench-training/pt
# (bench/training/requirements.txt). Results: bench/training/results/<time>/.
#
#   bench/training/run.sh                # THREADS=2 REPEAT=2 by default
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-/var/tmp/trainyard-target}"
PY="${TRAINYARD_BENCH_PYTHON:-/var/tmp/trainyard-bench-training/pt/bin/python}"
THREADS="${THREADS:-2}"
REPEAT="${REPEAT:-2}"
OUT="$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
if [[ ! -x "$PY" ]]; then
  python3 -m venv "$(dirname "$(dirname "$PY")")"
  "$PY" -m pip install -q -r "$HERE/requirements.txt"
fi
(cd "$ROOT" && cargo build --release -q -p trainyard-cli \
  && cargo build --release -q -p trainyard-engine --example train_bench \
  && cargo build --release -q -p trainyard-data --example loader_bench)
ENGINE="$TARGET/release/examples/train_bench"
LOADER="$TARGET/release/examples/loader_bench"
BIN="$TARGET/release/trainyard"
{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "threads: $THREADS; torch $("$PY" -c 'import torch; print(torch.__version__)'); $(date -u)"
} | tee "$OUT/machine.txt"

SECTIONS="${SECTIONS:-train overhead loader}"
if [[ $SECTIONS == *train* ]]; then
echo "== 1. engine vs PyTorch (CPU, $THREADS threads)"
for i in $(seq "$REPEAT"); do
  for model in mlp cnn; do
    steps=$([[ $model == mlp ]] && echo 4000 || echo 150)
    RAYON_NUM_THREADS=$THREADS "$ENGINE" --model "$model" --steps "$steps" | tee -a "$OUT/train.jsonl"
    "$PY" "$HERE/pytorch_train.py" --model "$model" --threads "$THREADS" --steps "$steps" | tee -a "$OUT/train.jsonl"
  done
done
fi

if [[ $SECTIONS == *overhead* ]]; then
echo "== 2. trainyard run overhead"
DATA=$(mktemp -d)
PORT=28120
"$BIN" up --listen "127.0.0.1:$PORT" --grpc-listen 127.0.0.1:28121 --data-dir "$DATA" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
export TRAINYARD_SERVER="http://127.0.0.1:$PORT" TRAINYARD_TOKEN="$(cat "$DATA/admin-token")"
# The script prints its own wall time (from before `import torch`) and its training time;
# the outer wall time adds process start (bare) or submit → schedule → start → last log
# line → exit (trainyard run).
for i in $(seq $((REPEAT + 1))); do
  s=$(date +%s.%N); line=$("$PY" "$HERE/overhead_script.py" --steps 6000 | tail -1); e=$(date +%s.%N)
  echo "{\"what\":\"bare\",\"outer_s\":$(echo "$e - $s" | bc),\"script\":\"$line\"}" | tee -a "$OUT/overhead.jsonl"
  s=$(date +%s.%N); line=$("$BIN" run --cpus "$THREADS" -- "$PY" "$HERE/overhead_script.py" --steps 6000 2>/dev/null | tail -1); e=$(date +%s.%N)
  echo "{\"what\":\"trainyard run\",\"outer_s\":$(echo "$e - $s" | bc),\"script\":\"$line\"}" | tee -a "$OUT/overhead.jsonl"
done
kill $SERVER
fi

if [[ $SECTIONS == *loader* ]]; then
echo "== 3. data loader (image folder)"
"$LOADER" --images 20000 | tee "$OUT/loader.jsonl"
fi

"$PY" - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out = sys.argv[1]
import os
if os.path.exists(f"{out}/train.jsonl"):
    rows = [json.loads(l) for l in open(f"{out}/train.jsonl")]
    print("| model | Trainyard samples/s | PyTorch samples/s | ratio |\n|---|---|---|---|")
    for m in ("mlp", "cnn"):
        ty = statistics.median(r["samples_per_s"] for r in rows if r["model"] == m and r["framework"] == "trainyard")
        pt = statistics.median(r["samples_per_s"] for r in rows if r["model"] == m and r["framework"] == "pytorch")
        print(f"| {m} | {ty:,.0f} | {pt:,.0f} | {ty / pt:.2f}× |")
if os.path.exists(f"{out}/overhead.jsonl"):
    ov = [json.loads(l) for l in open(f"{out}/overhead.jsonl")]
    def field(r, k):
        return float(dict(kv.split("=") for kv in r["script"].split())[k])
    print("\n| | outer wall s (median) | script's own wall s | training s |\n|---|---|---|---|")
    med = {}
    for what in ("bare", "trainyard run"):
        rs = [r for r in ov if r["what"] == what]
        med[what] = [statistics.median(x) for x in ([r["outer_s"] for r in rs], [field(r, "wall_s") for r in rs], [field(r, "train_s") for r in rs])]
        print(f"| {what} | {med[what][0]:.2f} | {med[what][1]:.2f} | {med[what][2]:.2f} |")
    b, t = med["bare"], med["trainyard run"]
    print(f"\ntraining under trainyard run: {100 * (t[2] - b[2]) / b[2]:+.1f}%; outer wall: {100 * (t[0] - b[0]) / b[0]:+.1f}% ({t[0] - b[0]:+.2f} s)")
if os.path.exists(f"{out}/loader.jsonl"):
    for l in open(f"{out}/loader.jsonl"):
        print("\nloader:", l.strip())
PY
