"""Read a study's per-task HDF5 files into pandas (numpy, pandas, h5py only — never torch).

- :func:`load_curves`: one row per evaluation of every run (wide: one column per split × metric).
- :func:`load_results`: the same data as one long table (split, metric, value), with the run record.
- :func:`load_runs`: one row per run (record, status, number of evaluations, final metrics).

A run found in several files (re-submitted after a crash) is taken from its finished copy.
Unreadable files are skipped and reported in ``frame.attrs["unreadable"]``; they never stop a load.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

RESULTS_DIR = "results"
SPLITS = ("train", "valid", "test")
METRICS = ("loss", "accuracy")
RECORD_COLS = ("run_id", "study", "problem", "optimizer", "schedule", "budget", "kind", "trial", "seed",
               "batch_size", "num_epochs")
RANK = {"finished": 3, "diverged": 3, "failed": 2, "running": 1}


def _files(study_dir: Path) -> list[Path]:
    d = Path(study_dir) / RESULTS_DIR
    if not Path(study_dir).is_dir():
        raise FileNotFoundError(f"{study_dir}: no such study directory")
    return sorted(d.glob("*.h5")) if d.is_dir() else []


def _read_all(study_dir: Path, warn=True) -> tuple[dict[str, tuple[dict, np.ndarray]], list[tuple[str, str]]]:
    """run_id -> (attributes, eval rows), best copy per run; and the unreadable files."""
    best: dict[str, tuple[dict, np.ndarray]] = {}
    bad: list[tuple[str, str]] = []
    for path in _files(study_dir):
        try:
            with h5py.File(path, "r", locking=False) as f:  # never block the task writing it
                runs = f.get("runs")
                if runs is None:
                    continue
                for rid, g in runs.items():
                    attrs = {k: g.attrs[k] for k in g.attrs}
                    status = str(attrs.get("status", ""))
                    old = best.get(rid)
                    if old is not None and RANK.get(status, 0) <= RANK.get(str(old[0].get("status")), 0):
                        continue
                    best[rid] = (attrs, g["evals"][()])
        except (OSError, KeyError, RuntimeError, ValueError) as e:
            bad.append((str(path), str(e).splitlines()[0] if str(e) else type(e).__name__))
            if warn:
                print(f"analysis: skipping unreadable result file {path}: {bad[-1][1]}", file=sys.stderr)
    return best, bad


def _record_row(rid: str, attrs: dict) -> dict:
    rec = json.loads(attrs["record"])
    row = {c: rec.get(c) for c in RECORD_COLS if c != "run_id"}
    row["run_id"] = rid
    for k, v in rec.get("hparams", []):
        row[f"hp_{k}"] = v
    row["status"] = str(attrs.get("status", ""))
    return row


def load_runs(study_dir: str | Path) -> pd.DataFrame:
    """One row per run: record, status, n_evals, and the last evaluation's metrics."""
    best, bad = _read_all(Path(study_dir))
    rows = []
    for rid, (attrs, ev) in best.items():
        row = _record_row(rid, attrs)
        row["n_evals"] = len(ev)
        row["wall_time"] = float(attrs.get("wall_time", np.nan))
        row["host"] = str(attrs.get("host", ""))
        row["attempts"] = int(attrs.get("attempts", 0))
        row["requeues"] = int(attrs.get("requeues", 0))
        for s in SPLITS:
            for m in METRICS:
                row[f"final_{s}_{m}"] = float(ev[f"{s}_{m}"][-1]) if len(ev) else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["unreadable"] = bad
    return df


def load_curves(study_dir: str | Path) -> pd.DataFrame:
    """One row per evaluation: run record columns + epoch, step, lr, <split>_<metric>, wall_time."""
    best, bad = _read_all(Path(study_dir))
    parts = []
    for rid, (attrs, ev) in best.items():
        if not len(ev):
            continue
        part = pd.DataFrame(ev)
        for k, v in _record_row(rid, attrs).items():
            part[k] = v
        parts.append(part)
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    for c in ("run_id", "study", "problem", "optimizer", "schedule", "budget", "kind", "status"):
        if c in df:
            df[c] = df[c].astype("category")
    df.attrs["unreadable"] = bad
    return df


def load_results(study_dir: str | Path) -> pd.DataFrame:
    """The long table: record columns, epoch, step, split (train/valid/test), metric (loss/accuracy), value.

    Metrics a problem does not have (accuracy of a loss-only problem) are left out.
    """
    wide = load_curves(study_dir)
    if wide.empty:
        out = pd.DataFrame(columns=list(RECORD_COLS) + ["epoch", "step", "split", "metric", "value"])
        out.attrs["unreadable"] = wide.attrs.get("unreadable", [])
        return out
    value_cols = [f"{s}_{m}" for s in SPLITS for m in METRICS]
    id_cols = [c for c in wide.columns if c not in value_cols and c not in ("minibatch_loss",)]
    long = wide.melt(id_vars=id_cols, value_vars=value_cols, var_name="series", value_name="value")
    split_metric = long["series"].str.split("_", n=1, expand=True)
    long["split"] = pd.Categorical(split_metric[0], categories=list(SPLITS))
    long["metric"] = pd.Categorical(split_metric[1], categories=list(METRICS))
    long = long.drop(columns="series")
    long = long[~((long["metric"] == "accuracy") & long["value"].isna())].reset_index(drop=True)
    long.attrs["unreadable"] = wide.attrs.get("unreadable", [])
    return long
