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

import dataclasses
import hashlib
import json
import math
import operator
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

import h5py
import numpy as np
import pandas as pd

from optbench import optimizer_specs
from optbench.errors import PlanError
from optbench.record import LOCATION_ARGS, RunRecord, canonical_items
from optbench.search import DECOUPLED_LR, sample_trials
from optbench.study import Study

PLAN_FILE = "plan.h5"
STUDY_COPY = "study.toml"
RESOLVED_FILE = "resolved.json"
FORMAT_VERSION = 2  # 2: string columns as fixed-length UTF-8 (1: variable-length; still read)
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
                # the settings do not depend on the schedule: computed once per trial (and shared, which
                # also lets fast_run_ids reuse their encoding)
                default = _setting(spec, defaults)
                tuned_settings = [(next(name for name, n in study.budgets if k < n), _setting(spec, _merge(defaults, tuned)))
                                  for k, tuned in enumerate(trials)]
                for sched in study.schedules:
                    base = dict(study=study.name, problem=problem, optimizer=opt, schedule=sched,
                                batch_size=batch_size, num_epochs=setting.num_epochs, problem_args=pargs,
                                schedule_args=canonical_items(study.schedule_args.get(sched)))
                    for seed in study.oneshot_seeds:
                        yield RunRecord(budget="oneshot", kind="oneshot", trial=-1, seed=seed, hparams=default, **base)
                    for k, (budget, hparams) in enumerate(tuned_settings):
                        yield RunRecord(budget=budget, kind="tuning", trial=k, seed=study.tuning_seed,
                                        hparams=hparams, **base)
                    for budget, _ in study.budgets:
                        for seed in study.rerun_seeds:
                            yield RunRecord(budget=budget, kind="rerun", trial=-1, seed=seed, **base)


def _merge(defaults: dict, tuned: dict) -> dict:
    """The defaults overridden by a trial; a trial that draws a decoupled learning-rate coordinate
    (lr_over_eps …) replaces the default lr, which the coordinate then determines with ε."""
    if any(c in tuned for c in DECOUPLED_LR):
        defaults = {k: v for k, v in defaults.items() if k != "lr"}
    return {**defaults, **tuned}


def _setting(spec, values) -> tuple[tuple[str, float], ...]:
    """A run's hyperparameters as floats: the plan file stores them as floats, and the id recomputed
    from a plan row (:func:`record_from_row`) must equal the planned one (Lookahead's default k is an int)."""
    return canonical_items({k: float(v) for k, v in spec.setting(values).items()})


def records_to_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    records = list(records)
    n = len(records)
    dumps_cache: dict[int, tuple[tuple, str]] = {}

    def dumps(items: tuple) -> str:  # json of a (shared) args tuple, computed once per tuple object
        hit = dumps_cache.get(id(items))
        if hit is None or hit[0] is not items:
            hit = dumps_cache[id(items)] = (items, json.dumps(dict(items), sort_keys=True))
        return hit[1]

    plain = [c for c in RECORD_COLUMNS if c not in ("run_id", "problem_args", "schedule_args")]
    get = operator.attrgetter(*plain, "problem_args", "schedule_args", "hparams")
    columns = list(zip(*map(get, records))) if records else [()] * (len(plain) + 3)
    cols: dict[str, Any] = {c: np.array(v, dtype=np.int64 if c in INT_COLUMNS else object)
                            for c, v in zip(plain, columns)}
    cols["problem_args"] = np.array([dumps(a) for a in columns[-3]], dtype=object)
    cols["schedule_args"] = np.array([dumps(a) for a in columns[-2]], dtype=object)
    cols["run_id"] = np.array(fast_run_ids(records), dtype=object)
    # hyperparameters: one row of values per distinct setting (a trial's setting is shared by its runs)
    index: dict[int, int] = {}
    settings: list[tuple] = []
    which = np.empty(n, dtype=np.int64)
    for i, h in enumerate(columns[-1]):
        j = index.get(id(h))
        if j is None or settings[j] is not h:
            j = index[id(h)] = len(settings)
            settings.append(h)
        which[i] = j
    names = sorted({k for h in settings for k, _ in h})
    table = np.full((len(settings), len(names)), np.nan)
    pos = {k: c for c, k in enumerate(names)}
    for j, h in enumerate(settings):
        for k, v in h:
            table[j, pos[k]] = float(v)
    for k in names:
        cols[f"hp_{k}"] = table[which, pos[k]] if n else np.zeros(0)
    return pd.DataFrame(cols, columns=list(RECORD_COLUMNS) + [f"hp_{k}" for k in names])


