"""Optimizers with the update rules of the published runs (TensorFlow 1), in torch.

Public API: ``make(name, params, **hparams)``. With no hyperparameters it gives the one-shot
defaults of :mod:`optbench.optimizer_specs`. Hyperparameter keywords are shared by every
optimizer that has them: ``lr, momentum, beta1, beta2, eps, rho, initial_accumulator_value,
final_lr, gamma, alpha, k``. Every optimizer stores them in its param groups under these names,
so ``opt.param_groups[0]["lr"]`` is the learning rate the trainer's schedule sets.

Where TF1 and torch differ we implement TF1 (docs/optimizers.md has every rule and its source):
- Adam: θ ← θ − lr·√(1−β2ᵗ)/(1−β1ᵗ)·m/(√v + ε) — ε is not bias-corrected (torch: √v̂ + ε).
- AMSGrad: the same with v replaced by its running maximum (Keras' ``amsgrad=True`` placement).
- RMSProp: mean square starts at 1 and ε sits inside the root; lr inside the momentum buffer.
- Adagrad: accumulator starts at 0.1, no ε.  Adadelta: TF1's rule, default lr 1e-3.
- NAdam: Keras' Nadam (Dozat's momentum schedule μₜ = β1(1 − ½·0.96^(0.004 t))).
- RAdam: keras-radam's TF1 ``RAdamOptimizer`` (ε added to the bias-corrected √v̂).
- AdaBound/AMSBound: Luolc/AdaBound (bounds final_lr·lr/base_lr·(1 ∓ 1/(γt [+1]))).
- AdaBelief: the authors' rule, s ← β2 s + (1−β2)(g−m)² + ε, no rectification.
- Lookahead: a wrapper; every k steps slow ← slow + α(fast − slow), fast ← slow.
Momentum and Nesterov are torch's SGD (same rule as TF1's MomentumOptimizer, dampening 0).

Step counters are per param group (TF1 keeps one global step / β-power per optimizer), stored in
the group as ``step`` so they travel with ``state_dict()``.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from optbench import optimizer_specs, schedules

#: hyperparameters that belong to a per-step learning-rate schedule, not to the optimizer; ``make``
#: accepts and ignores them so a run's setting may carry them (the trainer passes them on to
#: :func:`optbench.schedules.step_factor_fn`)
SCHEDULE_HPARAMS = frozenset(h for names in schedules.STEP_SCHEDULES.values() for h in names)


class _TFOptimizer(torch.optim.Optimizer):
    """Common plumbing: lazily created per-parameter state and one step counter per group."""

    def _begin(self, group: dict, init: Callable[[torch.Tensor], dict]):
        """Params with a gradient, their gradients and states; advances the group's step."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return None
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if not self.state[p]:
                self.state[p].update(init(p))
        group["step"] += 1
        return params, [p.grad for p in params], [self.state[p] for p in params]

    def _closure(self, closure):
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class TF1Adam(_TFOptimizer):
    """TF1 AdamOptimizer (also Choi et al.'s Adam).

    ``nesterov=True`` gives Choi's NAdam numerator β1 m + (1−β1) g (TF1's ``use_nesterov``);
    ``amsgrad=True`` divides by √(max v) + ε, keeping TF1's ε placement.
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, nesterov=False, amsgrad=False):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, nesterov=nesterov,
                                      amsgrad=amsgrad, step=0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        for group in self.param_groups:
            ams = group["amsgrad"]

            def init(p):
                s = dict(m=torch.zeros_like(p), v=torch.zeros_like(p))
                if ams:
                    s["vmax"] = torch.zeros_like(p)
                return s

            got = self._begin(group, init)
            if got is None:
                continue
            params, grads, st = got
            b1, b2, eps, t = group["beta1"], group["beta2"], group["eps"], group["step"]
            ms, vs = [s["m"] for s in st], [s["v"] for s in st]
            torch._foreach_lerp_(ms, grads, 1 - b1)  # m ← β1 m + (1−β1) g
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            if ams:
                vmax = [s["vmax"] for s in st]
                torch._foreach_maximum_(vmax, vs)
                vs = vmax
            lr_t = group["lr"] * (1 - b2**t) ** 0.5 / (1 - b1**t)
            if group["nesterov"]:
                num = torch._foreach_mul(ms, b1)
                torch._foreach_add_(num, grads, alpha=1 - b1)
            else:
                num = ms
            den = torch._foreach_sqrt(vs)
            torch._foreach_add_(den, eps)
            torch._foreach_addcdiv_(params, num, den, value=-lr_t)
        return loss


class TF1RMSProp(_TFOptimizer):
    """TF1 RMSPropOptimizer (Choi et al.'s RMSProp): ms₀ = 1, ε inside the root, lr inside the momentum.

    ms ← ρ ms + (1−ρ) g²;  mom ← μ mom + lr·g/√(ms + ε);  θ ← θ − mom.
    """

    def __init__(self, params, lr=1e-3, rho=0.9, eps=1e-10, momentum=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, momentum=momentum, step=0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        for group in self.param_groups:
            got = self._begin(group, lambda p: dict(ms=torch.ones_like(p), mom=torch.zeros_like(p)))
            if got is None:
                continue
            params, grads, st = got
            ms, mom = [s["ms"] for s in st], [s["mom"] for s in st]
            torch._foreach_mul_(ms, group["rho"])
            torch._foreach_addcmul_(ms, grads, grads, value=1 - group["rho"])
            den = torch._foreach_add(ms, group["eps"])
            torch._foreach_sqrt_(den)
            torch._foreach_mul_(mom, group["momentum"])
            torch._foreach_addcdiv_(mom, grads, den, value=group["lr"])
            torch._foreach_sub_(params, mom)
        return loss


class KerasNadam(_TFOptimizer):
    """Keras' Nadam (Dozat 2016 with the momentum schedule), the formulation behind ε = 1e-7.

    μₜ = β1(1 − ½·0.96^(0.004·t)),  Πₜ = Π_{i≤t} μᵢ,
    m ← β1 m + (1−β1) g,  v ← β2 v + (1−β2) g²,
    θ ← θ − lr·[(1−μₜ)/(1−Πₜ)·g + μₜ₊₁/(1−Πₜ μₜ₊₁)·m] / (√(v/(1−β2ᵗ)) + ε).
    Πₜ (Keras' ``m_schedule``) is kept per group as a Python float.
    """

    SCHEDULE_DECAY = 0.004

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, step=0, m_schedule=1.0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        for group in self.param_groups:
            got = self._begin(group, lambda p: dict(m=torch.zeros_like(p), v=torch.zeros_like(p)))
            if got is None:
                continue
            params, grads, st = got
            b1, b2, eps, t = group["beta1"], group["beta2"], group["eps"], group["step"]
            mu_t = b1 * (1 - 0.5 * 0.96 ** (self.SCHEDULE_DECAY * t))
            mu_next = b1 * (1 - 0.5 * 0.96 ** (self.SCHEDULE_DECAY * (t + 1)))
            sched_new = group["m_schedule"] * mu_t
            sched_next = sched_new * mu_next
            group["m_schedule"] = sched_new
            ms, vs = [s["m"] for s in st], [s["v"] for s in st]
            torch._foreach_lerp_(ms, grads, 1 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            den = torch._foreach_div(vs, 1 - b2**t)
            torch._foreach_sqrt_(den)
            torch._foreach_add_(den, eps)
            lr = group["lr"]
            torch._foreach_addcdiv_(params, grads, den, value=-lr * (1 - mu_t) / (1 - sched_new))
            torch._foreach_addcdiv_(params, ms, den, value=-lr * mu_next / (1 - sched_next))
        return loss


class RAdam(_TFOptimizer):
    """Rectified Adam (Liu et al. 2020) as in keras-radam's TF1 ``RAdamOptimizer`` (default ε 1e-7).

    ρ∞ = 2/(1−β2) − 1,  ρₜ = ρ∞ − 2tβ2ᵗ/(1−β2ᵗ),  m̂ = m/(1−β1ᵗ),  v̂ = v/(1−β2ᵗ);
    ρₜ ≥ 5: θ ← θ − lr·rₜ·m̂/(√v̂ + ε),  rₜ = √((ρₜ−4)(ρₜ−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρₜ));
    else:   θ ← θ − lr·m̂  (momentum SGD with bias correction, ``degenerated_to_sgd``).
    ``liu_eps=True`` adds ε to √v instead (the RAdam authors' PyTorch code, i.e. ε·√(1−β2ᵗ) on √v̂).
    """

    THRESHOLD = 5.0

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, liu_eps=False):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, liu_eps=liu_eps, step=0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        for group in self.param_groups:
            got = self._begin(group, lambda p: dict(m=torch.zeros_like(p), v=torch.zeros_like(p)))
            if got is None:
                continue
            params, grads, st = got
            b1, b2, eps, t, lr = group["beta1"], group["beta2"], group["eps"], group["step"], group["lr"]
            ms, vs = [s["m"] for s in st], [s["v"] for s in st]
            torch._foreach_lerp_(ms, grads, 1 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            bc1, bc2 = 1 - b1**t, 1 - b2**t
            rho_inf = 2 / (1 - b2) - 1
            rho_t = rho_inf - 2 * t * b2**t / bc2
            if rho_t >= self.THRESHOLD:
                r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                if group["liu_eps"]:
                    den = torch._foreach_sqrt(vs)
                    torch._foreach_add_(den, eps)
                    step_size = lr * r_t * math.sqrt(bc2) / bc1
                else:
                    den = torch._foreach_div(vs, bc2)
                    torch._foreach_sqrt_(den)
                    torch._foreach_add_(den, eps)
                    step_size = lr * r_t / bc1
                torch._foreach_addcdiv_(params, ms, den, value=-step_size)
            else:
                torch._foreach_add_(params, ms, alpha=-lr / bc1)
        return loss


class AdaBound(_TFOptimizer):
    """AdaBound / AMSBound as in the authors' code (Luolc/AdaBound), without weight decay.

    m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²  (AMSBound: v ← max(v_max, v));
    η = lr·√(1−β2ᵗ)/(1−β1ᵗ) / (√v + ε) clipped elementwise to
    [f·(1 − 1/(γt + 1)), f·(1 + 1/(γt))] with f = final_lr·lr/base_lr;  θ ← θ − η·m.
    base_lr is the learning rate the optimizer was built with (kept in the group), so the bounds
    follow a learning-rate schedule as in the authors' PyTorch code. ``scale_final_lr=False`` keeps
    f = final_lr (what TF ports that read lr and base_lr from one variable effectively do).
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, final_lr=0.1, gamma=1e-3,
                 amsbound=False, scale_final_lr=True):
        super().__init__(params, dict(lr=lr, base_lr=lr, beta1=beta1, beta2=beta2, eps=eps, final_lr=final_lr,
                                      gamma=gamma, amsbound=amsbound, scale_final_lr=scale_final_lr, step=0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        for group in self.param_groups:
            ams = group["amsbound"]

            def init(p):
                s = dict(m=torch.zeros_like(p), v=torch.zeros_like(p))
                if ams:
                    s["vmax"] = torch.zeros_like(p)
                return s

            got = self._begin(group, init)
            if got is None:
                continue
            params, grads, st = got
            b1, b2, eps, t, lr = group["beta1"], group["beta2"], group["eps"], group["step"], group["lr"]
            ms, vs = [s["m"] for s in st], [s["v"] for s in st]
            torch._foreach_lerp_(ms, grads, 1 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            if ams:
                vmax = [s["vmax"] for s in st]
                torch._foreach_maximum_(vmax, vs)
                vs = vmax
            step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            final_lr = group["final_lr"] * (lr / group["base_lr"] if group["scale_final_lr"] else 1.0)
            lower = final_lr * (1 - 1 / (group["gamma"] * t + 1))
            upper = final_lr * (1 + 1 / (group["gamma"] * t))
            den = torch._foreach_sqrt(vs)
            torch._foreach_add_(den, eps)
            eta = torch._foreach_reciprocal(den)
            torch._foreach_mul_(eta, step_size)
            torch._foreach_clamp_min_(eta, lower)
            torch._foreach_clamp_max_(eta, upper)
            torch._foreach_mul_(eta, ms)
            torch._foreach_sub_(params, eta)
        return loss


class AdaBelief(_TFOptimizer):
    """AdaBelief (Zhuang et al. 2020), the authors' rule without rectification or weight decay.

    m ← β1 m + (1−β1) g;  s ← β2 s + (1−β2)(g − m)² + ε;
    θ ← θ − lr/(1−β1ᵗ) · m/(√(s/(1−β2ᵗ)) + ε).
    """

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-14):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, step=0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = self._closure(closure)
        for group in self.param_groups:
            got = self._begin(group, lambda p: dict(m=torch.zeros_like(p), s=torch.zeros_like(p)))
            if got is None:
                continue
            params, grads, st = got
            b1, b2, eps, t = group["beta1"], group["beta2"], group["eps"], group["step"]
            ms, ss = [s["m"] for s in st], [s["s"] for s in st]
            torch._foreach_lerp_(ms, grads, 1 - b1)
            diff = torch._foreach_sub(grads, ms)
            torch._foreach_mul_(ss, b2)
            torch._foreach_addcmul_(ss, diff, diff, value=1 - b2)
            torch._foreach_add_(ss, eps)
            den = torch._foreach_div(ss, 1 - b2**t)
            torch._foreach_sqrt_(den)
            torch._foreach_add_(den, eps)
            torch._foreach_addcdiv_(params, ms, den, value=-group["lr"] / (1 - b1**t))
        return loss


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019) around any inner optimizer.

    The slow weights start at the parameters' values at the first step; after every k-th inner
    step: slow ← slow + α(fast − slow), fast ← slow. The inner optimizer's state is kept (no
    momentum reset). ``param_groups`` *is* the inner optimizer's list, so setting a group's lr
    reaches the inner optimizer; α and k live in the same groups. ``state_dict()`` holds both the
    inner state and the slow weights with the step counters.
    """

    def __init__(self, base: torch.optim.Optimizer, alpha: float = 0.5, k: int = 5):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead alpha must lie in (0, 1], got {alpha}")
        if int(k) != k or k < 1:
            raise ValueError(f"Lookahead k must be a positive integer, got {k}")
        params = [p for g in base.param_groups for p in g["params"]]
        super().__init__(params, dict(alpha=alpha, k=int(k)))
        self.base = base
        for g in base.param_groups:
            g.setdefault("alpha", alpha)
            g.setdefault("k", int(k))
            g.setdefault("lookahead_step", 0)
        self.param_groups = base.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:  # slow weights start where the inner optimizer starts
            for p in group["params"]:
                if "slow" not in self.state[p]:
                    self.state[p]["slow"] = p.detach().clone()
        loss = self.base.step(closure)
        for group in self.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % group["k"] == 0:
                fast = list(group["params"])
                slow = [self.state[p]["slow"] for p in fast]
                torch._foreach_lerp_(slow, fast, group["alpha"])  # slow ← slow + α(fast − slow)
                torch._foreach_copy_(fast, slow)
        return loss

    def state_dict(self):
        return {"base": self.base.state_dict(), "lookahead": super().state_dict()}

    def load_state_dict(self, state_dict):
        self.base.load_state_dict(state_dict["base"])
        super().load_state_dict(state_dict["lookahead"])
        self.param_groups = self.base.param_groups  # load_state_dict made new group dicts: re-share

    def __repr__(self):
        return f"Lookahead({self.base!r})"


# ---------------------------------------------------------------- factories (one per registry name)

def _sgd(params, lr, **_):
    return torch.optim.SGD(params, lr=lr, foreach=True)


def _momentum(params, lr, momentum, **_):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=True)


def _nag(params, lr, momentum, **_):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, foreach=True)


def _adam(params, lr, beta1, beta2, eps, **_):
    return TF1Adam(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps)


def _amsgrad(params, lr, beta1, beta2, eps, **_):
    return TF1Adam(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, amsgrad=True)


def _choi_nadam(params, lr, beta1, beta2, eps, **_):
    return TF1Adam(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, nesterov=True)


def _nadam(params, lr, beta1, beta2, eps, **_):
    return KerasNadam(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps)


def _radam(params, lr, beta1, beta2, eps, **_):
    return RAdam(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps)


def _rmsprop(params, lr, rho, eps, momentum=0.0, **_):
    return TF1RMSProp(params, lr=lr, rho=rho, eps=eps, momentum=momentum)


def _adagrad(params, lr, initial_accumulator_value, **_):
    # TF1: acc₀ = initial_accumulator_value, acc ← acc + g², θ ← θ − lr·g/√acc (eps = 0: no ε)
    return torch.optim.Adagrad(params, lr=lr, initial_accumulator_value=initial_accumulator_value,
                               eps=0.0, foreach=True)


def _adadelta(params, lr, rho, eps, **_):
    # torch's Adadelta is TF1's rule; only the default lr differs (TF1 1e-3, torch 1.0)
    return torch.optim.Adadelta(params, lr=lr, rho=rho, eps=eps, foreach=True)


def _adabound(params, lr, beta1, beta2, eps, final_lr, gamma, **_):
    return AdaBound(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, final_lr=final_lr, gamma=gamma)


def _amsbound(params, lr, beta1, beta2, eps, final_lr, gamma, **_):
    return AdaBound(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps, final_lr=final_lr, gamma=gamma,
                    amsbound=True)


def _adabelief(params, lr, beta1, beta2, eps, **_):
    return AdaBelief(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps)


def _lookahead_momentum(params, lr, momentum, alpha, k, **_):
    return Lookahead(_momentum(params, lr=lr, momentum=momentum), alpha=alpha, k=k)


def _lookahead_radam(params, lr, beta1, beta2, eps, alpha, k, **_):
    return Lookahead(_radam(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps), alpha=alpha, k=k)


FACTORIES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    # Crowded Valley
    "amsbound": _amsbound,
    "amsgrad": _amsgrad,
    "adabelief": _adabelief,
    "adabound": _adabound,
    "adadelta": _adadelta,
    "adagrad": _adagrad,
    "adam": _adam,
    "lookahead_momentum": _lookahead_momentum,
    "lookahead_radam": _lookahead_radam,
    "momentum": _momentum,
    "nag": _nag,
    "nadam": _nadam,
    "radam": _radam,
    "rmsprop": _rmsprop,
    "sgd": _sgd,
    # Choi et al. (same update rules, every hyperparameter tunable)
    "choi_sgd": _sgd,
    "choi_momentum": _momentum,
    "choi_nesterov": _nag,
    "choi_rmsprop": _rmsprop,
    "choi_adam": _adam,
    "choi_nadam": _choi_nadam,
}

#: hyperparameters that must be integers (they arrive as floats from the samplers and records)
INTEGER_HPARAMS = frozenset({"k"})


def make(name: str, params: Iterable[torch.nn.Parameter], **hparams: float) -> torch.optim.Optimizer:
    """Build optimizer ``name`` with the one-shot defaults overridden by ``hparams``."""
    spec = optimizer_specs.get(name)
    hparams = {k: v for k, v in hparams.items() if k not in SCHEDULE_HPARAMS or k in spec.defaults}
    unknown = set(hparams) - set(spec.defaults)
    if unknown:
        raise ValueError(f"{name} has no hyperparameter(s) {sorted(unknown)}; it takes {sorted(spec.defaults)}")
    setting = spec.setting(hparams)
    for key in INTEGER_HPARAMS & set(setting):
        value = float(setting[key])
        if value != round(value):
            raise ValueError(f"{name}: hyperparameter {key} must be an integer, got {setting[key]!r}")
        setting[key] = int(round(value))
    return FACTORIES[name](list(params), **setting)
