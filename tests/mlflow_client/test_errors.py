"""Error mapping and transport rules: caller mistakes are fast 4xx with the right error_code."""

from __future__ import annotations

import time

import pytest
from mlflow_support import TOKEN, TRACKING_URI, RawHttp, error_code_of, mlflow_quirk, unique

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

API = "/api/2.0/mlflow"
MISSING_RUN = "0123456789abcdef0123456789abcdef"


def test_unknown_run_errors(client):
    t0 = time.monotonic()
    for call in (
        lambda: client.get_run(MISSING_RUN),
        lambda: client.log_param(MISSING_RUN, "p", "v"),
        lambda: client.log_metric(MISSING_RUN, "m", 1.0),
        lambda: client.set_tag(MISSING_RUN, "t", "v"),
        lambda: client.log_batch(MISSING_RUN, metrics=[Metric("m", 1.0, 0, 0)]),
        lambda: client.set_terminated(MISSING_RUN),
        lambda: client.delete_run(MISSING_RUN),
    ):
        with pytest.raises(MlflowException) as ei:
            call()
        assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST", ei.value
    assert time.monotonic() - t0 < 30  # no retry storms


def test_unknown_experiment_for_new_run(client):
    with pytest.raises(MlflowException) as ei:
        client.create_run("987654321012")
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"


def test_raw_unknown_run_is_404_json(raw):
    resp = raw.get(f"{API}/runs/get", query={"run_id": MISSING_RUN})
    assert resp.status == 404
    body = resp.json()
    assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert body["message"]


def test_raw_bad_filter_is_400(raw, experiment_id):
    for bad in ("metrics.a >>> 1", "params.a = 'x' OR params.b = 'y'"):
        resp = raw.post(f"{API}/runs/search", {"experiment_ids": [experiment_id], "filter": bad})
        assert resp.status == 400, (bad, resp)
        assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    resp = raw.post(
        f"{API}/experiments/search", {"max_results": 10, "filter": "name >>> 'x'"}
    )
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"


def test_raw_invalid_experiment_id(raw):
    resp = raw.get(f"{API}/experiments/get", query={"experiment_id": "abc"})
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"


def test_raw_content_type_required(raw):
    resp = raw.post(
        f"{API}/experiments/create",
        b'{"name": "%s"}' % unique("ct").encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    resp = raw.post(f"{API}/experiments/create", b'{"name": "%s"}' % unique("ct").encode())
    assert resp.status == 400, resp


def test_raw_numeric_strings_and_charset_accepted(raw, run):
    rid = run.info.run_id
    resp = raw.post(
        f"{API}/runs/log-metric",
        b'{"run_id": "%s", "key": "m", "value": 1.5, "timestamp": "1700000000000", "step": "3"}'
        % rid.encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status == 200, resp
    resp = raw.get(f"{API}/metrics/get-history", query={"run_id": rid, "metric_key": "m"})
    assert resp.status == 200
    (point,) = resp.json()["metrics"]
    assert point["value"] == 1.5
    assert int(point["step"]) == 3
    assert int(point["timestamp"]) == 1700000000000


def test_raw_missing_required_parameter(raw):
    resp = raw.post(f"{API}/experiments/create", {})
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"


@mlflow_quirk("unknown routes answer an HTML 404 page, not JSON ENDPOINT_NOT_FOUND")
def test_unknown_endpoint_is_json_404(raw):
    resp = raw.get(f"{API}/no-such-endpoint")
    assert resp.status == 404
    assert resp.error_code() == "ENDPOINT_NOT_FOUND"


def test_unknown_endpoint_is_404(raw):
    resp = raw.get(f"{API}/no-such-endpoint")
    assert resp.status == 404


def test_duplicate_experiment_is_400(raw):
    name = unique("dup-raw")
    assert raw.post(f"{API}/experiments/create", {"name": name}).status == 200
    resp = raw.post(f"{API}/experiments/create", {"name": name})
    assert resp.status == 400
    assert resp.error_code() == "RESOURCE_ALREADY_EXISTS"


def test_changed_param_raw_message(raw, run):
    rid = run.info.run_id
    assert raw.post(f"{API}/runs/log-parameter", {"run_id": rid, "key": "k", "value": "a"}).status == 200
    resp = raw.post(f"{API}/runs/log-parameter", {"run_id": rid, "key": "k", "value": "b"})
    assert resp.status == 400
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    msg = resp.json()["message"]
    assert "Changing param values is not allowed" in msg
    assert "'a'" in msg and "'b'" in msg and rid in msg


@pytest.mark.skipif(not TOKEN, reason="MLFLOW_TRACKING_TOKEN not set: server runs without auth")
def test_token_is_enforced():
    for token in (None, "wrong-" + TOKEN):
        anon = RawHttp(TRACKING_URI, token)
        resp = anon.get(f"{API}/experiments/get", query={"experiment_id": "0"})
        assert resp.status in (401, 403), resp
        resp = anon.put(f"/api/2.0/mlflow-artifacts/artifacts/{unique('noauth')}/x.txt", b"x")
        assert resp.status in (401, 403), resp
