"""A small causal transformer on synthetic token streams: the crossover study's language model.

The factors behind the Adam–SGD gap (spec §3) are problem arguments:

* ``distribution``: ``"uniform"`` or ``"zipf"`` — the vocabulary (label) distribution of the stream
  from :func:`~optbench.problems.synthetic_tokens.synthetic_tokens` (the generator of the
  ``*_tokens_lm`` problems, reused unchanged, with its ``zipf_exponent`` and ``determinism``);
* ``attention``: ``"softmax"`` (causal multi-head softmax self-attention) or ``"none"``: the
  attention-free mixer :class:`CausalLinearMixer` — value projection, a *learned* lower-triangular
  seq_len × seq_len mixing matrix shared by all sequences (initialised to the causal mean, no
  softmax, no query/key, weights independent of the data), output projection;
* ``activation``: ``"relu"`` or ``"gelu"`` (exact erf GeLU) in the MLP.

Architecture (pre-LayerNorm, GPT-2 style): token embedding + learned position embedding;
``layers`` blocks x ← x + mixer(LN(x)), x ← x + MLP(LN(x)) with MLP width → 4·width → width;
final LayerNorm; untied linear head to the vocabulary. Initialisation: weights N(0, 0.02²),
biases 0, the two residual output projections of each block N(0, (0.02/√(2·layers))²),
LayerNorm γ = 1, β = 0. Data: the stream is cut into train / valid / test parts and windows of
``seq_len`` tokens with targets shifted by one, exactly as :mod:`optbench.problems.token_lm`
does; a "batch size" is a number of sequences (batch_size·seq_len tokens). Metric: mean
next-token cross-entropy (accuracy is recorded too).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from optbench.errors import OptbenchError
from optbench.problems.base import Task, sequence_eval_batch
from optbench.problems.char_rnn import sequence_loss, windows
from optbench.problems.token_lm import token_splits

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
ATTENTIONS = ("softmax", "none")
INIT_STD = 0.02


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise OptbenchError(f"transformer: width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class CausalLinearMixer(nn.Module):
    """Attention-free token mixing: y_t = W_o Σ_{s ≤ t} M[t, s] W_v x_s with a learned M (no softmax)."""

    def __init__(self, width: int, seq_len: int):
        super().__init__()
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        mask = torch.tril(torch.ones(seq_len, seq_len))
        self.register_buffer("mask", mask, persistent=False)
        self.mix = nn.Parameter(mask / mask.sum(dim=1, keepdim=True))  # the causal mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        m = (self.mix * self.mask)[:t, :t]
        return self.proj(torch.einsum("ts,bsc->btc", m, self.value(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, seq_len: int, attention: str, activation: str):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.mixer = CausalSelfAttention(width, heads) if attention == "softmax" else CausalLinearMixer(width, seq_len)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), ACTIVATIONS[activation](), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerLM(nn.Module):
    def __init__(self, vocab: int, seq_len: int, width: int = 64, layers: int = 2, heads: int = 4,
                 attention: str = "softmax", activation: str = "gelu"):
        super().__init__()
        if attention not in ATTENTIONS:
            raise OptbenchError(f"unknown attention {attention!r} (known: {', '.join(ATTENTIONS)})")
        if activation not in ACTIVATIONS:
            raise OptbenchError(f"unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
        self.seq_len = seq_len
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, heads, seq_len, attention, activation) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self._init(layers)

    def _init(self, layers: int) -> None:
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, 0.0, INIT_STD)
            if isinstance(mod, nn.Linear) and mod.bias is not None:
                nn.init.zeros_(mod.bias)
        for block in self.blocks:  # residual output projections (GPT-2)
            nn.init.normal_(block.mixer.proj.weight, 0.0, INIT_STD / math.sqrt(2 * layers))
            nn.init.normal_(block.mlp[2].weight, 0.0, INIT_STD / math.sqrt(2 * layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t > self.seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than seq_len {self.seq_len}")
        h = self.tok(x) + self.pos.weight[:t]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


def build_transformer_lm(spec, args, seed, device="cpu") -> Task:
    seq = int(args["seq_len"])
    parts = {k: torch.from_numpy(v).to(device) for k, v in token_splits(args).items()}
    train = windows(parts["train"], seq)
    valid, test = windows(parts["valid"], seq), windows(parts["test"], seq)
    n_eval = len(valid[0])
    splits = {"train_eval": (train[0][:n_eval], train[1][:n_eval]), "valid": valid, "test": test}
    torch.manual_seed(seed)
    model = TransformerLM(int(args["vocab"]), seq, int(args["width"]), int(args["layers"]), int(args["heads"]),
                          str(args["attention"]), str(args["activation"])).to(device)
    return Task(model=model, train=train, splits=splits, loss=sequence_loss, l2=spec.l2 or 0.0,
                eval_batch_size=sequence_eval_batch(device, cpu=128))
