"""Issue 8: the benchmark harness, many runs per task, fast run ids, the status cache.

Nothing here asserts a timing: the benchmarks print ratios measured in the same run; these tests
check that the machinery is correct (and keep under ~30 s on a shared 2-core machine).
"""
from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from optbench import planner
from optbench.errors import OptbenchError, PlanError
from optbench.profiles import ProfileError, load_profile
from optbench.record import RunRecord
from optbench.storage import SCAN_CACHE, TaskFile, scan_results
from optbench.study import load_study
from tests.conftest import ROOT

# ------------------------------------------------------------------ planner: fast ids, format 2


def test_fast_run_ids_equal_reference_on_the_full_study():
    """Every id of the 53,760-run plan equals RunRecord.run_id (the reference implementation)."""
    study = load_study(ROOT / "jobs" / "crowded_valley.toml")
    records = list(planner.expand(study))
    fast = planner.fast_run_ids(records)
    step = 7  # the reference costs ~100 µs a run: every 7th run plus every kind/optimizer/problem
    assert all(fast[i] == records[i].run_id for i in range(0, len(records), step))
    seen = set()
    for i, r in enumerate(records):
        key = (r.problem, r.optimizer, r.kind)
        if key not in seen:
            seen.add(key)
            assert fast[i] == r.run_id


def test_fast_run_ids_edge_cases():
    base = RunRecord("s ünïcode \"q\"", "fmnist_2c2d", "adam", "none", "oneshot", "oneshot", -1, 42, 128, 100,
                     hparams=(("eps", 1e-8), ("lr", -0.0), ("k", 5), ("flag", True)),
                     problem_args=(("data_dir", "/x"), ("max_train", 0), ("augment", True), ("name", "a/b")),
                     schedule_args=(("warmup_fraction", 0.1),))
    import dataclasses

    records = [base, dataclasses.replace(base, kind="rerun", budget="small", hparams=()),
               dataclasses.replace(base, hparams=(("lr", float("inf")),)),
               dataclasses.replace(base, problem_args=base.problem_args)]  # shared tuples: cached encodings
    assert planner.fast_run_ids(records) == [r.run_id for r in records]


def test_plan_roundtrip_format_2_and_hand_edit_detected(tmp_path):
    """Lookahead's integer k no longer breaks the reload check; a hand edit of any column is caught."""
    study = load_study(ROOT / "jobs" / "crowded_valley.toml")
    import dataclasses

    sub = dataclasses.replace(study, problems=("quadratic_deep",), optimizers=("lookahead_momentum", "adam"))
    df = planner.write_plan(sub, tmp_path / "s", progress=lambda m: None)
    back = planner.load_plan(tmp_path / "s")  # verifies every id
    pd.testing.assert_frame_equal(back[df.columns].reset_index(drop=True), df.reset_index(drop=True))
    import h5py

    with h5py.File(tmp_path / "s" / "plan.h5", "a") as f:
        assert f.attrs["format_version"] == 2
        col = f["schedule"][()]
        col[5] = b"cosine" if col[5] != b"cosine" else b"none"
        f["schedule"][...] = col
    with pytest.raises(PlanError, match="edited by hand"):
        planner.load_plan(tmp_path / "s")


# ------------------------------------------------------------------ status cache and lease listing


def test_status_cache_reuses_unchanged_files_and_sees_changes(tiny_study, tmp_path):
    from optbench.worker import ChunkRunner

    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    ids = list(df[df.kind != "rerun"].run_id)
    ChunkRunner()(str(study_dir), "task-a", ids[:2])
    old = time.time() - 60
    for p in (study_dir / "results").glob("*.h5"):
        os.utime(p, (old, old))  # "settled": old enough to be cached
    fresh, _ = scan_results(study_dir)
    first, _ = scan_results(study_dir, cache=True)
    assert (study_dir / SCAN_CACHE).exists() and first == fresh
    cached, _ = scan_results(study_dir, cache=True)
    assert cached == fresh
    # the file changes (a status flips): its stat changes, so it is read again
    TaskFile(study_dir / "results" / "task-a.h5").set_status(ids[0], "failed", error="boom")
    after, _ = scan_results(study_dir, cache=True)
    assert after[ids[0]]["status"] == "failed" and after[ids[0]]["error"] == "boom"
    # a corrupt cache is ignored
    (study_dir / SCAN_CACHE).write_text("{not json")
    again, _ = scan_results(study_dir, cache=True)
    assert again == scan_results(study_dir)[0]


# ------------------------------------------------------------------ many runs per task


