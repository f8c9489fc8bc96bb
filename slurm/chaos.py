#!/usr/bin/env python3
"""Chaos run: a small real study on the local Slurm cluster while faults are injected at random.

    source /tmp/optbench-slurm/env.sh
    .venv/bin/python slurm/chaos.py --minutes 10 [--seed 0] [--dir /tmp/chaos] [--parallel 2]

For ``--minutes`` it keeps the study submitted (as a user would: ``optbench submit`` every few
seconds, sometimes twice at once) and injects, at random: ``scontrol requeue`` of a running task,
USR2 as at a time limit or preemption (``scancel --signal=USR2``), preemption by a job in the
``high`` partition, ``kill -9`` of a worker (a lost node), ``scancel`` of a task, and truncation
of a result file whose task has ended (a damaged disk or a copy cut short: the next ``optbench
submit`` must move it aside, recover its readable runs and re-train the rest). Then it
stops injecting, lets the study finish, and checks the invariant on every run: finished exactly
once, one row per evaluation (no gaps, no duplicates), never re-trained from scratch when it had
a checkpoint. It prints a table and exits non-zero if any count that must be 0 is not.

The digits problem's tasks train ``--parallel`` runs at once (the profile's ``runs_in_parallel``,
default 2; 1 turns it off), so the faults also reach tasks whose runs train in several processes:
``kill -9`` of one of them, a signal while they start, a result file ``<task>+p<i>.h5`` cut short.
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optbench import dispatch, planner  # noqa: E402
from optbench.leases import RunLease  # noqa: E402
from optbench.state import run_states  # noqa: E402
from optbench.storage import QUARANTINE_DIR, result_files, scan_file  # noqa: E402

STUDY = """
name = "chaos"
problems = ["shakespeare_char_rnn", "digits_mlp"]
optimizers = ["sgd", "adam"]
schedules = ["cosine"]
[problem_settings.shakespeare_char_rnn]
num_epochs = {epochs}
batch_size = 16
num_chars = 40000
hidden = 32
layers = 1
[problem_settings.digits_mlp]
num_epochs = {epochs}
batch_size = 8
[oneshot]
seeds = {seeds}
"""
PROFILE = """
name = "chaos"
executor = "slurm"
partition = "debug"
cpus_per_task = 1
timeout_min = 30
runs_per_task = 2
array_parallelism = 4
max_array_size = "auto"
signal_delay_s = 30
checkpoint_every_s = 5
max_retries = 1000
[problems.digits_mlp]
runs_per_task = {runs_per_task}
runs_in_parallel = {parallel}
cpus_per_task = {parallel}
"""
FAULTS = ("requeue", "usr2", "preempt", "kill9", "scancel", "double_submit", "truncate")


def sh(*cmd: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=120)


def optbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optbench", *args], capture_output=True, text=True, timeout=600)


def our_running_tasks(study_dir: Path) -> list[str]:
    ours = {t["job_id"] for e in dispatch.ledger(study_dir) for t in e["tasks"]}
    out = sh("squeue", "-h", "-r", "-t", "R", "-o", "%i").stdout.split()
    return [j for j in out if j in ours]


def live_worker_pids(study_dir: Path) -> list[int]:
    import h5py

    pids = []
    for path in result_files(study_dir):
        try:
            with h5py.File(path, "r", locking=False) as f:
                for rid, g in f.get("runs", {}).items():
                    if str(g.attrs.get("status")) == "running" and RunLease(study_dir, rid).is_held_elsewhere():
                        pids.append(int(g.attrs.get("pid", 0)))
        except Exception:
            continue
    return [p for p in pids if p > 0 and dispatch.pid_alive(p)]


def truncate_ended_file(study_dir: Path, rng: random.Random) -> bool:
    """Cut a result file whose task has ended (no run of it in flight, none running) to 40–90 % of its size."""
    import h5py

    live = dispatch.in_flight_runs(study_dir)
    candidates = []
    for path in result_files(study_dir):
        try:
            with h5py.File(path, "r", locking=False) as f:
                runs = f.get("runs", {})
                ended = all(str(g.attrs.get("status")) in ("finished", "diverged") for g in runs.values())
                if runs and ended and not set(runs) & live:
                    candidates.append(path)
        except Exception:
            continue  # already damaged, or being written
    if not candidates:
        return False
    path = rng.choice(candidates)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * rng.uniform(0.4, 0.9)))
    return True


def inject(kind: str, study_dir: Path, profile: Path, rng: random.Random, cpus: int) -> bool:
    """Apply one fault; False if there was nothing to apply it to right now."""
    tasks = our_running_tasks(study_dir)
    if kind in ("requeue", "usr2", "scancel"):
        if not tasks:
            return False
        job = rng.choice(tasks)
        cmd = {"requeue": ["scontrol", "requeue", job], "usr2": ["scancel", "--signal=USR2", job],
               "scancel": ["scancel", job]}[kind]
        return sh(*cmd).returncode == 0
    if kind == "preempt":
        if not tasks:
            return False
        return sh("sbatch", "-p", "high", "-c", str(cpus), "--wrap", "sleep 2", "-o", "/dev/null").returncode == 0
    if kind == "kill9":
        pids = live_worker_pids(study_dir)
        if not pids:
            return False
        try:
            os.kill(rng.choice(pids), signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True
    if kind == "truncate":
        return truncate_ended_file(study_dir, rng)
    if kind == "double_submit":
        procs = [subprocess.Popen([sys.executable, "-m", "optbench", "submit", str(study_dir), "--profile",
                                   str(profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(2)]
        return all(p.wait(timeout=300) == 0 for p in procs)
    raise ValueError(kind)


def check(study_dir: Path) -> dict[str, int]:
    """The invariant over every planned run, from every result file (quarantined ones excluded)."""
    import h5py

    plan = planner.load_plan(study_dir)
    expected = dict(zip(plan["run_id"], plan["num_epochs"]))
    finished_copies: dict[str, list] = collections.defaultdict(list)
    scratch = 0
    for path in result_files(study_dir):
        scan_file(path)  # every file must be readable
        with h5py.File(path, "r", locking=False) as f:
            for rid, g in f["runs"].items():
                scratch += int(g.attrs.get("scratch_restarts", 0))
                if str(g.attrs.get("status")) in ("finished", "diverged"):
                    finished_copies[rid].append(g["evals"]["epoch"][()])
    lost = dup = not_once = 0
    for rid, n in expected.items():
        copies = finished_copies.get(rid, [])
        if len(copies) != 1:
            not_once += 1
            if not copies:
                lost += n + 1
                continue
        epochs = list(copies[0])
        lost += len(set(range(n + 1)) - set(epochs))
        dup += len(epochs) - len(set(epochs)) + sum(len(c) for c in copies[1:])
    qdir = study_dir / "results" / QUARANTINE_DIR
    moved_aside = [q for q in qdir.iterdir() if not q.name.endswith(".reason.txt")] if qdir.is_dir() else []
    return {"result_files_quarantined": len(moved_aside),
            "runs_planned": len(expected), "runs_finished": sum(1 for r in expected if finished_copies.get(r)),
            "runs_not_finished_exactly_once": not_once, "evaluation_rows_lost": lost,
            "evaluation_rows_duplicated": dup, "retrained_from_scratch_despite_checkpoint": scratch}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="how long to inject faults")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3, help="one-shot seeds per (problem, optimizer)")
    ap.add_argument("--every", type=float, default=5.0, help="mean seconds between faults")
    ap.add_argument("--dir", default=None, help="study directory (default: a new temporary one)")
    ap.add_argument("--finish-timeout", type=float, default=900.0)
    ap.add_argument("--parallel", type=int, default=2,
                    help="runs the digits problem's tasks train at once (runs_in_parallel; 1: one at a time)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.dir or tempfile.mkdtemp(prefix="optbench-chaos-"))
    if work.exists() and args.dir:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    study_file, profile = work / "chaos.toml", work / "chaos-profile.toml"
    study_file.write_text(STUDY.format(epochs=args.epochs, seeds=list(range(1, args.seeds + 1))))
    profile.write_text(PROFILE.format(parallel=args.parallel, runs_per_task=max(2, 2 * args.parallel)))
    study_dir = work / "study"
    r = optbench("plan", str(study_file), "-o", str(study_dir))
    if r.returncode:
        print(r.stderr)
        return 2
    cpus = int(sh("sinfo", "-h", "-n", "localhost", "-o", "%c", check=True).stdout.split()[0])
    injected: collections.Counter = collections.Counter()
    t_end = time.time() + 60 * args.minutes
    print(f"chaos: study in {study_dir}; injecting faults for {args.minutes} min", flush=True)
    optbench("submit", str(study_dir), "--profile", str(profile))
    next_submit = time.time() + 10
    while time.time() < t_end:
        time.sleep(rng.expovariate(1.0 / args.every))
        for kind in rng.sample(FAULTS, len(FAULTS)):  # the first fault that has a target right now
            if inject(kind, study_dir, profile, rng, cpus):
                injected[kind] += 1
                print(f"  [{time.strftime('%H:%M:%S')}] {kind}", flush=True)
                break
        if time.time() > next_submit:  # the user re-submits what was lost
            optbench("submit", str(study_dir), "--profile", str(profile))
            next_submit = time.time() + 10
    print("chaos: faults stopped; letting the study finish …", flush=True)
    deadline = time.time() + args.finish_timeout
    plan = planner.load_plan(study_dir)
    while time.time() < deadline:
        optbench("submit", str(study_dir), "--profile", str(profile))
        states, _ = run_states(study_dir, planner.load_plan(study_dir))
        if states["state"].isin(["finished", "diverged"]).all() and not dispatch.in_flight_runs(study_dir):
            # every run of a short chaos run may still be in flight while faults are injected: make sure
            # a finished file was damaged at least once, then let `submit` recover and re-train
            if injected["truncate"] == 0 and truncate_ended_file(study_dir, rng):
                injected["truncate"] += 1
                print(f"  [{time.strftime('%H:%M:%S')}] truncate (after the faults, as none had a target)", flush=True)
                continue
            break
        time.sleep(5)
    result = check(study_dir)
    print("\nfaults injected:")
    for kind in FAULTS:
        print(f"  {kind:<16} {injected[kind]:>5}")
    print("\ninvariant:")
    for k, v in result.items():
        print(f"  {k:<44} {v:>6}")
    bad = (result["runs_not_finished_exactly_once"] or result["evaluation_rows_lost"]
           or result["evaluation_rows_duplicated"] or result["retrained_from_scratch_despite_checkpoint"]
           or result["runs_finished"] != len(plan))
    print("\nchaos: " + ("FAILED" if bad else "OK: every run finished exactly once, complete, no duplicates"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
