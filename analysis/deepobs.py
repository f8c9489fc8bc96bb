"""The published Crowded Valley results (DeepOBS' one-JSON-per-run layout) ⇄ optbench's tables.

:func:`import_deepobs` reads the released tree (public repository
``SirRob1997/Crowded-Valley---Results``, folder ``results_main``)::

    <root>/<budget>/<schedule>/<problem>/<OptimizerFolder>/<setting>/random_seed__<s>__<date>.json

into the same long table as :func:`analysis.load_results`, so a new optimizer run with optbench can
be ranked against the 53,760 published runs without re-running them. :func:`export_deepobs` writes
optbench results in that layout (the loading benchmark compares the two formats).

Mapping (see docs/analysis.md):

- budget folders ``oneshot``, ``small_budget``, ``medium_budget``, ``large_budget`` → budgets
  ``oneshot``, ``small``, ``medium``, ``large``; schedule folders keep their names
  (``none``, ``cosine``, ``cosine_wr``, ``ltr`` are optbench's schedule names too);
- optimizer folders → :data:`OPTIMIZER_FOLDERS` (the folder names found in the released tree);
  an unknown folder is imported under its lower-cased name without the ``Optimizer`` suffix;
- TensorFlow hyperparameter names → ours (:data:`HPARAM_NAMES`); flags that only select the
  algorithm (``use_locking``, ``use_nesterov``, ``amsbound``, ``centered``) are dropped;
- kind: every run of ``oneshot`` is ``oneshot``; in a tuned budget, a run with the tuning seed
  (42) is a ``tuning`` trial and any other seed a ``rerun`` of its setting. Trials are numbered
  0, 1, … per (budget, schedule, problem, optimizer) in the order of their seed-42 file's date
  (the released files carry no trial index; date order approximates the sampling order). Each
  budget folder holds its own pool of trials, which :func:`analysis.performance.best_settings`
  recognises (budget pools are not nested prefixes here, unlike in optbench's plans);
- status: ``diverged`` when a loss is NaN/inf or the curves stop before ``num_epochs``, else
  ``finished``;
- step: the files do not record training steps, so ``step`` is −1 (use epochs); ``lr`` is the
  learning rate of the schedule at each epoch (``lr_sched_epochs``/``lr_sched_factors``);
  ``minibatch_loss`` and ``wall_time`` are NaN.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.table import EVAL_DTYPE, EVAL_FIELDS, Results, columns_from_arrays, hparams_label, runs_frame

#: released optimizer folder names → optbench optimizer names
OPTIMIZER_FOLDERS = {
    "AMSBoundOptimizer": "amsbound",
    "AMSGrad": "amsgrad",
    "AdaBeliefOptimizer": "adabelief",
    "AdaBoundOptimizer": "adabound",
    "AdadeltaOptimizer": "adadelta",
    "AdagradOptimizer": "adagrad",
    "AdamOptimizer": "adam",
    "LookaheadOptimizerMBGDMomentum": "lookahead_momentum",
    "LookaheadOptimizerRAdam": "lookahead_radam",
    "MomentumOptimizer": "momentum",
    "NAGOptimizer": "nag",
    "NadamOptimizer": "nadam",
    "RAdamOptimizer": "radam",
    "RMSPropOptimizer": "rmsprop",
    "GradientDescentOptimizer": "sgd",
    "NDAdamOptimizer": "ndadam",  # in the earlier (14-optimizer) release only; not one of the 15
}
FOLDER_OF = {v: k for k, v in OPTIMIZER_FOLDERS.items()}
BUDGET_FOLDERS = {"oneshot": "oneshot", "small_budget": "small", "medium_budget": "medium", "large_budget": "large"}
BUDGET_FOLDER_OF = {v: k for k, v in BUDGET_FOLDERS.items()}
#: TensorFlow hyperparameter names → optbench's (per optimizer where they differ)
HPARAM_NAMES = {"learning_rate": "lr", "epsilon": "eps", "beta1": "beta1", "beta2": "beta2",
                "momentum": "momentum", "rho": "rho", "decay": "rho", "final_lr": "final_lr", "gamma": "gamma",
                "initial_accumulator_value": "initial_accumulator_value", "alpha": "alpha", "k": "k"}
TF_NAME_OF = {"lr": "learning_rate", "eps": "epsilon"}
DROPPED_HPARAMS = {"use_locking", "use_nesterov", "amsbound", "centered"}
TUNING_SEED = 42
_SERIES_KEYS = {"train_loss": "train_losses", "valid_loss": "valid_losses", "test_loss": "test_losses",
                "train_accuracy": "train_accuracies", "valid_accuracy": "valid_accuracies",
                "test_accuracy": "test_accuracies"}


def optimizer_name(folder: str) -> str:
    if folder in OPTIMIZER_FOLDERS:
        return OPTIMIZER_FOLDERS[folder]
    name = folder[:-len("Optimizer")] if folder.endswith("Optimizer") else folder
    return name.lower()


def _scandir(path: str) -> list[os.DirEntry]:
    try:
        return sorted((e for e in os.scandir(path) if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return []


def _dirs(path: str) -> list[os.DirEntry]:
    return [e for e in _scandir(path) if e.is_dir()]


def _find_root(root: Path) -> Path:
    """The folder holding the budget folders: ``root`` itself, or its ``results_main``/``results``."""
    if any((root / b).is_dir() for b in BUDGET_FOLDERS):
        return root
    for sub in ("results_main", "results"):
        if any((root / sub / b).is_dir() for b in BUDGET_FOLDERS):
            return root / sub
    return root


def _seed_and_date(filename: str) -> tuple[int, str] | None:
    # random_seed__<s>__<date>.json
    if not filename.endswith(".json") or not filename.startswith("random_seed__"):
        return None
    parts = filename[:-5].split("__")
    try:
        return int(parts[1]), (parts[2] if len(parts) > 2 else "")
    except (IndexError, ValueError):
        return None


def _lr_per_epoch(lr0: float, n: int, params: dict) -> np.ndarray:
    lr = np.full(n, lr0, dtype=float)
    epochs = list(params.get("lr_sched_epochs") or [])
    factors = list(params.get("lr_sched_factors") or [])
    for e, f in sorted(zip(epochs, factors)):
        lr[int(e):] = lr0 * float(f)
    return lr


def _array(values, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    if values:
        a = np.asarray(values, dtype=float)[:n]  # None (null) becomes NaN
        out[:len(a)] = a
    return out


def read_deepobs(results_root: str | Path, study: str = "crowded_valley", warn: bool = True,
                 tuning_seed: int = TUNING_SEED) -> Results:
    """The released JSON tree as :class:`~analysis.table.Results` (see the module docstring)."""
    root = _find_root(Path(results_root))
    if not root.is_dir():
        raise FileNotFoundError(f"{results_root}: no such directory")
    cols: dict[str, list] = {c: [] for c in ("run_id", "study", "problem", "optimizer", "schedule", "budget", "kind",
                                             "trial", "seed", "batch_size", "num_epochs", "hparams", "status", "file")}
    hp: dict[str, list] = {}
    arrays: list[np.ndarray] = []
    bad: list[tuple[str, str]] = []
    for bdir in _dirs(str(root)):
        budget = BUDGET_FOLDERS.get(bdir.name, bdir.name)
        for sdir in _dirs(bdir.path):
            for pdir in _dirs(sdir.path):
                for odir in _dirs(pdir.path):
                    opt = optimizer_name(odir.name)
                    # files of this (budget, schedule, problem, optimizer), with their setting
                    files = []
                    for setting in _dirs(odir.path):
                        for fe in _scandir(setting.path):
                            sd = _seed_and_date(fe.name)
                            if sd is not None:
                                files.append((setting.name, sd[0], sd[1], fe.path))
                    trial_of = {}
                    if budget != "oneshot":
                        firsts = sorted({(date, name) for name, seed, date, _ in files if seed == tuning_seed})
                        seen = set()
                        for date, name in firsts:
                            if name not in seen:
                                trial_of[name] = len(trial_of)
                                seen.add(name)
                    for name, seed, date, path in files:
                        try:
                            with open(path, "rb") as fh:
                                d = json.loads(fh.read())
                            n_epochs = int(d["num_epochs"])
                            losses = [d.get(k) or [] for k in ("train_losses", "valid_losses", "test_losses")]
                            n = max(len(x) for x in losses)
                            if n == 0:
                                raise ValueError("no evaluations")
                            rows = np.zeros(n, dtype=EVAL_DTYPE)
                            rows["epoch"] = np.arange(n)
                            rows["step"] = -1
                            for f, key in _SERIES_KEYS.items():
                                rows[f] = _array(d.get(key), n)
                            raw_hp = d.get("optimizer_hyperparams") or {}
                            pairs = []
                            for k, v in raw_hp.items():
                                if k in DROPPED_HPARAMS or isinstance(v, (bool, str)) or v is None:
                                    continue
                                pairs.append((HPARAM_NAMES.get(k, k), float(v)))
                            lr0 = float(raw_hp.get("learning_rate", np.nan)) if raw_hp.get("learning_rate") is not None else np.nan
                            rows["lr"] = _lr_per_epoch(lr0, n, d.get("training_params") or {})
                            rows["minibatch_loss"] = np.nan
                            rows["wall_time"] = np.nan
                            finite = all(np.all(np.isfinite(rows[f])) for f in ("train_loss", "valid_loss", "test_loss"))
                            status = "finished" if (finite and n >= n_epochs + 1) else "diverged"
                            if budget == "oneshot":
                                kind, trial = "oneshot", -1
                            elif seed == tuning_seed and name in trial_of:
                                kind, trial = "tuning", trial_of[name]
                            else:
                                kind, trial = "rerun", -1
                            rel = os.path.relpath(path, root)
                            row = {"run_id": hashlib.sha256(rel.encode()).hexdigest()[:16], "study": study,
                                   "problem": str(d.get("testproblem", pdir.name)), "optimizer": opt,
                                   "schedule": sdir.name, "budget": budget, "kind": kind, "trial": trial,
                                   "seed": int(d.get("random_seed", seed)), "batch_size": int(d["batch_size"]),
                                   "num_epochs": n_epochs, "hparams": hparams_label(pairs), "status": status,
                                   "file": rel}
                        except (OSError, ValueError, KeyError, TypeError) as e:
                            bad.append((path, str(e).splitlines()[0] if str(e) else type(e).__name__))
                            if warn:
                                print(f"analysis: skipping unreadable {path}: {bad[-1][1]}", file=sys.stderr)
                            continue
                        i = len(cols["run_id"])
                        for k, v in row.items():
                            cols[k].append(v)
                        for k, v in pairs:
                            hp.setdefault(k, [None] * i).append(v)
                        for k in hp:
                            if len(hp[k]) < i + 1:
                                hp[k].append(None)
                        arrays.append(rows)
    runs = runs_frame(cols, hp)
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    run_index = np.repeat(np.arange(len(arrays), dtype=np.int32), counts)
    evals = columns_from_arrays(arrays)
    return Results(runs, evals, run_index, bad)


def import_deepobs(results_root: str | Path, study: str = "crowded_valley") -> pd.DataFrame:
    """The released Crowded Valley JSON tree as optbench's long table (same columns as
    :func:`analysis.load_results`)."""
    return read_deepobs(results_root, study=study).long()


def _fmt(v: float) -> str:
    """DeepOBS' setting-folder number format (``%.10e`` with trailing zeros of the mantissa cut)."""
    mant, exp = f"{float(v):.10e}".split("e")
    mant = mant.rstrip("0")
    return f"{mant}e{exp}"


