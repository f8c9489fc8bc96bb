"""Train a chunk of runs in this process: the body of an array task (:class:`optbench.worker.ChunkRunner`).

Failure semantics, per run:
- the loss becomes NaN/inf → status ``diverged``: a result, curve kept, never retried;
- an exception in training (out of memory, a bug, bad data) → status ``failed`` with the error,
  the task goes on with its other runs; ``optbench submit`` retries failed runs up to the
  study's retry limit;
- the process dies (kill -9, node loss) → the run stays ``running`` with its lease released; the
  requeued or re-submitted task resumes it from its last checkpoint.

It imports pandas and h5py (the plan, the result file), which is why :mod:`optbench.worker` imports
it only in a process that trains: the parent of a parallel task does not.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from optbench import numerics, planner
from optbench.checkpoint import CheckpointStore
from optbench.interrupt import Interrupt
from optbench.leases import RunLease
from optbench.profiles import Resources
from optbench.storage import (DONE, RESULTS_DIR, RowWriter, TaskFile, ensure_writable, quarantine, salvage_pattern,
                              versions)


def task_file_for(study_dir: Path, task_name: str) -> TaskFile:
    """The task's own result file; an unreadable one is moved aside (never deleted) and a new one begun."""
    results = study_dir / RESULTS_DIR
    ensure_writable(results)
    tf = TaskFile(results / f"{task_name}.h5")
    try:
        tf.check_readable()
    except (OSError, KeyError, RuntimeError) as e:
        aside, salvage, n = quarantine(tf.path, f"unreadable when its task restarted: {e}")
        print(f"optbench: result file {tf.path} unreadable ({e}); moved to {aside}; {n} finished runs "
              f"recovered{' into ' + str(salvage) if salvage else ''}; the others resume from their checkpoints",
              flush=True)
    return tf


def job_id() -> str:
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID", f"local-{os.getpid()}")


