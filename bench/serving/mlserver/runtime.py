"""MLServer 1.7.1 runtime that serves an ONNX file with onnxruntime (CPU, one intra-op thread).

Used by start.sh as the `implementation` ("runtime.OnnxModel") of every model in the bench
repository; `parameters.uri` in model-settings.json names the model.onnx file.

Two things stock MLServer gets wrong for perf_analyzer (see docs spec open-inference-v2 §4, §8):
  * Outputs are built by hand, without a `parameters` object. The stock NumpyCodec adds
    {"content_type": "np"}, and the C++ HTTP client treats any output with `parameters` as a
    binary output and fails on the missing `binary_data_size`.
  * perf_analyzer needs `GET /v2/models/{m}/config` (Triton's ModelConfig as JSON), which MLServer
    does not have. It is added as a custom REST handler; the answer is derived from the ONNX graph.
"""
from typing import Dict

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.errors import InferenceError, ModelNotFound
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri

# The `max_batch_size` reported by the config handler (perf_analyzer replaces the first dim of
# every metadata shape by `-b` when it is > 0).
MAX_BATCH_SIZE = 64

# ONNX element types the bench models use -> (V2 datatype, numpy dtype).
_ONNX_TYPES = {"tensor(float)": ("FP32", np.float32)}

# name -> Triton-style ModelConfig dict of every loaded OnnxModel. The config route has the same
# path template for every model and the first registered route answers all of them, so the
# handler looks the model up here instead of using `self`. MLServer re-imports (importlib.reload)
# this module for every model it loads, which re-runs this file in the same module dict: keep
# the existing dict so that all models share it (a class attribute would not survive).
try:
    _CONFIGS  # type: ignore[used-before-def]
except NameError:
    _CONFIGS: Dict[str, dict] = {}


class OnnxModel(MLModel):
    """One onnxruntime InferenceSession per model; inference runs in the event loop thread."""

    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self._inputs = self._session.get_inputs()
        self._output_names = [o.name for o in self._session.get_outputs()]
        _CONFIGS[self.name] = self._model_config()
        return True

    async def unload(self) -> bool:
        _CONFIGS.pop(self.name, None)
        self._session = None
        return True

    def _model_config(self) -> dict:
        """Triton ModelConfig (JSON, proto field names) with the batch dim stripped from dims."""

        def tensors(values):
            out = []
            for v in values:
                dtype = _ONNX_TYPES.get(v.type, ("FP32", None))[0]
                dims = [d if isinstance(d, int) else -1 for d in v.shape[1:]]
                out.append({"name": v.name, "data_type": f"TYPE_{dtype}", "dims": dims})
            return out

        return {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": MAX_BATCH_SIZE,
            "input": tensors(self._session.get_inputs()),
            "output": tensors(self._session.get_outputs()),
        }

    @custom_handler(rest_path="/v2/models/{model_name}/config", rest_method="GET")
    async def model_config(self, model_name: str) -> dict:
        """GET /v2/models/{m}/config for perf_analyzer."""
        config = _CONFIGS.get(model_name)
        if config is None:
            raise ModelNotFound(model_name)
        return config

    @custom_handler(rest_path="/v2/models/{model_name}/versions/{model_version}/config", rest_method="GET")
    async def model_version_config(self, model_name: str, model_version: str) -> dict:
        """Same, with a version in the path (a single version is served; any is accepted)."""
        return await self.model_config(model_name)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {}
        for meta in self._inputs:
            req = next((i for i in payload.inputs if i.name == meta.name), None)
            if req is None:
                raise InferenceError(f"missing input '{meta.name}'")
            dtype = _ONNX_TYPES.get(meta.type, (None, np.float32))[1]
            # JSON tensor data arrives as a flat (or nested) list; reshape to the request shape.
            data = req.data.root if hasattr(req.data, "root") else req.data
            try:
                feeds[meta.name] = np.asarray(data, dtype=dtype).reshape(req.shape)
            except ValueError as e:
                raise InferenceError(f"input '{meta.name}': {e}")

        results = self._session.run(self._output_names, feeds)

        wanted = {o.name for o in payload.outputs} if payload.outputs else None
        outputs = [
            # No `parameters`: see the module docstring.
            ResponseOutput(name=name, shape=list(arr.shape), datatype="FP32", data=arr.ravel().tolist())
            for name, arr in zip(self._output_names, results)
            if wanted is None or name in wanted
        ]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
