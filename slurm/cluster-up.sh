#!/usr/bin/env bash
# cluster-up.sh - bring up a REAL single-node Slurm cluster on localhost, from nothing.
#
# For Debian 12 (bookworm) machines/containers without systemd and without cgroup
# control, running as root. Daemons run as plain background processes (-D/-F, i.e.
# foreground mode, backgrounded with setsid), their PIDs are written to
# $SLURM_LOCAL_DIR/pids/*.pid and cluster-down.sh kills exactly those PIDs.
#
# Usage:   bash cluster-up.sh            # then: source $SLURM_LOCAL_DIR/env.sh
# Env knobs (all optional):
#   SLURM_LOCAL_DIR=/tmp/optbench-slurm   where config, state, logs, pids live (wiped on start)
#   SLURM_ACCOUNTING=0                 1 = also run mariadb + slurmdbd so `sacct` works
#                                      (submitit uses sacct for job.state / failed-job detection)
#   SLURM_MAX_ARRAY_SIZE=1001          MaxArraySize
#   SLURM_FAKE_GPUS=2                  fake gres/gpu on the node, device files are /dev/null
#                                      clones (0 = no GRES); --gres=gpu:N / gpus_per_node work
#   SLURM_NODE_CPUS=                   advertise this many CPUs instead of the real count
#                                      (oversubscription for more parallel job slots)
#   SLURM_KILL_WAIT=5                  seconds between SIGTERM and SIGKILL (Slurm default 30)
#   SLURM_CRED_EXPIRE=10               also = delay before a requeued job may start again
#                                      (Slurm default 120 s!; minimum accepted is 5)
#   SLURM_GRACE_TIME=30                preemption GraceTime of the low-priority partition
#   SLURM_UP_TIMEOUT=60                seconds to wait for each daemon
#   SLURM_NO_INSTALL=0                 1 = never call apt-get
set -euo pipefail

D=${SLURM_LOCAL_DIR:-/tmp/optbench-slurm}
ACCT=${SLURM_ACCOUNTING:-0}
MAX_ARRAY=${SLURM_MAX_ARRAY_SIZE:-1001}
FAKE_GPUS=${SLURM_FAKE_GPUS:-2}
NODE_CPUS=${SLURM_NODE_CPUS:-}
KILL_WAIT=${SLURM_KILL_WAIT:-5}
CRED_EXPIRE=${SLURM_CRED_EXPIRE:-10}   # min 5 ("AuthInfo=cred_expire=2 invalid" -> default 120)
GRACE_TIME=${SLURM_GRACE_TIME:-30}
UP_TIMEOUT=${SLURM_UP_TIMEOUT:-60}
CLUSTER=localci

