"""An ONNX model written with the `onnx` package (no framework behind it) imported with
`trainyard models import`: served as it is, made a native spec with its weights (its graph
is a chain of engine layers), and fine-tuned one epoch on the digits from that version."""
import os

import numpy as np
import onnx
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper

from conftest import AUTH, ROOT, api, ok, wait_listed

NAME = "onnx-script-mlp"


def build(path):
    """Flatten → Gemm (transB) → Relu → Gemm: 1×8×8 digits → 10 scores; returns the weights."""
    rng = np.random.default_rng(3)
    w1 = (rng.standard_normal((32, 64)) * 0.2).astype(np.float32)  # [out, in]: transB = 1
    b1 = (rng.standard_normal(32) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((10, 32)) * 0.2).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], name="flatten", axis=1),
            helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"], name="fc1", transB=1),
            helper.make_node("Relu", ["h"], ["a"], name="relu"),
            helper.make_node("Gemm", ["a", "w2", "b2"], ["output"], name="fc2", transB=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return w1, b1, w2, b2


def test_a_script_built_onnx_model_serves_becomes_native_and_fine_tunes(http, tmp_path):
    path = tmp_path / "mlp.onnx"
    w1, b1, w2, b2 = build(path)
    out = ok("models", "import", str(path), "--name", NAME)
    assert "native form: spec (4 layers)" in out and f"served at /v2/models/{NAME}" in out, out
    status, mv = api(f"/api/2.0/mlflow/model-versions/get?name={NAME}&version=1")
    tags = {t["key"]: t["value"] for t in mv["model_version"]["tags"]}
    assert tags["trainyard.native"] == "spec (4 layers)", tags

    # Served as it is: /v2 gives the NumPy forward pass.
    wait_listed(http, NAME)
    x = np.random.default_rng(5).uniform(-2, 2, (6, 1, 8, 8)).astype(np.float32)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = http.infer(NAME, [inp], headers=dict(AUTH)).as_numpy("output")
    want = np.maximum(x.reshape(6, 64) @ w1.T + b1, 0) @ w2.T + b2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    # Fine-tuned one epoch from that version, on the processed digits.
    # (test_trained_cnn.py may have made the processed version already: steps apply once.)
    status, latest = api("/api/v1/datasets/digits/versions/latest")
    fields = [f["name"] for f in latest["manifest"]["schema"]] if status == 200 else []
    if "pixels" not in fields:
        data = os.path.join(ROOT, "examples/digits")
        ok("dataset", "import", "digits", os.path.join(data, "data/digits.csv.gz"))
        ok("dataset", "process", "digits", "--steps", os.path.join(data, "steps.toml"))
    tune = tmp_path / "tune.toml"
    tune.write_text(
        f'name = "{NAME}-tuned"\n[data]\ndataset = "digits"\ninput = "pixels"\ntarget = "label"\n'
        f'[model]\nfrom = "{NAME}:1"\n[training]\nepochs = 1\nbatch_size = 32\nseed = 1\n'
    )
    out = ok("train", str(tune))
    assert f"starting from {NAME}:1" in out and f"registered model {NAME}-tuned:1" in out, out
