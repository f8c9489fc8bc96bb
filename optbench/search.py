"""Hyperparameter search spaces and samplers (numpy/scipy only: the planner runs on login nodes).

Two samplers, both with *common random numbers*: a hyperparameter has one fixed coordinate of the
unit cube wherever it appears, so trial k of every optimizer and every problem draws the same
value for a shared hyperparameter (Crowded Valley's fixed-seed sampler). Budgets are prefixes of
one trial sequence, hence nested.

- ``random``: independent uniforms per hyperparameter name, seeded from (sampler_seed, name).
- ``halton``: a scrambled Halton sequence (scipy.stats.qmc) over one global list of dimensions,
  shifted by a random vector modulo 1 (Cranley–Patterson), as Choi et al. used after Bousquet et al.

Decoupled learning-rate coordinates (Choi et al., spec §2): as ε → ∞ Adam/NAdam follow Momentum
with effective step α/ε and RMSProp with η/√ε, so a search may sample (ε, α/ε) or (ε, η/√ε)
instead of (ε, lr). :data:`DECOUPLED_LR` names them; :func:`resolve_decoupled` turns a sampled
setting back into ``lr`` (``OptimizerSpec.setting`` does this).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from optbench.record import derive_seed

#: one global coordinate per hyperparameter, so quasi-random draws are shared across optimizers
DIMENSIONS = ("lr", "momentum", "beta1", "beta2", "eps", "rho", "initial_accumulator_value",
              "final_lr", "gamma", "alpha", "k", "decay_steps_factor", "end_factor", "lr_over_eps",
              "lr_over_sqrt_eps")


#: decoupled coordinate -> power p of ε in lr = coordinate·ε^p (Adam/NAdam: α/ε; RMSProp: η/√ε)
DECOUPLED_LR: dict[str, float] = {"lr_over_eps": 1.0, "lr_over_sqrt_eps": 0.5}


def lr_from_decoupled(coordinate: str, value: float, eps: float) -> float:
    """The learning rate of a decoupled coordinate: ``lr_over_eps``·ε or ``lr_over_sqrt_eps``·√ε."""
    return float(value) * float(eps) ** _power(coordinate)


def decoupled_from_lr(coordinate: str, lr: float, eps: float) -> float:
    """Inverse of :func:`lr_from_decoupled`: lr/ε or lr/√ε."""
    return float(lr) / float(eps) ** _power(coordinate)


def _power(coordinate: str) -> float:
    try:
        return DECOUPLED_LR[coordinate]
    except KeyError:
        raise ValueError(f"unknown decoupled coordinate {coordinate!r} ({', '.join(DECOUPLED_LR)})") from None


def resolve_decoupled(setting: Mapping[str, float], eps_default: float | None = None) -> dict[str, float]:
    """``setting`` with its decoupled coordinate replaced by ``lr`` (ε from the setting, else the default)."""
    out = dict(setting)
    present = [c for c in DECOUPLED_LR if c in out]
    if not present:
        return out
    if len(present) > 1 or "lr" in out:
        raise ValueError(f"give one of lr, {', '.join(DECOUPLED_LR)}; got {sorted(present + ['lr'] * ('lr' in out))}")
    eps = out.get("eps", eps_default)
    if eps is None:
        raise ValueError(f"{present[0]} needs eps")
    out["lr"] = lr_from_decoupled(present[0], out.pop(present[0]), eps)
    return out


@dataclasses.dataclass(frozen=True)
class Dist:
    """A one-dimensional search distribution, mapped from u ∈ [0, 1).

    kind: ``log`` (log-uniform on [low, high]), ``uniform``, ``revlog`` (1 − x with x log-uniform on
    [low, high], for momenta and decay rates near 1), ``int`` (uniform integer in [low, high]).
    """

    kind: str
    low: float
    high: float

    def __post_init__(self):
        if self.kind not in ("log", "uniform", "revlog", "int"):
            raise ValueError(f"unknown distribution kind {self.kind!r}")
        if not self.low < self.high and not (self.kind == "int" and self.low <= self.high):
            raise ValueError(f"empty range [{self.low}, {self.high}]")
        if self.kind in ("log", "revlog") and self.low <= 0:
            raise ValueError("log ranges need low > 0")

    def transform(self, u: np.ndarray | float) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        if self.kind == "uniform":
            return self.low + u * (self.high - self.low)
        if self.kind in ("log", "revlog"):
            x = np.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
            return x if self.kind == "log" else 1.0 - x
        # int: equal mass per integer
        n = int(self.high) - int(self.low) + 1
        return (int(self.low) + np.minimum(np.floor(u * n), n - 1)).astype(np.float64)


def unit_samples(method: str, names: list[str], n_trials: int, sampler_seed: int) -> dict[str, np.ndarray]:
    """u ∈ [0,1)^n_trials per hyperparameter name, shared across optimizers and problems."""
    if method == "random":
        return {name: np.random.default_rng(derive_seed(sampler_seed, f"search/{name}")).random(n_trials)
                for name in names}
    if method == "halton":
        from scipy.stats import qmc

        unknown = [n for n in names if n not in DIMENSIONS]
        if unknown:
            raise ValueError(f"no Halton dimension for {unknown}; add them to search.DIMENSIONS")
        d = len(DIMENSIONS)
        pts = qmc.Halton(d=d, scramble=True, seed=derive_seed(sampler_seed, "halton")).random(n_trials)
        shift = np.random.default_rng(derive_seed(sampler_seed, "halton-shift")).random(d)
        pts = (pts + shift) % 1.0
        return {name: pts[:, DIMENSIONS.index(name)] for name in names}
    raise ValueError(f"unknown search method {method!r} (random, halton)")


def sample_trials(space: Mapping[str, Dist], n_trials: int, method: str = "random",
                  sampler_seed: int = 0) -> list[dict[str, float]]:
    """The first ``n_trials`` settings of a search space; a longer call extends a shorter one."""
    names = sorted(space)
    u = unit_samples(method, names, n_trials, sampler_seed)
    values = {name: space[name].transform(u[name]) for name in names}
    return [{name: float(values[name][k]) for name in names} for k in range(n_trials)]
