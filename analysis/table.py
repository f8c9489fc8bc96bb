"""The in-memory form of a study's results, and the tables made from it.

:class:`Results` holds one row per run (``runs``: the run record, status, hyperparameters) and the
evaluations of every run as flat numpy columns (``evals``), with ``run_index`` telling which run
each evaluation row belongs to. Rows are grouped by run, in the order of ``runs``, and sorted by
epoch within a run. Nothing is stored per run as a pandas object, which is what makes loading
53,760 runs fast (see ``benchmarks/bench_load.py``).

From it come:

- :meth:`Results.long`: the long table (record columns, epoch, step, split, metric, value);
- :meth:`Results.curves`: one row per evaluation, one column per split × metric;
- :meth:`Results.runs_table`: one row per run, with the last evaluation's metrics.

String columns are pandas categoricals, integer columns the smallest integer type that holds them.
Hyperparameters appear in the long and wide tables as one categorical column ``hparams``
("beta1=0.9,lr=0.001"); their numeric values are the ``hp_<name>`` columns of the runs table
(join on ``run_id``): 11 float columns repeated on 42 million rows would cost 3.7 GB.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "valid", "test")
METRICS = ("loss", "accuracy")
SERIES = tuple(f"{s}_{m}" for s in SPLITS for m in METRICS)
#: the evaluation fields of optbench's result files (``optbench.storage.EVAL_DTYPE``), in order
EVAL_FIELDS = ("epoch", "step", "lr", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy",
               "test_loss", "test_accuracy", "minibatch_loss", "wall_time")
EVAL_DTYPE = np.dtype([("epoch", "<i4"), ("step", "<i8")] + [(f, "<f8") for f in EVAL_FIELDS[2:]])
#: run-level string columns (categoricals in every table)
CATEGORY_COLS = ("run_id", "study", "problem", "optimizer", "schedule", "budget", "kind", "hparams", "status")
#: run-level integer columns
INT_COLS = ("trial", "seed", "batch_size", "num_epochs")
#: the record columns repeated on every row of the long and wide tables
RECORD_COLS = ("run_id", "study", "problem", "optimizer", "schedule", "budget", "kind", "trial", "seed",
               "batch_size", "num_epochs", "hparams", "status")
DONE = ("finished", "diverged")


def small_int(a: np.ndarray) -> np.ndarray:
    """``a`` in the smallest signed integer type that holds its values."""
    a = np.asarray(a)
    if a.size == 0:
        return a.astype(np.int32)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            return a  # missing values (NaN) or fractions: leave as floats
        a = a.astype(np.int64)
    lo, hi = int(a.min()), int(a.max())
    for t in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return a.astype(t, copy=False)
    return a


def hparams_label(pairs: Iterable[Sequence]) -> str:
    """A setting's canonical label, e.g. "beta1=0.9,lr=0.001" (sorted by name, exact reprs)."""
    return ",".join(f"{k}={v!r}" for k, v in sorted((str(k), v) for k, v in pairs))


