#!/usr/bin/env python3
"""Tiny PyTorch training job for measuring `trainyard run` wrapper overhead.

Compare:
  python overhead_script.py --steps N
  trainyard run -- python overhead_script.py --steps N

Trains the benchmark MLP (784-256-128-10, Adam lr=1e-3, batch 128) on
synthetic in-memory data with a fixed seed and 2 intra-op threads. Prints
`loss=<v> step=<n>` every 50 steps (flushed, so a wrapper that captures or
forwards stdout sees the real line rate) and its own wall time at the end.
"""
import argparse
import time

T_START = time.perf_counter()  # before importing torch: import cost is part of the job

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6000)  # ~20-27 s bare on 2 idle cores
    p.add_argument("--log-every", type=int, default=50)
    a = p.parse_args()

    t_imported = time.perf_counter()
    torch.set_num_interop_threads(1)
    torch.set_num_threads(2)
    torch.manual_seed(0)

    model = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(),
        nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n, batch = 8192, 128
    xs = torch.randn(n, 784)
    ys = torch.randint(0, 10, (n,))

    cursor = 0
    t_train = time.perf_counter()
    for step in range(1, a.steps + 1):
        if cursor + batch > n:
            cursor = 0
        x, y = xs[cursor:cursor + batch], ys[cursor:cursor + batch]
        cursor += batch
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % a.log_every == 0:
            print(f"loss={loss.item():.6f} step={step}", flush=True)

    t_end = time.perf_counter()
    print(f"wall_s={t_end - T_START:.3f} import_s={t_imported - T_START:.3f} "
          f"train_s={t_end - t_train:.3f} steps={a.steps}", flush=True)


if __name__ == "__main__":
    main()
