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

Steps to a target (:func:`steps_to_target`): the step where E[L(x_t)] first reaches the target,
from the exact recursion, vectorised over learning rates, interpolated in log-loss between the two
steps around the crossing (so S is a smooth function of B even where it is a few steps). The
constant learning rate is optimised per batch size (:func:`optimal_steps_to_target`: a log grid,
refined three times around the best point), and :func:`scaling_curves` gives S(B) for both
optimizers over a batch-size grid. The McCandlish et al. (2018) form S(B) = S_min (1 + N/B) is
linear as S·B = E_min + S_min·B (:func:`fit_scaling`) and gives the crossover
B* = (E_Adam,min − E_SGD,min)/(S_SGD,min − S_Adam,min) (:func:`crossover_from_fit`), to be compared
with the crossing of the exact curves (:func:`crossover_from_curves` on a grid,
:func:`crossover_exact` by bisection in B, which is continuous here).

With the spec's noise (cᵢ = hᵢ) the preconditioned optimizer needs fewer steps at *every* batch
size — no crossover; :data:`CROSSOVER_MODEL` (isotropic noise, cᵢ = 1) is the documented variant
that has one.
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
    """hᵢ = 1/i, noise variance cᵢ/B with cᵢ = noise_scale·hᵢ^noise_power, E[x₀ᵢ²] = x0_sq, v₀ = 0.

    ``noise_power = 1`` is the spec's model (noise covariance ∝ curvature); other values are the
    documented variant of docs/crossover.md.
    """
    dim: int = 1000
    noise_scale: float = 1.0
    noise_power: float = 1.0
    x0_sq: float = 1.0

    @property
    def h(self) -> np.ndarray:
        return 1.0 / np.arange(1, self.dim + 1, dtype=np.float64)

    @property
    def c(self) -> np.ndarray:
        return self.noise_scale * self.h ** self.noise_power

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

_MAX_COORDS = 200_000  # learning rates × coordinates held at once (memory: ~9 maps of 9 floats each)


def _powers(T: np.ndarray, k: np.ndarray, levels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(T^(2^j), k_j)] for j = 0 … levels: the affine map of 2^j steps, by repeated squaring."""
    out = [(T, k)]
    for _ in range(levels):
        Tj, kj = out[-1]
        out.append((Tj @ Tj, _apply(Tj, kj, kj)))
    return out


def _scan(model: NQM, T: np.ndarray, k: np.ndarray, m: np.ndarray, target: float, steps: int,
          first_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Iterate ``steps`` single steps from ``m``: (fractional crossing step counted from ``m``, inf
    where none; the moments after the last step)."""
    out = np.full(len(m), np.inf)
    L_prev = model.loss(m[..., 0])
    with np.errstate(all="ignore"):
        for j in range(1, steps + 1):
            m = _apply(T, k, m)
            L = model.loss(m[..., 0])
            new = (L <= target) & np.isinf(out)
            if new.any():
                frac = np.log(L_prev[new] / target) / np.log(L_prev[new] / L[new])
                out[new] = j - 1 + np.where(np.isfinite(frac), np.clip(frac, 0.0, 1.0), 1.0)
                if first_only or np.isfinite(out).all():
                    break
            L_prev = L
    return out, m


