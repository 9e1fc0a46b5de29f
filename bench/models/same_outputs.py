"""Both versions answer the same inputs with the same outputs (within 1e-4 of their scale),
so the throughput comparison is between two files of one network.

    python same_outputs.py HOST:PORT MODEL_A MODEL_B
"""
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    url, a, b = sys.argv[1:4]
    client = httpclient.InferenceServerClient(url)
    x = np.random.default_rng(7).uniform(-2, 2, (16, 1, 8, 8)).astype(np.float32)
    outs = []
    for model in (a, b):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        outs.append(client.infer(model, [inp]).as_numpy("output"))
    scale = max(1.0, float(np.abs(outs[0]).max()))
    diff = float(np.abs(outs[0] - outs[1]).max())
    print(f"{a} vs {b}: max |Δ| {diff:.2e} at output scale {scale:.2f}")
    if diff > 1e-4 * scale:
        sys.exit("the two files do not compute the same network")


if __name__ == "__main__":
    main()
