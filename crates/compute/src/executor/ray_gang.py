# The driver of a gang on Ray (run as the Ray job's entrypoint by Trainyard's Ray executor).
# It reserves one bundle per worker in a placement group, so that every worker starts or
# none does, finds where rank 0 runs, starts the workers as Ray tasks in their bundles with
# torchrun's variables, and ends them all when one fails.
import json
import os
import socket
import subprocess
import sys

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

spec = json.loads(sys.argv[1])
n = spec["workers"]
ray.init(address="auto", log_to_driver=True)
bundle = {"CPU": spec["cpus"]}
if spec["gpus"]:
    bundle["GPU"] = spec["gpus"]
if spec.get("memory"):
    bundle["memory"] = spec["memory"]
pg = ray.util.placement_group([bundle] * n, strategy="PACK")
ray.get(pg.ready())


def in_bundle(i):
    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=i)


@ray.remote(num_cpus=0)
def where():
    s = socket.socket()
    s.bind(("", 0))
    port = s.getsockname()[1]
    s.close()
    return ray.util.get_node_ip_address(), port


places = ray.get([where.options(scheduling_strategy=in_bundle(i)).remote() for i in range(n)])
nodes = []
for ip, _ in places:
    if ip not in nodes:
        nodes.append(ip)
master_addr, master_port = places[0]


@ray.remote
def worker(rank):
    ip = places[rank][0]
    same_node = [r for r in range(n) if places[r][0] == ip]
    # The job's variables reach every task through the job's runtime_env.
    env = dict(os.environ)
    env.update({
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(n),
        "RANK": str(rank),
        "LOCAL_RANK": str(same_node.index(rank)),
        "LOCAL_WORLD_SIZE": str(len(same_node)),
        "NODE_RANK": str(nodes.index(ip)),
        "GROUP_RANK": str(nodes.index(ip)),
    })
    sys.stdout.flush()
    return subprocess.run(spec["argv"], env=env, cwd=spec.get("cwd")).returncode


tasks = {
    worker.options(num_cpus=spec["cpus"], num_gpus=spec["gpus"], scheduling_strategy=in_bundle(r)).remote(r): r
    for r in range(n)
}
failure = 0
pending = list(tasks)
while pending:
    done, pending = ray.wait(pending, num_returns=1)
    code = ray.get(done[0])
    if code != 0 and failure == 0:
        failure = code if code > 0 else 128 - code
        print(f"trainyard gang: worker {tasks[done[0]]} ended with {code}; stopping the other {len(pending)}", flush=True)
        for task in pending:
            ray.cancel(task, force=True)
        break
sys.exit(failure)
