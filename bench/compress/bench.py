"""Compares Trainyard's compressed files with onnxruntime.quantization's on the same parent
and rows.

Reads DIR/parent.onnx (the FP32 parent), dynamic.onnx, static.onnx (MinMax per tensor),
static-pc.onnx (MinMax per channel), entropy-pc.onnx (Entropy per channel) and, when present,
pruned.onnx (half the channels, structured) and finetuned.onnx (it, fine-tuned 3 epochs;
ONNX Runtime has no pruning to compare), DIR/calibration.{x,y}.npy and DIR/eval.{x,y}.npy;
writes ONNX Runtime's quantize_dynamic / quantize_static files for the same methods, then
measures accuracy, file size and latency p50 at batch 1 and 32 (ONNX Runtime, one intra-op
thread, 7 rounds; median and spread) for each, and how far each file's outputs are from
the parent's on every row the bench has (evaluation and calibration rows): one test row is a
third of a point on the digits, so accuracy alone cannot tell two 8-bit files apart. Prints
Markdown.
"""
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_dynamic, quantize_static)

out = sys.argv[1]
label = sys.argv[2] if len(sys.argv) > 2 else out
cal_x = np.load(f"{out}/calibration.x.npy")
ev_x, ev_y = np.load(f"{out}/eval.x.npy"), np.load(f"{out}/eval.y.npy")
parent = f"{out}/parent.onnx"
all_x = np.concatenate([ev_x, cal_x])


class Rows(CalibrationDataReader):
    def __init__(self):
        # The job feeds 256-row batches; the ranges do not depend on how rows are batched.
        self.batches = iter([{"input": cal_x[i:i + 256]} for i in range(0, len(cal_x), 256)])

    def get_next(self):
        return next(self.batches, None)


def ort_static(path, per_channel, method):
    quantize_static(parent, path, Rows(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=per_channel, calibrate_method=method)


# ONNX Runtime's recommended pre-processing (its graph optimizer folds batch norms and
# constant arithmetic into convolutions, then shape inference) before its tool, as a further
# row: what a user following its documentation gets.
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

quant_pre_process(parent, f"{out}/parent-preprocessed.onnx", skip_symbolic_shape=True)
quantize_dynamic(parent, f"{out}/ort-dynamic.onnx", weight_type=QuantType.QInt8)
ort_static(f"{out}/ort-static.onnx", False, CalibrationMethod.MinMax)
ort_static(f"{out}/ort-static-pc.onnx", True, CalibrationMethod.MinMax)
ort_static(f"{out}/ort-entropy-pc.onnx", True, CalibrationMethod.Entropy)
quantize_static(f"{out}/parent-preprocessed.onnx", f"{out}/ort-pre-static-pc.onnx", Rows(),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, per_channel=True,
                calibrate_method=CalibrationMethod.MinMax)

rows = [
    ("FP32 parent", "—", "parent.onnx"),
    ("dynamic int8", "trainyard", "dynamic.onnx"),
    ("dynamic int8", "onnxruntime", "ort-dynamic.onnx"),
    ("static MinMax, per tensor", "trainyard", "static.onnx"),
    ("static MinMax, per tensor", "onnxruntime", "ort-static.onnx"),
    ("static MinMax, per channel", "trainyard", "static-pc.onnx"),
    ("static MinMax, per channel", "onnxruntime", "ort-static-pc.onnx"),
    ("static MinMax, per channel", "onnxruntime after quant_pre_process", "ort-pre-static-pc.onnx"),
    ("static Entropy, per channel", "trainyard", "entropy-pc.onnx"),
    ("static Entropy, per channel", "onnxruntime", "ort-entropy-pc.onnx"),
    ("structured pruning 50 %", "trainyard", "pruned.onnx"),
    ("structured pruning 50 % + 3 epochs fine-tuning", "trainyard", "finetuned.onnx"),
]
rows = [r for r in rows if os.path.exists(f"{out}/{r[2]}")]


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def measure(path):
    try:
        s = session(path)
    except Exception as e:  # a file ONNX Runtime cannot load is a result too
        return {"error": str(e).splitlines()[0][:120]}
    logits = s.run(None, {"input": ev_x})[0]
    accuracy = float((logits.argmax(1) == ev_y).mean())
    every = s.run(None, {"input": all_x})[0]
    lat = {}
    for batch, calls in ((1, 300), (32, 100)):
        x = ev_x[:batch]
        for _ in range(20):
            s.run(None, {"input": x})
        rounds = []
        for _ in range(7):
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                s.run(None, {"input": x})
                times.append(time.perf_counter() - t)
            rounds.append(statistics.median(times) * 1e3)
        lat[batch] = (statistics.median(rounds), min(rounds), max(rounds))
    return {"accuracy": accuracy, "bytes": os.path.getsize(path), "latency": lat, "outputs": every}


results = [(m, tool, f, measure(f"{out}/{f}")) for m, tool, f in rows]
base = results[0][3]
print(f"**{label}**: ONNX Runtime {ort.__version__}; {len(ev_y)} evaluation rows, {len(cal_x)} calibration rows; "
      "latency p50 per call, median of 7 rounds [min–max], one thread\n")
print("| method | tool | accuracy | size (bytes) | × smaller | p50 batch 1 (ms) | p50 batch 32 (ms) | batch 32 vs FP32 |")
print("|---|---|---|---|---|---|---|---|")
for m, tool, f, r in results:
    if "error" in r:
        print(f"| {m} | {tool} | does not load: {r['error']} | | | | | |")
        continue
    l1, l32 = r["latency"][1], r["latency"][32]
    print(f"| {m} | {tool} | {r['accuracy']:.4f} | {r['bytes']:,} | {base['bytes'] / r['bytes']:.2f} | "
          f"{l1[0]:.3f} [{l1[1]:.3f}–{l1[2]:.3f}] | {l32[0]:.3f} [{l32[1]:.3f}–{l32[2]:.3f}] | "
          f"{base['latency'][32][0] / l32[0]:.2f}× |")

# Fidelity: the same files against the parent's outputs on every row (evaluation and
# calibration): rows whose top class changed, and the mean absolute output difference.
print(f"\nAgainst the FP32 parent on all {len(all_x)} rows (the {len(ev_y)} evaluation and "
      f"{len(cal_x)} calibration rows):\n")
print("| method | tool | rows whose top class differs | mean abs. output difference |")
print("|---|---|--:|--:|")
want = base["outputs"]
for m, tool, f, r in results[1:]:
    if "error" in r:
        continue
    got = r["outputs"]
    changed = int((got.argmax(1) != want.argmax(1)).sum())
    print(f"| {m} | {tool} | {changed} | {float(np.abs(got - want).mean()):.4f} |")
