"""UI endpoints outside the client's own calls: bulk metric history, upload-artifact, logged-model
artifact routes and the legacy /get-artifact route (shapes as `mlflow server` 3.17.2 answers)."""

from __future__ import annotations

import pytest
from mlflow_support import headers_of, service_path, unique

from mlflow.entities import Metric

API = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
BULK = f"{AJAX}/metrics/get-history-bulk"
UPLOAD = f"{AJAX}/upload-artifact"
MISSING_RUN = "0123456789abcdef0123456789abcdef"


# ------------------------------------------------------------------------------------------------
# GET /ajax-api/2.0/mlflow/metrics/get-history-bulk
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def two_runs_with_history(client, experiment_id):
    runs = sorted(client.create_run(experiment_id).info.run_id for _ in range(2))
    for n, rid in enumerate(runs):
        client.log_batch(
            rid, metrics=[Metric("loss", float(10 * n + i), 1000 * (n + 1) + i, i) for i in range(5)]
        )
    return runs


def test_history_bulk_shape_and_order(raw, two_runs_with_history):
    lo, hi = two_runs_with_history
    resp = raw.get(BULK, query={"run_id": [hi, lo], "metric_key": "loss"})
    assert resp.status == 200, resp
    assert headers_of(resp)["content-type"].startswith("application/json")
    got = resp.json()
    assert list(got) == ["metrics"]
    # ordered by run id, then timestamp/step/value; exactly these five fields
    want = [
        {"key": "loss", "run_id": rid, "step": i, "timestamp": 1000 * (n + 1) + i, "value": float(10 * n + i)}
        for n, rid in enumerate((lo, hi))
        for i in range(5)
    ]
    assert got["metrics"] == want


def test_history_bulk_max_results_caps_the_total(raw, two_runs_with_history):
    lo, hi = two_runs_with_history
    resp = raw.get(BULK, query={"run_id": [hi, lo], "metric_key": "loss", "max_results": 3})
    assert resp.status == 200, resp
    assert [(m["run_id"], m["step"]) for m in resp.json()["metrics"]] == [(lo, 0), (lo, 1), (lo, 2)]


def test_history_bulk_unknown_key_and_run_are_empty(raw, two_runs_with_history):
    lo, _ = two_runs_with_history
    for q in ({"run_id": lo, "metric_key": "nope"}, {"run_id": MISSING_RUN, "metric_key": "loss"}):
        resp = raw.get(BULK, query=q)
        assert resp.status == 200, resp
        assert resp.json() == {"metrics": []}


@pytest.mark.parametrize(
    "query, message",
    [
        ({"metric_key": "loss"}, "GetMetricHistoryBulk request must specify at least one run_id."),
        ({"run_id": MISSING_RUN}, "GetMetricHistoryBulk request must specify a metric_key."),
        (
            {"run_id": [MISSING_RUN] * 101, "metric_key": "loss"},
            "GetMetricHistoryBulk request cannot specify more than 100 run_ids. Received 101 run_ids.",
        ),
    ],
)
def test_history_bulk_errors(raw, query, message):
    resp = raw.get(BULK, query=query)
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    assert resp.json()["message"] == message


# ------------------------------------------------------------------------------------------------
# POST /ajax-api/2.0/mlflow/upload-artifact?run_uuid=&path=
# ------------------------------------------------------------------------------------------------


def test_upload_artifact_writes_into_the_run(raw, run):
    rid = run.info.run_id
    resp = raw.post(UPLOAD, b"hello upload", query={"run_uuid": rid, "path": "up/dir/f.txt"})
    assert resp.status == 200, resp
    assert headers_of(resp)["content-type"].startswith("application/json")
    assert resp.body.strip() in (b"", b"{}")  # MLflow: empty body
    resp = raw.get(f"{API}/artifacts/list", query={"run_id": rid, "path": "up/dir"})
    assert resp.status == 200, resp
    assert resp.json()["files"] == [{"path": "up/dir/f.txt", "is_dir": False, "file_size": 12}]
    resp = raw.get("/get-artifact", query={"path": "up/dir/f.txt", "run_uuid": rid})
    assert resp.status == 200 and resp.body == b"hello upload", resp
    # overwrite at the root
    assert raw.post(UPLOAD, b"v1", query={"run_uuid": rid, "path": "root.bin"}).status == 200
    assert raw.post(UPLOAD, b"v2!", query={"run_uuid": rid, "path": "root.bin"}).status == 200
    assert raw.get("/get-artifact", query={"path": "root.bin", "run_uuid": rid}).body == b"v2!"


