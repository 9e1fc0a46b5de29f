"""Data kept and returned as `mlflow server` 3.17.2 does: metrics with model/dataset fields,
get-history-bulk-interval sampling, default logged-model order, relative experiment artifact
locations and the content type of MLproject-style text files."""

from __future__ import annotations

import time

import pytest
from mlflow_support import headers_of, mlflow_quirk, service_path, unique

from mlflow.entities import Metric

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
INTERVAL = f"{API}/metrics/get-history-bulk-interval"


# ------------------------------------------------------------------------------------------------
# metrics logged with model_id / dataset_name / dataset_digest
# ------------------------------------------------------------------------------------------------


def _point(resp):
    assert resp.status == 200, resp
    (p,) = resp.json()["metrics"]
    return p


def test_metric_fields_kept_on_the_logged_model(raw, client, experiment_id):
    rid = client.create_run(experiment_id).info.run_id
    lm = client.create_logged_model(experiment_id, name="lm", source_run_id=rid)
    mid = lm.model_id
    resp = raw.post(
        f"{API}/runs/log-metric",
        {"run_id": rid, "key": "acc", "value": 0.5, "timestamp": 10, "step": 1,
         "model_id": mid, "dataset_name": "ds", "dataset_digest": "abc123"},
    )
    assert resp.status == 200, resp
    resp = raw.post(
        f"{API}/runs/log-batch",
        {"run_id": rid, "metrics": [
            {"key": "f1", "value": 0.7, "timestamp": 11, "step": 2,
             "model_id": mid, "dataset_name": "ds2", "dataset_digest": "d2"},
            {"key": "plain", "value": 1, "timestamp": 12},
        ]},
    )
    assert resp.status == 200, resp

    resp = raw.get(f"{API}/logged-models/{mid}")
    assert resp.status == 200, resp
    metrics = sorted(resp.json()["model"]["data"]["metrics"], key=lambda m: m["key"])
    assert metrics == [
        {"key": "acc", "value": 0.5, "timestamp": 10, "step": 1, "dataset_name": "ds",
         "dataset_digest": "abc123", "model_id": mid, "run_id": rid},
        {"key": "f1", "value": 0.7, "timestamp": 11, "step": 2, "dataset_name": "ds2",
         "dataset_digest": "d2", "model_id": mid, "run_id": rid},
    ]
    got = client.get_logged_model(mid).metrics
    assert {(m.key, m.dataset_name, m.dataset_digest, m.model_id, m.run_id) for m in got} == {
        ("acc", "ds", "abc123", mid, rid),
        ("f1", "ds2", "d2", mid, rid),
    }

    # the run keeps the points too (MLflow returns only key/value/timestamp/step there)
    expected = {"acc": (0.5, 10, 1, "ds", "abc123"), "f1": (0.7, 11, 2, "ds2", "d2")}
    for key, (value, ts, step, dname, ddigest) in expected.items():
        p = _point(raw.get(f"{API}/metrics/get-history", query={"run_id": rid, "metric_key": key}))
        assert (p["key"], p["value"], int(p["timestamp"]), int(p["step"])) == (key, value, ts, step)
        assert p.get("model_id", mid) == mid
        assert p.get("dataset_name", dname) == dname
        assert p.get("dataset_digest", ddigest) == ddigest
    run = raw.get(f"{API}/runs/get", query={"run_id": rid}).json()["run"]
    latest = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert latest == {"acc": 0.5, "f1": 0.7, "plain": 1.0}
    assert client.get_run(rid).data.metrics == {"acc": 0.5, "f1": 0.7, "plain": 1.0}


def test_metric_for_unknown_logged_model_is_refused(raw, run):
    rid = run.info.run_id
    resp = raw.post(
        f"{API}/runs/log-metric",
        {"run_id": rid, "key": "m", "value": 1, "timestamp": 1, "model_id": "m-" + "1" * 32},
    )
    assert 400 <= resp.status < 500, resp  # MLflow: 400 BAD_REQUEST (foreign-key failure)
    resp = raw.get(f"{API}/metrics/get-history", query={"run_id": rid, "metric_key": "m"})
    assert resp.status == 200 and resp.json().get("metrics", []) == []