def _crossings(model: NQM, opt: Optimizer, batch_size: float, lr: np.ndarray, target: float,
               max_steps: float, levels: int, first_only: bool) -> np.ndarray:
    """Steps to target for a 1-d array of learning rates (see :func:`steps_to_target`)."""
    n = len(lr)
    if model.initial_loss <= target:
        return np.zeros(n)
    chunk = 2 ** levels
    T, k = transition(model, opt, batch_size, lr)
    # the first chunk step by step, for every rate: early oscillations (momentum, large rates) can
    # dip below the target even where the steady state is above it
    result, m = _scan(model, T, k, initial_moments(model, (n,)), target, chunk, first_only)
    if (first_only and np.isfinite(result).any()) or np.isfinite(result).all():
        return np.where(result <= max_steps, result, np.inf)
    floor = steady_state_loss(model, opt, batch_size, lr)
    idx = np.flatnonzero(np.isinf(result) & np.isfinite(floor) & (floor < target))
    if not len(idx):
        return result
    pows = _powers(T[idx], k[idx], levels)
    m = m[idx]
    t = chunk
    while len(idx) and t < max_steps:
        Tc, kc = pows[levels]
        m_next = _apply(Tc, kc, m)
        hit = model.loss(m_next[..., 0]) <= target
        if hit.any():  # replay the chunk step by step for the first crossing inside it
            h = np.flatnonzero(hit)
            within, _ = _scan(model, pows[0][0][h], pows[0][1][h], m[h], target, chunk, False)
            steps = t + within
            result[idx[h]] = np.where(steps <= max_steps, steps, np.inf)
            if first_only:
                return result
            keep = ~hit
            idx, m = idx[keep], m_next[keep]
            pows = [(Tj[keep], kj[keep]) for Tj, kj in pows]
        else:
            m = m_next
        t += chunk
    return result


def _advance(T: np.ndarray, k: np.ndarray, m: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The moments after ``steps`` (one integer per rate) steps, by binary decomposition of the count."""
    steps = np.asarray(steps, dtype=np.int64)
    Tj, kj = T, k
    while steps.any():
        bit = (steps & 1).astype(bool)
        if bit.any():
            m = m.copy()
            m[bit] = _apply(Tj[bit], kj[bit], m[bit])
        steps = steps >> 1
        if steps.any():
            Tj, kj = Tj @ Tj, _apply(Tj, kj, kj)
    return m


def _settled(model: NQM, opt: Optimizer, batch_size: float, lr: np.ndarray, target: float, first: np.ndarray,
             window: int, max_steps: float) -> np.ndarray:
    """'settled' steps of rates whose first crossing is ``first``: the last step with E[L] above the
    target (+ the log-interpolated fraction to the next step), once the loss has stayed at or below
    the target for ``window`` consecutive steps."""
    n = len(lr)
    if not n:
        return np.zeros(0)
    # a rate whose steady state is at or above the target dips below it only transiently (the loss
    # rises again as a near-unstable coordinate fills up with noise): it never settles
    floor = steady_state_loss(model, opt, batch_size, lr)
    result = np.full(n, np.inf)
    ok = np.isfinite(floor) & (floor < target)
    if not ok.any():
        return result
    lr, first = lr[ok], first[ok]
    n = len(lr)
    T, k = transition(model, opt, batch_size, lr)
    s0 = np.maximum(np.floor(first).astype(np.int64) - 1, 0)  # a step before the first crossing
    m = _advance(T, k, initial_moments(model, (n,)), s0)
    L = model.loss(m[..., 0])
    last, La, Lb = s0.astype(float), L.copy(), np.full(n, np.nan)
    pending = np.ones(n, dtype=bool)  # the step after `last` is still to be recorded
    s = s0.copy()
    active = np.ones(n, dtype=bool)
    with np.errstate(all="ignore"):
        while active.any():
            a = np.flatnonzero(active)
            m[a] = _apply(T[a], k[a], m[a])
            s[a] += 1
            L = model.loss(m[a][..., 0])
            rec = pending[a]
            Lb[a[rec]] = L[rec]
            pending[a] = False
            above = L > target
            last[a[above]], La[a[above]], pending[a[above]] = s[a[above]], L[above], True
            active[a] = (s[a] - last[a] < window) & (s[a] < max_steps)
    frac = np.log(La / target) / np.log(La / Lb)
    out = last + np.where(np.isfinite(frac), np.clip(frac, 0.0, 1.0), 1.0)
    result[ok] = np.where(out <= max_steps, out, np.inf)
    return result


RULES = ("settled", "first")


def steps_to_target(opt: Optimizer, batch_size: float, lr, target: float, model: NQM | None = None,
                    max_steps: float = 1e8, levels: int = 6, rule: str = "settled") -> np.ndarray:
    """Steps until E[L] reaches ``target`` with a constant learning rate, shape of ``lr``.

    ``rule="first"``: the first crossing. ``rule="settled"`` (default): the crossing after which
    E[L] stays at or below the target — the same unless the expected loss oscillates (momentum at
    large learning rates, large B), when a brief early dip below the target would otherwise count;
    it is taken as settled once the loss has stayed below for 2^levels consecutive steps.

    The value is t + f where E[L(x_t)] > target ≥ E[L(x_{t+1})] at the first such t, and f ∈ [0, 1]
    interpolates log E[L] linearly between the two steps (so S(B) is smooth where S is a few
    steps); ``inf`` if never within ``max_steps``. The first 2^levels steps are iterated one by one
    for every rate; after that, only rates whose steady-state loss is below the target go on, in
    jumps of 2^levels steps with the composed map, and the jump whose end is at or below the
    target is replayed step by step. Exact except for a transient dip below the target that both
    starts and ends inside one later jump (the loss would have to oscillate for > 2^levels steps);
    the tests compare with plain iteration.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} ({', '.join(RULES)})")
    model = model or NQM()
    lr = np.asarray(lr, dtype=np.float64)
    flat = np.atleast_1d(lr).ravel()
    out = _crossings(model, opt, batch_size, flat, target, max_steps, levels, False)
    if rule == "settled":
        ok = np.isfinite(out)
        out[ok] = _settled(model, opt, batch_size, flat[ok], target, out[ok], 2 ** levels, max_steps)
    return out.reshape(lr.shape) if lr.ndim else out[0]


