"""The CUDA path, checked on a machine with a GPU in one short run (what CPU-only CI cannot check).

    .venv/bin/python benchmarks/gpu_check.py [--device cuda] [--problems ...] [--epochs 3]

For each problem (the offline ones by default; the published ones run on small fake data sets in
their real formats with their real models, as ``optbench bench`` does), it trains one short run
with :func:`optbench.trainer.train_run` on the device and checks, printing one line per problem:

- the run finishes with finite losses and its training loss goes down (data, model and optimizer
  live on the device; the step losses are folded on the device every ``MB_FLUSH_STEPS_GPU`` steps);
- the same run on the CPU from the same initialisation agrees on the first evaluation (before any
  step: the model, data and evaluation are the same function on both) to 1e-4 relative, FP32;
- the run interrupted in its second epoch and resumed from the checkpoint ends with the same
  evaluation rows (max relative difference printed; bit-identical expected: deterministic kernels are
  requested for this check, and one without a deterministic version warns);
- ``torch.cuda.max_memory_allocated`` of the run.

First, one worker task (:class:`optbench.worker.ChunkRunner`) on a tiny study with ``device = "cuda"``:
its runs must record ``device = cuda`` and ``precision = fp32``. Exit status 1 if any check fails.
With ``--device cpu`` it runs the same checks on the CPU (how it is tested without a GPU).
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optbench.testing import MemorySink, Stop, StopAtStep  # noqa: E402  (the checkout, not an installed copy)

DEFAULT = ["quadratic_deep", "digits_mlp", "mnist1d_mlp", "shakespeare_char_rnn", "uniform_tokens_lm",
           "mnist_vae", "fmnist_2c2d", "cifar10_3c3d", "cifar100_allcnnc", "svhn_wrn164", "tolstoi_char_rnn"]
METRICS = ("minibatch_loss", "train_loss", "valid_loss", "test_loss")


def record_for(problem: str, data_dir: Path, epochs: int, steps_per_epoch: int, device: str):
    from optbench import bench
    from optbench.record import RunRecord, canonical_items

    setup = bench.make_setup(problem, 2 * steps_per_epoch, data_dir, device)
    rec = bench._record(setup)
    return RunRecord(**{**rec.__dict__, "num_epochs": epochs, "problem_args": canonical_items(setup.args)}), setup


def train(rec, device: str, interrupt=None, saved: dict | None = None, sink: MemorySink | None = None):
    from optbench.trainer import train_run

    saved = {} if saved is None else saved
    sink = sink or MemorySink()

    def checkpoint(state):
        if state is None:
            return saved.get("s")
        saved["s"] = state
        return None

    status = train_run(rec, sink=sink, checkpoint=checkpoint, interrupt=interrupt, device=device,
                       checkpoint_every_s=1e9, checkpoint_overhead=1.0)
    return status, sink


class FirstRow(MemorySink):
    """Stops a run at its first row (the evaluation before any step): the CPU comparison needs nothing
    more, and training the CPU run's epoch (and evaluating the GPU-sized splits twice) took 75-140 s
    for the two largest convnets on a 2-core CPU, time the GPU would sit idle."""

    class Enough(Exception):
        pass

    def append(self, row) -> None:
        super().append(row)
        raise FirstRow.Enough


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def check_problem(problem: str, tmp: Path, device: str, epochs: int) -> tuple[bool, str]:
    import torch

    d = tmp / problem
    d.mkdir()
    rec, setup = record_for(problem, d, epochs, 4, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    status, sink = train(rec, device)
    wall = time.perf_counter() - t
    rows = sink.array()
    problems = []
    if status != "finished" or not all(np.all(np.isfinite(rows[m][1:])) for m in METRICS):
        problems.append(f"status {status}, non-finite losses")
    if not rows["train_loss"][-1] < rows["train_loss"][0]:
        problems.append(f"train loss {rows['train_loss'][0]:.4g} -> {rows['train_loss'][-1]:.4g}")
    cpu_sink = FirstRow()
    try:
        train(rec, "cpu", sink=cpu_sink)
    except FirstRow.Enough:
        pass
    first = rel_diff(np.array([rows[m][0] for m in METRICS[1:]]),
                     np.array([cpu_sink.array()[m][0] for m in METRICS[1:]]))
    if not first < 1e-4:
        problems.append(f"first evaluation differs from the CPU's by {first:.2g} (relative)")
    saved: dict = {}
    resumed = MemorySink()
    try:
        train(rec, device, StopAtStep(setup.steps_per_epoch + 2), saved, resumed)
        problems.append("the interrupt did not stop the run")
    except Stop:
        pass
    resumed.rows.append(resumed.rows[-1])  # a row after the checkpoint must be dropped on resume
    train(rec, device, None, saved, resumed)
    res = resumed.array()
    resume_diff = max(rel_diff(res[m][1:], rows[m][1:]) for m in METRICS) if len(res) == len(rows) else math.inf
    if not resume_diff < 1e-4:
        problems.append(f"resumed run differs by {resume_diff:.2g} (relative)")
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    line = (f"{problem:<22} {rec.num_epochs} epochs x {setup.steps_per_epoch} steps in {wall:6.2f} s; "
            f"first eval vs CPU {first:.1e}; resume {'bit-identical' if resume_diff == 0 else f'{resume_diff:.1e}'}; "
            f"peak {mem:.0f} MiB")
    return not problems, line + ("" if not problems else "  FAILED: " + "; ".join(problems))


def check_worker(tmp: Path, device: str) -> tuple[bool, str]:
    import h5py

    from optbench import planner
    from optbench.study import load_study
    from optbench.worker import ChunkRunner

    toml = tmp / "study.toml"
    toml.write_text('name = "gpu-check"\nproblems = ["digits_mlp"]\noptimizers = ["adam", "sgd"]\n'
                    'schedules = ["none"]\n[problem_settings.digits_mlp]\nnum_epochs = 2\n[oneshot]\nseeds = [0]\n')
    d = tmp / "study"
    df = planner.write_plan(load_study(toml), d, progress=lambda m: None)
    ids = list(df["run_id"])
    out = ChunkRunner()(str(d), "task-gpu", ids, {"threads": 4, "device": device})
    with h5py.File(d / "results" / "task-gpu.h5") as f:
        attrs = [dict(f["runs"][r].attrs) for r in ids]
    ok = (sorted(out["trained"]) == sorted(ids) and all(str(a["device"]) == device.split(":")[0] for a in attrs)
          and all(str(a["precision"]) == "fp32" for a in attrs))
    return ok, (f"worker task: {len(out['trained'])}/{len(ids)} runs trained, devices "
                f"{sorted({str(a['device']) for a in attrs})}, precision {sorted({str(a['precision']) for a in attrs})}"
                + ("" if ok else "  FAILED"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--problems", nargs="+", default=DEFAULT)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args(argv)
    import torch

    from optbench import numerics

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("gpu_check: torch sees no GPU (CUDA_VISIBLE_DEVICES, driver?)")
            return 1
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    numerics.configure("fp32")
    # deterministic kernels where torch has them (this check only; runs use the profile's settings; the
    # script sets CUBLAS_WORKSPACE_CONFIG): a resumed run is then expected bit-identical. A kernel
    # without a deterministic version only warns, and its difference stays within the 1e-4 tolerance.
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    ok_all = True
    with tempfile.TemporaryDirectory(prefix="optbench-gpu-check-") as tmp:
        ok, line = check_worker(Path(tmp), args.device)  # first: cheap, and not lost if a time limit comes
        ok_all &= ok
        print(line, flush=True)
        for p in args.problems:
            ok, line = check_problem(p, Path(tmp), args.device, args.epochs)
            ok_all &= ok
            print(line, flush=True)
    print("all checks passed" if ok_all else "SOME CHECKS FAILED")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
