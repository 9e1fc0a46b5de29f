"""An ONNX file from another framework, end to end through `trainyard up`: scikit-learn's
MLPClassifier trained on the digits, converted with skl2onnx, registered with `trainyard
models import`, served from the registry at /v2 (tritonclient HTTP and gRPC) and checked
against scikit-learn's own predictions.

On ONNX Runtime it must serve. tract refuses skl2onnx's file (its batch dimension has
neither a size nor a name), so on tract the tests pin down what the platform does instead.
"""
import os
import warnings

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import AUTH, ROOT, RUNTIME, api, cli, ok, wait_listed

NAME = "sklearn-digits"
LICENSE = "BSD-3-Clause"
MAX_BATCH = 64  # the max_batch_size the server gives a model without a config
PROB_TOL = 1e-5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The classifier, its held-out rows (pixels scaled to [0, 1], float32) and its .onnx."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    data = np.loadtxt(os.path.join(ROOT, "examples/digits/data/digits.csv.gz"), delimiter=",")
    x, y = (data[:, :64] / 16).astype(np.float32), data[:, 64].astype(np.int64)
    order = np.random.default_rng(20).permutation(len(x))
    cut = int(len(x) * 0.8)
    train, test = order[:cut], order[cut:]
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0)
    with warnings.catch_warnings():
        # Whether it converged fully does not matter: the file is compared with clf itself.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[train], y[train])
    onnx_model = convert_sklearn(
        clf, initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(clf): {"zipmap": False}}, target_opset=17)
    path = tmp_path_factory.mktemp("sklearn") / f"{NAME}.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    return clf, x[test], path


def batches(x):
    return [x[i:i + MAX_BATCH] for i in range(0, len(x), MAX_BATCH)]


def infer_http(http, x):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outs = [httpclient.InferRequestedOutput(n) for n in ("label", "probabilities")]
    r = http.infer(NAME, [inp], outputs=outs, headers=dict(AUTH))
    return r.as_numpy("label"), r.as_numpy("probabilities")


def infer_grpc(grpc, x):
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outs = [grpcclient.InferRequestedOutput(n) for n in ("label", "probabilities")]
    r = grpc.infer(NAME, [inp], outputs=outs, headers=dict(AUTH))
    return r.as_numpy("label"), r.as_numpy("probabilities")


def version_tags(name, version="1"):
    status, body = api(f"/api/2.0/mlflow/model-versions/get?name={name}&version={version}")
    assert status == 200, (status, body)
    return {t["key"]: t["value"] for t in body["model_version"]["tags"]}


@pytest.mark.skipif(RUNTIME != "onnxruntime", reason="served on ONNX Runtime only")
def test_imported_sklearn_mlp_serves_and_agrees_with_sklearn(model, http, grpc):
    clf, x, path = model
    out = ok("models", "import", str(path), "--name", NAME, "--license", LICENSE)
    assert f"as {NAME}:1" in out and "checked on onnxruntime" in out, out
    assert f"served at /v2/models/{NAME}" in out, out

    tags = version_tags(NAME)
    for key, want in [("trainyard.lineage", "imported"), ("trainyard.license", LICENSE),
                      ("trainyard.format", "onnx"), ("trainyard.imported_from", path.name)]:
        assert tags.get(key) == want, f"tag {key}: {tags.get(key)!r}, want {want!r} (all: {tags})"

    meta = wait_listed(http, NAME)
    assert http.is_model_ready(NAME, headers=dict(AUTH))
    assert meta["parameters"]["runtime"] == "onnxruntime"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}], meta
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "label": ("INT64", [-1]), "probabilities": ("FP32", [-1, 10])}, meta

    want_label, want_prob = clf.predict(x), clf.predict_proba(x)
    assert len(x) == 360 and len(set(want_label)) == 10
    for proto, infer in (("http", lambda b: infer_http(http, b)), ("grpc", lambda b: infer_grpc(grpc, b))):
        parts = [infer(b) for b in batches(x)]
        label = np.concatenate([p[0] for p in parts])
        prob = np.concatenate([p[1] for p in parts])
        assert label.shape == (len(x),) and prob.shape == (len(x), 10), (proto, label.shape, prob.shape)
        wrong = np.flatnonzero(label != want_label)
        assert wrong.size == 0, (
            f"{proto}: {wrong.size} of {len(x)} labels differ from clf.predict, rows {wrong[:10]}: "
            f"got {label[wrong[:10]]}, want {want_label[wrong[:10]]}")
        diff = np.abs(prob - want_prob)
        row = int(diff.max(axis=1).argmax())
        print(f"{proto}: max |/v2 - predict_proba| = {diff.max():.3g} (row {row})")
        assert diff.max() <= PROB_TOL, (
            f"{proto}: probabilities differ from predict_proba by {diff.max():.3g} > {PROB_TOL} "
            f"at row {row}: {prob[row]} vs {want_prob[row]}")


