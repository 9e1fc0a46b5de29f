"""Validation order and texts, max_results limits per endpoint, search-datasets input errors and
artifact path errors, as `mlflow server` 3.17.2 reports them.

Request-shape checks run per field in the handler's schema order (server/handlers.py
`_validate_param_against_schema`); type checks only fire when the body does not fit the proto.
"""

from __future__ import annotations

import pytest
from mlflow_support import unique

API = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
DOCS = " See the API docs for more information about request parameters."
MISSING_RUN = "0123456789abcdef0123456789abcdef"
BAD_NAME = (
    "Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), "
    "colon(:) and slashes (/)."
)


def message_of(resp, status=400, code="INVALID_PARAMETER_VALUE"):
    assert resp.status == status, resp
    assert resp.error_code() == code, resp
    return resp.json()["message"]


# ------------------------------------------------------------------------------------------------
# which error wins
# ------------------------------------------------------------------------------------------------


def test_log_metric_run_id_type_reported_before_value(raw):
    resp = raw.post(
        f"{API}/runs/log-metric", {"run_id": 123, "key": "m", "value": "abc", "timestamp": 1}
    )
    assert message_of(resp) == (
        "Invalid value 123 for parameter 'run_id' supplied:  Hint: Value was of type 'int'." + DOCS
    )


def test_log_metric_value_reported_before_timestamp(raw, run):
    body = {"run_id": run.info.run_id, "key": "m", "value": "abc", "timestamp": "x"}
    assert message_of(raw.post(f"{API}/runs/log-metric", body)) == (
        "Invalid value \"abc\" for parameter 'value' supplied:  Hint: Value was of type 'str'." + DOCS
    )


def test_log_metric_missing_key_reported_before_bad_value(raw, run):
    body = {"run_id": run.info.run_id, "value": "x", "timestamp": 1}
    assert message_of(raw.post(f"{API}/runs/log-metric", body)) == (
        "Missing value for required parameter 'key'." + DOCS
    )


def test_log_metric_empty_body_reports_run_id(raw):
    assert message_of(raw.post(f"{API}/runs/log-metric", {})) == (
        "Missing value for required parameter 'run_id'." + DOCS
    )


@pytest.mark.parametrize("missing", ["value", "timestamp"])
def test_log_metric_missing_required_field(raw, run, missing):
    body = {"run_id": run.info.run_id, "key": "m", "value": 1.0, "timestamp": 1}
    del body[missing]
    assert message_of(raw.post(f"{API}/runs/log-metric", body)) == (
        f"Missing value for required parameter '{missing}'." + DOCS
    )


def test_log_metric_bad_name_reported_before_unknown_run(raw):
    body = {"run_id": MISSING_RUN, "key": "bad!key", "value": 1.0, "timestamp": 1}
    assert message_of(raw.post(f"{API}/runs/log-metric", body)) == (
        f"Invalid value \"bad!key\" for parameter 'name' supplied: {BAD_NAME}"
    )


def test_log_metric_negative_timestamp(raw, run):
    body = {"run_id": run.info.run_id, "key": "m", "value": 1.0, "timestamp": -1}
    assert message_of(raw.post(f"{API}/runs/log-metric", body)) == (
        "Invalid value -1 for parameter 'timestamp' supplied: metric 'm' (value=1.0). "
        "Timestamp must be a nonnegative long (64-bit integer) "
    )


def test_log_batch_metric_fields_reported_before_params(raw, run):
    body = {
        "run_id": run.info.run_id,
        "metrics": [{"key": "a", "timestamp": 1}],
        "params": [{"value": "x"}],
    }
    assert message_of(raw.post(f"{API}/runs/log-batch", body)) == (
        "Missing value for required parameter 'metrics[0].value'." + DOCS
    )


def test_log_batch_names_the_bad_item(raw, run):
    rid = run.info.run_id
    body = {
        "run_id": rid,
        "metrics": [{"key": "ok", "value": 1, "timestamp": 1}, {"key": "b@d", "value": 1, "timestamp": 1}],
        "params": [{"key": "p@", "value": "1"}],
    }
    assert message_of(raw.post(f"{API}/runs/log-batch", body)) == (
        f"Invalid value \"b@d\" for parameter 'metrics[1].name' supplied: {BAD_NAME}"
    )
    # nothing of the failed batch was written
    resp = raw.get(f"{API}/metrics/get-history", query={"run_id": rid, "metric_key": "ok"})
    assert resp.status == 200 and resp.json().get("metrics", []) == []


