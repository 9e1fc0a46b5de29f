#!/usr/bin/env python3
"""Trainyard's studies (hyperparameter search) side by side with Optuna, in one run.

Three parts, each optional (--parts):

  quality  Sampler quality. Branin (2-D), Hartmann6 (6-D), Rosenbrock (10-D on
           [-2.048, 2.048]^10) and Hartmann6 with Gaussian noise (sd 0.1) on what the
           sampler sees. Per function, --seeds seeds x --trials trials for four samplers:
           trainyard-tpe / trainyard-random (a study over the REST API; this process asks
           for a trial, evaluates it and tells the value) and optuna-tpe / optuna-random
           (Optuna's own defaults, in-memory storage, ask/tell). Regret = best value found
           so far minus the known minimum, at half the trials and at all of them. On the
           noisy function the sampler's best is the trial with the best *observed* value and
           its regret is that trial's noiseless value minus the minimum (inference regret).
  timing   Per-ask sampler time as a study grows: one Hartmann6 TPE study per side run to
           --timing-trials (1,000; --no-long-timing stops at 100), median ask time over asks
           91-100 and 991-1000. Trainyard: wall time of `POST .../trials` (HTTP, the server's
           database and its sampler); Optuna: `study.ask()` with in-memory storage, and again
           with its RDB storage on SQLite.
  storage  Storage at scale: --storage-trials (10,000) random-sampler trials asked and told
           one by one, then `GET .../best` and the first page of 50 trials (20 reps each);
           Optuna the same on its RDB storage (SQLite file): `study.best_trial` and
           `study.get_trials(deepcopy=False)[:50]` through the study object that wrote them
           (Optuna's `_CachedStorage`), and through a fresh `RDBStorage` (no cache, as a second
           process or a dashboard would read them).

    bench.py --url http://127.0.0.1:18097 --token TOKEN --out DIR [--seeds 20] [--trials 100] ...
    bench.py --systems optuna --out DIR            # Optuna only, no server
    bench.py --summarize DIR                       # rebuild DIR/summary.md from DIR/results.jsonl

Every measurement is appended to DIR/results.jsonl as it finishes (one JSON object a line,
with every trial's values, so other statistics can be computed later); DIR/summary.md and
DIR/summary.json are built from that file alone, and the Markdown is printed at the end.
Runs into the same DIR add up (e.g. one part at a time); give each full run a fresh DIR, as
`run.sh` does. `run.sh` starts a fresh `trainyard up` and calls this with the venv's Python.
"""

from __future__ import annotations

import argparse
import http.client
import inspect
import json
import math
import os
import pathlib
import platform
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse
import warnings

import numpy as np

try:
    import optuna
except ImportError:  # the Trainyard side alone still works; --systems says which sides run
    optuna = None

# --------------------------------------------------------------------------- objectives


class Objective:
    """A test function on a box; `value` is noiseless, the sampler sees `value + noise`."""

    def __init__(self, name: str, dims: list[tuple[str, float, float]], fmin: float, fn, noise_sd: float = 0.0):
        self.name, self.dims, self.fmin, self.fn, self.noise_sd = name, dims, fmin, fn, noise_sd

    def value(self, params: dict) -> float:
        return float(self.fn(np.array([float(params[n]) for n, _, _ in self.dims])))

    def space(self) -> dict:
        return {n: {"type": "float", "low": lo, "high": hi} for n, lo, hi in self.dims}

    def check(self, params: dict) -> None:
        """A sampler that leaves the box would get an unfair (or unfairly bad) score: stop."""
        for n, lo, hi in self.dims:
            v = params.get(n)
            if not isinstance(v, (int, float)) or not (lo - 1e-9 <= v <= hi + 1e-9):
                raise SystemExit(f"{self.name}: sampler returned {n}={v!r}, outside [{lo}, {hi}] (params {params})")


def branin(x: np.ndarray) -> float:
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s


_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])


