"""Triton python-backend model that serves the model.onnx next to it with onnxruntime.

All requests of a dynamic batch are concatenated along axis 0, run in one ORT call
(one intra-op thread, CPU), and the output is split back per request.
"""
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "input").as_numpy() for r in requests]
        x = xs[0] if len(xs) == 1 else np.concatenate(xs, axis=0)
        y = self.session.run(["output"], {"input": x})[0]
        splits = np.cumsum([a.shape[0] for a in xs])[:-1]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("output", part)])
            for part in np.split(y, splits, axis=0)
        ]
