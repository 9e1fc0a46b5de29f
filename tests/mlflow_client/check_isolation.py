"""After the suite ran inside one Trainyard workspace, checks from a second workspace's
token that none of it is visible: no experiment, run, metric, registered model or served
model of the first. Run with the suite's venv:

    TRAINYARD_SERVER=http://127.0.0.1:25081 WORKSPACE_A_TOKEN=... WORKSPACE_B_TOKEN=... \
        python check_isolation.py
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

SERVER = os.environ["TRAINYARD_SERVER"].rstrip("/")
TOKEN_A = os.environ["WORKSPACE_A_TOKEN"]
TOKEN_B = os.environ["WORKSPACE_B_TOKEN"]


def call(token: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(SERVER + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def experiments(token: str) -> list[dict]:
    out, page = [], None
    while True:
        body = {"max_results": 1000, "view_type": "ALL"}
        if page:
            body["page_token"] = page
        status, r = call(token, "POST", "/api/2.0/mlflow/experiments/search", body)
        assert status == 200, r
        out += r.get("experiments", [])
        page = r.get("next_page_token")
        if not page:
            return out


def runs(token: str, experiment_ids: list[str]) -> list[dict]:
    out = []
    for i in range(0, len(experiment_ids), 100):
        page = None
        while True:
            body = {"experiment_ids": experiment_ids[i : i + 100], "max_results": 1000,
                    "run_view_type": "ALL"}
            if page:
                body["page_token"] = page
            status, r = call(token, "POST", "/api/2.0/mlflow/runs/search", body)
            assert status == 200, r
            out += r.get("runs", [])
            page = r.get("next_page_token")
            if not page:
                break
    return out


def models(token: str) -> list[dict]:
    status, r = call(token, "GET", "/api/2.0/mlflow/registered-models/search?max_results=1000")
    assert status == 200, r
    return r.get("registered_models", [])


def main() -> int:
    a_experiments = experiments(TOKEN_A)
    a_ids = [e["experiment_id"] for e in a_experiments]
    a_runs = runs(TOKEN_A, a_ids)
    assert a_experiments and a_runs, "the suite left nothing in workspace A"
    # The suite deletes the registered models it makes: register one of A's runs here.
    run_id = a_runs[0]["info"]["run_id"]
    status, r = call(TOKEN_A, "POST", "/api/2.0/mlflow/registered-models/create",
                     {"name": "isolation-check"})
    assert status == 200, r
    status, r = call(TOKEN_A, "POST", "/api/2.0/mlflow/model-versions/create",
                     {"name": "isolation-check", "source": f"runs:/{run_id}/model", "run_id": run_id})
    assert status == 200, r
    a_models = models(TOKEN_A)
    checks = 0
    leaks = []
    # Listings from B hold none of A's.
    b_ids = {e["experiment_id"] for e in experiments(TOKEN_B)}
    checks += 1
    leaks += [f"experiment {i}" for i in a_ids if i in b_ids]
    b_runs = {r["info"]["run_id"] for r in runs(TOKEN_B, a_ids)}
    checks += 1
    leaks += [f"run {r}" for r in b_runs]
    b_models = {m["name"] for m in models(TOKEN_B)}
    checks += 1
    leaks += [f"registered model {m['name']}" for m in a_models if m["name"] in b_models]
    # Nor does any of A's answer B by id or name.
    for e in a_experiments:
        status, _ = call(TOKEN_B, "GET", f"/api/2.0/mlflow/experiments/get?experiment_id={e['experiment_id']}")
        checks += 1
        if status != 404:
            leaks.append(f"experiments/get {e['experiment_id']} -> {status}")
    for r in a_runs:
        run_id = r["info"]["run_id"]
        status, _ = call(TOKEN_B, "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}")
        checks += 1
        if status != 404:
            leaks.append(f"runs/get {run_id} -> {status}")
        for m in r["data"].get("metrics", [])[:1]:
            status, got = call(TOKEN_B, "GET",
                               f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={urllib.request.quote(m['key'])}")
            checks += 1
            if got.get("metrics"):
                leaks.append(f"metric history of {run_id}")
    for m in a_models:
        status, got = call(TOKEN_B, "GET", f"/api/2.0/mlflow/registered-models/get?name={urllib.request.quote(m['name'])}")
        checks += 1
        if status == 200 and got["registered_model"].get("latest_versions"):
            leaks.append(f"versions of {m['name']}")
    status, index = call(TOKEN_B, "POST", "/v2/repository/index", {})
    checks += 1
    served_a = {m["name"] for m in a_models}
    leaks += [f"served model {m['name']}" for m in index if m.get("name") in served_a and m.get("version")]
    print(f"workspace isolation: {len(a_experiments)} experiments, {len(a_runs)} runs, "
          f"{len(a_models)} registered models of workspace A; {checks} checks from workspace B, "
          f"{len(leaks)} leaks")
    for leak in leaks:
        print(f"LEAK: {leak}")
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
