"""Offline next-token problems on synthetic streams: ``uniform_tokens_lm`` and ``zipf_tokens_lm``.

Data: one stream from :func:`~optbench.problems.synthetic_tokens.synthetic_tokens` (fixed
``data_seed``, the same for every run), cut into contiguous train / valid / test parts and then
into windows of ``seq_len`` tokens with targets shifted by one. Model: a small per-position MLP
language model, embedding (vocab × width) → dense width → activation ("relu" or "gelu") →
dense vocab; with the first-order stream that is all the context there is. Metric: cross-entropy
(accuracy is recorded too).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from optbench.errors import OptbenchError
from optbench.problems.base import Task, sequence_eval_batch
from optbench.problems.char_rnn import sequence_loss, windows
from optbench.problems.synthetic_tokens import synthetic_tokens

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class TokenMLP(nn.Module):
    def __init__(self, vocab: int, width: int, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise OptbenchError(f"unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
        self.embed = nn.Embedding(vocab, width)
        self.hidden = nn.Linear(width, width)
        self.act = ACTIVATIONS[activation]()
        self.head = nn.Linear(width, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.hidden(self.embed(x))))


def token_splits(args) -> dict[str, np.ndarray]:
    """The train / valid / test token arrays of a token problem's arguments."""
    n_train, n_eval = int(args["n_train_tokens"]), int(args["n_eval_tokens"])
    try:
        stream = synthetic_tokens(n_train + 2 * n_eval, int(args["vocab"]), str(args["distribution"]),
                                  int(args["data_seed"]), zipf_exponent=float(args["zipf_exponent"]),
                                  determinism=float(args["determinism"]))
    except ValueError as e:
        raise OptbenchError(f"token problem: {e}") from None
    return {"train": stream[:n_train], "valid": stream[n_train:n_train + n_eval], "test": stream[n_train + n_eval:]}


def build_token_lm(spec, args, seed, device="cpu") -> Task:
    seq = int(args["seq_len"])
    parts = {k: torch.from_numpy(v).to(device) for k, v in token_splits(args).items()}
    train = windows(parts["train"], seq)
    n_eval = len(windows(parts["valid"], seq)[0])
    splits = {"train_eval": (train[0][:n_eval], train[1][:n_eval]),
              "valid": windows(parts["valid"], seq), "test": windows(parts["test"], seq)}
    torch.manual_seed(seed)
    model = TokenMLP(int(args["vocab"]), int(args["width"]), str(args["activation"])).to(device)
    return Task(model=model, train=train, splits=splits, loss=sequence_loss, l2=spec.l2 or 0.0,
                eval_batch_size=sequence_eval_batch(device, cpu=128))
