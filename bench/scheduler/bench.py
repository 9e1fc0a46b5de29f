#!/usr/bin/env python3
"""Scheduler benchmark: job throughput and submit->start latency, Slurm vs Trainyard.

    python3 bench.py --system slurm     --jobs 1000 --out slurm.json
    python3 bench.py --system trainyard --jobs 1000 --out trainyard.json --server-pid PID
    python3 bench.py --compare slurm.json trainyard.json

Every job is one CPU and runs `date +%s.%N > DIR/start.<i>`, so each job records its own
start time on local disk the same way on both systems. The client records the submit time
just before each submit call (one sbatch process / one HTTP POST, strictly one after the
other from one client). latency = start - submit. Throughput = N / (time from the first
submit until the client has observed that all N jobs are finished).

Python 3 standard library only. See README.md.
"""

import argparse
import http.client
import json
import math
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

TERMINAL_SLURM = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT", "REVOKED",
}
TRAINYARD_ACTIVE = ("queued", "running")
TRAINYARD_TERMINAL = ("succeeded", "failed", "cancelled")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- Slurm
class Slurm:
    name = "slurm"

    def __init__(self, args):
        self.args = args
        if "SLURM_CONF" not in os.environ:
            default = "/var/tmp/trainyard-bench-slurm/slurm.conf"
            if os.path.exists(default):
                os.environ["SLURM_CONF"] = default
        if not shutil.which("sbatch"):
            raise BenchError("sbatch not found; run slurm-up.sh first")
        self.job_name = f"tyb-{os.getpid()}"
        self.submit_retries = 0

    def _run(self, argv, timeout=60):
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)

    def describe(self):
        info = {}
        try:
            info["version"] = self._run(["sinfo", "-V"]).stdout.strip()
            cfg = self._run(["scontrol", "show", "config"]).stdout
            keep = ("SchedulerType", "SchedulerParameters", "SelectType", "SelectTypeParameters",
                    "MinJobAge", "MaxJobCount", "ProctrackType", "TaskPlugin",
                    "JobAcctGatherType", "AccountingStorageType", "SLURM_CONF")
            for line in cfg.splitlines():
                k, _, v = line.partition("=")
                if k.strip() in keep:
                    info[k.strip()] = v.strip()
            info["nodes"] = self._run(["sinfo", "-h", "-N", "-o", "%N %T %c"]).stdout.strip()
        except Exception as e:  # description is best effort
            info["error"] = str(e)
        return info

    def submit(self, i, shell_cmd, workdir):
        argv = ["sbatch", "--parsable", "--job-name", self.job_name, "--ntasks=1",
                "--cpus-per-task=1", "--output=/dev/null", "--error=/dev/null",
                f"--chdir={workdir}", f"--wrap={shell_cmd}"]
        for attempt in range(6):
            try:
                p = self._run(argv)
            except subprocess.TimeoutExpired:
                p = None
            if p is not None and p.returncode == 0:
                return p.stdout.strip().split(";")[0]
            self.submit_retries += 1
            err = p.stderr.strip() if p is not None else "timeout"
            log(f"sbatch failed for job {i} (attempt {attempt + 1}): {err}")
            time.sleep(0.2 * (attempt + 1))
        raise BenchError(f"sbatch kept failing for job {i}")

    def active(self, ids):
        """Number of our jobs not yet in a terminal state (purged jobs count as done)."""
        p = self._run(["squeue", "-h", "--name", self.job_name, "--states=all", "-o", "%i %T"])
        if p.returncode != 0:
            raise BenchError(f"squeue failed: {p.stderr.strip()}")
        n = 0
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ids and parts[1] not in TERMINAL_SLURM:
                n += 1
        return n

    def final_report(self, ids):
        return {"submit_retries": self.submit_retries}


