"""MLflow's `onnx` flavor: `mlflow.onnx.log_model` → `register_model` → served at `/v2` like
any ONNX model. MLflow saves the weights as external data beside `model.onnx` by default;
the server takes them from the version's own folder."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import mlflow
import mlflow.onnx

PIP_REQS = ["mlflow-skinny==3.17.2", "onnx==1.23.2"]


def linear_model(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    """`y = x · w + b` for x of [N, 64], written with the `onnx` package."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_an_onnx_flavor_model_with_external_weights_is_served(client, experiment_id, model_name, raw):
    rng = np.random.default_rng(11)
    w = rng.standard_normal((64, 10)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.onnx.log_model(
            linear_model(w, b), name="model", save_as_external_data=True, pip_requirements=PIP_REQS
        )
    # The weights really are in a file of their own beside model.onnx.
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    stored = onnx.load(f"{local}/model.onnx", load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)

    mlflow.register_model(info.model_uri, model_name)
    # The first request loads the version on demand.
    x = rng.standard_normal((5, 64)).astype(np.float32)
    resp = raw.post(
        f"/v2/models/{model_name}/infer",
        {"inputs": [{"name": "x", "shape": [5, 64], "datatype": "FP32", "data": x.ravel().tolist()}]},
    )
    assert resp.status == 200, resp
    out = resp.json()["outputs"][0]
    assert out["name"] == "y" and out["shape"] == [5, 10], out
    got = np.array(out["data"], dtype=np.float32).reshape(5, 10)
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-5, atol=1e-5)