def pick_device(prefer: str = "auto") -> str:
    import torch

    if prefer == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if prefer == "cuda":
        raise RuntimeError("a GPU was requested but torch sees none (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    return "cpu"


def finished_elsewhere(study: Path, lease: RunLease) -> bool:
    """The lease says the run ended *and* the result file it names still holds it as done.

    Trusting the lease alone would lose a run whose result file was later found corrupt and
    moved aside: its data are gone, so it must be trained again. Where the file was moved aside
    and its finished runs recovered (:func:`optbench.storage.quarantine`: ``salvaged-<stem>-<time>.h5``),
    the run is done there; without looking, a task restarting on its own damaged file would train
    again every run it had just recovered, and the study would hold two finished copies of each.
    """
    done = lease.outcome()
    if not done or done.get("status") not in DONE:
        return False
    run_id = lease.path.stem
    results = study / RESULTS_DIR

    def done_in(path: Path) -> bool:
        try:
            return TaskFile(path).status_of(run_id) in DONE
        except (OSError, KeyError, RuntimeError):
            return False

    # the named file first: listing the results directory (thousands of files, on a parallel file
    # system) is only for the rare run whose file was moved aside
    return done_in(results / done["file"]) or any(done_in(p) for p in results.glob(salvage_pattern(done["file"])))


def train_chunk(study_dir: str, task_name: str, run_ids: list[str], opts: dict[str, Any]) -> dict[str, Any]:
    """Train ``run_ids`` one after another in this process into ``results/<task_name>.h5``.

    The caller has imported the training stack (:func:`optbench.startup.import_training_stack`), so
    that torch's imports happen with the collector paused.
    """
    import torch

    threads = int(opts.get("threads") or os.environ.get("SLURM_CPUS_PER_TASK") or 0)
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(opts.get("device", "auto"))
    numerics_set = numerics.configure(opts.get("precision", "fp32"), bool(opts.get("cudnn_benchmark", False)))
    study = Path(study_dir)
    plan = planner.load_plan(study, verify=False)
    plan = plan[plan["run_id"].isin(run_ids)]
    records = planner.records(plan)
    tf = task_file_for(study, task_name)
    ckpts = CheckpointStore(study)
    interrupt = Interrupt().install()
    if interrupt.requested:  # signalled while starting (optbench.launch noted it): requeue before training
        interrupt.act(lambda: None)
    summary: dict[str, Any] = {"trained": [], "skipped": [], "failed": [], "device": device}
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    try:
        for rid in run_ids:
            rec = records.get(rid)
            if rec is None or not rec.resolved:
                summary["skipped"].append(rid)
                continue
            lease = RunLease(study, rid)
            if not lease.acquire():
                summary["skipped"].append(rid)  # another live task is training it
                continue
            with lease:
                if finished_elsewhere(study, lease) or tf.status_of(rid) in DONE:
                    summary["skipped"].append(rid)
                    continue
                tf.begin_run(rid, rec.to_json(), {"host": socket.gethostname(), "job_id": job_id(),
                                                  "versions": versions(), "device": device,
                                                  "requeues": restarts, "threads": torch.get_num_threads(),
                                                  **numerics_set,
                                                  "pid": os.getpid(),
                                                  "cuda_visible_devices":
                                                      os.environ.get("CUDA_VISIBLE_DEVICES", "")})
                t0 = time.time()
                try:
                    status = train_one(rec, tf, ckpts, interrupt, device, opts, lease)
                except Exception as e:  # the run's own failure: record it, keep the task going
                    err = f"{type(e).__name__}: {e}"
                    tf.set_status(rid, "failed", error=err, traceback=traceback.format_exc()[-4000:],
                                  finished=time.time())
                    lease.record_outcome(status="failed", file=tf.path.name, error=err)
                    summary["failed"].append(rid)
                    print(f"optbench: run {rid} failed: {err}", flush=True)
                    continue
                tf.set_status(rid, status, finished=time.time(), wall_time=time.time() - t0)
                lease.record_outcome(status=status, file=tf.path.name)
                if not opts.get("keep_checkpoints", False):
                    ckpts.remove(rid)
                summary["trained"].append(rid)
    finally:
        interrupt.uninstall()
    return summary


def train_one(rec, tf: TaskFile, ckpts: CheckpointStore, interrupt: Interrupt, device: str,
              opts: dict[str, Any], lease: RunLease | None = None) -> str:
    """Train one run, resuming from its checkpoint; progress is noted in the lease at each checkpoint.

    The lease note lets the next attempt tell "no checkpoint yet" from "checkpoint lost": an attempt
    that must start from scratch although an earlier one had checkpointed is counted in the run's
    ``scratch_restarts`` attribute (the chaos run asserts it stays 0).
    """
    from optbench.trainer import train_run

    rid = rec.run_id
    noted = (lease.outcome() or {}) if lease is not None else {}
    overhead = float(opts.get("checkpoint_overhead", Resources.checkpoint_overhead))
    sink = RowWriter(tf, rid, overhead)  # rows in groups; all of them on disk before each checkpoint

    def checkpoint(state):
        if state is None:
            loaded = ckpts.load(rid)
            if loaded is not None:
                tf.bump(rid, "resumes")
            elif noted.get("checkpointed_epoch") is not None:
                tf.bump(rid, "scratch_restarts")
            return loaded
        sink.flush()  # the file then holds every row the checkpoint holds (a resume trims it to them)
        ckpts.save(rid, state)
        if lease is not None:
            lease.record_outcome(status="running", checkpointed_epoch=state["epoch"], pos=state["pos"])
        return None

    try:
        status = train_run(rec, sink=sink, checkpoint=checkpoint, interrupt=interrupt, device=device,
                           checkpoint_every_s=float(opts.get("checkpoint_every_s", 300.0)),
                           checkpoint_every_epoch=bool(opts.get("checkpoint_every_epoch", True)),
                           checkpoint_overhead=overhead)
    except BaseException:
        with contextlib.suppress(Exception):
            sink.flush()  # the rows so far, beside the failure's record (best effort: the disk may be full)
        raise
    sink.flush()
    return status
