#!/usr/bin/env bash
# Before and after multi-tenancy on the hot paths (log_metric, search_runs, inference):
# the binary from before the change, the one after with the owner's token in `default`,
# and the one after with an editor's token narrowed to another workspace. Rounds alternate
# the three so the machine's drift falls on all of them.
#
#   BEFORE=/tmp/trainyard-before AFTER=/var/tmp/trainyard-target/release/trainyard \
#       bench/tenancy/run.sh [ROUNDS=3] [CALLS=2000]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BEFORE=${BEFORE:?the trainyard binary from before the change}
AFTER=${AFTER:-/var/tmp/trainyard-target/release/trainyard}
ROUNDS=${ROUNDS:-3}
CALLS=${CALLS:-2000}
PORT=${PORT:-18095}
OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
PID=
stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true; PID=; }
trap stop EXIT

run_one() { # label binary mode
  local label=$1 bin=$2 mode=$3 dir
  dir=$(mktemp -d /var/tmp/trainyard-bench-tenancy.XXXXXX)
  "$bin" up --listen 127.0.0.1:$PORT --grpc-listen 127.0.0.1:$((PORT + 1)) --data-dir "$dir" \
      --serve-runtime tract >"$dir/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 200); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && [ -s "$dir/admin-token" ] && break; sleep 0.1; done
  local token workspace=""
  token=$(cat "$dir/admin-token")
  if [ "$mode" = workspace ]; then
    TRAINYARD_SERVER=http://127.0.0.1:$PORT TRAINYARD_TOKEN=$token "$bin" workspaces create bench >/dev/null
    TRAINYARD_SERVER=http://127.0.0.1:$PORT TRAINYARD_TOKEN=$token "$bin" users add benchuser >/dev/null
    TRAINYARD_SERVER=http://127.0.0.1:$PORT TRAINYARD_TOKEN=$token "$bin" workspaces grant --workspace bench benchuser editor >/dev/null
    token=$(TRAINYARD_SERVER=http://127.0.0.1:$PORT TRAINYARD_TOKEN=$token "$bin" tokens create bench --user benchuser --narrowed --workspace bench 2>/dev/null)
  fi
  python3 "$HERE/bench.py" --url http://127.0.0.1:$PORT --token "$token" --calls "$CALLS" \
      | tee -a "$OUT/$label.jsonl"
  stop
  rm -rf "$dir"
}

for r in $(seq "$ROUNDS"); do
  echo "round $r" >&2
  run_one before "$BEFORE" default
  run_one after-default "$AFTER" default
  run_one after-workspace "$AFTER" workspace
done
python3 - "$OUT" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
rows = {l: [json.loads(x) for x in (out / f"{l}.jsonl").read_text().split("\n") if x.strip()]
        for l in ["before", "after-default", "after-workspace"]}
print("| path | before calls/s (median, min-max) | after, default | ratio | after, narrowed token in a workspace | ratio |")
print("|---|--:|--:|--:|--:|--:|")
for path in ["log_metric", "search_runs", "inference"]:
    cells = []
    med = {}
    for l in rows:
        v = [r[path]["calls_per_s"] for r in rows[l]]
        med[l] = statistics.median(v)
        cells.append(f"{med[l]:,.0f} ({min(v):,.0f}-{max(v):,.0f})")
    print(f"| {path} | {cells[0]} | {cells[1]} | {med['after-default'] / med['before']:.3f} | {cells[2]} | {med['after-workspace'] / med['before']:.3f} |")
PY