def hartmann6(x: np.ndarray) -> float:
    return float(-np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


def rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


# Known minima to full precision (the rounded ones, 0.397887 and -3.32237, would make regrets
# near the optimum slightly wrong or negative).
BRANIN_MIN = 5 / (4 * math.pi)  # 0.39788735772973816, at (-pi, 12.275), (pi, 2.275), (9.42478, 2.475)
HARTMANN6_MIN = -3.322368011415511  # at (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)

OBJECTIVES = {
    "branin": Objective("branin", [("x1", -5.0, 10.0), ("x2", 0.0, 15.0)], BRANIN_MIN, branin),
    "hartmann6": Objective("hartmann6", [(f"x{i + 1}", 0.0, 1.0) for i in range(6)], HARTMANN6_MIN, hartmann6),
    "rosenbrock10": Objective("rosenbrock10", [(f"x{i + 1}", -2.048, 2.048) for i in range(10)], 0.0, rosenbrock),
    "hartmann6-noisy": Objective("hartmann6-noisy", [(f"x{i + 1}", 0.0, 1.0) for i in range(6)], HARTMANN6_MIN,
                                 hartmann6, noise_sd=0.1),
}


def noise_rng(seed: int, obj: Objective) -> np.random.Generator:
    # The same noise sequence (by evaluation order) for every sampler with this seed, so the
    # sides differ only in where they sample.
    return np.random.default_rng([seed, 20261206, sorted(OBJECTIVES).index(obj.name)])


def observe(obj: Objective, params: dict, rng: np.random.Generator) -> tuple[float, float]:
    """(what the sampler is told, the noiseless value)."""
    true = obj.value(params)
    return (true + rng.normal(0.0, obj.noise_sd) if obj.noise_sd else true), true


def regret_at(observed: list[float], true: list[float], fmin: float, k: int) -> float:
    """Regret of the trial the sampler considers best (lowest observed value) among the first k."""
    i = int(np.argmin(observed[:k]))
    return max(0.0, true[i] - fmin)  # clamp float rounding at the optimum (~1e-16 below the minimum)


# ---------------------------------------------------------------------------- Trainyard


class TrainyardError(RuntimeError):
    pass


class Trainyard:
    """One keep-alive HTTP connection to the server, one call at a time (like a single worker)."""

    def __init__(self, url: str, token: str):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = None
        self.reset()

    def reset(self) -> None:
        # A new connection before each study (untimed): Optuna's runs between them can leave
        # this one idle for minutes, longer than a server may keep an idle connection.
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
        self.conn.connect()
        # http.client sends a request's headers and body in two writes; with Nagle on, the body
        # waits for the server's delayed ACK (~40 ms on loopback). urllib3/requests set NODELAY too.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, method: str, path: str, body=None, ok=(200, 201)):
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data, headers=self.headers)
        r = self.conn.getresponse()
        raw = r.read()
        if r.status not in ok:
            raise TrainyardError(f"{method} {path} -> {r.status}: {raw[:500].decode(errors='replace')}")
        return json.loads(raw) if raw else None


def study_spec(name: str, obj: Objective, sampler: dict, trials: int) -> dict:
    return {
        "name": name,
        "space": obj.space(),
        "objective": {"metric": "value", "direction": "minimize"},
        "sampler": sampler,
        "pruner": {"kind": "none"},
        "parallelism": 1,
        "budget": {"trials": trials},
        "trial": None,  # no job template: this process asks and tells
    }


def trainyard_run(ty: Trainyard, name: str, obj: Objective, sampler: dict, trials: int, seed: int) -> dict:
    """Create a study and ask/tell `trials` trials one at a time. Ask/tell times are client wall
    times including HTTP, the server's database and (for ask) its sampler, and JSON decoding."""
    ty.reset()
    rng = noise_rng(seed, obj)
    base = f"/api/v1/studies/{urllib.parse.quote(name)}"
    t0 = time.perf_counter()
    study = ty.call("POST", "/api/v1/studies", study_spec(name, obj, sampler, trials))
    observed, true, ask_s, tell_s = [], [], [], []
    for _ in range(trials):
        t = time.perf_counter()
        trial = ty.call("POST", f"{base}/trials")
        t1 = time.perf_counter()
        params = trial["params"]
        obj.check(params)
        y, f = observe(obj, params, rng)
        t2 = time.perf_counter()
        ty.call("PUT", f"{base}/trials/{trial['number']}", {"state": "complete", "value": y})
        t3 = time.perf_counter()
        observed.append(y)
        true.append(f)
        ask_s.append(t1 - t)
        tell_s.append(t3 - t2)
    wall = time.perf_counter() - t0
    return {"observed": observed, "true": true, "ask_s": ask_s, "tell_s": tell_s, "wall_s": wall,
            "server_sampler": (study.get("spec") or {}).get("sampler") if isinstance(study, dict) else None}


