#!/usr/bin/env python3
"""Cluster benchmark: trivial jobs through Trainyard into Slurm or Ray, against the same
engine driven directly (`sbatch`, Ray's Jobs REST API).

    bench.py burst --engine slurm --via direct    --jobs 1000 --out burst-slurm-direct.json
    bench.py burst --engine slurm --via trainyard --jobs 1000 --out burst-slurm-trainyard.json
    bench.py probe --engine ray --probes 30 --out probe-ray.json
    bench.py plan  --trial trial-ray-direct.json --trial trial-ray-trainyard.json --want 1000
    bench.py report DIR                                          # DIR/summary.md

Every job is one CPU and 10 MB and runs `date +%s.%N > DIR/start.<tag>`, so each job
stamps its own start time on local disk the same way on every path. The client takes the
time just before and just after each submit call: after - before is the submit
acknowledgement (one `sbatch` process, one HTTP round trip); start - before is
submit->start. See README.md for the method.

Python 3 standard library only. The generic helpers and the Trainyard HTTP client come
from bench/scheduler/bench.py (loaded by path).
"""

import argparse
import http.client
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # leave no __pycache__ in bench/scheduler
_spec = importlib.util.spec_from_file_location(
    "scheduler_bench", os.path.join(_HERE, "..", "scheduler", "bench.py"))
sched = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sched)

summarize, proc_info, read_start = sched.summarize, sched.proc_info, sched.read_start
BenchError, log = sched.BenchError, sched.log

CPUS = 1
MEMORY_MB = 10
RAY_ACTIVE = ("PENDING", "RUNNING")
TRAINYARD_TERMINAL = ("succeeded", "failed", "cancelled")


def job_cmd(workdir, tag):
    return f"date +%s.%N > {workdir}/start.{tag}"


# ------------------------------------------------------------------- the four paths
class SbatchDirect:
    """Slurm driven directly: one `sbatch --parsable` process per job."""
    name = "slurm-direct"
    via = "direct"

    def __init__(self, args):
        self.partition = args.partition
        self.job_name = f"tyc-{os.getpid()}"
        self.retries = 0

    @staticmethod
    def _run(argv, timeout=60):
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)

    def describe(self):
        return {"version": self._run(["sinfo", "-V"]).stdout.strip(),
                "nodes": self._run(["sinfo", "-h", "-N", "-p", self.partition,
                                    "-o", "%N %T %c CPUs %m MB"]).stdout.strip(),
                "job_records": slurm_records()}

    def submit(self, i, shell_cmd, workdir):
        # What a user would type: output to slurm-<id>.out in the job's directory.
        argv = ["sbatch", "--parsable", f"--job-name={self.job_name}", "--no-requeue",
                f"--partition={self.partition}", "--ntasks=1", f"--cpus-per-task={CPUS}",
                f"--mem={MEMORY_MB}M", f"--chdir={workdir}",
                f"--output={workdir}/slurm-%j.out", f"--wrap={shell_cmd}"]
        for attempt in range(6):
            try:
                p = self._run(argv)
            except subprocess.TimeoutExpired:
                p = None
            if p is not None and p.returncode == 0:
                return p.stdout.strip().split(";")[0]
            self.retries += 1
            log(f"sbatch failed for job {i} (attempt {attempt + 1}): "
                f"{p.stderr.strip() if p else 'timeout'}")
            time.sleep(0.2 * (attempt + 1))
        raise BenchError(f"sbatch kept failing for job {i}")

    def active(self, ids):
        p = self._run(["squeue", "-h", "--name", self.job_name, "--states=all", "-o", "%i %T"])
        if p.returncode != 0:
            raise BenchError(f"squeue failed: {p.stderr.strip()}")
        return sum(1 for line in p.stdout.splitlines()
                   if len(line.split()) == 2 and line.split()[0] in ids
                   and line.split()[1] not in sched.TERMINAL_SLURM)

    def done(self, jid):
        p = self._run(["squeue", "-h", "-j", jid, "--states=all", "-o", "%T"])
        state = p.stdout.strip()
        return p.returncode != 0 or not state or state in sched.TERMINAL_SLURM

    def report(self, ids):
        return {"submit_retries": self.retries}


