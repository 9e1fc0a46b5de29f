#!/usr/bin/env bash
# Start a throwaway single-node Slurm (munge + slurmctld + slurmd) on loopback for
# the scheduler benchmark. Run as root. Idempotent: if our Slurm is already up and
# answering, it only prints how to use it. Stop it with slurm-down.sh.
#
# Nothing is written under /etc/slurm: the config lives in $BASE/slurm.conf and
# every Slurm command must see SLURM_CONF=$BASE/slurm.conf (bench.py sets it).
#
# Environment:
#   BASE        state/config/log dir (default /var/tmp/trainyard-bench-slurm, local disk)
#   SLURM_CPUS  CPUs the node offers (default: nproc)
#   NO_INSTALL=1  fail instead of apt-installing missing packages
#   EPILOG      slurmd Epilog (default /bin/true; EPILOG= for none, see below)
#   MIN_JOB_AGE, SCHEDULER_TYPE, SCHEDULER_PARAMETERS, SLURMCTLD_DEBUG, SLURMD_DEBUG
#               override the settings of the same name
set -euo pipefail

BASE=${BASE:-/var/tmp/trainyard-bench-slurm}
CONF=$BASE/slurm.conf
NODE=$(hostname -s)
CPUS=${SLURM_CPUS:-$(nproc)}
EPILOG=${EPILOG-/bin/true}
export SLURM_CONF=$CONF

# stdout is for the one line the caller evals; everything else (apt, daemons) goes to
# stderr. fd 3 keeps the real stdout for that line.
exec 3>&1 1>&2

log() { printf '[slurm-up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- already up? -------------------------------------------------------------
if pid_alive "$BASE/slurmctld.pid" && pid_alive "$BASE/slurmd.pid" \
   && timeout 10 scontrol ping 2>/dev/null | grep -q UP; then
  log "already running (config $CONF)"
  sinfo -N -o '%N %T %c' >&2 || true
  echo "export SLURM_CONF=$CONF" >&3
  exit 0
fi

# --- install if missing ----------------------------------------------------
need=()
for b in /usr/sbin/slurmctld:slurmctld /usr/sbin/slurmd:slurmd /usr/bin/sbatch:slurm-client \
         /usr/sbin/munged:munge; do
  [ -x "${b%%:*}" ] || need+=("${b##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "${NO_INSTALL:-0}" = 1 ] && die "missing packages: ${need[*]}"
  log "installing: ${need[*]}"
  # Keep package scripts from starting daemons (no systemd here anyway); restored below.
  had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ $had_policy = 1 ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  rc=0
  if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then timeout 300 apt-get update -q || rc=$?; fi
  [ $rc = 0 ] && { DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends \
      slurmctld slurmd slurm-client munge >&2 || rc=$?; }
  [ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || die "apt-get failed (rc=$rc)"
fi

# --- clean leftovers of an earlier, half-dead run of ours ---------------------
for d in slurmd slurmctld; do
  if pid_alive "$BASE/$d.pid"; then
    log "stopping stale $d (pid $(cat "$BASE/$d.pid"))"
    kill "$(cat "$BASE/$d.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$BASE/$d.pid" || break; sleep 0.1; done
  fi
done
munge_ours=0; [ -e "$BASE/munge.ours" ] && munge_ours=1
rm -rf "$BASE/state" "$BASE/spool" "$BASE/log"
mkdir -p "$BASE"/{state,spool,log}
[ $munge_ours = 1 ] && touch "$BASE/munge.ours"

# --- munge -----------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
if ! timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
  # more threads than the default 2: every sbatch/squeue and every job launch munges.
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid --num-threads=4
  touch "$BASE/munge.ours"
  for _ in $(seq 1 50); do timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
timeout 5 munge -n | timeout 5 unmunge >/dev/null || die "munge does not work"

# --- config ------------------------------------------------------------------
# Choices that matter for many short jobs on a 2-CPU box:
#  * SelectTypeParameters=CR_CPU: only CPUs are consumable. With CR_*_Memory and no
#    --mem, each job would take the whole node's memory and jobs would run one at a time.
#  * MinJobAge=2: finished jobs are purged from slurmctld after ~2 s, so 1,000s of
#    completed records don't pile up (no slurmdbd, so nothing else keeps them).
#  * MaxJobCount=100000: far above any N we submit.
#  * No accounting, no jobcomp, jobacct_gather/none, task/none, proctrack/linuxproc:
#    the least per-job work Slurm can do without cgroups.
#  * sched/backfill with SchedulerParameters tuned so that a freed CPU is refilled
#    at once: the main scheduler runs on every job end/submit (sched_min_interval=0,
#    batch_sched_delay=0), not only on its periodic timer.
#  * Epilog=/bin/true (the biggest effect, ~15x throughput): with no Epilog, slurmd
#    answers the end-of-job TERMINATE_JOB with "already complete" and slurmctld only
#    queues a scheduling pass, which its background loop runs once a second, so a
#    2-CPU node starts at most ~2 jobs/s. With an Epilog, slurmd sends
#    EPILOG_COMPLETE and slurmctld runs the scheduler at once (measured: 2.2 -> 28
#    jobs/s for 50 jobs). Newly submitted batch jobs still wait for that 1 s loop
#    when the node is idle (batch_sched_delay only sets a minimum), so the idle
#    submit->start latency is ~0.1-1 s.
#  * Debug levels at error: per-job info logging costs real CPU here.
cat > "$CONF" <<CONF
ClusterName=trainyardbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldDebug=${SLURMCTLD_DEBUG:-error}
SlurmdDebug=${SLURMD_DEBUG:-error}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=${SCHEDULER_TYPE:-sched/backfill}
SchedulerParameters=${SCHEDULER_PARAMETERS:-sched_min_interval=0,batch_sched_delay=0,default_queue_depth=200}
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=${MIN_JOB_AGE:-2}
${EPILOG:+Epilog=$EPILOG}
MaxJobCount=100000
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=1024 State=UNKNOWN
PartitionName=bench Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

# --- start -------------------------------------------------------------------
/usr/sbin/slurmctld -c -f "$CONF" || { tail -n 20 "$BASE/log/slurmctld.log" >&2; die "slurmctld failed"; }
for _ in $(seq 1 100); do timeout 5 scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
/usr/sbin/slurmd -f "$CONF" || { tail -n 20 "$BASE/log/slurmd.log" >&2; die "slurmd failed"; }
st=
for _ in $(seq 1 120); do
  st=$(timeout 5 sinfo -h -N -o '%T' 2>/dev/null || true)
  [ "$st" = idle ] && break; sleep 0.25
done
[ "$st" = idle ] || { tail -n 20 "$BASE/log/slurmctld.log" "$BASE/log/slurmd.log" >&2; die "node not idle (state '$st')"; }
log "up: $(sinfo -V) node $NODE cpus=$CPUS config $CONF"
echo "export SLURM_CONF=$CONF" >&3
