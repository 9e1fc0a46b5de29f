"""The in-process limit: ONNX Runtime called directly from Python, no server, no network.

    python ort_limit.py REPO MODEL CONCURRENCY SECONDS  ->  one JSON line

One session (intra_op_num_threads=1, as the servers use), CONCURRENCY threads calling
run() on batch-1 inputs back to back (ONNX Runtime releases the GIL while it computes);
throughput and latency percentiles over SECONDS after a warm-up.
"""
import json
import os
import sys
import threading
import time

import numpy as np
import onnxruntime as ort


def main():
    repo, model, concurrency, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(os.path.join(repo, model, "1", "model.onnx"), opts,
                                   providers=["CPUExecutionProvider"])
    shape = (1, 784) if model == "mlp" else (1, 1, 28, 28)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(200):
        session.run(None, {"input": x})
    latencies = [[] for _ in range(concurrency)]
    stop = time.perf_counter() + seconds

    def worker(out):
        while time.perf_counter() < stop:
            t = time.perf_counter()
            session.run(None, {"input": x})
            out.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(latencies[i],)) for i in range(concurrency)]
    started = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    elapsed = time.perf_counter() - started
    all_l = np.array([v for l in latencies for v in l])
    print(json.dumps({
        "server": "onnxruntime in-process", "model": model, "protocol": "-", "concurrency": concurrency,
        "throughput": len(all_l) / elapsed,
        "p50_us": float(np.percentile(all_l, 50) * 1e6), "p99_us": float(np.percentile(all_l, 99) * 1e6),
    }))


if __name__ == "__main__":
    main()