class RayDirect:
    """Ray driven directly: `POST /api/jobs/` on the dashboard, kept-alive connection."""
    name = "ray-direct"
    via = "direct"

    def __init__(self, args):
        u = urllib.parse.urlsplit(args.ray_url)
        self.host, self.port = u.hostname, u.port or 80
        self.conn = None
        self.prefix = f"tyc-{os.getpid()}-{int(time.time())}"
        self.status = {}
        self.retries = 0

    def _connect(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def request(self, method, path, body=None, retry_stale=True):
        if self.conn is None:
            self._connect()
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                http.client.CannotSendRequest):
            if not retry_stale:
                raise
            self._connect()
            return self.request(method, path, body, retry_stale=False)
        raw = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            self._connect()
        try:
            return resp.status, (json.loads(raw) if raw else None)
        except ValueError:
            return resp.status, raw.decode(errors="replace")

    def describe(self):
        status, body = self.request("GET", "/api/version")
        return {"version": body, "jobs_known": len(self._list())}

    def submit(self, i, shell_cmd, workdir):
        sid = f"{self.prefix}-{i}-{random.randrange(1 << 30):x}"
        body = {"entrypoint": shell_cmd, "submission_id": sid,
                "entrypoint_num_cpus": CPUS, "entrypoint_memory": MEMORY_MB * 1024 * 1024}
        for attempt in range(6):
            try:
                status, answer = self.request("POST", "/api/jobs/", body)
            except (OSError, http.client.HTTPException) as e:
                status, answer = None, str(e)
                self._connect()
            if status == 200:
                self.status[sid] = "PENDING"
                return sid
            if status is not None and 400 <= status < 500 and "already exists" in str(answer):
                return sid
            self.retries += 1
            log(f"Ray submit of job {i} failed (attempt {attempt + 1}): HTTP {status}: {answer}")
            time.sleep(0.2 * (attempt + 1))
        raise BenchError(f"Ray kept refusing job {i}")

    def _list(self):
        status, body = self.request("GET", "/api/jobs/")
        if status != 200 or not isinstance(body, list):
            raise BenchError(f"GET /api/jobs/: HTTP {status}: {body}")
        return body

    def _one(self, sid):
        status, body = self.request("GET", f"/api/jobs/{sid}")
        if status == 404:
            return "MISSING"
        if status != 200 or not isinstance(body, dict):
            raise BenchError(f"GET /api/jobs/{sid}: HTTP {status}: {body}")
        return body.get("status")

    def active(self, ids):
        open_ids = [s for s in ids if self.status.get(s, "PENDING") in RAY_ACTIVE]
        if len(open_ids) > 20:  # one listing beats hundreds of GETs
            for j in self._list():
                sid = j.get("submission_id")
                if sid in ids:
                    self.status[sid] = j.get("status")
        else:
            for sid in open_ids:
                self.status[sid] = self._one(sid)
        return sum(1 for s in ids if self.status.get(s, "PENDING") in RAY_ACTIVE)

    def done(self, jid):
        return self.active({jid}) == 0

    def report(self, ids):
        by = {}
        for s in ids:
            by[self.status.get(s)] = by.get(self.status.get(s), 0) + 1
        return {"submit_retries": self.retries, "jobs_by_status": by}