def test_log_batch_item_error_before_count_limit_before_run(raw, run):
    metrics = [{"key": "a", "value": 1, "timestamp": i} for i in range(1001)]
    metrics[3]["key"] = "b@d"
    resp = raw.post(f"{API}/runs/log-batch", {"run_id": run.info.run_id, "metrics": metrics})
    assert message_of(resp) == (
        f"Invalid value \"b@d\" for parameter 'metrics[3].name' supplied: {BAD_NAME}"
    )
    metrics[3]["key"] = "a"
    resp = raw.post(f"{API}/runs/log-batch", {"run_id": MISSING_RUN, "metrics": metrics})
    assert message_of(resp) == (
        "A batch logging request can contain at most 1000 metrics. Got 1001 metrics. Please split "
        "up metrics across multiple requests and try again."
    )


def test_log_batch_run_id_type_reported_first(raw):
    resp = raw.post(f"{API}/runs/log-batch", {"run_id": 5, "metrics": {"a": 1}})
    assert message_of(resp) == (
        "Invalid value 5 for parameter 'run_id' supplied:  Hint: Value was of type 'int'." + DOCS
    )


def test_log_metric_dataset_name_needs_digest(raw, run):
    rid = run.info.run_id
    body = {"run_id": rid, "key": "m", "value": 1, "timestamp": 1, "dataset_name": "ds"}
    assert message_of(raw.post(f"{API}/runs/log-metric", body)) == (
        "Both dataset_name and dataset_digest must be provided if one is provided"
    )
    resp = raw.get(f"{API}/metrics/get-history", query={"run_id": rid, "metric_key": "m"})
    assert resp.status == 200 and resp.json().get("metrics", []) == []


# ------------------------------------------------------------------------------------------------
# max_results limits
# ------------------------------------------------------------------------------------------------


def test_search_runs_max_results_limit(raw, experiment_id):
    url = f"{API}/runs/search"
    assert raw.post(url, {"experiment_ids": [experiment_id], "max_results": 50000}).status == 200
    resp = raw.post(url, {"experiment_ids": [experiment_id], "max_results": 50001})
    assert message_of(resp) == (
        "Invalid value 50001 for parameter 'max_results' supplied:  Hint: Value was of type 'int'."
        + DOCS
    )
    resp = raw.post(url, {"experiment_ids": [experiment_id], "max_results": 0})
    assert message_of(resp) == (
        "Invalid value 0 for parameter 'max_results' supplied. It must be a positive integer"
    )


def test_search_experiments_max_results_limit(raw):
    url = f"{API}/experiments/search"
    assert raw.post(url, {"max_results": 50000}).status == 200
    assert message_of(raw.post(url, {"max_results": 50001})) == (
        "Invalid value 50001 for parameter 'max_results' supplied. It must be at most 50000"
    )
    assert message_of(raw.post(url, {"max_results": 0})) == (
        "Invalid value 0 for parameter 'max_results' supplied. It must be a positive integer"
    )


def test_search_registered_models_max_results_limit(raw):
    url = f"{API}/registered-models/search"
    assert raw.get(url, query={"max_results": 1000}).status == 200
    # GET values arrive as strings, hence the quoted value and type name
    assert message_of(raw.get(url, query={"max_results": 1001})) == (
        "Invalid value \"1001\" for parameter 'max_results' supplied:  Hint: Value was of type 'str'."
        + DOCS
    )


def test_search_model_versions_max_results_limit(raw):
    url = f"{API}/model-versions/search"
    assert raw.get(url, query={"max_results": 200000}).status == 200
    assert message_of(raw.get(url, query={"max_results": 200001})) == (
        "Invalid value \"200001\" for parameter 'max_results' supplied:  Hint: Value was of type "
        "'str'." + DOCS
    )
    assert message_of(raw.get(url, query={"max_results": 0})) == (
        "Invalid value for max_results. It must be a positive integer, but got 0"
    )


@pytest.mark.parametrize("bad", [0, 2501])
def test_history_bulk_interval_max_results_limit(raw, run, bad):
    url = f"{API}/metrics/get-history-bulk-interval"
    q = {"run_ids": run.info.run_id, "metric_key": "m"}
    assert raw.get(url, query={**q, "max_results": 2500}).status == 200
    assert message_of(raw.get(url, query={**q, "max_results": bad})) == (
        "max_results must be between 1 and 2500." + DOCS
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"run_ids": [MISSING_RUN] * 101}, "GetMetricHistoryBulkInterval request must specify at most "
         "100 run_ids. Received 101 run_ids." + DOCS),
        ({"start_step": 5}, "If either start step or end step are specified, both must be specified."),
        ({"start_step": 5, "end_step": 1},
         "end_step must be greater than start_step. Found start_step=5 and end_step=1."),
    ],
)
def test_history_bulk_interval_request_errors(raw, run, extra, message):
    q = {"run_ids": run.info.run_id, "metric_key": "m", **extra}
    assert message_of(raw.get(f"{API}/metrics/get-history-bulk-interval", query=q)) == message


