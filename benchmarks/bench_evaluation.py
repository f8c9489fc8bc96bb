"""Evaluation time: the trainer's evaluation of the three splits against the bench's plainest one.

    .venv/bin/python benchmarks/bench_evaluation.py [--problem digits_mlp] [--calls 200] [--rounds 3]
                                                    [--trainer FILE ...]

Each ``--trainer`` (a source file of ``optbench/trainer.py``: the current one by default; an older one
from ``git show REV:optbench/trainer.py > FILE``) evaluates the problem's valid, test and train_eval
splits as a run does after every epoch; "bare" is loop (b')'s evaluation in ``optbench bench`` (the
losses of each evaluation batch under ``inference_mode``, nothing read). All evaluate the same model
in one process, interleaved, with one torch thread. "warm": back-to-back calls; "cold": each call
after one epoch of training steps (as in a run, where the steps push the evaluation's code and data out
of the caches). Medians of ``--calls`` calls; the ratios are to bare in the same round. About 30 s for
the digits MLP.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer_files import add_trainer_option, load_trainers, trainer_files  # noqa: E402 (benchmarks/)

SPLITS = ["valid", "test", "train_eval"]  # the order a run evaluates them in


def trainer_evaluation(module):
    """The module's evaluation of the three splits: ``evaluate_splits`` where it has one, else (older
    trainers) ``evaluate_split`` of each."""
    if hasattr(module, "evaluate_splits"):
        return lambda task: module.evaluate_splits(task, SPLITS)
    return lambda task: [module.evaluate_split(task, name) for name in SPLITS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="digits_mlp")
    ap.add_argument("--calls", type=int, default=200, help="calls per evaluator, round and mode (default 200)")
    ap.add_argument("--rounds", type=int, default=3)
    add_trainer_option(ap)
    args = ap.parse_args()
    if args.calls < 1 or args.rounds < 1:
        ap.error("--calls and --rounds must be at least 1")
    files = trainer_files(ap, args)

    import torch

    from optbench import bench

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="optbench-eval-") as tmp:
        setup = bench.make_setup(args.problem, 200, Path(tmp), "cpu")
        loop = bench.BareLoop(setup, "cpu")  # its task and model are the ones every evaluator evaluates
        evaluators = {name: trainer_evaluation(module) for name, module in load_trainers(files).items()}
        evaluators["bare"] = lambda task: loop.evaluate()
        spe = setup.steps_per_epoch

        def timed(fn, cold: bool) -> float:
            times = []
            for _ in range(args.calls):
                if cold:
                    loop.run(spe)
                t = time.perf_counter()
                fn(loop.task)
                times.append(time.perf_counter() - t)
            return statistics.median(times)

        names = list(evaluators)
        results: dict[tuple[str, str], list[float]] = {}
        print(f"{args.problem}: splits {', '.join(f'{n} {loop.task.splits[n][0].shape[0]}' for n in SPLITS)}, "
              f"evaluation batch {loop.task.eval_batch_size}; {args.rounds} rounds of {args.calls} calls", flush=True)
        for r in range(args.rounds):
            for mode in ("warm", "cold"):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    results.setdefault((name, mode), []).append(timed(evaluators[name], mode == "cold"))
    width = max(len(n) for n in names)
    print(f"{'':{width}s} {'warm µs':>9s} {'/bare':>6s} {'cold µs':>9s} {'/bare':>6s}")
    for name in names:
        cells = []
        for mode in ("warm", "cold"):
            mine, bare = results[(name, mode)], results[("bare", mode)]
            cells.append(f"{statistics.median(mine) * 1e6:9.0f} "
                         f"{statistics.median(a / b for a, b in zip(mine, bare)):6.3f}")
        print(f"{name:{width}s} {' '.join(cells)}")
    print("µs: median over rounds of each round's median call; /bare: median over rounds of the ratio to bare "
          "in the same round")


if __name__ == "__main__":
    main()