def test_profile_runs_in_parallel_key(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('executor = "slurm"\nruns_in_parallel = 2\n[problems.digits_mlp]\nruns_in_parallel = 4\n')
    prof = load_profile(p)
    assert prof.defaults.runs_in_parallel == 2 and prof.resources("digits_mlp").runs_in_parallel == 4
    assert load_profile(None).defaults.runs_in_parallel == 1
    p.write_text("runs_in_parallel = 0\n")
    with pytest.raises(ProfileError, match="runs_in_parallel"):
        load_profile(p)


def test_parallel_task_trains_every_run_once_in_its_own_files(tiny_study, tmp_path, monkeypatch):
    """Two processes, each its own result file; every run trained exactly once; a re-run task skips all."""
    from optbench import startup
    from optbench.worker import ChunkRunner

    monkeypatch.setattr(startup, "_settled", False)  # as in a task's fresh process

    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    ids = list(df[df.kind != "rerun"].run_id)
    gc.disable()  # as optbench.launch leaves it: the task's parent process turns it on again
    try:
        out = ChunkRunner()(str(study_dir), "task-p", ids, {"runs_in_parallel": 2, "threads": 2, "device": "cpu"})
        assert gc.isenabled()
    finally:
        gc.enable()
    assert sorted(out["trained"]) == sorted(ids) and out["parts"] == 2 and not out["failed"]
    files = sorted(p.name for p in (study_dir / "results").glob("*.h5"))
    assert files == ["task-p+p0.h5", "task-p+p1.h5"]
    per_file = [TaskFile(study_dir / "results" / f).run_ids() for f in files]
    assert sorted(per_file[0] + per_file[1]) == sorted(ids) and not set(per_file[0]) & set(per_file[1])
    states, bad = scan_results(study_dir)
    assert not bad and all(states[r]["status"] in ("finished", "diverged") for r in ids)
    again = ChunkRunner()(str(study_dir), "task-q", ids, {"threads": 1, "device": "cpu"})
    assert again["trained"] == [] and sorted(again["skipped"]) == sorted(ids)  # the part files count as done


def test_parallel_task_parent_imports_no_training_stack(tiny_study, tmp_path):
    """The parent of a parallel task only starts, signals and waits for its processes: in a fresh
    process (as an array task) it trains the whole chunk without importing torch, pandas or h5py,
    whose 0.3-0.45 s (pandas, h5py) would otherwise come before the processes could start."""
    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    ids = list(df[df.kind != "rerun"].run_id)
    code = ("import json, sys; from optbench.worker import ChunkRunner; "
            "out = ChunkRunner()(sys.argv[1], 'task-p', json.loads(sys.argv[2]), "
            "{'runs_in_parallel': 2, 'threads': 2, 'device': 'cpu'}); "
            "print(json.dumps({'trained': sorted(out['trained']), "
            "'heavy': sorted(m for m in ('torch', 'pandas', 'h5py', 'numpy') if m in sys.modules)}))")
    r = subprocess.run([sys.executable, "-c", code, str(study_dir), json.dumps(ids)], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["trained"] == sorted(ids)
    assert not set(out["heavy"]) & {"torch", "pandas", "h5py"}, out["heavy"]


def test_checkpoint_every_epoch_profile_key_reaches_the_training_loop(tiny_study, tmp_path, monkeypatch):
    """Per-epoch checkpoints cost a tiny run a third of its time: the profile can turn them off per problem.
    With the key off, no checkpoint is written at an epoch end (only at the time interval or a signal)."""
    from optbench import checkpoint, dispatch
    from optbench.profiles import Profile, Resources
    from optbench.worker import ChunkRunner

    p = tmp_path / "p.toml"
    p.write_text('executor = "slurm"\n[problems.digits_mlp]\ncheckpoint_every_epoch = false\n')
    prof = load_profile(p)
    assert prof.defaults.checkpoint_every_epoch is True and prof.resources("digits_mlp").checkpoint_every_epoch is False
    p.write_text("checkpoint_every_epoch = 1\n")
    with pytest.raises(ProfileError, match="checkpoint_every_epoch"):
        load_profile(p)
    for bad in ("0", "1.5", "true", '"2%"'):
        p.write_text(f"checkpoint_overhead = {bad}\n")
        with pytest.raises(ProfileError, match="checkpoint_overhead"):
            load_profile(p)
    p.write_text("checkpoint_overhead = 0.05\n[problems.digits_mlp]\ncheckpoint_overhead = 1\n")
    prof = load_profile(p)
    assert prof.defaults.checkpoint_overhead == 0.05 and prof.resources("digits_mlp").checkpoint_overhead == 1

    saves = []
    real_save = checkpoint.CheckpointStore.save
    monkeypatch.setattr(checkpoint.CheckpointStore, "save", lambda self, rid, state: (saves.append(rid), real_save(self, rid, state)))
    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    ids = list(df[df.kind != "rerun"].run_id)[:3]
    assert len(ids) == 3
    epochs = int(df.set_index("run_id").loc[ids[0], "num_epochs"])
    assert epochs >= 2
    ChunkRunner()(str(study_dir), "task-on", ids[:1], {"threads": 1, "device": "cpu", "checkpoint_every_epoch": True,
                                                        "checkpoint_overhead": 1.0})
    assert len(saves) == epochs - 1  # after every epoch but the last
    saves.clear()
    out = ChunkRunner()(str(study_dir), "task-off", ids[1:2], {"threads": 1, "device": "cpu", "checkpoint_every_epoch": False})
    assert out["trained"] == ids[1:2] and saves == []
    # a checkpoint budget no write fits in: only the first epoch end (it measures the cost) is written
    ChunkRunner()(str(study_dir), "task-dear", ids[2:], {"threads": 1, "device": "cpu", "checkpoint_every_epoch": True,
                                                         "checkpoint_overhead": 1e-9})
    assert saves == ids[2:]

    # and dispatch builds each problem's arrays with its own value (passed to the task as an option)
    todo = pd.DataFrame({"run_id": ["a", "b"], "problem": ["digits_mlp", "other"]})
    prof = Profile(name="x", executor="slurm", defaults=Resources(),
                   problems={"digits_mlp": Resources(checkpoint_every_epoch=False, checkpoint_overhead=0.5)})
    arrays = dispatch.build_arrays(todo, prof, 1001)
    assert {a.problem: a.resources.checkpoint_every_epoch for a in arrays} == {"digits_mlp": False, "other": True}
    assert {a.problem: a.resources.checkpoint_overhead for a in arrays} == {"digits_mlp": 0.5, "other": 0.005}


def test_dispatch_passes_runs_in_parallel(tmp_path):
    from optbench import dispatch
    from optbench.profiles import Profile, Resources

    prof = Profile(name="x", executor="slurm", defaults=Resources(runs_per_task=4, runs_in_parallel=2))
    todo = pd.DataFrame({"run_id": [f"r{i}" for i in range(10)], "problem": ["p"] * 10})
    arrays = dispatch.build_arrays(todo, prof, 1001)
    assert [len(c) for c in arrays[0].chunks] == [4, 4, 2] and arrays[0].resources.runs_in_parallel == 2


# ------------------------------------------------------------------ optbench bench (smoke)


def test_bench_measures_three_loops_on_a_small_problem(tmp_path):
    import torch

    from optbench import bench

    threads = torch.get_num_threads()
    try:
        res = bench.run(["quadratic_deep"], steps=14, repeats=2, threads=1, progress=lambda m: None, fit_batch=(0.5,))
    finally:
        torch.set_num_threads(threads)
    r = res[0]
    assert set(r.steps_per_s) == {"optbench", "bare", "bare+eval", "naive"} and all(v > 0 for v in r.steps_per_s.values())
    assert r.steps_per_epoch == 1000 // 128 and r.timed_steps >= 14 and r.a_over_b > 0 and r.a_over_c > 0
    assert r.a_over_b_eval > 0 and r.a_over_c_run > 0
    assert "quadratic_deep" in bench.format_table(res)
    path = bench.write_device_profile(tmp_path / "dev.toml", res, "cpu", "test")
    from optbench import estimate

    dev = estimate.load_device(path)
    assert dev.measured and dev.problems["quadratic_deep"].batch_size == 128
    # --fit-batch 0.5: loop (a) also at B = 64; two points, so the line goes through both
    fit, speed = r.fit, dev.problems["quadratic_deep"]
    assert fit.batch_sizes == [128, 64] and fit.step_s[0] == pytest.approx(1 / r.steps_per_s["optbench"])
    assert speed.fitted and 0 < r.setup_s == pytest.approx(speed.setup_s, rel=1e-3)
    for b, t in zip(fit.batch_sizes, fit.step_s):
        assert speed.step_s(b) == pytest.approx(t, rel=1e-3) or fit.per_example == 0 or fit.fixed == 0
    estimate.update_device(path, runs_in_parallel=2, parallel_speedup=1.8)
    dev = estimate.load_device(path)
    assert dev.runs_in_parallel == 2 and dev.parallel_speedup == 1.8 and "quadratic_deep" in dev.problems


def test_epoch_chunks_take_the_first_checkpoint_out_and_spread_the_later_ones():
    """Loop (a)'s per-epoch training times from the run's stamps, by hand: 4 epochs; the row of
    epoch e is stamped at walls[e] and reaches the sink at appended[e]; checkpoints after epochs 1
    (always written: a per-run cost) and 2 (a grouped one: spread over the three timed epochs)."""
    from optbench.bench import epoch_chunks

    t0 = 100.0
    walls = [0.0, 1.0, 2.5, 4.0, 5.5]
    appended = [100.2, 101.2, 102.7, 104.2, 105.7]  # each evaluation 0.2 s
    saves = [(1, 0.05), (2, 0.3)]
    chunks, per_run = epoch_chunks(t0, walls, appended, saves)
    raw = [102.5 - 101.2, 104.0 - 102.7, 105.5 - 104.2]  # 1.3 s each, checkpoints included
    assert per_run == 0.05
    assert chunks == pytest.approx([raw[0] - 0.05 + 0.1, raw[1] - 0.3 + 0.1, raw[2] + 0.1])
    # without the first one (a resumed run) every checkpoint between timed epochs is spread
    chunks, per_run = epoch_chunks(t0, walls, appended, [(2, 0.3), (3, 0.6)])
    assert per_run == 0.0 and chunks == pytest.approx([1.3 + 0.3, 1.3 - 0.3 + 0.3, 1.3 - 0.6 + 0.3])
    assert sum(chunks) == pytest.approx(sum(raw))
    # row writes: after rows 0 (before the first timed epoch) and 4 (after the last) they are per
    # run; after row 2 (inside epoch 3's time) spread like a checkpoint
    chunks, per_run = epoch_chunks(t0, walls, appended, saves, [(0, 0.01), (2, 0.06), (4, 0.02)])
    assert per_run == pytest.approx(0.05 + 0.01 + 0.02)
    assert chunks == pytest.approx([raw[0] - 0.05 + 0.12, raw[1] - 0.36 + 0.12, raw[2] + 0.12])


def test_bare_loop_evaluation_leaves_the_weights_and_the_rng_alone(tmp_path):
    """Loop (b')'s evaluation is only an evaluation: the model's weights, its training mode and the
    global RNG are as before, so (b') trains exactly as (b)."""
    import torch

    from optbench import bench

    setup = bench.make_setup("digits_mlp", 4, tmp_path, "cpu")
    a, b = bench.BareLoop(setup, "cpu"), bench.BareLoop(setup, "cpu")
    torch.manual_seed(0)
    a.run(3)
    torch.manual_seed(0)
    b.run(1)
    before = torch.get_rng_state()
    b.evaluate()
    assert torch.equal(torch.get_rng_state(), before) and b.task.model.training
    b.run(2)
    for p, q in zip(a.task.model.parameters(), b.task.model.parameters()):
        assert torch.equal(p, q)


def test_bench_sizes_dataset_problems_on_fake_data(tmp_path):
    """The dataset problems get fake files in the real format and the real model; epochs of half the asked
    steps, and at least three timed epochs (their median is a round's speed: one epoch disturbed by the
    run's first checkpoint must not decide it)."""
    from optbench import bench

    for name in ("fmnist_2c2d", "tolstoi_char_rnn"):
        d = tmp_path / name
        d.mkdir()
        setup = bench.make_setup(name, 6, d, "cpu")
        assert setup.steps_per_epoch == 3 and setup.timed_epochs == 3 and setup.timed_steps == 9


def test_synthetic_results_match_status_layout(tiny_study, tmp_path):
    from benchmarks.synthetic_results import plan_runs, write_results
    from optbench.state import run_states

    study_dir = tmp_path / "s"
    planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    runs = plan_runs(study_dir)
    assert write_results(study_dir, runs, runs_per_file=3, rows=4, processes=1) == -(-len(runs) // 3)
    states, bad = run_states(study_dir, planner.load_plan(study_dir))
    assert not bad and (states["state"] == "finished").all() and (states["n_evals"] == 4).all()


def test_bench_study_measures_problems_as_the_study_sets_them_up(tmp_path):
    """`optbench bench --study`: the study's model settings and batch sizes, written under the key its
    estimate looks up (a 32-unit MLP is not the registry's 64-unit one)."""
    import torch

    from optbench import bench, estimate
    from optbench.cli import main

    study_file = tmp_path / "s.toml"
    study_file.write_text('name = "s"\nproblems = ["digits_mlp", "quadratic_deep"]\noptimizers = ["adam"]\n'
                          'schedules = ["none"]\n[problem_settings.digits_mlp]\nbatch_sizes = [16, 64]\nhidden = 32\n'
                          'num_epochs = 2\n[problem_settings.quadratic_deep]\nnum_epochs = 2\n[oneshot]\nseeds = [1]\n')
    study = load_study(study_file)
    threads = torch.get_num_threads()
    try:
        res = bench.run(["digits_mlp", "quadratic_deep"], steps=14, repeats=1, progress=lambda m: None, study=study,
                        threads=1)
    finally:
        torch.set_num_threads(threads)
    digits, quad = res
    assert digits.key == estimate.speed_key("digits_mlp", {"hidden": 32}) != "digits_mlp" and quad.key == "quadratic_deep"
    assert digits.batch_size == 64 and digits.fit.batch_sizes == [64, 16] and quad.fit is None
    assert digits.n_params == 64 * 32 + 32 + 32 * 10 + 10  # the study's 32 hidden units, not the registry's 64
    path = bench.write_device_profile(tmp_path / "dev.toml", res, "cpu", "test")
    dev = estimate.load_device(path)
    assert set(dev.problems) == {digits.key, "quadratic_deep"} and dev.problems[digits.key].fitted
    plan = planner.records_to_frame(planner.expand(study))
    est = estimate.estimate(plan, dev).set_index("problem")
    assert est.loc["digits_mlp", "measured_bs"] == 64 and est.loc["digits_mlp", "fitted"]
    # a study with other settings (48 units) has no entry: refused, not priced at the 32-unit speed
    other = planner.records_to_frame(planner.expand(load_study(tiny_study_file(tmp_path, hidden=48))))
    with pytest.raises(OptbenchError, match="digits_mlp"):
        estimate.estimate(other, dev)
    assert main(["bench", "--study", str(study_file), "--problems", "mnist1d_mlp"]) == 2  # a clear error, no bench


def tiny_study_file(tmp_path, hidden):
    p = tmp_path / f"h{hidden}.toml"
    p.write_text(f'name = "h"\nproblems = ["digits_mlp"]\noptimizers = ["adam"]\nschedules = ["none"]\n'
                 f'[problem_settings.digits_mlp]\nhidden = {hidden}\nnum_epochs = 1\n[oneshot]\nseeds = [1]\n')
    return p


PARALLEL_SIGNALLED = """
import os, signal, sys, threading
from optbench.worker import ChunkRunner
if __name__ == "__main__":  # spawn imports this file again in each process
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR2)).start()  # the processes are still starting
    ChunkRunner()(sys.argv[1], "task-sig", sys.argv[2:], {"runs_in_parallel": 2, "threads": 2, "device": "cpu"})
    print("NOT INTERRUPTED", flush=True)
"""


def run_signalled_parallel_task(tiny_study, tmp_path, script_text: str, env: dict | None = None) -> str:
    """Run ``script_text`` (a parallel task that a signal reaches while its processes start) on the tiny
    study and check what must hold however the signal came: the parent exits as interrupted (as a
    requeue would without submitit), no process died otherwise, both processes noted the signal (none
    was killed by its default action), and no run trained to its end. Returns the output."""
    import signal

    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    ids = list(df[df.kind != "rerun"].run_id)
    script = tmp_path / "signalled.py"
    script.write_text(script_text)
    r = subprocess.run([sys.executable, str(script), str(study_dir), *ids], capture_output=True, text=True,
                       timeout=300, env={**os.environ, **(env or {})})
    out = r.stdout + r.stderr
    assert r.returncode == 128 + signal.SIGUSR2, out  # the parent: interrupted, no process died otherwise
    assert "NOT INTERRUPTED" not in out and "ended abnormally" not in out, out
    assert out.count("SIGUSR2 arrived while the task was starting") == 2, out  # both processes noted it
    states, _ = scan_results(study_dir)
    assert not any(s["status"] in ("finished", "diverged") for s in states.values())  # nothing trained to the end
    return out


def test_parallel_task_signalled_while_its_processes_start(tiny_study, tmp_path):
    """USR2 reaches the parent before its processes have a handler: it forwards the signal only once each
    process is ready, so both note it, checkpoint nothing and exit as interrupted (not killed by the
    signal's default action), and the parent then exits as a requeue would without submitit."""
    run_signalled_parallel_task(tiny_study, tmp_path, PARALLEL_SIGNALLED)


PARALLEL_SIGNALLED_ALL = """
import multiprocessing, os, signal, sys, threading, time
from optbench.worker import ChunkRunner
def signal_every_process():  # as Slurm signals a step: the parent and each of its processes
    while len(multiprocessing.active_children()) < 2:
        time.sleep(0.01)
    time.sleep(0.5)  # each process is held before its handlers (OPTBENCH_TEST_PART_DELAY_S)
    for pid in [os.getpid()] + [p.pid for p in multiprocessing.active_children()]:
        os.kill(pid, signal.SIGUSR2)
    print("SIGNALLED", flush=True)
if __name__ == "__main__":
    threading.Thread(target=signal_every_process, daemon=True).start()
    ChunkRunner()(sys.argv[1], "task-sig", sys.argv[2:], {"runs_in_parallel": 2, "threads": 2, "device": "cpu"})
    print("NOT INTERRUPTED", flush=True)
"""


def test_parallel_task_processes_signalled_directly_while_starting(tiny_study, tmp_path):
    """Slurm signals every process of a step. A process still starting, before its handlers exist, would
    be ended by Python's default action for USR2; the processes start with the signals blocked, so it
    waits for the handler: both processes note it and end as interrupted, none is killed by it."""
    out = run_signalled_parallel_task(tiny_study, tmp_path, PARALLEL_SIGNALLED_ALL,
                                      env={"OPTBENCH_TEST_PART_DELAY_S": "2"})
    assert "SIGNALLED" in out, out  # the signals were sent while the processes were held


def test_gpu_check_script_passes_on_the_cpu():
    """benchmarks/gpu_check.py is what a GPU session runs in one go; on the CPU the same checks run
    (train, agree with the CPU before training, resume to the same curve, a worker task) and pass."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--problems", "quadratic_deep",
                          "digits_mlp"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout and out.stdout.count("resume bit-identical") == 2


def test_lstm_forms_bench_compares_the_same_network_in_its_two_forms():
    """benchmarks/bench_lstm_forms.py (GPU check step 2b): the one-call nn.LSTM gets the two-call
    CharLSTM's weights through the inverse of its key-renaming hook, and on a CPU both give the same
    evaluation loss exactly (the script checks it before timing and would exit 1); then a ratio."""
    import re
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "benchmarks/bench_lstm_forms.py", "--device", "cpu", "--threads", "1",
                          "--rounds", "2", "--steps", "3", "--hidden", "16", "--batch", "4", "--seq-len", "8"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    two, one = re.search(r"two calls ([0-9.]+), one call ([0-9.]+)", out.stdout).groups()
    assert two == one and float(two) > 0
    assert re.search(r"one call / two calls = [0-9.]+", out.stdout) and out.stdout.count("round ") == 2

    sys.path.insert(0, "benchmarks")
    try:
        import bench_lstm_forms
    finally:
        sys.path.remove("benchmarks")
    import torch

    from optbench.problems.char_rnn import CharLSTM

    two_call = CharLSTM(10, 6, 3, 0.1)
    one_call = bench_lstm_forms.OneCallLSTM(10, 6, 3, 0.1)
    one_call.load_state_dict(bench_lstm_forms.one_call_state(two_call))  # strict: every key maps
    back = CharLSTM(10, 6, 3, 0.1)
    back.load_state_dict(one_call.state_dict())  # CharLSTM's own hook: the mapping round-trips
    for k, v in two_call.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_bench_table_columns_line_up_with_long_problem_names():
    """The transformer problems' names are 30 characters: every row's numbers start where the header's
    columns do (a fixed 22-character name column pushed those rows 8 characters right)."""
    from optbench import bench

    def result(name):
        loops = {"optbench": 10.0, "bare": 10.5, "bare+eval": 10.2, "naive": 7.0}
        ratios = {"a/b": 0.95, "a/b q1": 0.9, "a/b q3": 1.0, "a/b'": 0.98, "a/c": 1.43}
        return bench.Result(name, 64, 1000, 8, 16, 100, loops, {"optbench": 0.1, "naive": 0.2}, ratios, 3, 0.01)

    table = bench.format_table([result("digits_mlp"), result("tokens_tf_uniform_softmax_relu")]).splitlines()
    head, rows = table[0], table[2:4]
    assert [r.index("1,000") + 5 for r in rows] == [head.index("params") + 6] * 2  # right-aligned: same end
    fits = bench.format_fits([result("digits_mlp"), result("tokens_tf_uniform_softmax_relu")]).splitlines()[1:]
    assert len({line.index("set-up") for line in fits}) == 1


def test_goal_summary_names_the_problems_below_each_goal_and_says_whether_noise_can_explain_it():
    """The summary under the table: a/b against 0.95 on every problem, a/c run against 1.5 on the
    problems whose bare step is under 2 ms; a miss whose upper quartile reaches the goal is called
    noise-compatible, one whose upper quartile is below it is not."""
    from optbench import bench

    def result(name, ab, q3, ac_run, bare_steps_per_s):
        loops = {"optbench": 1.0, "bare": bare_steps_per_s, "bare+eval": 1.0, "naive": 1.0}
        ratios = {"a/b": ab, "a/b q1": ab - 0.05, "a/b q3": q3, "a/b'": 1.0, "a/c": 1.0,
                  "a/c run": ac_run, "a/c run q1": ac_run - 0.1, "a/c run q3": ac_run + 0.1}
        return bench.Result(name, 64, 1000, 8, 16, 100, loops, {"optbench": 0.1, "naive": 0.2}, ratios, 3, 0.01)

    results = [result("p_small_ok", 0.97, 0.99, 2.4, 3000.0),       # 0.33 ms a step: small
               result("p_small_noisy", 0.94, 0.96, 1.4, 1000.0),    # 1 ms: small, a/c run missed
               result("p_big_low", 0.93, 0.94, 1.0, 100.0)]         # 10 ms: not small
    lines = bench.format_goals(results).splitlines()
    ab = next(line for line in lines if "a/b >= 0.95" in line)
    assert "met by 1 of 3" in ab and "p_small_ok" not in ab
    assert "p_small_noisy 0.940 [0.890-0.960: goal inside the quartiles]" in ab
    assert "p_big_low 0.930 [0.880-0.940: below the goal in most rounds]" in ab
    ac = next(line for line in lines if "a/c run >= 1.5" in line)
    assert "met by 1 of 2" in ac and "p_small_noisy 1.400" in ac and "p_big_low" not in ac
    assert any("--min-seconds" in line for line in lines)
    only_big = bench.format_goals([result("p_big", 0.96, 0.99, 1.0, 10.0)])
    assert "met by 1 of 1" in only_big and "no such problem" in only_big and "--min-seconds" not in only_big
    assert "--steps" not in bench.format_goals(results)  # no miss above had short epochs


def test_goal_summary_tells_an_a_b_miss_of_short_bench_epochs():
    """A dataset problem's bench epochs are a few steps, a real run's hundreds: an a/b miss where a/b'
    (the bare loop that also evaluates) meets the goal is the evaluation's after-effect, weighed more
    in the bench than in a run, and the summary says so; not where a/b' misses too, nor where the
    bench's epochs are a real run's."""
    from optbench import bench

    def result(name, ab_eval, spe, real):
        loops = {"optbench": 1.0, "bare": 10.0, "bare+eval": 1.0, "naive": 1.0}
        ratios = {"a/b": 0.92, "a/b q1": 0.91, "a/b q3": 0.93, "a/b'": ab_eval, "a/c": 1.0, "a/c run": 1.0}
        return bench.Result(name, 128, 1000, spe, 6, 100, loops, {"optbench": 0.1, "naive": 0.2}, ratios, 2, 0.01,
                            real=real)

    text = bench.format_goals([result("p_short", 0.98, 2, (390, 70000)),
                               result("p_short_but_slow", 0.93, 2, (390, 70000)),
                               result("p_real_epochs", 0.98, 390, (390, 70000)),
                               result("p_no_size_model", 0.98, 2, None)])
    ab = next(line for line in text.splitlines() if "a/b >= 0.95" in line)
    assert "met by 0 of 4" in ab
    assert "p_short 0.920 [0.910-0.930: below the goal in most rounds; a/b' 0.98 in epochs of 2 steps, a run's 390]" in ab
    for name in ("p_short_but_slow", "p_real_epochs", "p_no_size_model"):
        assert f"{name} 0.920 [0.910-0.930: below the goal in most rounds]" in ab
    assert "--steps 60" in text and "--min-seconds" not in text


def test_naive_loop_evaluates_after_every_epoch_and_a_c_run_prices_an_epoch(tmp_path):
    """Loop (c) evaluates after the warm-up epoch and after each timed one (as the protocol does), and
    a/c run is (c)'s epoch of a real run over (a)'s, by hand: steps / speed + evaluation time scaled
    by the real evaluated examples over the bench's."""
    import torch

    from optbench import bench

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        setup = bench.make_setup("quadratic_deep", 14, tmp_path, "cpu")
        m = bench.measure_naive(setup, "cpu")
    finally:
        torch.set_num_threads(threads)
    assert len(m["chunks"]) == setup.timed_epochs and len(m["eval"]) == setup.timed_epochs + 1
    assert all(t > 0 for t in m["eval"])
    # 100 steps at 50/s + 0.1 s x 2 = 2.2 s (a); at 25/s + 1.0 s x 2 = 6 s (c)
    assert bench.protocol_epoch_s(100, 50.0, 0.1, 2.0) == pytest.approx(2.2)
    assert bench.protocol_epoch_s(100, 25.0, 1.0, 2.0) / bench.protocol_epoch_s(100, 50.0, 0.1, 2.0) == pytest.approx(6 / 2.2)
    # the real sizes: digits (1,797 examples, 15 % valid, 15 % test); F-MNIST 2c2d: 60,000 less 10,000 valid
    n_valid = n_test = round(0.15 * 1797)
    assert bench.real_sizes("digits_mlp", 128) == ((1797 - 2 * n_valid) // 128, 1797)
    assert bench.real_sizes("fmnist_2c2d", 128) == ((60_000 - 10_000) // 128, 3 * 10_000)  # train_eval, valid, test


STARTUP_PROBE = """
import gc, json, sys
print("at start", gc.isenabled(), flush=True)
from optbench.worker import ChunkRunner
d = sys.argv[1]
ids = json.load(open(d + "/ids.json"))
out = ChunkRunner()(d, "task-gc", ids, {"threads": 1, "device": "cpu"})
assert sorted(out["trained"]) == sorted(ids), out
print("after", gc.isenabled(), gc.get_freeze_count() > 100_000, flush=True)
"""


def test_task_starts_with_the_collector_paused_and_trains_with_it_on(tiny_study, tmp_path):
    """Started as on Slurm (optbench.launch), a task imports with the cyclic garbage collector off; the
    worker turns it on once torch is imported, with the ~300,000 objects of the imports frozen (never
    scanned again: optbench.startup). A task left without a collector would never free its cycles."""
    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    (study_dir / "ids.json").write_text(json.dumps(list(df[df.kind != "rerun"].run_id[:1])))
    (tmp_path / "gc_probe.py").write_text(STARTUP_PROBE)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-u", "-m", "optbench.launch", "-u", "-m", "gc_probe", str(study_dir)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "at start False" in out.stdout and "after True True" in out.stdout, out.stdout


@pytest.mark.parametrize("problem", ["digits_mlp_balanced", "uniform_tokens_lm"])
def test_a_c_run_is_c_s_real_epoch_over_a_s(problem, tmp_path, monkeypatch):
    """a/c run from the loops' measurements, by hand: (a) trains a bench epoch in 0.1 s and evaluates the
    bench's splits in 0.01 s, (c) in 0.2 s and 0.1 s. A real epoch: S steps and E evaluated examples —
    the bench's own where it trains on the problem's real data (the balanced digits: the size model's
    mean class count would say 39 steps, the data give 36), else the size model's (the token LM: the
    bench trains a few steps of a 511-step epoch)."""
    from optbench import bench

    def loop(epoch_s, eval_s):
        def measure(setup, device):
            return {"chunks": [epoch_s] * setup.timed_epochs, "eval": [eval_s] * (setup.timed_epochs + 1),
                    "setup": [0.01]}
        return measure

    monkeypatch.setitem(bench.MEASURE, "optbench", loop(0.1, 0.01))
    monkeypatch.setitem(bench.MEASURE, "bare", loop(0.1, 0.0))
    monkeypatch.setitem(bench.MEASURE, "bare+eval", loop(0.1, 0.0))
    monkeypatch.setitem(bench.MEASURE, "naive", loop(0.2, 0.1))
    r = bench.bench_problem(problem, steps=20, seconds=0, repeats=2, device="cpu", data_dir=tmp_path,
                            progress=lambda m: None)
    spe, n = r.steps_per_epoch, r.eval_examples
    model = bench.real_sizes(problem, r.batch_size)
    if problem == "digits_mlp_balanced":
        assert r.real == (spe, n) and model[0] > spe  # the data's size, not the model's upper bound
    else:
        assert r.real == model and model[0] > spe
    S, E = r.real
    a = S * 0.1 / spe + 0.01 * E / n  # seconds: steps at spe per 0.1 s, evaluation at n examples per 0.01 s
    c = S * 0.2 / spe + 0.1 * E / n
    assert r.a_over_c == pytest.approx(2.0) and r.a_over_c_run == pytest.approx(c / a)
    assert r.ratios["a/c run"] > r.a_over_c  # (c)'s evaluation is 10x slower: the run ratio is larger


def test_full_eval_batch_gives_the_dataset_problems_splits_of_one_evaluation_batch(tmp_path):
    """On a GPU (forced here) the fake evaluation splits hold at least one evaluation batch (1,000 images),
    so evaluation is timed at the batch size a real run uses; on a CPU one training batch (128)."""
    from optbench import bench, problems

    small = bench.make_setup("fmnist_2c2d", 4, tmp_path / "cpu", "cpu")
    full = bench.make_setup("fmnist_2c2d", 4, tmp_path / "gpu", "cpu", full_eval_batch=True)
    for setup, least, most in ((small, 128, 128), (full, 1000, 1000 + 127)):
        task = problems.build("fmnist_2c2d", setup.args, seed=0)
        sizes = [len(task.splits[k][0]) for k in ("valid", "test")]
        assert all(least <= n <= most for n in sizes), sizes
        # the training-evaluation split is drawn from the bench's (short) training split
        assert len(task.splits["train_eval"][0]) == min(least, task.n_train)
        assert task.eval_batch_size == 1000
    assert full.steps_per_epoch == small.steps_per_epoch  # the training split is the same size


def test_min_seconds_adds_rounds_to_a_problem_whose_rounds_end_sooner(tmp_path):
    """--min-seconds: rounds past --repeats until the time is spent, capped; without it, exactly --repeats."""
    from optbench import bench

    def rounds(**kw):
        said = []
        r = bench.bench_problem("quadratic_deep", steps=14, seconds=0, device="cpu", data_dir=tmp_path,
                                progress=said.append, **kw)
        assert len([m for m in said if ": round " in m]) == r.rounds
        head, _, row = bench.format_table([r]).splitlines()[:3]
        assert row.split()[head.split().index("rnd")] == str(r.rounds)  # the table's rnd column
        return r.rounds

    assert rounds(repeats=2) == 2
    assert rounds(repeats=1, min_seconds=1e9, max_rounds=4) == 4  # the time never runs out: the cap ends it
    assert rounds(repeats=1, min_seconds=1e9) == 10  # the default cap: 10 x --repeats
    assert rounds(repeats=3, min_seconds=1e-9) == 3  # the time ran out: --repeats still all done


def test_bench_parallel_training_span_is_first_start_to_last_finish_over_the_task_files(tmp_path):
    """benchmarks/bench_parallel.py prints, beside the whole task's time, its training span read from
    the runs' attributes in every result file of the task (runs in parallel may write several)."""
    import importlib.util

    import h5py

    from optbench.storage import TaskFile

    spec = importlib.util.spec_from_file_location("bench_parallel", "benchmarks/bench_parallel.py")
    bench_parallel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_parallel)
    times = {"a.h5": {"r1": (100.0, 103.5), "r2": (103.5, 107.0)}, "b.h5": {"r3": (100.8, 108.25)}}
    (tmp_path / "results").mkdir()
    for name, runs in times.items():
        tf = TaskFile(tmp_path / "results" / name)
        for rid in runs:
            tf.begin_run(rid, "{}", {})
            tf.set_status(rid, "finished", finished=0.0)
        with h5py.File(tmp_path / "results" / name, "r+") as f:
            for rid, (start, end) in runs.items():
                f["runs"][rid].attrs["started"], f["runs"][rid].attrs["finished"] = start, end
    assert bench_parallel.training_span(tmp_path) == 108.25 - 100.0
    with h5py.File(tmp_path / "results" / "b.h5", "r+") as f:
        del f["runs"]["r3"].attrs["finished"]  # a run that did not finish: no span, not an error
    assert math.isnan(bench_parallel.training_span(tmp_path))
