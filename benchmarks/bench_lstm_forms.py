"""The char-RNNs' LSTM in its two forms: optbench's two one-layer ``nn.LSTM`` calls with ``nn.Dropout``
between them, against one ``nn.LSTM(num_layers=2, dropout=p)`` call, training steps per second.

    .venv/bin/python benchmarks/bench_lstm_forms.py [--device cuda] [--rounds 5] [--steps 50]

Why: optbench uses the two-call form because cuDNN draws the one-call form's between-layer dropout
from a state of its own that no checkpoint holds, so a resumed GPU run would differ from an
uninterrupted one (``optbench/problems/char_rnn.py``). On a CPU the two forms are the same
computation; on a GPU the one call lets cuDNN run both layers in one kernel sequence, so the
exact resume may cost speed there. This measures what it costs (``benchmarks/gpu_check.sh`` runs it).

Both models get the same weights (the one-call model loads the two-call model's state through the
key-renaming hook in reverse) and train on the same random batches of Tolstoi's sizes (vocabulary 83,
128 units, 2 layers, batch 50 × 50 characters) with Adam; the rounds interleave the two forms. Before
timing, their losses on one batch in evaluation mode (no dropout) must agree (to 1e-5 relative on a
GPU, whose kernels differ; exactly on a CPU), or the script exits with status 1.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from optbench.problems.char_rnn import CharLSTM  # noqa: E402


class OneCallLSTM(torch.nn.Module):
    """The same network with one multi-layer ``nn.LSTM`` (cuDNN's built-in between-layer dropout)."""

    def __init__(self, vocab: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.drop = torch.nn.Dropout(dropout)
        self.lstm = torch.nn.LSTM(hidden, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.drop(self.embed(x)))
        return self.head(self.drop(h))


def one_call_state(two_call: CharLSTM) -> dict[str, torch.Tensor]:
    """``lstms.i.name_l0`` → ``lstm.name_li``: the inverse of CharLSTM's key-renaming hook."""
    out = {}
    for key, value in two_call.state_dict().items():
        if key.startswith("lstms."):
            _, layer, name = key.split(".", 2)
            key = f"lstm.{name[:-len('_l0')]}_l{layer}"
        out[key] = value
    return out


def train_steps(model, opt, batches) -> float:
    """Seconds for one training step on each batch (forward, cross-entropy, backward, Adam step)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for x, y in batches:
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def eval_loss(model, x, y) -> float:
    model.eval()
    with torch.inference_mode():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    model.train()
    return loss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50, help="timed training steps per form and round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--vocab", type=int, default=83)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--dropout", type=float, default=0.2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    two = CharLSTM(args.vocab, args.hidden, args.layers, args.dropout).to(device)
    one = OneCallLSTM(args.vocab, args.hidden, args.layers, args.dropout).to(device)
    one.load_state_dict(one_call_state(two))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(args.vocab, (args.batch, args.seq_len), generator=g).to(device),
                torch.randint(args.vocab, (args.batch, args.seq_len), generator=g).to(device))
               for _ in range(args.steps)]
    l2, l1 = eval_loss(two, *batches[0]), eval_loss(one, *batches[0])
    tolerance = 0.0 if device.type == "cpu" else 1e-5 * abs(l2)
    print(f"{args.device}: {args.layers} layers x {args.hidden} units, batch {args.batch} x {args.seq_len}, "
          f"vocab {args.vocab}; evaluation loss two calls {l2:.7f}, one call {l1:.7f}")
    if abs(l2 - l1) > tolerance:
        print("bench_lstm_forms: the two forms disagree: not the same network", file=sys.stderr)
        return 1
    forms = {"two calls": (two, torch.optim.Adam(two.parameters(), lr=1e-3)),
             "one call": (one, torch.optim.Adam(one.parameters(), lr=1e-3))}
    for model, opt in forms.values():
        train_steps(model, opt, batches[: max(2, args.steps // 5)])  # warm-up (cuDNN plans, allocator)
    ratios, speeds = [], {name: [] for name in forms}
    for r in range(args.rounds):
        order = list(forms) if r % 2 == 0 else list(reversed(forms))
        seconds = {name: train_steps(*forms[name], batches) for name in order}
        for name, s in seconds.items():
            speeds[name].append(args.steps / s)
        ratios.append(seconds["two calls"] / seconds["one call"])
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {args.steps / s:.1f} steps/s" for n, s in seconds.items()),
              flush=True)
    print(f"steps/s (best round): two calls {max(speeds['two calls']):.1f}, one call {max(speeds['one call']):.1f}; "
          f"one call / two calls = {statistics.median(ratios):.3f} (median of the rounds' ratios: what the "
          f"exactly resumable form costs on this device)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
