"""One array task, timed in two checkouts of optbench: did a change make real tasks faster?

    .venv/bin/python benchmarks/bench_task_ab.py --old /path/to/old-checkout [--new .] \\
        [--problem quadratic_deep] [--runs 32] [--epochs 100] [--rounds 4] [--whole] [--parallel K]

(make the old checkout with ``git worktree add /tmp/old <rev>``). Plans ``--runs`` one-shot runs
of one problem (as ``bench_parallel.py`` does) and trains the same chunk from scratch with
``ChunkRunner`` in a fresh process per round and checkout, one thread, alternating which goes
first: imports excepted, everything a worker does per run is timed (task file, leases, checkpoints,
result writes). Prints each round and the ratio new/old of the best rounds and the median of the
rounds' ratios. The same interpreter runs both (the old checkout must import with it).

``--whole``: time the whole process instead, from its start to its exit, started as the Slurm
executor starts a task (``python -u -m optbench.launch -u -m MODULE``): the interpreter, the imports,
the task and the interpreter's exit (whose final garbage collection scans every object left) —
what a task holds its device for.

``--parallel K``: the task trains its runs ``K`` at once (the profile's ``runs_in_parallel``), one
torch thread each: what a change to the parallel path (:mod:`optbench.parallel`) costs or saves.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

CODE = ("import json, sys, time; from optbench.worker import ChunkRunner; d = sys.argv[1]; "
        "ids = json.load(open(d + '/ids.json')); opts = json.load(open(d + '/options.json')); "
        "t = time.perf_counter(); "
        "out = ChunkRunner()(d, 'task-ab', ids, opts); "
        "print(time.perf_counter() - t); assert len(out['trained']) == len(ids), out")


def time_task(checkout: Path, plan_dir: Path, work: Path, ids: list[str], whole: bool = False,
              parallel: int = 1) -> float:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(plan_dir, work)
    (work / "ids.json").write_text(json.dumps(ids))
    options = {"threads": parallel, "device": "cpu", **({"runs_in_parallel": parallel} if parallel > 1 else {})}
    (work / "options.json").write_text(json.dumps(options))
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    if whole:
        # guarded: a parallel task's spawned processes import the main module again (as submitit's is)
        (work / "ab_task.py").write_text("if __name__ == '__main__':\n    " + CODE.replace("; ", "\n    "))
        env["PYTHONPATH"] += os.pathsep + str(work)
        cmd = [sys.executable, "-u", "-m", "optbench.launch", "-u", "-m", "ab_task", str(work)]
    else:
        cmd = [sys.executable, "-c", CODE, str(work)]
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"task in {checkout} failed:\n{out.stderr[-3000:]}")
    return wall if whole else float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from bench_parallel import plan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, type=Path)
    ap.add_argument("--new", default=ROOT, type=Path)
    ap.add_argument("--problem", default="quadratic_deep")
    ap.add_argument("--runs", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--whole", action="store_true", help="time the whole process, started as on Slurm (see above)")
    ap.add_argument("--parallel", type=int, default=1, metavar="K",
                    help="train the chunk K runs at once, one thread each (runs_in_parallel; default 1)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="optbench-task-ab-") as tmp:
        plan_dir, ids = plan(Path(tmp), args.problem, args.runs, args.epochs)
        print(f"{len(ids)} runs of {args.problem} x {args.epochs} epochs"
              f"{f', {args.parallel} at once' if args.parallel > 1 else ''}; load average {os.getloadavg()[0]:.2f}")
        res: dict[str, list[float]] = {"old": [], "new": []}
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for name in order:
                res[name].append(time_task(getattr(args, name).resolve(), plan_dir, Path(tmp) / name, ids, args.whole,
                                           args.parallel))
                print(f"  round {r + 1}: {name} {res[name][-1]:6.2f} s", flush=True)
    best = min(res["new"]) / min(res["old"])
    paired = statistics.median(n / o for n, o in zip(res["new"], res["old"]))
    print(f"new/old: best rounds {best:.2f}x the time, median of the rounds' ratios {paired:.2f}x "
          f"(best: old {min(res['old']):.2f} s, new {min(res['new']):.2f} s; load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