# ------------------------------------------------------------------------------------------------
# GET metrics/get-history-bulk-interval sampling
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled_runs(client):
    """run A: steps 0..999 (timestamp 1000+step, value=step); run B: steps 0,3,..,147."""
    exp = client.create_experiment(unique("interval"))
    a = client.create_run(exp).info.run_id
    b = client.create_run(exp).info.run_id
    client.log_batch(a, metrics=[Metric("m", float(i), 1000 + i, i) for i in range(1000)])
    client.log_batch(b, metrics=[Metric("m", float(i), 5000 + i, 3 * i) for i in range(50)])
    return a, b


def _steps(raw, **q):
    resp = raw.get(INTERVAL, query={"metric_key": "m", **q})
    assert resp.status == 200, resp
    return [(m["run_id"], int(m["step"])) for m in resp.json().get("metrics", [])]


@pytest.mark.parametrize(
    "max_results, steps",
    [
        # NTILE(k) buckets over rows ordered by (step, timestamp, value), first row of each
        # bucket, and the last row replaces the final sample
        (10, [0, 100, 200, 300, 400, 500, 600, 700, 800, 999]),
        (7, [0, 143, 286, 429, 572, 715, 999]),
        (3, [0, 334, 999]),
        (2, [0, 999]),
        (1, [999]),
    ],
)
def test_interval_sampling_of_1000_steps(raw, sampled_runs, max_results, steps):
    a, _ = sampled_runs
    assert _steps(raw, run_ids=a, max_results=max_results) == [(a, s) for s in steps]


def test_interval_sampling_within_a_step_window(raw, sampled_runs):
    a, _ = sampled_runs
    got = _steps(raw, run_ids=a, max_results=5, start_step=100, end_step=200)
    assert got == [(a, s) for s in (100, 121, 141, 161, 200)]


def test_interval_returns_everything_when_under_the_limit(raw, sampled_runs):
    a, b = sampled_runs
    assert _steps(raw, run_ids=b, max_results=2500) == [(b, 3 * i) for i in range(50)]
    assert len(_steps(raw, run_ids=a)) == 1000  # default max_results is 2500


def test_interval_keeps_request_order_of_runs(raw, sampled_runs):
    a, b = sampled_runs
    got = _steps(raw, run_ids=[b, a], max_results=4)
    assert got == [(b, 0), (b, 39), (b, 78), (b, 147), (a, 0), (a, 250), (a, 500), (a, 999)]


def test_interval_response_shape(raw, sampled_runs):
    a, _ = sampled_runs
    resp = raw.get(INTERVAL, query={"run_ids": a, "metric_key": "m", "max_results": 2})
    assert resp.status == 200, resp
    assert resp.json() == {
        "metrics": [
            {"key": "m", "value": 0.0, "timestamp": 1000, "step": 0, "run_id": a},
            {"key": "m", "value": 999.0, "timestamp": 1999, "step": 999, "run_id": a},
        ]
    }
    resp = raw.get(INTERVAL, query={"run_ids": a, "metric_key": "nope"})
    assert resp.status == 200 and resp.json().get("metrics", []) == []


# ------------------------------------------------------------------------------------------------
# default order of logged-models/search
# ------------------------------------------------------------------------------------------------


def test_search_logged_models_default_order(raw, client, experiment_id):
    made = []
    for i in range(4):
        made.append(client.create_logged_model(experiment_id, name=f"o{i}").model_id)
        time.sleep(0.02)
    url = f"{API}/logged-models/search"
    resp = raw.post(url, {"experiment_ids": [experiment_id]})
    assert resp.status == 200, resp
    # creation_timestamp_ms DESC, model_id ASC
    assert [m["info"]["model_id"] for m in resp.json()["models"]] == made[::-1]
    assert not resp.json().get("next_page_token")
    p1 = raw.post(url, {"experiment_ids": [experiment_id], "max_results": 3}).json()
    assert [m["info"]["name"] for m in p1["models"]] == ["o3", "o2", "o1"] and p1["next_page_token"]
    p2 = raw.post(
        url, {"experiment_ids": [experiment_id], "max_results": 3, "page_token": p1["next_page_token"]}
    ).json()
    assert [m["info"]["name"] for m in p2["models"]] == ["o0"] and not p2.get("next_page_token")
    resp = raw.post(url, {"experiment_ids": [experiment_id], "order_by": [{"field_name": "name"}]})
    assert [m["info"]["name"] for m in resp.json()["models"]] == ["o0", "o1", "o2", "o3"]


