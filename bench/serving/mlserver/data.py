"""Writes the perf_analyzer input data files shared by every server in the serving bench.

    python data.py OUTDIR   ->  OUTDIR/mlp.json (input [784]), OUTDIR/cnn.json (input [1,28,28])

Format: {"data": [{"input": {"content": [...floats...], "shape": [...]}}]} (one sample, batch dim
left out; perf_analyzer adds it). Values are uniform in [0, 1) from a fixed seed, so the files are
identical on every run and always finite (`--input-data random` can produce NaN with JSON tensors).
Only the standard library is used, so any Python can run it.
"""
import json
import os
import random
import sys

SHAPES = {"mlp": [784], "cnn": [1, 28, 28]}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    for name, shape in SHAPES.items():
        rng = random.Random(1234)
        n = 1
        for d in shape:
            n *= d
        content = [round(rng.random(), 6) for _ in range(n)]
        with open(os.path.join(outdir, f"{name}.json"), "w") as f:
            json.dump({"data": [{"input": {"content": content, "shape": shape}}]}, f)
        print(f"{outdir}/{name}.json: input {shape}")


if __name__ == "__main__":
    main()
