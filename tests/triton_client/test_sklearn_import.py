"""An ONNX file from another framework, end to end through `trainyard up`: scikit-learn's
MLPClassifier trained on the digits, converted with skl2onnx, registered with `trainyard
models import`, served from the registry at /v2 (tritonclient HTTP and gRPC) and checked
against scikit-learn's own predictions.

It must serve on both runtimes. skl2onnx leaves the batch dimension with neither a size nor
a name and computes `label` through shape arithmetic; tract needs the one named and gives
the other as symbolic dimensions, which the server handles (crates/serve/src/runtime/tract.rs).
"""
import os
import warnings

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import AUTH, ROOT, RUNTIME, api, ok, wait_listed

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
    assert meta["parameters"]["runtime"] == RUNTIME
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


def test_a_client_without_onnx_runtime_checks_the_file_on_tract(model):
    """A client with no usable ONNX Runtime checks the file on tract, which loads it too."""
    _, _, path = model
    name = NAME + "-tract-checked"
    # A library path that does not load: the CLI falls back to tract and says so.
    out = ok("models", "import", str(path), "--name", name, "--license", LICENSE,
             env={"TRAINYARD_ORT_LIB": "/nonexistent/libonnxruntime.so"})
    assert "checking on tract" in out and "checked on tract" in out, out
    assert f"served at /v2/models/{name}" in out, out
    assert version_tags(name)["trainyard.lineage"] == "imported"
