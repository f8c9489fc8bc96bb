"""sklearn's 8x8 digits (1,797 images, shipped with scikit-learn, no download) with a small MLP."""
from __future__ import annotations

import functools

import numpy as np
import torch

from optbench.problems.base import Task, classification_loss, split_indices

SPLIT_SEED = 0  # the split is part of the problem: the same for every run


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits scaled to [0, 1], read once a process: ``load_digits`` parses its compressed
    CSV in ~20 ms, which was nearly all of a digits run's set-up (an array task trains ~10 runs; the
    crossover study's digits runs train in 0.5-1.5 s). Read-only: each run copies them into its tensors."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.asarray(d.data, dtype=np.float32) / 16.0
    y = np.asarray(d.target, dtype=np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def load_digits_tensors(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_arrays()
    return torch.tensor(x, device=device), torch.tensor(y, device=device)


def build_digits_mlp(spec, args, seed, device="cpu") -> Task:
    x, y = load_digits_tensors(device)
    tr, va, te = split_indices(len(x), (float(args["valid_fraction"]), float(args["test_fraction"])), SPLIT_SEED)
    torch.manual_seed(seed)
    hidden = int(args["hidden"])
    model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)).to(device)
    train = (x[tr], y[tr])
    return Task(model=model, train=train,
                splits={"train_eval": train, "valid": (x[va], y[va]), "test": (x[te], y[te])},
                loss=classification_loss, l2=spec.l2 or 0.0)
