"""Send the runs that are not done to Slurm (or the local machine) as chunked job arrays.

- Runs are grouped by problem (a profile may give each problem its own resources), cut into
  chunks of ``runs_per_task`` runs (one array task each), and the tasks into arrays of at most
  MaxArraySize tasks — submitit does not split arrays, and Slurm rejects an index ≥ MaxArraySize.
  One array is one ``sbatch`` call: ``predict_arrays`` says how many there will be.
- Nothing is submitted twice: a run is left out if it is done, if a live process holds its lease,
  or if the array task it was last submitted in is still queued or running (one ``squeue`` call).
  A study-wide lock serialises concurrent ``optbench submit`` commands on the same study.
- Each submission is recorded in ``submissions/<stamp>.json`` (job ids, tasks, runs).
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import shlex
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from optbench import planner
from optbench.errors import OptbenchError
from optbench.parallel import PART_SEP
from optbench.profiles import Profile, Resources
from optbench.resolve import resolve_reruns
from optbench.state import run_states
from optbench.storage import RESULTS_DIR, ensure_writable, quarantine

LEDGER_DIR = "submissions"
LOCK_FILE = ".submit.lock"


@dataclasses.dataclass
class Array:
    """One sbatch call: tasks (chunks of run ids) sharing one problem's resources."""

    problem: str
    resources: Resources
    chunks: list[list[str]]


def chunk(run_ids: list[str], runs_per_task: int) -> list[list[str]]:
    return [run_ids[i:i + runs_per_task] for i in range(0, len(run_ids), runs_per_task)]


def build_arrays(todo: pd.DataFrame, profile: Profile, max_array_size: int) -> list[Array]:
    """Chunks per problem, then arrays of at most ``max_array_size`` tasks."""
    arrays: list[Array] = []
    if profile.executor == "local":
        # one process per core: stride the runs so every process gets a mix of problems
        n_tasks = min(len(todo), profile.array_parallelism or os.cpu_count() or 1)
        ids = list(todo["run_id"])
        chunks = [ids[i::n_tasks] for i in range(n_tasks)] if n_tasks else []
        return [Array("all", profile.defaults, chunks)] if chunks else []
    for problem, group in todo.groupby("problem", sort=False):
        res = profile.resources(problem)
        chunks = chunk(list(group["run_id"]), res.runs_per_task)
        for i in range(0, len(chunks), max_array_size):
            arrays.append(Array(problem, res, chunks[i:i + max_array_size]))
    return arrays


def predict_arrays(counts_by_problem: dict[str, int], profile: Profile, max_array_size: int) -> int:
    """Number of sbatch calls for these run counts (the chunking's prediction)."""
    total = 0
    for problem, n in counts_by_problem.items():
        tasks = math.ceil(n / profile.resources(problem).runs_per_task)
        total += math.ceil(tasks / max_array_size)
    return total


def slurm_config_value(key: str) -> str | None:
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.split("=")[0].strip() == key:
            return line.split("=", 1)[1].strip()
    return None


def max_array_size(profile: Profile) -> int:
    if profile.executor == "local":
        return 10**9
    if profile.max_array_size != "auto":
        return int(profile.max_array_size)
    value = slurm_config_value("MaxArraySize")
    if value is None:
        raise OptbenchError("cannot read MaxArraySize from `scontrol show config` (is Slurm reachable?); "
                            "set max_array_size in the profile")
    return int(value)


def make_executor(profile: Profile, res: Resources, folder: Path, job_name: str):
    import submitit

    if profile.executor == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=profile.max_num_timeout)
        ex.update_parameters(timeout_min=res.timeout_min, signal_delay_s=profile.signal_delay_s)
        return ex
    # tasks start through optbench.launch, which notes a USR2 that comes while they are starting
    python = f"{shlex.quote(sys.executable)} -u -m optbench.launch"
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_num_timeout, python=python)
    params: dict[str, Any] = dict(time=res.timeout_min, cpus_per_task=res.cpus_per_task,
                                  signal_delay_s=profile.signal_delay_s, job_name=job_name,
                                  additional_parameters=dict(profile.sbatch), setup=list(profile.setup))
    if res.partition:
        params["partition"] = res.partition
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.mem_gb:
        params["mem"] = f"{int(math.ceil(res.mem_gb * 1024))}M"
    if profile.array_parallelism:
        params["array_parallelism"] = profile.array_parallelism
    ex.update_parameters(**params)
    return ex


