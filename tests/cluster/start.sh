#!/usr/bin/env bash
# Starts the cluster engines the cluster suite (crates/cli/tests/clusters.rs) runs jobs on,
# as root, without systemd:
#   - Slurm 22.05 with two nodes, each 2 CPUs, 4 GB and fake GRES gpu:2: `ty-a` (this
#     host, 10.77.0.1) and `ty-b`, a host of its own made with a network namespace and a
#     veth pair (10.77.0.2), so what crosses between nodes crosses a network. Partition
#     `debug` (the default) is ty-a alone; `multi` is both.
#   - slurmrestd (OpenAPI v0.0.38, JWT auth) as an unprivileged user,
#   - a Ray head with its dashboard's Jobs API (2 CPUs, 2 fake GPUs).
# Installs what is missing (Debian's Slurm packages, Ray in its own venv). Prints the
# variables the suite reads; `tests/cluster/stop.sh DIR` stops everything.
# Usage: tests/cluster/start.sh DIR > DIR/env
set -euo pipefail
DIR=$(realpath "$1")
RAY_VENV=${TRAINYARD_RAY_VENV:-/var/tmp/trainyard-ray-venv}
RAY_VERSION=2.60.0
REST_PORT=${TRAINYARD_TEST_SLURMRESTD_PORT:-56820}
DASH_PORT=${TRAINYARD_TEST_RAY_DASHBOARD_PORT:-58265}
log() { echo "$*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmrestd >/dev/null; then
    log "installing Slurm 22.05 from Debian"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm slurmctld slurmd slurm-client munge slurm-wlm-jwt-plugin slurmrestd >&2
fi
if ! "$RAY_VENV/bin/python" -c "import ray, sys; sys.exit(ray.__version__ != '$RAY_VERSION')" 2>/dev/null; then
    log "installing ray[default]==$RAY_VERSION into $RAY_VENV"
    rm -rf "$RAY_VENV"
    python3 -m venv "$RAY_VENV"
    "$RAY_VENV/bin/pip" install -q --disable-pip-version-check "ray[default]==$RAY_VERSION" >&2
fi

# A Slurm left by an earlier run on this machine would hold the ports.
if pgrep -x slurmctld >/dev/null; then scontrol shutdown >/dev/null 2>&1 || true; sleep 2; fi
pkill -x slurmrestd 2>/dev/null || true

mkdir -p "$DIR"/slurm/{state,spool,log,fakegpu}
# The second node's network: a namespace, a veth pair, names in /etc/hosts.
ip netns del ty-b 2>/dev/null || true
ip link del ty-a0 2>/dev/null || true
ip netns add ty-b
ip link add ty-a0 type veth peer name ty-b0
ip link set ty-b0 netns ty-b
ip addr add 10.77.0.1/24 dev ty-a0 && ip link set ty-a0 up
ip netns exec ty-b ip addr add 10.77.0.2/24 dev ty-b0
ip netns exec ty-b ip link set ty-b0 up
ip netns exec ty-b ip link set lo up
sed -i '/ ty-[ab]$/d' /etc/hosts
printf '10.77.0.1 ty-a\n10.77.0.2 ty-b\n' >> /etc/hosts
# munge: the authentication every Slurm daemon and command uses.
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
# Fake GPUs: GRES files must be character devices; copies of /dev/null do.
for i in 0 1 2 3; do [ -e "$DIR/slurm/fakegpu/gpu$i" ] || mknod "$DIR/slurm/fakegpu/gpu$i" c 1 3; done
# The key slurmctld checks JWTs with; the server signs its own tokens with it.
dd if=/dev/urandom of="$DIR/slurm/jwt_hs256.key" bs=32 count=1 status=none
chmod 600 "$DIR/slurm/jwt_hs256.key"

mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=trainyard-ci
SlurmctldHost=$(hostname -s)(10.77.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$DIR/slurm/jwt_hs256.key
StateSaveLocation=$DIR/slurm/state
SlurmdSpoolDir=$DIR/slurm/spool/%n
SlurmctldPidFile=$DIR/slurm/slurmctld.pid
SlurmdPidFile=$DIR/slurm/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurm/log/slurmctld.log
SlurmdLogFile=$DIR/slurm/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
KillWait=3
InactiveLimit=0
NodeName=ty-a NodeAddr=10.77.0.1 CPUs=2 RealMemory=4096 Gres=gpu:2 State=UNKNOWN
NodeName=ty-b NodeAddr=10.77.0.2 CPUs=2 RealMemory=4096 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ty-a Default=YES MaxTime=INFINITE State=UP
PartitionName=multi Nodes=ty-a,ty-b MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=ty-a Name=gpu File=$DIR/slurm/fakegpu/gpu[0-1]
NodeName=ty-b Name=gpu File=$DIR/slurm/fakegpu/gpu[2-3]
CONF
/usr/sbin/slurmctld || { tail -20 "$DIR/slurm/log/slurmctld.log" >&2; exit 1; }
mkdir -p "$DIR"/slurm/spool/ty-a "$DIR"/slurm/spool/ty-b
# nsenter, not `ip netns exec`: only the network is the node's own; `ip netns exec` would
# also remount /sys, hiding the cgroup file systems slurmd needs.
/usr/sbin/slurmd -N ty-a || { tail -20 "$DIR/slurm/log/slurmd-ty-a.log" >&2; exit 1; }
nsenter --net=/var/run/netns/ty-b /usr/sbin/slurmd -N ty-b || { tail -20 "$DIR/slurm/log/slurmd-ty-b.log" >&2; exit 1; }
idle() { [ "$(sinfo -h -N -p multi -o %T 2>/dev/null | sort -u)" = idle ]; }
for _ in $(seq 150); do idle && break; sleep 0.2; done
idle || { sinfo -N >&2; tail -5 "$DIR"/slurm/log/*.log >&2; exit 1; }
log "slurm: $(sinfo -h -N -p multi -o '%N %T %c CPUs %m MB %G' | tr '\n' ';')"

# slurmrestd refuses to run as root: an account of its own, talking JWT to slurmctld.
id slurmrest >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin slurmrest
SLURM_JWT=daemon setsid /usr/sbin/slurmrestd -a rest_auth/jwt -s openapi/v0.0.38 -u slurmrest \
    "127.0.0.1:$REST_PORT" >"$DIR/slurm/log/slurmrestd.log" 2>&1 < /dev/null &
echo $! > "$DIR/slurm/slurmrestd.pid"
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REST_PORT") 2>/dev/null && break; sleep 0.1; done

# Ray: every component on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 stops it binding
# the routable address); short temp dir (socket paths live under it).
mkdir -p "$DIR/ray"
# Its venv first on PATH, as on a real Ray node: jobs' `python3` imports ray.
PATH="$RAY_VENV/bin:$PATH" RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
    "$RAY_VENV/bin/ray" start --head \
    --node-ip-address=127.0.0.1 --port=56379 --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" \
    --include-dashboard=true --num-cpus=2 --num-gpus=2 --memory=$((4 * 1024 ** 3)) \
    --object-store-memory=$((256 * 1024 ** 2)) --temp-dir="$DIR/ray" --disable-usage-stats >"$DIR/ray/start.log" 2>&1 \
    || { cat "$DIR/ray/start.log" >&2; exit 1; }
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$DASH_PORT/api/version" >/dev/null && break; sleep 0.2; done
log "ray: $(curl -s "http://127.0.0.1:$DASH_PORT/api/version")"

echo "export TRAINYARD_TEST_SLURMRESTD_URL=http://127.0.0.1:$REST_PORT"
echo "export TRAINYARD_TEST_SLURM_JWT_KEY=$DIR/slurm/jwt_hs256.key"
echo "export TRAINYARD_TEST_SLURM_COMMANDS=1"
echo "export TRAINYARD_TEST_RAY_URL=http://127.0.0.1:$DASH_PORT"