def test_search_logged_models_ties_break_on_model_id(raw, client, experiment_id):
    made = [client.create_logged_model(experiment_id, name=f"t{i}") for i in range(5)]
    resp = raw.post(f"{API}/logged-models/search", {"experiment_ids": [experiment_id]})
    got = [(int(m["info"]["creation_timestamp_ms"]), m["info"]["model_id"]) for m in resp.json()["models"]]
    assert sorted(x[1] for x in got) == sorted(m.model_id for m in made)
    assert got == sorted(got, key=lambda x: (-x[0], x[1]))


def test_search_logged_models_bad_order_field(raw, experiment_id):
    resp = raw.post(
        f"{API}/logged-models/search",
        {"experiment_ids": [experiment_id], "order_by": [{"field_name": "bogus"}]},
    )
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    assert resp.json()["message"] == "Invalid order by field name: bogus"


# ------------------------------------------------------------------------------------------------
# experiment artifact_location given as a relative path
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given, tail", [("rel/path", "/rel/path"), ("./rel2", "/rel2")])
def test_relative_artifact_location_is_made_absolute(raw, given, tail):
    resp = raw.post(f"{API}/experiments/create", {"name": unique("rel"), "artifact_location": given})
    assert resp.status == 200, resp
    eid = resp.json()["experiment_id"]
    loc = raw.get(f"{API}/experiments/get", query={"experiment_id": eid}).json()["experiment"][
        "artifact_location"
    ]
    # MLflow: <server cwd>/<given> as a plain absolute path
    path = loc[len("file://") :] if loc.startswith("file://") else loc
    assert path.startswith("/"), loc
    assert path.endswith(tail), loc
    assert "/./" not in path
    run = raw.post(f"{API}/runs/create", {"experiment_id": eid}).json()["run"]["info"]
    assert run["artifact_uri"] == f"{loc}/{run['run_id']}/artifacts"


def test_runs_uri_artifact_location_is_refused(raw):
    resp = raw.post(f"{API}/experiments/create", {"name": unique("loc"), "artifact_location": "runs:/abc/x"})
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    assert resp.json()["message"] == "Artifact location cannot be a runs:/ URI. Given: 'runs:/abc/x'"


# ------------------------------------------------------------------------------------------------
# content type of MLproject-style text files
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def text_files(client, raw, run):
    rid = run.info.run_id
    base = service_path(run.info.artifact_uri)
    for name in ("MLmodel", "MLproject", "requirements.txt", "conda.yaml", "python_env.yaml"):
        resp = raw.put(f"{ARTIFACTS}/{base}/model/{name}", f"content of {name}\n".encode())
        assert resp.status == 200, resp
    return rid, base


def _check_text(resp, name):
    assert resp.status == 200, resp
    assert resp.body == f"content of {name}\n".encode()
    h = headers_of(resp)
    assert h["content-type"].split(";")[0] == "text/plain", (name, h["content-type"])
    assert h["content-disposition"] == f"attachment; filename={name}"
    assert h["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["MLmodel", "requirements.txt", "conda.yaml", "python_env.yaml"])
def test_text_files_are_text_plain(raw, text_files, name):
    rid, base = text_files
    _check_text(raw.get(f"{ARTIFACTS}/{base}/model/{name}"), name)
    _check_text(raw.get("/get-artifact", query={"path": f"model/{name}", "run_uuid": rid}), name)


@mlflow_quirk("MLproject is matched case-sensitively as 'mlproject' and served as octet-stream")
def test_mlproject_is_text_plain(raw, text_files):
    rid, base = text_files
    _check_text(raw.get(f"{ARTIFACTS}/{base}/model/MLproject"), "MLproject")
    _check_text(raw.get("/get-artifact", query={"path": "model/MLproject", "run_uuid": rid}), "MLproject")
