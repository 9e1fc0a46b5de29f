#!/usr/bin/env bash
# Stops what tests/cluster/start.sh DIR started.
DIR=$(realpath "$1")
RAY_VENV=${TRAINYARD_RAY_VENV:-/var/tmp/trainyard-ray-venv}
# Jobs the suite left (a server killed mid-job) end with the cluster.
scancel --user=root >/dev/null 2>&1 || true
scontrol shutdown >/dev/null 2>&1 || true
[ -f "$DIR/slurm/slurmrestd.pid" ] && kill "$(cat "$DIR/slurm/slurmrestd.pid")" 2>/dev/null
"$RAY_VENV/bin/ray" stop --force >/dev/null 2>&1 || true
pkill -x munged 2>/dev/null || true
ip netns del ty-b 2>/dev/null || true
ip link del ty-a0 2>/dev/null || true
sed -i '/ ty-[ab]$/d' /etc/hosts
exit 0
