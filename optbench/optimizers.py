"""Optimizers with the update rules of the published runs (TensorFlow 1), in torch.

Public API: ``make(name, params, **hparams)``. With no hyperparameters it gives the one-shot
defaults of :mod:`optbench.optimizer_specs`. Hyperparameter keywords are shared by every
optimizer that has them: ``lr, momentum, beta1, beta2, eps, rho, initial_accumulator_value,
final_lr, gamma, alpha, k``.

Where TF1 and torch differ we implement TF1 (see docs/optimizers.md):
- Adam: θ ← θ − lr·√(1−β2ᵗ)/(1−β1ᵗ)·m/(√v + ε) — ε is not bias-corrected (torch: √v̂ + ε).
- RMSProp: mean square starts at 1 and ε sits inside the root: θ ← θ − lr·g/√(ms + ε).
Momentum and Nesterov are torch's SGD (same rule as TF1's MomentumOptimizer, dampening 0).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from optbench import optimizer_specs


class TF1Adam(torch.optim.Optimizer):
    """TF1 AdamOptimizer (also Choi et al.'s Adam); ``nesterov=True`` gives Choi's NAdam numerator."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, nesterov=False):
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2, eps = group["beta1"], group["beta2"], group["eps"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
            st = [self.state[p] for p in params]
            st[0]["step"] += 1
            t = st[0]["step"]
            for s in st[1:]:
                s["step"] = t
            ms, vs = [s["m"] for s in st], [s["v"] for s in st]
            torch._foreach_lerp_(ms, grads, 1 - b1)  # m ← β1 m + (1−β1) g
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
            lr_t = group["lr"] * (1 - b2**t) ** 0.5 / (1 - b1**t)
            if group["nesterov"]:
                num = torch._foreach_mul(ms, b1)
                torch._foreach_add_(num, grads, alpha=1 - b1)
            else:
                num = ms
            den = torch._foreach_sqrt(vs)
            torch._foreach_add_(den, eps)
            torch._foreach_addcdiv_(params, num, den, value=-lr_t)


class TF1RMSProp(torch.optim.Optimizer):
    """TF1 RMSPropOptimizer (Choi et al.'s RMSProp): ms₀ = 1, ε inside the root, optional momentum."""

    def __init__(self, params, lr=1e-3, rho=0.9, eps=1e-10, momentum=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(ms=torch.ones_like(p), mom=torch.zeros_like(p))
            ms = [self.state[p]["ms"] for p in params]
            mom = [self.state[p]["mom"] for p in params]
            torch._foreach_mul_(ms, group["rho"])
            torch._foreach_addcmul_(ms, grads, grads, value=1 - group["rho"])
            den = torch._foreach_add(ms, group["eps"])
            torch._foreach_sqrt_(den)
            torch._foreach_mul_(mom, group["momentum"])
            torch._foreach_addcdiv_(mom, grads, den, value=group["lr"])
            torch._foreach_sub_(params, mom)


def _sgd(params, lr, **_):
    return torch.optim.SGD(params, lr=lr, foreach=True)


def _momentum(params, lr, momentum, **_):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=True)


def _nag(params, lr, momentum, **_):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, foreach=True)


def _adam(params, lr, beta1, beta2, eps, **_):
    return TF1Adam(params, lr=lr, beta1=beta1, beta2=beta2, eps=eps)


def _rmsprop(params, lr, rho, eps, momentum=0.0, **_):
    return TF1RMSProp(params, lr=lr, rho=rho, eps=eps, momentum=momentum)


FACTORIES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nag": _nag,
    "adam": _adam,
    "rmsprop": _rmsprop,
}


def make(name: str, params: Iterable[torch.nn.Parameter], **hparams: float) -> torch.optim.Optimizer:
    """Build optimizer ``name`` with the one-shot defaults overridden by ``hparams``."""
    spec = optimizer_specs.get(name)
    unknown = set(hparams) - set(spec.defaults)
    if unknown:
        raise ValueError(f"{name} has no hyperparameter(s) {sorted(unknown)}; it takes {sorted(spec.defaults)}")
    return FACTORIES[name](list(params), **spec.setting(hparams))
