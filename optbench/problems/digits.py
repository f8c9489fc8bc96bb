"""sklearn's 8x8 digits (1,797 images, shipped with scikit-learn, no download) with a small MLP."""
from __future__ import annotations

import numpy as np
import torch

from optbench.problems.base import Task, classification_loss, split_indices

SPLIT_SEED = 0  # the split is part of the problem: the same for every run


def load_digits_tensors(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(np.asarray(d.data, dtype=np.float32) / 16.0, device=device)
    y = torch.tensor(d.target, dtype=torch.long, device=device)
    return x, y


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
