"""Executor profiles: how a study is laid onto a machine or a Slurm cluster (``slurm/*.toml``).

A profile is a TOML file; every key is documented in the README ("Executor profiles") and validated here.
Keys under ``[problems.<name>]`` override the resources for one problem (a quadratic needs no
GPU and can take a thousand runs per task; a Wide ResNet wants a whole GPU per run).
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, Mapping

from optbench import numerics
from optbench.errors import OptbenchError


class ProfileError(OptbenchError):
    pass


@dataclasses.dataclass(frozen=True)
class Resources:
    partition: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    runs_per_task: int = 10
    threads: int | None = None  # torch threads per task (default: cpus_per_task)
    device: str = "auto"  # auto | cpu | cuda
    runs_in_parallel: int = 1  # runs an array task trains at once (one process each, threads split between them)
    # checkpoint after every epoch (besides every checkpoint_every_s and at a requeue signal), except that
    # epochs too short for it are grouped: an epoch-end checkpoint is skipped while writing it would spend
    # more than checkpoint_overhead of the time since the last one (a P1 epoch trains in ~3 ms and its
    # checkpoint takes ~1 ms: every epoch would cost ~30 %). false: only every checkpoint_every_s and at a
    # signal; checkpoint_overhead = 1: every epoch whatever it costs.
    checkpoint_every_epoch: bool = True
    checkpoint_overhead: float = 0.005
    # GPU arithmetic (optbench.numerics): "fp32" everywhere (the published runs' arithmetic; PyTorch's
    # own default would use TF32 in cuDNN convolutions and RNNs only) or "tf32" everywhere (faster on
    # Ampere and later, different numbers); cudnn_benchmark: let cuDNN time and pick its algorithms
    precision: str = "fp32"
    cudnn_benchmark: bool = False


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    executor: str = "local"  # local | slurm
    array_parallelism: int = 0  # 0: local = number of CPUs, slurm = no limit
    max_array_size: int | str = "auto"  # "auto": read MaxArraySize from `scontrol show config`
    signal_delay_s: int = 90
    max_num_timeout: int = 10_000  # submitit gives up after this many timeouts; we track progress ourselves
    max_retries: int = 2  # re-submissions of a run that failed for infrastructure reasons
    checkpoint_every_s: float = 300.0
    sbatch: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # extra #SBATCH lines (account, qos…)
    setup: tuple[str, ...] = ()  # shell lines run before the worker (module load …)
    defaults: Resources = Resources()
    problems: Mapping[str, Resources] = dataclasses.field(default_factory=dict)
    source: str | None = None  # the file it was read from (absolute), None for a built-in default

    def resources(self, problem: str) -> Resources:
        return self.problems.get(problem, self.defaults)


RESOURCE_KEYS = {f.name for f in dataclasses.fields(Resources)}
TOP_KEYS = {"name", "executor", "array_parallelism", "max_array_size", "signal_delay_s", "max_num_timeout",
            "max_retries", "checkpoint_every_s", "sbatch", "setup", "problems"} | RESOURCE_KEYS


def _resources(table: Mapping[str, Any], base: Resources, where: str) -> Resources:
    values = dataclasses.asdict(base)
    for k, v in table.items():
        if k not in RESOURCE_KEYS:
            raise ProfileError(f"{where}: unknown key {k!r} (allowed: {', '.join(sorted(RESOURCE_KEYS))})")
        values[k] = v
    r = Resources(**values)
    if r.runs_per_task < 1 or r.cpus_per_task < 1 or r.timeout_min < 1 or r.gpus_per_node < 0:
        raise ProfileError(f"{where}: runs_per_task, cpus_per_task and timeout_min must be >= 1, gpus >= 0")
    if not isinstance(r.runs_in_parallel, int) or isinstance(r.runs_in_parallel, bool) or r.runs_in_parallel < 1:
        raise ProfileError(f"{where}: runs_in_parallel must be an integer >= 1, got {r.runs_in_parallel!r}")
    if not isinstance(r.checkpoint_every_epoch, bool):
        raise ProfileError(f"{where}: checkpoint_every_epoch must be true or false, got {r.checkpoint_every_epoch!r}")
    if (not isinstance(r.checkpoint_overhead, (int, float)) or isinstance(r.checkpoint_overhead, bool)
            or not 0 < r.checkpoint_overhead <= 1):
        raise ProfileError(f"{where}: checkpoint_overhead must be a fraction in (0, 1], got {r.checkpoint_overhead!r}")
    if r.device not in ("auto", "cpu", "cuda"):
        raise ProfileError(f"{where}: device must be auto, cpu or cuda, got {r.device!r}")
    if r.precision not in numerics.PRECISIONS:
        raise ProfileError(f"{where}: precision must be {' or '.join(numerics.PRECISIONS)}, got {r.precision!r}")
    if not isinstance(r.cudnn_benchmark, bool):
        raise ProfileError(f"{where}: cudnn_benchmark must be true or false, got {r.cudnn_benchmark!r}")
    return r


def load_profile(path: str | Path | None, executor: str | None = None) -> Profile:
    """Read a profile file; with no file, the built-in default for ``executor``."""
    if path is None:
        return Profile(name=executor or "local", executor=executor or "local")
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{p}: profile not found (profiles live in slurm/profiles/)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ProfileError(f"{p}: cannot read profile: {e}") from None
    extra = sorted(set(raw) - TOP_KEYS)
    if extra:
        raise ProfileError(f"{p}: unknown key {extra[0]!r}")
    defaults = _resources({k: v for k, v in raw.items() if k in RESOURCE_KEYS}, Resources(), str(p))
    problems = {name: _resources(t, defaults, f"{p}: problems.{name}") for name, t in raw.get("problems", {}).items()}
    top = {k: v for k, v in raw.items() if k in TOP_KEYS - RESOURCE_KEYS - {"problems", "setup"}}
    prof = Profile(name=raw.get("name", p.stem), defaults=defaults, problems=problems,
                   setup=tuple(raw.get("setup", ())), source=str(p.resolve()),
                   **{k: v for k, v in top.items() if k != "name"})
    if executor:
        prof = dataclasses.replace(prof, executor=executor)
    if prof.executor not in ("local", "slurm"):
        raise ProfileError(f"{p}: executor must be 'local' or 'slurm', got {prof.executor!r}")
    if not (prof.max_array_size == "auto" or (isinstance(prof.max_array_size, int) and prof.max_array_size > 0)):
        raise ProfileError(f"{p}: max_array_size must be 'auto' or a positive integer")
    return prof
