"""The digits CNN of examples/digits/cnn.toml as a PyTorch module, holding the weights the
engine trained (its safetensors export, PyTorch names and layouts), exported to ONNX by
torch.onnx.export; prints the export time (median of 5) as JSON.

    python torch_export.py WEIGHTS.safetensors OUT.onnx
"""
import json
import statistics
import sys
import time

import torch
from safetensors.torch import load_file
from torch import nn


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        # The engine's `cnn` architecture on a [1, 8, 8] input: conv 32, conv 64 (3×3,
        # padding 1, each with ReLU), max-pool 2, dropout, flatten, dense 128, dropout, 10.
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(128, 10),
        )

    def forward(self, x):
        return self.layers(x)


def main():
    weights, out = sys.argv[1], sys.argv[2]
    model = Cnn().eval()
    model.load_state_dict(load_file(weights), strict=True)
    example = torch.zeros(1, 1, 8, 8)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        torch.onnx.export(model, (example,), out, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=17, dynamo=False)
        times.append((time.perf_counter() - started) * 1e3)
    print(json.dumps({"exporter": f"torch.onnx.export (torch {torch.__version__}, TorchScript)",
                      "median_ms": statistics.median(times), "times_ms": times}))


if __name__ == "__main__":
    main()