# ------------------------------------------------------------------ fast run ids
# ``RunRecord.run_id`` hashes ``json.dumps(record.identity(), sort_keys=True, separators=(",", ":"))``;
# ``dataclasses.asdict`` and the generic JSON encoder make that ~100 µs a run, 5 s for Crowded Valley.
# The functions below build the *same* JSON text field by field, encoding each distinct value once
# (strings by value, tuples by object identity), and check a sample of records against
# ``RunRecord.run_id`` on every call, so a change of the record's identity cannot go unnoticed.
_ID_FIELDS = tuple(sorted(f.name for f in dataclasses.fields(RunRecord)))
_ID_KEYS = ("batch_size", "budget", "hparams", "kind", "num_epochs", "optimizer", "problem", "problem_args",
            "schedule", "schedule_args", "seed", "study", "trial")
_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


class _IdEncoder:
    def __init__(self):
        self._str: dict[str, str] = {}
        self._obj: dict[tuple[int, frozenset], tuple[object, str]] = {}

    def s(self, value: str) -> str:
        out = self._str.get(value)
        if out is None:
            out = self._str[value] = _JSON.encode(value)
        return out

    def items(self, value: tuple, drop: frozenset = frozenset()) -> str:
        """JSON of a tuple of (key, value) pairs (keys in ``drop`` left out), cached by object identity."""
        key = (id(value), drop)
        hit = self._obj.get(key)
        if hit is None or hit[0] is not value:
            kept = tuple(p for p in value if p[0] not in drop) if drop else value
            hit = self._obj[key] = (value, _JSON.encode(kept))
        return hit[1]

    def blob(self, batch_size, budget, hparams_json, kind, num_epochs, optimizer, problem, problem_args_json,
             schedule, schedule_args_json, seed, study, trial) -> str:
        s = self.s
        return (f'{{"batch_size":{_num(batch_size)},"budget":{s(budget)},"hparams":{hparams_json},'
                f'"kind":{s(kind)},"num_epochs":{_num(num_epochs)},"optimizer":{s(optimizer)},'
                f'"problem":{s(problem)},"problem_args":{problem_args_json},"schedule":{s(schedule)},'
                f'"schedule_args":{schedule_args_json},"seed":{_num(seed)},"study":{s(study)},'
                f'"trial":{_num(trial)}}}')


def _num(v) -> str:
    """JSON of a number as ``json.dumps`` writes it (int and finite float: their repr)."""
    t = type(v)
    if t is int or (t is float and math.isfinite(v)):
        return repr(v)
    return _JSON.encode(v)


