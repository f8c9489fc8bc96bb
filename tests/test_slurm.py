"""Dispatch, requeue and time limits against the real local Slurm cluster (slurm/test.sh).

The cluster runs with MaxArraySize 50, 4 advertised CPUs, 2 fake GPUs, KillWait 5 s and
cred_expire 10 s, and with accounting (slurmdbd), so these tests see what a real cluster does.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from optbench import dispatch, planner
from optbench.profiles import load_profile
from optbench.state import run_states
from optbench.storage import EVAL_FIELDS, scan_results
from optbench.testing import MemorySink
from tests.conftest import ROOT

pytestmark = pytest.mark.slurm
PROFILE = ROOT / "slurm" / "profiles" / "local-cluster.toml"
OPTBENCH = [sys.executable, "-m", "optbench"]
METRICS = [f for f in EVAL_FIELDS if f != "wall_time"]


def cli(*args, timeout=900):
    r = subprocess.run(OPTBENCH + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    return r


def wait_done(study_dir: Path, timeout: float, n_expected: int | None = None) -> "pd.DataFrame":  # noqa: F821
    plan = planner.load_plan(study_dir, verify=False)
    t0 = time.time()
    while True:
        states, _ = run_states(study_dir, plan)
        if states["state"].isin(["finished", "diverged", "failed"]).all():
            return states
        assert time.time() - t0 < timeout, states["state"].value_counts().to_dict()
        time.sleep(2)


ACTIVE = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "RESIZING"}


def sacct(job_ids: list[str] | str, fields: str = "JobID,State", duplicates: bool = False,
          timeout: float = 60, rows: int = 0) -> str:
    """sacct's rows (``-P``) for these jobs once none is still active (and, with ``rows``, once at least
    that many are there): a task writes its results before its process ends and Slurm's accounting
    records the end a moment later, so a test that has seen every run finished may still find the
    last task RUNNING — or not find it at all yet (slurmdbd had 59 of 60 tasks once)."""
    ids = ",".join(sorted(job_ids)) if isinstance(job_ids, (list, set, tuple)) else job_ids
    cmd = ["sacct", "-n", "-X", "-P", "-o", fields, "-j", ids] + (["-D"] if duplicates else [])
    deadline = time.time() + timeout
    while True:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        states = [(line.split("|")[-1].split() or [""])[0] for line in out.strip().splitlines()]
        if (not ACTIVE.intersection(states) and len(states) >= rows) or time.time() > deadline:
            return out
        time.sleep(1)


def profile_file(tmp_path: Path, **overrides) -> Path:
    text = PROFILE.read_text()
    for k, v in overrides.items():
        line = f"{k} = {json.dumps(v)}"
        if f"\n{k} =" in text:
            import re

            text = re.sub(rf"\n{k} = [^\n]*", "\n" + line, text)
        else:
            text += line + "\n"
    p = tmp_path / "profile.toml"
    p.write_text(text)
    return p


STUDY_300 = """
name = "three_hundred"
problems = ["quadratic_deep"]
optimizers = ["sgd", "momentum", "adam"]
schedules = ["none", "cosine"]
[problem_settings.quadratic_deep]
num_epochs = 1
batch_size = 16
dim = 10
train_size = 64
[oneshot]
seeds = [42, 43, 44, 45, 46, 47, 48, 49, 50, 51]
[tuning]
budgets = { small = 20, large = 40 }
"""


def test_300_runs_chunked_under_max_array_size(slurm_cluster, write_study, tmp_path):
    study_dir = tmp_path / "s300"
    assert cli("plan", write_study(STUDY_300), "-o", study_dir).returncode == 0
    plan = planner.load_plan(study_dir)
    assert len(plan) == 300
    max_array = int(dispatch.slurm_config_value("MaxArraySize"))
    assert max_array == 50, "slurm/test.sh configures MaxArraySize=50"
    profile = load_profile(PROFILE)
    predicted = dispatch.predict_arrays({"quadratic_deep": 300}, profile, max_array)
    assert predicted == math.ceil(math.ceil(300 / profile.defaults.runs_per_task) / 50) == 2

    r = cli("submit", study_dir, "--profile", PROFILE, "--wait", "--poll", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted 300 runs" in r.stdout
    states = wait_done(study_dir, 60)
    assert (states["state"] == "finished").all(), states["state"].value_counts()
    found, bad = scan_results(study_dir)
    assert not bad and all(found[rid]["n_evals"] == 2 for rid in plan["run_id"])  # epochs + 1

    entries = dispatch.ledger(study_dir)
    assert len(entries) == 1 and entries[0]["sbatch_calls"] == predicted
    array_ids = {t["job_id"].split("_")[0] for t in entries[0]["tasks"]}
    assert len(array_ids) == predicted
    assert max(int(t["job_id"].split("_")[1]) for t in entries[0]["tasks"]) < max_array
    # Slurm agrees: every task of both arrays completed, none was rejected or failed
    out = sacct(sorted(array_ids), rows=60)
    rows = [line.split("|") for line in out.strip().splitlines()]
    assert len(rows) == 60 and {s for _, s in rows} == {"COMPLETED"}, rows

    again = cli("submit", study_dir, "--profile", PROFILE)
    assert again.returncode == 0 and "nothing to submit (300 done)" in again.stdout, again.stdout
    assert len(dispatch.ledger(study_dir)) == 1


LONG_STUDY = """
name = "long"
problems = ["shakespeare_char_rnn"]
optimizers = ["adam"]
schedules = ["cosine"]
[problem_settings.shakespeare_char_rnn]
num_epochs = {epochs}
batch_size = 16
num_chars = 60000
hidden = 48
layers = 1
dropout = 0.1
[oneshot]
seeds = [{seed}]
"""


def reference_curve(record):
    """The same run trained without interruption, in this process, with the worker's one thread."""
    import torch

    from optbench.trainer import train_run

    torch.set_num_threads(1)
    sink = MemorySink()
    assert train_run(record, sink=sink, checkpoint=lambda s: None) == "finished"  # no checkpoint: no restore
    return sink.array()


