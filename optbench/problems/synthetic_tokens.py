"""Synthetic token streams with a chosen vocabulary distribution (numpy only, no torch).

:func:`synthetic_tokens` is the data generator of the offline language-model problems
(``uniform_tokens_lm``, ``zipf_tokens_lm``) and is meant to be reused by other token problems
(e.g. the crossover study's transformer). The stream is a stationary first-order Markov chain
whose token (label) frequencies are *exactly* the asked distribution p in expectation and which
has a known amount of learnable structure:

* p over the vocabulary: ``"uniform"`` (p_k = 1/V) or ``"zipf"`` (p_k ∝ (k+1)^−s, token 0 the most
  frequent, s = ``zipf_exponent``);
* a fixed successor map σ, a random permutation *within blocks of tokens of similar probability*
  (consecutive ranks whose probabilities differ by less than a factor 1/determinism; the whole
  vocabulary for "uniform");
* each next token is σ(previous) with probability ``determinism``, otherwise a fresh draw from
  r = (p − determinism·p∘σ⁻¹)/(1 − determinism) ≥ 0, the distribution that makes p stationary.

So a model can learn σ (a lookup over the whole vocabulary); the best next-token accuracy is
≈ determinism + (1 − determinism)·r(σ(x)) (determinism + (1 − determinism)/V when uniform), and
``determinism = 0`` gives i.i.d. draws from p. The first token is drawn from p. The same
(n, vocab, distribution, seed, …) always gives the same stream.
"""
from __future__ import annotations

import numpy as np

DISTRIBUTIONS = ("uniform", "zipf")


def unigram_probs(vocab: int, distribution: str, zipf_exponent: float = 1.0) -> np.ndarray:
    """Token probabilities p (length ``vocab``, summing to 1)."""
    if vocab < 2:
        raise ValueError(f"vocab must be at least 2, got {vocab}")
    if distribution == "uniform":
        return np.full(vocab, 1.0 / vocab)
    if distribution == "zipf":
        w = np.arange(1, vocab + 1, dtype=np.float64) ** -float(zipf_exponent)
        return w / w.sum()
    raise ValueError(f"unknown token distribution {distribution!r} (known: {', '.join(DISTRIBUTIONS)})")


def successor_map(p: np.ndarray, determinism: float, rng: np.random.Generator) -> np.ndarray:
    """σ: a random permutation inside each block of consecutive tokens whose probabilities are
    within a factor 1/determinism of the block's first (p must be non-increasing)."""
    vocab = len(p)
    sigma = np.arange(vocab)
    limit = 1.0 / determinism if determinism > 0 else np.inf
    start = 0
    while start < vocab:
        stop = start + 1
        while stop < vocab and p[start] <= limit * p[stop] * (1 - 1e-12):
            stop += 1
        sigma[start:stop] = start + rng.permutation(stop - start)
        start = stop
    return sigma


def synthetic_tokens(n: int, vocab: int, distribution: str, seed: int, *, zipf_exponent: float = 1.0,
                     determinism: float = 0.5) -> np.ndarray:
    """``n`` token ids (int64) of the Markov stream described in the module docstring."""
    if not 0.0 <= determinism <= 1.0:
        raise ValueError(f"determinism must be in [0, 1], got {determinism}")
    p = unigram_probs(vocab, distribution, zipf_exponent)
    rng = np.random.default_rng(seed)
    sigma = successor_map(p, determinism, rng)
    if determinism < 1.0:
        inflow = np.zeros(vocab)
        inflow[sigma] = p  # probability of arriving at σ(v) from v
        r = np.clip(p - determinism * inflow, 0.0, None) / (1.0 - determinism)
        r /= r.sum()
    else:
        r = p
    tokens = rng.choice(vocab, size=n, p=r).astype(np.int64)
    if n:
        tokens[0] = rng.choice(vocab, p=p)
    follow = rng.random(n) < determinism
    if n:
        follow[0] = False
    # A run of followers after a fresh token s is s, σ(s), σ(σ(s)), …: fill by offset in the run.
    positions = np.arange(n)
    run_start = np.maximum.accumulate(np.where(follow, 0, positions)) if n else positions
    offset = positions - run_start
    for j in range(1, int(offset.max(initial=0)) + 1):
        at = np.flatnonzero(offset == j)
        tokens[at] = sigma[tokens[at - 1]]
    return tokens
