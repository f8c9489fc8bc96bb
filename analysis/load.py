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
import sys
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5s, h5t
import pandas as pd

from analysis.table import EVAL_DTYPE, EVAL_FIELDS, SERIES, Results, columns_from_arrays, hparams_label, runs_frame

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
    """Low-level h5py reads: 5–10× faster per run than ``group.attrs[...]`` / ``dataset[()]``, which
    matters at 53,760 runs. Attributes and datasets are opened by path from the ``runs`` group
    (no group object per run) and read straight into arrays of the expected types, without asking
    HDF5 for the stored type: HDF5 converts compound members by name, so a dataset written with
    fewer or other fields fills the fields it has and the others stay NaN; an attribute that is not
    a variable-length string goes through h5py's high-level API."""

    STR = h5py.string_dtype()

    def __init__(self):
        self.str_type = h5t.py_create(self.STR)
        self.eval_type = h5t.py_create(EVAL_DTYPE)
        self.blank = np.zeros(512, dtype=EVAL_DTYPE)
        for f in EVAL_FIELDS[2:]:
            self.blank[f] = np.nan

    def attr_str(self, runs_id, rid: bytes, name: bytes) -> str:
        aid = h5a.open(runs_id, name, obj_name=rid)  # KeyError if missing
        try:
            out = np.zeros((), dtype=self.STR)
            aid.read(out, mtype=self.str_type)
            return _str(out[()])
        except _ERRORS:
            return _str(h5py.AttributeManager(h5py.Group(h5g.open(runs_id, rid)))[name.decode()])

    def evals(self, runs_id, rid: bytes) -> np.ndarray:
        dsid = h5d.open(runs_id, rid + b"/evals")
        n = dsid.get_space().get_simple_extent_dims()[0]
        if n > len(self.blank):
            self.blank = np.resize(self.blank, 2 * n)
        arr = self.blank[:n].copy()
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
            # whole file into memory in one read (metadata then costs no system calls); no locking,
            # so a task still writing the file is never blocked
            with h5py.File(path, "r", locking=False, driver="core", backing_store=False) as f:
                runs = f.get("runs")
                if runs is None:
                    continue
                runs_id = runs.id
                for rid in runs:
                    try:
                        rb = rid.encode()
                        try:
                            status = fast.attr_str(runs_id, rb, b"status")
                        except KeyError:
                            status = ""
                        old = best.get(rid)
                        rank = RANK.get(status, 0)
                        if old is not None and rank < old[0]:
                            continue
                        ev = fast.evals(runs_id, rb)
                        if old is not None and (rank, len(ev)) <= (old[0], old[1]):
                            continue
                        extra = {"status": status, "record": fast.attr_str(runs_id, rb, b"record")}
                        if extras:
                            attrs = h5py.AttributeManager(h5py.Group(h5g.open(runs_id, rb)))
                            for k in ("wall_time", "host", "attempts", "requeues"):
                                if k in attrs:
                                    extra[k] = attrs[k]
                        best[rid] = (rank, len(ev), extra, ev, path.name)
                    except _ERRORS as e:
                        bad.append((f"{path}::{rid}", _reason(e)))
        except _ERRORS as e:
            bad.append((str(path), _reason(e)))
    return best, bad


def read_h5(paths: Sequence[Path], fields: Sequence[str] | None = None, warn: bool = True,
            extras: bool = True, workers: int | None = None) -> Results:
    """Read result files into :class:`Results` (``fields``: the evaluation fields to keep, default all;
    ``extras``: also read wall_time, host, attempts and requeues; ``workers``: reader processes
    (opt-in, default 1: HDF5 reads are CPU-bound per object, so on a node with idle cores 4–8
    workers shorten large loads; they are forked, so use it from Linux and not inside threads)."""
    paths = list(paths)
    workers = 1 if workers is None else max(1, min(int(workers), len(paths) or 1))
    if workers == 1:
        best, bad = _read_files(paths, extras)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunks = [paths[i::workers] for i in range(workers)]
        best, bad = {}, []
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
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


