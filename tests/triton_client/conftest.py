"""Fixtures: the server under test comes from the environment that run.sh sets."""
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

HTTP = os.environ.get("TRAINYARD_TEST_HTTP", "127.0.0.1:18000")
GRPC = os.environ.get("TRAINYARD_TEST_GRPC", "127.0.0.1:18001")
TOKEN = os.environ["TRAINYARD_TEST_TOKEN"]
# The model repository `trainyard serve` runs over (test_protocol, test_eviction).
REPO = os.environ.get("TRAINYARD_TEST_REPO", "")
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


# For the suites against `trainyard up` (the whole platform): its CLI and the repository's root.
BIN = os.environ.get("TRAINYARD_TEST_BIN", "trainyard")
ROOT = os.environ.get("TRAINYARD_TEST_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))


def cli(*args, env=None, timeout=300):
    """The trainyard CLI against the server under test: a CompletedProcess (text)."""
    full = {**os.environ, "TRAINYARD_SERVER": f"http://{HTTP}", "TRAINYARD_TOKEN": TOKEN, **(env or {})}
    return subprocess.run([BIN, *args], env=full, capture_output=True, text=True, timeout=timeout)


def ok(*args, **kw):
    """cli() that must exit 0; returns its stdout + stderr."""
    r = cli(*args, **kw)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"trainyard {' '.join(args)} exited {r.returncode}:\n{out}"
    return out


def api(path):
    """GET a REST path with the token: (status, parsed JSON body)."""
    req = urllib.request.Request(f"http://{HTTP}{path}", headers=AUTH)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_listed(http, model, seconds=30):
    """Model metadata once the server has picked the version up (the registry is re-read every
    2 s): polls while the answer is 404, raises whatever else fails."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return http.get_model_metadata(model, headers=dict(AUTH))
        except InferenceServerException as e:
            if e.status() != "404" or time.monotonic() > deadline:
                raise
        time.sleep(0.25)
