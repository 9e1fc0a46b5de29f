#!/usr/bin/env python3
"""PyTorch side of the Trainyard training benchmark.

Trains an MLP or the PyTorch-MNIST-example CNN on synthetic, pre-generated
in-memory data (fixed seed) and prints ONE JSON line with the throughput of
the timed steps. Each step = forward + cross-entropy + backward + Adam step +
zero_grad. Data loading costs nothing: batches are sliced in order from a
tensor that already lives on the target device, wrapping at the end.

Example:
  pytorch_train.py --model mlp --device cpu --threads 2 --steps 4000
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DATASET_SIZE = 8192
NUM_CLASSES = 10
SEED = 0
DEFAULT_BATCH = {"mlp": 128, "cnn": 64}


def build_model(name: str) -> nn.Module:
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
    if name == "cnn":
        # The net from pytorch/examples mnist/main.py.
        return nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(9216, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, 10),
        )
    raise ValueError(f"unknown model {name!r}")


def input_shape(name: str):
    return (784,) if name == "mlp" else (1, 28, 28)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "cnn"], required=True)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=2,
                   help="torch.set_num_threads(N); interop threads fixed at 1")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default 128 for mlp, 64 for cnn)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps (default 4000 for mlp, 150 for cnn: ~15 s each on 2 CPU threads)")
    p.add_argument("--warmup", type=int, default=10, help="untimed warmup steps")
    a = p.parse_args(argv)
    if a.batch is None:
        a.batch = DEFAULT_BATCH[a.model]
    if a.steps is None:
        a.steps = 4000 if a.model == "mlp" else 150
    if a.threads < 1 or a.batch < 1 or a.steps < 1 or a.warmup < 0:
        p.error("--threads, --batch, --steps must be >= 1 and --warmup >= 0")
    if a.batch > DATASET_SIZE:
        p.error(f"--batch must be <= {DATASET_SIZE}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    # Interop threads must be set before any parallel work starts.
    torch.set_num_interop_threads(1)
    torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    dev = torch.device(a.device)

    torch.manual_seed(SEED)
    model = build_model(a.model).to(dev)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    gen = torch.Generator().manual_seed(SEED)
    xs = torch.randn((DATASET_SIZE, *input_shape(a.model)), generator=gen).to(dev)
    ys = torch.randint(0, NUM_CLASSES, (DATASET_SIZE,), generator=gen).to(dev)

    cursor = 0

    def next_batch():
        nonlocal cursor
        if cursor + a.batch > DATASET_SIZE:
            cursor = 0  # wrap; drop the ragged tail so every batch is full-size
        x = xs[cursor:cursor + a.batch]
        y = ys[cursor:cursor + a.batch]
        cursor += a.batch
        return x, y

    def step():
        x, y = next_batch()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        step()
    sync()

    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - t0
    final_loss = float(loss.item())  # after the clock: .item() would sync on cuda

    print(json.dumps({
        "framework": "pytorch",
        "model": a.model,
        "device": a.device,
        "threads": a.threads,
        "batch": a.batch,
        "steps": a.steps,
        "warmup_steps": a.warmup,
        "samples_per_s": round(a.batch * a.steps / elapsed, 2),
        "elapsed_s": round(elapsed, 4),
        "final_loss": round(final_loss, 6),
        "torch": torch.__version__,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
