"""Train a chunk in several processes at once on one device (profile key ``runs_in_parallel``).

This module stays light (no torch, pandas or h5py at import): the parent process only starts the
processes, forwards Slurm's signals and gathers their summaries, so it should not spend the
0.3–0.45 s those imports cost before the processes it waits for can even start.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any

from optbench.interrupt import Interrupt, note_early

PART_SEP = "+p"  # the result file of process i of a task training runs in parallel: <task>+p<i>.h5
SIGNALS = (signal.SIGUSR2, signal.SIGTERM)  # what Slurm sends at a time limit, a preemption, a scancel

#: tests only: hold each process this long before its handlers are installed (with the signals blocked),
#: so that a signal can be sent into that window on purpose
PART_DELAY_ENV = "OPTBENCH_TEST_PART_DELAY_S"


def _train_part(study_dir: str, name: str, run_ids: list[str], options: dict[str, Any], results) -> None:
    """Entry point of one process of :func:`train_in_parallel` (a fresh interpreter: ``spawn``).

    The process starts with USR2/TERM blocked (the parent blocks them while it spawns; exec keeps the
    mask): Slurm signals every process of the step, and Python's default action would end one that
    is still starting. It installs its handlers, which note the signals, then unblocks them — a
    signal that came meanwhile is noted now — and only then tells the parent it is ready, which
    forwards the signals it gets to ready processes (its Interrupt then finds the noted signal, as
    in optbench.launch).
    """
    delay = float(os.environ.get(PART_DELAY_ENV) or 0)
    if delay > 0:
        time.sleep(delay)
    for sig in SIGNALS:
        signal.signal(sig, note_early)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    results.put({"ready": name})
    try:
        from optbench.worker import ChunkRunner

        summary = ChunkRunner()(study_dir, name, run_ids, options)
    except BaseException as e:
        results.put({"part": name, "error": f"{type(e).__name__}: {e}"})
        raise
    results.put({"part": name, **summary})


def train_in_parallel(study_dir: str, task_name: str, run_ids: list[str], opts: dict[str, Any],
                      k: int) -> dict[str, Any]:
    """Train the chunk in ``k`` processes at once (profile key ``runs_in_parallel``).

    Process i takes runs i, i+k, i+2k, … of the chunk, trains them as a one-process task would
    (leases, checkpoints, skip-finished) with ``threads // k`` torch threads, and writes its own
    result file ``<task>+p<i>.h5`` — one writer per file, as always. The partition depends only on
    the chunk and ``k``, so a requeued task gives every process the same runs back. Slurm's
    USR2/TERM reaches this parent process (and, where Slurm signals the whole step, the processes
    too): it is forwarded to the processes, which checkpoint at the next step boundary and exit, then
    the parent requeues (USR2, through submitit) or exits (TERM).
    A process that dies otherwise fails the task once the others have finished (its runs resume
    from their checkpoints when the task is re-submitted).
    """
    import multiprocessing

    threads = int(opts.get("threads") or os.environ.get("SLURM_CPUS_PER_TASK") or os.cpu_count() or 1)
    part_opts = {**opts, "runs_in_parallel": 1, "threads": max(1, threads // k)}
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch or HDF5 state
    results = ctx.Queue()
    names = [f"{task_name}{PART_SEP}{i}" for i in range(k)]
    procs = [ctx.Process(target=_train_part, args=(study_dir, names[i], run_ids[i::k], part_opts, results),
                         name=names[i], daemon=False) for i in range(k)]
    interrupt = Interrupt().install()
    if interrupt.requested:  # signalled while starting: requeue before any process starts
        interrupt.act(lambda: None)
    summaries: list[dict[str, Any]] = []
    ready: set[str] = set()  # processes whose signal handler is in place (see _train_part)
    forwarded: set[str] = set()

    def take(message: dict[str, Any]) -> None:
        if "ready" in message:
            ready.add(message["ready"])
        else:
            summaries.append(message)

    try:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # the processes inherit it (see _train_part)
        try:
            for proc in procs:
                proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal that came meanwhile is handled now
        while any(proc.is_alive() for proc in procs):
            try:
                take(results.get(timeout=0.2))
            except Exception:  # queue.Empty
                pass
            if interrupt.requested:  # forward to each process once it is ready for it
                for proc in procs:
                    if proc.is_alive() and proc.name in ready and proc.name not in forwarded:
                        os.kill(proc.pid, interrupt.signum)
                        forwarded.add(proc.name)
        for proc in procs:
            proc.join()
        while True:
            try:
                take(results.get(timeout=0.05))
            except Exception:
                break
        if interrupt.requested:
            interrupt.act(lambda: None)  # the processes have checkpointed: requeue (USR2) or exit (TERM)
    finally:
        interrupt.uninstall()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    summary: dict[str, Any] = {"trained": [], "skipped": [], "failed": [], "parts": len(procs)}
    for part in summaries:
        for key in ("trained", "skipped", "failed"):
            summary[key] += part.get(key, [])
        summary.setdefault("device", part.get("device"))
    dead = [(proc.name, proc.exitcode) for proc in procs if proc.exitcode != 0]
    if dead:
        raise RuntimeError("process(es) of a parallel task ended abnormally: " +
                           ", ".join(f"{name} (exit code {code})" for name, code in dead))
    return summary
