#!/usr/bin/env python3
"""Tracking benchmark: the MLflow REST API, `mlflow server` vs Trainyard, same client.

    VENV/bin/python bench.py --system mlflow    --url http://127.0.0.1:15000 --server-pid PID --out mlflow.json
    MLFLOW_TRACKING_TOKEN=... \\
    VENV/bin/python bench.py --system trainyard --url http://127.0.0.1:18090 --server-pid PID --out trainyard.json
    python3 bench.py --compare mlflow.json trainyard.json [--markdown summary.md] [--summary-json summary.json]

One system per run. Every compared row goes through the stock `mlflow` Python client
(MlflowClient, the version installed in the venv that runs this script). Each row records
wall time and the CPU seconds of the server process *and all its descendants* (utime+stime
of every live process in its /proc ppid tree plus cutime+cstime, which hold the CPU of
children already reaped), sampled just before and just after the row. Rows:

  log_batch             P metric points via log_batch, 1,000 per call, one run, one key
  log_metric            C log_metric calls, one after the other, one run
  get_metric_history    MlflowClient.get_metric_history of the log_batch metric (P points)
  search_runs           search_runs over R runs (created untimed first), 1,000 per page, all pages
  search_runs_filtered  same, filter "metrics.acc > 0.5", order_by "metrics.acc DESC"
  big_ingest            (Trainyard only) B points of one metric, log_batch 1,000 per call,
                        from several client processes; sustained points/s
  big_query             (Trainyard only) GET /api/v1/runs/{run_id}/metrics/{key}?max_points=1000

`--compare` needs only the Python 3 standard library; the rest needs `mlflow`. See README.md.
"""

import argparse
import http.client
import json
import math
import os
import platform
import random
import resource
import statistics
import sys
import time
import urllib.parse

