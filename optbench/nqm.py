"""The noisy quadratic model (NQM, Zhang et al. 2019): exact expected-loss curves, no training loop.

numpy only. The model (spec §3): d independent coordinates with curvature hᵢ = 1/i (i = 1…d),
loss L(x) = ½ Σ hᵢ xᵢ², and a minibatch gradient gᵢ = hᵢ xᵢ + εᵢ whose noise has mean 0 and
variance cᵢ/B with cᵢ = hᵢ (the gradient covariance equals the curvature, as near a minimum of a
log-likelihood), independent across steps. The expected loss is ½ Σ hᵢ sᵢ with sᵢ = E[xᵢ²].

Optimizers (:class:`Optimizer`): heavy-ball momentum with an optional diagonal preconditioner
P = H^(−p) — p = 0 is SGD with momentum, p > 0 the "Adam-like" optimizer of Zhang et al. (Adam's
second-moment estimate is ≈ the gradient noise variance ∝ H, so its preconditioner is ≈ H^(−1/2)):

    vᵢ ← β vᵢ + gᵢ,      xᵢ ← xᵢ − aᵢ vᵢ,      aᵢ = α hᵢ^(−p)

(β = 0 is plain SGD, and the second moment then follows the spec's sᵢ ← (1 − αhᵢ)² sᵢ + α² hᵢ/B.)
Adam's (1 − β1) factor on the gradient only rescales α, which is tuned anyway.

Exact second moments (the derivation, per coordinate; drop the index i). With z = (x, v):

    x' = (1 − a h) x − a β v − a ε          v' = h x + β v + ε

so z' = A z + b ε with A = [[1 − ah, −aβ], [h, β]] and b = (−a, 1). Because ε is independent of z
and has mean 0, E[z' z'ᵀ] = A E[z zᵀ] Aᵀ + (c/B) b bᵀ. Written on m = (X, Y, V) = (E[x²], E[xv], E[v²]):

    X' = A₁₁² X + 2A₁₁A₁₂ Y + A₁₂² V + a² c/B
    Y' = A₁₁A₂₁ X + (A₁₁A₂₂ + A₁₂A₂₁) Y + A₁₂A₂₂ V − a c/B
    V' = A₂₁² X + 2A₂₁A₂₂ Y + A₂₂² V + c/B

an affine map m' = T m + k, exact for any noise distribution with that variance (no Gaussian
assumption). The eigenvalues of T are products λⱼλₖ of A's; A has trace 1 + β − ah and determinant
β, so the recursion is stable iff 0 ≤ β < 1 and 0 < a h < 2(1 + β). With a constant learning rate
the loss tends to the steady state ½ Σ h X* with m* = (I − T)⁻¹ k (for SGD, X* = a c/(B(2 − ah))).

Steps to a target: the first step t with E[L(x_t)] ≤ target, found exactly with the recursion
(:func:`steps_to_target`), vectorised over learning rates; the learning rate is then optimised per
batch size (:func:`optimal_steps_to_target`: a log grid, refined twice around the best point), and
:func:`scaling_curves` gives S(B) for both optimizers over a batch-size grid. The McCandlish et al.
(2018) form S(B) = S_min (1 + N/B) is linear as S·B = E_min + S_min·B (:func:`fit_scaling`) and
gives the crossover B* = (E_Adam,min − E_SGD,min)/(S_SGD,min − S_Adam,min) (:func:`crossover_from_fit`),
to be compared with the crossing of the two exact curves (:func:`crossover_from_curves`).
See docs/crossover.md for the choices (dimension, target, β, p, grids) and what they give.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import numpy as np


# ---------------------------------------------------------------------------------------------
# model and optimizers

@dataclasses.dataclass(frozen=True)
class NQM:
    """hᵢ = 1/i, noise variance cᵢ/B with cᵢ = noise_scale·hᵢ, E[x₀ᵢ²] = x0_sq, v₀ = 0."""
    dim: int = 1000
    noise_scale: float = 1.0
    x0_sq: float = 1.0

    @property
    def h(self) -> np.ndarray:
        return 1.0 / np.arange(1, self.dim + 1, dtype=np.float64)

    @property
    def c(self) -> np.ndarray:
        return self.noise_scale * self.h

    @property
    def initial_loss(self) -> float:
        return float(0.5 * np.sum(self.h * self.x0_sq))

    def loss(self, X: np.ndarray) -> np.ndarray:
        """Expected loss ½ Σ hᵢ E[xᵢ²] over the last axis of X."""
        return 0.5 * np.sum(self.h * X, axis=-1)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """Heavy-ball momentum β with the preconditioner P = H^(−p)."""
    name: str
    momentum: float = 0.0
    precond_power: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")


#: the study's pair (β = 0.9 as in the crossover protocol's smallest β; p = ½ as Adam, Zhang et al.)
SGD_MOMENTUM = Optimizer("momentum", momentum=0.9, precond_power=0.0)
ADAM_LIKE = Optimizer("adam", momentum=0.9, precond_power=0.5)


def effective_lr(model: NQM, opt: Optimizer, lr) -> np.ndarray:
    """aᵢ = α hᵢ^(−p), shape (*lr.shape, d)."""
    lr = np.asarray(lr, dtype=np.float64)
    return lr[..., None] * model.h ** (-opt.precond_power)


def transition(model: NQM, opt: Optimizer, batch_size: float, lr) -> tuple[np.ndarray, np.ndarray]:
    """The affine map m' = T m + k of the second moments m = (E[x²], E[xv], E[v²]) for one step.

    ``lr`` may be an array; T has shape (*lr.shape, d, 3, 3) and k (*lr.shape, d, 3).
    """
    a = effective_lr(model, opt, lr)
    h, beta = model.h, opt.momentum
    s2 = model.c / float(batch_size)  # noise variance cᵢ/B
    a11, a12 = 1.0 - a * h, -a * beta
    a21, a22 = np.broadcast_to(h, a.shape), np.full(a.shape, beta)
    T = np.empty(a.shape + (3, 3))
    T[..., 0, :] = np.stack([a11 * a11, 2 * a11 * a12, a12 * a12], axis=-1)
    T[..., 1, :] = np.stack([a11 * a21, a11 * a22 + a12 * a21, a12 * a22], axis=-1)
    T[..., 2, :] = np.stack([a21 * a21, 2 * a21 * a22, a22 * a22], axis=-1)
    k = np.stack([a * a * s2, -a * s2, np.broadcast_to(s2, a.shape)], axis=-1)
    return T, k


def stable(model: NQM, opt: Optimizer, lr) -> np.ndarray:
    """Whether the (mean and second-moment) recursion converges: 0 < aᵢhᵢ < 2(1 + β) for every i."""
    ah = effective_lr(model, opt, lr) * model.h
    return np.all((ah > 0) & (ah < 2.0 * (1.0 + opt.momentum)), axis=-1)


def steady_state_loss(model: NQM, opt: Optimizer, batch_size: float, lr) -> np.ndarray:
    """lim E[L] for a constant learning rate (inf where unstable), shape of ``lr``."""
    lr = np.asarray(lr, dtype=np.float64)
    T, k = transition(model, opt, batch_size, lr)
    ok = stable(model, opt, lr)
    I = np.eye(3)
    with np.errstate(all="ignore"):
        m = np.linalg.solve(np.where(ok[..., None, None, None], I - T, I), k[..., None])[..., 0]
    return np.where(ok, model.loss(m[..., 0]), np.inf)


def initial_moments(model: NQM, shape: tuple[int, ...] = ()) -> np.ndarray:
    m = np.zeros(shape + (model.dim, 3))
    m[..., 0] = model.x0_sq
    return m


def _apply(T: np.ndarray, k: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.einsum("...ij,...j->...i", T, m) + k


# ---------------------------------------------------------------------------------------------
# curves

def expected_loss_curve(model: NQM, opt: Optimizer, batch_size: float, lr: float, steps: int,
                        lr_factor: Callable[[int], float] | None = None) -> np.ndarray:
    """E[L(x_t)] for t = 0 … steps (exact), with an optional per-step schedule α_t = lr·lr_factor(t)."""
    m = initial_moments(model)
    out = np.empty(steps + 1)
    out[0] = model.loss(m[:, 0])
    if lr_factor is None:
        T, k = transition(model, opt, batch_size, lr)
    for t in range(steps):
        if lr_factor is not None:
            T, k = transition(model, opt, batch_size, lr * float(lr_factor(t)))
        m = _apply(T, k, m)
        out[t + 1] = model.loss(m[:, 0])
    return out


def monte_carlo_loss_curve(model: NQM, opt: Optimizer, batch_size: float, lr: float, steps: int,
                           n_samples: int, seed: int = 0, noise: str = "gaussian",
                           lr_factor: Callable[[int], float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the stochastic recursion ``n_samples`` times: (mean loss, standard error), t = 0 … steps.

    x₀ has E[x₀²] = x0_sq (x₀ = ±√x0_sq), v₀ = 0; the gradient noise is Gaussian or Rademacher
    (±1 scaled) with variance c/B — the exact recursion holds for both.
    """
    rng = np.random.default_rng(seed)
    h, sd = model.h, np.sqrt(model.c / float(batch_size))
    x = np.sqrt(model.x0_sq) * rng.choice([-1.0, 1.0], size=(n_samples, model.dim))
    v = np.zeros_like(x)
    hp = h ** (-opt.precond_power)
    means, ses = np.empty(steps + 1), np.empty(steps + 1)

    def record(t):
        L = 0.5 * (h * x * x).sum(axis=1)
        means[t], ses[t] = L.mean(), L.std(ddof=1) / np.sqrt(n_samples)

    record(0)
    for t in range(steps):
        if noise == "gaussian":
            eps = rng.standard_normal(x.shape)
        elif noise == "rademacher":
            eps = rng.choice([-1.0, 1.0], size=x.shape)
        else:
            raise ValueError(f"unknown noise {noise!r}")
        g = h * x + sd * eps
        a = lr * (1.0 if lr_factor is None else float(lr_factor(t))) * hp
        v = opt.momentum * v + g
        x = x - a * v
        record(t + 1)
    return means, ses


