"""P8 tolstoi_char_rnn: DeepOBS' two-layer character LSTM on War and Peace (TensorFlow version).

Model (``deepobs/tensorflow/testproblems/tolstoi_char_rnn.py``): embedding 83×128; two
``LSTMCell(128)`` layers, each wrapped in ``DropoutWrapper(input_keep_prob=0.8,
output_keep_prob=0.8)`` (so between the layers dropout is applied twice); softmax layer 128×83 + 83.
A TF LSTM cell has *one* bias per gate and adds ``forget_bias=1`` to the forget gate; torch's LSTM
has two. To keep the published parameter count, each layer is a bias-free ``nn.LSTM`` whose input
carries an extra constant 1: that weight column is the TF bias, initialised to 0 with the forget
gate at 1 (equivalent to TF's zero bias + forget_bias 1). Kernels are glorot_uniform over TF's
joint [input+hidden, 4·hidden] kernel; embedding and softmax weights glorot_uniform (TF's
``get_variable`` default, the softmax bias included).

Data (DeepOBS TF ``tolstoi``): ``train.npy`` / ``test.npy`` character ids; the first
``n_valid`` = 653,237 characters of the training ids are the validation set, the rest is trained
on; windows of ``seq_len`` = 50 characters, targets shifted by one. **Deviation:** DeepOBS feeds the
windows in text order and carries the LSTM state from one batch to the next; optbench's trainer
draws batches in random order, so every window starts from a zero state (documented in
docs/problems.md). ``train_eval`` is the first ``train_eval_size`` characters of the train part.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from optbench.errors import OptbenchError
from optbench.problems import datasets
from optbench.problems.base import Task, sequence_eval_batch
from optbench.problems.char_rnn import sequence_loss, windows


class TFLSTMLayer(nn.Module):
    """One TF ``LSTMCell`` layer over a sequence: single bias per gate (as an input column of ones)."""

    def __init__(self, input_size: int, hidden: int, forget_bias: float = 1.0):
        super().__init__()
        self.lstm = nn.LSTM(input_size + 1, hidden, bias=False, batch_first=True)
        limit = math.sqrt(6.0 / (input_size + hidden + 4 * hidden))  # glorot over the joint TF kernel
        with torch.no_grad():
            self.lstm.weight_ih_l0.uniform_(-limit, limit)
            self.lstm.weight_hh_l0.uniform_(-limit, limit)
            self.lstm.weight_ih_l0[:, -1] = 0.0  # the bias column
            self.lstm.weight_ih_l0[hidden:2 * hidden, -1] = forget_bias  # torch gate order i, f, g, o

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(*x.shape[:-1], 1, device=x.device, dtype=x.dtype)
        return self.lstm(torch.cat([x, ones], dim=-1))[0]


class TolstoiCharRNN(nn.Module):
    def __init__(self, vocab: int = 83, hidden: int = 128, layers: int = 2, keep_prob: float = 0.8):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList([TFLSTMLayer(hidden, hidden) for _ in range(layers)])
        self.drop = nn.Dropout(1.0 - keep_prob)
        self.softmax = nn.Linear(hidden, vocab)
        nn.init.xavier_uniform_(self.embedding.weight)
        nn.init.xavier_uniform_(self.softmax.weight)
        limit = math.sqrt(6.0 / (2 * vocab))  # TF glorot_uniform of a 1-d variable: fan_in = fan_out = vocab
        nn.init.uniform_(self.softmax.bias, -limit, limit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embedding(x)
        for layer in self.layers:
            h = self.drop(layer(self.drop(h)))  # DropoutWrapper: on the cell's input and its output
        return self.softmax(h)


def build_tolstoi_char_rnn(spec, args, seed, device="cpu") -> Task:
    data = datasets.load_tolstoi(args.get("data_dir", ""))
    vocab, seq = int(args["vocab"]), int(args["seq_len"])
    ids_train, ids_test = data["train"], data["test"]
    top = int(max(ids_train.max(initial=0), ids_test.max(initial=0)))
    if top >= vocab:
        raise OptbenchError(f"tolstoi_char_rnn: the data has character id {top} but vocab={vocab}")
    n_valid = int(args["n_valid"])
    if not 0 < n_valid < len(ids_train) - seq:
        raise OptbenchError(f"tolstoi_char_rnn: n_valid={n_valid} must leave training text "
                            f"(the training ids have {len(ids_train)} characters)")
    t = torch.from_numpy(np.ascontiguousarray(ids_train)).to(device)
    train = windows(t[n_valid:], seq)
    max_train = int(args.get("max_train", 0))
    if max_train > 0:
        train = (train[0][:max_train], train[1][:max_train])
    n_eval = max(1, int(args["train_eval_size"]) // seq)
    splits = {"train_eval": (train[0][:n_eval], train[1][:n_eval]),
              "valid": windows(t[:n_valid], seq),
              "test": windows(torch.from_numpy(np.ascontiguousarray(ids_test)).to(device), seq)}
    torch.manual_seed(seed)
    model = TolstoiCharRNN(vocab, int(args["hidden"]), int(args["layers"]), float(args["keep_prob"])).to(device)
    return Task(model=model, train=train, splits=splits, loss=sequence_loss, l2=spec.l2 or 0.0,
                eval_batch_size=int(args.get("eval_batch_size", 0)) or sequence_eval_batch(device, cpu=256, gpu=1000))
