"""One bench/models run as Markdown: export times and /v2 throughput of the engine's file
against PyTorch's.

    python summarize.py RESULTS_DIR
"""
import csv
import glob
import json
import os
import re
import statistics
import sys


def main():
    out = sys.argv[1]
    print(open(os.path.join(out, "machine.txt")).read())
    train = open(os.path.join(out, "train.log")).read()
    ours = re.search(r"exported model/model\.onnx \(opset 17\) in ([0-9.]+) ms: (\w+)", train)
    torch = json.loads(open(os.path.join(out, "torch_export.json")).read().strip().splitlines()[-1])
    print("| export | time |\n|---|---|")
    if ours:
        print(f"| Trainyard (graph, encode, check on {ours.group(2)} against the engine) | {float(ours.group(1)):.1f} ms |")
    print(f"| {torch['exporter']}, median of 5 | {torch['median_ms']:.1f} ms |\n")
    print(open(os.path.join(out, "same_outputs.txt")).read())
    rows = {}  # (model, protocol, concurrency) -> [(throughput, p50 us, p99 us) per round]
    for path in sorted(glob.glob(os.path.join(out, "pa-*-r*.csv"))):
        name = os.path.basename(path)[3:-4]
        model, proto, _round = name.rsplit("-", 2)
        for r in csv.DictReader(open(path)):
            rows.setdefault((model, proto, int(r["Concurrency"])), []).append(
                (float(r["Inferences/Second"]), float(r["p50 latency"]), float(r["p99 latency"])))

    def cell(runs):
        if not runs:
            return "—"
        tput = sorted(r[0] for r in runs)
        p99 = statistics.median(r[2] for r in runs) / 1000
        return f"{statistics.median(tput):,.0f}/s ({tput[0]:,.0f}–{tput[-1]:,.0f}) · p99 {p99:.2f}"

    rounds = max((len(v) for v in rows.values()), default=0)
    print(f"Throughput, median of {rounds} rounds (range) · median p99 ms (perf_analyzer, batch 1, "
          "ONNX Runtime; the two models' order swapped every round):\n")
    print("| protocol | c | engine-trained | PyTorch-exported | engine ÷ PyTorch (medians) |")
    print("|---|---|---|---|---|")
    for proto in ("http", "grpc"):
        for c in (1, 8):
            a, b = rows.get(("digits-cnn", proto, c)), rows.get(("digits-cnn-torch", proto, c))
            ratio = (f"{statistics.median(r[0] for r in a) / statistics.median(r[0] for r in b):.2f}×"
                     if a and b else "—")
            print(f"| {proto} | {c} | {cell(a)} | {cell(b)} | {ratio} |")


if __name__ == "__main__":
    main()