# ---------------------------------------------------------------------------------------------
# steps to target

def steps_to_target(opt: Optimizer, batch_size: float, lr, target: float, model: NQM | None = None,
                    max_steps: int = 10_000_000, chunk: int = 256) -> np.ndarray:
    """The first step t with E[L(x_t)] ≤ target for a constant learning rate (inf if never within
    ``max_steps``, if unstable, or if the steady-state loss is above the target), shape of ``lr``.

    Exact: the recursion is advanced ``chunk`` steps at a time with the composed map Tᶜʰᵘⁿᵏ; where
    the loss at a chunk end is at or below the target, the chunk is replayed step by step to find
    the first crossing inside it. (A crossing that reverses within one chunk — the loss dipping
    below the target and back above it — could be missed; the tests compare with plain iteration.)
    """
    model = model or NQM()
    lr = np.atleast_1d(np.asarray(lr, dtype=np.float64))
    shape = lr.shape
    lr = lr.ravel()
    n = len(lr)
    result = np.full(n, np.inf)
    m = initial_moments(model, (n,))
    L0 = model.loss(m[..., 0])
    result[L0 <= target] = 0
    floor = steady_state_loss(model, opt, batch_size, lr)
    active = (L0 > target) & np.isfinite(floor) & (floor < target)
    if not active.any():
        return result.reshape(shape)
    idx = np.flatnonzero(active)
    T1, k1 = transition(model, opt, batch_size, lr[idx])
    m = m[idx]
    # T^chunk by repeated squaring (chunk a power of two) or by plain composition
    Tc, kc = T1.copy(), k1.copy()
    done_steps = 1
    while done_steps * 2 <= chunk:
        Tc, kc = Tc @ Tc, np.einsum("...ij,...j->...i", Tc, kc) + kc
        done_steps *= 2
    while done_steps < chunk:
        Tc, kc = T1 @ Tc, np.einsum("...ij,...j->...i", T1, kc) + k1
        done_steps += 1
    t = 0
    while len(idx) and t < max_steps:
        m_next = _apply(Tc, kc, m)
        L = model.loss(m_next[..., 0])
        hit = L <= target
        if hit.any():
            hs = np.flatnonzero(hit)
            mm = m[hs]
            first = np.full(len(hs), -1)
            for j in range(1, chunk + 1):
                mm = _apply(T1[hs], k1[hs], mm)
                reached = (model.loss(mm[..., 0]) <= target) & (first < 0)
                first[reached] = j
                if (first > 0).all():
                    break
            # the chunk end is below target, so every replay crosses by step `chunk`
            steps = t + first
            result[idx[hs]] = np.where(steps <= max_steps, steps, np.inf)
            keep = ~hit
            idx, m, T1, k1, Tc, kc = idx[keep], m_next[keep], T1[keep], k1[keep], Tc[keep], kc[keep]
        else:
            m = m_next
        t += chunk
    return result.reshape(shape)


