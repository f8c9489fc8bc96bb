"""Read a study's per-task HDF5 files (numpy, pandas, h5py only — never torch).

- :func:`load_study`: everything, as a :class:`~analysis.table.Results` (runs table + flat evaluation columns);
- :func:`load_results`: the long table (record columns, epoch, step, split, metric, value);
- :func:`load_curves`: one row per evaluation, one column per split × metric;
- :func:`load_runs`: one row per run (record, status, hyperparameters, final metrics).

Layout read (written by ``optbench.storage``): ``<study>/results/*.h5``, group ``/runs/<run_id>``
with attributes ``record`` (JSON), ``status``, … and the compound dataset ``evals``.

A run found in several files (re-submitted after a crash) is taken from its best copy: finished or
diverged over failed over running; among equals the one with more evaluations. Unreadable files
(and unreadable runs inside a readable file) are skipped, printed to stderr and listed in
``.unreadable`` / ``frame.attrs["unreadable"]`` as (path, reason); they never stop a load.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5s, h5t
import pandas as pd

from analysis.table import EVAL_DTYPE, EVAL_FIELDS, SERIES, Results, hparams_label, runs_frame

RESULTS_DIR = "results"
RANK = {"finished": 3, "diverged": 3, "failed": 2, "running": 1}
#: the evaluation fields the long table needs
LONG_FIELDS = ("epoch", "step") + SERIES
_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError)


def result_files(study_dir: str | Path) -> list[Path]:
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f"{study_dir}: no such study directory")
    d = study_dir / RESULTS_DIR
    return sorted(d.glob("*.h5")) if d.is_dir() else []


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text or type(e).__name__


class _FastReader:
    """Low-level h5py reads: 5–10× faster than ``group.attrs[...]`` / ``dataset[()]`` per run, which
    matters at 53,760 runs. Any surprise (an unexpected type) falls back to the high-level API."""

    STR = h5py.string_dtype()

    def __init__(self):
        self.str_type = h5t.py_create(self.STR)
        self.eval_type = h5t.py_create(EVAL_DTYPE)

    def attr_str(self, gid, name: bytes) -> str:
        aid = h5a.open(gid, name)
        t = aid.get_type()
        if t.get_class() == h5t.STRING and t.is_variable_str():
            out = np.zeros((), dtype=self.STR)
            aid.read(out, mtype=self.str_type)
            return _str(out[()])
        return _str(h5py.AttributeManager(h5py.Group(gid))[name.decode()])

    def evals(self, gid) -> np.ndarray:
        dsid = h5d.open(gid, b"evals")
        if dsid.get_type() != self.eval_type:  # another compound layout: let h5py convert it
            return h5py.Dataset(dsid)[()]
        n = dsid.get_space().get_simple_extent_dims()[0]
        arr = np.empty(n, dtype=EVAL_DTYPE)
        if n:
            dsid.read(h5s.ALL, h5s.ALL, arr, mtype=self.eval_type)
        return arr


def _read_files(paths: Sequence[Path], extras: bool) -> tuple[dict[str, tuple], list[tuple[str, str]]]:
    """The best copy of every run in ``paths``: run_id -> (rank, n_evals, attrs, evals, file name); and
    the unreadable files / runs as (where, reason)."""
    best: dict[str, tuple] = {}
    bad: list[tuple[str, str]] = []
    fast = _FastReader()
    for path in paths:
        path = Path(path)
        try:
            with h5py.File(path, "r", locking=False) as f:  # never block the task writing it
                runs = f.get("runs")
                if runs is None:
                    continue
                for rid in runs:
                    try:
                        gid = h5g.open(runs.id, rid.encode())
                        try:
                            status = fast.attr_str(gid, b"status")
                        except KeyError:
                            status = ""
                        old = best.get(rid)
                        rank = RANK.get(status, 0)
                        if old is not None and rank < old[0]:
                            continue
                        ev = fast.evals(gid)
                        if old is not None and (rank, len(ev)) <= (old[0], old[1]):
                            continue
                        extra = {"status": status, "record": fast.attr_str(gid, b"record")}
                        if extras:
                            attrs = h5py.AttributeManager(h5py.Group(gid))
                            for k in ("wall_time", "host", "attempts", "requeues"):
                                if k in attrs:
                                    extra[k] = attrs[k]
                        best[rid] = (rank, len(ev), extra, ev, path.name)
                    except _ERRORS as e:
                        bad.append((f"{path}::{rid}", _reason(e)))
        except _ERRORS as e:
            bad.append((str(path), _reason(e)))
    return best, bad


def _default_workers(n_files: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus, n_files // 500))  # processes pay off from about a thousand files


def read_h5(paths: Sequence[Path], fields: Sequence[str] | None = None, warn: bool = True,
            extras: bool = True, workers: int | None = None) -> Results:
    """Read result files into :class:`Results` (``fields``: the evaluation fields to keep, default all;
    ``extras``: also read wall_time, host, attempts and requeues; ``workers``: reader processes,
    default one per core up to 8 for large studies — HDF5 reads are CPU-bound per object)."""
    paths = list(paths)
    workers = _default_workers(len(paths)) if workers is None else max(1, int(workers))
    if workers == 1:
        best, bad = _read_files(paths, extras)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunks = [paths[i::workers] for i in range(workers)]
        best, bad = {}, []
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for part, part_bad in pool.map(_read_files, chunks, [extras] * workers):
                bad += part_bad
                for rid, entry in part.items():
                    old = best.get(rid)
                    if old is None or (entry[0], entry[1]) > (old[0], old[1]):
                        best[rid] = entry
    if warn:
        for where, reason in bad:
            print(f"analysis: skipping unreadable {where}: {reason}", file=sys.stderr)
    return _assemble(best, fields, bad, warn)


def _assemble(best: dict[str, tuple], fields, bad, warn) -> Results:
    cols: dict[str, list] = {c: [] for c in ("run_id", "study", "problem", "optimizer", "schedule", "budget", "kind",
                                             "trial", "seed", "batch_size", "num_epochs", "hparams", "status",
                                             "file", "wall_time", "host", "attempts", "requeues")}
    hp: dict[str, list] = {}
    arrays = []
    for rid, (_, _, extra, ev, fname) in best.items():
        try:
            rec = json.loads(extra["record"])
            pairs = [(str(k), v) for k, v in rec.get("hparams", [])]
            row = {"run_id": rid, "study": rec["study"], "problem": rec["problem"], "optimizer": rec["optimizer"],
                   "schedule": rec["schedule"], "budget": rec["budget"], "kind": rec["kind"],
                   "trial": int(rec["trial"]), "seed": int(rec["seed"]), "batch_size": int(rec["batch_size"]),
                   "num_epochs": int(rec["num_epochs"]), "hparams": hparams_label(pairs),
                   "status": extra["status"], "file": fname,
                   "wall_time": float(extra.get("wall_time", np.nan)), "host": _str(extra.get("host", "")),
                   "attempts": int(extra.get("attempts", 0)), "requeues": int(extra.get("requeues", 0))}
        except (ValueError, KeyError, TypeError) as e:
            bad.append((f"{fname}::{rid}", f"bad run record: {_reason(e)}"))
            if warn:
                print(f"analysis: skipping run {rid} in {fname}: bad run record", file=sys.stderr)
            continue
        i = len(cols["run_id"])
        for k, v in row.items():
            cols[k].append(v)
        for k, v in pairs:
            hp.setdefault(k, [None] * i).append(v)
        for k in hp:
            if len(hp[k]) < i + 1:
                hp[k].append(None)
        arrays.append(ev)
    runs = runs_frame(cols, hp)
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    run_index = np.repeat(np.arange(len(arrays), dtype=np.int32), counts)
    names = set().union(*(a.dtype.names or () for a in arrays)) if arrays else set()
    wanted = [f for f in (fields or EVAL_FIELDS) if f in names]
    evals = {}
    for f in wanted:
        parts = [a[f] if f in a.dtype.names else np.full(len(a), np.nan) for a in arrays]
        evals[f] = np.concatenate(parts) if parts else np.zeros(0)
    del arrays
    return Results(runs, evals, run_index, bad)


def load_study(study_dir: str | Path, fields: Sequence[str] | None = None, warn: bool = True,
               extras: bool = True, workers: int | None = None) -> Results:
    """Every run of a study (the best copy of each), as :class:`~analysis.table.Results`."""
    return read_h5(result_files(study_dir), fields=fields, warn=warn, extras=extras, workers=workers)


def load_results(study_dir: str | Path) -> pd.DataFrame:
    """The long table: run record columns (run_id, study, problem, optimizer, schedule, budget, kind,
    trial, seed, batch_size, num_epochs, hparams, status), epoch, step, split (train/valid/test),
    metric (loss/accuracy) and value. Accuracy rows of problems without accuracy are left out.
    Numeric hyperparameters are in :func:`load_runs` (``hp_<name>``), joined on ``run_id``."""
    return load_study(study_dir, fields=LONG_FIELDS, extras=False).long()


def load_curves(study_dir: str | Path) -> pd.DataFrame:
    """One row per evaluation: run record columns + epoch, step, lr, <split>_<metric>, minibatch_loss, wall_time."""
    return load_study(study_dir).curves()


def load_runs(study_dir: str | Path) -> pd.DataFrame:
    """One row per run: record, ``hp_<name>`` columns, status, file, n_evals and the last evaluation's metrics."""
    return load_study(study_dir, fields=LONG_FIELDS).runs_table()
