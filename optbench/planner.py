"""Expand a study into its full run table and keep it in ``DIR/plan.h5``.

Per (problem, optimizer, schedule) the plan holds: one-shot runs (default setting, one per
one-shot seed), one pool of tuning trials (budgets are nested prefixes of it; a trial is tagged
with the smallest budget that contains it), and deferred re-runs of each budget's best setting
with the re-run seeds. Crowded Valley: 10 + 75 + 3 × 9 = 112 per triple, 53,760 in all.

The plan file is a plain HDF5 table (one dataset per column) that pandas reads through
:func:`load_plan`. Each row's ``run_id`` is recomputed on load: a plan edited by hand is detected.
Deferred re-runs are resolved later (:mod:`optbench.resolve`) into ``DIR/resolved.json``;
:func:`load_plan` merges those hyperparameters in.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np
import pandas as pd

from optbench import optimizer_specs
from optbench.errors import PlanError
from optbench.record import RunRecord, canonical_items
from optbench.search import sample_trials
from optbench.study import Study

PLAN_FILE = "plan.h5"
STUDY_COPY = "study.toml"
RESOLVED_FILE = "resolved.json"
FORMAT_VERSION = 1
RECORD_COLUMNS = ("run_id", "study", "problem", "optimizer", "schedule", "budget", "kind", "trial",
                  "seed", "batch_size", "num_epochs", "problem_args", "schedule_args")
INT_COLUMNS = ("trial", "seed", "batch_size", "num_epochs")


def expand(study: Study) -> Iterator[RunRecord]:
    """Every run of the study, in a stable order (problem, batch size, optimizer, schedule, kind, trial, seed).

    With a batch-size sweep, every batch size is tuned separately (its own trials and re-runs);
    the trials' hyperparameter draws are the same for every batch size (common random numbers).
    """
    for problem in study.problems:
        setting = study.settings[problem]
        pargs = canonical_items(setting.args)
        for batch_size in setting.batch_sizes:
            for opt in study.optimizers:
                spec = optimizer_specs.get(opt)
                defaults = study.defaults(opt)
                trials = sample_trials(study.space(opt), study.n_trials, study.search, study.sampler_seed)
                for sched in study.schedules:
                    base = dict(study=study.name, problem=problem, optimizer=opt, schedule=sched,
                                batch_size=batch_size, num_epochs=setting.num_epochs, problem_args=pargs,
                                schedule_args=canonical_items(study.schedule_args.get(sched)))
                    default = canonical_items(spec.setting(defaults))
                    for seed in study.oneshot_seeds:
                        yield RunRecord(budget="oneshot", kind="oneshot", trial=-1, seed=seed, hparams=default, **base)
                    for k, tuned in enumerate(trials):
                        budget = next(name for name, n in study.budgets if k < n)
                        yield RunRecord(budget=budget, kind="tuning", trial=k, seed=study.tuning_seed,
                                        hparams=canonical_items(spec.setting({**defaults, **tuned})), **base)
                    for budget, _ in study.budgets:
                        for seed in study.rerun_seeds:
                            yield RunRecord(budget=budget, kind="rerun", trial=-1, seed=seed, **base)


def records_to_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {c: getattr(r, c) for c in RECORD_COLUMNS if c not in ("run_id", "problem_args", "schedule_args")}
        row["run_id"] = r.run_id
        row["problem_args"] = json.dumps(dict(r.problem_args), sort_keys=True)
        row["schedule_args"] = json.dumps(dict(r.schedule_args), sort_keys=True)
        for k, v in r.hparams:
            row[f"hp_{k}"] = float(v)
        rows.append(row)
    df = pd.DataFrame(rows)
    hp_cols = sorted(c for c in df.columns if c.startswith("hp_"))
    return df[list(RECORD_COLUMNS) + hp_cols]


def record_from_row(row: dict) -> RunRecord:
    hp = {k[3:]: v for k, v in row.items() if k.startswith("hp_") and not pd.isna(v)}
    return RunRecord(study=row["study"], problem=row["problem"], optimizer=row["optimizer"],
                     schedule=row["schedule"], budget=row["budget"], kind=row["kind"], trial=int(row["trial"]),
                     seed=int(row["seed"]), batch_size=int(row["batch_size"]), num_epochs=int(row["num_epochs"]),
                     hparams=canonical_items(hp),
                     problem_args=canonical_items(json.loads(row["problem_args"])),
                     schedule_args=canonical_items(json.loads(row["schedule_args"])))


def write_plan(study: Study, out_dir: str | Path, progress=print) -> pd.DataFrame:
    """Plan ``study`` into ``out_dir``. Re-planning the same study is allowed (ids are stable)."""
    out = Path(out_dir)
    existing = out / PLAN_FILE
    if existing.exists():
        with h5py.File(existing, "r", locking=False) as f:
            old_name = f.attrs.get("study", "")
        if old_name != study.name:
            raise PlanError(f"{out}: holds the plan of study {old_name!r}, not {study.name!r}; use another directory")
    t0 = time.time()
    progress(f"planning study {study.name!r} …")
    df = records_to_frame(expand(study))
    dup = df["run_id"].duplicated()
    if dup.any():
        raise PlanError(f"study {study.name!r} plans the same run twice (run {df['run_id'][dup].iloc[0]}); "
                        "check for repeated seeds or settings")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{PLAN_FILE}.tmp{os.getpid()}"
    with h5py.File(tmp, "w", locking=False) as f:
        f.attrs["study"] = study.name
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        f.attrs["n_runs"] = len(df)
        f.attrs["selection_split"] = study.selection_split
        f.attrs["selection_epoch"] = study.selection_epoch
        f.attrs["budgets"] = json.dumps(study.budgets)
        for col in df.columns:
            values = df[col].to_numpy()
            if col in INT_COLUMNS:
                f.create_dataset(col, data=values.astype(np.int64), compression="gzip")
            elif col.startswith("hp_"):
                f.create_dataset(col, data=values.astype(np.float64), compression="gzip")
            else:
                f.create_dataset(col, data=values.astype(object), dtype=h5py.string_dtype(), compression="gzip")
    os.replace(tmp, existing)
    (out / STUDY_COPY).write_text(study.source)
    progress(f"planned {len(df)} runs in {time.time() - t0:.1f}s → {existing}")
    return df


def plan_path(study_dir: str | Path) -> Path:
    d = Path(study_dir)
    if not d.is_dir():
        raise PlanError(f"{d}: no such study directory (run `optbench plan STUDY.toml -o {d}` first)")
    p = d / PLAN_FILE
    if not p.is_file():
        raise PlanError(f"{d}: not a study directory ({PLAN_FILE} missing; run `optbench plan` first)")
    return p


def load_plan(study_dir: str | Path, verify: bool = True) -> pd.DataFrame:
    """The run table of a planned study: one row per run, deferred re-runs included.

    Columns: ``run_id, study, problem, optimizer, schedule, budget, kind, trial, seed, batch_size,
    num_epochs, problem_args, schedule_args`` and one ``hp_<name>`` column per hyperparameter (NaN
    where an optimizer lacks it, and for re-runs not resolved yet), plus ``resolved`` and ``source_run``.
    """
    path = plan_path(study_dir)
    try:
        with h5py.File(path, "r", locking=False) as f:
            cols = {}
            for name in f:
                data = f[name][()]
                if data.dtype.kind == "O":
                    data = data.astype(str) if len(data) == 0 else np.array([x.decode() if isinstance(x, bytes) else x for x in data], dtype=object)
                cols[name] = data
    except (OSError, KeyError) as e:
        raise PlanError(f"{path}: unreadable plan file: {e}") from None
    missing = [c for c in RECORD_COLUMNS if c not in cols]
    if missing:
        raise PlanError(f"{path}: plan file lacks column {missing[0]!r} (edited by hand?)")
    hp_cols = sorted(c for c in cols if c.startswith("hp_"))
    df = pd.DataFrame({c: cols[c] for c in list(RECORD_COLUMNS) + hp_cols})
    if verify:
        verify_ids(df, path)
    resolved = read_resolutions(study_dir)
    df["resolved"] = df["kind"] != "rerun"
    df["source_run"] = ""
    if resolved:
        idx = pd.Index(df["run_id"])
        for rid, res in resolved.items():
            i = idx.get_indexer([rid])[0]
            if i < 0:
                continue
            for k, v in res["hparams"].items():
                col = f"hp_{k}"
                if col not in df:
                    df[col] = np.nan
                df.iat[i, df.columns.get_loc(col)] = float(v)
            df.iat[i, df.columns.get_loc("resolved")] = True
            df.iat[i, df.columns.get_loc("source_run")] = res["source_run"]
    return df


def verify_ids(df: pd.DataFrame, path: Path) -> None:
    """Recompute every run id from its row: a plan edited by hand must not silently mix results."""
    for row in df.to_dict("records"):
        r = record_from_row(row)
        if r.run_id != row["run_id"]:
            raise PlanError(f"{path}: row of run {row['run_id']} does not match its content "
                            "(plan edited by hand?); re-run `optbench plan`")


def read_resolutions(study_dir: str | Path) -> dict[str, dict]:
    p = Path(study_dir) / RESOLVED_FILE
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise PlanError(f"{p}: unreadable ({e}); delete it to resolve re-runs again") from None


def records(df: pd.DataFrame) -> dict[str, RunRecord]:
    """run_id -> RunRecord (re-runs carry their hyperparameters once resolved)."""
    out = {}
    for row in df.to_dict("records"):
        r = record_from_row(row)
        out[row["run_id"]] = r
    return out


def breakdown(df: pd.DataFrame) -> str:
    """A text table of run counts by problem, optimizer, schedule and budget."""
    lines = [f"{len(df)} runs"]
    for col in ("problem", "optimizer", "schedule", "budget", "kind"):
        counts = Counter(df[col])
        lines.append(f"  by {col}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)
