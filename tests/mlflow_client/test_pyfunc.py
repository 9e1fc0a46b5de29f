"""MLflow 3 logged-model path: pyfunc.log_model -> register_model -> load_model -> predict."""

from __future__ import annotations

import pytest
from mlflow_support import error_code_of

import mlflow
import mlflow.pyfunc
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException


# Skip the (slow, subprocess-based) requirements inference where it is not the point of the test.
PIP_REQS = ["mlflow-skinny==3.17.2"]


def make_model():
    # Defined inside a function so cloudpickle serialises the class by value (the loader does
    # not need to import this test module).
    class AddN(mlflow.pyfunc.PythonModel):
        def __init__(self, n):
            self.n = n

        def predict(self, context, model_input: list[int], params=None) -> list[int]:
            return [x + self.n for x in model_input]

    return AddN(5)


def test_pyfunc_log_register_load_predict(client, experiment_id, model_name, tmp_path):
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.pyfunc.log_model(name="adder", python_model=make_model())
    run_id = run.info.run_id
    assert info.model_id and info.model_id.startswith("m-")
    assert info.model_uri == f"models:/{info.model_id}"

    logged = client.get_logged_model(info.model_id)
    assert logged.status == LoggedModelStatus.READY
    assert logged.source_run_id == run_id
    assert logged.experiment_id == experiment_id
    assert logged.name == "adder"
    got_run = client.get_run(run_id)
    assert [o.model_id for o in got_run.outputs.model_outputs] == [info.model_id]

    # load straight from the logged model
    direct = mlflow.pyfunc.load_model(info.model_uri)
    assert direct.predict([1, 2, 3]) == [6, 7, 8]

    # register it, then load through the registry
    mv = mlflow.register_model(info.model_uri, model_name)
    assert str(mv.version) == "1"
    assert mv.name == model_name
    got = client.get_model_version(model_name, "1")
    assert got.run_id == run_id
    assert got.status == "READY"

    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/1")
    assert loaded.predict([10, 20]) == [15, 25]

    client.set_registered_model_alias(model_name, "prod", "1")
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@prod")
    assert loaded.predict([0]) == [5]

    # the logged model records its registrations
    tags = client.get_logged_model(info.model_id).tags
    assert model_name in tags.get("mlflow.modelVersions", "")


def test_log_model_with_registered_model_name(experiment_id, client, model_name):
    with mlflow.start_run(experiment_id=experiment_id):
        info1 = mlflow.pyfunc.log_model(
            name="m",
            python_model=make_model(),
            registered_model_name=model_name,
            pip_requirements=PIP_REQS,
        )
    with mlflow.start_run(experiment_id=experiment_id):
        # second log_model into an existing registered model: RESOURCE_ALREADY_EXISTS swallowed
        info2 = mlflow.pyfunc.log_model(
            name="m",
            python_model=make_model(),
            registered_model_name=model_name,
            pip_requirements=PIP_REQS,
        )
    assert str(info1.registered_model_version) == "1"
    assert str(info2.registered_model_version) == "2"
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name='{model_name}'"))
    assert versions == ["1", "2"]
    latest = mlflow.pyfunc.load_model(f"models:/{model_name}/latest")
    assert latest.predict([1]) == [6]


def test_unknown_logged_model(client):
    with pytest.raises(MlflowException) as ei:
        client.get_logged_model("m-" + "0" * 32)
    assert error_code_of(ei) == "RESOURCE_DOES_NOT_EXIST"


def test_register_from_runs_uri(experiment_id, client, model_name):
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.pyfunc.log_model(name="adder", python_model=make_model(), pip_requirements=PIP_REQS)
    # runs:/<run_id>/<name> resolves to the model logged under that name by the run
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/adder", model_name)
    assert str(mv.version) == "1"
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/1")
    assert loaded.predict([100]) == [105]

