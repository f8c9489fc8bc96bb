"""Write results in optbench's HDF5 layout without training anything.

For tests whose answer is known in advance, for the loading benchmark, and for trying the report
on made-up data. The layout is exactly ``optbench.storage``'s (a test checks that): one file per
"task" under ``<study>/results/``, group ``/runs/<run_id>`` with attributes ``record`` (the run
record as JSON), ``status`` (finished, diverged, failed, running), ``wall_time``, ``host``,
``attempts``, ``requeues``, and the compound dataset ``evals`` (one row before training, then one
per epoch).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from analysis.table import EVAL_DTYPE, EVAL_FIELDS

RECORD_DEFAULTS = {"study": "synthetic", "problem": "quadratic_deep", "optimizer": "sgd", "schedule": "none",
                   "budget": "oneshot", "kind": "oneshot", "trial": -1, "seed": 42, "batch_size": 128,
                   "num_epochs": 10, "hparams": [], "problem_args": [], "schedule_args": []}


def make_record(**fields: Any) -> dict:
    """A run record (dict) with defaults for the fields not given; ``hparams`` may be a dict."""
    rec = {**RECORD_DEFAULTS, **fields}
    hp = rec["hparams"]
    if isinstance(hp, Mapping):
        hp = sorted(hp.items())
    rec["hparams"] = [[k, v] for k, v in hp]
    unknown = set(rec) - set(RECORD_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown record fields {sorted(unknown)}")
    return rec


def run_id(record: Mapping) -> str:
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def eval_rows(n: int, **columns: Any) -> np.ndarray:
    """``n`` evaluation rows; each column a scalar or a length-``n`` array; missing floats are NaN,
    epoch defaults to 0…n−1 and step to epoch × 100."""
    rows = np.zeros(n, dtype=EVAL_DTYPE)
    unknown = set(columns) - set(EVAL_FIELDS)
    if unknown:
        raise ValueError(f"unknown evaluation fields {sorted(unknown)}")
    for f in EVAL_FIELDS[2:]:
        rows[f] = np.nan
    rows["epoch"] = np.arange(n)
    rows["step"] = rows["epoch"].astype(np.int64) * 100
    for k, v in columns.items():
        rows[k] = v
    return rows


class Run(dict):
    """One run to write: ``record`` (dict), ``evals`` (EVAL_DTYPE rows), ``status``, extra attributes."""

    def __init__(self, record: Mapping, evals: np.ndarray, status: str = "finished", **attrs: Any):
        super().__init__(record=dict(record), evals=evals, status=status, attrs=attrs)

    @property
    def run_id(self) -> str:
        return run_id(self["record"])


def write_results(study_dir: str | Path, runs: Iterable[Run], runs_per_file: int = 10,
                  prefix: str = "task") -> list[Path]:
    """Write ``runs`` into ``<study_dir>/results/<prefix>-NNNNN.h5``, ``runs_per_file`` per file."""
    out = Path(study_dir) / "results"
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    f = None
    n_in_file = runs_per_file
    try:
        for run in runs:
            if n_in_file >= runs_per_file:
                if f is not None:
                    f.close()
                paths.append(out / f"{prefix}-{len(paths):05d}.h5")
                f = h5py.File(paths[-1], "w", locking=False)
                f.require_group("runs")
                n_in_file = 0
            rec = run["record"]
            g = f["runs"].create_group(run_id(rec))
            ev = np.asarray(run["evals"], dtype=EVAL_DTYPE)
            g.create_dataset("evals", data=ev, maxshape=(None,), chunks=(64,))
            g.attrs["record"] = json.dumps(rec, sort_keys=True)
            g.attrs["status"] = run["status"]
            g.attrs["attempts"] = 1
            g.attrs["wall_time"] = float(ev["wall_time"][-1]) if len(ev) and np.isfinite(ev["wall_time"][-1]) else 0.0
            g.attrs["host"] = "synthetic"
            for k, v in run["attrs"].items():
                g.attrs[k] = v
            n_in_file += 1
    finally:
        if f is not None:
            f.close()
    return paths


def curve(num_epochs: int, final: float, start: float, rate: float = 0.3) -> np.ndarray:
    """A smooth curve from ``start`` (epoch 0) towards ``final`` (reached exactly at the last epoch)."""
    e = np.arange(num_epochs + 1, dtype=float)
    shape = (1 - np.exp(-rate * e)) / (1 - np.exp(-rate * max(num_epochs, 1)))
    return start + (final - start) * shape


def simple_run(final_valid: float, final_test: float | None = None, metric: str = "accuracy",
               num_epochs: int = 5, status: str = "finished", steps_per_epoch: int = 100, **record: Any) -> Run:
    """A run whose metric curves end exactly at ``final_valid`` / ``final_test`` (test defaults to valid).

    For accuracy problems the losses fall alongside; for loss problems the accuracy columns are NaN.
    The problem defaults to an accuracy problem (fmnist_2c2d) or a loss problem (quadratic_deep) to match ``metric``.
    """
    final_test = final_valid if final_test is None else final_test
    record.setdefault("problem", "fmnist_2c2d" if metric == "accuracy" else "quadratic_deep")
    rec = make_record(num_epochs=num_epochs, **record)
    n = num_epochs + 1
    if metric == "accuracy":
        cols = {"valid_accuracy": curve(num_epochs, final_valid, 0.1), "test_accuracy": curve(num_epochs, final_test, 0.1),
                "train_accuracy": curve(num_epochs, min(1.0, final_valid + 0.02), 0.1),
                "valid_loss": curve(num_epochs, 1.0 - final_valid, 2.3), "test_loss": curve(num_epochs, 1.0 - final_test, 2.3),
                "train_loss": curve(num_epochs, 0.9 - final_valid, 2.3)}
    else:
        cols = {"valid_loss": curve(num_epochs, final_valid, 10.0), "test_loss": curve(num_epochs, final_test, 10.0),
                "train_loss": curve(num_epochs, final_valid * 0.9, 10.0)}
    lr = dict(rec["hparams"]).get("lr", 0.01)
    rows = eval_rows(n, step=np.arange(n) * steps_per_epoch, lr=lr, minibatch_loss=cols["train_loss"],
                     wall_time=np.arange(n) * 1.0, **cols)
    if status == "diverged":
        for c in ("train_loss", "valid_loss", "test_loss"):
            rows[c][n // 2:] = np.nan
    return Run(rec, rows, status=status)


def step_run(reach_step: int, final_valid: float, final_test: float | None = None, before: float = 0.5,
             last_step: int | None = None, n_evals: int = 11, status: str = "finished", **record: Any) -> Run:
    """An accuracy run whose validation and test accuracy jump from ``before`` to their final values
    at exactly ``reach_step`` (an evaluation is placed there): steps to any target between the
    two levels is ``reach_step``."""
    final_test = final_valid if final_test is None else final_test
    record.setdefault("problem", "fmnist_2c2d")
    last_step = max(int(reach_step) * 2, 10) if last_step is None else last_step
    steps = np.unique(np.r_[np.linspace(0, last_step, n_evals).astype(np.int64), int(reach_step)])
    n = len(steps)
    after = steps >= reach_step
    rec = make_record(num_epochs=n - 1, **record)
    rows = eval_rows(n, step=steps, lr=dict(rec["hparams"]).get("lr", 0.01),
                     valid_accuracy=np.where(after, final_valid, before), test_accuracy=np.where(after, final_test, before),
                     train_accuracy=np.where(after, final_valid, before),
                     valid_loss=np.where(after, 1 - final_valid, 1 - before), test_loss=np.where(after, 1 - final_test, 1 - before),
                     train_loss=np.where(after, 1 - final_valid, 1 - before), wall_time=np.arange(n, dtype=float))
    return Run(rec, rows, status=status)


def crossover_runs(models: Mapping[str, tuple[float, float]], finals: Mapping[str, Mapping[int, float]],
                   batch_sizes: Iterable[int], seed_factors: Iterable[float] = (0.98, 1.0, 1.02),
                   seed_offsets: Iterable[float] = (-0.004, 0.0, 0.004), problem: str = "synthetic_lm",
                   study: str = "crossover") -> list[Run]:
    """A batch-size sweep whose answers are known: optimizer X (a key of ``models`` = (S_min, N))
    at batch size B reaches its final accuracy after S_X(B) = S_min·(1 + N/B) steps on average over
    seeds (seed i at S·seed_factors[i]) and ends at finals[X][B] + seed_offsets[i] (test) /
    finals[X][B] (validation). Per (X, B): two tuning trials (trial 0 is the better one) in budget
    "large" with seed 42, and re-runs of trial 0 with the remaining seeds."""
    factors, offsets = list(seed_factors), list(seed_offsets)
    seeds = [42 + i for i in range(len(factors))]
    runs = []
    for opt, (s_min, n_crit) in models.items():
        for B in batch_sizes:
            S = s_min * (1 + n_crit / B)
            f = finals[opt][B]
            base = dict(problem=problem, study=study, optimizer=opt, batch_size=int(B), budget="large")
            runs.append(step_run(round(S * factors[0]), f, f + offsets[0], kind="tuning", trial=0, seed=seeds[0],
                                 hparams={"lr": 0.1}, last_step=int(4 * S), **base))
            runs.append(step_run(round(S * 2), f - 0.05, f - 0.05, kind="tuning", trial=1, seed=seeds[0],
                                 hparams={"lr": 0.5}, last_step=int(4 * S), **base))
            for sd, fac, off in zip(seeds[1:], factors[1:], offsets[1:]):
                runs.append(step_run(round(S * fac), f, f + off, kind="rerun", trial=-1, seed=sd,
                                     hparams={"lr": 0.1}, last_step=int(4 * S), **base))
    return runs
