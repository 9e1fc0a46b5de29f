"""Cold-load time over HTTP: unload → load → first answer, repeated; medians in ms.

    python cold_load.py URL MODEL CYCLES [TOKEN] [--on-demand]  ->  one JSON line

Uses the repository extension (POST /v2/repository/models/{m}/unload|load) and a JSON
infer, as any client would; the load call is timed until it returns, then the first infer.
With --on-demand there is no load call: the first infer after the unload loads the model
(Trainyard's default control mode).
"""
import json
import sys
import time
import urllib.request

import numpy as np


def call(url, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else b"{}"
    req = urllib.request.Request(url + path, data=data, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def main():
    url, model, cycles = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3])
    on_demand = "--on-demand" in sys.argv
    rest = [a for a in sys.argv[4:] if a != "--on-demand"]
    token = rest[0] if rest else None
    shape = [1, 784] if model == "mlp" else [1, 1, 28, 28]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    request = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                           "data": x.flatten().tolist()}]}
    unload, load, first, total = [], [], [], []
    for _ in range(cycles):
        t0 = time.perf_counter()
        call(url, f"/v2/repository/models/{model}/unload", token=token)
        t1 = time.perf_counter()
        # Wait until the server says it is gone (Triton unloads asynchronously).
        for _ in range(600):
            try:
                urllib.request.urlopen(urllib.request.Request(f"{url}/v2/models/{model}/ready"), timeout=5)
            except urllib.error.HTTPError:
                break
            time.sleep(0.01)
        t2 = time.perf_counter()
        if not on_demand:
            call(url, f"/v2/repository/models/{model}/load", token=token)
        t3 = time.perf_counter()
        call(url, f"/v2/models/{model}/infer", request, token=token)
        t4 = time.perf_counter()
        unload.append(t1 - t0)
        load.append(t3 - t2)
        first.append(t4 - t3)
        total.append(t4 - t2)
    med = lambda v: float(np.median(v) * 1e3)
    print(json.dumps({"model": model, "cycles": cycles, "on_demand": on_demand, "unload_ms": med(unload), "load_ms": med(load),
                      "first_infer_ms": med(first), "load_to_first_answer_ms": med(total)}))


if __name__ == "__main__":
    main()