def curve(study_dir: Path, rid: str) -> tuple[np.ndarray, dict]:
    import h5py

    found, _ = scan_results(study_dir)
    with h5py.File(study_dir / "results" / found[rid]["file"], "r") as f:
        return f["runs"][rid]["evals"][()], dict(f["runs"][rid].attrs)


FORCED_TIME_LIMITS = 5  # > submitit's default max_num_timeout (3)


def test_requeue_and_time_limit_mid_run_resume_exactly(slurm_cluster, write_study, tmp_path):
    """`scontrol requeue` of a running task, and a 1-minute time limit firing mid-run many times in a row
    (at least 5 time limits, most of them forced by the test): every run finishes once, with epochs + 1
    rows, equal to the uninterrupted run; submitit never gives up on the time-limited one."""
    # B is longer: each forced time limit costs it the epochs it trains while this test sees the restart
    # and a new row and sends the signal: ~4 here, but up to ~14 in one run of the whole suite (its epochs
    # take ~0.1 s, and the polls lag when the machine is busy), which finished B after 4 of 5 at 60 epochs
    epochs = {"a": 40, "b": 90}
    a, b = tmp_path / "requeued", tmp_path / "timed"
    assert cli("plan", write_study(LONG_STUDY.format(epochs=epochs["a"], seed=1), "a.toml"), "-o", a).returncode == 0
    assert cli("plan", write_study(LONG_STUDY.format(epochs=epochs["b"], seed=2).replace('"long"', '"long2"'),
                                   "b.toml"), "-o", b).returncode == 0
    r = cli("submit", a, "--profile", PROFILE)
    assert r.returncode == 0 and "submitted 1 runs" in r.stdout, r.stdout + r.stderr
    # submitting again while the task is queued or running submits nothing
    r = cli("submit", a, "--profile", PROFILE)
    assert r.returncode == 0 and "nothing to submit (1 in flight)" in r.stdout, r.stdout

    rid_a = planner.load_plan(a)["run_id"].iloc[0]
    job_a = dispatch.ledger(a)[0]["tasks"][0]["job_id"]
    t0 = time.time()
    while True:  # requeue once the run is a few epochs in
        found, _ = scan_results(a)
        if rid_a in found and found[rid_a]["n_evals"] >= 4:
            break
        assert time.time() - t0 < 300, "run A made no progress"
        time.sleep(0.5)
    subprocess.run(["scontrol", "requeue", job_a], check=True)

    # B is submitted only now, so that it starts at epoch 0 when the forced signals begin: the rows it
    # trains while A starts would otherwise count against the epochs its forced time limits need (a
    # CI run finished B after 4 of the 5 when both were submitted together).
    short = profile_file(tmp_path, timeout_min=1, signal_delay_s=30, checkpoint_every_s=1000)
    r = cli("submit", b, "--profile", short)
    assert r.returncode == 0 and "submitted 1 runs" in r.stdout, r.stdout + r.stderr

    # B: force time limits many times in a row. With a 1-minute limit, submitit counts *every* USR2 as
    # a time limit (its guaranteed walltime min(0.8·limit, limit − 10 min) is negative), so each signal
    # below spends one of submitit's max_num_timeout (its default, 3, would drop the run at the 4th).
    rid_b = planner.load_plan(b)["run_id"].iloc[0]
    job_b = dispatch.ledger(b)[0]["tasks"][0]["job_id"]
    # Each signal goes to a new attempt only once it trains (it has written a row since it started):
    # a USR2 that reaches a task still importing Python, before any handler is installed, kills it
    # (Slurm then marks the job FAILED and `optbench submit` re-submits the run — a different path).
    # What counts is how many time limits the run went through (its attempts' SLURM_RESTART_COUNT),
    # not how many signals the test sent: the job's own 1-minute limit also signals every attempt 30 s in.
    forced, t0 = 0, time.time()
    state = wait_rows(b, rid_b, 2, 300)
    cycles = []  # (rows when signalled, rows when the next attempt was seen, rows when it had trained, s)
    while state["requeues"] < FORCED_TIME_LIMITS:
        if state["n_evals"] >= epochs["b"] - 2:
            break
        if subprocess.run(["scancel", "--signal=USR2", job_b], capture_output=True).returncode == 0:
            forced += 1
            signalled = state["n_evals"]
            restarted = wait_state(b, rid_b, lambda e, r=state["requeues"]: e["requeues"] > r, 300)
            state = wait_state(b, rid_b, lambda e, n=restarted["n_evals"]: e["n_evals"] > n or e["status"] == "finished",
                               300)
            cycles.append((signalled, restarted["n_evals"], state["n_evals"], state["requeues"],
                           round(time.time() - t0, 1)))
        assert time.time() - t0 < 900, "run B made no progress"
    assert state["requeues"] >= FORCED_TIME_LIMITS, \
        f"run B finished after {state['requeues']} time limits ({forced} forced): make it longer ({cycles})"
    print("time limits: rows (signalled, restarted, trained), requeues, seconds:", cycles)

    states_a = wait_done(a, 600)
    states_b = wait_done(b, 900)
    for study_dir, states in ((a, states_a), (b, states_b)):
        assert (states["state"] == "finished").all(), states
        plan = planner.load_plan(study_dir)
        rec = planner.records(plan)[plan["run_id"].iloc[0]]
        rows, attrs = curve(study_dir, rec.run_id)
        n = epochs["b" if study_dir == b else "a"]
        assert len(rows) == n + 1 and list(rows["epoch"]) == list(range(n + 1))
        # it really was interrupted and restarted (B: at least once per forced time limit)
        assert int(attrs["requeues"]) >= (FORCED_TIME_LIMITS if study_dir == b else 1), attrs
        ref = reference_curve(rec)
        for f in METRICS:
            np.testing.assert_array_equal(rows[f], ref[f], err_msg=f"{study_dir.name}: {f}")
    # the time-limited job went through several USR2 rounds without submitit giving up
    out = sacct(dispatch.ledger(b)[0]["tasks"][0]["job_id"].split("_")[0], duplicates=True)
    assert out.count("REQUEUED") >= FORCED_TIME_LIMITS and "COMPLETED" in out, out


