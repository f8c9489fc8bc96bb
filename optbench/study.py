"""Study files: a TOML description of a benchmark, validated strictly.

A study names problems, optimizers and schedules and says how to tune them. Every key is checked:
an unknown key, a wrong type, an empty list or a non-nested budget is a :class:`StudyError` naming
the file and the key, before anything is written. The layout (see ``jobs/*.toml``)::

    name = "quickstart"
    problems = ["quadratic_deep", "digits_mlp"]
    optimizers = ["sgd", "adam"]
    schedules = ["none", "cosine"]

    [problem_settings.quadratic_deep]   # optional: batch_size (or a sweep: batch_sizes = [..]),
    num_epochs = 10                     # num_epochs, problem args

    [schedule_settings.warmup_cosine]   # optional: arguments of a schedule
    warmup_fraction = 0.1

    [oneshot]                           # the default setting, several seeds
    seeds = [42, 43]

    [tuning]                            # one pool of trials; budgets are nested prefixes
    search = "random"                   # or "halton"
    sampler_seed = 0
    seed = 42
    budgets = { small = 4, large = 8 }
    rerun_seeds = [43, 44]              # best setting of each budget re-run with these seeds

    [tuning.fixed.adam]                 # optional: hyperparameters held fixed (not tuned), e.g. β1 = β2
    beta1 = 0.95
    beta2 = 0.95
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, Mapping

from optbench import optimizer_specs, problems, schedules
from optbench.errors import StudyError
from optbench.search import DECOUPLED_LR, Dist

TOP_KEYS = {"name", "description", "problems", "optimizers", "schedules", "problem_settings", "schedule_settings",
            "oneshot", "tuning", "selection"}
TUNING_KEYS = {"search", "sampler_seed", "seed", "budgets", "rerun_seeds", "space", "fixed"}
ONESHOT_KEYS = {"seeds"}
SELECTION_KEYS = {"split", "epoch"}


@dataclasses.dataclass(frozen=True)
class ProblemSetting:
    batch_sizes: tuple[int, ...]  # one entry, or a sweep (the crossover study)
    num_epochs: int
    args: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    description: str
    problems: tuple[str, ...]
    optimizers: tuple[str, ...]
    schedules: tuple[str, ...]
    settings: Mapping[str, ProblemSetting]
    oneshot_seeds: tuple[int, ...]
    search: str
    sampler_seed: int
    tuning_seed: int
    budgets: tuple[tuple[str, int], ...]  # (name, number of trials), increasing
    rerun_seeds: tuple[int, ...]
    space_overrides: Mapping[str, Mapping[str, Dist]]  # optimizer -> hp -> Dist
    fixed: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)  # optimizer -> hp -> value
    schedule_args: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    selection_split: str = "valid"
    selection_epoch: str = "last"  # "last" or "best"
    source: str = ""  # the TOML text, kept with the plan

    @property
    def n_trials(self) -> int:
        return self.budgets[-1][1] if self.budgets else 0

    def space(self, optimizer: str) -> dict[str, Dist]:
        """What is tuned: the optimizer's space, with the study's overrides, minus fixed hyperparameters."""
        base = dict(optimizer_specs.get(optimizer).space)
        over = self.space_overrides.get(optimizer, {})
        # one learning-rate coordinate: a study that tunes lr_over_eps (or lr) replaces the other
        lr_coords = {"lr", *DECOUPLED_LR}
        if lr_coords & set(over):
            base = {k: v for k, v in base.items() if k not in lr_coords}
        space = {**base, **over}
        return {k: v for k, v in space.items() if k not in self.fixed.get(optimizer, {})}

    def defaults(self, optimizer: str) -> dict[str, float]:
        """The one-shot setting: the published defaults with the study's fixed values."""
        return {**optimizer_specs.get(optimizer).defaults, **self.fixed.get(optimizer, {})}


