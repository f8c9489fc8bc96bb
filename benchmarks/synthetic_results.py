"""Synthetic per-task result files, written through :class:`optbench.storage.TaskFile` as a worker writes them.

``write_results(study_dir, run_ids, runs_per_file=10, rows=4)`` writes ``results/task-synthetic-*.h5``
with ``runs_per_file`` finished runs each (attributes as the worker writes them, ``rows`` evaluation
rows), so that ``optbench status`` / ``optbench submit`` can be measured on a study of any size
without training anything. Each run goes through the worker's own calls (``begin_run``, ``set_rows``,
``set_status``), so the files carry the per-file summary exactly as a worker's do.
Used by ``benchmarks/bench_machinery.py`` and ``tests/test_bench.py``.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from optbench.storage import EVAL_DTYPE, RESULTS_DIR, TaskFile

VERSIONS = json.dumps({"python": "3.11", "numpy": np.__version__, "h5py": h5py.__version__, "torch": "synthetic"})


def _rows(n: int, rng: np.random.Generator) -> np.ndarray:
    rows = np.zeros(n, dtype=EVAL_DTYPE)
    rows["epoch"] = np.arange(n)
    rows["step"] = np.arange(n) * 100
    rows["lr"] = 0.01
    for f in ("train_loss", "valid_loss", "test_loss"):
        rows[f] = np.exp(-0.3 * np.arange(n)) + rng.random(n) * 0.01
    for f in ("train_accuracy", "valid_accuracy", "test_accuracy"):
        rows[f] = 1.0 - np.exp(-0.3 * np.arange(n))
    rows["minibatch_loss"] = rows["train_loss"]
    rows["minibatch_loss"][0] = np.nan
    rows["wall_time"] = np.arange(n) * 1.5
    return rows


def _write_file(args: tuple[str, list[tuple[str, str]], int, int]) -> None:
    path, runs, n_rows, seed = args
    rng = np.random.default_rng(seed)
    Path(path).unlink(missing_ok=True)  # a fresh file, as a new task's
    tf = TaskFile(path)
    for rid, record_json in runs:
        tf.begin_run(rid, record_json, {"host": "node001", "job_id": "1000_1", "versions": VERSIONS, "device": "cpu",
                                        "requeues": 0, "threads": 1, "pid": 1234})
        tf.set_rows(rid, _rows(n_rows, rng))
        tf.set_status(rid, "finished", finished=time.time(), wall_time=60.0)


def write_results(study_dir: str | Path, runs: Sequence[tuple[str, str]], runs_per_file: int = 10,
                  rows: int = 4, processes: int = 2) -> int:
    """Write finished runs ``(run_id, record_json)`` into result files; returns the number of files."""
    results = Path(study_dir) / RESULTS_DIR
    results.mkdir(parents=True, exist_ok=True)
    jobs = [(str(results / f"task-synthetic-{i // runs_per_file:06d}.h5"), list(runs[i:i + runs_per_file]), rows, i)
            for i in range(0, len(runs), runs_per_file)]
    if processes > 1 and len(jobs) > 50:
        with ProcessPoolExecutor(processes) as ex:
            list(ex.map(_write_file, jobs, chunksize=64))
    else:
        for j in jobs:
            _write_file(j)
    return len(jobs)


def plan_runs(study_dir: str | Path, kinds: Sequence[str] = ("oneshot", "tuning", "rerun")) -> list[tuple[str, str]]:
    """(run_id, record JSON) of the study's planned runs of these kinds (re-runs get their id only)."""
    from optbench import planner

    plan = planner.load_plan(study_dir, verify=False)
    plan = plan[plan["kind"].isin(list(kinds))]
    return [(rid, json.dumps({"run_id": rid, "problem": p, "optimizer": o}))
            for rid, p, o in zip(plan["run_id"], plan["problem"], plan["optimizer"])]


if __name__ == "__main__":  # python benchmarks/synthetic_results.py STUDY_DIR
    import sys

    t = time.time()
    n = write_results(sys.argv[1], plan_runs(sys.argv[1]), processes=os.cpu_count() or 1)
    print(f"wrote {n} result files in {time.time() - t:.1f}s")
