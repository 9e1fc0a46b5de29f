"""Model registry: registered models, model versions, stages, aliases, tags."""

from __future__ import annotations

import json
import os
import time

import pytest
from mlflow_support import error_code_of, mlflow_quirk, unique

import mlflow
from mlflow.exceptions import MlflowException

API = "/api/2.0/mlflow"


@pytest.fixture
def model_run(client, experiment_id):
    """A run with a small fake model directory logged under artifact path `model`."""
    run = client.create_run(experiment_id, run_name=unique("model-run"))
    rid = run.info.run_id
    client.log_text(rid, "flavors: {}\n", "model/MLmodel")
    client.log_dict(rid, {"weights": [1, 2, 3]}, "model/weights.json")
    client.set_terminated(rid)
    return rid


def model_files(local_dir):
    # The client itself drops a `registered_model_meta` file into models:/ downloads.
    return sorted(f for f in os.listdir(local_dir) if f != "registered_model_meta")


def create_versions(client, name, run_id, n):
    out = []
    for _ in range(n):
        out.append(client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id))
    return out


# ------------------------------------------------------------------------------------------------
# registered models
# ------------------------------------------------------------------------------------------------


def test_create_and_get_registered_model(client, model_name):
    t0 = int(time.time() * 1000) - 60_000
    rm = client.create_registered_model(model_name, tags={"owner": "ml"}, description="first")
    assert rm.name == model_name
    got = client.get_registered_model(model_name)
    assert got.name == model_name
    assert got.description == "first"
    assert got.tags == {"owner": "ml"}
    assert got.creation_timestamp >= t0
    assert got.last_updated_timestamp >= got.creation_timestamp
    assert got.latest_versions == []
    assert got.aliases == {}


def test_duplicate_registered_model(client, model_name):
    client.create_registered_model(model_name)
    with pytest.raises(MlflowException) as ei:
        client.create_registered_model(model_name)
    assert error_code_of(ei) == "RESOURCE_ALREADY_EXISTS"


def test_unknown_registered_model(client):
    with pytest.raises(MlflowException) as ei:
        client.get_registered_model(unique("missing-model"))
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"


def test_search_registered_models(client):
    prefix = unique("rm-search")
    made = [f"{prefix}-{s}" for s in ("b", "a", "c")]
    try:
        for i, n in enumerate(made):
            client.create_registered_model(n, tags={"idx": str(i)})
        found = client.search_registered_models(filter_string=f"name LIKE '{prefix}-%'")
        assert [m.name for m in found] == sorted(made)  # default order: name ASC
        found = client.search_registered_models(
            filter_string=f"name LIKE '{prefix}-%'", order_by=["name DESC"]
        )
        assert [m.name for m in found] == sorted(made, reverse=True)
        found = client.search_registered_models(filter_string=f"name = '{prefix}-a'")
        assert [m.name for m in found] == [f"{prefix}-a"]
        found = client.search_registered_models(
            filter_string=f"name LIKE '{prefix}-%' AND tags.idx = '2'"
        )
        assert [m.name for m in found] == [f"{prefix}-c"]
        # paging
        p1 = client.search_registered_models(filter_string=f"name LIKE '{prefix}-%'", max_results=2)
        assert [m.name for m in p1] == sorted(made)[:2] and p1.token
        p2 = client.search_registered_models(
            filter_string=f"name LIKE '{prefix}-%'", max_results=2, page_token=p1.token
        )
        assert [m.name for m in p2] == sorted(made)[2:] and not p2.token
        # unfiltered search works too (prompt-exclusion clause appended by the client)
        assert len(client.search_registered_models(max_results=5)) >= 1
    finally:
        for n in made:
            try:
                client.delete_registered_model(n)
            except MlflowException:
                pass


def test_update_description(client, model_name):
    client.create_registered_model(model_name)
    before = client.get_registered_model(model_name).last_updated_timestamp
    time.sleep(0.01)
    client.update_registered_model(model_name, description="new description")
    got = client.get_registered_model(model_name)
    assert got.description == "new description"
    assert got.last_updated_timestamp >= before


def test_rename_registered_model(client, model_name, model_run):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 2)
    new_name = unique("rm-renamed")
    try:
        client.rename_registered_model(model_name, new_name)
        with pytest.raises(MlflowException) as ei:
            client.get_registered_model(model_name)
        assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"
        got = client.get_registered_model(new_name)
        assert got.name == new_name
        mv = client.get_model_version(new_name, "2")
        assert mv.name == new_name
        found = client.search_model_versions(f"name = '{new_name}'")
        assert [str(v.version) for v in found] == ["2", "1"]
        assert all(v.name == new_name for v in found)
        # rename onto an existing name is refused
        other = unique("rm-other")
        client.create_registered_model(other)
        try:
            with pytest.raises(MlflowException) as ei:
                client.rename_registered_model(new_name, other)
            assert error_code_of(ei) == "RESOURCE_ALREADY_EXISTS"
        finally:
            client.delete_registered_model(other)
    finally:
        try:
            client.delete_registered_model(new_name)
        except MlflowException:
            pass


