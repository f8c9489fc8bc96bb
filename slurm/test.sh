#!/usr/bin/env bash
# The project's test command (`make test`, `.ci/run`): bring up a real single-node Slurm cluster
# (slurmctld, slurmd, munge, slurmdbd + mariadb so sacct works), run the whole pytest suite
# against it, and always tear it down — stopping only the daemons this script started.
#
# The cluster is configured for the tests: MaxArraySize 50 (chunking is exercised), 4 advertised
# CPUs (more concurrent array tasks on a 2-core machine), 2 fake GPUs (GRES), short KillWait and
# cred_expire so requeues take seconds, a preemptible "debug" and a "high" partition.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

export SLURM_LOCAL_DIR=${SLURM_LOCAL_DIR:-/tmp/optbench-slurm}
export SLURM_ACCOUNTING=${SLURM_ACCOUNTING:-1}
export SLURM_MAX_ARRAY_SIZE=${SLURM_MAX_ARRAY_SIZE:-50}
export SLURM_NODE_CPUS=${SLURM_NODE_CPUS:-4}
export SLURM_FAKE_GPUS=${SLURM_FAKE_GPUS:-2}

if [ -s "$SLURM_LOCAL_DIR/pids/slurmctld.pid" ] && kill -0 "$(cat "$SLURM_LOCAL_DIR/pids/slurmctld.pid")" 2>/dev/null; then
  echo "[test] a cluster started by cluster-up.sh is running in $SLURM_LOCAL_DIR; stopping it for a clean configuration"
  bash "$HERE/cluster-down.sh"
fi
# headless Chromium for the report test (a person's view of report.html)
if ! command -v chromium >/dev/null 2>&1; then
  echo "[test] installing chromium for the report screenshot test"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
trap 'bash "$HERE/cluster-down.sh"' EXIT
bash "$HERE/cluster-up.sh"
# shellcheck disable=SC1091
source "$SLURM_LOCAL_DIR/env.sh"
export OPTBENCH_TEST_SLURM=1   # the Slurm tests must run, not skip
.venv/bin/python -m pytest -q "$@" tests
