#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian's slurmctld/slurmd/munge, as root), for trying
# `launcher=slurm` and for the tests marked `slurm`:
#
#   eval "$(bash tools/local_slurm.sh start)"   # prints: export SLURM_CONF=<dir>/slurm.conf
#   fullchain run experiment=tiny stages=[data] launcher=slurm launcher.slurm.cpus_per_task=2 \
#       launcher.slurm.gpus_per_node=0
#   bash tools/local_slurm.sh stop              # <dir> from $SLURM_CONF, or: stop <dir>
#
# start [DIR]: installs slurmctld, slurmd, slurm-client and munge with apt when absent; writes a
#   munge key and a slurm.conf for this host and its CPUs/memory (`slurmd -C`) into DIR (default:
#   a new temporary directory): proctrack/linuxproc, task/none, select/cons_tres, no accounting,
#   free ports; starts munged, slurmctld and slurmd with everything (sockets, pid files, logs,
#   state) in DIR; waits until the node is idle. Nothing under /etc is changed.
# stop [DIR]: cancels the cluster's jobs, then stops its daemons by the pids in DIR (SIGTERM,
#   SIGKILL after a grace) and whatever else carries DIR's marker (slurmstepd of a job); checks
#   that nothing is left.
# status [DIR]: sinfo and squeue of the cluster.
#
# Exit codes of start: 0 ready; 3 cannot install or run here (not root, no apt, apt failed: the
# tests skip with this message); 1 it did not come up (the daemons' log tails are printed).
# Environment: LOCAL_SLURM_INSTALL=0 never runs apt; LOCAL_SLURM_WAIT_S (default 60).
set -uo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
MARKER=FULLCHAIN_LOCAL_SLURM   # in every daemon's environment (and so every slurmstepd's)

say() { echo "[local_slurm] $*" >&2; }
die() { local code=$1; shift; say "$*"; exit "$code"; }

dir_from_args() {
  if [ -n "${1:-}" ]; then echo "$1"
  elif [ -n "${SLURM_CONF:-}" ]; then dirname "$SLURM_CONF"
  else die 2 "no cluster directory: pass it, or set SLURM_CONF=<dir>/slurm.conf"; fi
}

have_all() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null
}

install_packages() {
  have_all && return 0
  [ "${LOCAL_SLURM_INSTALL:-1}" = 0 ] && die 3 "slurm/munge not installed and LOCAL_SLURM_INSTALL=0"
  [ "$(id -u)" = 0 ] || die 3 "slurm/munge not installed, and installing them needs root (apt-get)"
  command -v apt-get >/dev/null || die 3 "slurm/munge not installed and there is no apt-get here"
  local log started=$SECONDS
  log=$(mktemp)
  # the packages' postinst must not start the system's own daemons (policy-rc.d says no; only
  # while we install: an existing policy is kept)
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy && made_policy=1; fi
  local apt=(env DEBIAN_FRONTEND=noninteractive timeout 300 apt-get -y -q -o Dpkg::Use-Pty=0
             -o DPkg::Lock::Timeout=120)
  if ! "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >"$log" 2>&1; then
    # a fresh machine has no package lists yet
    timeout 180 apt-get update -q >>"$log" 2>&1
    "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" >>"$log" 2>&1
  fi
  [ $made_policy = 1 ] && rm -f $policy
  if ! have_all; then
    tail -n 15 "$log" >&2; rm -f "$log"
    die 3 "apt-get could not install ${PACKAGES[*]} (is the Debian mirror reachable?)"
  fi
  rm -f "$log"
  say "installed ${PACKAGES[*]} with apt ($((SECONDS - started))s)"
}

