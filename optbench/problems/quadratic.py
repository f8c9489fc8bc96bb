"""P1 quadratic_deep, exactly as DeepOBS defines it (numpy RandomState(42) for Q, 42/43 for data).

The loss of one example x is ½(θ−x)ᵀQ(θ−x); Q = RᵀDR with 90 eigenvalues U(0,1) and 10 U(30,60)
and a Haar-random rotation R (subgroup algorithm, as in DeepOBS). Train data: 1000 draws of
N(0, 0.6²I) from seed 42; test: seed 43; train_eval is the train set. θ starts at 1.
There is no validation set in DeepOBS' quadratic; we evaluate "valid" on a third fixed draw (seed 44)
so that selection on validation never peeks at test data (a documented choice).

Evaluation is in closed form (:class:`SplitMoments`): the mean loss over a split is
½(θ−μ)ᵀQ(θ−μ) + ½·mean_i (x_i−μ)ᵀQ(x_i−μ), with the split's mean μ and the constant second term
computed once, in float64. That is the exact mean the batched evaluation approximates in float32,
at 100×100 instead of 3,000×100×100 multiply-adds per epoch — and, what mattered most, without
streaming the three splits through the caches every seven steps: a P1 epoch trains in ~2.5 ms, the
batched evaluation took ~1 ms and slowed the training steps after it by a few per cent.
A mean loss beyond float32's range is reported as inf (the run has diverged), as float32 evaluation
reports it — at one threshold on every device, where the batched sums overflowed at ~3e38 divided by
the evaluation batch size.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from optbench.problems.base import Task


def random_rotation(dim: int, rng: np.random.RandomState) -> np.ndarray:
    """Haar-random rotation by the Diaconis–Shahshahani subgroup algorithm (DeepOBS' construction)."""
    t = 2 * np.pi * rng.uniform()
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    for d in range(2, dim):
        v = rng.normal(size=(d + 1, 1))
        v = v / np.sqrt(v.T @ v)
        e = np.concatenate((np.array([[1.0]]), np.zeros((d, 1))), axis=0)
        x = (e - v) / np.sqrt((e - v).T @ (e - v))
        big = np.vstack([np.hstack([[[1.0]], np.zeros((1, d))]), np.hstack([np.zeros((d, 1)), rot])])
        rot = big - 2 * np.outer(x, x.T @ big)
    return -rot


def deep_hessian(dim: int = 100) -> np.ndarray:
    rng = np.random.RandomState(42)
    n_big = dim // 10
    eig = np.concatenate((rng.uniform(0.0, 1.0, dim - n_big), rng.uniform(30.0, 60.0, n_big)))
    rot = random_rotation(dim, rng)
    return rot.T @ np.diag(eig) @ rot


class Quadratic(torch.nn.Module):
    def __init__(self, hessian: np.ndarray):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.ones(hessian.shape[0]))
        self.register_buffer("hessian", torch.tensor(hessian, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = self.theta - x
        return 0.5 * ((diff @ self.hessian) * diff).sum(dim=1)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def split_moments(q: torch.Tensor, splits: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, tuple[torch.Tensor, float]]:
    """Each split's mean μ (float64) and ½·mean_i (x_i−μ)ᵀQ(x_i−μ), for the float64 ``q``."""
    moments = {}
    with torch.inference_mode():
        for name, (x,) in splits.items():
            x = x.double()
            mu = x.mean(dim=0)
            xc = x - mu
            moments[name] = (mu, 0.5 * float(((xc @ q) * xc).sum(dim=1).mean()))
    return moments


class SplitMoments:
    """The closed-form mean loss of P1 over each evaluation split (see the module's docstring)."""

    def __init__(self, model: Quadratic, q: torch.Tensor, moments: dict[str, tuple[torch.Tensor, float]]):
        # q: the model's float32 Q in float64 and the splits' moments, shared by every run (_fixed_parts)
        self.model, self.q, self.moments = model, q, moments

    def __call__(self, name: str) -> tuple[float, float]:
        mu, spread = self.moments[name]
        with torch.inference_mode():
            d = self.model.theta.detach().double() - mu
            loss = 0.5 * float(d @ (self.q @ d)) + spread
        # A loss beyond float32's range is inf, as the model's own float32 arithmetic gives it: the
        # trainer calls a run diverged when an evaluation is not finite, and float64 would otherwise
        # keep a run whose loss is 1e70 "finished" until θ itself overflows
        return (math.inf if loss > FLOAT32_MAX else loss), math.nan


def quadratic_loss(model, batch):
    return model(batch[0]).mean(), None


def build_quadratic_deep(spec, args, seed, device="cpu") -> Task:
    dim, n, noise = int(args["dim"]), int(args["train_size"]), float(args["noise_level"])
    hessian, splits, q, moments = _fixed_parts(dim, n, noise, str(device))
    torch.manual_seed(seed)  # nothing random in the model; kept so every problem seeds the same way
    model = Quadratic(hessian).to(device)
    return Task(model=model, train=splits["train_eval"], splits=dict(splits), loss=quadratic_loss,
                split_eval=SplitMoments(model, q, moments))


@functools.lru_cache(maxsize=4)
def _fixed_parts(dim: int, n: int, noise: float, device: str):
    """What every P1 run with these settings shares — Q (numpy, and the model's float32 Q in float64
    on the device), the three draws on the device and their moments — made once a process: an array
    task trains many P1 runs, and these were 10 of the 14 ms a run spent building its task (a run
    trains in ~0.3 s). Nothing writes to them: batches and evaluations index or read the data, and
    each run gets its own model (θ and its copy of Q)."""

    def draw(s: int) -> torch.Tensor:
        x = np.float32(np.random.RandomState(s).normal(0.0, noise, (n, dim)))
        return torch.from_numpy(x).to(device)

    hessian = deep_hessian(dim)
    train = draw(42)
    splits = {"train_eval": (train,), "valid": (draw(44),), "test": (draw(43),)}
    with torch.inference_mode():
        q = torch.tensor(hessian, dtype=torch.float32, device=device).double()  # the model's float32 Q, exactly
    return hessian, splits, q, split_moments(q, splits)
