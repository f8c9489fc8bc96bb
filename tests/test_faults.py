"""Faults that need no cluster: corrupt result files, full disks, exactly-once bookkeeping."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from optbench import planner
from optbench.leases import RunLease
from optbench.storage import scan_results
from optbench.study import load_study
from optbench.worker import ChunkRunner

OPTBENCH = [sys.executable, "-m", "optbench"]


def cli(*args):
    return subprocess.run(OPTBENCH + [str(a) for a in args], capture_output=True, text=True, timeout=600)


def trained_study(tiny_study, tmp_path) -> tuple[Path, list[str]]:
    s = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), s, progress=lambda m: None)
    ids = list(df[df.kind != "rerun"].run_id)
    ChunkRunner()(str(s), "task-a", ids[:3])
    ChunkRunner()(str(s), "task-b", ids[3:])
    return s, ids


def test_truncated_result_file_is_quarantined_and_its_runs_rerun(tiny_study, tmp_path):
    s, ids = trained_study(tiny_study, tmp_path)
    a = s / "results" / "task-a.h5"
    b_before = h5py.File(s / "results" / "task-b.h5", "r")["runs"][ids[3]]["evals"][()]
    original = a.read_bytes()
    a.write_bytes(original[: len(original) // 3])  # truncated, as by a full disk or a killed copy
    found, bad = scan_results(s)
    assert [p.name for p, _ in bad] == ["task-a.h5"]
    assert all(r not in found for r in ids[:3])

    r = cli("submit", s, "--executor", "local")
    assert r.returncode == 0, r.stderr
    assert "task-a.h5 is unreadable" in r.stderr and "kept, not deleted" in r.stderr
    kept = list((s / "results" / "quarantine").glob("task-a.h5.*"))
    assert len([k for k in kept if not k.name.endswith(".txt")]) == 1
    assert [k for k in kept if not k.name.endswith(".txt")][0].read_bytes() == original[: len(original) // 3]
    found, bad = scan_results(s)
    assert not bad and all(found[r]["status"] in ("finished", "diverged") for r in ids)
    # the other file was not touched
    after = h5py.File(s / "results" / "task-b.h5", "r")["runs"][ids[3]]["evals"][()]
    for field in after.dtype.names:
        np.testing.assert_array_equal(after[field], b_before[field])


def test_damaged_group_salvages_the_readable_runs(tiny_study, tmp_path):
    from optbench.storage import quarantine

    s, ids = trained_study(tiny_study, tmp_path)
    a = s / "results" / "task-a.h5"
    with h5py.File(a, "a") as f:  # one run's data destroyed, the others intact
        del f["runs"][ids[0]]["evals"]
    aside, salvage, n = quarantine(a, "test")
    assert aside.exists() and not a.exists() and n == 2 and salvage is not None
    found, _ = scan_results(s)
    assert ids[0] not in found and found[ids[1]]["status"] == "finished" and found[ids[1]]["n_evals"] == 3


def test_task_restarting_on_its_own_damaged_file_keeps_the_runs_it_recovers(tiny_study, tmp_path, monkeypatch):
    """A requeued task finds its result file unreadable: the file is moved aside and its finished runs
    recovered into a salvage file; those runs are then done, not trained a second time (which had left
    two finished copies of each in the study)."""
    from optbench import storage

    s, ids = trained_study(tiny_study, tmp_path)
    real = storage.TaskFile.check_readable
    damaged = [s / "results" / "task-a.h5"]

    def check_readable(self):  # the file reads as damaged once (HDF5 rarely leaves a truncated file readable)
        if damaged and self.path == damaged[0]:
            damaged.pop()
            raise OSError("damaged for the test")
        return real(self)

    monkeypatch.setattr(storage.TaskFile, "check_readable", check_readable)
    out = ChunkRunner()(str(s), "task-a", ids[:3])
    assert not damaged and out["trained"] == [] and sorted(out["skipped"]) == sorted(ids[:3]), out
    assert list((s / "results").glob("salvaged-task-a-*.h5")) and list((s / "results" / "quarantine").glob("task-a.h5.*"))
    copies = {}
    for path in (s / "results").glob("*.h5"):
        with h5py.File(path, "r") as f:
            for rid, g in f.get("runs", {}).items():
                copies[rid] = copies.get(rid, 0) + (str(g.attrs["status"]) in ("finished", "diverged"))
    assert copies == {rid: 1 for rid in ids}, copies
    found, bad = scan_results(s)
    assert not bad and all(found[r]["status"] in ("finished", "diverged") for r in ids)


def test_unreadable_file_of_an_ended_task_is_moved_aside_while_its_runs_train_elsewhere(tiny_study, tmp_path, capsys):
    """Only a file whose own task is alive is left alone (it may be mid-write). The file of an ended task is
    moved aside even while one of its runs trains again in a newer task; it had been left in place as
    long as any of its runs was in flight anywhere, hiding its other runs from the next submission."""
    from optbench import dispatch

    s, ids = trained_study(tiny_study, tmp_path)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    dead_pid = int(ended.stdout)
    dispatch.write_ledger(s, {"stamp": "20261207T000000-aaaaaa", "executor": "local", "profile": "local",
                              "created": 0.0, "sbatch_calls": 0,
                              "tasks": [{"name": "task-a", "job_id": str(dead_pid), "run_ids": ids[:3]}]})
    dispatch.write_ledger(s, {"stamp": "20261207T000001-bbbbbb", "executor": "local", "profile": "local",
                              "created": 1.0, "sbatch_calls": 0,
                              "tasks": [{"name": "task-live", "job_id": str(os.getpid()), "run_ids": ids[:1]}]})
    assert dispatch.in_flight_runs(s) == {ids[0]}
    for name in ("task-a.h5", "task-live.h5"):
        (s / "results" / name).write_bytes((s / "results" / "task-b.h5").read_bytes()[:500])
    _, bad = scan_results(s)
    assert sorted(p.name for p, _ in bad) == ["task-a.h5", "task-live.h5"]
    dispatch.quarantine_unreadable(s, bad)
    assert not (s / "results" / "task-a.h5").exists()  # its task ended: moved aside (kept)
    assert list((s / "results" / "quarantine").glob("task-a.h5.*"))
    assert (s / "results" / "task-live.h5").exists()  # its task is alive: left alone
    assert "task-live.h5 unreadable" in capsys.readouterr().err


def test_salvage_of_a_salvage_still_counts_and_nothing_is_replaced(tiny_study, tmp_path, monkeypatch):
    """A salvage file is a result file only once complete (written under a hidden name); if it is damaged
    in turn, its own salvage keeps the task file's name, so the runs stay done for a restarting task; and
    two files moved aside in the same second both stay (no rename replaces the other)."""
    from optbench import storage
    from optbench.chunk import finished_elsewhere

    s, ids = trained_study(tiny_study, tmp_path)
    results = s / "results"
    seen = []
    real_index = storage.TaskFile.index

    def index(self):  # while the salvage is written, the study shows no salvage result file yet
        seen.append((self.path.name, [p.name for p in storage.result_files(s)]))
        return real_index(self)

    monkeypatch.setattr(storage.TaskFile, "index", index)
    first_aside, first, n = storage.quarantine(results / "task-a.h5", "test")
    assert n == 3 and first.name.startswith("salvaged-task-a-") and first.exists()
    assert seen and seen[0][0].endswith(".partial") and not any("salvaged" in f for f in seen[0][1]), seen
    assert not list(results.glob("*.partial")) and not list(results.glob(".*partial"))
    _, second, n = storage.quarantine(first, "test again")  # the salvage file damaged in turn
    assert n == 3 and second.name.startswith("salvaged-task-a-") and second.exists()
    assert list((results / "quarantine").glob(f"{first.name}.*"))  # the first salvage was moved aside (kept)
    assert all(finished_elsewhere(s, RunLease(s, rid)) for rid in ids[:3])
    out = ChunkRunner()(str(s), "task-a", ids[:3])
    assert out["trained"] == [] and sorted(out["skipped"]) == sorted(ids[:3]), out

    # the task's next file, damaged in the same second: both damaged files and both salvages are kept
    (results / "task-a.h5").write_bytes(first_aside.read_bytes())
    again_aside, again, _ = storage.quarantine(results / "task-a.h5", "test third")
    assert again_aside != first_aside and first_aside.exists() and again_aside.exists()
    assert again != second and second.exists() and again.exists()


def test_lease_saying_finished_is_not_trusted_when_its_file_is_gone(tiny_study, tmp_path):
    s, ids = trained_study(tiny_study, tmp_path)
    assert RunLease(s, ids[0]).outcome()["status"] in ("finished", "diverged")
    (s / "results" / "task-a.h5").unlink()
    out = ChunkRunner()(str(s), "task-c", ids[:3])
    assert sorted(out["trained"]) == sorted(ids[:3])


def test_unwritable_results_directory_is_a_clear_error(tiny_study, tmp_path):
    s = tmp_path / "s"
    assert cli("plan", tiny_study, "-o", s).returncode == 0
    (s / "results").write_text("not a directory")  # as when a mount point is missing or read-only
    r = cli("submit", s, "--executor", "local")
    assert r.returncode != 0 and "results directory not writable" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_keeps_earlier_data(tiny_study, tmp_path):
    """A results directory on a 1 MiB tmpfs: the worker's writes fail with ENOSPC; finished runs
    written before stay intact and readable."""
    s = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), s, progress=lambda m: None)
    ids = list(df[df.kind != "rerun"].run_id)
    results = s / "results"
    results.mkdir()
    mnt = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(results)], capture_output=True)
    if mnt.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mnt.stderr.decode().strip()}")
    try:
        ChunkRunner()(str(s), "task-a", ids[:2])
        before, _ = scan_results(s)
        assert all(before[r]["status"] in ("finished", "diverged") for r in ids[:2])
        with open(results / "filler", "wb") as f:  # fill the disk
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        with pytest.raises(OSError):
            ChunkRunner()(str(s), "task-b", ids[2:])
        after, bad = scan_results(s)
        assert [r for r in ids[:2] if after[r]["n_evals"] == before[r]["n_evals"]] == ids[:2]
        assert all(after[r]["status"] == before[r]["status"] for r in ids[:2])
    finally:
        subprocess.run(["umount", str(results)], check=False)


FAILING = """
name = "failing"
problems = ["quadratic_deep"]
optimizers = ["sgd"]
schedules = ["none"]
[problem_settings.quadratic_deep]
num_epochs = 1
batch_size = 16
dim = 10
train_size = 8
[oneshot]
seeds = [1]
"""


def test_failing_run_is_retried_up_to_the_limit_then_reported(write_study, tmp_path):
    s = tmp_path / "f"
    assert cli("plan", write_study(FAILING), "-o", s).returncode == 0
    r = cli("submit", s, "--executor", "local")
    assert r.returncode == 0, r.stderr
    # the default profile allows 2 retries: 3 attempts, then it stays failed
    assert r.stdout.count("submitted 1 runs") == 3 and "1 failed too often" in r.stdout, r.stdout
    st = cli("status", s)
    assert "failed" in st.stdout and "attempts=3" in st.stdout
    assert "ValueError: batch size 16 larger than the 8 training examples" in st.stdout
    assert "last lines of" in st.stdout  # the task's log is shown


def test_diverged_run_is_finished_and_not_retried(write_study, tmp_path):
    s = tmp_path / "d"
    text = FAILING.replace("train_size = 8", "train_size = 64").replace('name = "failing"', 'name = "div"')
    text = text.replace("num_epochs = 1", "num_epochs = 30")
    text += '[tuning.space.sgd]\nlr = ["log", 50.0, 100.0]\n[tuning]\nbudgets = { small = 1 }\n'
    assert cli("plan", write_study(text), "-o", s).returncode == 0
    r = cli("submit", s, "--executor", "local")
    assert r.returncode == 0 and r.stdout.count("submitted") == 1, r.stdout
    st = cli("status", s)
    assert "diverged" in st.stdout and "2 runs, 2 done" in st.stdout, st.stdout


# ------------------------------------------------------------------ a signal while the task starts
LAUNCH_PROBE = """
from optbench.interrupt import EARLY_SIGNALS, Interrupt
import sys
print("argv", sys.argv[1:], "early", list(EARLY_SIGNALS), flush=True)
it = Interrupt().install()
print("requested", it.requested, it.signum, "left", list(EARLY_SIGNALS), flush=True)
"""


def test_usr2_while_a_task_starts_is_noted_not_fatal(tmp_path):
    """optbench.launch (the Slurm executor's interpreter) notes a USR2 that arrives before any handler
    of submitit or the worker exists; the worker's Interrupt then finds it, as if it came later.
    Without the launcher, Python's default for USR2 ends the process (checked too)."""
    import signal
    import time

    (tmp_path / "probe_mod.py").write_text(LAUNCH_PROBE)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OPTBENCH_TEST_LAUNCH_DELAY_S": "3"}

    def started_then_signalled(cmd):
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)  # inside the launcher's delay (or the plain interpreter's sleep)
        p.send_signal(signal.SIGUSR2)
        out, err = p.communicate(timeout=60)
        return p.returncode, out, err

    rc, out, err = started_then_signalled([sys.executable, "-u", "-m", "optbench.launch", "-u", "-m", "probe_mod",
                                           "FOLDER"])
    assert rc == 0, err
    assert f"argv ['FOLDER'] early [{int(signal.SIGUSR2)}]" in out, out
    assert f"requested True {int(signal.SIGUSR2)} left []" in out, out
    rc, _, _ = started_then_signalled([sys.executable, "-c", "import time; time.sleep(3)"])
    assert rc == -signal.SIGUSR2  # what a starting task without the launcher suffers
