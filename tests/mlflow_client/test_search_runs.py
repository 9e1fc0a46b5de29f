"""runs/search: filters, ordering and paging, through MlflowClient.search_runs."""

from __future__ import annotations

import time

import pytest
from mlflow_support import error_code_of

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException


@pytest.fixture
def populated(client, experiment_id):
    """Five runs with distinct metrics/params/tags/statuses and increasing start_time."""
    base = int(time.time() * 1000) - 100_000
    spec = [
        # name,    acc,  lr,     model,        team tag,   status
        ("alpha", 0.50, "0.1", "resnet-18", "vision", "FINISHED"),
        ("beta", 0.90, "0.01", "resnet-50", "vision", "FAILED"),
        ("gamma", 0.70, "0.01", "bert-base", "nlp", "FINISHED"),
        ("delta", 0.95, "0.001", "bert-large", None, "RUNNING"),
        ("epsilon", None, "0.1", "gpt-tiny", "nlp", "KILLED"),
    ]
    runs = {}
    for i, (name, acc, lr, model, team, status) in enumerate(spec):
        tags = {"model": model}
        if team is not None:
            tags["team"] = team
        r = client.create_run(experiment_id, run_name=name, start_time=base + i * 1000, tags=tags)
        rid = r.info.run_id
        metrics = [Metric("acc", acc, base, 0)] if acc is not None else []
        client.log_batch(rid, metrics=metrics, params=[Param("lr", lr)])
        if status != "RUNNING":
            client.set_terminated(rid, status=status)
        runs[name] = rid
    return experiment_id, runs


def names(found, runs):
    by_id = {v: k for k, v in runs.items()}
    return [by_id[r.info.run_id] for r in found]


def test_search_all_default_order_start_time_desc(client, populated):
    exp, runs = populated
    found = client.search_runs([exp])
    assert names(found, runs) == ["epsilon", "delta", "gamma", "beta", "alpha"]
    # full runs come back
    alpha = [r for r in found if r.info.run_id == runs["alpha"]][0]
    assert alpha.data.metrics == {"acc": 0.5}
    assert alpha.data.params == {"lr": "0.1"}
    assert alpha.data.tags["model"] == "resnet-18"
    assert alpha.info.status == "FINISHED"


def test_filter_metric_greater(client, populated):
    exp, runs = populated
    found = client.search_runs([exp], "metrics.acc > 0.6", order_by=["metrics.acc DESC"])
    assert names(found, runs) == ["delta", "beta", "gamma"]
    found = client.search_runs([exp], "metrics.acc <= 0.7", order_by=["metrics.acc ASC"])
    assert names(found, runs) == ["alpha", "gamma"]
    found = client.search_runs([exp], "metric.acc = 0.9")
    assert names(found, runs) == ["beta"]


def test_filter_param_equals(client, populated):
    exp, runs = populated
    found = client.search_runs([exp], "params.lr = '0.01'", order_by=["attributes.run_name ASC"])
    assert names(found, runs) == ["beta", "gamma"]
    found = client.search_runs([exp], 'params.lr = "0.1"', order_by=["run_name ASC"])
    assert names(found, runs) == ["alpha", "epsilon"]
    found = client.search_runs([exp], "params.lr != '0.1'", order_by=["run_name ASC"])
    assert names(found, runs) == ["beta", "delta", "gamma"]


def test_filter_tags_like_and_ilike(client, populated):
    exp, runs = populated
    found = client.search_runs([exp], "tags.model LIKE 'resnet%'", order_by=["run_name ASC"])
    assert names(found, runs) == ["alpha", "beta"]
    found = client.search_runs([exp], "tags.model LIKE 'BERT%'")
    assert names(found, runs) == []  # LIKE is case-sensitive
    found = client.search_runs([exp], "tags.model ILIKE 'BERT%'", order_by=["run_name ASC"])
    assert names(found, runs) == ["delta", "gamma"]
    found = client.search_runs([exp], "tags.`model` LIKE '%-_8'")
    assert names(found, runs) == ["alpha"]


def test_filter_tags_is_null(client, populated):
    exp, runs = populated
    found = client.search_runs([exp], "tags.team IS NULL")
    assert names(found, runs) == ["delta"]
    found = client.search_runs([exp], "tags.team IS NOT NULL", order_by=["run_name ASC"])
    assert names(found, runs) == ["alpha", "beta", "epsilon", "gamma"]
    # != only matches runs that have the tag
    found = client.search_runs([exp], "tags.team != 'nlp'", order_by=["run_name ASC"])
    assert names(found, runs) == ["alpha", "beta"]


def test_filter_attributes(client, populated):
    exp, runs = populated
    found = client.search_runs([exp], "attributes.run_name = 'gamma'")
    assert names(found, runs) == ["gamma"]
    found = client.search_runs([exp], "run_name LIKE '%lta'")
    assert names(found, runs) == ["delta"]
    found = client.search_runs([exp], "attributes.status = 'FINISHED'", order_by=["run_name ASC"])
    assert names(found, runs) == ["alpha", "gamma"]
    found = client.search_runs([exp], "status != 'FINISHED'", order_by=["run_name ASC"])
    assert names(found, runs) == ["beta", "delta", "epsilon"]
    found = client.search_runs([exp], "tags.`mlflow.runName` = 'beta'")
    assert names(found, runs) == ["beta"]


