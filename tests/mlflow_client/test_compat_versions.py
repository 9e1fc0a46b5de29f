"""Model-version sources, default model-version order and the `mlflow.modelVersions` tag.

Behaviour pinned against `mlflow server` 3.17.2 (server/handlers.py `_create_model_version`,
`_validate_source_run`, `_validate_non_local_source_contains_relative_paths`; store
`search_model_versions`; tracking abstract_store `set_model_versions_tags`).
"""

from __future__ import annotations

import json
import time

import pytest
from mlflow_support import unique

import mlflow

API = "/api/2.0/mlflow"
CREATE = f"{API}/model-versions/create"
MISSING_RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def registered(client, model_name):
    client.create_registered_model(model_name)
    return model_name


@pytest.fixture
def source_run(client, experiment_id):
    run = client.create_run(experiment_id, run_name=unique("src"))
    client.log_text(run.info.run_id, "flavors: {}\n", "model/MLmodel")
    return run.info.run_id


def _invalid_source(resp):
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE", resp
    return resp.json()["message"]


# ------------------------------------------------------------------------------------------------
# runs:/ sources
# ------------------------------------------------------------------------------------------------


def test_runs_source_without_run_id_is_refused(raw, registered, source_run):
    src = f"runs:/{source_run}/model"
    msg = _invalid_source(raw.post(CREATE, {"name": registered, "source": src}))
    assert msg == (
        f"Invalid model version source: '{src}'. The run_id request parameter must identify "
        "the resource that contains the source."
    )


def test_runs_source_with_other_run_id_is_refused(raw, registered, source_run):
    src = f"runs:/{source_run}/model"
    msg = _invalid_source(raw.post(CREATE, {"name": registered, "source": src, "run_id": MISSING_RUN}))
    assert "The run_id request parameter must identify the resource" in msg


def test_runs_source_with_its_run_id_is_ready(raw, registered, source_run):
    src = f"runs:/{source_run}/model"
    resp = raw.post(CREATE, {"name": registered, "source": src, "run_id": source_run})
    assert resp.status == 200, resp
    mv = resp.json()["model_version"]
    assert mv["name"] == registered
    assert mv["version"] == "1"
    assert mv["source"] == src
    assert mv["run_id"] == source_run
    assert mv["status"] == "READY"
    assert mv["current_stage"] == "None"


# ------------------------------------------------------------------------------------------------
# object-store sources (no run needed)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("src", ["s3://bucket/path", "gs://b/p", "dbfs:/a/b"])
def test_object_store_source_without_run_is_ready(raw, registered, src):
    resp = raw.post(CREATE, {"name": registered, "source": src})
    assert resp.status == 200, resp
    mv = resp.json()["model_version"]
    assert mv["version"] == "1"
    assert mv["source"] == src
    assert mv["status"] == "READY"
    assert mv["current_stage"] == "None"
    # MLflow echoes empty strings here; absent is read the same way by the client
    assert mv.get("run_id", "") == ""
    assert mv.get("description", "") == ""
    assert int(mv["creation_timestamp"]) == int(mv["last_updated_timestamp"])
    resp = raw.get(f"{API}/model-versions/get-download-uri", query={"name": registered, "version": "1"})
    assert resp.status == 200, resp
    assert resp.json() == {"artifact_uri": src}


@pytest.mark.parametrize("scheme", ["https", "http", "ftp"])
def test_host_addressed_source_is_refused(raw, registered, scheme):
    # MLflow refuses sources that would make the server connect to a host it was not configured
    # with (only a `.../api/2.0/mlflow-artifacts/artifacts/...` URL inside the run root is ok).
    msg = _invalid_source(raw.post(CREATE, {"name": registered, "source": f"{scheme}://host/path"}))
    assert msg.startswith(f"'source' cannot use the '{scheme}' scheme"), msg


@pytest.mark.parametrize(
    "tail",
    ["..%2f..", "../../x", "model/../../other", "%2e%2e/%2e%2e/x", "..%252f..%252fx"],
)
def test_runs_source_traversal_is_refused(raw, registered, source_run, tail):
    src = f"runs:/{source_run}/{tail}"
    msg = _invalid_source(raw.post(CREATE, {"name": registered, "source": src, "run_id": source_run}))
    assert msg.startswith(f"Invalid model version source: '{src}'."), msg
    assert "without relative path references present" in msg


@pytest.mark.parametrize("src", ["s3://bucket/a/../b", "s3://bucket/a/%2e%2e/b", "s3://b/p%00"])
def test_object_store_source_traversal_is_refused(raw, registered, src):
    msg = _invalid_source(raw.post(CREATE, {"name": registered, "source": src}))
    assert msg.startswith(f"Invalid model version source: '{src}'."), msg
    assert "without relative path references present" in msg


@pytest.mark.parametrize("src", ["/tmp/some/model", "file:///tmp/some/model"])
def test_local_source_without_run_is_refused(raw, registered, src):
    msg = _invalid_source(raw.post(CREATE, {"name": registered, "source": src}))
    assert "To use a local path as a model version source, the run_id request parameter" in msg


def test_mlflow_artifacts_source_without_run_is_refused(raw, registered):
    src = "mlflow-artifacts:/1/abc/artifacts/model"
    msg = _invalid_source(raw.post(CREATE, {"name": registered, "source": src}))
    assert msg == (
        f"Invalid model version source: '{src}'. The run_id request parameter must identify "
        "the resource that contains the source."
    )