def test_gpu_request_reaches_the_task(slurm_cluster, write_study, tmp_path):
    """gpus_per_node=1 on the fake-GRES cluster: Slurm gives the task a GPU (CUDA_VISIBLE_DEVICES),
    the worker records it, and with device=auto falls back to CPU because torch sees no CUDA here."""
    study = write_study(LONG_STUDY.format(epochs=1, seed=3).replace('"long"', '"gpu"'))
    s = tmp_path / "gpu"
    assert cli("plan", study, "-o", s).returncode == 0
    prof = profile_file(tmp_path, gpus_per_node=1)
    r = cli("submit", s, "--profile", prof, "--wait", "--poll", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    rid = planner.load_plan(s)["run_id"].iloc[0]
    rows, attrs = curve(s, rid)
    assert attrs["status"] == "finished" and attrs["cuda_visible_devices"] == "0", attrs
    assert attrs["device"] == ("cuda" if os.environ.get("OPTBENCH_EXPECT_CUDA") else "cpu")
    script = next((s / "submitit").rglob("*_submission.sh")).read_text()
    assert "--gpus-per-node=1" in script


def wait_state(study_dir: Path, rid: str, ok, timeout: float = 300) -> dict:
    """The run's scan entry once ``ok(entry)`` holds."""
    t0 = time.time()
    while True:
        found, _ = scan_results(study_dir)
        if rid in found and ok(found[rid]):
            return found[rid]
        assert time.time() - t0 < timeout, f"run {rid}: no progress ({found.get(rid)})"
        time.sleep(0.5)


def wait_rows(study_dir: Path, rid: str, n: int, timeout: float = 300) -> dict:
    t0 = time.time()
    while True:
        found, _ = scan_results(study_dir)
        if rid in found and found[rid]["n_evals"] >= n:
            return found[rid]
        assert time.time() - t0 < timeout, f"run {rid} made no progress"
        time.sleep(0.5)


def check_exact(study_dir: Path, epochs: int) -> None:
    """The invariant: every run finished once, epochs + 1 rows, equal to the uninterrupted run."""
    from analysis.load import load_curves

    plan = planner.load_plan(study_dir)
    records = planner.records(plan)
    curves = load_curves(study_dir)
    for rid, rec in records.items():
        c = curves[curves["run_id"] == rid].sort_values("epoch")
        assert list(c["epoch"]) == list(range(epochs + 1)), (rid, list(c["epoch"]))
        assert set(c["status"]) == {"finished"}
        ref = reference_curve(rec)
        for f in METRICS:
            np.testing.assert_array_equal(c[f].to_numpy(), ref[f], err_msg=f)


def test_usr2_while_the_task_is_starting_requeues_it(slurm_cluster, write_study, tmp_path):
    """A time-limit or preemption signal that reaches a task still starting Python (before submitit
    or the worker has a handler) used to kill it: Slurm marked the job FAILED and nothing requeued it.
    Tasks now start through optbench.launch, which notes the signal; the worker requeues the task
    through submitit before training, and the run then finishes exactly. The test holds the task in
    the launcher (OPTBENCH_TEST_LAUNCH_DELAY_S) so that the signal lands in that window."""
    epochs = 4
    s = tmp_path / "early"
    assert cli("plan", write_study(LONG_STUDY.format(epochs=epochs, seed=9).replace('"long"', '"early"')),
               "-o", s).returncode == 0
    env = {**os.environ, "OPTBENCH_TEST_LAUNCH_DELAY_S": "20"}
    r = subprocess.run(OPTBENCH + ["submit", str(s), "--profile", str(PROFILE)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and "submitted 1 runs" in r.stdout, r.stdout + r.stderr
    job = dispatch.ledger(s)[0]["tasks"][0]["job_id"]
    t0 = time.time()
    while subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip() != "RUNNING":
        assert time.time() - t0 < 120, "the task did not start"
        time.sleep(0.5)
    time.sleep(5)  # the step has started and sits in the launcher's 20 s hold: no handler but the launcher's
    rid = planner.load_plan(s)["run_id"].iloc[0]
    assert rid not in scan_results(s)[0], "the run already started training: the signal would miss the window"
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    states = wait_done(s, 300)
    assert (states["state"] == "finished").all(), states
    check_exact(s, epochs)
    out = sacct(job.split("_")[0], duplicates=True)
    assert "REQUEUED" in out and "FAILED" not in out and "COMPLETED" in out, out


def test_preemption_by_high_priority_partition(slurm_cluster, write_study, tmp_path):
    """A run in the preemptible partition is preempted by a job in `high`: USR2, checkpoint,
    requeue, resume — and the curve is the uninterrupted one."""
    epochs = 30
    s = tmp_path / "pre"
    assert cli("plan", write_study(LONG_STUDY.format(epochs=epochs, seed=5).replace('"long"', '"pre"')),
               "-o", s).returncode == 0
    cpus = int(subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%c"], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    prof = profile_file(tmp_path, cpus_per_task=cpus, threads=1)
    assert cli("submit", s, "--profile", prof).returncode == 0
    rid = planner.load_plan(s)["run_id"].iloc[0]
    wait_rows(s, rid, 4)
    high = subprocess.run(["sbatch", "-p", "high", "-c", str(cpus), "--parsable", "-o", "/dev/null", "--wrap", "sleep 3"],
                          capture_output=True, text=True, check=True).stdout.strip()
    wait_done(s, 600)
    _, attrs = curve(s, rid)
    assert int(attrs["requeues"]) >= 1, attrs
    check_exact(s, epochs)
    out = sacct(high, fields="State")
    assert "COMPLETED" in out


def test_parallel_task_requeued_mid_run_resumes_each_process_exactly(slurm_cluster, write_study, tmp_path):
    """A task training its runs two at once (runs_in_parallel = 2, as the GPU profile does for the small
    problems), started as every Slurm task is (optbench.launch, submitit, then two spawned processes):
    USR2 while both runs are mid-way checkpoints both processes, submitit requeues the task, the
    requeued task gives each process its runs back and both finish on the uninterrupted curves, each
    in its own result file."""
    epochs = 40
    s = tmp_path / "par"
    assert cli("plan", write_study(LONG_STUDY.format(epochs=epochs, seed="21, 22").replace('"long"', '"par"')),
               "-o", s).returncode == 0
    prof = profile_file(tmp_path, runs_per_task=2, runs_in_parallel=2, cpus_per_task=2)
    r = cli("submit", s, "--profile", prof)
    assert r.returncode == 0 and "submitted 2 runs" in r.stdout, r.stdout + r.stderr
    tasks = dispatch.ledger(s)[0]["tasks"]
    assert len(tasks) == 1 and len(tasks[0]["run_ids"]) == 2  # one task, both runs
    job = tasks[0]["job_id"]
    rids = list(planner.load_plan(s)["run_id"])
    for rid in rids:
        wait_rows(s, rid, 4)  # both processes are training
    pids = {int(curve(s, rid)[1]["pid"]) for rid in rids}
    assert len(pids) == 2, pids
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    states = wait_done(s, 600)
    assert (states["state"] == "finished").all(), states
    check_exact(s, epochs)
    found, _ = scan_results(s)
    assert sorted(found[rid]["file"] for rid in rids) == [f"{tasks[0]['name']}+p0.h5", f"{tasks[0]['name']}+p1.h5"]
    for rid in rids:
        _, attrs = curve(s, rid)
        assert int(attrs["requeues"]) >= 1 and int(attrs["resumes"]) >= 1, attrs  # resumed, not retrained
    out = sacct(job.split("_")[0], duplicates=True)
    assert "REQUEUED" in out and "FAILED" not in out and "COMPLETED" in out, out


def test_kill9_worker_then_resubmit_resumes(slurm_cluster, write_study, tmp_path):
    """kill -9 of the worker (a lost node): the task dies without a checkpoint on the way out;
    `optbench submit` sees the run interrupted, re-submits exactly it, and it resumes from its
    last checkpoint to the uninterrupted curve."""
    epochs = 20
    s = tmp_path / "k9"
    assert cli("plan", write_study(LONG_STUDY.format(epochs=epochs, seed=6).replace('"long"', '"k9"')),
               "-o", s).returncode == 0
    assert cli("submit", s, "--profile", PROFILE).returncode == 0
    rid = planner.load_plan(s)["run_id"].iloc[0]
    wait_rows(s, rid, 5)
    _, attrs = curve(s, rid)
    os.kill(int(attrs["pid"]), 9)
    t0 = time.time()
    while True:  # Slurm notices the dead step and ends the job
        plan = planner.load_plan(s)
        states, _ = run_states(s, plan)
        if states["state"].iloc[0] == "interrupted" and rid not in dispatch.in_flight_runs(s):
            break
        assert time.time() - t0 < 120, states
        time.sleep(1)
    r = cli("submit", s, "--profile", PROFILE, "--wait", "--poll", "2")
    assert r.returncode == 0 and "submitted 1 runs" in r.stdout, r.stdout + r.stderr
    check_exact(s, epochs)
    found, _ = scan_results(s)
    assert found[rid]["attempts"] >= 2


SHORT_RUNS = """
name = "many"
problems = ["digits_mlp"]
optimizers = ["sgd", "adam"]
schedules = ["none"]
[problem_settings.digits_mlp]
num_epochs = 2
[oneshot]
seeds = [1, 2, 3, 4, 5, 6]
"""


def test_scancel_part_of_array_then_submit_sends_exactly_the_missing(slurm_cluster, write_study, tmp_path):
    s = tmp_path / "many"
    assert cli("plan", write_study(SHORT_RUNS), "-o", s).returncode == 0
    prof = profile_file(tmp_path, runs_per_task=1, array_parallelism=2)
    assert cli("submit", s, "--profile", prof).returncode == 0
    tasks = dispatch.ledger(s)[0]["tasks"]
    assert len(tasks) == 12
    array = tasks[0]["job_id"].split("_")[0]
    subprocess.run(["scancel", f"{array}_[8-11]"], check=True)
    cancelled = {rid for t in tasks[8:] for rid in t["run_ids"]}
    t0 = time.time()
    while dispatch.in_flight_runs(s):
        assert time.time() - t0 < 300
        time.sleep(2)
    plan = planner.load_plan(s)
    states, _ = run_states(s, plan)
    missing = set(states[states["state"] != "finished"]["run_id"])
    assert missing == cancelled, (missing, cancelled)
    r = cli("submit", s, "--profile", prof, "--wait", "--poll", "2")
    assert r.returncode == 0 and "submitted 4 runs" in r.stdout, r.stdout
    assert set(dispatch.ledger(s)[1]["tasks"][0]["run_ids"]) | {
        rid for t in dispatch.ledger(s)[1]["tasks"] for rid in t["run_ids"]} == cancelled
    states, _ = run_states(s, plan)
    assert (states["state"] == "finished").all() and (states["attempts"] == 1).all()


def test_two_concurrent_submits_train_each_run_once(slurm_cluster, write_study, tmp_path):
    s = tmp_path / "twice"
    assert cli("plan", write_study(SHORT_RUNS.replace('"many"', '"twice"')), "-o", s).returncode == 0
    procs = [subprocess.Popen(OPTBENCH + ["submit", str(s), "--profile", str(PROFILE)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("submitted 12 runs" in o for o, _ in outs) == 1, outs
    assert sum("nothing to submit (12 in flight)" in o for o, _ in outs) == 1, outs
    submitted = [rid for e in dispatch.ledger(s) for t in e["tasks"] for rid in t["run_ids"]]
    assert len(submitted) == len(set(submitted)) == 12
    states = wait_done(s, 300)
    assert (states["state"] == "finished").all() and (states["attempts"] == 1).all()