# ----------------------------------------------------------------------- Trainyard
class Trainyard:
    name = "trainyard"

    def __init__(self, args):
        self.args = args
        base = os.environ.get("TRAINYARD_SERVER", "http://127.0.0.1:8080")
        u = urllib.parse.urlsplit(base)
        if u.scheme != "http":
            raise BenchError(f"only http:// is supported, got {base}")
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        token = os.environ.get("TRAINYARD_TOKEN")
        if not token:
            data_dir = os.environ.get("TRAINYARD_DATA_DIR", "./trainyard-data")
            path = os.path.join(data_dir, "admin-token")
            try:
                with open(path) as f:
                    token = f.read().strip()
            except OSError as e:
                raise BenchError(f"no TRAINYARD_TOKEN and cannot read {path}: {e}")
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.conn = None
        self.submit_retries = 0
        self.reconnects = 0
        self.server_jobs = {}

    def _connect(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method, path, body=None, retry_stale=True):
        """One request on the kept-alive connection; reconnects once if the server had
        closed it (the request never reached the server, so a retry is safe)."""
        if self.conn is None:
            self._connect()
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = self.conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                http.client.CannotSendRequest):
            if not retry_stale:
                raise
            self.reconnects += 1
            self._connect()
            return self.request(method, path, body, retry_stale=False)
        raw = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            self._connect()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return resp.status, payload

    def describe(self):
        info = {"server": f"http://{self.host}:{self.port}{self.prefix}"}
        try:
            status, body = self.request("GET", "/healthz")
            info["healthz"] = {"status": status, "body": body}
        except Exception as e:
            info["error"] = str(e)
        return info

    def submit(self, i, shell_cmd, workdir):
        body = {"name": f"bench-{i}", "command": ["sh", "-c", shell_cmd],
                "resources": {"cpus": 1}}
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

    def list_jobs(self, state):
        jobs, cursor = [], None
        while True:
            q = {"state": state, "limit": "500"}
            if cursor:
                q["cursor"] = cursor
            status, body = self.request("GET", "/api/v1/jobs?" + urllib.parse.urlencode(q))
            if status != 200 or not isinstance(body, dict):
                raise BenchError(f"list jobs state={state}: HTTP {status}: {body}")
            jobs.extend(body.get("jobs") or [])
            cursor = body.get("next_cursor")
            if not cursor:
                return jobs

    def active(self, ids):
        return sum(1 for s in TRAINYARD_ACTIVE for j in self.list_jobs(s) if str(j.get("id")) in ids)

    def final_report(self, ids):
        """After the timed part: fetch server-side timestamps and outcomes."""
        by_state, queue_ms, run_ms = {}, [], []
        for s in TRAINYARD_TERMINAL + TRAINYARD_ACTIVE:
            for j in self.list_jobs(s):
                if str(j.get("id")) not in ids:
                    continue
                by_state[s] = by_state.get(s, 0) + 1
                c, st, fin = j.get("created_at_ms"), j.get("started_at_ms"), j.get("finished_at_ms")
                if c is not None and st is not None:
                    queue_ms.append(st - c)
                if st is not None and fin is not None:
                    run_ms.append(fin - st)
        return {
            "submit_retries": self.submit_retries,
            "reconnects": self.reconnects,
            "jobs_by_state": by_state,
            "server_queue_wait_ms": summarize(queue_ms),
            "server_run_ms": summarize(run_ms),
        }


# ------------------------------------------------------------------------- helpers
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
    return {"n": len(v), "min": v[0], "p50": percentile(v, 50), "p90": percentile(v, 90),
            "p99": percentile(v, 99), "max": v[-1], "mean": sum(v) / len(v)}


def proc_info(pid):
    info = {"pid": pid}
    try:
        with open(f"/proc/{pid}/comm") as f:
            info["comm"] = f.read().strip()
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    info[k + "_kB"] = int(v.split()[0])
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        # fields[11..14] = utime stime cutime cstime (stat fields 14..17)
        info["cpu_s"] = (int(fields[11]) + int(fields[12])) / tck
        info["cpu_children_s"] = (int(fields[13]) + int(fields[14])) / tck
    except OSError as e:
        info["error"] = str(e)
    return info


