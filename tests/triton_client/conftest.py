"""Fixtures: the server under test comes from the environment that run.sh sets."""
import os

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

HTTP = os.environ.get("TRAINYARD_TEST_HTTP", "127.0.0.1:18000")
GRPC = os.environ.get("TRAINYARD_TEST_GRPC", "127.0.0.1:18001")
TOKEN = os.environ["TRAINYARD_TEST_TOKEN"]
REPO = os.environ["TRAINYARD_TEST_REPO"]
RUNTIME = os.environ.get("TRAINYARD_TEST_RUNTIME", "onnxruntime")
# Lower case: gRPC metadata keys must be, and HTTP does not care.
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def http():
    return httpclient.InferenceServerClient(HTTP, concurrency=16)


@pytest.fixture(scope="session")
def grpc():
    return grpcclient.InferenceServerClient(GRPC)


_sessions = {}


def reference(model, x):
    """ONNX Runtime's own answer, in-process, for the same file."""
    if model not in _sessions:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        _sessions[model] = ort.InferenceSession(
            os.path.join(REPO, model, "1", "model.onnx"), opts, providers=["CPUExecutionProvider"])
    return _sessions[model].run(None, {"input": x})[0]


def sample(model, batch, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch, 784) if model.startswith(("mlp", "big")) else (batch, 1, 28, 28)
    return rng.standard_normal(shape).astype(np.float32)