class TrainyardPool(sched.Trainyard):
    """Trainyard: `POST /api/v1/jobs` naming a cluster pool (server from TRAINYARD_SERVER,
    token from TRAINYARD_TOKEN)."""

    def __init__(self, args, engine):
        super().__init__(args)
        self.pool = args.pool_slurm if engine == "slurm" else args.pool_ray
        self.name = f"{engine}-trainyard"
        self.via = "trainyard"

    def describe(self):
        info = super().describe()
        status, body = self.request("GET", "/api/v1/resources")
        if status == 200:
            info["pools"] = [{k: p.get(k) for k in ("name", "executor", "capacity")}
                             for p in body.get("pools", [])]
        return info

    def submit(self, i, shell_cmd, workdir):
        body = {"name": f"bench-{i}", "pool": self.pool, "command": ["sh", "-c", shell_cmd],
                "resources": {"cpus": CPUS, "memory_mb": MEMORY_MB}}
        for attempt in range(6):
            try:
                status, job = self.request("POST", "/api/v1/jobs", body)
            except (OSError, http.client.HTTPException) as e:
                status, job = None, str(e)
                self._connect()
            if status in (200, 201) and isinstance(job, dict) and "id" in job:
                return str(job["id"])
            if status is not None and 400 <= status < 500 and status != 429:
                raise BenchError(f"submit of job {i} rejected: HTTP {status}: {job}")
            self.submit_retries += 1
            log(f"submit of job {i} failed (attempt {attempt + 1}): HTTP {status}: {job}")
            time.sleep(0.2 * (attempt + 1))
        raise BenchError(f"submit kept failing for job {i}")

    def job(self, jid):
        status, body = self.request("GET", f"/api/v1/jobs/{jid}")
        if status != 200:
            raise BenchError(f"GET job {jid}: HTTP {status}: {body}")
        return body

    def done(self, jid):
        return self.job(jid).get("state") in TRAINYARD_TERMINAL

    def jobs(self, ids):
        """The server's record of each of our jobs, by id."""
        out = {}
        for s in TRAINYARD_TERMINAL + sched.TRAINYARD_ACTIVE:
            for j in self.list_jobs(s):
                if str(j.get("id")) in ids:
                    out[str(j["id"])] = j
        return out

    def report(self, ids):
        by = {}
        for j in self.jobs(ids).values():
            by[j["state"]] = by.get(j["state"], 0) + 1
        return {"submit_retries": self.submit_retries, "reconnects": self.reconnects,
                "jobs_by_state": by}


def make(args, engine, via):
    if via == "trainyard":
        return TrainyardPool(args, engine)
    return SbatchDirect(args) if engine == "slurm" else RayDirect(args)


# ------------------------------------------------------------------------ helpers
def slurm_records():
    """Job records slurmctld holds now (finished ones stay MinJobAge seconds): a burst that
    follows another runs beside the first one's records, so the report shows them."""
    p = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    return len(p.stdout.split()) if p.returncode == 0 else None


def engine_pids(engine, cluster_dir):
    """The engine's long-lived daemons (for CPU and RSS), plus the Trainyard server."""
    pids = []
    if engine == "slurm":
        for f in ("slurmctld.pid", "slurmd-ty-a.pid", "slurmrestd.pid"):
            try:
                with open(os.path.join(cluster_dir, "slurm", f)) as fh:
                    pids.append(int(fh.read().strip()))
            except (OSError, ValueError):
                pass
    else:
        for comm in ("gcs_server", "raylet"):
            p = subprocess.run(["pgrep", "-x", comm], stdout=subprocess.PIPE, text=True)
            pids += [int(x) for x in p.stdout.split()]
    if os.environ.get("TRAINYARD_PID"):
        pids.append(int(os.environ["TRAINYARD_PID"]))
    return pids


def cpu_delta(before, after):
    rows = []
    for b in before:
        a = next((x for x in after if x["pid"] == b["pid"]), {})
        rows.append({"pid": b["pid"], "comm": b.get("comm"),
                     "cpu_s": round(a.get("cpu_s", 0) - b.get("cpu_s", 0), 2),
                     "rss_mib_after": round(a.get("VmRSS_kB", 0) / 1024, 1)})
    return rows


def host_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return {"node": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "cpu_model": model, "memory": mem, "python": platform.python_version()}


def run_batch(system, n, workdir, tag, deadline, poll):
    """Submits n jobs back to back from one client, then waits until all have ended."""
    sub_t, ack, ids = {}, [], {}
    t_first = time.time()
    for i in range(n):
        cmd = job_cmd(workdir, f"{tag}{i}")
        t0 = time.time()
        jid = system.submit(i, cmd, workdir)
        t1 = time.time()
        sub_t[i], ids[jid] = t0, i
        ack.append((t1 - t0) * 1000.0)
    t_submitted = time.time()
    t_done = sched.wait_done(system, set(ids), workdir, n, f"start.{tag}", deadline, poll)
    return t_first, t_submitted, t_done, sub_t, ack, ids


