"""MNIST-1D (Greydanus 2020) with a small MLP: a classification problem that needs no download.

The data are *generated* by ``mnist1d.data.make_dataset`` from the templates shipped in the
package (never ``get_dataset``, which downloads): 40-sample 1-d signals of the ten digits with
random scale, shear, translation and noise. ``make_dataset`` is deterministic given its ``seed``
(42, the package default) but reseeds numpy's and Python's global RNGs; we restore both.
Its 80/20 split gives train/test; the last ``n_valid`` training examples are the validation set.
Model: the MNIST-1D paper's MLP, 40 → hidden → hidden → 10 with ReLU.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from optbench.errors import OptbenchError
from optbench.problems.base import Task, classification_loss

_CACHE: dict[tuple, dict] = {}


def mnist1d_arrays(num_samples: int, seed: int = 42) -> dict:
    """x, y, x_test, y_test from mnist1d's generator (offline), cached per process."""
    key = (num_samples, seed)
    if key not in _CACHE:
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError:  # pragma: no cover - message for users
            raise OptbenchError("mnist1d is not installed: pip install mnist1d") from None
        args = get_dataset_args()
        args.num_samples, args.seed = int(num_samples), int(seed)
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            d = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        _CACHE[key] = {k: d[k] for k in ("x", "y", "x_test", "y_test")}
    return _CACHE[key]


def mnist1d_splits(args, device="cpu", who: str = "mnist1d_mlp"):
    """(train, valid, test) tensors: mnist1d's train/test split, the last ``n_valid`` training examples
    held out for validation."""
    d = mnist1d_arrays(int(args["num_samples"]), int(args["data_seed"]))
    x = torch.tensor(d["x"], dtype=torch.float32, device=device)
    y = torch.tensor(d["y"], dtype=torch.long, device=device)
    n_valid = int(args["n_valid"])
    if not 0 < n_valid < len(x):
        raise OptbenchError(f"{who}: n_valid={n_valid} must be below the {len(x)} training examples")
    test = (torch.tensor(d["x_test"], dtype=torch.float32, device=device),
            torch.tensor(d["y_test"], dtype=torch.long, device=device))
    return (x[:-n_valid], y[:-n_valid]), (x[-n_valid:], y[-n_valid:]), test


def build_mnist1d_mlp(spec, args, seed, device="cpu") -> Task:
    train, valid, test = mnist1d_splits(args, device)
    x = train[0]
    torch.manual_seed(seed)
    h = int(args["hidden"])
    model = nn.Sequential(nn.Linear(x.shape[1], h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10)).to(device)
    return Task(model=model, train=train, splits={"train_eval": train, "valid": valid, "test": test},
                loss=classification_loss, l2=spec.l2 or 0.0)