def test_registered_model_tags(client, model_name):
    client.create_registered_model(model_name)
    client.set_registered_model_tag(model_name, "k1", "v1")
    client.set_registered_model_tag(model_name, "k2", "v2")
    client.set_registered_model_tag(model_name, "k1", "v1b")
    assert client.get_registered_model(model_name).tags == {"k1": "v1b", "k2": "v2"}
    client.delete_registered_model_tag(model_name, "k2")
    assert client.get_registered_model(model_name).tags == {"k1": "v1b"}


def test_delete_registered_model(client, model_name, model_run):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 1)
    client.delete_registered_model(model_name)
    with pytest.raises(MlflowException) as ei:
        client.get_registered_model(model_name)
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"
    assert list(client.search_model_versions(f"name = '{model_name}'")) == []
    assert list(client.search_registered_models(filter_string=f"name = '{model_name}'")) == []
    with pytest.raises(MlflowException) as ei:
        client.delete_registered_model(model_name)
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"
    # the name can be reused
    client.create_registered_model(model_name)
    mv = create_versions(client, model_name, model_run, 1)[0]
    assert str(mv.version) == "1"


# ------------------------------------------------------------------------------------------------
# model versions
# ------------------------------------------------------------------------------------------------


def test_create_and_get_model_version(client, model_name, model_run):
    client.create_registered_model(model_name)
    source = f"runs:/{model_run}/model"
    mv = client.create_model_version(
        model_name, source, run_id=model_run, tags={"t": "1"}, description="v1 desc"
    )
    assert mv.name == model_name
    assert str(mv.version) == "1"
    assert mv.source == source
    assert mv.run_id == model_run
    assert mv.status == "READY"
    assert mv.current_stage == "None"

    got = client.get_model_version(model_name, "1")
    assert str(got.version) == "1"
    assert got.source == source
    assert got.run_id == model_run
    assert got.description == "v1 desc"
    assert got.tags == {"t": "1"}
    assert got.creation_timestamp and got.last_updated_timestamp

    mv2 = client.create_model_version(model_name, source, run_id=model_run)
    assert str(mv2.version) == "2"
    rm = client.get_registered_model(model_name)
    assert [str(v.version) for v in rm.latest_versions] == ["2"]

    with pytest.raises(MlflowException) as ei:
        client.get_model_version(model_name, "99")
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"


def test_create_version_for_unknown_model(client, model_run):
    with pytest.raises(MlflowException) as ei:
        client.create_model_version(unique("nope"), f"runs:/{model_run}/model", run_id=model_run)
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"


def test_update_model_version(client, model_name, model_run):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 1)
    client.update_model_version(model_name, "1", description="updated")
    assert client.get_model_version(model_name, "1").description == "updated"


def test_transition_stage_and_latest_versions(client, model_name, model_run):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 4)

    mv = client.transition_model_version_stage(model_name, "1", "Production")
    assert mv.current_stage == "Production"
    client.transition_model_version_stage(model_name, "2", "staging")  # case-insensitive
    assert client.get_model_version(model_name, "2").current_stage == "Staging"

    latest = {v.current_stage: str(v.version) for v in client.get_latest_versions(model_name)}
    assert latest == {"Production": "1", "Staging": "2", "None": "4"}

    # without archiving, two versions can share a stage; latest is the highest number
    client.transition_model_version_stage(model_name, "3", "Production")
    assert client.get_model_version(model_name, "1").current_stage == "Production"
    prod = client.get_latest_versions(model_name, stages=["Production"])
    assert [str(v.version) for v in prod] == ["3"]

    # archive_existing_versions moves the others in the target stage to Archived
    mv = client.transition_model_version_stage(
        model_name, "4", "Production", archive_existing_versions=True
    )
    assert mv.current_stage == "Production"
    stages = {str(v): client.get_model_version(model_name, str(v)).current_stage for v in range(1, 5)}
    assert stages == {"1": "Archived", "2": "Staging", "3": "Archived", "4": "Production"}

    prod = client.get_latest_versions(model_name, stages=["Production"])
    assert [str(v.version) for v in prod] == ["4"]
    arch = client.get_latest_versions(model_name, stages=["Archived"])
    assert [str(v.version) for v in arch] == ["3"]
    assert [str(v.version) for v in client.get_latest_versions(model_name, stages=["None"])] == []

    # stage URIs resolve to the latest version in that stage
    local = mlflow.artifacts.download_artifacts(f"models:/{model_name}/Production")
    assert model_files(local) == ["MLmodel", "weights.json"]


def test_transition_to_invalid_stage(client, model_name, model_run):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 1)
    with pytest.raises(MlflowException) as ei:
        client.transition_model_version_stage(model_name, "1", "Foo")
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"


@mlflow_quirk("archive_existing_versions for a non-Staging/Production stage is a 500")
def test_archive_existing_versions_only_for_staging_production(client, raw, model_name, model_run):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 1)
    resp = raw.post(
        f"{API}/model-versions/transition-stage",
        {"name": model_name, "version": "1", "stage": "Archived", "archive_existing_versions": True},
    )
    assert 400 <= resp.status < 500, resp


