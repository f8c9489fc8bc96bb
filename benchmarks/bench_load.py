"""Loading benchmark: a synthetic study with the Crowded Valley shape, in optbench's HDF5 layout and
in the published one-JSON-per-run layout, loaded into the long table.

    python benchmarks/bench_load.py                # full size: 53,760 runs, up to 351 evaluations each
    python benchmarks/bench_load.py --runs 2000    # a proportional sample of the same shape

Shape (spec §1.4): 8 problems (epochs 100, 50, 100, 100, 100, 350, 160, 200, so 101…351 evaluations
per run; three problems report no accuracy) × 15 optimizers × 4 schedules × 112 runs (10 one-shot,
75 tuning trials, 27 re-runs). Values are random (incompressible, like real curves).
HDF5: ``--runs-per-file`` runs per task file (default 10, 5,376 files), written like the worker
writes them (resizable chunked datasets). JSON: DeepOBS' tree and fields (compact, NaN as NaN).

Each load runs in a fresh process; reported: wall time, peak resident memory of that process
(``resource.getrusage``; optionally ``--tracemalloc``, which is slower), rows of the long table,
and the JSON / HDF5 time ratio. Targets (issue 6): HDF5 load < 60 s and < 4 GB at full size.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.deepobs import json_document, json_path  # noqa: E402
from analysis.synthetic import Run, eval_rows, make_record, write_results  # noqa: E402

PROBLEMS = {  # name: (epochs, has accuracy, batch size)
    "quadratic_deep": (100, False, 128), "mnist_vae": (50, False, 64), "fmnist_2c2d": (100, True, 128),
    "cifar10_3c3d": (100, True, 128), "fmnist_vae": (100, False, 64), "cifar100_allcnnc": (350, True, 256),
    "svhn_wrn164": (160, True, 128), "tolstoi_char_rnn": (200, True, 50)}
OPTIMIZERS = {"amsbound": 6, "amsgrad": 4, "adabelief": 4, "adabound": 6, "adadelta": 3, "adagrad": 2, "adam": 4,
              "lookahead_momentum": 4, "lookahead_radam": 6, "momentum": 2, "nag": 2, "nadam": 4, "radam": 4,
              "rmsprop": 4, "sgd": 1}  # name: number of hyperparameters
SCHEDULES = ("none", "cosine", "cosine_wr", "ltr")
HP_NAMES = ("lr", "beta1", "beta2", "eps", "final_lr", "gamma")
BUDGETS = (("small", 25), ("medium", 50), ("large", 75))
FULL = 8 * 15 * 4 * 112


def specs():
    """Every run of the study as (record kwargs, epochs, has accuracy), in plan order."""
    for prob, (epochs, acc, bs) in PROBLEMS.items():
        for opt, n_hp in OPTIMIZERS.items():
            for sched in SCHEDULES:
                base = dict(study="crowded_valley", problem=prob, optimizer=opt, schedule=sched, batch_size=bs,
                            num_epochs=epochs)
                for s in range(42, 52):
                    yield dict(base, budget="oneshot", kind="oneshot", trial=-1, seed=s, hparams={"lr": 1e-3}), epochs, acc
                for k in range(75):
                    budget = next(b for b, n in BUDGETS if k < n)
                    hp = {h: 10.0 ** -(1 + (k * 7 + j * 3) % 40 / 10) for j, h in enumerate(HP_NAMES[:n_hp])}
                    yield dict(base, budget=budget, kind="tuning", trial=k, seed=42, hparams=hp), epochs, acc
                for b, _ in BUDGETS:
                    for s in range(43, 52):
                        yield dict(base, budget=b, kind="rerun", trial=-1, seed=s, hparams={"lr": 0.01}), epochs, acc


def generate(out: Path, n_runs: int, runs_per_file: int, json_too: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    keep = set(np.unique(np.linspace(0, FULL - 1, n_runs).astype(np.int64)).tolist())
    stats = {"runs": 0, "evals": 0}
    json_root = out / "deepobs" / "results_main"

    def runs():
        for i, (rec_kw, epochs, acc) in enumerate(specs()):
            if i not in keep:
                continue
            n = epochs + 1
            cols = {f: rng.random(n) for f in ("train_loss", "valid_loss", "test_loss", "minibatch_loss")}
            if acc:
                cols.update({f: rng.random(n) for f in ("train_accuracy", "valid_accuracy", "test_accuracy")})
            rows = eval_rows(n, step=np.arange(n) * 390, lr=1e-3, wall_time=np.arange(n) * 10.0, **cols)
            rec = make_record(**rec_kw)
            if json_too:
                p = json_path(json_root, rec)
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(json.dumps(json_document(rec, rows)))
            stats["runs"] += 1
            stats["evals"] += n
            yield Run(rec, rows)

    files = write_results(out / "h5study", runs(), runs_per_file=runs_per_file)
    stats["files"] = len(files)
    return stats


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(kind: str, path: str, use_tracemalloc: bool) -> dict:
    """Run in a fresh process: load, and report time and peak memory of this process."""
    import analysis

    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    df = analysis.load_results(path) if kind == "h5" else analysis.import_deepobs(path)
    dt = time.perf_counter() - t
    out = {"seconds": dt, "rows": len(df), "runs": int(df["run_id"].nunique()),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_before_mb": base / 1024, "table_mb": df.memory_usage(deep=False).sum() / 2**20}
    if use_tracemalloc:
        out["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    return out


def child(kind: str, path: Path, use_tracemalloc: bool) -> dict:
    r = subprocess.run([sys.executable, __file__, "--_measure", kind, str(path)] + (["--tracemalloc"] if use_tracemalloc else []),
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{kind} load failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=FULL, help=f"runs to generate (default {FULL:,}, the full study)")
    ap.add_argument("--runs-per-file", type=int, default=10)
    ap.add_argument("--dir", default=None, help="where to write the study (default: a temporary folder, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--reuse", action="store_true", help="load the files already in --dir, generate nothing")
    ap.add_argument("--no-json", action="store_true", help="skip the JSON comparison")
    ap.add_argument("--tracemalloc", action="store_true", help="also report tracemalloc peaks (slower loads)")
    ap.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure:
        print(json.dumps(measure(args._measure[0], args._measure[1], args.tracemalloc)))
        return 0
    n = min(max(1, args.runs), FULL)
    out = Path(args.dir or tempfile.mkdtemp(prefix="optbench-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.reuse:
            if not args.dir or not (out / "h5study").is_dir():
                raise SystemExit("--reuse needs --dir with a study generated before (use --keep or --dir)")
            n = sum(1 for _ in (out / "h5study" / "results").glob("*.h5")) * args.runs_per_file
        else:
            t = time.perf_counter()
            st = generate(out, n, args.runs_per_file, json_too=not args.no_json)
            print(f"generated {st['runs']:,} runs, {st['evals']:,} evaluations in {time.perf_counter() - t:.0f} s: "
                  f"{st['files']:,} HDF5 files ({du(out / 'h5study') / 2**20:.0f} MB)"
                  + ("" if args.no_json else f", {st['runs']:,} JSON files ({du(out / 'deepobs') / 2**20:.0f} MB)"),
                  flush=True)
        h5 = child("h5", out / "h5study", args.tracemalloc)
        print(f"load_results (HDF5):            {h5['seconds']:7.1f} s, peak RSS {h5['peak_rss_mb']:6.0f} MB "
              f"(before loading {h5['rss_before_mb']:.0f} MB), table {h5['table_mb']:.0f} MB, {h5['rows']:,} rows, "
              f"{h5['runs']:,} runs" + (f", tracemalloc peak {h5['tracemalloc_peak_mb']:.0f} MB" if args.tracemalloc else ""),
              flush=True)
        if not args.no_json:
            js = child("json", out / "deepobs", args.tracemalloc)
            print(f"import_deepobs (JSON per run):  {js['seconds']:7.1f} s, peak RSS {js['peak_rss_mb']:6.0f} MB, "
                  f"{js['rows']:,} rows, {js['runs']:,} runs", flush=True)
            assert js["rows"] == h5["rows"], "the two formats must give the same table"
            print(f"JSON / HDF5 load time: {js['seconds'] / h5['seconds']:.1f}x")
        if h5["runs"] == FULL:
            ok = h5["seconds"] < 60 and h5["peak_rss_mb"] < 4096
            print(f"target (full size: < 60 s, < 4 GB): {'met' if ok else 'NOT met'}")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(out, ignore_errors=True)
        elif args.keep or args.dir:
            print(f"files kept in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