def columns_from_arrays(arrays: list[np.ndarray], fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per-run evaluation arrays → one contiguous array per field (``arrays`` is emptied).

    One concatenation of the structured arrays (a memcpy per run), then one copy per field: much
    faster than concatenating 50,000 strided field views per field."""
    fields = list(fields or EVAL_FIELDS)
    if not arrays:
        return {f: np.zeros(0) for f in fields}
    if all(a.dtype is EVAL_DTYPE or a.dtype == EVAL_DTYPE for a in arrays):
        # as raw bytes: numpy's per-array promotion of structured dtypes would cost more than the copy
        big = np.concatenate([a.view(np.uint8) for a in arrays]).view(EVAL_DTYPE)
        del arrays[:]
        return {f: big[f].copy() for f in fields}
    names = set().union(*(a.dtype.names or () for a in arrays))
    out = {f: np.concatenate([a[f] if f in a.dtype.names else np.full(len(a), np.nan) for a in arrays])
           for f in fields if f in names}
    del arrays[:]
    return out


def runs_frame(rows: dict[str, list], hp: dict[str, list]) -> pd.DataFrame:
    """The runs table from column lists: categoricals for strings, small ints, ``hp_<name>`` floats."""
    df = pd.DataFrame({c: rows[c] for c in rows})
    for c in CATEGORY_COLS:
        if c in df:
            df[c] = df[c].astype(str).astype("category")
    for c in INT_COLS:
        if c in df:
            df[c] = small_int(df[c].to_numpy(dtype=np.int64))
    for name in sorted(hp):
        col = pd.Series(hp[name], dtype=object)
        num = pd.to_numeric(col, errors="coerce")
        df[f"hp_{name}"] = num if num.notna().sum() == col.notna().sum() else col
    return df


#: values for record columns a hand-made table lacks
DEFAULTS = {"run_id": "", "study": "", "problem": "", "optimizer": "", "schedule": "none", "budget": "oneshot",
            "kind": "oneshot", "hparams": "", "status": "finished", "trial": -1, "seed": 0, "batch_size": 0,
            "num_epochs": 0}


def _normalise_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Every record column present, strings categorical, integers small."""
    for c in CATEGORY_COLS:
        if c not in runs:
            runs[c] = DEFAULTS[c]
        if not isinstance(runs[c].dtype, pd.CategoricalDtype):
            runs[c] = runs[c].astype(str).astype("category")
    for c in INT_COLS:
        if c not in runs:
            runs[c] = DEFAULTS[c]
        if runs[c].dtype.kind not in "iu":
            runs[c] = pd.to_numeric(runs[c], errors="coerce").fillna(DEFAULTS[c]).astype(np.int64)
        runs[c] = small_int(runs[c].to_numpy())
    return runs


@dataclasses.dataclass
class Results:
    runs: pd.DataFrame
    evals: dict[str, np.ndarray]
    run_index: np.ndarray
    unreadable: list = dataclasses.field(default_factory=list)

    # ------------------------------------------------------------------ structure
    def __post_init__(self):
        self.runs = _normalise_runs(self.runs.reset_index(drop=True))
        self.run_index = np.asarray(self.run_index, dtype=np.int32)
        self._order_rows()

    def _order_rows(self) -> None:
        ri, ep = self.run_index, self.evals.get("epoch")
        if len(ri) < 2:
            return
        out_of_order = np.any(ri[1:] < ri[:-1])
        if ep is not None and not out_of_order:
            out_of_order = np.any((ri[1:] == ri[:-1]) & (ep[1:] < ep[:-1]))
        if out_of_order:
            order = np.lexsort((ep, ri)) if ep is not None else np.argsort(ri, kind="stable")
            self.run_index = ri[order]
            self.evals = {k: v[order] for k, v in self.evals.items()}

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.run_index, minlength=self.n_runs)

    @property
    def starts(self) -> np.ndarray:
        c = self.counts
        return np.concatenate([[0], np.cumsum(c)[:-1]]).astype(np.int64)

    def field(self, name: str) -> np.ndarray:
        if name in self.evals:
            return self.evals[name]
        return np.full(len(self.run_index), np.nan)

    def problem_has_accuracy(self) -> dict[str, bool]:
        """A problem "has" accuracy if any evaluation of any of its runs reports one."""
        prob = self.runs["problem"]
        cats = prob.cat.categories
        finite = np.zeros(len(self.run_index), dtype=bool)
        for s in SPLITS:
            finite |= np.isfinite(self.field(f"{s}_accuracy"))
        per_run = np.zeros(self.n_runs, dtype=bool)
        per_run[np.unique(self.run_index[finite])] = True
        codes = prob.cat.codes.to_numpy()
        per_prob = np.bincount(codes[codes >= 0], weights=per_run[codes >= 0], minlength=len(cats)) > 0
        return {c: bool(h) for c, h in zip(cats, per_prob)}

    def diverged_runs(self) -> np.ndarray:
        """Per run: a measured loss (a series with some finite value in that run) is NaN or ±inf somewhere.
        A series entirely NaN was not measured (hand-made or imported tables) and does not count."""
        bad = np.zeros(self.n_runs, dtype=bool)
        for s in SPLITS:
            v = self.field(f"{s}_loss")
            fin = np.isfinite(v)
            if fin.all():
                continue
            measured = np.bincount(self.run_index[fin], minlength=self.n_runs) > 0
            broken = np.bincount(self.run_index[~fin], minlength=self.n_runs) > 0
            bad |= measured & broken
        return bad

    def subset(self, run_mask: np.ndarray) -> "Results":
        """The runs where ``run_mask`` is true, with their evaluations."""
        run_mask = np.asarray(run_mask, dtype=bool)
        new_code = np.cumsum(run_mask) - 1
        rows = run_mask[self.run_index]
        runs = self.runs[run_mask].reset_index(drop=True)
        for c in CATEGORY_COLS:
            if c in runs and isinstance(runs[c].dtype, pd.CategoricalDtype):
                runs[c] = runs[c].cat.remove_unused_categories()
        return Results(runs, {k: v[rows] for k, v in self.evals.items()},
                       new_code[self.run_index[rows]].astype(np.int32), list(self.unreadable))

    # ------------------------------------------------------------------ tables
    def _run_columns(self, cols: Sequence[str]) -> dict[str, tuple[np.ndarray, pd.Index | None]]:
        """Per-run column arrays: (codes, categories) for categoricals, (values, None) otherwise."""
        out = {}
        for c in cols:
            if c not in self.runs:
                continue
            s = self.runs[c]
            if isinstance(s.dtype, pd.CategoricalDtype):
                out[c] = (s.cat.codes.to_numpy(), s.cat.categories)
            else:
                out[c] = (s.to_numpy(), None)
        return out

    def long(self, series: Sequence[str] = SERIES, drop_missing_metrics: bool = True) -> pd.DataFrame:
        """The long table: record columns, epoch, step, split, metric, value.

        Rows are ordered by (split, metric), then run, then epoch. With ``drop_missing_metrics``
        the accuracy rows of problems that report no accuracy are left out.
        """
        n = len(self.run_index)
        has_acc = self.problem_has_accuracy()
        prob = self.runs["problem"]
        acc_run = np.array([has_acc.get(p, False) for p in prob.cat.categories], dtype=bool)[
            prob.cat.codes.to_numpy()] if self.n_runs else np.zeros(0, bool)
        acc_rows = acc_run[self.run_index] if n else np.zeros(0, bool)
        acc_idx = None if acc_rows.all() else np.flatnonzero(acc_rows)
        parts = []  # (series name, row indices or None)
        for name in series:
            is_acc = name.endswith("_accuracy")
            idx = acc_idx if (is_acc and drop_missing_metrics) else None
            parts.append((name, idx))
        sizes = [n if idx is None else len(idx) for _, idx in parts]
        itype = np.int32 if n < 2**31 else np.int64
        rows = (np.concatenate([np.arange(n, dtype=itype) if idx is None else idx.astype(itype, copy=False)
                                for _, idx in parts]) if parts else np.zeros(0, itype))
        run_of = self.run_index[rows]  # the run of every long row: one gather per column below

        data: dict[str, object] = {}
        for c, (vals, cats) in self._run_columns(RECORD_COLS).items():
            col = vals[run_of]
            data[c] = pd.Categorical.from_codes(col, cats) if cats is not None else col
        del run_of
        data["epoch"] = small_int(self.field("epoch"))[rows]
        data["step"] = small_int(self.field("step"))[rows]
        del rows
        split_codes = np.concatenate([np.full(k, SPLITS.index(name.split("_")[0]), np.int8)
                                      for (name, _), k in zip(parts, sizes)]) if parts else np.zeros(0, np.int8)
        metric_codes = np.concatenate([np.full(k, METRICS.index(name.split("_")[1]), np.int8)
                                       for (name, _), k in zip(parts, sizes)]) if parts else np.zeros(0, np.int8)
        data["split"] = pd.Categorical.from_codes(split_codes, SPLITS)
        data["metric"] = pd.Categorical.from_codes(metric_codes, METRICS)
        data["value"] = np.concatenate([self.field(name) if idx is None else self.field(name)[idx]
                                        for name, idx in parts]) if parts else np.zeros(0)
        df = pd.DataFrame(data, copy=False)
        df.attrs["unreadable"] = list(self.unreadable)
        return df

    def curves(self, fields: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per evaluation: record columns, then epoch, step, lr, <split>_<metric>, … ."""
        data: dict[str, object] = {}
        for c, (vals, cats) in self._run_columns(RECORD_COLS).items():
            col = vals[self.run_index]
            data[c] = pd.Categorical.from_codes(col, cats) if cats is not None else col
        for f in (fields or [f for f in EVAL_FIELDS if f in self.evals] or EVAL_FIELDS):
            data[f] = self.field(f)
        df = pd.DataFrame(data, copy=False)
        df.attrs["unreadable"] = list(self.unreadable)
        return df

    def runs_table(self) -> pd.DataFrame:
        """One row per run: record, status, ``n_evals`` and ``final_<split>_<metric>`` (last evaluation)."""
        df = self.runs.copy()
        counts = self.counts
        df["n_evals"] = counts
        last = self.starts + counts - 1
        ok = counts > 0
        for name in SERIES:
            v = np.full(self.n_runs, np.nan)
            v[ok] = self.field(name)[last[ok]]
            df[f"final_{name}"] = v
        df.attrs["unreadable"] = list(self.unreadable)
        return df

    # ------------------------------------------------------------------ from tables
    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> "Results":
        """Back from a long table (split/metric/value) or a wide one (<split>_<metric> columns)."""
        if isinstance(df, Results):
            return df
        if df.empty:
            return cls(pd.DataFrame({c: pd.Series([], dtype=object) for c in RECORD_COLS}), {}, np.zeros(0, np.int32),
                       list(df.attrs.get("unreadable", [])))
        long = "value" in df.columns and "split" in df.columns
        rid = df["run_id"]
        rid_cat = rid if isinstance(rid.dtype, pd.CategoricalDtype) else rid.astype("category")
        codes = rid_cat.cat.codes.to_numpy().astype(np.int64)
        epoch = df["epoch"].to_numpy().astype(np.int64)
        key = codes * (int(epoch.max()) + 2) + (epoch + 1)
        ukey, first, inv = np.unique(key, return_index=True, return_inverse=True)
        inv = inv.ravel()
        row_run = codes[first]
        evals: dict[str, np.ndarray] = {"epoch": epoch[first]}
        if "step" in df:
            evals["step"] = df["step"].to_numpy().astype(np.int64)[first]
        if long:
            split = df["split"].astype(str).to_numpy() if not isinstance(df["split"].dtype, pd.CategoricalDtype) else None
            metric = df["metric"].astype(str).to_numpy() if not isinstance(df["metric"].dtype, pd.CategoricalDtype) else None
            value = df["value"].to_numpy(dtype=float)
            for name in SERIES:
                s, m = name.split("_")
                sel = ((df["split"] == s) & (df["metric"] == m)).to_numpy() if split is None else (split == s) & (metric == m)
                col = np.full(len(ukey), np.nan)
                col[inv[sel]] = value[sel]
                evals[name] = col
        else:
            for f in EVAL_FIELDS[2:]:
                if f in df:
                    evals[f] = df[f].to_numpy(dtype=float)[first]
        # runs table: first row of every run
        present = np.unique(codes)
        first_row = np.full(codes.max() + 1, -1, dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        sc = codes[order]
        starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
        first_row[sc[starts]] = order[starts]
        run_cols = [c for c in df.columns if c in RECORD_COLS or c.startswith("hp_")]
        runs = df.iloc[first_row[present]][run_cols].reset_index(drop=True)
        for c in run_cols:
            if isinstance(runs[c].dtype, pd.CategoricalDtype):
                runs[c] = runs[c].cat.remove_unused_categories()
        remap = np.full(codes.max() + 1, -1, dtype=np.int32)
        remap[present] = np.arange(len(present), dtype=np.int32)
        if "status" not in runs:
            runs["status"] = pd.Categorical(["finished"] * len(runs))
        return cls(runs, evals, remap[row_run], list(df.attrs.get("unreadable", [])))


def combine(*tables: pd.DataFrame) -> pd.DataFrame:
    """Concatenate long (or wide) tables, keeping string columns categorical (a plain ``pd.concat``
    turns categoricals with different categories into slow, memory-hungry object columns)."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return pd.DataFrame()
    cols = list(dict.fromkeys(c for t in tables for c in t.columns))
    out = {}
    for c in cols:
        parts = [t[c] if c in t else pd.Series([np.nan] * len(t)) for t in tables]
        if any(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            parts = [p if isinstance(p.dtype, pd.CategoricalDtype) else p.astype(str).astype("category") for p in parts]
            out[c] = pd.api.types.union_categoricals(parts, ignore_order=True)
        else:
            out[c] = np.concatenate([p.to_numpy() for p in parts])
    df = pd.DataFrame(out, copy=False)
    df.attrs["unreadable"] = [u for t in tables for u in t.attrs.get("unreadable", [])]
    return df
