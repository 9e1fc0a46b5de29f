#!/usr/bin/env bash
# Stop the Slurm started by slurm-up.sh (slurmd, slurmctld, and munged if slurm-up
# started it). Safe to run when nothing is running.
set -uo pipefail
BASE=${BASE:-/var/tmp/trainyard-bench-slurm}
export SLURM_CONF=$BASE/slurm.conf
log() { printf '[slurm-down] %s\n' "$*" >&2; }
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() { # pidfile name
  local pf=$1 name=$2 pid
  pid_alive "$pf" || return 0
  pid=$(cat "$pf")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || { log "$name stopped"; return 0; }; sleep 0.1; done
  log "$name (pid $pid) ignored SIGTERM for 10 s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

if [ -f "$SLURM_CONF" ] && pid_alive "$BASE/slurmctld.pid"; then
  timeout 5 scancel --quiet --user=root 2>/dev/null || true
fi
stop "$BASE/slurmd.pid" slurmd
stop "$BASE/slurmctld.pid" slurmctld
if [ -e "$BASE/munge.ours" ]; then
  stop /run/munge/munged.pid munged
  rm -f "$BASE/munge.ours"
fi
exit 0