@pytest.mark.parametrize(
    "query, body, message",
    [
        ({"path": "x.txt"}, b"x", "Request must specify run_uuid."),
        # only run_uuid names the run here
        ({"run_id": "RUN", "path": "x.txt"}, b"x", "Request must specify run_uuid."),
        ({"run_uuid": "RUN"}, b"x", "Request must specify path."),
        ({"run_uuid": "RUN", "path": "x.txt"}, b"", "Request must specify data."),
        ({"run_uuid": "RUN", "path": "../x.txt"}, b"x", "Invalid path"),
        ({"run_uuid": "RUN", "path": "/abs/x.txt"}, b"x", "Invalid path"),
        ({"run_uuid": "RUN", "path": "a/%2e%2e/%2e%2e/x"}, b"x", "Invalid path"),
    ],
)
def test_upload_artifact_errors(raw, run, query, body, message):
    query = {k: (run.info.run_id if v == "RUN" else v) for k, v in query.items()}
    resp = raw.post(UPLOAD, body, query=query)
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    assert resp.json()["message"] == message


def test_upload_artifact_unknown_run(raw):
    resp = raw.post(UPLOAD, b"x", query={"run_uuid": MISSING_RUN, "path": "x.txt"})
    assert resp.status == 404, resp
    assert resp.error_code() == "RESOURCE_DOES_NOT_EXIST"
    assert resp.json()["message"] == f"Run with id={MISSING_RUN} not found"


def test_upload_artifact_over_10mb_is_refused(raw, run):
    body = b"x" * (10 * 1024 * 1024 + 1)
    resp = raw.post(UPLOAD, body, query={"run_uuid": run.info.run_id, "path": "big.bin"})
    assert resp.status == 400, resp
    assert resp.json()["message"] == "Artifact size is too large. Max size is 10MB."


# ------------------------------------------------------------------------------------------------
# legacy GET /get-artifact?path=&run_uuid= (UI)
# ------------------------------------------------------------------------------------------------


def test_get_artifact_route(client, raw, run):
    rid = run.info.run_id
    client.log_text(rid, "some text", "dir/notes.txt")
    for key in ("run_uuid", "run_id"):
        resp = raw.get("/get-artifact", query={"path": "dir/notes.txt", key: rid})
        assert resp.status == 200, (key, resp)
        assert resp.body == b"some text"
        h = headers_of(resp)
        assert h["content-type"].startswith("text/plain")
        assert h["content-disposition"] == "attachment; filename=notes.txt"
        assert h["x-content-type-options"] == "nosniff"


def test_get_artifact_errors(client, raw, run):
    rid = run.info.run_id
    client.log_text(rid, "x", "dir/notes.txt")
    resp = raw.get("/get-artifact", query={"path": "dir/missing.txt", "run_uuid": rid})
    assert resp.status == 404, resp
    assert resp.error_code() == "RESOURCE_DOES_NOT_EXIST"
    assert resp.json()["message"].startswith("No such artifact: ")
    resp = raw.get("/get-artifact", query={"path": "dir", "run_uuid": rid})
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    assert resp.json()["message"].startswith("Artifact path refers to a directory, not a file: ")
    resp = raw.get("/get-artifact", query={"path": "dir/notes.txt", "run_uuid": MISSING_RUN})
    assert resp.status == 404, resp
    assert resp.error_code() == "RESOURCE_DOES_NOT_EXIST"