T0=$EPOCHREALTIME
log() { printf '[cluster-up %6.2fs] %s\n' "$(awk -v a="$EPOCHREALTIME" -v b="$T0" 'BEGIN{print a-b}')" "$*"; }
die() { log "ERROR: $*"; for f in "$D"/log/*; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# start_bg <name> <cmd...>: run a daemon in the foreground mode of its own, detached (setsid), from /,
# output to log/<name>.out; its PID (setsid and setpriv exec, so $! is the daemon) -> pids/<name>.pid
start_bg() {
  local name=$1; shift
  (cd / && exec setsid "$@" >"$D/log/$name.out" 2>&1 </dev/null) &
  echo $! >"$D/pids/$name.pid"
}
# sync_pid <name> <daemon's own pidfile>: trust the daemon's pidfile if it disagrees with $!
# (happens only if setsid had to fork, i.e. when run from a shell with job control)
sync_pid() {
  if [ -s "$2" ] && [ "$(cat "$2")" != "$(cat "$D/pids/$1.pid")" ] && kill -0 "$(cat "$2")" 2>/dev/null; then
    cp "$2" "$D/pids/$1.pid"
  fi
}
wait_for() { # wait_for <name> <cmd...>: poll cmd until it succeeds; fail fast if pids/<name>.pid died
  local what=$1; shift; local i
  for ((i = 0; i < UP_TIMEOUT * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    if [ -s "$D/pids/$what.pid" ] && ! kill -0 "$(cat "$D/pids/$what.pid")" 2>/dev/null; then
      die "$what exited during start-up"
    fi
    sleep 0.1
  done
  die "timed out after ${UP_TIMEOUT}s waiting for $what"
}

[ "$(id -u)" = 0 ] || { echo "cluster-up.sh must run as root" >&2; exit 1; }

if alive "$D/pids/slurmctld.pid"; then
  log "already running (slurmctld pid $(cat "$D/pids/slurmctld.pid")); source $D/env.sh"
  exit 0
fi

# ---------------------------------------------------------------- 1. packages
PKGS=(slurmctld slurmd slurm-client munge)
[ "$ACCT" = 1 ] && PKGS+=(slurmdbd mariadb-server)
MISSING=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  [ "${SLURM_NO_INSTALL:-0}" = 1 ] && die "missing packages: ${MISSING[*]}"
  log "installing ${MISSING[*]}"
  # Keep the packages' postinst from starting system services (no systemd here).
  OUR_POLICY=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; OUR_POLICY=1
  fi
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${MISSING[@]}" >/dev/null
  [ "$OUR_POLICY" = 1 ] && rm -f /usr/sbin/policy-rc.d
  log "packages installed"
fi

# ---------------------------------------------------------------- 2. layout
rm -rf "$D"
mkdir -p "$D"/{etc,state,spool/slurmd-localhost,log,run,pids}
export SLURM_CONF=$D/etc/slurm.conf

# ---------------------------------------------------------------- 3. munge
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
fi
chown munge:munge /etc/munge /etc/munge/munge.key; chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge; chmod 700 /var/lib/munge /var/log/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "a munged is already answering on /run/munge/munge.socket.2; reusing it (not ours to stop)"
else
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  start_bg munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
  wait_for munged sh -c 'munge -n | unmunge'
  sync_pid munged /run/munge/munged.pid
  log "munged up (pid $(cat "$D/pids/munged.pid"))"
fi

# ---------------------------------------------------------------- 4. config
# Real hardware as slurmd sees it, e.g. "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
HW=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //; s/ *UpTime=.*//')
EXTRA_CONF=""
if [ -n "$NODE_CPUS" ]; then
  MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$HW")
  HW="CPUs=$NODE_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$NODE_CPUS ThreadsPerCore=1 RealMemory=$MEM"
  EXTRA_CONF+=$'SlurmdParameters=config_overrides\n'
fi
GRES_NODE=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  EXTRA_CONF+=$'GresTypes=gpu\n'
  GRES_NODE="Gres=gpu:$FAKE_GPUS"
  # gres/gpu drops file-less GPUs ("Removing file-less GPU"), so give each fake GPU a
  # device file: a char device with /dev/null's numbers (regular files work too, with an error log)
  mkdir -p "$D/fakedev"
  for ((g = 0; g < FAKE_GPUS; g++)); do
    mknod "$D/fakedev/gpu$g" c 1 3 2>/dev/null || touch "$D/fakedev/gpu$g"
  done
  cat >"$D/etc/gres.conf" <<EOF
# fake GPUs: schedulable with --gres=gpu:N / --gpus-per-node; CUDA_VISIBLE_DEVICES is set
AutoDetect=off
NodeName=localhost Name=gpu File=$D/fakedev/gpu[0-$((FAKE_GPUS - 1))]
EOF
fi
if [ "$ACCT" = 1 ]; then
  ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
  ACCT_CONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

cat >"$SLURM_CONF" <<EOF
# single-node Slurm on localhost, generated by cluster-up.sh
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also the delay before a requeued job becomes eligible again (default 120 s)
AuthInfo=cred_expire=$CRED_EXPIRE
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/slurmd-%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
# no cgroups: track processes through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobCompType=jobcomp/none
$ACCT_CONF
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# defaults (batch_sched_delay=3s, sched_min_interval=2s, sched_interval=60s, bf_interval=30s)
# make tiny jobs start only every ~3 s and requeued jobs wait up to 30-60 s after BeginTime
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
MaxArraySize=$MAX_ARRAY
MaxJobCount=10000
MinJobAge=300
ReturnToService=2
JobRequeue=1
KillWait=$KILL_WAIT
# preemption: jobs in partition "debug" (tier 1) are requeued by jobs in "high" (tier 10);
# the job's --signal (submitit: USR2) is sent at preemption time
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
$EXTRA_CONF
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 $HW $GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE_TIME
PartitionName=high Nodes=localhost Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF

# Let tools that ignore $SLURM_CONF (and the default path) find the config.
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$SLURM_CONF" ]; then
  mkdir -p /etc/slurm; ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf; touch "$D/run/etc-symlink-ours"
fi
cat >"$D/env.sh" <<EOF
export SLURM_CONF=$SLURM_CONF
EOF

# ---------------------------------------------------------------- 5. accounting (optional)
if [ "$ACCT" = 1 ]; then
  mkdir -p "$D/mysql" /run/mysqld; chown mysql:mysql "$D/mysql" /run/mysqld
  mariadb-install-db --user=mysql --datadir="$D/mysql" --auth-root-authentication-method=socket \
    --skip-test-db >"$D/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
  start_bg mariadbd /usr/sbin/mariadbd --user=mysql --datadir="$D/mysql" --skip-networking \
    --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mariadbd.pid \
    --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --skip-log-bin
  wait_for mariadbd mariadb -uroot -e 'select 1'
  sync_pid mariadbd /run/mysqld/mariadbd.pid
  mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  log "mariadbd up (pid $(cat "$D/pids/mariadbd.pid"))"
  cat >"$D/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
DebugLevel=info
EOF
  chmod 600 "$D/etc/slurmdbd.conf"
  start_bg slurmdbd /usr/sbin/slurmdbd -D
  wait_for slurmdbd sacctmgr -n show cluster
  sync_pid slurmdbd "$D/run/slurmdbd.pid"
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
  log "slurmdbd up (pid $(cat "$D/pids/slurmdbd.pid")), cluster $CLUSTER registered"
fi

# ---------------------------------------------------------------- 6. slurmctld + slurmd
start_bg slurmctld /usr/sbin/slurmctld -D
wait_for slurmctld sh -c 'scontrol ping | grep -q "is UP"'
sync_pid slurmctld "$D/run/slurmctld.pid"
log "slurmctld up (pid $(cat "$D/pids/slurmctld.pid"))"

start_bg slurmd /usr/sbin/slurmd -D -N localhost
wait_for slurmd sh -c 'sinfo -h -n localhost -o %T | grep -qx idle'
sync_pid slurmd "$D/run/slurmd-localhost.pid"
log "slurmd up (pid $(cat "$D/pids/slurmd.pid")), node idle"

# ---------------------------------------------------------------- 7. smoke test
[ "$(srun -p debug -t 1 -N1 -n1 hostname 2>&1)" = "$(hostname)" ] || die "srun smoke test failed"
log "cluster ready: source $D/env.sh   (SLURM_CONF=$SLURM_CONF)"
sinfo
