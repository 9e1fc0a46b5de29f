"""Fixtures for the MLflow-client compatibility suite (see README.md, mlflow_support.py)."""

from __future__ import annotations

import pytest

# mlflow_support sets the client's environment (no retries, ...) before importing mlflow.
from mlflow_support import TOKEN, TRACKING_URI, RawHttp, unique

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="session")
def raw() -> RawHttp:
    return RawHttp(TRACKING_URI, TOKEN)


@pytest.fixture(scope="session")
def client() -> MlflowClient:
    return MlflowClient(tracking_uri=TRACKING_URI, registry_uri=TRACKING_URI)


@pytest.fixture
def experiment_id(client) -> str:
    """A fresh experiment for one test."""
    return client.create_experiment(unique("exp"))


@pytest.fixture
def run(client, experiment_id):
    """A fresh RUNNING run in a fresh experiment."""
    return client.create_run(experiment_id, run_name=unique("run"))


@pytest.fixture
def model_name(client):
    """A unique registered-model name; the model is deleted afterwards if it still exists."""
    name = unique("rm")
    yield name
    try:
        client.delete_registered_model(name)
    except MlflowException:
        pass


@pytest.fixture(autouse=True)
def _no_active_fluent_run():
    """Fluent-API tests must not leak an active run into the next test."""
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