# ------------------------------------------------------------------------------- Optuna


def optuna_sampler(kind: str, seed: int):
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)  # Optuna's own defaults; see optuna_defaults()
    return optuna.samplers.RandomSampler(seed=seed)


def optuna_run(obj: Objective, kind: str, trials: int, seed: int, storage: str | None = None,
               study_name: str | None = None) -> dict:
    """Ask/tell with the search space declared up front (`ask(fixed_distributions)`), like a
    Trainyard study's `space`, so that `ask()` does all of the sampler's work for the trial."""
    rng = noise_rng(seed, obj)
    dists = {n: optuna.distributions.FloatDistribution(lo, hi) for n, lo, hi in obj.dims}
    t0 = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=optuna_sampler(kind, seed), storage=storage,
                                study_name=study_name)
    observed, true, ask_s, tell_s = [], [], [], []
    for _ in range(trials):
        t = time.perf_counter()
        trial = study.ask(dists)
        t1 = time.perf_counter()
        obj.check(trial.params)
        y, f = observe(obj, trial.params, rng)
        t2 = time.perf_counter()
        study.tell(trial, y)
        t3 = time.perf_counter()
        observed.append(y)
        true.append(f)
        ask_s.append(t1 - t)
        tell_s.append(t3 - t2)
    wall = time.perf_counter() - t0
    return {"observed": observed, "true": true, "ask_s": ask_s, "tell_s": tell_s, "wall_s": wall, "study": study}


def optuna_defaults() -> dict:
    """What `TPESampler(seed=s)` means in the installed Optuna: the signature's defaults and, for
    the arguments whose default is None, what they resolve to for a single-objective study."""
    sig = inspect.signature(optuna.samplers.TPESampler.__init__).parameters
    out = {"optuna_version": optuna.__version__,
           "signature_defaults": {k: repr(p.default) for k, p in sig.items() if k not in ("self", "seed")}}
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
    s = study.sampler
    resolved = {}
    # Private attributes: read defensively, they are not API and may move between versions.
    try:
        resolved["multivariate"] = bool(s._is_multivariate(study))
    except Exception as e:  # noqa: BLE001
        resolved["multivariate"] = f"unknown ({e!r})"
    for key, attr in [("constant_liar", "_constant_liar"), ("n_startup_trials", "_n_startup_trials"),
                      ("n_ei_candidates", "_n_ei_candidates"), ("group", "_group")]:
        resolved[key] = getattr(s, attr, "unknown")
    pe = getattr(s, "_parzen_estimator_parameters", None)
    for key in ("prior_weight", "consider_magic_clip", "consider_endpoints"):
        resolved[key] = getattr(pe, key, "unknown")
    gamma = getattr(s, "_gamma", None)
    try:
        from optuna.samplers._tpe.sampler import default_gamma
        resolved["gamma"] = ("default_gamma: " + inspect.getsource(default_gamma).strip().splitlines()[-1].strip()
                             if gamma is None else repr(gamma))
    except Exception:  # noqa: BLE001
        resolved["gamma"] = repr(gamma)
    out["resolved_single_objective"] = resolved
    return out


# ---------------------------------------------------------------------------- the parts