# full-scale sizes (--scale multiplies them)
POINTS = 100_000
LOG_METRIC_CALLS = 2_000
RUNS = 10_000
BIG_POINTS = 10_000_000
BATCH = 1_000            # metrics per log_batch call (MLflow's limit)
PAGE = 1_000             # search_runs page size
METRIC_KEY = "loss"
FILTER = "metrics.acc > 0.5"
ORDER_BY = ["metrics.acc DESC"]
TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ------------------------------------------------------------------ process tree
def _stat(pid):
    """(ppid, utime+stime ticks, cutime+cstime ticks, rss pages) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] = state (stat field 3); fields[1] = ppid; [11..14] = utime stime cutime cstime;
    # [21] = rss (stat field 24)
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]), int(fields[21])


def tree(root):
    """{pid: stat} for root and every descendant, found through the ppid links in /proc."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = _stat(int(name))
            if s is not None:
                stats[int(name)] = s
    kids = {}
    for pid, s in stats.items():
        kids.setdefault(s[0], []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in out:
            out[pid] = stats[pid]
            todo.extend(kids.get(pid, ()))
    return out


def server_sample(root):
    """CPU seconds and RSS of the server tree.

    CPU = sum over live members of (utime+stime+cutime+cstime): a process that exited and was
    reaped by a member of the tree has its whole CPU in that member's cutime/cstime, so every
    tick is counted once whether its process is alive or gone. (A child re-parented away from
    the tree before it exits is lost; mlflow's uvicorn workers and Trainyard don't do that.)"""
    t = tree(root)
    if root not in t:
        raise BenchError(f"server pid {root} is gone")
    return {
        "cpu_s": sum(s[1] + s[2] for s in t.values()) / TCK,
        "rss_mib": sum(s[3] for s in t.values()) * PAGE_SIZE / 2**20,
        "procs": len(t),
        "by_pid": {pid: (s[1] + s[2]) / TCK for pid, s in t.items()},
    }


_labels = {}


def proc_label(pid):
    """Short name of a server process for the per-process CPU breakdown, e.g.
    'uvicorn', 'multiprocessing.spawn', 'huey.bin.huey_consumer', 'trainyard'."""
    if pid not in _labels:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            argv = []
        label = os.path.basename(argv[0]) if argv and argv[0] else str(pid)
        if "-m" in argv[:-1]:
            label = argv[argv.index("-m") + 1]
        elif "-c" in argv[:-1]:
            label = argv[argv.index("-c") + 1].split(" import ")[0].replace("from ", "")
        elif len(argv) > 2 and label.startswith("python"):
            label = " ".join(os.path.basename(a) for a in argv[1:3])
        _labels[pid] = label
    return _labels[pid]


def cpu_by_process(s0, s1):
    """CPU seconds per kind of server process between two samples (a process gone by s1 is
    not listed: its time moved to its parent's cutime, so it shows under the parent)."""
    out = {}
    for pid, cpu in s1["by_pid"].items():
        d = cpu - s0["by_pid"].get(pid, 0.0)
        if d > 0:
            k = proc_label(pid)
            out[k] = round(out.get(k, 0.0) + d, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def server_peak_mib(root):
    """Sum over the live tree of VmHWM (each process's own peak RSS)."""
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024.0


def server_pss_mib(root):
    """Sum of Pss over the live tree (shared pages split between the processes sharing them,
    so forked/spawned workers are not counted over and over as with RSS)."""
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024.0


def machine_busy_s():
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + (vals[7] if len(vals) > 7 else 0)
    return busy / TCK


def client_cpu_s():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def disk_usage_mib(path):
    total = 0
    for d, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(d, name)).st_blocks * 512
            except OSError:
                pass
    return total / 2**20


def percentile(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return None
    k = max(0, math.ceil(p / 100.0 * len(sorted_vals)) - 1)
    return sorted_vals[k]


def summarize(vals):
    if not vals:
        return None
    v = sorted(vals)
    return {"n": len(v), "min": v[0], "p50": percentile(v, 50), "p95": percentile(v, 95),
            "max": v[-1], "mean": sum(v) / len(v)}


def wait_idle(pid, window=2.0, below=0.1, limit=300.0):
    """Wait until the server tree uses less than `below` CPU seconds per second over `window`
    seconds (mlflow server's job-runner children keep importing for a while after /health
    answers). Returns the last rate and how long it waited."""
    t0 = time.perf_counter()
    prev = server_sample(pid)["cpu_s"]
    while True:
        time.sleep(window)
        cur = server_sample(pid)["cpu_s"]
        rate = (cur - prev) / window
        waited = time.perf_counter() - t0
        if rate < below or waited > limit:
            if rate >= below:
                log(f"  server still uses {rate:.2f} CPU/s after {waited:.0f} s; going on")
            return rate, waited
        prev = cur


# ------------------------------------------------------------------------- rows
class Timer:
    """Measures one timed block: wall, server-tree CPU, client CPU, machine busy CPU."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        self.load = os.getloadavg()[0]
        self.s0 = server_sample(self.pid)
        for pid in self.s0["by_pid"]:
            proc_label(pid)
        self.c0, self.b0 = client_cpu_s(), machine_busy_s()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.t1 = time.perf_counter()
        self.c1, self.b1 = client_cpu_s(), machine_busy_s()
        self.s1 = server_sample(self.pid)
        return False

    def result(self):
        return {
            "wall_s": self.t1 - self.t0,
            "server_cpu_s": self.s1["cpu_s"] - self.s0["cpu_s"],
            "client_cpu_s": self.c1 - self.c0,
            "machine_cpu_busy_s": self.b1 - self.b0,
            "server_cpu_by_process": cpu_by_process(self.s0, self.s1),
            "server_rss_mib_after": self.s1["rss_mib"],
            "server_procs": self.s1["procs"],
            "loadavg_before": self.load,
        }


def timed_reps(pid, reps, fn):
    """Run fn() `reps` times, each timed on its own; the row reports the median wall and the
    median server CPU over the repetitions, and keeps every repetition."""
    samples, info = [], {}
    for _ in range(reps):
        with Timer(pid) as t:
            info = fn() or {}
        samples.append(t.result())
    row = {k: statistics.median(s[k] for s in samples)
           for k in ("wall_s", "server_cpu_s", "client_cpu_s", "machine_cpu_busy_s")}
    row["reps"] = samples
    row.update(info)
    return row


def make_metrics(Metric, key, n, t0_ms, seed):
    rng = random.Random(seed)
    return [Metric(key=key, value=1.0 / (1.0 + i * 1e-3) + rng.random() * 1e-3,
                   timestamp=t0_ms + i, step=i) for i in range(n)]


def row_log_batch(ctx, n):
    from mlflow.entities import Metric
    c = ctx.client
    run_id = c.create_run(ctx.exp_metrics, run_name="log-batch").info.run_id
    metrics = make_metrics(Metric, METRIC_KEY, n, int(time.time() * 1000), 1)  # built before the clock starts
    batches = [metrics[i:i + BATCH] for i in range(0, n, BATCH)]

    def go():
        for b in batches:
            c.log_batch(run_id, metrics=b)
    row = timed_reps(ctx.pid, 1, go)
    row.update(points=n, calls=len(batches), run_id=run_id, key=METRIC_KEY,
               points_per_s=n / row["wall_s"])
    ctx.history_run = run_id
    return row


def row_log_metric(ctx, n):
    c = ctx.client
    run_id = c.create_run(ctx.exp_metrics, run_name="log-metric").info.run_id
    t0 = int(time.time() * 1000)

    def go():
        for i in range(n):
            c.log_metric(run_id, "acc", i / n, timestamp=t0 + i, step=i)
    row = timed_reps(ctx.pid, 1, go)
    row.update(calls=n, run_id=run_id, calls_per_s=n / row["wall_s"])
    return row


def row_history(ctx, n, reps):
    c = ctx.client
    run_id = ctx.history_run
    got = []

    def go():
        h = c.get_metric_history(run_id, METRIC_KEY)
        got.append(len(h))
        return {}
    row = timed_reps(ctx.pid, reps, go)
    if any(g != n for g in got):
        raise BenchError(f"get_metric_history returned {got} points, expected {n}")
    row.update(points=n, pages=math.ceil(n / 25_000), run_id=run_id,
               points_per_s=n / row["wall_s"])
    return row


def setup_runs(ctx, n, threads):
    """Untimed: R runs in one experiment, each with 2 tags, 2 params and 2 metrics."""
    from concurrent.futures import ThreadPoolExecutor
    from mlflow.entities import Metric, Param
    c = ctx.client
    exp = c.create_experiment(f"bench-search-{os.getpid()}-{int(time.time())}")
    rng = random.Random(7)
    accs = [rng.random() for _ in range(n)]
    t0 = int(time.time() * 1000)

    def one(i):
        r = c.create_run(exp, start_time=t0 + i, tags={"group": f"g{i % 10}"}, run_name=f"run-{i}")
        c.log_batch(r.info.run_id,
                    metrics=[Metric("acc", accs[i], t0 + i, 0), Metric("loss", 1 - accs[i], t0 + i, 0)],
                    params=[Param("lr", str(10 ** -(1 + i % 4))), Param("batch_size", str(2 ** (4 + i % 4)))])
    t = time.perf_counter()
    done = 0
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, range(n)):
            done += 1
            if done % max(1, n // 10) == 0:
                log(f"  setup: {done}/{n} runs ({done / (time.perf_counter() - t):.0f} runs/s)")
    return exp, accs, time.perf_counter() - t


def search_all(c, exp, filter_string="", order_by=None):
    runs, pages, token = [], 0, None
    while True:
        page = c.search_runs([exp], filter_string=filter_string, max_results=PAGE,
                             order_by=order_by, page_token=token)
        runs.extend(page)
        pages += 1
        token = page.token
        if not token:
            return runs, pages


def row_search(ctx, n, reps, filtered):
    c = ctx.client
    exp, accs = ctx.search_exp, ctx.search_accs
    expect = sum(1 for a in accs if a > 0.5) if filtered else n
    got = []

    def go():
        runs, pages = search_all(c, exp, FILTER, ORDER_BY) if filtered else search_all(c, exp)
        got.append((len(runs), pages))
        if filtered:
            vals = [r.data.metrics.get("acc") for r in runs]
            if any(v is None or v <= 0.5 for v in vals) or vals != sorted(vals, reverse=True):
                raise BenchError("filtered search_runs: wrong rows or order")
        elif len({r.info.run_id for r in runs}) != len(runs):
            raise BenchError("search_runs returned duplicate runs across pages")
    row = timed_reps(ctx.pid, reps, go)
    if any(g[0] != expect for g in got):
        raise BenchError(f"search_runs returned {[g[0] for g in got]} runs, expected {expect}")
    row.update(runs_in_experiment=n, runs_returned=expect, pages=got[0][1], page_size=PAGE,
               experiment_id=exp, runs_per_s=expect / row["wall_s"])
    if filtered:
        row.update(filter=FILTER, order_by=ORDER_BY)
    return row


# ----------------------------------------------------------- Trainyard-only rows
class Http:
    """Plain keep-alive HTTP/1.1 client with the bearer token (for the raw big-ingest client
    and the Trainyard REST v1 query)."""

    def __init__(self, url, token, timeout=120):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.prefix = u.hostname, u.port or 80, u.path.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        return resp.status, raw


def _ingest_worker(url, token, run_id, key, first, last, t0_ms, use_mlflow, q):
    """Log batches [first, last) of BATCH points each; put (batch end times, retries, cpu)."""
    times, retries = [], 0
    if use_mlflow:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
        c = MlflowClient(url)
    else:
        h = Http(url, token)
    for b in range(first, last):
        s0 = b * BATCH
        if use_mlflow:
            c.log_batch(run_id, metrics=[Metric(key, (s % 997) / 997.0, t0_ms + s, s)
                                         for s in range(s0, s0 + BATCH)])
        else:
            body = ('{"run_id":"%s","metrics":[' % run_id + ",".join(
                '{"key":"%s","value":%r,"timestamp":%d,"step":%d}' % (key, (s % 997) / 997.0, t0_ms + s, s)
                for s in range(s0, s0 + BATCH)) + "]}").encode()
            for attempt in range(8):
                try:
                    status, raw = h.request("POST", "/api/2.0/mlflow/runs/log-batch", body)
                except (OSError, http.client.HTTPException) as e:
                    status, raw = None, str(e).encode()
                if status == 200:
                    break
                if status is not None and 400 <= status < 500 and status != 429:
                    q.put(("error", f"log-batch HTTP {status}: {raw[:300]!r}"))
                    return
                retries += 1
                time.sleep(0.1 * 2 ** attempt)
            else:
                q.put(("error", f"log-batch kept failing: HTTP {status}: {raw[:300]!r}"))
                return
        times.append(time.perf_counter())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    q.put(("ok", times, retries, ru.ru_utime + ru.ru_stime))


def row_big_ingest(ctx, n, procs, use_mlflow):
    import multiprocessing as mp
    c = ctx.client
    exp = c.create_experiment(f"bench-big-{os.getpid()}-{int(time.time())}")
    run_id = c.create_run(exp, run_name="big").info.run_id
    key = "big"
    nb = math.ceil(n / BATCH)
    n = nb * BATCH
    procs = max(1, min(procs, nb))
    bounds = [nb * i // procs for i in range(procs + 1)]
    ctxm = mp.get_context("fork")
    q = ctxm.Queue()
    t0_ms = int(time.time() * 1000)
    log(f"  {n:,} points of '{key}' in {nb:,} log-batch calls from {procs} client processes "
        f"({'MlflowClient' if use_mlflow else 'raw HTTP JSON'})")
    with Timer(ctx.pid) as t:
        start = time.perf_counter()
        ps = [ctxm.Process(target=_ingest_worker, daemon=True,
                           args=(ctx.url, ctx.token, run_id, key, bounds[i], bounds[i + 1], t0_ms,
                                 use_mlflow, q)) for i in range(procs)]
        for p in ps:
            p.start()
        results = []
        for _ in ps:
            while True:
                try:
                    results.append(q.get(timeout=30))
                    break
                except Exception:  # queue.Empty: report progress, check the workers
                    if not any(p.is_alive() for p in ps) and q.empty():
                        raise BenchError("big_ingest: client processes died")
                    log(f"  ... {time.perf_counter() - start:.0f} s")
        for p in ps:
            p.join()
    errors = [r[1] for r in results if r[0] == "error"]
    if errors:
        raise BenchError("big_ingest: " + errors[0])
    row = t.result()
    # the run's latest value of the key must be the one logged at the last step
    latest = c.get_run(run_id).data.metrics.get(key)
    want = ((n - 1) % 997) / 997.0
    if latest is None or abs(latest - want) > 1e-9:
        raise BenchError(f"big_ingest: latest '{key}' is {latest}, expected {want} (step {n - 1})")
    times = sorted(x for r in results for x in r[1])
    # sustained rate per tenth of the batches (by completion time)
    deciles, prev_t, prev_i = [], start, 0
    for k in range(1, 11):
        i = len(times) * k // 10
        if i > prev_i:
            deciles.append((i - prev_i) * BATCH / (times[i - 1] - prev_t))
            prev_t, prev_i = times[i - 1], i
    row.update(points=n, calls=nb, client_procs=procs, run_id=run_id, key=key,
               client="mlflow" if use_mlflow else "raw-http",
               points_per_s=n / row["wall_s"],
               points_per_s_by_tenth=[round(d) for d in deciles],
               points_per_s_min_tenth=min(deciles) if deciles else None,
               retries=sum(r[2] for r in results),
               client_worker_cpu_s=sum(r[3] for r in results))
    ctx.big = (run_id, key, n)
    return row


def row_big_query(ctx, reps):
    run_id, key, n = ctx.big
    h = Http(ctx.url, ctx.token)
    path = f"/api/v1/runs/{urllib.parse.quote(run_id)}/metrics/{urllib.parse.quote(key)}?max_points=1000"
    t = time.perf_counter()
    status, raw = h.request("GET", path)  # first call, reported apart
    first_ms = (time.perf_counter() - t) * 1000
    row = {"path": path, "status": status, "bytes": len(raw), "first_call_ms": first_ms,
           "points_in_metric": n}
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        row["response_keys"] = sorted(body)[:20]
        lists = {k: len(v) for k, v in body.items() if isinstance(v, list)}
        if lists:
            row["response_list_lengths"] = lists
        for k in ("total_points", "sampled"):   # docs/tracking.md: the answer says both
            if k in body:
                row[k] = body[k]
        if status == 200 and body.get("total_points") not in (None, n):
            row["warning"] = f"total_points {body['total_points']} != {n} points logged"
            log(f"  big_query: WARNING: {row['warning']}")
    if status != 200:
        row["error"] = (f"HTTP {status}: " + " ".join(raw[:200].decode(errors="replace").split())
                        ).replace("|", "\\|")
        return row
    lat = []
    with Timer(ctx.pid) as tm:
        for _ in range(reps):
            t = time.perf_counter()
            s, _ = h.request("GET", path)
            lat.append((time.perf_counter() - t) * 1000)
            if s != 200:
                row["error"] = f"HTTP {s} on a repeat"
    row.update(tm.result())
    row["latency_ms"] = summarize(lat)
    row["all_ms"] = [round(x, 3) for x in lat]
    return row


# -------------------------------------------------------------------------- main
class Ctx:
    pass


def warm_up(ctx):
    """Untimed: a few calls of every kind the rows use, so each server worker has loaded
    its code paths and opened its database before the clock starts."""
    from mlflow.entities import Metric
    c = ctx.client
    exp = c.create_experiment(f"bench-warmup-{os.getpid()}-{int(time.time())}")
    for _ in range(4):
        r = c.create_run(exp, tags={"group": "w"}).info.run_id
        c.log_batch(r, metrics=make_metrics(Metric, "w", BATCH, int(time.time() * 1000), 3))
        for i in range(5):
            c.log_metric(r, "acc", 0.5, step=i)
        c.get_metric_history(r, "w")
        c.search_runs([exp], max_results=10)
        c.search_runs([exp], filter_string=FILTER, order_by=ORDER_BY, max_results=10)


def bench(args):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    token = args.token or os.environ.get("MLFLOW_TRACKING_TOKEN")
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    else:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    import mlflow
    from mlflow.tracking import MlflowClient

    sc = args.scale
    points = args.points or max(BATCH, int(POINTS * sc))
    calls = args.log_metric_calls or max(10, int(LOG_METRIC_CALLS * sc))
    runs = args.runs or max(PAGE + 1, int(RUNS * sc))
    big = args.big_points if args.big_points is not None else int(BIG_POINTS * sc)
    rows_wanted = args.rows.split(",") if args.rows else None
    do_big = (args.system == "trainyard" or args.big_anyway) and big > 0

    ctx = Ctx()
    ctx.pid, ctx.url, ctx.token = args.server_pid, args.url.rstrip("/"), token
    ctx.client = MlflowClient(ctx.url)
    res = {
        "system": args.system,
        "url": ctx.url,
        "auth": "bearer token" if token else "none",
        "scale": sc,
        "sizes": {"points": points, "log_metric_calls": calls, "runs": runs,
                  "big_points": big if do_big else 0, "batch": BATCH, "page": PAGE},
        "client": {"mlflow": mlflow.__version__, "python": platform.python_version()},
        "host": {"node": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count()},
        "meta": dict(kv.split("=", 1) for kv in args.meta),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_before": os.getloadavg(),
        "rows": {},
    }
    rows = res["rows"]

    def want(name):
        return rows_wanted is None or name in rows_wanted

    def run_row(name, fn, *a):
        log(f"{args.system}: {name} (load average {os.getloadavg()[0]:.2f})")
        r = fn(ctx, *a)
        rows[name] = r
        msg = f"  {name}: wall {r['wall_s']:.2f} s, server CPU {r['server_cpu_s']:.2f} s" \
            if "wall_s" in r else f"  {name}: {r.get('error', 'done')}"
        for k in ("points_per_s", "calls_per_s", "runs_per_s"):
            if k in r:
                msg += f", {r[k]:,.0f} {k.replace('_per_s', '')}/s"
        if r.get("latency_ms"):
            msg += f", p50 {r['latency_ms']['p50']:.1f} ms, p95 {r['latency_ms']['p95']:.1f} ms"
        byp = (r.get("reps") or [r])[-1].get("server_cpu_by_process")
        if byp:
            msg += "\n    server CPU by process: " + ", ".join(f"{k} {v:.2f}" for k, v in list(byp.items())[:5])
        log(msg)

    t_start = time.perf_counter()
    log(f"{args.system}: waiting for the server to go idle")
    _, res["startup_wait_s"] = wait_idle(ctx.pid)
    idle = server_sample(ctx.pid)
    res["server_idle"] = {"rss_mib": idle["rss_mib"], "pss_mib": server_pss_mib(ctx.pid),
                          "procs": idle["procs"], "cpu_s": idle["cpu_s"]}
    log(f"{args.system}: warm-up at {ctx.url}")
    warm_up(ctx)
    wait_idle(ctx.pid)
    # background CPU of the idle server (timers, pollers), included in every row's CPU
    s0, t0 = server_sample(ctx.pid)["cpu_s"], time.perf_counter()
    time.sleep(5)
    res["server_idle_cpu_per_s"] = (server_sample(ctx.pid)["cpu_s"] - s0) / (time.perf_counter() - t0)
    log(f"  idle server: {res['server_idle_cpu_per_s']:.3f} CPU s/s in the background")
    ctx.exp_metrics = ctx.client.create_experiment(f"bench-metrics-{os.getpid()}-{int(time.time())}")
    time.sleep(args.settle)
    if want("log_batch") or want("get_metric_history"):
        run_row("log_batch", row_log_batch, points)
    if want("log_metric"):
        run_row("log_metric", row_log_metric, calls)
    if want("get_metric_history"):
        run_row("get_metric_history", row_history, points, args.reps)
    if want("search_runs") or want("search_runs_filtered"):
        log(f"{args.system}: setup (untimed): {runs:,} runs, {args.setup_threads} client threads")
        with Timer(ctx.pid) as t:
            ctx.search_exp, ctx.search_accs, _ = setup_runs(ctx, runs, args.setup_threads)
        res["search_setup"] = dict(t.result(), runs=runs, threads=args.setup_threads)
        res["search_setup"]["runs_per_s"] = runs / res["search_setup"]["wall_s"]
        log(f"  setup: {res['search_setup']['wall_s']:.1f} s, "
            f"{res['search_setup']['runs_per_s']:.0f} runs/s")
        time.sleep(args.settle)
        if want("search_runs"):
            run_row("search_runs", row_search, runs, args.reps, False)
        if want("search_runs_filtered"):
            run_row("search_runs_filtered", row_search, runs, args.reps, True)
    if do_big and (want("big_ingest") or want("big_query")):
        time.sleep(args.settle)
        run_row("big_ingest", row_big_ingest, big, args.big_procs, args.big_client == "mlflow")
        time.sleep(args.settle)
        run_row("big_query", row_big_query, args.query_reps)
    res["total_s"] = time.perf_counter() - t_start
    end = server_sample(ctx.pid)
    res["server_end"] = {"rss_mib": end["rss_mib"], "pss_mib": server_pss_mib(ctx.pid), "procs": end["procs"],
                         "peak_rss_mib_sum": server_peak_mib(ctx.pid),
                         "cpu_s_total": end["cpu_s"] - idle["cpu_s"]}
    if args.data_dir:
        res["data_dir_mib"] = disk_usage_mib(args.data_dir)
    return res


# ------------------------------------------------------------------------- output
ROWS = [  # name, label (sizes filled from the JSON)
    ("log_batch", "log_batch: {points:,} points, 1,000/call"),
    ("log_metric", "log_metric: {calls:,} calls"),
    ("get_metric_history", "get_metric_history: {points:,} points"),
    ("search_runs", "search_runs: {runs_returned:,} of {runs_in_experiment:,} runs, 1,000/page"),
    ("search_runs_filtered", "search_runs `acc > 0.5` by acc: {runs_returned:,} of {runs_in_experiment:,}"),
]


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def fmtx(v):
    return "-" if v is None else f"{v:.1f}x"


def ratio(a, b):
    return a / b if (a is not None and b) else None


def markdown(results):
    """Side-by-side table; ratio = MLflow / Trainyard (above 1: Trainyard is faster / cheaper)."""
    by = {r["system"]: r for r in results}
    m, t = by.get("mlflow"), by.get("trainyard")
    out = []
    for r in results:
        out.append(f"* {r['system']}: {r['url']}, scale {r['scale']}, client mlflow "
                   f"{r['client']['mlflow']}, started {r['started_at']}, load average before "
                   f"{r['loadavg_before'][0]:.2f}, {r['host']['cpus']} CPUs"
                   + (f", {', '.join(f'{k}={v}' for k, v in r['meta'].items())}" if r["meta"] else ""))
    if m and t:
        sm = {k: v for k, v in m["sizes"].items() if k != "big_points"}
        st = {k: v for k, v in t["sizes"].items() if k != "big_points"}
        if sm != st:
            out.append("")
            out.append(f"**WARNING: the two runs used different sizes (mlflow {sm}, trainyard {st}); "
                       "the ratios compare unlike work.**")
            log("WARNING: the two result files used different sizes")
    if not any(name in r["rows"] for r in results for name, _ in ROWS):
        out.append("")
    else:
        out.extend(compared_tables(results, m, t))
    _tail(out, results)
    return "\n".join(out) + "\n"


def compared_tables(results, m, t):
    out = []
    out.append("")
    out.append("| row | MLflow wall s | Trainyard wall s | wall MLflow/Trainyard "
               "| MLflow server CPU s | Trainyard server CPU s | CPU MLflow/Trainyard |")
    out.append("|---|--:|--:|--:|--:|--:|--:|")
    for name, label in ROWS:
        rm = (m or {}).get("rows", {}).get(name) if m else None
        rt = (t or {}).get("rows", {}).get(name) if t else None
        if not rm and not rt:
            continue
        src = rm or rt
        try:
            lab = label.format(**src)
        except (KeyError, ValueError):
            lab = name
        wm, wt = (rm or {}).get("wall_s"), (rt or {}).get("wall_s")
        cm, ct = (rm or {}).get("server_cpu_s"), (rt or {}).get("server_cpu_s")
        out.append(f"| {lab} | {fmt(wm)} | {fmt(wt)} | {fmtx(ratio(wm, wt))} "
                   f"| {fmt(cm)} | {fmt(ct)} | {fmtx(ratio(cm, ct))} |")
    out.append("")
    out.append("Ratios are MLflow / Trainyard: above 1x, Trainyard took less wall time or server CPU. "
               "Server CPU = the server process and all its descendants; read rows: median of the "
               "repetitions.")
    out.append("")
    out.append("Rates and client side (client = the bench process, same code for both):")
    out.append("")
    out.append("| row | system | rate | client CPU s | machine busy CPU s | server RSS after MiB |")
    out.append("|---|---|--:|--:|--:|--:|")
    for name, _ in ROWS:
        for r in results:
            x = r["rows"].get(name)
            if not x:
                continue
            rate = next((f"{x[k]:,.0f} {k.replace('_per_s', '')}/s" for k in
                         ("points_per_s", "calls_per_s", "runs_per_s") if k in x), "-")
            out.append(f"| {name} | {r['system']} | {rate} | {fmt(x.get('client_cpu_s'))} "
                       f"| {fmt(x.get('machine_cpu_busy_s'))} "
                       f"| {fmt((x.get('reps') or [{}])[-1].get('server_rss_mib_after'), '.0f')} |")
    out.append("")
    return out


def _tail(out, results):
    for r in results:
        s = r.get("search_setup")
        line = (f"* {r['system']} server: idle RSS {r['server_idle']['rss_mib']:.0f} MiB "
                f"(PSS {r['server_idle'].get('pss_mib', 0):.0f} MiB) in {r['server_idle']['procs']} "
                f"process(es); at the end RSS {r['server_end']['rss_mib']:.0f} MiB "
                f"(PSS {r['server_end'].get('pss_mib', 0):.0f} MiB) "
                f"(sum of per-process peaks {r['server_end']['peak_rss_mib_sum']:.0f} MiB); "
                f"idle background CPU {r.get('server_idle_cpu_per_s', 0):.3f} s/s; "
                f"server CPU over the whole run {r['server_end']['cpu_s_total']:.1f} s")
        if "data_dir_mib" in r:
            line += f"; data dir {r['data_dir_mib']:.0f} MiB"
        if s:
            line += (f"; untimed setup of {s['runs']:,} runs: {s['wall_s']:.1f} s "
                     f"({s['runs_per_s']:.0f} runs/s, {s['threads']} client threads, server CPU "
                     f"{s['server_cpu_s']:.1f} s)")
        out.append(line + ".")
    for r in results:
        bi, bq = r["rows"].get("big_ingest"), r["rows"].get("big_query")
        if not bi and not bq:
            continue
        out.append("")
        out.append(f"{r['system']} only:")
        out.append("")
        out.append("| row | result |")
        out.append("|---|---|")
        if bi:
            out.append(f"| big_ingest: {bi['points']:,} points of one metric, 1,000/call, "
                       f"{bi['client_procs']} client processes ({bi['client']}) "
                       f"| {bi['points_per_s']:,.0f} points/s sustained ({bi['wall_s']:.1f} s; slowest "
                       f"tenth {fmt(bi.get('points_per_s_min_tenth'), ',.0f')} points/s); server CPU "
                       f"{bi['server_cpu_s']:.1f} s ({1e6 * bi['server_cpu_s'] / bi['points']:.2f} "
                       f"µs/point); {bi['retries']} retries |")
        if bq:
            if bq.get("latency_ms"):
                lm = bq["latency_ms"]
                out.append(f"| GET /api/v1/runs/{{id}}/metrics/{{key}}?max_points=1000 over "
                           f"{bq['points_in_metric']:,} points | p50 {lm['p50']:.1f} ms, p95 "
                           f"{lm['p95']:.1f} ms, max {lm['max']:.1f} ms ({lm['n']} calls; first "
                           f"{bq['first_call_ms']:.1f} ms; {bq['bytes']:,} bytes"
                           + (f"; {', '.join(f'{k} {v}' for k, v in bq['response_list_lengths'].items())} "
                              "points returned" if bq.get("response_list_lengths") else "")
                           + (f"; {bq['warning']}" if bq.get("warning") else "") + ") |")
            else:
                out.append(f"| GET /api/v1/runs/{{id}}/metrics/{{key}}?max_points=1000 "
                           f"| {bq.get('error', 'no result')} |")


def summary_json(results):
    by = {r["system"]: r for r in results}
    m, t = by.get("mlflow"), by.get("trainyard")
    rows = {}
    for name, _ in ROWS:
        rm = m["rows"].get(name) if m else None
        rt = t["rows"].get(name) if t else None
        if not rm and not rt:
            continue
        rows[name] = {
            "mlflow_wall_s": (rm or {}).get("wall_s"), "trainyard_wall_s": (rt or {}).get("wall_s"),
            "wall_ratio": ratio((rm or {}).get("wall_s"), (rt or {}).get("wall_s")),
            "mlflow_cpu_s": (rm or {}).get("server_cpu_s"), "trainyard_cpu_s": (rt or {}).get("server_cpu_s"),
            "cpu_ratio": ratio((rm or {}).get("server_cpu_s"), (rt or {}).get("server_cpu_s")),
        }
    out = {"rows": rows, "ratio": "mlflow / trainyard",
           "sources": {r["system"]: {"scale": r["scale"], "sizes": r["sizes"],
                                     "started_at": r["started_at"]} for r in results}}
    if t:
        for k in ("big_ingest", "big_query"):
            if k in t["rows"]:
                out[k] = {x: v for x, v in t["rows"][k].items() if x not in ("reps", "all_ms")}
    return out


def compare(args):
    results = []
    for p in args.compare:
        with open(p) as f:
            results.append(json.load(f))
    results.sort(key=lambda r: r["system"] != "mlflow")  # MLflow first
    md = markdown(results)
    print(md, end="")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary_json(results), f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=("mlflow", "trainyard"))
    ap.add_argument("--url", help="tracking server, e.g. http://127.0.0.1:15000")
    ap.add_argument("--server-pid", type=int, help="server process; its descendants are counted too")
    ap.add_argument("--token", help="bearer token (default: $MLFLOW_TRACKING_TOKEN)")
    ap.add_argument("--token-file", help="read the bearer token from this file")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply all sizes (100k points, 2k calls, 10k runs, 10M big points); "
                         "0.1 for a smoke run")
    ap.add_argument("--points", type=int, help=f"log_batch / history points (default {POINTS:,} x scale)")
    ap.add_argument("--log-metric-calls", type=int, help=f"default {LOG_METRIC_CALLS:,} x scale")
    ap.add_argument("--runs", type=int, help=f"runs for search_runs (default {RUNS:,} x scale)")
    ap.add_argument("--big-points", type=int,
                    help=f"Trainyard-only ingest size (default {BIG_POINTS:,} x scale; 0 = skip)")
    ap.add_argument("--big-procs", type=int, default=2, help="client processes for big_ingest (default 2)")
    ap.add_argument("--big-client", choices=("raw", "mlflow"), default="raw",
                    help="big_ingest client: pre-encoded JSON over keep-alive HTTP (raw, default) "
                         "or MlflowClient.log_batch")
    ap.add_argument("--big-anyway", action="store_true", help="run the big rows against mlflow too")
    ap.add_argument("--query-reps", type=int, default=20, help="timed max_points queries (default 20)")
    ap.add_argument("--reps", type=int, default=3,
                    help="repetitions of each read row; the median is reported (default 3)")
    ap.add_argument("--setup-threads", type=int, default=4,
                    help="client threads creating the search_runs runs (untimed; default 4)")
    ap.add_argument("--settle", type=float, default=2.0, help="pause between phases (default 2 s)")
    ap.add_argument("--rows", help="comma-separated subset of rows to run")
    ap.add_argument("--data-dir", help="server data dir: its size is recorded at the end")
    ap.add_argument("--out", help="write results JSON here")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="extra key=value recorded in the JSON (repeatable)")
    ap.add_argument("--compare", nargs="+", metavar="JSON",
                    help="print a markdown table of one or two results files")
    ap.add_argument("--markdown", help="with --compare: also write the table here")
    ap.add_argument("--summary-json", help="with --compare: also write the ratios as JSON here")
    args = ap.parse_args()

    if args.compare:
        compare(args)
        return 0
    if not (args.system and args.url and args.server_pid):
        ap.error("--system, --url and --server-pid are required (or --compare)")
    if any("=" not in kv for kv in args.meta):
        ap.error("--meta takes KEY=VALUE")
    try:
        res = bench(args)
    except BenchError as e:
        log(f"ERROR: {e}")
        return 1
    if not args.out:
        print(markdown([res]), end="")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
