"""Builds the ONNX models the serving tests and benchmarks use, with the `onnx` package.

    python make_models.py OUT_DIR [--extra-mlps N --hidden H]

OUT_DIR/<model>/1/model.onnx, a Triton-style repository:
  mlp  784-256-128-10 (Gemm/Relu), input "input" [N,784] -> output "output" [N,10]
  cnn  the PyTorch-MNIST CNN: conv32-conv64-maxpool-fc128-fc10, input [N,1,28,28]
  tiny  [N,4] -> [N,2] (one Gemm), the fixture of the Rust tests (crates/serve/tests/fixtures)
  broken  a file that is not ONNX (must fail to load without harming the others)
  --extra-mlps N: N more MLPs ("big0".."bigN-1") with a wider hidden layer, for eviction tests.
Weights are random with a fixed seed, so every run builds the same files.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def init(rng, name, shape, scale):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def gemm_layers(rng, sizes, first_input):
    nodes, inits, x = [], [], first_input
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [init(rng, f"w{i}", (b, a), 1 / np.sqrt(a)), init(rng, f"b{i}", (b,), 0.1)]
        out = f"h{i}" if i < len(sizes) - 2 else "output"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [out], transB=1))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [out + "r"]))
            x = out + "r"
    return nodes, inits


def save(model, out, name):
    onnx.checker.check_model(model)
    d = os.path.join(out, name, "1")
    os.makedirs(d, exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))


def mlp(seed, hidden=(256, 128), name="mlp"):
    rng = np.random.default_rng(seed)
    nodes, inits = gemm_layers(rng, [784, *hidden, 10], "input")
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def cnn(seed):
    rng = np.random.default_rng(seed)
    inits = [
        init(rng, "c1w", (32, 1, 3, 3), 1 / 3), init(rng, "c1b", (32,), 0.1),
        init(rng, "c2w", (64, 32, 3, 3), 1 / np.sqrt(288)), init(rng, "c2b", (64,), 0.1),
        numpy_helper.from_array(np.array([-1, 9216], dtype=np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "c1w", "c1b"], ["c1"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2w", "c2b"], ["c2"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "flat"], ["f"]),
    ]
    fc, fc_inits = gemm_layers(rng, [9216, 128, 10], "f")
    graph = helper.make_graph(
        nodes + fc, "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        inits + fc_inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def tiny():
    w = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(2, 4) / 8, "w")
    b = numpy_helper.from_array(np.array([0.5, -0.5], dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w", "b"], ["output"], transB=1)], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2])],
        [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--extra-mlps", type=int, default=0)
    p.add_argument("--hidden", type=int, default=4096)
    a = p.parse_args()
    save(mlp(1), a.out, "mlp")
    save(cnn(2), a.out, "cnn")
    save(tiny(), a.out, "tiny")
    os.makedirs(os.path.join(a.out, "broken", "1"), exist_ok=True)
    with open(os.path.join(a.out, "broken", "1", "model.onnx"), "wb") as f:
        f.write(b"this is not an onnx model")
    for i in range(a.extra_mlps):
        save(mlp(100 + i, hidden=(a.hidden, 256), name=f"big{i}"), a.out, f"big{i}")


if __name__ == "__main__":
    main()