_RUN_COLS = ("run_id", "study", "problem", "optimizer", "schedule", "budget", "kind", "trial", "seed", "batch_size",
             "num_epochs", "hparams", "status", "file")
_EXTRA_COLS = ("wall_time", "host", "attempts", "requeues")


def _assemble(best: dict[str, tuple], fields, bad, warn) -> Results:
    cols: dict[str, list] = {c: [] for c in _RUN_COLS}
    extra_cols: dict[str, list] = {c: [] for c in _EXTRA_COLS}
    hp: dict[str, list] = {}
    arrays = []
    loads = json.loads
    n = 0
    for rid, (_, _, extra, ev, fname) in best.items():
        try:
            rec = loads(extra["record"])
            pairs = [(str(k), v) for k, v in rec.get("hparams", ())]
            values = (rid, rec["study"], rec["problem"], rec["optimizer"], rec["schedule"], rec["budget"], rec["kind"],
                      int(rec["trial"]), int(rec["seed"]), int(rec["batch_size"]), int(rec["num_epochs"]),
                      hparams_label(pairs), extra["status"], fname)
            ex = (float(extra.get("wall_time", np.nan)), _str(extra.get("host", "")),
                  int(extra.get("attempts", 0)), int(extra.get("requeues", 0))) if len(extra) > 2 else None
        except (ValueError, KeyError, TypeError) as e:
            bad.append((f"{fname}::{rid}", f"bad run record: {_reason(e)}"))
            if warn:
                print(f"analysis: skipping run {rid} in {fname}: bad run record", file=sys.stderr)
            continue
        for c, v in zip(_RUN_COLS, values):
            cols[c].append(v)
        if ex is not None:
            for c, v in zip(_EXTRA_COLS, ex):
                extra_cols[c].append(v)
        else:
            for c, v in zip(_EXTRA_COLS, (np.nan, "", 0, 0)):
                extra_cols[c].append(v)
        for k, v in pairs:
            col = hp.get(k)
            if col is None:
                col = hp[k] = [None] * n
            col.append(v)
        n += 1
        for col in hp.values():
            if len(col) < n:
                col.append(None)
        arrays.append(ev)
    if any(c != "" and c == c for c in extra_cols["host"]) or any(x == x for x in extra_cols["wall_time"]):
        cols.update(extra_cols)
    runs = runs_frame(cols, hp)
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    run_index = np.repeat(np.arange(len(arrays), dtype=np.int32), counts)
    best.clear()  # the arrays are the only copy left
    evals = columns_from_arrays(arrays, fields)
    return Results(runs, evals, run_index, bad)


def load_study(study_dir: str | Path, fields: Sequence[str] | None = None, warn: bool = True,
               extras: bool = True, workers: int | None = None) -> Results:
    """Every run of a study (the best copy of each), as :class:`~analysis.table.Results`."""
    return read_h5(result_files(study_dir), fields=fields, warn=warn, extras=extras, workers=workers)


def load_results(study_dir: str | Path, workers: int | None = None) -> pd.DataFrame:
    """The long table: run record columns (run_id, study, problem, optimizer, schedule, budget, kind,
    trial, seed, batch_size, num_epochs, hparams, status), epoch, step, split (train/valid/test),
    metric (loss/accuracy) and value. Accuracy rows of problems without accuracy are left out.
    Numeric hyperparameters are in :func:`load_runs` (``hp_<name>``), joined on ``run_id``."""
    return load_study(study_dir, fields=LONG_FIELDS, extras=False, workers=workers).long()


def load_curves(study_dir: str | Path, workers: int | None = None) -> pd.DataFrame:
    """One row per evaluation: run record columns + epoch, step, lr, <split>_<metric>, minibatch_loss, wall_time."""
    return load_study(study_dir, workers=workers).curves()


def load_runs(study_dir: str | Path, workers: int | None = None) -> pd.DataFrame:
    """One row per run: record, ``hp_<name>`` columns, status, file, n_evals and the last evaluation's metrics."""
    return load_study(study_dir, fields=LONG_FIELDS, workers=workers).runs_table()