def optimal_steps_to_target(opt: Optimizer, batch_size: float, target: float, model: NQM | None = None,
                            lr_range: tuple[float, float] = (1e-6, 10.0), points_per_decade: int = 8,
                            refinements: int = 2, max_steps: int = 10_000_000) -> tuple[float, float]:
    """(S, lr): the fewest steps to ``target`` over constant learning rates, and the learning rate.

    A log grid over ``lr_range`` (only stable rates), then ``refinements`` finer grids (10 points)
    around the best point; among ties the largest S improvement wins. Returns (inf, nan) if no
    learning rate reaches the target.
    """
    model = model or NQM()
    lo, hi = np.log10(lr_range[0]), np.log10(lr_range[1])
    # the largest stable rate: a₁h₁ ... a_d h_d < 2(1+β) ⇒ α < 2(1+β)/max hᵢ^(1−p)
    hmax = np.max(model.h ** (1.0 - opt.precond_power))
    hi = min(hi, np.log10(2.0 * (1.0 + opt.momentum) / hmax) - 1e-9)
    grid = np.logspace(lo, hi, max(3, int(round((hi - lo) * points_per_decade)) + 1))
    S = steps_to_target(opt, batch_size, grid, target, model, max_steps)
    if not np.isfinite(S).any():
        return np.inf, np.nan
    for _ in range(refinements):
        j = int(np.argmin(S))
        a, b = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
        fine = np.logspace(np.log10(a), np.log10(b), 11)
        Sf = steps_to_target(opt, batch_size, fine, target, model, max_steps)
        grid, S = np.concatenate([grid, fine]), np.concatenate([S, Sf])
        order = np.argsort(grid)
        grid, S = grid[order], S[order]
    j = int(np.argmin(S))
    return float(S[j]), float(grid[j])


