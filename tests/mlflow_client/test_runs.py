"""Runs, params, tags, metrics and log-batch through the stock client."""

from __future__ import annotations

import math
import sys
import time

import pytest
from mlflow_support import error_code_of, unique

import mlflow
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

MAX_DOUBLE = sys.float_info.max  # how MLflow stores +/-inf


def now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------------------------
# run lifecycle
# ------------------------------------------------------------------------------------------------


def test_create_get_and_end_run(client, experiment_id):
    name = unique("run")
    t0 = now_ms()
    run = client.create_run(experiment_id, run_name=name, tags={"custom": "yes"})
    info = run.info
    assert len(info.run_id) == 32 and all(c in "0123456789abcdef" for c in info.run_id)
    assert info.experiment_id == experiment_id
    assert info.run_name == name
    assert info.status == "RUNNING"
    assert info.lifecycle_stage == "active"
    assert info.end_time is None
    assert info.start_time is not None and abs(info.start_time - t0) < 120_000
    assert info.artifact_uri and info.artifact_uri.rstrip("/").endswith(f"{info.run_id}/artifacts")
    assert run.data.tags["custom"] == "yes"
    assert run.data.tags["mlflow.runName"] == name
    assert run.data.metrics == {} and run.data.params == {}

    got = client.get_run(info.run_id)
    assert got.info.run_id == info.run_id
    assert got.info.run_name == name
    assert got.info.status == "RUNNING"
    assert got.data.tags["custom"] == "yes"

    client.set_terminated(info.run_id, status="FAILED")
    got = client.get_run(info.run_id)
    assert got.info.status == "FAILED"
    assert got.info.end_time is not None and got.info.end_time >= got.info.start_time


def test_server_invents_run_name(client, experiment_id):
    run = client.create_run(experiment_id)
    assert run.info.run_name
    assert run.data.tags.get("mlflow.runName") == run.info.run_name


def test_fluent_start_end_run(experiment_id, client):
    name = unique("fluent")
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as r:
        run_id = r.info.run_id
        assert mlflow.active_run().info.run_id == run_id
        mlflow.log_param("p", 1)
        mlflow.log_metric("m", 2.5)
        mlflow.set_tag("t", "v")
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.info.end_time is not None
    assert got.info.run_name == name
    assert got.data.params == {"p": "1"}
    assert got.data.metrics == {"m": 2.5}
    assert got.data.tags["t"] == "v"
    assert got.data.tags["mlflow.user"]
    assert "mlflow.source.name" in got.data.tags


def test_fluent_run_failed_status_on_exception(experiment_id, client):
    with pytest.raises(RuntimeError):
        with mlflow.start_run(experiment_id=experiment_id) as r:
            run_id = r.info.run_id
            raise RuntimeError("boom")
    assert client.get_run(run_id).info.status == "FAILED"


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED", "SCHEDULED", "RUNNING"])
def test_update_run_status(client, run, status):
    client.update_run(run.info.run_id, status=status)
    assert client.get_run(run.info.run_id).info.status == status


def test_update_run_name(client, run):
    new = unique("renamed")
    client.update_run(run.info.run_id, name=new)
    got = client.get_run(run.info.run_id)
    assert got.info.run_name == new
    assert got.data.tags["mlflow.runName"] == new
    assert got.info.status == "RUNNING"  # untouched


def test_set_run_name_tag_updates_run_name(client, run):
    new = unique("via-tag")
    client.set_tag(run.info.run_id, "mlflow.runName", new)
    assert client.get_run(run.info.run_id).info.run_name == new


def test_delete_and_restore_run(client, experiment_id):
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    client.delete_run(run_id)
    got = client.get_run(run_id)  # deleted runs are still returned
    assert got.info.lifecycle_stage == "deleted"
    assert run_id not in [r.info.run_id for r in client.search_runs([experiment_id])]
    assert run_id in [
        r.info.run_id for r in client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)
    ]
    # a deleted run cannot be logged to
    with pytest.raises(MlflowException) as ei:
        client.log_param(run_id, "p", "v")
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"

    client.restore_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "active"
    assert run_id in [r.info.run_id for r in client.search_runs([experiment_id])]
    client.log_param(run_id, "p", "v")