def setting_folder(num_epochs: int, batch_size: int, hparams: dict) -> str:
    """DeepOBS' setting folder name: ``num_epochs__N__batch_size__B__<tf name>__<value>…`` (sorted)."""
    parts = [f"num_epochs__{num_epochs}", f"batch_size__{batch_size}"]
    for tf_name, v in sorted((TF_NAME_OF.get(k, k), v) for k, v in hparams.items()):
        parts.append(f"{tf_name}__{_fmt(v)}")
    return "__".join(parts)


def json_path(root: str | Path, record: dict) -> Path:
    """Where a run (record dict as in optbench's result files) goes in the released layout. The date
    part encodes the trial (tuning runs), so that :func:`import_deepobs` numbers trials back in order."""
    hp = {k: float(v) for k, v in record.get("hparams", [])}
    stamp = max(int(record.get("trial", -1)), 0)
    date = f"2020-01-01-{stamp // 3600:02d}-{stamp // 60 % 60:02d}-{stamp % 60:02d}"
    return (Path(root) / BUDGET_FOLDER_OF.get(record["budget"], record["budget"]) / record["schedule"] / record["problem"]
            / FOLDER_OF.get(record["optimizer"], record["optimizer"])
            / setting_folder(int(record["num_epochs"]), int(record["batch_size"]), hp)
            / f"random_seed__{int(record['seed'])}__{date}.json")