def trainyard_split(system, ids, starts):
    """Where each job's time went, from the server's timestamps and the job's own stamp:
    queue (created -> Trainyard launched it), engine (launched -> the job ran: the engine's
    submit call plus its own start latency), observe (the job ran -> Trainyard recorded its
    end: the engine poll), hold (launched -> end recorded: how long it held a slot)."""
    queue, engine, observe, hold = [], [], [], []
    for jid, j in system.jobs(set(ids)).items():
        c, s, f = j.get("created_at_ms"), j.get("started_at_ms"), j.get("finished_at_ms")
        st = starts.get(ids[jid])
        if c is not None and s is not None:
            queue.append(s - c)
        if s is not None and st is not None:
            engine.append(st * 1000.0 - s)
        if f is not None and st is not None:
            observe.append(f - st * 1000.0)
        if s is not None and f is not None:
            hold.append(f - s)
    return {"queue_ms": summarize(queue), "engine_ms": summarize(engine),
            "observe_ms": summarize(observe), "hold_ms": summarize(hold),
            "raw": {"queue_ms": queue, "engine_ms": engine, "observe_ms": observe,
                    "hold_ms": hold}}


# ------------------------------------------------------------------------- burst
def burst(args):
    system = make(args, args.engine, args.via)
    workdir = tempfile.mkdtemp(prefix=f"tyc-{system.name}-", dir=args.workdir)
    os.chmod(workdir, 0o777)  # jobs may run as another user
    deadline = time.time() + args.timeout
    pids = engine_pids(args.engine, args.cluster_dir)
    try:
        describe = system.describe()
        if args.warmup:
            log(f"{system.name}: warm-up, {args.warmup} jobs")
            run_batch(system, args.warmup, workdir, "w", deadline, args.poll)
            time.sleep(args.settle)
        before = [proc_info(p) for p in pids]
        load = os.getloadavg()
        records = slurm_records() if args.engine == "slurm" else None
        log(f"{system.name}: submitting {args.jobs} jobs (load average {load[0]:.2f})")
        busy0, client0 = sched.machine_busy_s(), sched.client_cpu_s()
        t_first, t_submitted, t_done, sub_t, ack, ids = run_batch(
            system, args.jobs, workdir, "j", deadline, args.poll)
        busy1, client1 = sched.machine_busy_s(), sched.client_cpu_s()
        after = [proc_info(p) for p in pids]
        starts = {}
        for i in range(args.jobs):
            s = read_start(os.path.join(workdir, f"start.j{i}"))
            if s is not None:
                starts[i] = s
        lat = [(starts[i] - sub_t[i]) * 1000.0 for i in starts]
        wall = t_done - t_first
        res = {
            "kind": "burst", "engine": args.engine, "via": args.via, "system": system.name,
            "jobs": args.jobs, "jobs_started": len(starts),
            "jobs_missing_start_file": args.jobs - len(starts),
            "wall_s": wall, "jobs_per_s": args.jobs / wall,
            "submit_s": t_submitted - t_first,
            "submits_per_s": args.jobs / (t_submitted - t_first),
            "last_start_after_first_submit_s": (max(starts.values()) - t_first) if starts else None,
            "start_rate_per_s": (len(starts) / (max(starts.values()) - min(starts.values()))
                                 if len(starts) > 1 else None),
            "ack_ms": summarize(ack),
            "latency_ms": summarize(lat),
            "machine_cpu_busy_s": busy1 - busy0,
            "machine_cpu_busy_frac": (busy1 - busy0) / (wall * (os.cpu_count() or 1)),
            "client_cpu_s": client1 - client0,
            "daemons": cpu_delta(before, after),
            "loadavg_before": load,
            "slurm_job_records_at_start": records,
            "system_info": describe,
            "system_report": system.report(set(ids)),
            "host": host_info(),
            "params": {"warmup": args.warmup, "poll_s": args.poll, "cpus": CPUS,
                       "memory_mb": MEMORY_MB, "command": job_cmd(workdir, "j<i>")},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_first)),
        }
        # The samples themselves, so that the report can pool the parts of a split burst.
        res["raw"] = {"ack_ms": ack, "latency_ms": lat}
        if args.via == "trainyard":
            split = trainyard_split(system, ids, starts)
            res["raw"].update(split.pop("raw"))
            res["trainyard_split"] = split
    finally:
        if not args.keep_files:
            shutil.rmtree(workdir, ignore_errors=True)
    log(f"{system.name}: {args.jobs} jobs in {wall:.1f} s = {res['jobs_per_s']:.2f} jobs/s; "
        f"ack p50 {res['ack_ms']['p50']:.1f} ms")
    return res


