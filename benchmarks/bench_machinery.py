"""Scale of the machinery: plan, submit and status of the 53,760-run Crowded Valley study.

    .venv/bin/python benchmarks/bench_machinery.py [plan] [submit] [status] [--dir DIR] [--repeats 3]

Each part runs the real ``optbench`` command in a fresh process (interpreter start and imports
included), prints its wall time against the issue's goal, and a ratio against a baseline measured
in the same run where one is meaningful:

- **plan** — ``optbench plan jobs/crowded_valley.toml -o DIR`` (goal < 2 s). Baseline: the
  planner as it was before issue 8 (run ids through ``dataclasses.asdict`` + ``json.dumps`` per
  run, variable-length HDF5 strings, reload check through ``record_from_row`` per row), kept
  below as ``baseline_*`` and timed in this process next to the current code.
- **submit** — ``optbench submit DIR --dry-run`` with a Slurm profile, ``max_array_size = 1001``
  (goal < 30 s; the dry run stops where ``sbatch`` would be called): first on the fresh plan
  (40,800 runs to submit, the 12,960 re-runs wait for tuning results), then with every re-run
  resolved (all 53,760 runs). The number of arrays (= sbatch calls) it reports is checked against
  ``dispatch.predict_arrays``. Needs no data: empty data directories satisfy the pre-submit check.
- **status** — ``optbench status DIR`` on synthetic result files for all 53,760 runs (10 runs per
  task file, 4 evaluation rows each, written by ``benchmarks/synthetic_results.py`` through
  :class:`optbench.storage.TaskFile`'s own calls, so they carry the per-file summary as a worker's
  files do; generated once into ``--dir`` and reused, regenerated if they lack the summary). Cold
  (no scan cache: every file opened, its summary read) and warm (the cache from the cold call);
  goal < 5 s cold (issue 8). Baseline, in the same run and interleaved: ``optbench status DIR
  --full-scan`` (no cache, no summaries: every run's group and attributes read, as before issue 8).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OPTBENCH = [sys.executable, "-m", "optbench"]
STUDY = ROOT / "jobs" / "crowded_valley.toml"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return wall, out.stdout


def _fmt(walls: list[float]) -> str:
    return f"best {min(walls):.2f} s, median {statistics.median(walls):.2f} s over {len(walls)}"


# ------------------------------------------------------------------ the planner before issue 8
def baseline_frame(records):
    """records_to_frame as it was: a dict per run, ids through RunRecord.run_id."""
    import pandas as pd

    from optbench.planner import RECORD_COLUMNS

    rows = []
    for r in records:
        row = {c: getattr(r, c) for c in RECORD_COLUMNS if c not in ("run_id", "problem_args", "schedule_args")}
        row["run_id"] = r.run_id
        row["problem_args"] = json.dumps(dict(r.problem_args), sort_keys=True)
        row["schedule_args"] = json.dumps(dict(r.schedule_args), sort_keys=True)
        for k, v in r.hparams:
            row[f"hp_{k}"] = float(v)
        rows.append(row)
    df = pd.DataFrame(rows)
    hp_cols = sorted(c for c in df.columns if c.startswith("hp_"))
    return df[list(RECORD_COLUMNS) + hp_cols]


def baseline_write(df, path: Path) -> None:
    import h5py
    import numpy as np

    from optbench.planner import INT_COLUMNS

    with h5py.File(path, "w", locking=False) as f:
        for col in df.columns:
            values = df[col].to_numpy()
            if col in INT_COLUMNS:
                f.create_dataset(col, data=values.astype(np.int64), compression="gzip")
            elif col.startswith("hp_"):
                f.create_dataset(col, data=values.astype(np.float64), compression="gzip")
            else:
                f.create_dataset(col, data=values.astype(object), dtype=h5py.string_dtype(), compression="gzip")


def baseline_verify(df) -> None:
    from optbench.planner import record_from_row

    for row in df.to_dict("records"):
        record_from_row(row).run_id  # noqa: B018 - the work being timed


def bench_plan(work: Path, repeats: int) -> None:
    from optbench import planner
    from optbench.study import load_study

    print("== plan: optbench plan jobs/crowded_valley.toml -o DIR (53,760 runs); goal < 2 s", flush=True)
    walls = []
    for i in range(repeats):
        d = work / f"plan-{i}"
        shutil.rmtree(d, ignore_errors=True)
        w, out = timed(OPTBENCH + ["plan", str(STUDY), "-o", str(d)])
        walls.append(w)
        assert "53760 runs" in out, out
    print(f"  optbench plan (fresh process, imports included): {_fmt(walls)}  -> "
          f"{'meets' if min(walls) < 2 else 'MISSES'} the 2 s goal")
    w, _ = timed(OPTBENCH + ["plan", str(STUDY), "--dry-run"])
    print(f"  optbench plan --dry-run: {w:.2f} s")
    # in-process, current code against the pre-issue-8 code, interleaved
    study = load_study(STUDY)
    cur, base, cur_v, base_v = [], [], [], []
    for i in range(repeats):
        t = time.perf_counter()
        df = planner.write_plan(study, work / "inproc-new", progress=lambda m: None)
        cur.append(time.perf_counter() - t)
        t = time.perf_counter()
        bdf = baseline_frame(planner.expand(study))
        baseline_write(bdf, work / "inproc-old.h5")
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        planner.verify_ids(df, work / "x")
        cur_v.append(time.perf_counter() - t)
        t = time.perf_counter()
        baseline_verify(df)
        base_v.append(time.perf_counter() - t)
    print(f"  in-process plan+write, current: {_fmt(cur)}; before issue 8: {_fmt(base)}; "
          f"speed-up {min(base) / min(cur):.1f}x")
    print(f"  plan reload check (recompute 53,760 ids), current: {_fmt(cur_v)}; before: {_fmt(base_v)}; "
          f"speed-up {min(base_v) / min(cur_v):.1f}x")
    print(f"  plan.h5 size: {(work / 'plan-0' / 'plan.h5').stat().st_size / 1e6:.1f} MB "
          f"(before: {(work / 'inproc-old.h5').stat().st_size / 1e6:.1f} MB)")


# ------------------------------------------------------------------ submit --dry-run
def fake_data_root(work: Path) -> Path:
    from optbench.problems.datasets import FOLDERS

    root = work / "data"
    for folder in FOLDERS.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def bench_submit(work: Path, repeats: int) -> None:
    from optbench import dispatch, planner
    from optbench.profiles import load_profile

    print("\n== submit: optbench submit DIR --dry-run, MaxArraySize 1001; goal < 30 s", flush=True)
    d = work / "submit"
    shutil.rmtree(d, ignore_errors=True)
    timed(OPTBENCH + ["plan", str(STUDY), "-o", str(d)])
    env = {"OPTBENCH_DATA_DIR": str(fake_data_root(work))}
    profiles = {"runs_per_task = 10 (quadratic 200)": "runs_per_task = 10\n[problems.quadratic_deep]\nruns_per_task = 200\n",
                "runs_per_task = 2": "runs_per_task = 2\n"}
    plan = planner.load_plan(d, verify=False)
    for resolved in (False, True):
        if resolved:  # every re-run resolved, as after the tuning runs: all 53,760 runs go out
            tuning = plan[plan["kind"] == "tuning"].iloc[0]
            hp = {c[3:]: float(tuning[c]) for c in plan.columns if c.startswith("hp_") and tuning[c] == tuning[c]}
            res = {rid: {"hparams": hp, "source_run": tuning["run_id"]} for rid in plan[plan["kind"] == "rerun"]["run_id"]}
            (d / planner.RESOLVED_FILE).write_text(json.dumps(res))
        todo = plan if resolved else plan[plan["kind"] != "rerun"]
        counts = todo.groupby("problem").size().to_dict()
        for label, body in profiles.items():
            prof_path = work / "profile.toml"
            prof_path.write_text(f'name = "bench"\nexecutor = "slurm"\nmax_array_size = 1001\n{body}')
            predicted = dispatch.predict_arrays(counts, load_profile(prof_path), 1001)
            walls = []
            for _ in range(repeats):
                w, out = timed(OPTBENCH + ["submit", str(d), "--profile", str(prof_path), "--dry-run"], env)
                walls.append(w)
            m = re.search(r"submitting (\d+) runs as (\d+) tasks in (\d+) array", out)
            runs, tasks, arrays = (int(x) for x in m.groups())
            ok = "==" if arrays == predicted else "!="
            print(f"  {runs:>6} runs, {label:<34}: {tasks:>6} tasks in {arrays:>3} arrays = sbatch calls "
                  f"{ok} {predicted} predicted; {_fmt(walls)} -> {'meets' if max(walls) < 30 else 'MISSES'} the 30 s goal")
            if arrays != predicted:
                raise SystemExit("the dry run's array count differs from dispatch.predict_arrays")
    (d / planner.RESOLVED_FILE).unlink()


# ------------------------------------------------------------------ status
def _has_summary(path: Path) -> bool:
    from optbench.storage import open_h5, read_summary

    try:
        with open_h5(path, "r") as f:
            return read_summary(f.id) is not None
    except OSError:
        return False


def bench_status(work: Path, repeats: int) -> None:
    from benchmarks.synthetic_results import plan_runs, write_results
    from optbench.storage import SCAN_CACHE, result_files

    print("\n== status: optbench status DIR, 53,760 finished runs in 5,376 result files; goal < 5 s cold", flush=True)
    d = work / "status"
    files = result_files(d)
    if not (d / "plan.h5").exists() or len(files) != 5376 or not _has_summary(files[0]) or not _has_summary(files[-1]):
        shutil.rmtree(d, ignore_errors=True)
        timed(OPTBENCH + ["plan", str(STUDY), "-o", str(d)])
        t = time.perf_counter()
        n = write_results(d, plan_runs(d), runs_per_file=10, rows=4, processes=os.cpu_count() or 1)
        print(f"  generated {n} synthetic result files in {time.perf_counter() - t:.0f} s (kept in {d} for reuse)")
        time.sleep(2.5)  # files younger than 2 s are never cached
    full, cold, warm = [], [], []
    for _ in range(repeats):
        (d / SCAN_CACHE).unlink(missing_ok=True)
        w, out = timed(OPTBENCH + ["status", str(d), "--full-scan"])
        full.append(w)
        assert "53760 done" in out and not (d / SCAN_CACHE).exists(), out
        w, out = timed(OPTBENCH + ["status", str(d)])
        cold.append(w)
        assert "53760 done" in out, out
        w, out = timed(OPTBENCH + ["status", str(d)])
        warm.append(w)
        assert "53760 done" in out, out
    print(f"  baseline, --full-scan (every run of every file read, as before issue 8): {_fmt(full)}")
    print(f"  cold (no scan cache; each file's summary read): {_fmt(cold)} -> "
          f"{'meets' if min(cold) < 5 else 'MISSES'} the 5 s goal; full-scan/cold = {min(full) / min(cold):.1f}x")
    print(f"  warm (unchanged files from the scan cache): {_fmt(warm)}; cold/warm = {min(cold) / min(warm):.1f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", default=["plan", "submit", "status"], choices=["plan", "submit", "status"])
    ap.add_argument("--dir", default="/tmp/optbench-bench-machinery", help="work directory (status data is reused)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    for part in args.parts:
        {"plan": bench_plan, "submit": bench_submit, "status": bench_status}[part](work, args.repeats)
    print(f"load average: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