def _hash(blob: str) -> str:
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sample(n: int) -> list[int]:
    return sorted(set(range(0, n, max(1, n // 50))) | {n - 1}) if n else []


def fast_run_ids(records: list[RunRecord]) -> list[str]:
    """``[r.run_id for r in records]``, about 20 times faster.

    A sample of records is checked against ``RunRecord.run_id``; should they ever disagree (the
    record's identity changed and this encoder was not updated), every id is computed the slow way.
    """
    if _ID_FIELDS != _ID_KEYS:  # the record gained or lost a field: use the reference implementation
        return [r.run_id for r in records]
    enc = _IdEncoder()
    s, items = enc.s, enc.items
    ids = []
    bs = ne = o = p = pa = sc = sa = st = None
    head = middle = tail = ""
    sha = hashlib.sha256
    for r in records:
        # the fields a (problem, optimizer, schedule, batch size) group shares: encoded once per group
        # (recognised by object identity, which implies an identical encoding)
        if not (r.problem_args is pa and r.schedule_args is sa and r.optimizer is o and r.problem is p
                and r.schedule is sc and r.study is st and r.batch_size is bs and r.num_epochs is ne):
            bs, ne, o, p, pa, sc, sa, st = (r.batch_size, r.num_epochs, r.optimizer, r.problem, r.problem_args,
                                            r.schedule, r.schedule_args, r.study)
            head = f'{{"batch_size":{_num(r.batch_size)},"budget":'
            middle = (f'"num_epochs":{_num(r.num_epochs)},"optimizer":{s(r.optimizer)},"problem":{s(r.problem)},'
                      f'"problem_args":{items(r.problem_args, LOCATION_ARGS)},"schedule":{s(r.schedule)},'
                      f'"schedule_args":{items(r.schedule_args)}')
            tail = f',"study":{s(r.study)},"trial":'
        kind = r.kind
        hparams = "[]" if kind == "rerun" else items(r.hparams)
        blob = (f'{head}{s(r.budget)},"hparams":{hparams},"kind":{s(kind)},{middle},'
                f'"seed":{_num(r.seed)}{tail}{_num(r.trial)}}}')
        ids.append(sha(blob.encode()).hexdigest()[:16])
    if any(records[i].run_id != ids[i] for i in _sample(len(records))):
        return [r.run_id for r in records]
    return ids


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
                f.create_dataset(col, data=_fixed_utf8(values), compression="gzip", shuffle=True)
    os.replace(tmp, existing)
    (out / STUDY_COPY).write_text(study.source)
    progress(f"planned {len(df)} runs in {time.time() - t0:.1f}s → {existing}")
    return df


def _fixed_utf8(values: np.ndarray) -> np.ndarray:
    """Strings as fixed-length UTF-8 (format 2): ~6x faster to write and read than variable-length
    strings, and ~30x smaller once compressed (the columns repeat a handful of values)."""
    data = np.array([str(v).encode() for v in values], dtype=bytes)
    if data.dtype.itemsize == 0:
        data = data.astype("S1")
    return data.astype(h5py.string_dtype("utf-8", data.dtype.itemsize))


def _decode_strings(data: np.ndarray) -> np.ndarray:
    """A string column as an object array of str: format 1 (variable length) or 2 (fixed-length UTF-8)."""
    if data.dtype.kind == "S":
        if data.size and (data.view(np.uint8) > 127).any():
            return np.char.decode(data, "utf-8").astype(object)
        return data.astype(str).astype(object)
    if len(data) == 0:
        return data.astype(str)
    return np.array([x.decode() if isinstance(x, bytes) else x for x in data], dtype=object)


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
                if data.dtype.kind in "OS":
                    data = _decode_strings(data)
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
    """Recompute every run id from its row: a plan edited by hand must not silently mix results.

    Equivalent to ``record_from_row(row).run_id == row["run_id"]`` for every row (which
    :func:`_check_sample` confirms on a sample), computed column-wise in a fraction of the time.
    """
    bad = _first_mismatch(df)
    if bad is not None:
        raise PlanError(f"{path}: row of run {df['run_id'].iloc[bad]} does not match its content "
                        "(plan edited by hand?); re-run `optbench plan`")


def _first_mismatch(df: pd.DataFrame) -> int | None:
    n = len(df)
    if n == 0:
        return None
    # the reference implementation on a sample of rows; should the fast path below ever disagree with
    # it (RunRecord.identity changed and _IdEncoder was not updated), every row is checked the slow way
    sample = _sample(n)
    reference = [record_from_row(row).run_id == row["run_id"] for row in df.iloc[sample].to_dict("records")]
    if _ID_FIELDS != _ID_KEYS:
        return _first_mismatch_slow(df)
    enc = _IdEncoder()
    args_json: dict[str, str] = {}

    def args(text: str, drop: frozenset = frozenset()) -> str:  # as record_from_row + identity, per distinct text
        key = (text, bool(drop))
        out = args_json.get(key)
        if out is None:
            items = canonical_items(json.loads(text))
            out = args_json[key] = _JSON.encode(tuple(p for p in items if p[0] not in drop))
        return out

    # hparams as record_from_row gives them: the non-NaN hp_ columns, sorted by name, as floats
    hp_cols = sorted(c for c in df.columns if c.startswith("hp_"))
    names = [_JSON.encode(c[3:]) for c in hp_cols]
    hp_values = df[hp_cols].to_numpy(dtype=np.float64) if hp_cols else np.zeros((n, 0))
    present = ~np.isnan(hp_values)
    order = sorted(range(len(hp_cols)), key=lambda j: hp_cols[j][3:])
    kinds = df["kind"].tolist()
    ids = df["run_id"].tolist()
    cols = [df[c].tolist() for c in ("batch_size", "budget", "num_epochs", "optimizer", "problem", "problem_args",
                                      "schedule", "schedule_args", "seed", "study", "trial")]
    hp_json: dict[bytes, str] = {}  # by the row's exact float bits (NaN = absent)
    fast_ok = []
    for i, (bs, budget, epochs, opt, prob, pargs, sched, sargs, seed, study, trial) in enumerate(zip(*cols)):
        if kinds[i] == "rerun":
            hparams = "[]"
        else:
            key = hp_values[i].tobytes()
            hparams = hp_json.get(key)
            if hparams is None:
                row_vals, row_present = hp_values[i], present[i]
                hparams = hp_json[key] = "[" + ",".join(f"[{names[j]},{_num(float(row_vals[j]))}]"
                                                        for j in order if row_present[j]) + "]"
        blob = enc.blob(int(bs), budget, hparams, kinds[i], int(epochs), opt, prob, args(pargs, LOCATION_ARGS),
                        sched, args(sargs), int(seed), study, int(trial))
        fast_ok.append(_hash(blob) == ids[i])
    if [fast_ok[i] for i in sample] != reference:
        return _first_mismatch_slow(df)
    return next((i for i, ok in enumerate(fast_ok) if not ok), None)


def _first_mismatch_slow(df: pd.DataFrame) -> int | None:
    for i, row in enumerate(df.to_dict("records")):
        if record_from_row(row).run_id != row["run_id"]:
            return i
    return None


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
