"""Writes bench/ui's data straight into a `mlflow server`'s SQLite store, at full size.

Why not through MLflow's REST API like `seed.py`: MLflow accepts ~20 runs a second here
(10,000 runs took 484 s), so 100,000 runs and 10,000,000 points would take hours before a
page is opened. The rows written here are the ones MLflow's own `runs/create`,
`runs/log-batch` and `runs/update` write (checked against a run logged through the API:
`runs`, `tags` with `mlflow.runName`, `params`, `metrics`, `latest_metrics`), with the same
names, values, steps and timestamps as `seed.py`, so both UIs open the same data. The
experiments are created through the API so that MLflow fills in its own columns.

    python seed_mlflow_db.py --url http://127.0.0.1:5000 --db /path/mlflow.db \
        --runs 100000 --long-points 10000000

Prints the same JSON object as seed.py.
"""
import argparse
import json
import sqlite3
import sys
import time
import uuid

import seed

CHUNK = 50_000  # rows per executemany


LOCATIONS = {}


def insert_run(db, exp, name, start, end, status="FINISHED"):
    if exp not in LOCATIONS:
        # Where MLflow put the experiment's artifacts: its runs' folders go under it.
        LOCATIONS[exp] = db.execute("SELECT artifact_location FROM experiments WHERE experiment_id = ?", (int(exp),)).fetchone()[0]
    run = uuid.uuid4().hex
    db.execute(
        "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status,"
        " start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id)"
        " VALUES (?, ?, 'UNKNOWN', '', '', '', ?, ?, ?, '', 'active', ?, ?)",
        (run, name, status, start, end, f"{LOCATIONS[exp]}/{run}/artifacts", int(exp)),
    )
    db.execute("INSERT INTO tags (key, value, run_uuid) VALUES ('mlflow.runName', ?, ?)", (name, run))
    return run


METRIC_ROW = "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, 0)"


def insert_metric(db, run, key, rows):
    """rows: (value, timestamp, step) in step order; the last is the latest (MLflow keeps
    the greatest (step, timestamp, value): the same row for these curves)."""
    buf = []
    last = None
    for value, ts, step in rows:
        last = (value, ts, step)
        buf.append((key, value, ts, run, step))
        if len(buf) == CHUNK:
            db.executemany(METRIC_ROW, buf)
            buf.clear()
    if last is None:
        return
    db.executemany(METRIC_ROW, buf)
    value, ts, step = last
    db.execute(
        "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?, ?, ?, ?, 0, ?)",
        (key, value, ts, step, run),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--long-points", type=int, default=10_000_000)
    p.add_argument("--overlay", type=int, default=100)
    p.add_argument("--overlay-steps", type=int, default=10_000)
    args = p.parse_args()
    args.token = None
    t0 = time.time()
    out = {}
    exps = {name: seed.experiment(args, name) for name in ("ui-bench-runs", "ui-bench-long", "ui-bench-overlay")}
    db = sqlite3.connect(args.db, timeout=60)
    db.execute("PRAGMA synchronous = OFF")

    exp = exps["ui-bench-runs"]
    for i in range(args.runs):
        name, start, end, metrics, params = seed.table_run(i)
        run = insert_run(db, exp, name, start, end)
        for key, points in metrics.items():
            insert_metric(db, run, key, points)
        db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", [(k, v, run) for k, v in params])
        if (i + 1) % 10_000 == 0:
            db.commit()
            print(f"[seed-mlflow-db] {i + 1} runs ({time.time() - t0:.0f} s)", file=sys.stderr)
    db.commit()
    out["runs_experiment"], out["runs"] = exp, args.runs

    # seed.py creates these runs and leaves them RUNNING (it never calls runs/update on them).
    exp = exps["ui-bench-long"]
    run = insert_run(db, exp, "long", 1_700_000_000_000, None, status="RUNNING")
    insert_metric(db, run, "loss", seed.curve(args.long_points, 0))
    db.commit()
    out["long_experiment"], out["long_run"], out["long_points"] = exp, run, args.long_points
    print(f"[seed-mlflow-db] {args.long_points} points ({time.time() - t0:.0f} s)", file=sys.stderr)

    exp = exps["ui-bench-overlay"]
    overlay = []
    for i in range(args.overlay):
        run = insert_run(db, exp, f"overlay-{i:03d}", 1_700_000_000_000 + i, None, status="RUNNING")
        insert_metric(db, run, "loss", seed.curve(args.overlay_steps, i))
        overlay.append(run)
    db.commit()
    db.close()
    out["overlay_experiment"], out["overlay_runs"], out["overlay_steps"] = exp, overlay, args.overlay_steps
    out["seed_s"] = round(time.time() - t0, 1)
    print(f"[seed-mlflow-db] done in {out['seed_s']} s", file=sys.stderr)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
