#!/usr/bin/env python3
"""The cost of authorization and workspace scoping on the hot paths: `log_metric`,
`search_runs` and inference, against one server binary, through one keep-alive HTTP
connection, one call at a time (stdlib only).

    bench.py --url http://127.0.0.1:18095 --token TOKEN [--workspace W] [--calls 2000]

prints one JSON object: per path, calls per second and p50/p99 latency in microseconds.
`run.sh` starts the servers (before and after the change) and compares them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import pathlib
import statistics
import sys
import time
import urllib.parse

TINY = pathlib.Path(__file__).resolve().parents[2] / "crates/serve/tests/fixtures/repo/tiny/1/model.onnx"


class Conn:
    def __init__(self, url: str, token: str, workspace: str | None):
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if workspace:
            self.headers["X-Trainyard-Workspace"] = workspace

    def call(self, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, bytes]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = dict(self.headers)
        if raw is not None:
            headers["Content-Type"] = "application/octet-stream"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        out = r.read()
        return r.status, out

    def ok(self, method: str, path: str, body=None, raw: bytes | None = None) -> dict:
        status, out = self.call(method, path, body, raw)
        if status >= 300:
            sys.exit(f"{method} {path}: {status} {out[:300]!r}")
        return json.loads(out or b"{}")


def timed(fn, calls: int) -> dict:
    for _ in range(min(200, calls)):  # warm-up
        fn()
    lat = []
    start = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    lat.sort()
    return {
        "calls_per_s": calls / wall,
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[int(len(lat) * 0.99) - 1] * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--workspace")
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args()
    c = Conn(a.url, a.token, a.workspace)
    m = "/api/2.0/mlflow"
    exp = c.ok("POST", f"{m}/experiments/create", {"name": f"bench-{time.time_ns()}"})["experiment_id"]
    runs = [c.ok("POST", f"{m}/runs/create", {"experiment_id": exp})["run"]["info"] for _ in range(20)]
    run = runs[0]
    for i, r in enumerate(runs):
        c.ok("POST", f"{m}/runs/log-batch", {"run_id": r["run_id"], "params": [{"key": "lr", "value": str(i)}],
                                               "metrics": [{"key": "loss", "value": i, "timestamp": 1, "step": 0}]})
    root = run["artifact_uri"].split("mlflow-artifacts:", 1)[1].lstrip("/")
    c.ok("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{root}/model/model.onnx", raw=TINY.read_bytes())
    name = f"tiny{time.time_ns()}"
    c.ok("POST", f"{m}/registered-models/create", {"name": name})
    c.ok("POST", f"{m}/model-versions/create", {"name": name, "source": f"runs:/{run['run_id']}/model", "run_id": run["run_id"]})
    infer = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    c.ok("POST", f"/v2/models/{name}/infer", infer)

    step = [0]

    def log_metric():
        step[0] += 1
        status, out = c.call("POST", f"{m}/runs/log-metric", {"run_id": run["run_id"], "key": "loss", "value": 0.5,
                                                             "timestamp": 1_700_000_000_000, "step": step[0]})
        assert status == 200, out

    def search_runs():
        status, out = c.call("POST", f"{m}/runs/search", {"experiment_ids": [exp], "filter": "params.lr = '3'",
                                                          "max_results": 10})
        assert status == 200 and b"run_id" in out, out

    def inference():
        status, out = c.call("POST", f"/v2/models/{name}/infer", infer)
        assert status == 200, out

    print(json.dumps({
        "log_metric": timed(log_metric, a.calls),
        "search_runs": timed(search_runs, a.calls),
        "inference": timed(inference, a.calls),
    }))


if __name__ == "__main__":
    main()