# ------------------------------------------------------------------------- probe
def probe(args):
    """Idle submit->start: one job at a time into the empty engine, direct and through
    Trainyard taking turns (the order flips each round), each after a random 0-1 s pause
    so submits do not phase-lock to an engine's periodic timer; each job has ended (as
    its path reports it) before the next is submitted."""
    paths = [make(args, args.engine, "direct"), make(args, args.engine, "trainyard")]
    workdir = tempfile.mkdtemp(prefix=f"tyc-probe-{args.engine}-", dir=args.workdir)
    os.chmod(workdir, 0o777)
    deadline = time.time() + args.timeout
    rng = random.Random(4242)
    rows = {p.name: {"ack_ms": [], "latency_ms": [], "trainyard_launch_ms": [],
                     "engine_ms": [], "observe_ms": [], "ended_seen_ms": []} for p in paths}
    raw = {p.name: [] for p in paths}  # per job: submit, acknowledged, stamp (s since epoch)
    try:
        describe = {p.name: p.describe() for p in paths}
        for k in range(-args.warmup, args.probes):
            order = paths if k % 2 == 0 else paths[::-1]
            for system in order:
                tag = f"{'w' if k < 0 else 'p'}{abs(k)}{system.via[0]}"
                path = os.path.join(workdir, f"start.{tag}")
                time.sleep(rng.uniform(0.0, 1.0))
                t0 = time.time()
                jid = system.submit(k, job_cmd(workdir, tag), workdir)
                t1 = time.time()
                while not os.path.exists(path) or os.path.getsize(path) == 0:
                    if time.time() > deadline:
                        raise BenchError(f"timeout waiting for {system.name} probe {k}")
                    time.sleep(0.005)
                while not system.done(jid):
                    if time.time() > deadline:
                        raise BenchError(f"timeout waiting for {system.name} probe {k} to end")
                    time.sleep(args.poll)
                t_end = time.time()
                if k < 0:
                    continue
                st = read_start(path)
                r = rows[system.name]
                r["ack_ms"].append((t1 - t0) * 1000.0)
                r["latency_ms"].append((st - t0) * 1000.0)
                r["ended_seen_ms"].append((t_end - st) * 1000.0)
                raw[system.name].append([round(t0, 6), round(t1, 6), st])
                if isinstance(system, TrainyardPool):
                    j = system.job(jid)
                    s, f = j.get("started_at_ms"), j.get("finished_at_ms")
                    if s is not None:
                        r["trainyard_launch_ms"].append(s - t0 * 1000.0)
                        r["engine_ms"].append(st * 1000.0 - s)
                    if f is not None:
                        r["observe_ms"].append(f - st * 1000.0)
            if k >= 0 and (k + 1) % 10 == 0:
                log(f"probe {args.engine}: {k + 1}/{args.probes}")
    finally:
        if not args.keep_files:
            shutil.rmtree(workdir, ignore_errors=True)
    out = {"kind": "probe", "engine": args.engine, "probes": args.probes,
           "system_info": describe, "host": host_info(),
           "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "paths": {}}
    for name, r in rows.items():
        out["paths"][name] = {k: summarize(v) for k, v in r.items() if v}
        out["paths"][name]["raw_latency_ms"] = [round(x, 2) for x in r["latency_ms"]]
        out["paths"][name]["raw_ack_ms"] = [round(x, 2) for x in r["ack_ms"]]
        out["paths"][name]["raw_submit_ack_start_s"] = raw[name]
    return out


# -------------------------------------------------------------------------- plan
def plan(args):
    """How many Ray jobs per side: `--want` unless the trials say that would take longer
    than `--budget` seconds on the slower side; then `--fallback` (less if even that would
    not fit)."""
    rates = []
    for p in args.trial:
        with open(p) as f:
            rates.append(json.load(f)["jobs_per_s"])
    slow = min(rates)
    eta = args.want / slow
    if eta <= args.budget:
        n = args.want
    else:
        n = min(args.fallback, max(50, int(slow * args.budget) // 50 * 50))
    log(f"Ray trial: slower side {slow:.2f} jobs/s; {args.want} jobs would take ~{eta:.0f} s "
        f"per side; running {n}")
    print(n)
    return 0


# ------------------------------------------------------------------------ report
def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def ratio(a, b):
    return f"{b / a:.3f}×" if a and b is not None else "-"


def load_burst(load, engine, via):
    """One path's burst: its one file, or its parts (`burst-ENGINE-VIA-K.json`, K = 1, 2, …;
    run.sh's ABBA order) pooled: jobs, wall and CPU added up, percentiles over every job."""
    whole = load(f"burst-{engine}-{via}.json")
    if whole:
        whole["parts"] = [whole]
        return whole
    parts = []
    while (part := load(f"burst-{engine}-{via}-{len(parts) + 1}.json")) is not None:
        parts.append(part)
    if not parts:
        return None

    def total(key):
        return sum(p[key] for p in parts)

    def pooled(key):
        return summarize([x for p in parts for x in (p.get("raw") or {}).get(key, [])])

    daemons = {}
    for p in parts:
        for d in p["daemons"]:
            daemons[d["comm"]] = daemons.get(d["comm"], 0.0) + d["cpu_s"]
    jobs, wall = total("jobs"), total("wall_s")
    out = {"system": parts[0]["system"], "jobs": jobs, "wall_s": wall, "jobs_per_s": jobs / wall,
           "submits_per_s": jobs / total("submit_s"), "ack_ms": pooled("ack_ms"),
           "latency_ms": pooled("latency_ms"), "machine_cpu_busy_s": total("machine_cpu_busy_s"),
           "jobs_missing_start_file": total("jobs_missing_start_file"),
           "daemons": [{"comm": c, "cpu_s": v} for c, v in daemons.items()], "parts": parts}
    if via == "trainyard":
        out["trainyard_split"] = {k: pooled(k) for k in ("queue_ms", "engine_ms", "observe_ms", "hold_ms")}
    return out


def report(args):
    d = args.dir

    def load(name):
        p = os.path.join(d, name)
        if not os.path.exists(p):
            return None
        with open(p) as f:
            return json.load(f)

    lines = [f"# bench/cluster results ({os.path.basename(os.path.normpath(d))})", ""]
    meta = load("meta.json") or {}
    if meta:
        lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in meta.items()] + [""]
    for engine in ("slurm", "ray"):
        a, b = load_burst(load, engine, "direct"), load_burst(load, engine, "trainyard")
        trials = [load(f"trial-{engine}-direct.json"), load(f"trial-{engine}-trainyard.json")]
        if a and b:
            lines += [f"## {engine}: burst of {a['jobs']} / {b['jobs']} jobs", "",
                      f"| metric | {engine} direct | Trainyard→{engine} | Trainyard / direct |",
                      "|---|--:|--:|--:|"]

            def row(label, va, vb, spec=".1f"):
                lines.append(f"| {label} | {fmt(va, spec)} | {fmt(vb, spec)} | {ratio(va, vb)} |")

            row("throughput, jobs/s", a["jobs_per_s"], b["jobs_per_s"], ".2f")
            row("wall, s", a["wall_s"], b["wall_s"])
            row("submit phase, jobs/s", a["submits_per_s"], b["submits_per_s"])
            for k in ("p50", "p99"):
                row(f"submit ack {k}, ms", a["ack_ms"][k], b["ack_ms"][k], ".2f")
            for k in ("p50", "p99"):
                row(f"submit→start {k}, s", a["latency_ms"][k] / 1000, b["latency_ms"][k] / 1000, ".1f")
            row("machine CPU busy, s", a["machine_cpu_busy_s"], b["machine_cpu_busy_s"])
            row("jobs without a start stamp", a["jobs_missing_start_file"],
                b["jobs_missing_start_file"], "d")
            sp = b.get("trainyard_split") or {}
            if sp.get("hold_ms"):
                lines += ["", "Trainyard's side, per job (ms): " + "; ".join(
                    f"{k[:-3]} p50 {fmt(v['p50'], '.0f')} / mean {fmt(v['mean'], '.0f')}"
                    for k, v in sp.items() if v)]
            lines += ["", "Daemons' CPU during the run: " + "; ".join(
                f"{r['system']}: " + ", ".join(f"{x['comm']} {x['cpu_s']:.1f} s" for x in r["daemons"])
                for r in (a, b))]
            parts = sorted(a["parts"] + b["parts"], key=lambda p: p.get("started_at") or "")
            if len(parts) > 2:
                lines += ["", "The burst in parts, in the order they ran:", "",
                          "| part | path | jobs | jobs/s | slurmctld job records at its start |",
                          "|--:|---|--:|--:|--:|"]
                lines += [f"| {i} | {p['system']} | {p['jobs']} | {p['jobs_per_s']:.3f} | "
                          f"{fmt(p.get('slurm_job_records_at_start'), 'd')} |"
                          for i, p in enumerate(parts, 1)]
            if all(trials):
                lines += ["", f"Trial of {trials[0]['jobs']} jobs: direct "
                          f"{trials[0]['jobs_per_s']:.2f} jobs/s, Trainyard {trials[1]['jobs_per_s']:.2f} jobs/s."]
            lines.append("")
        pr = load(f"probe-{engine}.json")
        if pr:
            da, tb = pr["paths"][f"{engine}-direct"], pr["paths"][f"{engine}-trainyard"]
            lines += [f"## {engine}: idle, one job at a time ({pr['probes']} each way, interleaved)", "",
                      f"| metric (ms) | {engine} direct | Trainyard→{engine} | difference | ratio |",
                      "|---|--:|--:|--:|--:|"]
            for key, label in (("ack_ms", "submit ack"), ("latency_ms", "submit→start")):
                for k in ("p50", "p90", "max"):
                    va, vb = da[key][k], tb[key][k]
                    lines.append(f"| {label} {k} | {fmt(va)} | {fmt(vb)} | {fmt(vb - va, '+.1f')} | {ratio(va, vb)} |")
            va, vb = (da.get("ended_seen_ms") or {}).get("p50"), (tb.get("ended_seen_ms") or {}).get("p50")
            lines.append(f"| job ran → client sees it ended, p50 | {fmt(va)} | {fmt(vb)} | "
                         f"{fmt(vb - va, '+.1f') if va is not None and vb is not None else '-'} | {ratio(va, vb)} |")
            for key, label in (("trainyard_launch_ms", "Trainyard: submit → launched"),
                               ("engine_ms", "Trainyard: launched → job ran"),
                               ("observe_ms", "Trainyard: job ran → end recorded")):
                if tb.get(key):
                    lines.append(f"| {label} p50 / max | | {fmt(tb[key]['p50'])} / {fmt(tb[key]['max'])} | | |")
            lines.append("")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--engine", choices=("slurm", "ray"), required=True)
        p.add_argument("--out", required=True, help="write the result JSON here")
        p.add_argument("--partition", default="debug", help="Slurm partition (direct path)")
        p.add_argument("--ray-url", default=os.environ.get("TRAINYARD_TEST_RAY_URL", "http://127.0.0.1:58265"))
        p.add_argument("--pool-slurm", default="hpc")
        p.add_argument("--pool-ray", default="ray")
        p.add_argument("--cluster-dir", default="/tmp/bench-cluster")
        p.add_argument("--workdir", default="/var/tmp", help="parent of the start-file folder")
        p.add_argument("--poll", type=float, default=0.1, help="client poll interval, s")
        p.add_argument("--timeout", type=float, default=3600)
        p.add_argument("--keep-files", action="store_true")

    b = sub.add_parser("burst", help="N jobs back to back through one path")
    common(b)
    b.add_argument("--via", choices=("direct", "trainyard"), required=True)
    b.add_argument("--jobs", type=int, default=1000)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--settle", type=float, default=3.0)
    p = sub.add_parser("probe", help="idle submit->start, direct and through Trainyard in turns")
    common(p)
    p.add_argument("--probes", type=int, default=30)
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    q = sub.add_parser("plan", help="how many Ray jobs fit the time budget")
    q.add_argument("--trial", action="append", required=True)
    q.add_argument("--want", type=int, default=1000)
    q.add_argument("--budget", type=float, default=900)
    q.add_argument("--fallback", type=int, default=200)
    r = sub.add_parser("report", help="summary.md of a results folder")
    r.add_argument("dir")
    args = ap.parse_args()
    # A SIGTERM (run.sh stopped) still removes the start-file folder in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.cmd == "plan":
        return plan(args)
    if args.cmd == "report":
        return report(args)
    try:
        res = burst(args) if args.cmd == "burst" else probe(args)
    except BenchError as e:
        log(f"ERROR: {e}")
        return 1
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"wrote {args.out}")
    return 0 if res.get("jobs_missing_start_file", 0) == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