def test_logging_to_finished_run_is_allowed(client, run):
    client.set_terminated(run.info.run_id)
    client.log_metric(run.info.run_id, "late", 1.0)
    client.log_param(run.info.run_id, "late_p", "x")
    assert client.get_run(run.info.run_id).data.metrics["late"] == 1.0


def test_nested_run_parent_tag(experiment_id, client):
    with mlflow.start_run(experiment_id=experiment_id) as parent:
        with mlflow.start_run(experiment_id=experiment_id, nested=True) as child:
            child_id = child.info.run_id
    got = client.get_run(child_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert [r.info.run_id for r in children] == [child_id]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert got.info.status == "FINISHED"


def test_unknown_run(client):
    with pytest.raises(MlflowException) as ei:
        client.get_run("0123456789abcdef0123456789abcdef")
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"


# ------------------------------------------------------------------------------------------------
# params
# ------------------------------------------------------------------------------------------------


def test_params(client, run):
    rid = run.info.run_id
    client.log_param(rid, "lr", 0.01)
    client.log_param(rid, "name with space", "x y")
    client.log_param(rid, "path/like:key-1.0", "v")
    client.log_param(rid, "empty", "")
    client.log_param(rid, "lr", 0.01)  # identical re-log: no-op
    params = client.get_run(rid).data.params
    assert params == {"lr": "0.01", "name with space": "x y", "path/like:key-1.0": "v", "empty": ""}


def test_changing_param_value_rejected(client, run):
    rid = run.info.run_id
    client.log_param(rid, "batch_size", 32)
    with pytest.raises(MlflowException) as ei:
        client.log_param(rid, "batch_size", 64)
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"
    assert "Changing param values is not allowed" in str(ei.value)
    assert client.get_run(rid).data.params["batch_size"] == "32"

    # same via log-batch
    with pytest.raises(MlflowException) as ei:
        client.log_batch(rid, params=[Param("batch_size", "128")])
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"
    client.log_batch(rid, params=[Param("batch_size", "32")])  # identical: fine


def test_long_param_value(client, raw, run):
    rid = run.info.run_id
    client.log_param(rid, "long", "a" * 6000)
    assert client.get_run(rid).data.params["long"] == "a" * 6000
    # Longer values are silently truncated to 6000 by the server (sent raw: the client may
    # validate or truncate by itself).
    resp = raw.post(
        "/api/2.0/mlflow/runs/log-parameter", {"run_id": rid, "key": "longer", "value": "b" * 7000}
    )
    assert resp.status == 200, resp
    assert client.get_run(rid).data.params["longer"] == "b" * 6000


# ------------------------------------------------------------------------------------------------
# tags
# ------------------------------------------------------------------------------------------------


def test_set_and_delete_tags(client, run):
    rid = run.info.run_id
    client.set_tag(rid, "a", "1")
    client.set_tag(rid, "b", "2")
    client.set_tag(rid, "a", "1-updated")
    tags = client.get_run(rid).data.tags
    assert tags["a"] == "1-updated" and tags["b"] == "2"

    client.delete_tag(rid, "b")
    tags = client.get_run(rid).data.tags
    assert "b" not in tags and tags["a"] == "1-updated"

    with pytest.raises(MlflowException) as ei:
        client.delete_tag(rid, "never-set")
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"


def test_fluent_set_tags_and_delete(experiment_id, client):
    with mlflow.start_run(experiment_id=experiment_id) as r:
        mlflow.set_tags({"x": "1", "y": "2"})
        mlflow.delete_tag("x")
    tags = client.get_run(r.info.run_id).data.tags
    assert "x" not in tags and tags["y"] == "2"


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------


def test_log_metric_values_and_steps(client, run):
    rid = run.info.run_id
    ts = now_ms()
    client.log_metric(rid, "loss", 1.5, timestamp=ts, step=0)
    client.log_metric(rid, "loss", 0.75, timestamp=ts + 1, step=1)
    client.log_metric(rid, "loss", 0.5, timestamp=ts + 2, step=2)
    client.log_metric(rid, "neg_step", 3.0, timestamp=ts, step=-5)
    client.log_metric(rid, "int_val", 7, timestamp=ts)

    hist = client.get_metric_history(rid, "loss")
    assert [(m.step, m.value, m.timestamp) for m in hist] == [
        (0, 1.5, ts),
        (1, 0.75, ts + 1),
        (2, 0.5, ts + 2),
    ]
    assert all(m.key == "loss" for m in hist)
    metrics = client.get_run(rid).data.metrics
    assert metrics["loss"] == 0.5
    assert metrics["neg_step"] == 3.0
    assert metrics["int_val"] == 7.0
    neg = client.get_metric_history(rid, "neg_step")
    assert [(m.step, m.value) for m in neg] == [(-5, 3.0)]


def test_metric_history_unknown_key_is_empty(client, run):
    assert list(client.get_metric_history(run.info.run_id, "never-logged")) == []


def test_nan_and_infinity(client, run):
    rid = run.info.run_id
    ts = now_ms()
    client.log_metric(rid, "nan", float("nan"), timestamp=ts, step=0)
    client.log_metric(rid, "pinf", float("inf"), timestamp=ts, step=0)
    client.log_metric(rid, "ninf", float("-inf"), timestamp=ts, step=0)
    client.log_batch(
        rid,
        metrics=[
            Metric("batch_nan", float("nan"), ts, 0),
            Metric("batch_inf", float("inf"), ts, 0),
        ],
    )

    metrics = client.get_run(rid).data.metrics
    assert math.isnan(metrics["nan"])
    assert math.isnan(metrics["batch_nan"])
    # MLflow stores +/-inf as +/-DBL_MAX; an exact infinity is also fine.
    assert metrics["pinf"] in (math.inf, MAX_DOUBLE)
    assert metrics["batch_inf"] in (math.inf, MAX_DOUBLE)
    assert metrics["ninf"] in (-math.inf, -MAX_DOUBLE)

    hist = client.get_metric_history(rid, "nan")
    assert len(hist) == 1 and math.isnan(hist[0].value)
    hist = client.get_metric_history(rid, "ninf")
    assert len(hist) == 1 and hist[0].value in (-math.inf, -MAX_DOUBLE)


def test_latest_metric_is_highest_step_not_last_written(client, run):
    rid = run.info.run_id
    ts = now_ms()
    client.log_metric(rid, "acc", 0.9, timestamp=ts, step=10)
    client.log_metric(rid, "acc", 0.1, timestamp=ts + 1000, step=3)  # written later, lower step
    client.log_metric(rid, "acc", 0.2, timestamp=ts + 2000, step=5)
    assert client.get_run(rid).data.metrics["acc"] == 0.9
    # same step: the later timestamp wins
    client.log_metric(rid, "acc", 0.95, timestamp=ts + 3000, step=10)
    assert client.get_run(rid).data.metrics["acc"] == 0.95
    assert len(client.get_metric_history(rid, "acc")) == 4


def test_duplicate_metric_point_collapses(client, run):
    rid = run.info.run_id
    ts = now_ms()
    for _ in range(3):
        client.log_metric(rid, "dup", 1.0, timestamp=ts, step=1)
    hist = client.get_metric_history(rid, "dup")
    assert [(m.value, m.timestamp, m.step) for m in hist] == [(1.0, ts, 1)]


def test_metric_history_10k_steps(client, run):
    rid = run.info.run_id
    n = 10_000
    ts0 = now_ms()
    # Exactly representable but non-trivial values; timestamps and steps both increase.
    expected = [(ts0 + i, i, i * 0.25 - 1000.0 + (1.0 / 1024) * (i % 7)) for i in range(n)]
    metrics = [Metric("long", v, ts, step) for ts, step, v in expected]
    client.log_batch(rid, metrics=metrics)  # the client splits this into requests of <=1000

    hist = client.get_metric_history(rid, "long")
    assert len(hist) == n
    got = [(m.timestamp, m.step, m.value) for m in hist]
    assert got == expected
    latest = client.get_run(rid).data.metrics["long"]
    assert latest == expected[-1][2]


def test_invalid_metric_key_rejected(client, run):
    with pytest.raises(MlflowException) as ei:
        client.log_metric(run.info.run_id, "bad*key", 1.0)
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"


# ------------------------------------------------------------------------------------------------
# log-batch
# ------------------------------------------------------------------------------------------------


def test_log_batch_metrics_params_tags(client, run):
    rid = run.info.run_id
    ts = now_ms()
    client.log_batch(
        rid,
        metrics=[Metric("m1", 1.0, ts, 0), Metric("m1", 2.0, ts + 1, 1), Metric("m2", -3.5, ts, 0)],
        params=[Param("p1", "a"), Param("p2", "b")],
        tags=[RunTag("t1", "x"), RunTag("t2", "y")],
    )
    data = client.get_run(rid).data
    assert data.metrics == {"m1": 2.0, "m2": -3.5}
    assert data.params == {"p1": "a", "p2": "b"}
    assert data.tags["t1"] == "x" and data.tags["t2"] == "y"
    assert [m.value for m in client.get_metric_history(rid, "m1")] == [1.0, 2.0]


def test_log_batch_empty_is_ok(client, run):
    client.log_batch(run.info.run_id, metrics=[], params=[], tags=[])


def test_log_batch_many_entities_client_chunks(client, run):
    """The client splits >1000 metrics / >100 params+tags itself; all must land."""
    rid = run.info.run_id
    ts = now_ms()
    client.log_batch(
        rid,
        metrics=[Metric(f"m{i}", float(i), ts, 0) for i in range(2500)],
        params=[Param(f"p{i}", str(i)) for i in range(250)],
        tags=[RunTag(f"t{i}", str(i)) for i in range(150)],
    )
    data = client.get_run(rid).data
    assert len(data.metrics) == 2500 and data.metrics["m2499"] == 2499.0
    assert len(data.params) == 250 and data.params["p249"] == "249"
    assert sum(1 for k in data.tags if k.startswith("t")) >= 150


def _metric_json(i, ts):
    return {"key": f"m{i}", "value": float(i), "timestamp": ts, "step": 0}


def test_log_batch_limits_enforced_by_server(raw, run, client):
    """Sent directly (the client would chunk): >1000 metrics, >100 params, >100 tags -> 400."""
    rid = run.info.run_id
    ts = now_ms()
    path = "/api/2.0/mlflow/runs/log-batch"

    resp = raw.post(path, {"run_id": rid, "metrics": [_metric_json(i, ts) for i in range(1001)]})
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    assert "1000 metrics" in resp.json()["message"]

    resp = raw.post(
        path, {"run_id": rid, "params": [{"key": f"p{i}", "value": "v"} for i in range(101)]}
    )
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"

    resp = raw.post(
        path, {"run_id": rid, "tags": [{"key": f"t{i}", "value": "v"} for i in range(101)]}
    )
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"

    # exactly at the limit is fine
    resp = raw.post(path, {"run_id": rid, "metrics": [_metric_json(i, ts) for i in range(1000)]})
    assert resp.status == 200, resp
    assert resp.json() == {}
    assert len(client.get_run(rid).data.metrics) == 1000
    # nothing of the rejected requests was stored
    assert client.get_run(rid).data.params == {}


def test_raw_log_metric_nonfinite_strings(raw, run, client):
    """The wire form of non-finite doubles is the strings "NaN" / "Infinity" / "-Infinity"."""
    rid = run.info.run_id
    ts = now_ms()
    for key, val in [("n", "NaN"), ("p", "Infinity"), ("q", "-Infinity")]:
        resp = raw.post(
            "/api/2.0/mlflow/runs/log-metric",
            {"run_id": rid, "key": key, "value": val, "timestamp": ts, "step": 0},
        )
        assert resp.status == 200, resp
    resp = raw.get("/api/2.0/mlflow/runs/get", query={"run_id": rid})
    assert resp.status == 200
    metrics = {m["key"]: m["value"] for m in resp.json()["run"]["data"]["metrics"]}
    assert metrics["n"] == "NaN"
    assert metrics["p"] in ("Infinity", MAX_DOUBLE)
    assert metrics["q"] in ("-Infinity", -MAX_DOUBLE)