def test_source_is_checked_before_the_registered_model(raw, source_run):
    name = unique("no-such-model")
    # a bad source wins over the unknown model ...
    resp = raw.post(CREATE, {"name": name, "source": f"runs:/{source_run}/model"})
    _invalid_source(resp)
    # ... a good one reaches the store, which reports the model
    resp = raw.post(CREATE, {"name": name, "source": "s3://bucket/m"})
    assert resp.status == 404, resp
    assert resp.error_code() == "RESOURCE_DOES_NOT_EXIST"
    assert resp.json()["message"] == f"Registered Model with name={name} not found"


# ------------------------------------------------------------------------------------------------
# default order of model-versions/search
# ------------------------------------------------------------------------------------------------


def test_search_model_versions_default_order_is_last_updated_desc(raw, client):
    prefix = unique("mv-order")
    a, b = f"{prefix}-a", f"{prefix}-b"
    try:
        client.create_registered_model(a)
        client.create_registered_model(b)
        for name in (b, a, b, a):  # b1, a1, b2, a2 (distinct milliseconds)
            resp = raw.post(CREATE, {"name": name, "source": "s3://bucket/m"})
            assert resp.status == 200, resp
            time.sleep(0.02)

        def order(**q):
            resp = raw.get(f"{API}/model-versions/search", query={"filter": f"name LIKE '{prefix}-%'", **q})
            assert resp.status == 200, resp
            return [(m["name"][-1], m["version"]) for m in resp.json()["model_versions"]]

        # last_updated_timestamp DESC, name ASC, version_number DESC
        assert order() == [("a", "2"), ("b", "2"), ("a", "1"), ("b", "1")]
        # an update of the description bumps last_updated_timestamp ...
        resp = raw.request(
            "PATCH", f"{API}/model-versions/update", body={"name": b, "version": "1", "description": "d"}
        )
        assert resp.status == 200, resp
        assert order() == [("b", "1"), ("a", "2"), ("b", "2"), ("a", "1")]
        # ... a tag does not
        time.sleep(0.02)
        resp = raw.post(f"{API}/model-versions/set-tag", {"name": a, "version": "1", "key": "k", "value": "v"})
        assert resp.status == 200, resp
        assert order() == [("b", "1"), ("a", "2"), ("b", "2"), ("a", "1")]
        # an explicit order replaces the default; name ASC, version DESC stay as tie-breakers
        assert order(order_by="name ASC") == [("a", "2"), ("a", "1"), ("b", "2"), ("b", "1")]
        assert order(order_by="name DESC") == [("b", "2"), ("b", "1"), ("a", "2"), ("a", "1")]
    finally:
        for n in (a, b):
            try:
                client.delete_registered_model(n)
            except Exception:
                pass


# ------------------------------------------------------------------------------------------------
# the `mlflow.modelVersions` tag on logged models
# ------------------------------------------------------------------------------------------------


def _model_versions_tag(raw, model_id):
    resp = raw.get(f"{API}/logged-models/{model_id}")
    assert resp.status == 200, resp
    tags = {t["key"]: t["value"] for t in resp.json()["model"]["info"].get("tags", [])}
    return tags.get("mlflow.modelVersions")


def test_server_writes_model_versions_tag_on_create(raw, client, experiment_id, registered):
    lm = client.create_logged_model(experiment_id, name="lm")
    body = {"name": registered, "source": f"models:/{lm.model_id}", "model_id": lm.model_id}
    resp = raw.post(CREATE, body)
    assert resp.status == 200, resp
    assert resp.json()["model_version"]["source"] == f"models:/{lm.model_id}"
    # json.dumps default separators, version as a JSON number
    assert _model_versions_tag(raw, lm.model_id) == f'[{{"name": "{registered}", "version": 1}}]'
    assert raw.post(CREATE, body).status == 200
    assert _model_versions_tag(raw, lm.model_id) == (
        f'[{{"name": "{registered}", "version": 1}}, {{"name": "{registered}", "version": 2}}]'
    )
    resp = raw.get(f"{API}/model-versions/get-download-uri", query={"name": registered, "version": "2"})
    assert resp.json()["artifact_uri"] == lm.artifact_location


def test_models_source_with_other_model_id_is_refused(raw, client, experiment_id, registered):
    lm = client.create_logged_model(experiment_id, name="lm")
    msg = _invalid_source(raw.post(CREATE, {"name": registered, "source": f"models:/{lm.model_id}"}))
    assert msg == (
        f"Invalid model version source: 'models:/{lm.model_id}'. The model_id request parameter "
        "must identify the resource that contains the source."
    )


def test_register_model_tag_is_byte_identical(client, experiment_id, model_name):
    lm = client.create_logged_model(experiment_id, name="lm")
    mv = mlflow.register_model(f"models:/{lm.model_id}", model_name)
    assert str(mv.version) == "1"
    tag = client.get_logged_model(lm.model_id).tags["mlflow.modelVersions"]
    # the server appends {"version": 1}; the client then appends its own {"version": "1"}
    want = [{"name": model_name, "version": 1}, {"name": model_name, "version": "1"}]
    assert tag == json.dumps(want)
    assert json.loads(tag) == want
