"""How much more work optbench's loop does than the bare loop, in instructions: a figure the load cannot move.

    .venv/bin/python benchmarks/bench_instructions.py [--problem quadratic_deep] [--epochs 3 43] \\
        [--io default off] [--jobs 2]

Runs ``optbench bench``'s loops — (a) optbench's ``train_run`` and (b′) the bare loop with the
protocol's evaluation after every epoch, (b) without it — each in its own process under
``valgrind --tool=callgrind``, at two numbers of timed epochs, and prints the instructions of one
epoch (the difference of the two counts over the difference of the epochs: the processes' imports,
set-up and exit cancel) and (a)'s over (b′)'s and (b)'s. Callgrind counts the instructions the
process executes, the same on a quiet machine and a loaded one (with a fixed ``PYTHONHASHSEED``,
which the script sets: Python's random string hashing alone moves a count by ~0.05 %): the ratio
says whether optbench
*does* more than the bare loop, which a wall-clock ratio on a shared 2-core VM (±2–4 % from run to
run) cannot settle. What it cannot see: time spent in the kernel (file writes: its syscalls run
natively, so the I/O budgets, set in seconds, allow more writes under valgrind than outside) and
instructions that run slower (cache misses, cold code: a tensor slice made inside each step ran
~7 µs slower than the same slice made at the epoch's start, for the same instructions). ``--io off``
gives loop (a) an I/O budget so small that after the run's first checkpoint and row nothing is
written until its end: optbench's own per-epoch work without the file writes.

Each process takes ~1.5–2 minutes under valgrind (the torch import included); ``--jobs`` run at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOOPS = ("optbench", "bare+eval", "bare")


def child(problem: str, loop: str, epochs: int, io: str) -> None:
    """Run one loop of ``optbench bench`` for ``epochs`` timed epochs (inside valgrind)."""
    import torch

    from optbench import bench
    from optbench.profiles import Resources

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="optbench-instr-") as tmp:
        setup = dataclasses.replace(bench.make_setup(problem, 10, Path(tmp), "cpu"), timed_epochs=epochs)
        if loop == "optbench":
            resources = Resources() if io == "default" else dataclasses.replace(Resources(), checkpoint_overhead=1e-9)
            bench.measure_optbench(setup, "cpu", resources=resources)
        else:
            bench.MEASURE[loop](setup, "cpu")


def count(problem: str, loop: str, epochs: int, io: str) -> int:
    """Instructions the whole process executed (callgrind's total)."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
           "--child", problem, loop, str(epochs), io]
    # a fixed hash seed: with Python's random one the same process varies by ~0.05 % (±0.1 M instructions an
    # epoch over 40 epochs), as much as the difference measured; with it, by < 1,000 instructions
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    m = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if out.returncode != 0 or not m:
        raise SystemExit(f"{loop} ({epochs} epochs) failed under valgrind:\n{out.stderr[-3000:]}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="quadratic_deep")
    ap.add_argument("--epochs", type=int, nargs=2, default=(3, 43), metavar=("FEW", "MANY"))
    ap.add_argument("--io", nargs="+", choices=("default", "off"), default=["default", "off"],
                    help="loop (a)'s I/O budget: the profile default, or (almost) no writes")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        p, loop, e, io = args.child
        if io not in ("default", "off", "-"):
            raise SystemExit(f"--child: io {io!r}")
        child(p, loop, int(e), io)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    few, many = args.epochs
    if not 0 < few < many:
        raise SystemExit("--epochs FEW MANY: 0 < FEW < MANY")
    jobs = [("optbench", e, io) for io in args.io for e in (few, many)]
    jobs += [(loop, e, "-") for loop in LOOPS[1:] for e in (few, many)]
    print(f"{args.problem}: {len(jobs)} processes under callgrind, {args.jobs} at once …", flush=True)

    def run(job):
        n = count(args.problem, *job)
        print(f"  {job[0]:9s} {job[2]:7s} {job[1]:3d} epochs: {n:,} instructions", flush=True)
        return job, n

    pool = ThreadPoolExecutor(args.jobs)
    try:
        counts = dict(pool.map(run, jobs))
    finally:  # on a failure, do not wait for the queued processes (minutes each) before saying so
        pool.shutdown(cancel_futures=True)
    per_epoch = {}
    for loop, io in {(j[0], j[2]) for j in jobs}:
        per_epoch[(loop, io)] = (counts[(loop, many, io)] - counts[(loop, few, io)]) / (many - few)
    print(f"\ninstructions per epoch ({args.problem}; the difference of {many} and {few} timed epochs):")
    for (loop, io), v in sorted(per_epoch.items()):
        print(f"  {loop:9s} {'I/O ' + io if loop == 'optbench' else '':12s} {v:14,.0f}")
    for io in args.io:
        a = per_epoch[("optbench", io)]
        print(f"a/b' (I/O {io}): {a / per_epoch[('bare+eval', '-')]:.4f}   a/b: {a / per_epoch[('bare', '-')]:.4f}"
              "   (instructions: above 1 = optbench executes more)")


if __name__ == "__main__":
    main()
