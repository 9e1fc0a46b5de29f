"""Sampler quality over many seeds, without servers: Trainyard's samplers in-process
(`crates/tune/examples/regret.rs`) against Optuna's, on Rosenbrock-10D, regret after 50 and
100 trials. `bench/tune/run.sh` measures the same through the REST API with fewer seeds;
this answers whether a gap seen there is the samplers or chance.

    python bench/tune/regret.py --first-seed 1000 --seeds 4000 --out DIR   # runs both sides
    python bench/tune/regret.py --summarize DIR

Optuna's side uses `TPESampler(seed=s)` (its defaults) and `RandomSampler(seed=s)` with the
space declared up front (`study.ask(distributions)`), as `bench.py` does.
"""

import argparse
import json
import math
import multiprocessing
import os
import pathlib
import subprocess

import numpy as np

DIMS = 10
TRIALS = 100


def rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def optuna_study(args: tuple[str, int]) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kind, seed = args
    sampler = optuna.samplers.TPESampler(seed=seed) if kind == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    names = [f"x{i + 1}" for i in range(DIMS)]
    dists = {n: optuna.distributions.FloatDistribution(-2.048, 2.048) for n in names}
    study = optuna.create_study(direction="minimize", sampler=sampler)
    best, at_50 = math.inf, math.nan
    for n in range(TRIALS):
        trial = study.ask(dists)
        y = rosenbrock(np.array([trial.params[k] for k in names]))
        study.tell(trial, y)
        best = min(best, y)
        if n + 1 == 50:
            at_50 = best
    return {"side": "optuna", "sampler": kind, "seed": seed, "regret_50": at_50, "regret_100": best,
            "optuna_version": optuna.__version__}


def run(a) -> None:
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    root = pathlib.Path(__file__).resolve().parents[2]
    with open(out / "trainyard.jsonl", "w") as f:
        subprocess.run(["cargo", "run", "--quiet", "--release", "-p", "trainyard-tune", "--example", "regret", "--",
                        str(a.first_seed), str(a.seeds)], cwd=root, stdout=f, check=True)
    jobs = [(kind, s) for s in range(a.first_seed, a.first_seed + a.seeds) for kind in ("tpe", "random")]
    with multiprocessing.Pool(a.workers) as pool, open(out / "optuna.jsonl", "w") as f:
        for rec in pool.imap(optuna_study, jobs, chunksize=8):
            f.write(json.dumps(rec) + "\n")


def mann_whitney_p(x: list[float], y: list[float]) -> float:
    """Two-sided Mann-Whitney U, normal approximation (no ties among continuous regrets)."""
    n1, n2 = len(x), len(y)
    ranks = np.argsort(np.argsort(np.concatenate([x, y]))) + 1
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    z = (u - n1 * n2 / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return math.erfc(abs(z) / math.sqrt(2))


def summarize(out: pathlib.Path, blocks: int) -> str:
    recs = [json.loads(line) for name in ("trainyard.jsonl", "optuna.jsonl") for line in open(out / name)]
    # Only seeds both sides finished with both samplers (a run stopped early compares a prefix).
    done = {}
    for r in recs:
        done.setdefault(r["seed"], set()).add((r["side"], r["sampler"]))
    seeds = sorted(s for s, have in done.items() if len(have) == 4)
    recs = [r for r in recs if r["seed"] in set(seeds)]
    lines = [f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}), Rosenbrock-10D, median [25th, 75th]; "
             "ratio < 1: Trainyard lower regret; p: two-sided Mann-Whitney U",
             "| sampler | trials | Trainyard | Optuna | ratio | p |", "|---|--:|--:|--:|--:|--:|"]
    for kind in ("tpe", "random"):
        for k in (50, 100):
            col = f"regret_{k}"
            ty = [r[col] for r in recs if r["side"] == "trainyard" and r["sampler"] == kind]
            op = [r[col] for r in recs if r["side"] == "optuna" and r["sampler"] == kind]
            q = lambda v: np.percentile(v, [50, 25, 75])  # noqa: E731
            a, b = q(ty), q(op)
            lines.append(f"| {kind} | {k} | {a[0]:.4g} [{a[1]:.4g}, {a[2]:.4g}] | {b[0]:.4g} [{b[1]:.4g}, {b[2]:.4g}] "
                         f"| {a[0] / b[0]:.3f} | {mann_whitney_p(ty, op):.3g} |")
    lines.append("")
    lines.append(f"TPE at 100 trials by blocks of {len(seeds) // blocks} seeds (ratio of medians):")
    per = len(seeds) // blocks
    for i in range(blocks):
        block = set(seeds[i * per:(i + 1) * per])
        ty = [r["regret_100"] for r in recs if r["side"] == "trainyard" and r["sampler"] == "tpe" and r["seed"] in block]
        op = [r["regret_100"] for r in recs if r["side"] == "optuna" and r["sampler"] == "tpe" and r["seed"] in block]
        lines.append(f"- seeds {min(block)}-{max(block)}: {np.median(ty) / np.median(op):.3f} "
                     f"(p {mann_whitney_p(ty, op):.3g})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--out", default="bench/tune/results/regret")
    ap.add_argument("--summarize", metavar="DIR")
    a = ap.parse_args()
    if not a.summarize:
        run(a)
    print(summarize(pathlib.Path(a.summarize or a.out), a.blocks))


if __name__ == "__main__":
    main()