def machine_busy_s():
    """Seconds of CPU time the whole machine spent busy (all CPUs, from /proc/stat)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + (vals[7] if len(vals) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def client_cpu_s():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def job_cmd(workdir, tag):
    return f"date +%s.%N > {workdir}/start.{tag}"


def wait_done(system, ids, workdir, n_files, prefix, deadline, poll):
    """Wait until every job is finished, keeping the polling light.

    Phase 1: until all start files exist, only list the local directory (no load on the
    scheduler), asking the scheduler only if no new file has appeared for 3 s (a job
    that failed before writing its file). Phase 2: ask the scheduler every `poll`
    seconds until none of our jobs is queued or running."""
    last_count, last_progress = -1, time.time()
    while True:
        count = sum(1 for name in os.listdir(workdir) if name.startswith(prefix))
        now = time.time()
        if count >= n_files:
            break
        if count != last_count:
            last_count, last_progress = count, now
        elif now - last_progress > 3.0:
            if system.active(ids) == 0:
                log(f"scheduler reports all jobs done but only {count}/{n_files} start files exist")
                return time.time()
            last_progress = now
        if now > deadline:
            raise BenchError(f"timeout: only {count}/{n_files} jobs started")
        time.sleep(0.05)
    while True:
        if system.active(ids) == 0:
            return time.time()
        if time.time() > deadline:
            raise BenchError("timeout waiting for running jobs to finish")
        time.sleep(poll)


def run_batch(system, n, workdir, tag_prefix, deadline, poll):
    sub_t, ids = {}, set()
    t_first = time.time()
    for i in range(n):
        tag = f"{tag_prefix}{i}"
        cmd = job_cmd(workdir, tag)
        sub_t[i] = time.time()
        ids.add(system.submit(i, cmd, workdir))
    t_submitted = time.time()
    t_done = wait_done(system, ids, workdir, n, f"start.{tag_prefix}", deadline, poll)
    return t_first, t_submitted, t_done, sub_t, ids


def run_probe(system, k, workdir, deadline, poll):
    """Idle latency: submit one job at a time into an otherwise empty system, wait for its
    start file, then for it to finish, before the next. No queueing behind other jobs."""
    lat = []
    rng = random.Random(12345)
    for i in range(k):
        # random gap so submits don't phase-lock to a scheduler's periodic timer
        time.sleep(rng.uniform(0.0, 1.0))
        path = os.path.join(workdir, f"start.p{i}")
        t_sub = time.time()
        jid = system.submit(i, job_cmd(workdir, f"p{i}"), workdir)
        while not os.path.exists(path):
            if time.time() > deadline:
                raise BenchError("timeout in latency probe")
            time.sleep(0.002)
        while system.active({jid}) != 0:
            if time.time() > deadline:
                raise BenchError("timeout in latency probe")
            time.sleep(poll)
        s = read_start(path)
        if s is not None:
            lat.append((s - t_sub) * 1000.0)
    return lat


def read_start(path):
    try:
        with open(path) as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


def bench(args):
    system = Slurm(args) if args.system == "slurm" else Trainyard(args)
    meta = dict(kv.split("=", 1) for kv in args.meta)
    base = args.workdir or "/var/tmp"
    os.makedirs(base, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"tyb-{args.system}-", dir=base)
    os.chmod(workdir, 0o777)  # jobs may run as another user
    deadline = time.time() + args.timeout
    try:
        describe = system.describe()
        servers_before = [proc_info(p) for p in args.server_pid]

        if args.warmup:
            log(f"warm-up: {args.warmup} jobs")
            run_batch(system, args.warmup, workdir, "w", deadline, args.poll)
            time.sleep(args.settle)  # let the warm-up jobs age out
            servers_before = [proc_info(p) for p in args.server_pid]

        load_before = os.getloadavg()
        log(f"{args.system}: submitting {args.jobs} jobs (load average {load_before[0]:.2f})")
        busy0, client0 = machine_busy_s(), client_cpu_s()
        t_first, t_submitted, t_done, sub_t, ids = run_batch(
            system, args.jobs, workdir, "j", deadline, args.poll)
        busy1, client1 = machine_busy_s(), client_cpu_s()
        servers_after = [proc_info(p) for p in args.server_pid]
        extra = system.final_report(ids)
        probe = []
        if args.probe:
            time.sleep(args.settle)
            log(f"idle-latency probe: {args.probe} jobs, one at a time")
            probe = run_probe(system, args.probe, workdir, deadline, args.poll)

        lat, starts, missing = [], [], 0
        for i in range(args.jobs):
            s = read_start(os.path.join(workdir, f"start.j{i}"))
            if s is None:
                missing += 1
                continue
            starts.append(s)
            lat.append((s - sub_t[i]) * 1000.0)
        wall = t_done - t_first
        res = {
            "system": args.system,
            "jobs": args.jobs,
            "jobs_started": len(lat),
            "jobs_missing_start_file": missing,
            "wall_s": wall,
            "jobs_per_s": args.jobs / wall if wall > 0 else None,
            "submit_s": t_submitted - t_first,
            "submits_per_s": args.jobs / (t_submitted - t_first),
            "last_start_after_first_submit_s": (max(starts) - t_first) if starts else None,
            "latency_ms": summarize(lat),
            "idle_latency_ms": summarize(probe),
            "machine_cpu_busy_s": busy1 - busy0,
            "machine_cpu_busy_frac": (busy1 - busy0) / (wall * (os.cpu_count() or 1)),
            "client_cpu_s": client1 - client0,
            "loadavg_before": load_before,
            "servers_before": servers_before,
            "servers_after": servers_after,
            "system_info": describe,
            "system_report": extra,
            "host": {"node": platform.node(), "kernel": platform.release(),
                     "cpus": os.cpu_count(), "python": platform.python_version()},
            "params": {"warmup": args.warmup, "poll_s": args.poll, "workdir": workdir,
                       "command": job_cmd(workdir, "j<i>"),
                       "probe": args.probe},
            "meta": meta,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_first)),
            "latencies_ms": [round(x, 3) for x in lat],
        }
    finally:
        if not args.keep_files:
            shutil.rmtree(workdir, ignore_errors=True)
    if missing:
        log(f"WARNING: {missing} jobs left no start file (failed?)")
    return res


# ------------------------------------------------------------------------- output
def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def print_table(results):
    hdr = (f"{'system':<10} {'jobs':>5} {'wall_s':>7} {'jobs/s':>7} {'submit/s':>8} "
           f"{'p50_ms':>8} {'p90_ms':>8} {'p99_ms':>8} {'max_ms':>8} {'cpu_busy':>8} {'idle_p50':>8} {'idle_max':>8}")
    print(hdr)
    for r in results:
        l = r["latency_ms"] or {}
        il = r.get("idle_latency_ms") or {}
        print(f"{r['system']:<10} {r['jobs']:>5} {fmt(r['wall_s'], '.2f'):>7} "
              f"{fmt(r['jobs_per_s']):>7} {fmt(r['submits_per_s']):>8} "
              f"{fmt(l.get('p50')):>8} {fmt(l.get('p90')):>8} {fmt(l.get('p99')):>8} "
              f"{fmt(l.get('max')):>8} {fmt(100 * r['machine_cpu_busy_frac'], '.0f') + '%':>8} "
              f"{fmt(il.get('p50')):>8} {fmt(il.get('max')):>8}")
    for r in results:
        for s in r.get("servers_before") or []:
            after = next((a for a in r.get("servers_after") or [] if a["pid"] == s["pid"]), {})
            print(f"  {r['system']}: {s.get('comm', '?')} (pid {s['pid']}): idle RSS "
                  f"{fmt(s.get('VmRSS_kB', 0) / 1024.0)} MiB, after run RSS "
                  f"{fmt(after.get('VmRSS_kB', 0) / 1024.0)} MiB, peak "
                  f"{fmt(after.get('VmHWM_kB', 0) / 1024.0)} MiB, CPU during run "
                  f"{fmt(after.get('cpu_s', 0) - s.get('cpu_s', 0), '.2f')} s")


def compare(paths):
    rs = []
    for p in paths:
        with open(p) as f:
            rs.append(json.load(f))
    print_table(rs)
    if len(rs) != 2:
        return
    a, b = rs  # ratio = b / a
    print()
    print(f"{'metric':<26} {a['system']:>12} {b['system']:>12} {b['system'] + '/' + a['system']:>20}")

    def row(name, va, vb, better):
        ratio = (vb / va) if (va and vb is not None) else None
        print(f"{name:<26} {fmt(va, '.2f'):>12} {fmt(vb, '.2f'):>12} "
              f"{fmt(ratio, '.2f') + 'x':>11} ({better} is better)")

    row("throughput jobs/s", a["jobs_per_s"], b["jobs_per_s"], "higher")
    row("submit rate jobs/s", a["submits_per_s"], b["submits_per_s"], "higher")
    for k in ("p50", "p90", "p99", "max"):
        row(f"latency {k} ms", (a["latency_ms"] or {}).get(k), (b["latency_ms"] or {}).get(k), "lower")
    for k in ("p50", "max"):
        row(f"idle latency {k} ms", (a.get("idle_latency_ms") or {}).get(k),
            (b.get("idle_latency_ms") or {}).get(k), "lower")
    row("machine CPU busy s", a["machine_cpu_busy_s"], b["machine_cpu_busy_s"], "lower")
    ra = sum(s.get("VmRSS_kB", 0) for s in a.get("servers_before") or []) / 1024.0
    rb = sum(s.get("VmRSS_kB", 0) for s in b.get("servers_before") or []) / 1024.0
    row("idle server RSS MiB", ra or None, rb or None, "lower")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=("slurm", "trainyard"))
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--out", help="write results JSON here")
    ap.add_argument("--server-pid", type=int, action="append", default=[],
                    help="server process to report RSS/CPU for (repeatable)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed jobs run first (default 5)")
    ap.add_argument("--probe", type=int, default=20,
                    help="after the burst, jobs submitted one at a time into the idle system "
                         "to measure unqueued submit->start latency (default 20; 0 = off)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to wait after the warm-up (default 3)")
    ap.add_argument("--poll", type=float, default=0.1,
                    help="scheduler poll interval once all jobs have started (default 0.1 s)")
    ap.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    ap.add_argument("--workdir", help="parent of the start-file dir (default /var/tmp, local disk)")
    ap.add_argument("--keep-files", action="store_true", help="keep the start files")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="extra key=value recorded in the JSON (repeatable)")
    ap.add_argument("--compare", nargs="+", metavar="JSON", help="print results side by side")
    args = ap.parse_args()

    if args.compare:
        compare(args.compare)
        return 0
    if not args.system:
        ap.error("--system is required (or --compare)")
    if any("=" not in kv for kv in args.meta):
        ap.error("--meta takes KEY=VALUE")
    try:
        res = bench(args)
    except BenchError as e:
        log(f"ERROR: {e}")
        return 1
    print_table([res])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        log(f"wrote {args.out}")
    return 0 if res["jobs_missing_start_file"] == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
