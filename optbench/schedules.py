"""Learning-rate schedules (numpy only).

Crowded Valley sets the learning rate once per epoch: ``lr_factors(name, N)`` returns the factors
f(0) … f(N); training epoch e (0-based) runs at lr₀·f(e). f(0) = 1 for every schedule (DeepOBS'
released factor lists start at epoch 1, so epoch 0 runs at the base rate), and f(N) is listed for
comparison with the released files although no training epoch uses it. Check values are in
``../shared/spec/protocols.md`` §1.3 and in the tests.

Choi et al.'s linear decay is per step; :func:`step_factor` gives the factor of any schedule at a
given step so the one training loop handles both kinds.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from optbench.errors import StudyError, did_you_mean


def constant(num_epochs: int) -> np.ndarray:
    return np.ones(num_epochs + 1)


def cosine(num_epochs: int) -> np.ndarray:
    e = np.arange(num_epochs + 1)
    return 0.5 * (1 + np.cos(np.pi * e / num_epochs))


def cosine_warm_restarts(num_epochs: int, first_cycle: int = 10) -> np.ndarray:
    """Cycles of 10, 20, 40 … epochs starting at 0, 10, 30, 70 … (T₀ = 10 does not scale with N)."""
    f = np.empty(num_epochs + 1)
    start, length = 0, first_cycle
    for e in range(num_epochs + 1):
        while e >= start + length:
            start, length = start + length, 2 * length
        f[e] = 0.5 * (1 + np.cos(np.pi * (e - start) / length))
    return f


def trapezoidal(num_epochs: int) -> np.ndarray:
    """Linear warm-up over W = round(0.1 N) epochs, flat, then linear decay to 1/(W+1) (not 0).

    W rounds half up on N/10 (N = 25 → 3, N = 35 → 4); Python's ``round(0.1 * N)`` would round
    halves to even and see 0.1·35 as 3.5000000000000004, giving 2 for N = 25 but 4 for N = 35.
    """
    n, w = num_epochs, max(1, math.floor(num_epochs / 10 + 0.5))
    f = np.ones(n + 1)
    for e in range(1, n + 1):
        if e <= w:
            f[e] = e / w
        elif e > n - w:
            f[e] = 1 - (e - (n - w)) / (w + 1)
    return f


EPOCH_SCHEDULES: dict[str, Callable[[int], np.ndarray]] = {
    "none": constant,
    "cosine": cosine,
    "cosine_wr": cosine_warm_restarts,
    "ltr": trapezoidal,
}
#: per-step schedules: name -> hyperparameters they take from the run's setting
STEP_SCHEDULES = {"linear_decay": ("decay_steps_factor", "end_factor"),
                  "warmup_cosine": ("warmup_fraction",)}
SCHEDULES = tuple(EPOCH_SCHEDULES) + tuple(STEP_SCHEDULES)


def check(name: str) -> str:
    if name not in SCHEDULES:
        raise StudyError(f"unknown schedule {name!r}; {did_you_mean(name, SCHEDULES)}")
    return name


def lr_factors(name: str, num_epochs: int) -> np.ndarray:
    """Per-epoch factors f(0) … f(N) of an epoch-wise schedule."""
    if name not in EPOCH_SCHEDULES:
        raise StudyError(f"{name!r} is not an epoch-wise schedule; {did_you_mean(name, EPOCH_SCHEDULES)}")
    return EPOCH_SCHEDULES[name](num_epochs)


def linear_decay(step: int, total_steps: int, decay_steps_factor: float = 1.0, end_factor: float = 0.0) -> float:
    """Choi/Shallue: η(t) = η₀·(1 − (1 − α)·min(t, T)/T) with T = decay_steps_factor·total steps."""
    T = max(1.0, decay_steps_factor * total_steps)
    return 1.0 - (1.0 - end_factor) * min(step, T) / T


def warmup_cosine(step: int, total_steps: int, warmup_fraction: float = 0.1) -> float:
    """Linear warm-up over a fraction of the steps, then cosine to 0 (the crossover study's protocol)."""
    w = int(round(warmup_fraction * total_steps))
    if w > 0 and step < w:
        return (step + 1) / w
    return 0.5 * (1 + np.cos(np.pi * (step - w) / max(1, total_steps - w)))


def step_factor_fn(name: str, num_epochs: int, steps_per_epoch: int, args: dict[str, float]) -> Callable[[int], float]:
    """factor(step) for any schedule; epoch schedules change at epoch boundaries only."""
    check(name)
    if name in EPOCH_SCHEDULES:
        f = lr_factors(name, num_epochs)
        return lambda step: float(f[min(step // steps_per_epoch, num_epochs)])
    total = num_epochs * steps_per_epoch
    kw = {k: float(args[k]) for k in STEP_SCHEDULES[name] if k in args}
    fn = linear_decay if name == "linear_decay" else warmup_cosine
    return lambda step: float(fn(step, total, **kw))