def test_aliases(client, model_name, model_run, tmp_path):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 3)

    client.set_registered_model_alias(model_name, "champion", "2")
    client.set_registered_model_alias(model_name, "challenger", "3")
    mv = client.get_model_version_by_alias(model_name, "champion")
    assert str(mv.version) == "2"
    assert "champion" in mv.aliases
    assert client.get_registered_model(model_name).aliases == {"champion": "2", "challenger": "3"}
    assert client.get_model_version(model_name, "3").aliases == ["challenger"]

    # re-pointing overwrites
    client.set_registered_model_alias(model_name, "champion", "1")
    assert str(client.get_model_version_by_alias(model_name, "champion").version) == "1"
    assert client.get_model_version(model_name, "2").aliases == []

    # models:/name@alias resolves through the alias endpoint to the version's files
    local = mlflow.artifacts.download_artifacts(
        f"models:/{model_name}@champion", dst_path=str(tmp_path / "by-alias")
    )
    assert model_files(local) == ["MLmodel", "weights.json"]
    with open(os.path.join(local, "weights.json")) as f:
        assert json.load(f) == {"weights": [1, 2, 3]}

    client.delete_registered_model_alias(model_name, "champion")
    assert client.get_registered_model(model_name).aliases == {"challenger": "3"}
    with pytest.raises(MlflowException) as ei:
        client.get_model_version_by_alias(model_name, "champion")
    assert error_code_of(ei) == "INVALID_PARAMETER_VALUE"

    # deleting a version removes its aliases
    client.delete_model_version(model_name, "3")
    assert client.get_registered_model(model_name).aliases == {}


def test_alias_on_unknown_version(client, model_name, model_run):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 1)
    with pytest.raises(MlflowException) as ei:
        client.set_registered_model_alias(model_name, "a1", "7")
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"


def test_model_version_tags(client, model_name, model_run):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 2)
    client.set_model_version_tag(model_name, "1", "quality", "good")
    client.set_model_version_tag(model_name, "1", "other", "x")
    client.set_model_version_tag(model_name, "1", "quality", "great")
    assert client.get_model_version(model_name, "1").tags == {"quality": "great", "other": "x"}
    assert client.get_model_version(model_name, "2").tags == {}
    client.delete_model_version_tag(model_name, "1", "other")
    assert client.get_model_version(model_name, "1").tags == {"quality": "great"}
    found = client.search_model_versions(f"name = '{model_name}' AND tags.quality = 'great'")
    assert [str(v.version) for v in found] == ["1"]


def test_delete_model_version_number_not_reused(client, model_name, model_run):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 3)
    client.delete_model_version(model_name, "3")
    with pytest.raises(MlflowException) as ei:
        client.get_model_version(model_name, "3")
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"
    assert sorted(str(v.version) for v in client.search_model_versions(f"name = '{model_name}'")) == [
        "1",
        "2",
    ]
    mv = client.create_model_version(model_name, f"runs:/{model_run}/model", run_id=model_run)
    assert str(mv.version) == "4"
    latest = client.get_latest_versions(model_name, stages=["None"])
    assert [str(v.version) for v in latest] == ["4"]


def test_search_model_versions(client, model_name, model_run, experiment_id):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 3)
    other_run = client.create_run(experiment_id).info.run_id
    client.log_text(other_run, "x", "model/MLmodel")
    client.create_model_version(model_name, f"runs:/{other_run}/model", run_id=other_run)

    found = client.search_model_versions(f"name = '{model_name}'")
    # default order: name ASC, version_number DESC
    assert [str(v.version) for v in found] == ["4", "3", "2", "1"]
    assert all(v.name == model_name for v in found)
    found = client.search_model_versions(f"name = '{model_name}'", order_by=["version_number ASC"])
    assert [str(v.version) for v in found] == ["1", "2", "3", "4"]
    found = client.search_model_versions(f"name = '{model_name}' AND run_id = '{other_run}'")
    assert [str(v.version) for v in found] == ["4"]
    found = client.search_model_versions(f"name LIKE '{model_name}%' AND version_number >= 3")
    assert sorted(str(v.version) for v in found) == ["3", "4"]
    p1 = client.search_model_versions(f"name = '{model_name}'", max_results=3)
    assert len(p1) == 3 and p1.token
    p2 = client.search_model_versions(f"name = '{model_name}'", max_results=3, page_token=p1.token)
    assert [str(v.version) for v in p2] == ["1"] and not p2.token


def test_model_version_download_uri_and_files(client, model_name, model_run, tmp_path):
    client.create_registered_model(model_name)
    create_versions(client, model_name, model_run, 1)
    uri = client.get_model_version_download_uri(model_name, "1")
    assert uri
    local = mlflow.artifacts.download_artifacts(
        f"models:/{model_name}/1", dst_path=str(tmp_path / "v1")
    )
    assert model_files(local) == ["MLmodel", "weights.json"]
    local = mlflow.artifacts.download_artifacts(
        f"models:/{model_name}/latest", dst_path=str(tmp_path / "latest")
    )
    assert model_files(local) == ["MLmodel", "weights.json"]