# ------------------------------------------------------------------ ledger and liveness
def task_options(profile: Profile, res: Resources, n_tasks: int) -> dict[str, Any]:
    """What every array task of one array is told besides its runs: the worker's settings from the
    profile (threads, device, checkpointing, GPU numerics)."""
    threads = res.threads or (max(1, (os.cpu_count() or 1) // max(1, n_tasks))
                              if profile.executor == "local" else res.cpus_per_task)
    options = {"threads": threads, "device": res.device, "checkpoint_every_s": profile.checkpoint_every_s,
               "checkpoint_every_epoch": res.checkpoint_every_epoch,
               "checkpoint_overhead": float(res.checkpoint_overhead),
               "precision": res.precision, "cudnn_benchmark": res.cudnn_benchmark}
    if res.runs_in_parallel > 1:
        options["runs_in_parallel"] = res.runs_in_parallel
    return options


def _records(study_dir: Path, newest_first: bool = False) -> Iterator[dict[str, Any]]:
    """The study's submission records, read one at a time in the order of their stamps; an unreadable
    one is skipped with a warning."""
    d = study_dir / LEDGER_DIR
    for p in sorted(d.glob("*.json"), reverse=newest_first) if d.is_dir() else []:
        try:
            yield json.loads(p.read_text())
        except ValueError:
            print(f"optbench: warning: unreadable submission record {p}; ignoring it", file=sys.stderr)


def ledger(study_dir: Path) -> list[dict[str, Any]]:
    return list(_records(study_dir))


def last_submission(study_dir: Path) -> dict[str, Any] | None:
    """The newest readable submission record, or None: reads one file, not the whole ledger (a
    Crowded Valley submission's record lists thousands of tasks)."""
    return next(_records(study_dir, newest_first=True), None)


def write_ledger(study_dir: Path, entry: dict[str, Any]) -> Path:
    d = study_dir / LEDGER_DIR
    d.mkdir(exist_ok=True)
    p = d / f"{entry['stamp']}.json"
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(entry, indent=1))
    os.replace(tmp, p)
    return p


def live_slurm_jobs() -> set[str] | None:
    """Ids of queued or running jobs and array tasks ("123", "123_4"); None if squeue fails."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def live_tasks(study_dir: Path) -> list[dict[str, Any]]:
    """The ledger's tasks whose own job is still queued or running (a requeued Slurm task keeps its id)."""
    entries = ledger(study_dir)
    if not entries:
        return []
    slurm_live: set[str] | None = None
    if any(e["executor"] == "slurm" for e in entries):
        slurm_live = live_slurm_jobs()
        if slurm_live is None:
            raise OptbenchError("`squeue` failed: cannot tell which submitted runs are still queued; "
                                "refusing to submit them twice (is Slurm reachable from here?)")
    live = []
    for e in entries:
        for task in e["tasks"]:
            jid = task.get("job_id")
            if jid and ((jid in slurm_live) if e["executor"] == "slurm" else pid_alive(int(jid))):
                live.append(task)
    return live


def in_flight_runs(study_dir: Path) -> set[str]:
    """Runs whose last submitted task is still queued or running."""
    return {rid for task in live_tasks(study_dir) for rid in task["run_ids"]}


