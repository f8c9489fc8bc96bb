"""Classifiers with balanced or heavy-tailed training classes: the crossover study's class factor.

Data: sklearn's 8x8 digits (``dataset = "digits"``, split as ``digits_mlp`` splits it) or MNIST-1D
generated offline (``dataset = "mnist1d"``, split as ``mnist1d_mlp`` splits it). Only the
*training* split is changed, by the argument ``classes``:

* ``"balanced"``: every class keeps n examples, n = the size of the smallest class in the training
  split (so the classes are exactly equal; the others lose a few examples);
* ``"heavy_tailed"``: class i (the digit i, i = 0 … 9) keeps ⌈n/(i+1)⌉ examples — n, n/2, n/3 …
  n/10 — as in the crossover paper's first author's code (spec §3).

The kept examples of a class are the first ones of a permutation fixed by ``data_seed`` (the
same for every run), so the heavy-tailed set is a subset of the balanced one. The validation and
test splits are never heavy-tailed: each is made exactly balanced the same way (every class cut
to that split's smallest class count) and is identical for both settings, so the metric is
accuracy on balanced data. (digits: 190 validation and 200 test examples of the 270 / 270 that
``digits_mlp`` uses; MNIST-1D: a few examples fewer than ``mnist1d_mlp``'s.) The heavy-tailed
training set is ≈ 29 % of the balanced one (H₁₀/10), so a fixed number of epochs is also
fewer steps.

Model: an MLP in → hidden → hidden → 10 with ReLU (the MNIST-1D paper's MLP), PyTorch's default
initialisation, cross-entropy loss.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from optbench.errors import OptbenchError
from optbench.problems.base import Task, classification_loss, split_indices
from optbench.problems.digits import SPLIT_SEED, load_digits_tensors
from optbench.problems.mnist1d_mlp import mnist1d_splits

CLASSES = ("balanced", "heavy_tailed")
DATASETS = ("digits", "mnist1d")
N_CLASSES = 10


def class_counts(n: int, classes: str, n_classes: int = N_CLASSES) -> list[int]:
    """How many training examples each class keeps: n each, or ⌈n/(i+1)⌉ for class i."""
    if classes == "balanced":
        return [n] * n_classes
    if classes == "heavy_tailed":
        return [math.ceil(n / (i + 1)) for i in range(n_classes)]
    raise OptbenchError(f"unknown classes {classes!r} (known: {', '.join(CLASSES)})")


def subsample_classes(y: np.ndarray, classes: str, seed: int, n_classes: int = N_CLASSES) -> np.ndarray:
    """Sorted indices into ``y`` of the kept training examples (see the module docstring)."""
    y = np.asarray(y)
    by_class = [np.flatnonzero(y == c) for c in range(n_classes)]
    n = min(len(ix) for ix in by_class)
    if n == 0:
        raise OptbenchError("imbalanced classifier: a class has no training example")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(ix)[:k] for ix, k in zip(by_class, class_counts(n, classes, n_classes))]
    return np.sort(np.concatenate(keep))


def _arrays(args, device):
    dataset = str(args["dataset"])
    if dataset == "digits":
        x, y = load_digits_tensors(device)
        tr, va, te = split_indices(len(x), (float(args["valid_fraction"]), float(args["test_fraction"])), SPLIT_SEED)
        return (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te])
    if dataset == "mnist1d":
        return mnist1d_splits(args, device, who="imbalanced classifier")
    raise OptbenchError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")


def _subset(split, classes: str, seed: int):
    x, y = split
    keep = torch.as_tensor(subsample_classes(y.cpu().numpy(), classes, seed), device=y.device)
    return x[keep], y[keep]


def build_imbalanced_classifier(spec, args, seed, device="cpu") -> Task:
    (x, y), valid, test = _arrays(args, device)
    data_seed = int(args["data_seed"])  # the subsets are the same for every run; the init follows the run's seed
    train = _subset((x, y), str(args["classes"]), data_seed)
    valid, test = _subset(valid, "balanced", data_seed + 1), _subset(test, "balanced", data_seed + 2)
    torch.manual_seed(seed)
    h = int(args["hidden"])
    model = nn.Sequential(nn.Linear(x.shape[1], h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                          nn.Linear(h, N_CLASSES)).to(device)
    return Task(model=model, train=train, splits={"train_eval": train, "valid": valid, "test": test},
                loss=classification_loss, l2=spec.l2 or 0.0)