def test_filter_run_id_in(client, populated):
    exp, runs = populated
    ids = f"('{runs['alpha']}', '{runs['delta']}', '{'f' * 32}')"
    found = client.search_runs([exp], f"attributes.run_id IN {ids}", order_by=["run_name ASC"])
    assert names(found, runs) == ["alpha", "delta"]
    found = client.search_runs([exp], f"run_id NOT IN {ids}", order_by=["run_name ASC"])
    assert names(found, runs) == ["beta", "epsilon", "gamma"]


def test_filter_start_time(client, populated):
    exp, runs = populated
    gamma = client.get_run(runs["gamma"])
    found = client.search_runs(
        [exp], f"attributes.start_time >= {gamma.info.start_time}", order_by=["start_time ASC"]
    )
    assert names(found, runs) == ["gamma", "delta", "epsilon"]


def test_filter_and_combination(client, populated):
    exp, runs = populated
    found = client.search_runs(
        [exp], "metrics.acc > 0.6 and params.lr = '0.01' AND tags.team = 'vision'"
    )
    assert names(found, runs) == ["beta"]


def test_order_by(client, populated):
    exp, runs = populated
    # runs without the metric sort last
    found = client.search_runs([exp], order_by=["metrics.acc DESC"])
    assert names(found, runs) == ["delta", "beta", "gamma", "alpha", "epsilon"]
    found = client.search_runs([exp], order_by=["metrics.acc ASC"])
    assert names(found, runs) == ["alpha", "gamma", "beta", "delta", "epsilon"]
    found = client.search_runs([exp], order_by=["start_time ASC"])
    assert names(found, runs) == ["alpha", "beta", "gamma", "delta", "epsilon"]
    found = client.search_runs([exp], order_by=["attributes.start_time DESC"])
    assert names(found, runs) == ["epsilon", "delta", "gamma", "beta", "alpha"]
    found = client.search_runs([exp], order_by=["params.lr DESC", "run_name ASC"])
    assert names(found, runs) == ["alpha", "epsilon", "beta", "gamma", "delta"]
    found = client.search_runs([exp], order_by=["tags.model ASC"])
    assert names(found, runs) == ["gamma", "delta", "epsilon", "alpha", "beta"]


def test_search_across_experiments(client, populated):
    exp, runs = populated
    other = client.create_experiment(exp + "-other-" + str(time.time_ns()))
    extra = client.create_run(other, run_name="zeta").info.run_id
    found = client.search_runs([exp, other], "run_name = 'zeta'")
    assert [r.info.run_id for r in found] == [extra]
    found = client.search_runs([exp, other])
    assert len(found) == 6


def test_paging_25_runs(client, experiment_id):
    base = int(time.time() * 1000) - 100_000
    created = []
    for i in range(25):
        r = client.create_run(experiment_id, run_name=f"page-{i:02d}", start_time=base + i)
        created.append(r.info.run_id)
    client.log_batch(created[0], tags=[RunTag("first", "yes")])

    seen = []
    token = None
    pages = 0
    while True:
        page = client.search_runs(
            [experiment_id], max_results=10, order_by=["start_time ASC"], page_token=token
        )
        pages += 1
        seen.extend(r.info.run_id for r in page)
        token = page.token
        if not token:
            break
        assert pages < 10, "paging does not terminate"
    assert pages == 3
    assert seen == created

    # same with the default order (start_time DESC)
    seen = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=7, page_token=token)
        assert len(page) <= 7
        seen.extend(r.info.run_id for r in page)
        token = page.token
        if not token:
            break
    assert seen == list(reversed(created))

    # max_results larger than the total: one page, no token
    page = client.search_runs([experiment_id], max_results=100)
    assert len(page) == 25 and not page.token


def test_bad_filter_rejected(client, experiment_id):
    for bad in [
        "metrics.acc >>> 1",
        "params.lr = '1' OR params.lr = '2'",
        "foo.bar = 'x'",
        "attributes.no_such_attr = 'x'",
        "params.lr = unquoted",
        "metrics.acc IS NULL",
    ]:
        with pytest.raises(MlflowException) as ei:
            client.search_runs([experiment_id], bad)
        assert error_code_of(ei) == "INVALID_PARAMETER_VALUE", bad


def test_bad_order_by_rejected(client, experiment_id):
    with pytest.raises(MlflowException) as ei:
        client.search_runs([experiment_id], order_by=["nonsense.key DESC"])
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"


def test_bad_page_token_rejected(client, experiment_id):
    with pytest.raises(MlflowException) as ei:
        client.search_runs([experiment_id], page_token="not-a-valid-token!!")
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"
