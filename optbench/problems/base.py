"""What a problem builds for one run: the model, the data on the device, the loss.

A task is deliberately small (AlgoPerf's Workload without the framework): the training loop in
:mod:`optbench.trainer` needs only ``model``, ``train`` (a tuple of tensors indexed by example),
``splits`` for evaluation and ``loss``. Data lives on the device as whole tensors and batches are
made by indexing, so there is no DataLoader and no host round trip per step.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

Tensors = tuple[torch.Tensor, ...]
# loss(model, batch) -> (mean loss over the batch, mean accuracy over the batch or None); the built-in
# classifiers and language models leave the accuracy out (None) while the model is in training mode
LossFn = Callable[[torch.nn.Module, Tensors], tuple[torch.Tensor, torch.Tensor | None]]


@dataclasses.dataclass
class Task:
    model: torch.nn.Module
    train: Tensors
    splits: dict[str, Tensors]  # "train_eval", "valid", "test"
    loss: LossFn
    l2: float = 0.0  # DeepOBS-style L2: the loss gets l2/2 * sum of squared weights (biases excluded)
    eval_batch_size: int = 0  # examples per evaluation batch; 0: problems.build picks default_eval_batch(device)
    # mean loss and accuracy of the model over the named split in closed form, where the problem has
    # one (P1): the trainer then uses it instead of running the model over the split in batches
    split_eval: Callable[[str], tuple[float, float]] | None = None

    @property
    def n_train(self) -> int:
        return int(self.train[0].shape[0])

    def regularizer(self) -> torch.Tensor | None:
        if not self.l2:
            return None
        weights = [p for n, p in self.model.named_parameters() if p.ndim > 1]
        return 0.5 * self.l2 * sum((w * w).sum() for w in weights)


def default_eval_batch(device: str | torch.device) -> int:
    """Evaluation batch of the problems that do not set one. On a CPU, 1024: 4096 examples of a
    small MLP make activations of a few MB, beyond the caches, and both the evaluation and the
    training steps after it slow down (MNIST-1D: evaluation 6.1 ms at 4096, 4.0 ms at 1024; the
    first training step after it 0.5 ms slower; optbench's loop 0.92 of the bare loop at 4096 and
    0.97 at 1024). A GPU wants large batches."""
    return 4096 if torch.device(device).type == "cuda" else 1024


def sequence_eval_batch(device: str | torch.device, cpu: int, gpu: int = 1024) -> int:
    """Sequences per evaluation batch for the sequence problems.

    A GPU wants large batches. On a CPU they are slower: 1024 windows of 32 tokens over a 1024-token
    vocabulary are 134 MB of logits (and as much again for their log-softmax), far beyond the caches —
    measured on 2 cores, evaluating uniform_tokens_lm took 526 ms a split at 1024 and 356 ms at 128,
    the char-LSTM 4.0 s at 1024 and 3.1 s at 256.
    """
    return gpu if torch.device(device).type == "cuda" else cpu


def split_indices(n: int, fractions: tuple[float, float], seed: int) -> tuple[torch.Tensor, ...]:
    """Fixed train/valid/test split of ``n`` examples; the seed is the *problem's*, not the run's."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_valid, n_test = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    return perm[n_valid + n_test:], perm[:n_valid], perm[n_valid:n_valid + n_test]


def batch_accuracy(model: torch.nn.Module, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """The fraction of ``y`` predicted by the largest logit — in evaluation only (None while the model
    is in training mode). No loop uses a training batch's accuracy (a run's ``train_accuracy`` is an
    evaluation of the training split), and its four small kernels, run cold after the forward pass,
    cost a bare training step 6–9 % on this CPU (digits and MNIST-1D MLPs: 371 → 341 µs, 562 → 530 µs)
    and on a GPU four launches of a launch-bound small step."""
    if model.training:
        return None
    return (logits.argmax(dim=-1) == y).float().mean()


def classification_loss(model: torch.nn.Module, batch: Tensors) -> tuple[torch.Tensor, torch.Tensor | None]:
    x, y = batch
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    return loss, batch_accuracy(model, logits, y)
