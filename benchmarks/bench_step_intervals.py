"""Step by step: the time from one optimizer step to the next in optbench's loop and the bare loop.

    .venv/bin/python benchmarks/bench_step_intervals.py [--problem quadratic_deep] [--rounds 13] \\
        [--steps 1500] [--trainer FILE ...]

``optbench bench`` times whole epochs; this splits them by a step's position in its epoch, to see
*where* a gap to the bare loop comes from: position 0 is the interval from the last step of an
epoch to the first of the next (the evaluation, the row, the next permutation), positions 1… the
steady steps. Each ``--trainer`` (a source file of ``optbench/trainer.py``: the current one by
default; an older one with ``git show REV:optbench/trainer.py > /tmp/trainer_old.py``) is loaded as
its own module — importing the current rest of ``optbench``: old against new compares the training
loops only — and runs ``train_run`` with an in-memory sink, its checkpoints made and dropped (the
profile's grouping: a few in a P1 run) and no interrupt handler, interleaved with the bare loops of
``optbench bench`` (loop (b), and (b′) which evaluates after every epoch) in one process over
``--rounds`` rounds (the order rotates), so that their per-position medians are paired. A step's end
is stamped by wrapping the optimizer's ``step`` (the same wrapper in every loop).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer_files import add_trainer_option, load_trainers, trainer_files  # noqa: E402 (benchmarks/)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="quadratic_deep")
    ap.add_argument("--rounds", type=int, default=13)
    ap.add_argument("--steps", type=int, default=1500, help="about this many timed steps a loop and round")
    add_trainer_option(ap)
    args = ap.parse_args()
    if args.rounds < 1 or args.steps < 1:
        ap.error("--rounds and --steps must be at least 1")
    files = trainer_files(ap, args)

    import numpy as np
    import torch

    from optbench import bench, optimizers
    from optbench.testing import MemorySink

    torch.set_num_threads(1)
    stamps: list[float] = []
    make = optimizers.make

    def stamped_make(*a, **k):
        opt = make(*a, **k)
        step = opt.step

        def timed_step(*sa, **sk):
            out = step(*sa, **sk)
            stamps.append(time.perf_counter())
            return out

        opt.step = timed_step
        return opt

    optimizers.make = stamped_make  # train_run and the bare loop build their optimizer through it
    loops = {}
    for name, module in load_trainers(files).items():
        loops[name] = (lambda s, d, m=module: m.train_run(
            bench._record(s), sink=MemorySink(), checkpoint=lambda state: None, device=d))
    loops["bare"] = bench.MEASURE["bare"]
    loops["bare+eval"] = bench.MEASURE["bare+eval"]  # (b'): evaluates at position 0, untimed in the bench
    with tempfile.TemporaryDirectory(prefix="optbench-steps-") as tmp:
        setup = bench.make_setup(args.problem, args.steps, Path(tmp), "cpu")
        spe = setup.steps_per_epoch
        print(f"{args.problem}: {spe} steps an epoch, {setup.timed_epochs + 1} epochs a loop, {args.rounds} rounds",
              flush=True)
        per_round: dict[str, list[list[float]]] = {k: [] for k in loops}
        names = list(loops)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                stamps.clear()
                loops[name](setup, "cpu")
                s = np.asarray(stamps[:len(stamps) // spe * spe])
                gaps = np.diff(s)
                pos = np.arange(1, len(s)) % spe  # position of the step that ends each interval
                # skip the first (warm-up) epoch's intervals
                per_round[name].append([float(np.median(gaps[pos == p][1:])) for p in range(spe)])
    width = max(len(n) for n in names)
    print(f"{'':{width}s} " + " ".join(f"{'pos ' + str(p):>8s}" for p in range(min(spe, 8))) + "   steady    epoch")
    for name, v in per_round.items():
        m = np.median(np.asarray(v), axis=0) * 1e6
        cells = " ".join(f"{x:8.1f}" for x in m[:8])
        steady = f"{m[1:].mean():7.1f}" if spe > 1 else f"{'-':>7s}"  # one step an epoch: no steady step
        print(f"{name:{width}s} {cells}  {steady}  {m.sum():7.0f}   µs")
    print("pos 0: from the last step of an epoch to the first of the next (the trainers and bare+eval evaluate "
          "there, bare does not); steady: the mean of positions 1…; epoch: their sum (medians over the rounds)")


if __name__ == "__main__":
    main()
