"""Experiments through the stock MlflowClient / fluent API."""

from __future__ import annotations

import time

import pytest
from mlflow_support import WORKSPACE, error_code_of, mlflow_quirk, unique

import mlflow
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException


def test_default_experiment_exists(client):
    exp = client.get_experiment("0")
    # Experiment 0 is MLflow's Default; in a Trainyard workspace other than `default` it is
    # that workspace's own Default experiment, with an id of its own.
    own_id = "0" if WORKSPACE == "default" else exp.experiment_id
    assert exp.experiment_id == own_id and own_id.isdigit()
    assert exp.name == "Default"
    assert exp.lifecycle_stage == "active"
    by_name = client.get_experiment_by_name("Default")
    assert by_name is not None and by_name.experiment_id == own_id


def test_create_get_and_get_by_name(client):
    name = unique("exp-create")
    before_ms = int(time.time() * 1000) - 60_000
    exp_id = client.create_experiment(name, tags={"team": "core", "empty": ""})
    assert isinstance(exp_id, str) and exp_id.isdigit()

    exp = client.get_experiment(exp_id)
    assert exp.experiment_id == exp_id
    assert exp.name == name
    assert exp.lifecycle_stage == "active"
    assert exp.tags["team"] == "core"
    assert exp.tags["empty"] == ""
    assert exp.artifact_location  # server-chosen
    assert exp.creation_time is not None and exp.creation_time >= before_ms
    assert exp.last_update_time is not None and exp.last_update_time >= exp.creation_time

    by_name = client.get_experiment_by_name(name)
    assert by_name is not None
    assert by_name.experiment_id == exp_id
    assert by_name.name == name


def test_get_by_name_missing_is_none(client):
    assert client.get_experiment_by_name(unique("no-such-experiment")) is None
    assert mlflow.get_experiment_by_name(unique("no-such-experiment")) is None


def test_get_unknown_experiment_id(client):
    with pytest.raises(MlflowException) as ei:
        client.get_experiment("987654321012")
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"


def test_duplicate_name_rejected(client):
    name = unique("exp-dup")
    client.create_experiment(name)
    with pytest.raises(MlflowException) as ei:
        client.create_experiment(name)
    assert error_code_of(ei) == "RESOURCE_ALREADY_EXISTS"


def test_set_experiment_creates_then_reuses(client):
    name = unique("exp-fluent")
    exp = mlflow.set_experiment(name)
    assert exp.name == name
    again = mlflow.set_experiment(name)
    assert again.experiment_id == exp.experiment_id
    with mlflow.start_run() as r:
        assert r.info.experiment_id == exp.experiment_id


def test_search_with_filter_and_order(client):
    prefix = unique("exp-search")
    ids = {}
    for suffix, tag in [("b", "x"), ("a", "y"), ("c", "x")]:
        ids[suffix] = client.create_experiment(f"{prefix}-{suffix}", tags={"grp": tag})

    found = client.search_experiments(
        filter_string=f"name LIKE '{prefix}-%'", order_by=["name DESC"]
    )
    assert [e.name for e in found] == [f"{prefix}-c", f"{prefix}-b", f"{prefix}-a"]

    found = client.search_experiments(
        filter_string=f"name LIKE '{prefix}-%' AND tags.grp = 'x'", order_by=["name ASC"]
    )
    assert [e.experiment_id for e in found] == [ids["b"], ids["c"]]

    found = client.search_experiments(filter_string=f"name = '{prefix}-a'")
    assert [e.experiment_id for e in found] == [ids["a"]]

    # default order: creation_time DESC (ties broken by experiment_id)
    found = client.search_experiments(filter_string=f"name LIKE '{prefix}-%'")
    assert {e.experiment_id for e in found} == set(ids.values())
    times = [e.creation_time for e in found]
    assert times == sorted(times, reverse=True)

    # paging
    page1 = client.search_experiments(
        filter_string=f"name LIKE '{prefix}-%'", order_by=["name ASC"], max_results=2
    )
    assert [e.name for e in page1] == [f"{prefix}-a", f"{prefix}-b"]
    assert page1.token
    page2 = client.search_experiments(
        filter_string=f"name LIKE '{prefix}-%'",
        order_by=["name ASC"],
        max_results=2,
        page_token=page1.token,
    )
    assert [e.name for e in page2] == [f"{prefix}-c"]
    assert not page2.token


