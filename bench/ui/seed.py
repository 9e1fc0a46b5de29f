"""Seeds a tracking server (Trainyard or MLflow: the same MLflow REST API) for bench/ui.

One experiment `ui-bench-runs` with RUNS runs (params lr, batch_size, seed, optimizer; a
20-point loss curve and a latest accuracy each), one run `long` in `ui-bench-long` with a
LONG_POINTS-point metric, and OVERLAY runs of OVERLAY_STEPS steps in `ui-bench-overlay`.
Prints a JSON object with the ids bench/ui/measure.mjs needs.

    python seed.py --url http://127.0.0.1:8080 --token "$TOKEN" --runs 100000 \
        --long-points 10000000 --overlay 100 --overlay-steps 10000
"""
import argparse
import concurrent.futures as cf
import json
import math
import sys
import threading
import time

import requests

BATCH = 1000  # MLflow's limit of metrics + params + tags per log-batch

local = threading.local()


def session(args):
    s = getattr(local, "s", None)
    if s is None:
        s = requests.Session()
        if args.token:
            s.headers["Authorization"] = f"Bearer {args.token}"
        local.s = s
    return s


def call(args, path, body):
    for attempt in range(5):
        r = session(args).post(f"{args.url}/api/2.0/mlflow/{path}", json=body, timeout=120)
        if r.status_code < 500 and r.status_code != 429:
            break
        time.sleep(0.5 * (attempt + 1))
    if r.status_code >= 300:
        raise SystemExit(f"{path}: {r.status_code} {r.text[:300]}")
    return r.json()


def experiment(args, name):
    r = session(args).get(f"{args.url}/api/2.0/mlflow/experiments/get-by-name",
                          params={"experiment_name": name}, timeout=60)
    if r.status_code == 200:
        return r.json()["experiment"]["experiment_id"]
    return call(args, "experiments/create", {"name": name})["experiment_id"]


def make_run(args, exp, name, start):
    return call(args, "runs/create", {"experiment_id": exp, "run_name": name, "start_time": start})["run"]["info"]["run_id"]


def loss(step, seed):
    return 2.0 / (1.0 + step / 50.0) + 0.05 * math.sin(step * 0.37 + seed)


def point(step, seed_value):
    """One (value, timestamp, step) row of a loss curve: what both seeders write."""
    return loss(step, seed_value), 1_700_000_000_000 + step, step


def curve(points, seed_value):
    return (point(s, seed_value) for s in range(points))


def table_run(i):
    """Run i of the runs table: its name, start and end, metrics as {key: [(value,
    timestamp, step)]} and params as [(key, value)]; what both seeders write."""
    metrics = {
        "loss": list(curve(20, i)),
        "accuracy": [(0.5 + 0.5 * ((i * 7919) % 1000) / 1000, 1_700_000_000_100, 19)],
    }
    params = [
        ("lr", str([0.1, 0.01, 0.001, 0.0001][i % 4])),
        ("batch_size", str([16, 32, 64][i % 3])),
        ("seed", str(i)),
        ("optimizer", ["adam", "sgd"][i % 2]),
    ]
    return f"run-{i:06d}", 1_700_000_000_000 + i, 1_700_000_100_000 + i, metrics, params


def one_run(args, exp, i):
    name, start, end, metrics, params = table_run(i)
    run = make_run(args, exp, name, start)
    rows = [{"key": k, "value": v, "timestamp": t, "step": s} for k, points in metrics.items() for v, t, s in points]
    params = [{"key": k, "value": v} for k, v in params]
    call(args, "runs/log-batch", {"run_id": run, "metrics": rows, "params": params})
    call(args, "runs/update", {"run_id": run, "status": "FINISHED", "end_time": end})
    return run


def long_metric(args, run, points, key="loss", seed=0):
    def chunk(start):
        end = min(points, start + BATCH)
        ms = [{"key": key, "value": v, "timestamp": t, "step": s} for v, t, s in map(lambda s: point(s, seed), range(start, end))]
        call(args, "runs/log-batch", {"run_id": run, "metrics": ms})
    with cf.ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(chunk, range(0, points, BATCH)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token")
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--long-points", type=int, default=10_000_000)
    p.add_argument("--overlay", type=int, default=100)
    p.add_argument("--overlay-steps", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=16)
    args = p.parse_args()
    out = {}
    t0 = time.time()
    exp = experiment(args, "ui-bench-runs")
    out["runs_experiment"] = exp
    with cf.ThreadPoolExecutor(args.threads) as pool:
        done = 0
        for _ in pool.map(lambda i: one_run(args, exp, i), range(args.runs)):
            done += 1
            if done % 10_000 == 0:
                print(f"[seed] {done} runs ({time.time() - t0:.0f} s)", file=sys.stderr)
    out["runs"] = args.runs
    exp = experiment(args, "ui-bench-long")
    run = make_run(args, exp, "long", 1_700_000_000_000)
    long_metric(args, run, args.long_points)
    out["long_experiment"], out["long_run"], out["long_points"] = exp, run, args.long_points
    print(f"[seed] {args.long_points} points ({time.time() - t0:.0f} s)", file=sys.stderr)
    exp = experiment(args, "ui-bench-overlay")
    overlay = []
    for i in range(args.overlay):
        run = make_run(args, exp, f"overlay-{i:03d}", 1_700_000_000_000 + i)
        long_metric(args, run, args.overlay_steps, seed=i)
        overlay.append(run)
    out["overlay_experiment"], out["overlay_runs"], out["overlay_steps"] = exp, overlay, args.overlay_steps
    out["seed_s"] = round(time.time() - t0, 1)
    print(f"[seed] done in {out['seed_s']} s", file=sys.stderr)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