class Results:
    def __init__(self, out: pathlib.Path):
        self.path = out / "results.jsonl"
        self.f = self.path.open("a")

    def add(self, rec: dict) -> None:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def checkpoints(trials: int) -> list[int]:
    return sorted({max(1, trials // 2), trials})


def part_quality(a, ty: Trainyard | None, res: Results) -> None:
    cps = checkpoints(a.trials)
    for fname in a.functions:
        obj = OBJECTIVES[fname]
        for seed in range(a.seed_base, a.seed_base + a.seeds):
            for system in a.quality_systems:
                side, kind = system.split("-")
                if side == "trainyard":
                    r = trainyard_run(ty, f"{a.prefix}-q-{fname}-{kind}-s{seed}", obj,
                                      {"kind": kind, "seed": seed}, a.trials, seed)
                else:
                    r = optuna_run(obj, kind, a.trials, seed)
                reg = {str(k): regret_at(r["observed"], r["true"], obj.fmin, k) for k in cps}
                res.add({"kind": "quality", "function": fname, "system": system, "seed": seed, "trials": a.trials,
                         "regret": reg, "wall_s": r["wall_s"], "server_sampler": r.get("server_sampler"),
                         "observed": r["observed"], "true": r["true"], "ask_s": r["ask_s"]})
                log(f"quality {fname} seed {seed} {system}: regret@{cps[-1]} {reg[str(cps[-1])]:.4g} ({r['wall_s']:.1f} s)")


def windows(ask_s: list[float], trials: int) -> dict:
    """Median ask time over the 10 asks ending at trial 100 and at `trials` (asks 91-100, ...)."""
    out = {}
    for end in sorted({100, trials}):
        if end <= len(ask_s):
            out[f"{end - 9}-{end}"] = statistics.median(ask_s[end - 10:end])
    return out


def part_timing(a, ty: Trainyard | None, res: Results, tmp: pathlib.Path) -> None:
    n = a.timing_trials if a.long_timing else 100
    obj = OBJECTIVES["hartmann6"]
    seed = a.seed_base
    runs = []
    if ty is not None:
        runs.append(("trainyard", "POST /api/v1/studies/{name}/trials wall time: HTTP + server database + sampler",
                     lambda: trainyard_run(ty, f"{a.prefix}-timing-hartmann6-tpe", obj, {"kind": "tpe", "seed": seed},
                                           n, seed)))
    if optuna is not None and "optuna" in a.systems:
        runs.append(("optuna-inmemory", "study.ask() with in-memory storage",
                     lambda: optuna_run(obj, "tpe", n, seed)))
        url = f"sqlite:///{tmp / 'optuna-timing.db'}"
        runs.append(("optuna-sqlite", "study.ask() with RDBStorage on SQLite in a temp file (Optuna wraps it in "
                     "its _CachedStorage)",
                     lambda: optuna_run(obj, "tpe", n, seed, storage=url, study_name="timing")))
    for system, what, fn in runs:
        log(f"timing: {system}, {n} trials of hartmann6 TPE")
        r = fn()
        res.add({"kind": "timing", "system": system, "what": what, "function": "hartmann6", "sampler": "tpe",
                 "trials": n, "ask_median_s": windows(r["ask_s"], n), "tell_median_s": windows(r["tell_s"], n),
                 "wall_s": r["wall_s"], "server_sampler": r.get("server_sampler"),
                 "ask_s": r["ask_s"], "tell_s": r["tell_s"],
                 "regret": regret_at(r["observed"], r["true"], obj.fmin, n)})
        log(f"timing {system}: asks {windows(r['ask_s'], n)} ({r['wall_s']:.1f} s)")


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):  # no warm-up: the first call counts, it shows in the max
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def part_storage(a, ty: Trainyard | None, res: Results, tmp: pathlib.Path) -> None:
    n, obj = a.storage_trials, OBJECTIVES["hartmann6"]
    seed = a.seed_base
    if ty is not None:
        name = f"{a.prefix}-storage-random"
        log(f"storage: trainyard, {n} random trials")
        r = trainyard_run(ty, name, obj, {"kind": "random", "seed": seed}, n, seed)
        base = f"/api/v1/studies/{urllib.parse.quote(name)}"
        study = ty.call("GET", base)
        best_ms = [s * 1e3 for s in timed(lambda: ty.call("GET", f"{base}/best"), a.reps)]
        page_ms = [s * 1e3 for s in timed(lambda: ty.call("GET", f"{base}/trials?max_results=50"), a.reps)]
        # Check what came back: the best is the lowest value told, the page is trials 0-49.
        best = ty.call("GET", f"{base}/best")
        page = ty.call("GET", f"{base}/trials?max_results=50")
        checks = {
            "state_after": study.get("state"),
            "counts_after": study.get("counts"),
            "done_after_budget": study.get("state") == "done",
            "best_is_min_told": best.get("value") == min(r["observed"]),
            "page_numbers_0_49": [t["number"] for t in page.get("trials", [])] == list(range(min(50, n))),
            "page_has_next_token": (page.get("next_page_token") is not None) == (n > 50),
        }
        res.add({"kind": "storage", "system": "trainyard", "trials": n, "rate_per_s": n / r["wall_s"],
                 "wall_s": r["wall_s"], "best_ms": best_ms, "page_ms": page_ms, "checks": checks,
                 "what": "create + N x (POST ask, PUT tell) over one keep-alive connection; "
                         "GET times are client wall times incl. JSON decoding"})
        log(f"storage trainyard: {n / r['wall_s']:.1f} trials/s; best p50 {statistics.median(best_ms):.2f} ms; "
            f"page p50 {statistics.median(page_ms):.2f} ms; checks {checks}")
    if optuna is not None and "optuna" in a.systems:
        db = tmp / "optuna-storage.db"
        url = f"sqlite:///{db}"
        log(f"storage: optuna RDB ({url}), {n} random trials")
        r = optuna_run(obj, "random", n, seed, storage=url, study_name="storage")
        study = r["study"]
        cached_best = [s * 1e3 for s in timed(lambda: study.best_trial, a.reps)]
        cached_page = [s * 1e3 for s in timed(lambda: study.get_trials(deepcopy=False)[:50], a.reps)]
        # A fresh storage object: nothing cached, every call reads the database (what another
        # process, a dashboard, or a restarted driver sees).
        rdb = optuna.storages.RDBStorage(url)
        sid = rdb.get_study_id_from_name("storage")
        with rdb.engine.connect() as c:  # Optuna sets no pragmas; record what SQLite ran with
            sync = c.exec_driver_sql("PRAGMA synchronous").scalar()
            pragmas = {"journal_mode": c.exec_driver_sql("PRAGMA journal_mode").scalar(),
                       "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync)}
        fresh_best = [s * 1e3 for s in timed(lambda: rdb.get_best_trial(sid), a.reps)]
        fresh_page = [s * 1e3 for s in timed(lambda: rdb.get_all_trials(sid, deepcopy=False)[:50], a.reps)]
        checks = {
            "best_is_min_told": study.best_trial.value == min(r["observed"]) == rdb.get_best_trial(sid).value,
            "page_numbers_0_49": [t.number for t in rdb.get_all_trials(sid, deepcopy=False)[:50]]
            == list(range(min(50, n))),
        }
        res.add({"kind": "storage", "system": "optuna-sqlite", "trials": n, "rate_per_s": n / r["wall_s"],
                 "wall_s": r["wall_s"], "best_ms": cached_best, "page_ms": cached_page,
                 "fresh_best_ms": fresh_best, "fresh_page_ms": fresh_page, "checks": checks,
                 "db_bytes": db.stat().st_size, "sqlite_pragmas": pragmas, "what": f"create_study(storage='{url}') + N x (ask, tell); "
                 "best/page through the study object (_CachedStorage) and through a fresh RDBStorage"})
        log(f"storage optuna: {n / r['wall_s']:.1f} trials/s; best p50 {statistics.median(cached_best):.2f} ms "
            f"(fresh {statistics.median(fresh_best):.2f}); page p50 {statistics.median(cached_page):.2f} ms "
            f"(fresh {statistics.median(fresh_page):.2f}); checks {checks}")
        rdb.engine.dispose()


# ------------------------------------------------------------------------------ summary


def load(out: pathlib.Path) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]


def g(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def summarize(out: pathlib.Path) -> str:
    recs = load(out)
    metas = [r for r in recs if r["kind"] == "meta"]
    meta = metas[-1] if metas else {}
    summary: dict = {"quality": {}, "timing": {}, "storage": {}}
    md: list[str] = [f"# Trainyard studies vs Optuna ({meta.get('started', '?')})", ""]
    if meta:
        d = meta.get("optuna_tpe_defaults", {})
        res_ = d.get("resolved_single_objective", {})
        md += [f"**Machine:** {meta.get('machine', '?')}. **Trainyard:** {meta.get('trainyard', '?')}. "
               f"**Optuna** {d.get('optuna_version', '?')} (numpy {meta.get('numpy')}, scipy {meta.get('scipy')}, "
               f"Python {meta.get('python')}).",
               f"**Optuna `TPESampler(seed=s)` defaults, as resolved for these single-objective studies:** "
               + ", ".join(f"{k}={v}" for k, v in res_.items()) + ".",
               f"**Trainyard `{{\"kind\": \"tpe\", \"seed\": s}}`:** the server's own defaults; the server answered "
               f"the create with sampler {json.dumps(meta.get('trainyard_sampler_seen'))}. Trials here run one at a "
               "time, so constant liar (on by default on both sides) never comes into play.",
               f"**Run:** `{meta.get('argv', '')}`", ""]

    # --- quality
    q = [r for r in recs if r["kind"] == "quality"]
    if q:
        from scipy.stats import mannwhitneyu

        systems = [s for s in ["trainyard-tpe", "optuna-tpe", "trainyard-random", "optuna-random"]
                   if any(r["system"] == s for r in q)]
        fns = [f for f in OBJECTIVES if any(r["function"] == f for r in q)]
        nseeds = len({r["seed"] for r in q})
        md += ["## Sampler quality: regret of the best trial found (median [25th, 75th percentile])", "",
               f"{nseeds} seeds per cell. Regret = best value so far − known minimum; on `hartmann6-noisy` the sampler "
               "sees the value plus N(0, 0.1²) noise and the regret is the noiseless value of the trial with the best "
               "observed value. Lower is better. Ratio = Trainyard TPE median ÷ Optuna TPE median (< 1: Trainyard "
               "better); p = two-sided Mann-Whitney U over the seeds, Trainyard TPE vs Optuna TPE.", "",
               "| function | trials | " + " | ".join(systems) + " | TPE ratio | p |",
               "|---|--:|" + "--:|" * len(systems) + "--:|--:|"]
        for fname in fns:
            cps = sorted({int(k) for r in q if r["function"] == fname for k in r["regret"]})
            for k in cps:
                cells, med = [], {}
                vals_by = {}
                for s in systems:
                    v = [r["regret"][str(k)] for r in q if r["function"] == fname and r["system"] == s
                         and str(k) in r["regret"]]
                    vals_by[s] = v
                    if not v:
                        cells.append("—")
                        continue
                    med[s] = float(np.median(v))
                    lo, hi = np.percentile(v, [25, 75])
                    cells.append(f"{g(med[s])} [{g(float(lo))}, {g(float(hi))}]")
                    summary["quality"].setdefault(fname, {}).setdefault(str(k), {})[s] = {
                        "median": med[s], "q25": float(lo), "q75": float(hi), "n": len(v)}
                p = "—"
                a_, b_ = vals_by.get("trainyard-tpe"), vals_by.get("optuna-tpe")
                if a_ and b_ and len(a_) > 1 and len(b_) > 1:
                    p = f"{mannwhitneyu(a_, b_, alternative='two-sided').pvalue:.2g}"
                rt = ratio(med.get("trainyard-tpe"), med.get("optuna-tpe"))
                summary["quality"].setdefault(fname, {}).setdefault(str(k), {})["tpe_ratio"] = \
                    None if rt == "—" else float(rt)
                md.append(f"| {fname} | {k} | " + " | ".join(cells) + f" | {rt} | {p} |")
        md.append("")

    # --- timing
    t = [r for r in recs if r["kind"] == "timing"]
    if t:
        wins = sorted({w for r in t for w in r["ask_median_s"]}, key=lambda w: int(w.split("-")[0]))
        md += ["## Per-ask sampler time as the study grows (Hartmann6, TPE, one trial at a time)", "",
               "Median over the 10 asks in each window, milliseconds. Trainyard's time is the client's wall time of "
               "`POST /api/v1/studies/{name}/trials`: it includes HTTP, the server's database reads and writes and "
               "the sampler. Optuna's is `study.ask()` (its sampler and storage, in this process).", "",
               "| side | what is timed | " + " | ".join(f"ask, asks {w}" for w in wins)
               + " | " + " | ".join(f"tell, {w}" for w in wins) + " |",
               "|---|---|" + "--:|" * (2 * len(wins))]
        ty_t = next((r for r in t if r["system"] == "trainyard"), None)
        for r in t:
            cells = [g(r["ask_median_s"][w] * 1e3) if w in r["ask_median_s"] else "—" for w in wins]
            cells += [g(r["tell_median_s"][w] * 1e3) if w in r["tell_median_s"] else "—" for w in wins]
            md.append(f"| {r['system']} | {r['what']} | " + " | ".join(cells) + " |")
            summary["timing"][r["system"]] = {"ask_ms": {w: v * 1e3 for w, v in r["ask_median_s"].items()},
                                              "tell_ms": {w: v * 1e3 for w, v in r["tell_median_s"].items()}}
        if ty_t:
            for r in t:
                if r is ty_t:
                    continue
                parts = [f"asks {w}: {ratio(r['ask_median_s'][w], ty_t['ask_median_s'][w])}×"
                         for w in wins if w in r["ask_median_s"] and w in ty_t["ask_median_s"]]
                md.append(f"\n{r['system']} ask time ÷ Trainyard's: " + ", ".join(parts) + " (> 1: Trainyard faster).")
        md.append("")

    # --- storage
    st = {r["system"]: r for r in recs if r["kind"] == "storage"}
    if st:
        ty_s, op = st.get("trainyard"), st.get("optuna-sqlite")
        n = (ty_s or op)["trials"]
        md += [f"## Storage at scale: {n:,} random-sampler trials, asked and told one at a time", "",
               "Rate = trials ÷ (study creation to the last tell). Then 20 calls each (no warm-up), milliseconds "
               "median / max. Optuna on its RDB storage with SQLite in a temp file (as Optuna leaves it: "
               + ", ".join(f"`{k}={v}`" for k, v in (op or {}).get("sqlite_pragmas", {}).items())
               + "), read through the study object that wrote the trials (its `_CachedStorage`) and "
               "through a fresh `RDBStorage` (no cache: a second process or a dashboard). The speed-up column is "
               "Trainyard ÷ Optuna for the rate and Optuna ÷ Trainyard for the times (> 1: Trainyard faster), "
               "against the cached / the fresh Optuna reader.", "",
               "| metric | Trainyard (REST) | Optuna, study object | Optuna, fresh RDBStorage | Trainyard speed-up |",
               "|---|--:|--:|--:|--:|"]

        def mm(v):
            return f"{g(statistics.median(v))} / {g(max(v))}" if v else "—"

        def med(r, k):
            return statistics.median(r[k]) if r and r.get(k) else None

        rate_ty, rate_op = (ty_s or {}).get("rate_per_s"), (op or {}).get("rate_per_s")
        md.append(f"| create → done, trials/s | {g(rate_ty)} | {g(rate_op)} | — | {ratio(rate_ty, rate_op)}× |")
        for label, k, fk in [("best trial (`GET .../best`; `study.best_trial`), ms", "best_ms", "fresh_best_ms"),
                             ("first 50 trials (`GET .../trials?max_results=50`; `get_trials()[:50]`), ms",
                              "page_ms", "fresh_page_ms")]:
            md.append(f"| {label} | {mm((ty_s or {}).get(k))} | {mm((op or {}).get(k))} | {mm((op or {}).get(fk))} | "
                      f"{ratio(med(op, k), med(ty_s, k))}× / {ratio(med(op, fk), med(ty_s, k))}× |")
        for name, r in st.items():
            summary["storage"][name] = {"rate_per_s": r["rate_per_s"], "checks": r["checks"],
                                        **{k: {"median": statistics.median(r[k]), "max": max(r[k])}
                                           for k in ("best_ms", "page_ms", "fresh_best_ms", "fresh_page_ms") if k in r}}
        bad = {name: {k: v for k, v in r["checks"].items() if v is False} for name, r in st.items()}
        bad = {k: v for k, v in bad.items() if v}
        md.append("")
        md.append("Checks on what came back: " + ("**FAILED** " + json.dumps(bad) if bad else "all passed") + "; "
                  + "; ".join(f"{name}: {json.dumps(r['checks'])}" for name, r in st.items()) + ".")
        md.append("")

    text = "\n".join(md)
    (out / "summary.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return text


# --------------------------------------------------------------------------------- main


def machine() -> str:
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kb = int(next(ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs ({cpu}){mem}, {platform.platform()}, load average {load:.2f} at the start"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="Trainyard server, e.g. http://127.0.0.1:18097 (without it: Optuna only)")
    ap.add_argument("--token", default=os.environ.get("TRAINYARD_TOKEN"))
    ap.add_argument("--out", type=pathlib.Path, help="results dir (results.jsonl, summary.md, summary.json)")
    ap.add_argument("--summarize", type=pathlib.Path, metavar="DIR", help="only rebuild DIR's summary")
    ap.add_argument("--parts", default="quality,timing,storage")
    ap.add_argument("--systems", default="trainyard,optuna", help="trainyard, optuna or both")
    ap.add_argument("--functions", default="branin,hartmann6,rosenbrock10,hartmann6-noisy")
    ap.add_argument("--samplers", default="tpe,random", help="quality part: tpe, random or both")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed-base", type=int, default=0, help="seeds are seed-base .. seed-base+seeds-1")
    ap.add_argument("--trials", type=int, default=100, help="quality part: trials per study")
    ap.add_argument("--timing-trials", type=int, default=1000)
    ap.add_argument("--no-long-timing", dest="long_timing", action="store_false",
                    help="timing part: stop at 100 trials (Optuna's side of 1,000 is slow)")
    ap.add_argument("--storage-trials", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=20, help="storage part: calls per read")
    ap.add_argument("--tmp-dir", default=os.environ.get("TMPDIR", "/var/tmp"),
                    help="where Optuna's SQLite files go (the same disk as Trainyard's data dir)")
    ap.add_argument("--prefix", default=f"bench{int(time.time())}", help="study name prefix on the server")
    ap.add_argument("--meta", action="append", default=[], metavar="K=V", help="extra metadata to record")
    a = ap.parse_args()

    if a.summarize:
        print(summarize(a.summarize))
        return
    if not a.out:
        ap.error("--out is required")
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    a.functions = [f.strip() for f in a.functions.split(",") if f.strip()]
    parts = {p.strip() for p in a.parts.split(",") if p.strip()}
    for f in a.functions:
        if f not in OBJECTIVES:
            ap.error(f"unknown function {f} (one of {', '.join(OBJECTIVES)})")
    if unknown := parts - {"quality", "timing", "storage"}:
        ap.error(f"unknown parts {unknown}")
    if "trainyard" in a.systems and not a.url:
        ap.error("--url is needed for the trainyard side (or --systems optuna)")
    if "trainyard" in a.systems and not a.token:
        ap.error("--token (or TRAINYARD_TOKEN) is needed for the trainyard side")
    if "optuna" in a.systems and optuna is None:
        ap.error("optuna is not importable in this Python (use the venv's python)")
    kinds = [k.strip() for k in a.samplers.split(",") if k.strip()]
    a.quality_systems = [f"{side}-{k}" for k in kinds for side in ("trainyard", "optuna") if side in a.systems]

    if optuna is not None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    a.out.mkdir(parents=True, exist_ok=True)
    res = Results(a.out)
    ty = Trainyard(a.url, a.token) if "trainyard" in a.systems else None
    meta = {"kind": "meta", "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "argv": shlex.join(sys.argv[1:]),
            "args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(a).items() if k != "token"},
            "machine": machine(), "python": platform.python_version(), "numpy": np.__version__,
            "scipy": __import__("scipy").__version__, **dict(m.split("=", 1) for m in a.meta)}
    if optuna is not None:
        meta["optuna_tpe_defaults"] = optuna_defaults()
    if ty is not None:
        # What the server fills in for a bare {"kind": "tpe"}: its create answer echoes the spec.
        probe = ty.call("POST", "/api/v1/studies",
                        study_spec(f"{a.prefix}-defaults-probe", OBJECTIVES["branin"], {"kind": "tpe", "seed": 0}, 1))
        meta["trainyard_sampler_seen"] = (probe.get("spec") or {}).get("sampler")
        try:
            ty.call("POST", f"/api/v1/studies/{urllib.parse.quote(a.prefix)}-defaults-probe/stop")
        except TrainyardError as e:  # an unstopped probe study costs nothing here; go on
            log(f"stopping the defaults probe study: {e}")
    res.add(meta)

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="trainyard-bench-tune-optuna.", dir=a.tmp_dir))
    try:
        if "quality" in parts:
            part_quality(a, ty, res)
        if "timing" in parts:
            part_timing(a, ty, res, tmp)
        if "storage" in parts:
            part_storage(a, ty, res, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(summarize(a.out))


if __name__ == "__main__":
    main()
