"""Resolve deferred re-runs: the best tuning trial of each budget, chosen on validation.

A re-run "best of budget B, seed s" can be resolved once every trial of B (the first n_B trials)
has ended: finished, diverged (ranked last) or failed for good (excluded). The choice is written
to ``resolved.json`` with the trial it came from, atomically, and never changed afterwards — a
re-run keeps the setting it was resolved to even if more results arrive later.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from optbench import problems
from optbench.planner import RESOLVED_FILE, read_resolutions
from optbench.storage import RESULTS_DIR, open_h5


def final_score(rows: np.ndarray, split: str, metric: str, epoch_rule: str) -> float:
    """The selection score of one curve: higher is better; NaN curves (diverged) score -inf."""
    col = f"{'train' if split == 'train_eval' else split}_{metric}"
    values = rows[col]
    if len(values) == 0:
        return -math.inf
    sign = 1.0 if metric == "accuracy" else -1.0
    if not np.all(np.isfinite(rows[f"{'train' if split == 'train_eval' else split}_loss"])):
        return -math.inf
    v = values[-1] if epoch_rule == "last" else (values.max() if sign > 0 else values.min())
    return sign * float(v) if math.isfinite(v) else -math.inf


def read_curves(study_dir: Path, wanted: dict[str, str]) -> dict[str, np.ndarray]:
    """Rows of the given runs (run_id -> file name), finished copies only."""
    by_file: dict[str, list[str]] = {}
    for rid, fname in wanted.items():
        by_file.setdefault(fname, []).append(rid)
    out = {}
    for fname, rids in by_file.items():
        with open_h5(study_dir / RESULTS_DIR / fname, "r") as f:
            for rid in rids:
                out[rid] = f["runs"][rid]["evals"][()]
    return out


def resolve_reruns(study_dir: str | Path, plan: pd.DataFrame, states: pd.DataFrame,
                   split: str = "valid", epoch_rule: str = "last", max_retries: int = 2) -> int:
    """Resolve every re-run whose budget's trials have all ended; returns how many were resolved."""
    study_dir = Path(study_dir)
    resolved = read_resolutions(study_dir)
    pending = plan[(plan["kind"] == "rerun") & ~plan["run_id"].isin(resolved)]
    if pending.empty:
        return 0
    st = states.set_index("run_id")
    tuning = plan[plan["kind"] == "tuning"]
    budgets = dict(json.loads(_budgets_attr(study_dir)))
    hp_cols = [c for c in plan.columns if c.startswith("hp_")]
    new = 0
    keys = ["problem", "optimizer", "schedule", "batch_size", "problem_args", "schedule_args"]
    tuning_groups = {k: g for k, g in tuning.groupby(keys, sort=False)}
    for key, group in pending.groupby(keys + ["budget"], sort=False):
        *triple, budget = key
        prob = triple[0]
        n = budgets[budget]
        trials = tuning_groups.get(tuple(triple))
        if trials is None:
            continue
        trials = trials[trials["trial"] < n]
        tst = st.loc[trials["run_id"]]
        ended = tst["state"].isin(["finished", "diverged"]) | (
            (tst["state"] == "failed") & (tst["attempts"] > max_retries))
        if not ended.all():
            continue
        usable = tst[tst["state"].isin(["finished", "diverged"])]
        if usable.empty:
            continue
        metric = problems.get(prob).metric
        curves = read_curves(study_dir, dict(zip(usable.index, usable["file"])))
        scores = {rid: final_score(curves[rid], split, metric, epoch_rule) for rid in usable.index}
        # ties: the earlier trial wins, so the choice does not depend on file order
        order = trials.set_index("run_id")["trial"]
        best = max(scores, key=lambda r: (scores[r], -order[r]))
        row = trials.set_index("run_id").loc[best]
        hp = {c[3:]: float(row[c]) for c in hp_cols if not pd.isna(row[c])}
        for rid in group["run_id"]:
            resolved[rid] = {"hparams": hp, "source_run": best}
            new += 1
    if new:
        p = study_dir / RESOLVED_FILE
        tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(resolved, indent=1, sort_keys=True))
        os.replace(tmp, p)
    return new


def _budgets_attr(study_dir: Path) -> str:
    from optbench.planner import PLAN_FILE

    with h5py.File(study_dir / PLAN_FILE, "r", locking=False) as f:
        return f.attrs["budgets"]