class _Checker:
    """Type checks that name the file and the key in every message."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, msg: str) -> StudyError:
        return StudyError(f"{self.path}: {key}: {msg}")

    def unknown(self, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
        extra = sorted(set(table) - allowed)
        if extra:
            raise self.fail(f"{where}{extra[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def typed(self, value: Any, typ: type | tuple[type, ...], key: str) -> Any:
        ok = isinstance(value, typ) and not (typ in (int, (int, float)) and isinstance(value, bool))
        if not ok:
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise self.fail(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        self.typed(value, list, key)
        if not value:
            raise self.fail(key, "must not be empty")
        for v in value:
            self.typed(v, str, key)
        dup = sorted({v for v in value if value.count(v) > 1})
        if dup:
            raise self.fail(key, f"duplicated entry {dup[0]!r}")
        return tuple(value)

    def seeds(self, value: Any, key: str, allow_empty: bool = False) -> tuple[int, ...]:
        self.typed(value, list, key)
        if not value and not allow_empty:
            raise self.fail(key, "must not be empty")
        for v in value:
            self.typed(v, int, key)
            if v < 0:
                raise self.fail(key, f"seeds must be >= 0, got {v}")
        if len(set(value)) != len(value):
            raise self.fail(key, "duplicated seed")
        return tuple(value)

    def positive(self, value: Any, key: str) -> int:
        self.typed(value, int, key)
        if value <= 0:
            raise self.fail(key, f"must be a positive integer, got {value}")
        return value


def load_study(path: str | Path) -> Study:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StudyError(f"{path}: study file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StudyError(f"{path}: cannot read study file: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path}: malformed TOML: {e}") from None
    return parse_study(raw, str(path), text)


def parse_study(raw: Mapping[str, Any], where: str = "<study>", source: str = "") -> Study:
    c = _Checker(where)
    c.unknown(raw, TOP_KEYS, "")
    for key in ("name", "problems", "optimizers", "schedules"):
        if key not in raw:
            raise c.fail(key, "missing")
    name = c.typed(raw["name"], str, "name")
    if not name or any(ch in name for ch in "/\\ \t\n"):
        raise c.fail("name", f"must be a non-empty word without spaces or slashes, got {name!r}")
    probs = c.names(raw["problems"], "problems")
    for p in probs:
        try:
            problems.get(p)
        except StudyError as e:
            raise c.fail("problems", str(e)) from None
    opts = c.names(raw["optimizers"], "optimizers")
    for o in opts:
        try:
            optimizer_specs.get(o)
        except StudyError as e:
            raise c.fail("optimizers", str(e)) from None
    scheds = c.names(raw["schedules"], "schedules")
    for s in scheds:
        try:
            schedules.check(s)
        except StudyError as e:
            raise c.fail("schedules", str(e)) from None

    settings = {}
    ps = c.typed(raw.get("problem_settings", {}), dict, "problem_settings")
    c.unknown(ps, set(probs), "problem_settings.")
    for p in probs:
        spec = problems.get(p)
        table = c.typed(ps.get(p, {}), dict, f"problem_settings.{p}")
        c.unknown(table, {"batch_size", "batch_sizes", "num_epochs"} | set(spec.args), f"problem_settings.{p}.")
        if "batch_size" in table and "batch_sizes" in table:
            raise c.fail(f"problem_settings.{p}.batch_sizes", "give batch_size or batch_sizes, not both")
        if "batch_sizes" in table:
            key = f"problem_settings.{p}.batch_sizes"
            bs = c.seeds(table["batch_sizes"], key)
            if 0 in bs:
                raise c.fail(key, "batch sizes must be positive")
        else:
            bs = (c.positive(table.get("batch_size", spec.batch_size), f"problem_settings.{p}.batch_size"),)
        ne = c.positive(table.get("num_epochs", spec.num_epochs), f"problem_settings.{p}.num_epochs")
        args = {}
        for k, v in table.items():
            if k in spec.args:
                default = spec.args[k]
                typ = (int, float) if isinstance(default, float) else type(default)
                args[k] = c.typed(v, typ, f"problem_settings.{p}.{k}")
        settings[p] = ProblemSetting(bs, ne, args)

    oneshot = c.typed(raw.get("oneshot", {}), dict, "oneshot")
    c.unknown(oneshot, ONESHOT_KEYS, "oneshot.")
    oneshot_seeds = c.seeds(oneshot.get("seeds", []), "oneshot.seeds", allow_empty=True)

    tuning = c.typed(raw.get("tuning", {}), dict, "tuning")
    c.unknown(tuning, TUNING_KEYS, "tuning.")
    search = c.typed(tuning.get("search", "random"), str, "tuning.search")
    if search not in ("random", "halton"):
        raise c.fail("tuning.search", f"unknown search {search!r} (random, halton)")
    budgets_raw = c.typed(tuning.get("budgets", {}), dict, "tuning.budgets")
    budgets, last = [], 0
    for bname, n in budgets_raw.items():
        c.positive(n, f"tuning.budgets.{bname}")
        if bname == "oneshot":
            raise c.fail(f"tuning.budgets.{bname}", "'oneshot' is reserved for the default setting")
        if n <= last:
            raise c.fail(f"tuning.budgets.{bname}", f"budgets must grow (nested prefixes): {n} after {last}")
        budgets.append((bname, n))
        last = n
    rerun_seeds = c.seeds(tuning.get("rerun_seeds", []), "tuning.rerun_seeds", allow_empty=True)
    if rerun_seeds and not budgets:
        raise c.fail("tuning.rerun_seeds", "re-runs need at least one budget")
    tuning_seed = c.typed(tuning.get("seed", 42), int, "tuning.seed")
    sampler_seed = c.typed(tuning.get("sampler_seed", 0), int, "tuning.sampler_seed")
    if not oneshot_seeds and not budgets:
        raise c.fail("oneshot.seeds", "the study has no runs: give one-shot seeds or tuning budgets")

    # hyperparameters of the study's per-step schedules (Choi's linear decay: T and the final factor)
    # may be tuned or fixed per optimizer like the optimizer's own
    sched_hps = {h for sch in scheds for h in schedules.STEP_SCHEDULES.get(sch, ())}
    overrides: dict[str, dict[str, Dist]] = {}
    space = c.typed(tuning.get("space", {}), dict, "tuning.space")
    c.unknown(space, set(opts), "tuning.space.")
    for o, table in space.items():
        spec = optimizer_specs.get(o)
        c.typed(table, dict, f"tuning.space.{o}")
        decoupled = set(DECOUPLED_LR) if {"lr", "eps"} <= set(spec.defaults) else set()
        c.unknown(table, set(spec.defaults) | sched_hps | decoupled, f"tuning.space.{o}.")
        lr_keys = sorted(({"lr"} | set(DECOUPLED_LR)) & set(table))
        if len(lr_keys) > 1:
            raise c.fail(f"tuning.space.{o}", f"tune one learning-rate coordinate, not {' and '.join(lr_keys)} "
                         "(lr_over_eps = lr/ε, lr_over_sqrt_eps = lr/√ε)")
        overrides[o] = {}
        for hp, d in table.items():
            key = f"tuning.space.{o}.{hp}"
            if not (isinstance(d, list) and len(d) == 3 and isinstance(d[0], str)):
                raise c.fail(key, f"expected [kind, low, high], got {d!r}")
            try:
                overrides[o][hp] = Dist(d[0], float(d[1]), float(d[2]))
            except (TypeError, ValueError) as e:
                raise c.fail(key, str(e)) from None

    fixed: dict[str, dict[str, float]] = {}
    for o, table in c.typed(tuning.get("fixed", {}), dict, "tuning.fixed").items():
        if o not in opts:
            raise c.fail(f"tuning.fixed.{o}", "not one of the study's optimizers")
        spec = optimizer_specs.get(o)
        c.typed(table, dict, f"tuning.fixed.{o}")
        c.unknown(table, set(spec.defaults) | sched_hps, f"tuning.fixed.{o}.")
        fixed[o] = {k: float(c.typed(v, (int, float), f"tuning.fixed.{o}.{k}")) for k, v in table.items()}
        clash = sorted(set(DECOUPLED_LR) & set(overrides.get(o, {})))
        if clash and "lr" in fixed[o]:
            raise c.fail(f"tuning.fixed.{o}.lr", f"lr is determined by the tuned {clash[0]} and ε; fix one or the other")

    sched_args: dict[str, dict[str, Any]] = {}
    for sched, table in c.typed(raw.get("schedule_settings", {}), dict, "schedule_settings").items():
        if sched not in scheds:
            raise c.fail(f"schedule_settings.{sched}", "not one of the study's schedules")
        allowed = set(schedules.STEP_SCHEDULES.get(sched, ()))
        c.typed(table, dict, f"schedule_settings.{sched}")
        c.unknown(table, allowed, f"schedule_settings.{sched}.")
        sched_args[sched] = {k: float(c.typed(v, (int, float), f"schedule_settings.{sched}.{k}"))
                            for k, v in table.items()}

    selection = c.typed(raw.get("selection", {}), dict, "selection")
    c.unknown(selection, SELECTION_KEYS, "selection.")
    split = c.typed(selection.get("split", "valid"), str, "selection.split")
    if split not in ("valid", "test", "train_eval"):
        raise c.fail("selection.split", f"unknown split {split!r} (valid, test, train_eval)")
    epoch = c.typed(selection.get("epoch", "last"), str, "selection.epoch")
    if epoch not in ("last", "best"):
        raise c.fail("selection.epoch", f"expected 'last' or 'best', got {epoch!r}")

    return Study(name=name, description=c.typed(raw.get("description", ""), str, "description"),
                 problems=probs, optimizers=opts, schedules=scheds, settings=settings,
                 oneshot_seeds=oneshot_seeds, search=search, sampler_seed=sampler_seed,
                 tuning_seed=tuning_seed, budgets=tuple(budgets), rerun_seeds=rerun_seeds,
                 space_overrides=overrides, fixed=fixed, schedule_args=sched_args, selection_split=split, selection_epoch=epoch, source=source)
