"""Turns one bench/serving run (perf_analyzer CSVs, cold-load and in-process JSON lines)
into a Markdown summary with the ratios the issue asks about.

    python summarize.py RESULTS_DIR
"""
import csv
import glob
import json
import os
import sys


def main():
    out = sys.argv[1]
    rows = {}  # (server, model, protocol, concurrency) -> (throughput, p50 us, p99 us)
    for path in glob.glob(os.path.join(out, "pa-*.csv")):
        _, server, model, proto = os.path.basename(path)[:-4].split("-")
        with open(path) as f:
            for r in csv.DictReader(f):
                rows[(server, model, proto, int(r["Concurrency"]))] = (
                    float(r["Inferences/Second"]), float(r["p50 latency"]), float(r["p99 latency"]))
    limit = {}
    for line in open(os.path.join(out, "ort.jsonl")):
        r = json.loads(line)
        limit[(r["model"], r["concurrency"])] = (r["throughput"], r["p50_us"], r["p99_us"])

    def cell(v):
        return f"{v[0]:,.0f}/s · {v[1] / 1000:.2f} · {v[2] / 1000:.2f}" if v else "—"

    print(open(os.path.join(out, "machine.txt")).read())
    print("Throughput · p50 ms · p99 ms (perf_analyzer, batch 1). Trainyard and Triton: binary "
          "tensors over HTTP; MLServer: JSON (it has no binary tensors, and no gRPC ModelConfig "
          "for perf_analyzer).\n")
    print("| model | protocol | c | Trainyard | Triton 2.51 | MLServer 1.7.1 | ORT in-process | "
          "Trainyard ÷ Triton: throughput, p99 | Trainyard ÷ ORT |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in ("mlp", "cnn"):
        for proto in ("http", "grpc"):
            for c in (1, 8):
                ty = rows.get(("trainyard", model, proto, c))
                tr = rows.get(("triton", model, proto, c))
                ml = rows.get(("mlserver", model, proto, c))
                lim = limit.get((model, c))
                ratio = f"{ty[0] / tr[0]:.2f}×, {ty[2] / tr[2]:.2f}×" if ty and tr else "—"
                of_limit = f"{ty[0] / lim[0]:.0%}" if ty and lim else "—"
                print(f"| {model} | {proto} | {c} | {cell(ty)} | {cell(tr)} | {cell(ml)} | "
                      f"{cell(lim)} | {ratio} | {of_limit} |")
    print("\nCold load, median over cycles (ms)\n")
    print("| server | model | unload returns | load returns | first infer | load → first answer |")
    print("|---|---|---|---|---|---|")
    cold = os.path.join(out, "cold.jsonl")
    if os.path.exists(cold):
        for line in open(cold):
            r = json.loads(line)
            name = r["server"] + (" (on demand: no load call)" if r.get("on_demand") else "")
            print(f"| {name} | {r['model']} | {r['unload_ms']:.1f} | {r['load_ms']:.1f} | "
                  f"{r['first_infer_ms']:.1f} | {r['load_to_first_answer_ms']:.1f} |")


if __name__ == "__main__":
    main()
