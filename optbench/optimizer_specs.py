"""The optimizer registry: defaults and search spaces, no torch (planner and analysis use it).

One-shot defaults and tuned hyperparameters follow Crowded Valley (spec §1.2). The search
distributions are those inferred from the released samples (spec §1.2, [D]). The torch update
rules live in :mod:`optbench.optimizers` and are looked up by the same names.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from optbench.errors import StudyError, did_you_mean
from optbench.search import Dist

LR = Dist("log", 1e-4, 1.0)
ONE_MINUS = Dist("revlog", 1e-4, 1.0)  # momentum and ρ: (1 − x) log-uniform on [1e-4, 1]
BETA1 = Dist("uniform", 0.5, 1.0)
BETA2 = Dist("uniform", 0.8, 1.0)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str
    label: str  # display name as in the paper
    defaults: Mapping[str, float]  # the one-shot setting
    space: Mapping[str, Dist]  # tuned hyperparameters; the rest stay at their defaults

    def setting(self, tuned: Mapping[str, float] | None = None) -> dict[str, float]:
        return {**self.defaults, **(tuned or {})}


OPTIMIZERS: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    if spec.name in OPTIMIZERS:
        raise ValueError(f"optimizer {spec.name!r} registered twice")
    unknown = set(spec.space) - set(spec.defaults)
    if unknown:
        raise ValueError(f"{spec.name}: tuned hyperparameters without default: {unknown}")
    OPTIMIZERS[spec.name] = spec
    return spec


def get(name: str) -> OptimizerSpec:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise StudyError(f"unknown optimizer {name!r}; {did_you_mean(name, OPTIMIZERS)}") from None


register(OptimizerSpec("sgd", "SGD", {"lr": 1e-2}, {"lr": LR}))
register(OptimizerSpec("momentum", "Momentum", {"lr": 1e-2, "momentum": 0.99},
                       {"lr": LR, "momentum": ONE_MINUS}))
register(OptimizerSpec("nag", "NAG", {"lr": 1e-2, "momentum": 0.99}, {"lr": LR, "momentum": ONE_MINUS}))
register(OptimizerSpec("adam", "Adam", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
                       {"lr": LR, "beta1": BETA1, "beta2": BETA2}))
register(OptimizerSpec("rmsprop", "RMSProp", {"lr": 1e-3, "rho": 0.9, "eps": 1e-10, "momentum": 0.0},
                       {"lr": LR, "rho": ONE_MINUS}))
