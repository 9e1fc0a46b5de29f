"""Replays ASHA rules over the curves a full-budget study recorded, without training again.

bench/tune/asha_digits.sh keeps each full-budget trial's test accuracy after every epoch
(`full-trials.json`: step e is the evaluation after epoch e + 1). The engine trains deterministically and an ASHA promotion resumes
from the previous rung's checkpoint, so an ASHA trial's value at a rung of r epochs is the
full-budget trial's value after epoch r: checked against the real ASHA studies of the same
results folders. This script runs the controller's rule (one trial at a time: a paused
trial in the top 1/η of those that reached its rung is promoted, the highest rung first,
else the next configuration starts at the bottom rung) for each (η, min_resource) and
prints the best final accuracy against the full budget's and the epochs saved.

What it does not model: a study that minimises (accuracy is maximised here), Hyperband's
brackets, more than one trial at a time, failed trials, and folders whose studies trained
different numbers of epochs (the fewest is used for all).

    python3 bench/tune/asha_replay.py bench/tune/results/asha81-min3-seed1 [more folders]
"""
import json
import pathlib
import sys


def rungs(low, high, eta):
    out, r = [], low
    while r < high:
        out.append(r)
        r *= eta
    return out + [high]


def replay(curves, low, high, eta):
    """curves[n][e] = trial n's accuracy after epoch e + 1. Returns (best final, epochs)."""
    levels = rungs(low, high, eta)
    top = len(levels) - 1
    reached = []  # per trial: the index of the highest rung it has run

    def value(n, k):
        return curves[n][levels[k] - 1]

    while True:
        best = None
        for n, k in enumerate(reached):
            if k == top:
                continue
            competing = sorted((value(m, k) for m, j in enumerate(reached) if j >= k), reverse=True)
            keep = len(competing) // eta
            if keep == 0 or value(n, k) < competing[keep - 1]:
                continue
            key = (k, value(n, k), -n)
            if best is None or key > best[0]:
                best = (key, n)
        if best is not None:
            reached[best[1]] += 1
        elif len(reached) < len(curves):
            reached.append(0)
        else:
            break
    finals = [value(n, top) for n, k in enumerate(reached) if k == top]
    return max(finals, default=None), sum(levels[k] for k in reached)


def main():
    folders = [pathlib.Path(a) for a in sys.argv[1:]]
    studies = []
    for folder in folders:
        shown = json.loads((folder / "full-trials.json").read_text())
        curves = []
        for t in sorted(shown["trials"], key=lambda t: t["number"]):
            # Steps 0 … E−1 are the epochs' evaluations; step E, the last, is the final report.
            by_step = dict(t["intermediate"])
            curves.append([by_step[s] for s in range(max(by_step))])
        studies.append((folder.name, curves, shown["study"]["best"]["value"]))
    high = min(len(c) for _, curves, _ in studies for c in curves)
    print(f"| η | min_resource | " + " | ".join(f"{name}: accuracy Δ, epochs saved" for name, _, _ in studies) + " |")
    print("|--:|--:|" + "--|" * len(studies))
    for eta in (2, 3, 4, 5):
        for low in range(1, 7):
            cells = []
            for _, curves, full_best in studies:
                best, epochs = replay(curves, low, high, eta)
                saved = f"{high * len(curves) / epochs:.2f}×"
                cells.append(f"no trial reaches {high}, {saved}" if best is None else f"{best - full_best:+.4f}, {saved}")
            print(f"| {eta} | {low} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
