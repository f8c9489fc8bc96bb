"""Synthetic per-task result files in the layout of :class:`optbench.storage.TaskFile`.

``write_results(study_dir, run_ids, runs_per_file=10, rows=4)`` writes ``results/task-synthetic-*.h5``
with ``runs_per_file`` finished runs each (attributes as the worker writes them, ``rows`` evaluation
rows), so that ``optbench status`` / ``optbench submit`` can be measured on a study of any size
without training anything. Used by ``benchmarks/bench_machinery.py`` and ``tests/test_bench.py``.
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

from optbench.storage import EVAL_DTYPE, RESULTS_DIR

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
    now = time.time()
    with h5py.File(path, "w", locking=False) as f:
        g_runs = f.create_group("runs")
        for rid, record_json in runs:
            g = g_runs.create_group(rid)
            g.create_dataset("evals", data=_rows(n_rows, rng), maxshape=(None,), chunks=(64,))
            a = g.attrs
            a["record"] = record_json
            a["status"] = "finished"
            a["started"] = now - 60
            a["finished"] = now
            a["wall_time"] = 60.0
            a["host"] = "node001"
            a["job_id"] = "1000_1"
            a["versions"] = VERSIONS
            a["device"] = "cpu"
            a["attempts"] = 1
            a["requeues"] = 0
            a["threads"] = 1
            a["pid"] = 1234


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