free_port() {
  local py
  py=$(command -v python3 || command -v python) || { echo "$1"; return; }
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_config() {
  local dir=$1 host hw
  host=$(hostname -s)
  # this machine as slurmd sees it (CPUs, sockets, cores, memory): a node described otherwise
  # is drained by slurmctld as soon as slurmd registers
  hw=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')
  [ -n "$hw" ] || die 1 "slurmd -C printed nothing"
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  chmod 700 "$dir" "$dir/munge"
  head -c 1024 /dev/urandom >"$dir/munge/munge.key"
  chmod 400 "$dir/munge/munge.key"
  cat >"$dir/slurm.conf" <<EOF
# A one-node cluster written by tools/local_slurm.sh; everything it uses lives in $dir.
ClusterName=fullchain-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port 6817)
SlurmdPort=$(free_port 6818)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

pids_of_cluster() {  # daemons by their pid files, and every process carrying the marker
  local dir=$1 f pid
  for f in munged slurmctld slurmd; do
    [ -s "$dir/$f.pid" ] && pid=$(cat "$dir/$f.pid") && [ -d "/proc/$pid" ] && echo "$pid"
  done
  for f in /proc/[0-9]*/environ; do
    pid=${f#/proc/}; pid=${pid%/environ}
    [ "$pid" = $$ ] && continue
    grep -qxzF "$MARKER=$dir" "$f" 2>/dev/null && echo "$pid"
  done
}

tail_logs() {
  local dir=$1 f
  for f in munged slurmctld slurmd; do
    [ -s "$dir/$f.log" ] && { echo "--- $dir/$f.log" >&2; tail -n 8 "$dir/$f.log" >&2; }
  done
}

start() {
  local dir=${1:-} created=0
  [ "$(id -u)" = 0 ] || die 3 "the daemons run as root here (SlurmUser=root); run as root"
  install_packages
  if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/fullchain-slurm.XXXXXX); created=1; fi
  dir=$(cd "$dir" && pwd)
  if [ -n "$(pids_of_cluster "$dir")" ]; then die 1 "a cluster already runs in $dir (stop it first)"; fi
  write_config "$dir"
  export SLURM_CONF=$dir/slurm.conf
  local started=$SECONDS
  # every daemon carries the marker, so `stop` finds their children (slurmstepd) too
  env "$MARKER=$dir" munged --force --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
    --log-file="$dir/munged.log" --seed-file="$dir/munge/munged.seed" \
    || { tail_logs "$dir"; die 1 "munged did not start"; }
  env "$MARKER=$dir" slurmctld -c -i || { tail_logs "$dir"; stop "$dir"; die 1 "slurmctld did not start"; }
  env "$MARKER=$dir" slurmd -c || { tail_logs "$dir"; stop "$dir"; die 1 "slurmd did not start"; }
  local host state="" deadline=$((SECONDS + ${LOCAL_SLURM_WAIT_S:-60}))
  host=$(hostname -s)
  while [ $SECONDS -lt $deadline ]; do
    state=$(timeout 10 sinfo -h -n "$host" -o %t 2>/dev/null | head -n 1)
    [ "$state" = idle ] && break
    sleep 0.5
  done
  if [ "$state" != idle ]; then
    tail_logs "$dir"
    stop "$dir"
    die 1 "node $host not idle after ${LOCAL_SLURM_WAIT_S:-60}s (state: ${state:-none})"
  fi
  say "one-node cluster up in $((SECONDS - started))s: node $host ($(sinfo -h -o '%c CPUs, %m MB')), partition local; dir $dir"
  echo "export SLURM_CONF=$dir/slurm.conf"
}

stop() {
  local dir
  dir=$(dir_from_args "${1:-}")
  [ -f "$dir/slurm.conf" ] || die 2 "$dir holds no cluster (no slurm.conf)"
  export SLURM_CONF=$dir/slurm.conf
  # jobs first: slurmstepd kills their processes; killing slurmd alone would orphan them
  local jobs
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    timeout 10 scancel $jobs 2>/dev/null
    local deadline=$((SECONDS + 15))
    while [ $SECONDS -lt $deadline ] && [ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]; do sleep 0.5; done
  fi
  local pids
  pids=$(pids_of_cluster "$dir" | sort -u)
  [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
  local deadline=$((SECONDS + 10))
  while [ $SECONDS -lt $deadline ] && [ -n "$(pids_of_cluster "$dir")" ]; do sleep 0.2; done
  pids=$(pids_of_cluster "$dir" | sort -u)
  if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null; sleep 0.5; fi
  pids=$(pids_of_cluster "$dir" | sort -u)
  [ -z "$pids" ] || die 1 "still running after SIGKILL: $pids"
  say "stopped the cluster in $dir (jobs cancelled: ${jobs:-none})"
}

status() {
  local dir
  dir=$(dir_from_args "${1:-}")
  export SLURM_CONF=$dir/slurm.conf
  sinfo && squeue
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  status) shift; status "$@" ;;
  *) echo "usage: $0 start [DIR] | stop [DIR] | status [DIR]" >&2; exit 2 ;;
esac