def optimal_steps_to_target(opt: Optimizer, batch_size: float, target: float, model: NQM | None = None,
                            lr_range: tuple[float, float] = (1e-7, 10.0), points_per_decade: int = 6,
                            refinements: int = 3, max_steps: float = 1e8, levels: int = 6,
                            rule: str = "settled") -> tuple[float, float]:
    """(S, lr): the fewest steps to ``target`` (:func:`steps_to_target`'s ``rule``) over constant
    learning rates, and that learning rate.

    A log grid over ``lr_range`` (capped at the largest stable rate), then ``refinements`` grids of
    9 points between the best point's neighbours. All rates of a grid advance together and stop at
    the first crossing, so slow rates cost nothing (for "settled", the rates that cross before the
    settled time of the first one are then followed to their own settled time). (inf, nan) if no
    rate reaches the target.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r} ({', '.join(RULES)})")
    model = model or NQM()
    lo, hi = np.log10(lr_range[0]), np.log10(lr_range[1])
    hmax = np.max(model.h ** (1.0 - opt.precond_power))  # stability: α hᵢ^(1−p) < 2(1 + β)
    hi = min(hi, np.log10(2.0 * (1.0 + opt.momentum) / hmax) - 1e-9)
    grid = np.logspace(lo, hi, max(3, int(round((hi - lo) * points_per_decade)) + 1))
    best_S, best_lr = np.inf, np.nan
    for r in range(refinements + 1):
        S = np.full(len(grid), np.inf)
        per = max(1, _MAX_COORDS // model.dim)  # learning rates per batch, to bound memory
        for i in range(0, len(grid), per):  # each batch stops at its first crossing (or the best so far)
            cap = min(max_steps, float(np.min(S)) + 2 ** levels)
            S[i:i + per] = _crossings(model, opt, batch_size, grid[i:i + per], target, cap, levels, True)
        if not np.isfinite(S).any():
            break
        if rule == "settled":
            j = int(np.argmin(S))
            bound = float(_settled(model, opt, batch_size, grid[j:j + 1], target, S[j:j + 1], 2 ** levels,
                                   max_steps)[0])
            first = np.full(len(grid), np.inf)
            for i in range(0, len(grid), per):
                first[i:i + per] = _crossings(model, opt, batch_size, grid[i:i + per], target, bound + 1.0, levels,
                                              False)
            cand = np.flatnonzero(np.isfinite(first))
            S = np.full(len(grid), np.inf)
            S[cand] = _settled(model, opt, batch_size, grid[cand], target, first[cand], 2 ** levels, max_steps)
        j = int(np.argmin(S))
        if S[j] < best_S:
            best_S, best_lr = float(S[j]), float(grid[j])
        step = np.log10(grid[1] / grid[0])
        c = np.log10(best_lr)
        grid = np.logspace(c - step, min(c + step, hi), 9)
    return best_S, best_lr


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

def fit_scaling(batch_sizes: Sequence[float], steps: Sequence[float], weights: str = "none") -> tuple[float, float]:
    """(E_min, S_min) by least squares of S·B = E_min + S_min·B on B (finite points only).

    ``weights="none"`` is the plain fit (as analysis/crossover.py does); ``"relative"`` minimises
    relative residuals (each point weighted by 1/(S·B)), so a grid spanning orders of magnitude is
    not fitted on its largest batch sizes alone.
    """
    B, S = np.asarray(batch_sizes, float), np.asarray(steps, float)
    ok = np.isfinite(S)
    B, S = B[ok], S[ok]
    if len(B) < 2:
        return np.nan, np.nan
    y = S * B
    if weights == "none":
        w = np.ones_like(y)
    elif weights == "relative":
        w = 1.0 / y
    else:
        raise ValueError(f"unknown weights {weights!r} (none, relative)")
    A = np.stack([np.ones_like(B), B], axis=1) * w[:, None]
    E_min, S_min = np.linalg.lstsq(A, y * w, rcond=None)[0]
    return float(E_min), float(S_min)


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


def crossover_exact(target: float, model: NQM | None = None, sgd: Optimizer = SGD_MOMENTUM,
                    adam: Optimizer = ADAM_LIKE, bracket: tuple[float, float] | None = None,
                    batch_sizes: Sequence[float] | None = None, rtol: float = 1e-3, **kw) -> float:
    """The batch size where the two exact S(B) curves cross (B is continuous in the NQM): the first
    bracket of ``batch_sizes`` (default powers of two 1 … 2^20) where SGD turns from faster to slower,
    then bisection in log B to relative precision ``rtol``. NaN if the curves do not cross."""
    model = model or NQM()

    def diff(b: float) -> float:
        s_sgd = optimal_steps_to_target(sgd, b, target, model, **kw)[0]
        s_adam = optimal_steps_to_target(adam, b, target, model, **kw)[0]
        return float(np.log(s_sgd) - np.log(s_adam))

    if bracket is None:
        grid = np.asarray(batch_sizes if batch_sizes is not None else 2.0 ** np.arange(0, 21), float)
        d = [diff(b) for b in grid]
        for j in range(len(grid) - 1):
            if d[j] < 0 <= d[j + 1]:
                bracket = (grid[j], grid[j + 1])
                break
        else:
            return np.nan
    lo, hi = np.log(bracket[0]), np.log(bracket[1])
    while hi - lo > rtol:
        mid = 0.5 * (lo + hi)
        if diff(np.exp(mid)) < 0:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


#: The spec's model: hᵢ = 1/i, noise variance hᵢ/B. It shows no crossover (docs/crossover.md).
SPEC_MODEL = NQM(dim=1000, noise_power=1.0)
#: The documented crossover variant: isotropic gradient noise (cᵢ = 1, not aligned with the
#: curvature), target 20 % of the initial loss; exact B* ≈ 6.9e3 (docs/crossover.md: why, and the
#: scan of other settings that shows where the McCandlish fit holds and where it does not).
CROSSOVER_MODEL = NQM(dim=1000, noise_power=0.0)
CROSSOVER_TARGET_FRACTION = 0.2