@contextmanager
def study_lock(study_dir: Path, progress: Callable[[str], None]) -> Iterator[None]:
    fd = os.open(study_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another `optbench submit` is working on this study; waiting for it …")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------ submit
@dataclasses.dataclass
class Submission:
    stamp: str
    arrays: list[Array]
    jobs: list[Any]
    n_runs: int
    message: str


def todo_runs(study_dir: Path, plan: pd.DataFrame, profile: Profile) -> tuple[pd.DataFrame, dict[str, int]]:
    """Resolve what can be resolved; return the runs to submit now and a count by reason."""
    states, bad = run_states(study_dir, plan)
    if bad:
        quarantine_unreadable(study_dir, bad)
        states, _ = run_states(study_dir, plan)
    selection = _selection(study_dir)
    if resolve_reruns(study_dir, plan, states, split=selection[0], epoch_rule=selection[1],
                      max_retries=profile.max_retries):
        plan = planner.load_plan(study_dir, verify=False)
        states, _ = run_states(study_dir, plan)
    flight = in_flight_runs(study_dir)
    st = states.set_index("run_id")
    resolved = plan.set_index("run_id")["resolved"]
    reasons: dict[str, int] = {}
    todo_ids = []
    for rid in plan["run_id"]:
        s = st.at[rid, "state"]
        if s in ("finished", "diverged"):
            why = "done"
        elif not resolved[rid]:
            why = "waiting for tuning results"
        elif s == "running" or rid in flight:
            why = "in flight"
        elif s == "failed" and st.at[rid, "attempts"] > profile.max_retries:
            why = "failed too often"
        else:
            why = "to submit"
            todo_ids.append(rid)
        reasons[why] = reasons.get(why, 0) + 1
    return plan[plan["run_id"].isin(todo_ids)], reasons


def quarantine_unreadable(study_dir: Path, bad: list[tuple[Path, str]]) -> None:
    """Move unreadable result files of tasks that are no longer alive aside, salvaging finished runs.

    A file whose task is still queued or running is left alone: it may just be mid-write, and
    its task will deal with it when it restarts. A file of an ended task is moved aside even while its
    runs train again in a newer task: left in place, it would hide its finished runs from the next
    submission until every one of those runs had ended.
    """
    # the file's own task, not any task holding its runs: an ended task whose runs were re-submitted
    # (it was cancelled, or one of its processes was killed) writes to its file no more
    alive = {t["name"] for t in live_tasks(study_dir)}
    for path, err in bad:
        if path.stem.split(PART_SEP)[0] in alive:  # "<task>+p<i>.h5": a process of a parallel task
            print(f"optbench: warning: result file {path} unreadable ({err}) but its task is alive; left alone",
                  file=sys.stderr)
            continue
        aside, salvage, n = quarantine(path, err)
        print(f"optbench: warning: result file {path} is unreadable ({err}); moved to {aside} (kept, not deleted); "
              f"{n} finished runs recovered{' into ' + salvage.name if salvage else ''}; the rest will be re-run",
              file=sys.stderr)


def _selection(study_dir: Path) -> tuple[str, str]:
    import h5py

    with h5py.File(study_dir / planner.PLAN_FILE, "r", locking=False) as f:
        return str(f.attrs.get("selection_split", "valid")), str(f.attrs.get("selection_epoch", "last"))


def submit(study_dir: str | Path, profile: Profile, progress: Callable[[str], None] = print,
           dry_run: bool = False) -> Submission:
    study_dir = Path(study_dir).resolve()
    plan = planner.load_plan(study_dir)
    try:
        ensure_writable(study_dir / RESULTS_DIR)
    except OSError as e:
        raise OptbenchError(f"{study_dir / RESULTS_DIR}: results directory not writable: {e.strerror}") from None
    check_data(plan)
    with study_lock(study_dir, progress):
        todo, reasons = todo_runs(study_dir, plan, profile)
        summary = ", ".join(f"{v} {k}" for k, v in reasons.items())
        stamp = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        if todo.empty:
            return Submission(stamp, [], [], 0, f"nothing to submit ({summary})")
        mas = max_array_size(profile)
        arrays = build_arrays(todo, profile, mas)
        n_tasks = sum(len(a.chunks) for a in arrays)
        progress(f"submitting {len(todo)} runs as {n_tasks} tasks in {len(arrays)} array(s) "
                 f"[{profile.executor}, MaxArraySize {mas if profile.executor == 'slurm' else '-'}] ({summary})")
        if dry_run:
            return Submission(stamp, arrays, [], len(todo), "dry run: nothing submitted")
        entry: dict[str, Any] = {"stamp": stamp, "executor": profile.executor, "profile": profile.name,
                                 "profile_path": profile.source, "created": time.time(), "sbatch_calls": 0,
                                 "tasks": []}
        all_jobs = []
        folder = study_dir / "submitit" / stamp
        study_name = str(plan["study"].iloc[0])
        for ai, arr in enumerate(arrays):
            ex = make_executor(profile, arr.resources, folder / "%j", f"optbench-{study_name}")
            options = task_options(profile, arr.resources, len(arr.chunks))
            names = [f"task-{stamp}-a{ai:03d}-t{ti:04d}" for ti in range(len(arr.chunks))]
            try:
                with ex.batch():
                    jobs = [ex.submit(_runner(), str(study_dir), name, ids, options)
                            for name, ids in zip(names, arr.chunks)]
            except Exception as e:
                write_ledger(study_dir, entry)  # what went out before stays recorded
                raise OptbenchError(f"submission of array {ai + 1}/{len(arrays)} failed: "
                                    f"{str(e).strip().splitlines()[-1]}") from None
            entry["sbatch_calls"] += 1
            for name, ids, job in zip(names, arr.chunks, jobs):
                entry["tasks"].append({"name": name, "job_id": str(job.job_id), "run_ids": ids,
                                       "problem": arr.problem})
            all_jobs.extend(jobs)
            write_ledger(study_dir, entry)
            progress(f"  array {ai + 1}/{len(arrays)}: {len(arr.chunks)} tasks ({arr.problem}) → "
                     f"job {str(jobs[0].job_id).split('_')[0]}")
        return Submission(stamp, arrays, all_jobs, len(todo), f"submitted {len(todo)} runs")


def check_data(plan: pd.DataFrame) -> None:
    """Fail before submitting anything if a problem's data directory is missing or unreadable.

    (On a cluster the data must sit on a file system that both this node and the compute nodes see.)
    """
    from optbench import problems
    from optbench.problems.datasets import dataset_folder

    for (problem, pargs), _ in plan.groupby(["problem", "problem_args"], sort=False):
        spec = problems.get(problem)
        if not spec.dataset:
            continue
        folder = dataset_folder(spec.dataset, json.loads(pargs).get("data_dir") or None)
        if not folder.is_dir() or not os.access(folder, os.R_OK | os.X_OK):
            raise OptbenchError(f"problem {problem}: data directory {folder} is missing or unreadable "
                                f"(set $OPTBENCH_DATA_DIR or problem_settings.{problem}.data_dir; see docs/problems.md)")


def _runner():
    from optbench.worker import ChunkRunner

    return ChunkRunner()


def wait(study_dir: str | Path, sub: Submission, progress: Callable[[str], None] = print,
         poll_s: float = 5.0) -> None:
    """Block until the submitted tasks have ended, printing progress from the result files."""
    study_dir = Path(study_dir).resolve()
    ids = {rid for a in sub.arrays for c in a.chunks for rid in c}
    plan = planner.load_plan(study_dir, verify=False)
    plan = plan[plan["run_id"].isin(ids)]
    last = ""
    while True:
        live = [j for j in sub.jobs if not j.done()]
        states, _ = run_states(study_dir, plan)
        counts = states["state"].value_counts().to_dict()
        line = ", ".join(f"{counts[k]} {k}" for k in ("finished", "diverged", "failed", "running", "interrupted",
                                                        "planned") if counts.get(k))
        if line != last:
            progress(f"  [{time.strftime('%H:%M:%S')}] {line}")
            last = line
        if not live:
            break
        time.sleep(poll_s)
    for j in sub.jobs:
        try:
            j.result()
        except Exception as e:  # the task itself crashed (not a run): say where its log is
            progress(f"  task {j.job_id} ended abnormally: {str(e).strip().splitlines()[-1][:200]} "
                     f"(log: {j.paths.stderr})")