def scaling_curve(opt: Optimizer, batch_sizes: Sequence[float], target: float, model: NQM | None = None,
                  **kw) -> tuple[np.ndarray, np.ndarray]:
    """S(B) and the optimal learning rate at each batch size."""
    out = [optimal_steps_to_target(opt, b, target, model, **kw) for b in batch_sizes]
    return np.array([s for s, _ in out]), np.array([lr for _, lr in out])


def scaling_curves(batch_sizes: Sequence[float], target: float, model: NQM | None = None,
                   optimizers: Iterable[Optimizer] = (SGD_MOMENTUM, ADAM_LIKE), **kw) -> dict[str, dict]:
    """{optimizer name: {"batch_size", "steps", "lr", "examples"}} for each optimizer."""
    B = np.asarray(batch_sizes, dtype=np.float64)
    out = {}
    for opt in optimizers:
        S, lr = scaling_curve(opt, B, target, model, **kw)
        out[opt.name] = {"batch_size": B, "steps": S, "lr": lr, "examples": S * B}
    return out


# ---------------------------------------------------------------------------------------------
# the McCandlish model and the crossover

def fit_scaling(batch_sizes: Sequence[float], steps: Sequence[float]) -> tuple[float, float]:
    """(E_min, S_min) by least squares of S·B = E_min + S_min·B on B (finite points only)."""
    B, S = np.asarray(batch_sizes, float), np.asarray(steps, float)
    ok = np.isfinite(S)
    B, S = B[ok], S[ok]
    if len(B) < 2:
        return np.nan, np.nan
    slope, intercept = np.polyfit(B, S * B, 1)
    return float(intercept), float(slope)


def critical_batch_size(E_min: float, S_min: float) -> float:
    """N = E_min / S_min (McCandlish et al.'s critical batch size B_crit)."""
    return float(E_min / S_min) if S_min else np.nan


def crossover_from_fit(E_adam: float, S_adam: float, E_sgd: float, S_sgd: float) -> float:
    """B* = (E_Adam,min − E_SGD,min)/(S_SGD,min − S_Adam,min); NaN unless both differences are > 0."""
    num, den = E_adam - E_sgd, S_sgd - S_adam
    return float(num / den) if num > 0 and den > 0 else np.nan


def crossover_from_curves(batch_sizes: Sequence[float], steps_sgd: Sequence[float],
                          steps_adam: Sequence[float]) -> float:
    """The batch size where S_SGD(B) = S_Adam(B): the first sign change of log S_SGD − log S_Adam
    from SGD faster (< 0) to Adam faster (> 0), interpolated linearly in log B. NaN if none."""
    B = np.asarray(batch_sizes, float)
    d = np.log(np.asarray(steps_sgd, float)) - np.log(np.asarray(steps_adam, float))
    for j in range(len(B) - 1):
        if np.isfinite(d[j]) and np.isfinite(d[j + 1]) and d[j] < 0 <= d[j + 1]:
            w = -d[j] / (d[j + 1] - d[j])
            return float(np.exp(np.log(B[j]) + w * (np.log(B[j + 1]) - np.log(B[j]))))
    return np.nan
