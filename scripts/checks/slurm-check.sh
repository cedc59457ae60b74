#!/usr/bin/env bash
# Proves the Slurm path on a real Slurm: starts a one-node cluster (Debian's slurmctld, slurmd
# and munge, installed when absent), runs the test that submits deploy/slurm/index.sbatch as a
# 3-task job array and compares the index with a one-process build, and stops every daemon it
# started. Run from the repository root as root; `.ci/run` calls it.
#
# The cluster's configuration lives in a temporary folder (SLURM_CONF points at it): the
# machine's own /etc/slurm is not touched.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm-check: installing slurmctld, slurmd, slurm-client and munge" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
  # The package may start munged itself: then it is ours to stop too.
  installed=1
fi

work=$(mktemp -d /tmp/skyscribe-slurm.XXXXXX)
mkdir -p "$work"/{spool,state,log}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # slurmctld takes a few seconds to save its state and go.
  for _ in $(seq 100); do
    alive=
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  rm -rf "$work"
}
trap cleanup EXIT

if [ ! -S /run/munge/munge.socket.2 ] || ! pgrep -x munged >/dev/null; then
  if [ ! -f /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge
  su -s /bin/sh munge -c "$(command -v munged) --force"
  for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
  pids+=("$(cat /run/munge/munged.pid)")
elif [ -n "${installed:-}" ] && [ -f /run/munge/munged.pid ]; then
  pids+=("$(cat /run/munge/munged.pid)")   # started by the package we installed
fi

host=$(hostname -s)
cpus=$(nproc)
export SLURM_CONF="$work/slurm.conf"
cat >"$SLURM_CONF" <<CONF
ClusterName=skytest
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
SlurmdSpoolDir=$work/spool
StateSaveLocation=$work/state
SlurmctldLogFile=$work/log/ctld.log
SlurmdLogFile=$work/log/d.log
SlurmctldPidFile=$work/ctld.pid
SlurmdPidFile=$work/d.pid
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# In the foreground (-D) and in the background here, so that their pids are known at once.
slurmctld -D >/dev/null 2>&1 &
pids+=("$!")
slurmd -D >/dev/null 2>&1 &
pids+=("$!")
for _ in $(seq 60); do
  sinfo -h -o %t 2>/dev/null | grep -q idle && break
  sleep 0.5
done
sinfo -h -o "%P %t %D" | grep -q idle || { echo "slurm-check: the node did not come up" >&2; cat "$work"/log/*.log >&2; exit 1; }

SKYSCRIBE_SLURM=1 cargo test --test it a_slurm_job_array_builds_the_same_index_as_one_process -- --nocapture