def test_rename(client):
    old, new = unique("exp-old"), unique("exp-new")
    exp_id = client.create_experiment(old)
    client.rename_experiment(exp_id, new)
    assert client.get_experiment(exp_id).name == new
    assert client.get_experiment_by_name(new).experiment_id == exp_id
    assert client.get_experiment_by_name(old) is None


def test_rename_onto_existing_name_rejected(client):
    a, b = unique("exp-a"), unique("exp-b")
    client.create_experiment(a)
    b_id = client.create_experiment(b)
    with pytest.raises(MlflowException) as ei:
        client.rename_experiment(b_id, a)
    # MLflow answers BAD_REQUEST (SQL error text); the spec prefers RESOURCE_ALREADY_EXISTS.
    assert error_code_of(ei) in ("RESOURCE_ALREADY_EXISTS", "BAD_REQUEST", "INVALID_PARAMETER_VALUE")
    assert client.get_experiment(b_id).name == b


def test_delete_and_restore(client):
    name = unique("exp-del")
    exp_id = client.create_experiment(name)
    run = client.create_run(exp_id)

    client.delete_experiment(exp_id)
    exp = client.get_experiment(exp_id)
    assert exp.lifecycle_stage == "deleted"
    # deleted experiments are still found by name, and their names stay reserved
    assert client.get_experiment_by_name(name).lifecycle_stage == "deleted"
    with pytest.raises(MlflowException) as ei:
        client.create_experiment(name)
    assert error_code_of(ei) == "RESOURCE_ALREADY_EXISTS"
    # runs are soft-deleted with the experiment
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"

    active = client.search_experiments(filter_string=f"name = '{name}'")
    assert list(active) == []
    deleted = client.search_experiments(
        view_type=ViewType.DELETED_ONLY, filter_string=f"name = '{name}'"
    )
    assert [e.experiment_id for e in deleted] == [exp_id]
    everything = client.search_experiments(view_type=ViewType.ALL, filter_string=f"name = '{name}'")
    assert [e.experiment_id for e in everything] == [exp_id]

    # cannot create runs in a deleted experiment
    with pytest.raises(MlflowException) as ei:
        client.create_run(exp_id)
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"

    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "active"
    assert [e.experiment_id for e in client.search_experiments(filter_string=f"name = '{name}'")] == [
        exp_id
    ]


@mlflow_quirk("renaming a deleted experiment answers INVALID_STATE with HTTP 500")
def test_rename_deleted_experiment_is_a_4xx(client, raw):
    exp_id = client.create_experiment(unique("exp-del-rename"))
    client.delete_experiment(exp_id)
    resp = raw.post(
        "/api/2.0/mlflow/experiments/update",
        {"experiment_id": exp_id, "new_name": unique("exp-renamed")},
    )
    assert 400 <= resp.status < 500, resp


def test_experiment_tags(client):
    exp_id = client.create_experiment(unique("exp-tags"))
    client.set_experiment_tag(exp_id, "k1", "v1")
    client.set_experiment_tag(exp_id, "k2", "v2")
    client.set_experiment_tag(exp_id, "k1", "v1-updated")  # upsert
    tags = client.get_experiment(exp_id).tags
    assert tags["k1"] == "v1-updated"
    assert tags["k2"] == "v2"

    client.delete_experiment_tag(exp_id, "k2")
    tags = client.get_experiment(exp_id).tags
    assert "k2" not in tags
    assert tags["k1"] == "v1-updated"


def test_experiment_tag_value_too_long_rejected(client):
    exp_id = client.create_experiment(unique("exp-longtag"))
    with pytest.raises(MlflowException) as ei:
        client.set_experiment_tag(exp_id, "big", "x" * 20001)
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"
    client.set_experiment_tag(exp_id, "ok", "x" * 20000)
    assert len(client.get_experiment(exp_id).tags["ok"]) == 20000
