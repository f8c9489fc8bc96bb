#!/usr/bin/env bash
# cluster-down.sh - stop the cluster started by cluster-up.sh.
# Cancels all jobs, then stops only the daemons whose PIDs cluster-up.sh recorded
# (SIGTERM, then SIGKILL after a timeout). Never kills by process name.
# SLURM_KEEP_DIR=0 deletes $SLURM_LOCAL_DIR afterwards (default: keep logs/state for debugging).
set -uo pipefail

D=${SLURM_LOCAL_DIR:-/tmp/optbench-slurm}
export SLURM_CONF=$D/etc/slurm.conf
T0=$EPOCHREALTIME
log() { printf '[cluster-down %6.2fs] %s\n' "$(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN{print a-b}')" "$*"; }

[ -d "$D/pids" ] || { log "nothing to stop ($D/pids missing)"; exit 0; }

# 1. cancel every job so slurmd kills the job processes it started, wait for them to go
if [ -s "$D/pids/slurmctld.pid" ] && kill -0 "$(cat "$D/pids/slurmctld.pid")" 2>/dev/null; then
  JOBS=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${JOBS// /}" ]; then
    log "cancelling jobs: $JOBS"
    scancel $JOBS 2>/dev/null || true
    for _ in $(seq 1 100); do
      [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
fi

# 2. stop daemons in reverse start order, by recorded PID only; each group in parallel
stop_group() { # stop_group <name>...: SIGTERM all, wait up to 15 s, then SIGKILL
  local n pid pids=() names=()
  for n in "$@"; do
    [ -s "$D/pids/$n.pid" ] || continue
    pid=$(cat "$D/pids/$n.pid")
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null; pids+=("$pid"); names+=("$n($pid)"); fi
    rm -f "$D/pids/$n.pid"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for _ in $(seq 1 150); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then log "pid $pid ignored SIGTERM for 15s, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null; fi
  done
  log "stopped ${names[*]}"
}
stop_group slurmd slurmctld
stop_group slurmdbd
stop_group mariadbd munged

# 3. leftovers: job step daemons are children of our slurmd (double-forked); report them
LEFT=$(ps -eo pid=,args= 2>/dev/null | awk '$2 ~ /^slurmstepd/ {print $1}' | tr '\n' ' ')
[ -n "${LEFT// /}" ] && log "WARNING: slurmstepd processes still alive: $LEFT"

if [ -e "$D/run/etc-symlink-ours" ] && [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$SLURM_CONF" ]; then
  rm -f /etc/slurm/slurm.conf
fi
[ "${SLURM_KEEP_DIR:-1}" = 1 ] || rm -rf "$D"
log "done"