def json_document(record: dict, evals: np.ndarray) -> dict:
    """The DeepOBS JSON document of one run (accuracy lists only where the run has accuracies;
    NaN stays NaN, as Python's json writes and reads it)."""
    hp = {k: float(v) for k, v in record.get("hparams", [])}
    doc = {"testproblem": record["problem"], "batch_size": int(record["batch_size"]),
           "num_epochs": int(record["num_epochs"]), "random_seed": int(record["seed"]), "l2_reg": None,
           "optimizer_name": FOLDER_OF.get(record["optimizer"], record["optimizer"]),
           "optimizer_hyperparams": {TF_NAME_OF.get(k, k): v for k, v in hp.items()},
           "training_params": {"lr_sched_epochs": [], "lr_sched_factors": []}}
    for f, key in _SERIES_KEYS.items():
        v = evals[f]
        if f.endswith("accuracy") and not np.isfinite(v).any():
            continue
        doc[key] = v.tolist()
    doc["minibatch_train_losses"] = evals["minibatch_loss"].tolist()
    return doc


def export_deepobs(results: Results, root: str | Path, indent: int | None = None) -> int:
    """Write every run in the released layout (see :func:`json_path`); returns the number of files.
    ``indent=4`` is DeepOBS' own formatting (slower to write; compact JSON parses the same)."""
    starts, counts = results.starts, results.counts
    hp_cols = [c for c in results.runs.columns if c.startswith("hp_")]
    made: set[Path] = set()
    fields = [f for f in EVAL_FIELDS]
    for i, r in enumerate(results.runs.to_dict("records")):
        rec = {k: (str(r[k]) if k in ("problem", "optimizer", "schedule", "budget") else r[k])
               for k in ("problem", "optimizer", "schedule", "budget", "trial", "seed", "batch_size", "num_epochs")}
        rec["hparams"] = [(c[3:], r[c]) for c in hp_cols if pd.notna(r[c])]
        lo, hi = int(starts[i]), int(starts[i] + counts[i])
        rows = np.zeros(hi - lo, dtype=EVAL_DTYPE)
        for f in fields:
            rows[f] = results.field(f)[lo:hi]
        path = json_path(root, rec)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_text(json.dumps(json_document(rec, rows), indent=indent))
    return results.n_runs