def test_history_bulk_interval_missing_fields(raw, run):
    url = f"{API}/metrics/get-history-bulk-interval"
    assert message_of(raw.get(url, query={"metric_key": "m"})) == (
        "Missing value for required parameter 'run_ids'." + DOCS
    )
    assert message_of(raw.get(url, query={"run_ids": run.info.run_id})) == (
        "Missing value for required parameter 'metric_key'." + DOCS
    )


def test_get_history_max_results(raw, client, run):
    rid = run.info.run_id
    client.log_metric(rid, "m", 1.0, step=0)
    url = f"{API}/metrics/get-history"
    for bad in (0, -1):
        assert message_of(raw.get(url, query={"run_id": rid, "metric_key": "m", "max_results": bad})) == (
            f"Invalid value {bad} for parameter 'max_results' supplied. It must be a positive integer."
        )
    # no upper limit (the client pages with 25000)
    resp = raw.get(url, query={"run_id": rid, "metric_key": "m", "max_results": 100000})
    assert resp.status == 200, resp
    assert len(resp.json()["metrics"]) == 1


# ------------------------------------------------------------------------------------------------
# POST /ajax-api/2.0/mlflow/experiments/search-datasets
# ------------------------------------------------------------------------------------------------

SEARCH_DATASETS = f"{AJAX}/experiments/search-datasets"


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "SearchDatasets request must specify at least one experiment_id."),
        ({"experiment_ids": []}, "SearchDatasets request must specify at least one experiment_id."),
        (
            {"experiment_ids": ["1"] * 21},
            "SearchDatasets request cannot specify more than 20 experiment_ids. "
            "Received 21 experiment_ids.",
        ),
        (
            {"experiment_ids": ["abc"]},
            "Invalid experiment ID 'abc'. Experiment ID must be a valid integer.",
        ),
    ],
)
def test_search_datasets_bad_input(raw, body, message):
    assert message_of(raw.post(SEARCH_DATASETS, body)) == message


def test_search_datasets_requires_json_content_type(raw):
    resp = raw.post(SEARCH_DATASETS, b'{"experiment_ids": ["0"]}')
    assert message_of(resp) == "Bad Request. Content-Type header is missing."


def test_search_datasets_summaries(raw, client, experiment_id):
    rid = client.create_run(experiment_id).info.run_id
    ds = {"name": "train", "digest": "d1", "source_type": "local", "source": '{"uri": "/x"}'}
    body = {
        "run_id": rid,
        "datasets": [
            {"tags": [{"key": "mlflow.data.context", "value": "training"}], "dataset": ds},
            {"dataset": {**ds, "name": "eval", "digest": "d2"}},
        ],
    }
    assert raw.post(f"{API}/runs/log-inputs", body).status == 200
    resp = raw.post(SEARCH_DATASETS, {"experiment_ids": [experiment_id]})
    assert resp.status == 200, resp
    got = sorted(resp.json()["dataset_summaries"], key=lambda s: s["name"])
    assert got == [
        {"experiment_id": experiment_id, "name": "eval", "digest": "d2"},
        {"experiment_id": experiment_id, "name": "train", "digest": "d1", "context": "training"},
    ]
    other = client.create_experiment(unique("no-datasets"))
    resp = raw.post(SEARCH_DATASETS, {"experiment_ids": [other]})
    assert resp.status == 200 and resp.json().get("dataset_summaries", []) == []


# ------------------------------------------------------------------------------------------------
# artifact path errors: 400 INVALID_PARAMETER_VALUE "Invalid path" everywhere
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "%2e%2e/x", "/etc/passwd", "a#b", "file:///etc"])
def test_run_artifact_list_path_error(raw, run, bad):
    resp = raw.get(f"{API}/artifacts/list", query={"run_id": run.info.run_id, "path": bad})
    assert message_of(resp) == "Invalid path"


def test_path_error_shape_on_every_artifact_route(raw, client, run, experiment_id):
    rid = run.info.run_id
    lm = client.create_logged_model(experiment_id, name="lm")
    for resp in (
        raw.get("/get-artifact", query={"run_uuid": rid, "path": "../x"}),
        raw.get("/get-artifact", query={"run_uuid": rid, "path": "%252e%252e/x"}),
        raw.post(f"{AJAX}/upload-artifact", b"x", query={"run_uuid": rid, "path": "a/../../x"}),
        raw.get(ARTIFACTS, query={"path": "a/../.."}),
        raw.put(f"{ARTIFACTS}/{unique('t')}/%2e%2e/%2e%2e/y", b"x"),
        raw.get(f"{API}/logged-models/{lm.model_id}/artifacts/directories",
                query={"artifact_directory_path": "../x"}),
        raw.get(f"{AJAX}/logged-models/{lm.model_id}/artifacts/files",
                query={"artifact_file_path": "../../x"}),
    ):
        assert message_of(resp) == "Invalid path"