@pytest.mark.skipif(RUNTIME != "tract", reason="what a tract-only platform does")
def test_import_checked_on_tract_is_refused_and_registers_nothing(model):
    """A client with no usable ONNX Runtime checks the file on tract, which cannot load it:
    the import must fail with the file's name and reason, before any version exists."""
    _, _, path = model
    # A library path that does not load: the CLI falls back to tract and says so.
    r = cli("models", "import", str(path), "--name", NAME, "--license", LICENSE,
            env={"TRAINYARD_ORT_LIB": "/nonexistent/libonnxruntime.so"})
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode != 0, f"import exited 0 on tract:\n{out}"
    assert "checking on tract" in out, out
    assert f"{path.name}: tract cannot load it, so it could not be served" in out, out
    # skl2onnx leaves the batch dimension of `input` without a size or a name.
    assert 'node #0 "input"' in out, out
    status, body = api(f"/api/2.0/mlflow/model-versions/get?name={NAME}&version=1")
    assert status == 404, (status, body)
    status, body = api(f"/api/2.0/mlflow/registered-models/get?name={NAME}")
    assert status == 404, (status, body)


@pytest.mark.skipif(RUNTIME != "tract", reason="what a tract-only platform does")
def test_import_checked_on_onnxruntime_is_unavailable_on_a_tract_server(model, http, grpc):
    """The import is checked on the client's runtime, not the server's: a client with ONNX
    Runtime registers the file and says the server cannot serve it; the tract server lists
    it UNAVAILABLE with tract's reason and answers 503 (gRPC UNAVAILABLE)."""
    clf, x, path = model
    name = NAME + "-ort-checked"
    out = ok("models", "import", str(path), "--name", name, "--license", LICENSE)
    assert "checked on onnxruntime" in out, out
    # The CLI asks the server, which says it cannot serve the file.
    assert "registered, but this server cannot serve it" in out and "tract cannot load" in out, out
    assert version_tags(name)["trainyard.lineage"] == "imported"
    with pytest.raises(InferenceServerException) as e:
        wait_listed(http, name)
    assert e.value.status() == "503" and "tract cannot load the model" in str(e.value), str(e.value)
    inp = httpclient.InferInput("input", [2, 64], "FP32")
    inp.set_data_from_numpy(x[:2])
    with pytest.raises(InferenceServerException) as e:
        http.infer(name, [inp], headers=dict(AUTH))
    assert e.value.status() == "503" and "tract cannot load the model" in str(e.value), str(e.value)
    g = grpcclient.InferInput("input", [2, 64], "FP32")
    g.set_data_from_numpy(x[:2])
    with pytest.raises(InferenceServerException) as e:
        grpc.infer(name, [g], headers=dict(AUTH))
    assert "UNAVAILABLE" in str(e.value.status()), str(e.value)
    index = {m["name"]: m for m in http.get_model_repository_index(headers=dict(AUTH))}
    assert index[name]["state"] == "UNAVAILABLE" and "tract" in index[name]["reason"], index[name]
    assert not http.is_model_ready(name, headers=dict(AUTH))