# ------------------------------------------------------------------------------------------------
# logged-model artifact routes
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def logged_model_with_files(client, raw, experiment_id):
    lm = client.create_logged_model(experiment_id, name=unique("lm"))
    base = service_path(lm.artifact_location)
    for path, data in [
        ("MLmodel", b"flavors: {}\n"),
        ("sub/a.txt", b"aaa"),
        ("sub/deep/b.bin", b"\x00\x01"),
        ("z.json", b"{}"),
        ("empty.txt", b""),
    ]:
        resp = raw.put(f"{ARTIFACTS}/{base}/{path}", data)
        assert resp.status == 200, resp
    return lm


def test_logged_model_list_root(raw, logged_model_with_files):
    lm = logged_model_with_files
    resp = raw.get(f"{API}/logged-models/{lm.model_id}/artifacts/directories")
    assert resp.status == 200, resp
    got = resp.json()
    assert got["root_uri"] == lm.artifact_location
    # sorted by path; directories and empty files carry no file_size
    assert got["files"] == [
        {"path": "MLmodel", "is_dir": False, "file_size": 12},
        {"path": "empty.txt", "is_dir": False},
        {"path": "sub", "is_dir": True},
        {"path": "z.json", "is_dir": False, "file_size": 2},
    ]


def test_logged_model_list_subdirectory(raw, logged_model_with_files):
    lm = logged_model_with_files
    url = f"{API}/logged-models/{lm.model_id}/artifacts/directories"
    resp = raw.get(url, query={"artifact_directory_path": "sub"})
    assert resp.status == 200, resp
    assert resp.json()["files"] == [
        {"path": "sub/a.txt", "is_dir": False, "file_size": 3},
        {"path": "sub/deep", "is_dir": True},
    ]
    for missing in ("nope", "MLmodel"):  # a missing dir and a file list as nothing
        resp = raw.get(url, query={"artifact_directory_path": missing})
        assert resp.status == 200, resp
        assert resp.json().get("files", []) == []
        assert resp.json()["root_uri"] == lm.artifact_location


def test_logged_model_list_unknown_model(raw):
    resp = raw.get(f"{API}/logged-models/m-{'0' * 32}/artifacts/directories")
    assert resp.status == 404, resp
    assert resp.error_code() == "RESOURCE_DOES_NOT_EXIST"
    assert resp.json()["message"] == f"Logged model with ID 'm-{'0' * 32}' not found."


@pytest.mark.parametrize(
    "path, data, ctype",
    [
        ("MLmodel", b"flavors: {}\n", "text/plain"),
        ("sub/a.txt", b"aaa", "text/plain"),
        ("sub/deep/b.bin", b"\x00\x01", "application/octet-stream"),
        ("z.json", b"{}", "text/plain"),
    ],
)
def test_logged_model_file_download(raw, logged_model_with_files, path, data, ctype):
    lm = logged_model_with_files
    url = f"{AJAX}/logged-models/{lm.model_id}/artifacts/files"
    resp = raw.get(url, query={"artifact_file_path": path})
    assert resp.status == 200, resp
    assert resp.body == data
    h = headers_of(resp)
    assert h["content-type"].split(";")[0] == ctype
    assert h["content-disposition"] == f"attachment; filename={path.rsplit('/', 1)[-1]}"
    assert h["x-content-type-options"] == "nosniff"


def test_logged_model_file_errors(raw, logged_model_with_files):
    lm = logged_model_with_files
    url = f"{AJAX}/logged-models/{lm.model_id}/artifacts/files"
    resp = raw.get(url)
    assert resp.status == 400, resp
    assert resp.error_code() == "BAD_REQUEST"
    assert resp.json()["message"] == 'Request must include the "artifact_file_path" query parameter.'
    resp = raw.get(url, query={"artifact_file_path": "nope.txt"})
    assert resp.status == 404, resp
    assert resp.error_code() == "RESOURCE_DOES_NOT_EXIST"
    resp = raw.get(url, query={"artifact_file_path": "sub"})
    assert resp.status == 400, resp
    assert resp.error_code() == "INVALID_PARAMETER_VALUE"
    resp = raw.get(
        f"{AJAX}/logged-models/m-{'0' * 32}/artifacts/files", query={"artifact_file_path": "MLmodel"}
    )
    assert resp.status == 404, resp
    assert resp.error_code() == "RESOURCE_DOES_NOT_EXIST"
