"""Many runs per device: aggregate runs per hour of one array task, by how it uses the device.

    .venv/bin/python benchmarks/bench_parallel.py [--problem quadratic_deep] [--runs 16] [--epochs 100]
                                                  [--rounds 2] [--update-device slurm/devices/cpu-2core.toml]
                                                  [--device cuda --parallel 4]

Plans a small study (``--runs`` one-shot runs of one problem, its real model and data, ``--epochs``
epochs each) and trains the same chunk, from scratch, once per mode and round, each time as a
fresh array task would (``python -c 'ChunkRunner()(…)'`` in a new process: imports, plan, HDF5
results, checkpoints and leases included):

- ``seq-1t``: one run at a time, 1 torch thread;
- ``seq-Nt``: one run at a time, all the cores' threads (``--cores``, default all CPUs);
- ``par-N``:  ``runs_in_parallel = cores`` runs at once, 1 thread each (the profile key).

With ``--device cuda`` the runs share one GPU: ``seq`` (one run at a time, all the cores' threads)
and ``par-K`` (``--parallel`` runs at once, default 4, the cores' threads split between them); the
``parallel_speedup`` is then par-K / seq, since ``optbench bench --device cuda`` measures one run
alone on the device. The dataset problems (P2–P8) train on fake files in the real formats
(``--fake-train`` examples; the real model), written to a temporary data directory.

It prints runs per hour of each mode (best round) and the ratios par-N / seq-Nt ("N runs at once vs
one run using the whole device") and par-N / seq-1t (the ``parallel_speedup`` of the cost model:
device throughput with N runs at once, relative to the one-thread single-run speed that
``optbench bench`` measures). Modes are interleaved and rotated over rounds; on a machine shared
with other work, read the load average printed with the result.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDY = """
name = "bench-parallel"
problems = ["{problem}"]
optimizers = ["adam"]
schedules = ["cosine"]
[problem_settings.{problem}]
num_epochs = {epochs}
{extra}
[oneshot]
seeds = {seeds}
"""


def fake_data(tmp: Path, problem: str, n_train: int) -> str:
    """Fake files for a dataset problem (none for the offline ones), sized as ``optbench bench`` sizes
    them, with evaluation splits of about a tenth of ``n_train``; the study settings that use them."""
    from optbench import bench, problems

    spec = problems.get(problem)
    if spec.dataset is None:
        return ""
    bs = spec.batch_size
    args = bench.sized_args(problem, max(1, n_train // bs), tmp / "data", eval_batches=max(1, n_train // 10 // bs))
    return "\n".join(f"{k} = {json.dumps(args[k])}" for k in ("data_dir", "n_valid", "train_eval_size", "max_train"))


def plan(tmp: Path, problem: str, runs: int, epochs: int, fake_train: int = 0) -> tuple[Path, list[str]]:
    from optbench import planner
    from optbench.study import load_study

    toml = tmp / "study.toml"
    extra = fake_data(tmp, problem, fake_train) if fake_train else ""
    toml.write_text(STUDY.format(problem=problem, epochs=epochs, seeds=list(range(runs)), extra=extra))
    d = tmp / "plan"
    df = planner.write_plan(load_study(toml), d, progress=lambda m: None)
    return d, list(df[df["kind"] == "oneshot"]["run_id"])


def training_span(work: Path) -> float:
    """Seconds from the first run's start to the last run's end, read from the runs' ``started`` and
    ``finished`` attributes in the task's result files: the task's training without its process
    start-up, imports and device initialisation (several seconds on a GPU, where a short task of
    small runs would otherwise measure mostly those)."""
    import h5py

    starts, ends = [], []
    for path in sorted((work / "results").glob("*.h5")):
        with h5py.File(path, "r") as f:
            for g in f.get("runs", {}).values():
                starts.append(float(g.attrs.get("started", math.nan)))
                ends.append(float(g.attrs.get("finished", math.nan)))
    if not starts or any(math.isnan(t) for t in starts + ends):
        return math.nan  # a run without its times (not finished): no span to report
    return max(ends) - min(starts)


def run_task(plan_dir: Path, work: Path, run_ids: list[str], options: dict) -> tuple[float, float]:
    """Train the chunk in a fresh process, as an array task; returns its wall seconds and its
    training span (:func:`training_span`)."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(plan_dir, work)
    (work / "ids.json").write_text(json.dumps(run_ids))
    code = ("import json, sys; from optbench.worker import ChunkRunner; "
            "d = sys.argv[1]; ids = json.load(open(d + '/ids.json')); "
            "out = ChunkRunner()(d, 'task-bench', ids, json.loads(sys.argv[2])); "
            "assert len(out['trained']) == len(ids), out")
    env = {**os.environ, "OMP_NUM_THREADS": str(options.get("threads", 1))}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(work), json.dumps(options)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    return wall, training_span(work)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="quadratic_deep")
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--parallel", type=int, default=None,
                    help="runs at once (default: --cores on a CPU, 4 on a GPU)")
    ap.add_argument("--fake-train", type=int, default=6400,
                    help="training examples of the fake data set of a dataset problem (default 6400)")
    ap.add_argument("--update-device", default=None, metavar="FILE",
                    help="write runs_in_parallel and parallel_speedup (par-N / seq-1t) into this device profile")
    args = ap.parse_args(argv)
    n = args.cores
    if args.device == "cuda":
        k = args.parallel or 4
        modes = {"seq": {"threads": n, "device": "cuda"},
                 f"par-{k}": {"threads": n, "runs_in_parallel": k, "device": "cuda"}}
        device_mode, reference = "seq", "seq"  # bench --device cuda measures one run alone on the GPU
    else:
        k = args.parallel or n
        modes = {"seq-1t": {"threads": 1, "device": "cpu"},
                 f"seq-{n}t": {"threads": n, "device": "cpu"},
                 f"par-{k}": {"threads": n, "runs_in_parallel": k, "device": "cpu"}}
        device_mode, reference = f"seq-{n}t", "seq-1t"  # bench measures one 1-thread run
    with tempfile.TemporaryDirectory(prefix="optbench-bench-parallel-") as tmp:
        plan_dir, ids = plan(Path(tmp), args.problem, args.runs, args.epochs, args.fake_train)
        print(f"{len(ids)} runs of {args.problem} ({args.epochs} epochs each) per task; {n} cores, {args.device}; "
              f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        walls: dict[str, list[float]] = {m: [] for m in modes}
        spans: dict[str, list[float]] = {m: [] for m in modes}
        names = list(modes)
        for r in range(args.rounds):
            for m in names[r % len(names):] + names[:r % len(names)]:
                wall, span = run_task(plan_dir, Path(tmp) / m, ids, modes[m])
                walls[m].append(wall)
                spans[m].append(span)
                print(f"  round {r + 1}: {m:<8} {wall:7.1f} s  ({len(ids) / wall * 3600:8.0f} runs/h; "
                      f"training span {span:.1f} s)", flush=True)
    rph = {m: len(ids) / min(w) * 3600 for m, w in walls.items()}
    span_rph = {m: len(ids) / min(w) * 3600 for m, w in spans.items()}
    print(f"\nruns per hour (best round), {args.problem}, {len(ids)} runs x {args.epochs} epochs, whole task "
          f"(process start, plan, HDF5, checkpoints) included; load average after: {os.getloadavg()[0]:.2f}")
    for m, v in rph.items():
        print(f"  {m:<8} {v:9.0f} runs/h")
    vs_device = rph[f"par-{k}"] / rph[device_mode]
    vs_one = rph[f"par-{k}"] / rph[reference]
    print(f"  par-{k} / {device_mode} = {vs_device:.2f}x   ({k} runs at once vs one run using the whole device"
          + ("; goal >= 1.6)" if args.device == "cpu" else ")"))
    if reference != device_mode:
        print(f"  par-{k} / {reference} = {vs_one:.2f}x   ({k} runs at once vs one 1-thread run alone: parallel_speedup)")
    print(f"  training spans only (first run's start to last run's end; no process start-up): par-{k} / "
          f"{device_mode} = {span_rph[f'par-{k}'] / span_rph[device_mode]:.2f}x"
          + (f", par-{k} / {reference} = {span_rph[f'par-{k}'] / span_rph[reference]:.2f}x" if reference != device_mode
             else "") + " (parallel_speedup is the whole task's: the cost model adds the start-up per task)")
    if args.update_device:
        from optbench import estimate

        cmd = "python benchmarks/bench_parallel.py " + " ".join(argv if argv is not None else sys.argv[1:])
        estimate.update_device(args.update_device, runs_in_parallel=k, parallel_speedup=round(vs_one, 3),
                               parallel_command=cmd)
        print(f"updated {args.update_device}: runs_in_parallel = {k}, parallel_speedup = {vs_one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
