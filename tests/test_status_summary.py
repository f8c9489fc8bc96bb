"""Issue 9: the per-file summary that lets ``optbench status`` read one small object per result file.

The summary is an index of the per-run data, kept by :class:`optbench.storage.TaskFile` in the same
write session as each change; the data stay the source of truth. These tests check that a scan
through the summaries gives exactly what reading every run gives, for every state; that it really
reads the summaries (no run group is opened); that files without a summary (older optbench, other
writers) are still read; and that a summary left behind by a crash, or out of step with the data
for any other reason it can detect, loses to the data.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pandas as pd
import pytest

from optbench import planner, storage
from optbench.leases import RunLease
from optbench.state import run_states
from optbench.storage import SCAN_CACHE, SUMMARY, SUMMARY_GEN, TaskFile, eval_row, open_h5, read_summary, scan_results
from optbench.study import load_study
from tests.conftest import ROOT

OPTBENCH = [sys.executable, "-m", "optbench"]


def norm(found: dict) -> dict:
    """Scan entries with NaN as None, so that equal scans compare equal."""
    return {rid: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in e.items()}
            for rid, e in found.items()}


def rows(n: int, start: int = 0, nan_from: int | None = None) -> list[np.ndarray]:
    out = []
    for e in range(start, start + n):
        loss = np.nan if nan_from is not None and e >= nan_from else 1.0 / (e + 1)
        out.append(eval_row({"epoch": e, "step": 10 * e, "train_loss": loss, "valid_loss": loss, "test_loss": loss,
                             "wall_time": float(e)}))
    return out


def refuse(g):
    raise AssertionError(f"run group {g.name} read: the summary was not used")


@pytest.fixture
def no_run_reads(monkeypatch):
    """Make reading any run's group fail: a scan that passes used the summaries alone."""
    monkeypatch.setattr(storage, "run_entry", refuse)


def summary_of(path) -> dict | None:
    with open_h5(path, "r") as f:
        return read_summary(f.id)


@pytest.fixture
def mixed_study(tiny_study, tmp_path):
    """A study whose runs are in every state, in two files: two runs trained for real by the worker,
    the others written through TaskFile as the worker writes them (failed, diverged, running,
    interrupted after a resume and a requeue, and an earlier failed copy of a finished run)."""
    from optbench.worker import ChunkRunner

    s = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), s, progress=lambda m: None)
    ids = list(df[df.kind != "rerun"].run_id)
    assert len(ids) >= 6
    ChunkRunner()(str(s), "task-a", ids[:2])
    tf = TaskFile(s / "results" / "task-x.h5")
    # an earlier attempt of ids[0] that failed (the finished copy in task-a wins; attempts add up)
    tf.begin_run(ids[0], "{}", {"host": "n0", "job_id": "7_0", "requeues": 0})
    tf.set_status(ids[0], "failed", error="RuntimeError: CUDA out of memory\nsecond line", traceback="tb")
    # failed after two evaluations, with a non-ASCII error
    tf.begin_run(ids[2], "{}", {"host": "n1", "job_id": "7_1", "requeues": 0})
    for r in rows(2):
        tf.append(ids[2], r)
    tf.set_status(ids[2], "failed", error="ValueError: batch size 16 larger than the 8 training examples — ü", finished=1.0)
    # diverged: the loss became NaN, a finished result
    tf.begin_run(ids[3], "{}", {"host": "n1", "job_id": "7_1", "requeues": 0})
    for r in rows(4, nan_from=2):
        tf.append(ids[3], r)
    tf.set_status(ids[3], "diverged", finished=2.0, wall_time=3.5)
    # running: started, two evaluations, no end (a live process holds its lease in the test)
    tf.begin_run(ids[4], "{}", {"host": "n2", "job_id": "7_2", "requeues": 0})
    for r in rows(2):
        tf.append(ids[4], r)
    # interrupted: requeued twice, resumed from a checkpoint (rows newer than it dropped), no live holder
    tf.begin_run(ids[5], "{}", {"host": "n2", "job_id": "7_3", "requeues": 0})
    for r in rows(3):
        tf.append(ids[5], r)
    tf.begin_run(ids[5], "{}", {"host": "n3", "job_id": "7_3", "requeues": 2})
    tf.bump(ids[5], "resumes")
    tf.set_rows(ids[5], np.concatenate(rows(2)))
    tf.append(ids[5], rows(1, start=2)[0])
    return s, ids, df


def test_summary_scan_equals_full_scan_in_every_state(mixed_study, no_run_reads):
    s, ids, df = mixed_study
    fast, bad = scan_results(s, summary=True)  # run_entry refuses: the summaries alone
    assert not bad
    states = {rid: e["status"] for rid, e in fast.items()}
    assert [states[r] for r in ids[:6]] == ["finished", "finished", "failed", "diverged", "running", "running"]
    assert fast[ids[0]]["attempts"] == 2 and fast[ids[0]]["file"] == "task-a.h5"
    assert fast[ids[5]]["requeues"] == 2 and fast[ids[5]]["attempts"] == 2 and fast[ids[5]]["n_evals"] == 3
    assert fast[ids[2]]["error"].endswith("— ü") and fast[ids[2]]["n_evals"] == 2
    assert math.isnan(fast[ids[4]]["wall_time"]) and fast[ids[3]]["wall_time"] == 3.5


def test_summary_scan_equals_full_scan_entry_for_entry(mixed_study):
    s, ids, df = mixed_study
    full, bad_full = scan_results(s)
    fast, bad_fast = scan_results(s, summary=True)
    assert not bad_full and not bad_fast
    assert norm(fast) == norm(full) and set(full) == set(ids)
    # per file too (scan_results merges copies of a run; the files' own entries must agree as well)
    for path in storage.result_files(s):
        assert summary_of(path) is not None
        assert [norm({e["run_id"]: e}) for e in storage.scan_file(path, summary=True)] == \
               [norm({e["run_id"]: e}) for e in storage.scan_file(path)]


def test_run_states_and_status_output_the_same_through_summaries(mixed_study, monkeypatch):
    s, ids, df = mixed_study
    plan = planner.load_plan(s)
    lease = RunLease(s, ids[4])
    assert lease.acquire()  # a live holder: ids[4] is running, ids[5] (no holder) interrupted
    try:
        full, _ = run_states(s, plan)
        with monkeypatch.context() as m:
            m.setattr(storage, "run_entry", refuse)
            fast, _ = run_states(s, plan, cache=True, summary=True)
            again, _ = run_states(s, plan, cache=True, summary=True)
        pd.testing.assert_frame_equal(fast, full)
        pd.testing.assert_frame_equal(again, full)
        st = full.set_index("run_id")["state"]
        assert [st[r] for r in ids[:6]] == ["finished", "finished", "failed", "diverged", "running", "interrupted"]
        assert set(full["state"]) >= {"finished", "failed", "diverged", "running", "interrupted", "waiting"}
    finally:
        lease.release()
    a = subprocess.run(OPTBENCH + ["status", str(s), "-v"], capture_output=True, text=True, timeout=300)
    b = subprocess.run(OPTBENCH + ["status", str(s), "-v", "--full-scan"], capture_output=True, text=True, timeout=300)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and "diverged" in a.stdout and "interrupted" in a.stdout and "— ü" in a.stdout


def strip_summary(path) -> None:
    """Make a file look written by optbench before the summary (the per-run layout is unchanged)."""
    with h5py.File(path, "a", locking=False) as f:
        del f.attrs[SUMMARY]
        del f.attrs[SUMMARY_GEN]
        assert SUMMARY not in f


def test_files_without_summary_are_read_from_their_data(mixed_study, tmp_path):
    from analysis.synthetic import simple_run, write_results

    s, ids, df = mixed_study
    expected = norm(scan_results(s)[0])
    for path in storage.result_files(s):
        strip_summary(path)
        assert summary_of(path) is None
    # another writer that keeps no summary (the analysis package's synthetic results)
    other = simple_run(0.9, optimizer="adam", status="diverged", num_epochs=3)
    write_results(s, [other], prefix="legacy")
    fast, bad = scan_results(s, summary=True, cache=True)
    assert not bad and fast[other.run_id]["status"] == "diverged" and fast[other.run_id]["n_evals"] == 4
    del fast[other.run_id]
    assert norm(fast) == expected
    # the first write of this version to an old file builds the summary of all its runs from their data
    tf = TaskFile(s / "results" / "task-x.h5")
    tf.append(ids[4], rows(1, start=2)[0])
    assert summary_of(tf.path) is not None
    assert norm(scan_results(s, summary=True)[0]) == norm(scan_results(s)[0])
    assert scan_results(s, summary=True)[0][ids[4]]["n_evals"] == 3
    TaskFile(s / "results" / "legacy-00000.h5").index()  # and an old file can be indexed in place
    assert list(summary_of(s / "results" / "legacy-00000.h5")) == [other.run_id]


def test_summary_out_of_step_with_the_data_loses_to_the_data(mixed_study):
    """Runs added by a writer that keeps no summary, a damaged summary: the data are read instead."""
    s, ids, df = mixed_study
    path = s / "results" / "task-x.h5"
    with h5py.File(path, "a", locking=False) as f:  # an older optbench adds a run to the file
        g = f["runs"].create_group("0123456789abcdef")
        g.create_dataset("evals", data=np.concatenate(rows(3)), maxshape=(None,), chunks=(64,))
        g.attrs["status"] = "finished"
        g.attrs["attempts"] = 1
    assert summary_of(path) is None
    fast, _ = scan_results(s, summary=True)
    assert fast["0123456789abcdef"]["status"] == "finished" and fast["0123456789abcdef"]["n_evals"] == 3
    assert norm(fast) == norm(scan_results(s)[0])
    TaskFile(path).index()
    assert "0123456789abcdef" in summary_of(path)
    # a damaged summary: garbage where the JSON was
    with h5py.File(path, "a", locking=False) as f:
        blob = f.attrs[SUMMARY].copy()
        blob[:20] = 0xFF
        f.attrs.modify(SUMMARY, blob)
    assert summary_of(path) is None
    fast, bad = scan_results(s, summary=True)
    assert not bad and norm(fast) == norm(scan_results(s)[0])


CRASH = """
import os, sys
import numpy as np
from optbench.storage import TaskFile, eval_row

class Crashing(TaskFile):
    def _before_summary(self):
        os._exit(9)  # killed after the data were written and flushed, before the summary: no close

tf = Crashing(sys.argv[1])
rid = sys.argv[2]
if sys.argv[3] == "finish":
    tf.set_status(rid, "finished", finished=9.0, wall_time=9.0)
else:
    tf.append(rid, eval_row({"epoch": 7, "step": 70, "train_loss": 0.5}))
"""


@pytest.mark.parametrize("what", ["finish", "append"])
def test_crash_between_data_and_summary_is_resolved_from_the_data(mixed_study, what):
    s, ids, df = mixed_study
    path = s / "results" / "task-x.h5"
    before = scan_results(s, summary=True)[0][ids[4]]
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH), str(path), ids[4], what],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 9, r.stderr
    assert summary_of(path) is None  # the generation moved on, the summary did not: stale
    full = scan_results(s)[0]
    fast, bad = scan_results(s, summary=True)
    assert not bad and norm(fast) == norm(full)
    if what == "finish":
        assert before["status"] == "running" and fast[ids[4]]["status"] == "finished"
    else:
        assert fast[ids[4]]["n_evals"] == before["n_evals"] + 1
    # the next write (the requeued task) rebuilds the summary from the data
    TaskFile(path).bump(ids[5], "resumes")
    assert summary_of(path) is not None
    assert norm(scan_results(s, summary=True)[0]) == norm(scan_results(s)[0])


def test_writers_taking_turns_keep_the_summary_current(tmp_path):
    """One TaskFile keeps the summary it wrote in memory; another writer's change must not be lost."""
    path = tmp_path / "results" / "t.h5"
    path.parent.mkdir()
    a, b = TaskFile(path), TaskFile(path)
    a.begin_run("r1", "{}", {"host": "a"})
    a.begin_run("r2", "{}", {"host": "a"})
    a.append("r1", rows(1)[0])
    b.set_status("r1", "failed", error="by b")  # same runs, other values
    a.append("r1", rows(1, start=1)[0])  # a's in-memory summary is out of date: it must read the file's
    b.begin_run("r4", "{}", {"host": "b"})  # and a run added
    a.append("r2", rows(1)[0])
    got = summary_of(path)
    assert got["r1"][:2] == ["failed", 2] and got["r1"][4] == "by b" and got["r2"][:2] == ["running", 1]
    assert got["r4"][:2] == ["running", 0] and got["r4"][5] == "b"
    # the file replaced by a new one (moved aside, a fresh task): a's memory of the old one is not used
    path.rename(tmp_path / "aside.h5")
    b.begin_run("r3", "{}", {})
    a.append("r3", rows(1)[0])
    assert set(summary_of(path)) == {"r3"} and summary_of(path)["r3"][1] == 1
    assert norm({e["run_id"]: e for e in storage.scan_file(path, summary=True)}) == \
        norm({e["run_id"]: e for e in storage.scan_file(path)})


def test_truncated_file_is_still_reported_and_salvage_is_indexed(mixed_study):
    s, ids, df = mixed_study
    a = s / "results" / "task-a.h5"
    data = a.read_bytes()
    a.write_bytes(data[: len(data) // 3])
    found, bad = scan_results(s, summary=True)
    assert [p.name for p, _ in bad] == ["task-a.h5"]
    assert found[ids[0]]["status"] == "failed"  # only the failed copy in task-x is left
    a.write_bytes(data)
    aside, salvage, n = storage.quarantine(a, "test")
    assert n == 2 and salvage is not None and summary_of(salvage) is not None
    found, bad = scan_results(s, summary=True)
    assert not bad and norm(found) == norm(scan_results(s)[0]) and found[ids[0]]["status"] == "finished"


def test_scan_cache_holds_what_the_summary_scan_read(mixed_study, no_run_reads):
    import os
    import time

    s, ids, df = mixed_study
    old = time.time() - 60
    for p in storage.result_files(s):
        os.utime(p, (old, old))
    first, _ = scan_results(s, cache=True, summary=True)
    assert (s / SCAN_CACHE).exists()
    cached = json.loads((s / SCAN_CACHE).read_text())["files"]
    assert sorted(cached) == ["task-a.h5", "task-x.h5"]
    assert norm(scan_results(s, cache=True, summary=True)[0]) == norm(first)


def test_large_summary_is_a_dataset_and_moves_back(tmp_path, monkeypatch):
    """Over 60 kB (long errors, many runs) the summary is the dataset /summary; below, the attribute."""
    path = tmp_path / "results" / "t.h5"
    path.parent.mkdir()
    tf = TaskFile(path)
    for i in range(3):
        tf.begin_run(f"r{i}", "{}", {"host": "h"})
        tf.set_status(f"r{i}", "failed", error=f"RuntimeError: {i} " + "x" * 25_000)
    with h5py.File(path, "r", locking=False) as f:
        assert SUMMARY in f and SUMMARY not in f.attrs
    with monkeypatch.context() as m:
        m.setattr(storage, "run_entry", refuse)
        fast = {e["run_id"]: e for e in storage.scan_file(path, summary=True)}
    assert norm(fast) == norm({e["run_id"]: e for e in storage.scan_file(path)})
    assert fast["r2"]["error"].startswith("RuntimeError: 2 xxx") and len(fast["r2"]["error"]) == 25_016
    for i in range(3):
        tf.set_status(f"r{i}", "failed", error="short")
    with h5py.File(path, "r", locking=False) as f:
        assert SUMMARY not in f and SUMMARY in f.attrs
        assert len(f.attrs[SUMMARY]) == 1024  # padded to a power of two (shrunk when 4x too large)
    tf.append("r0", rows(1)[0])
    assert summary_of(path)["r0"][:2] == ["failed", 1]


def _missing():
    raise ImportError("cannot import name 'make_fid' from 'h5py._hl.files'")


def _fapl_without_locking():
    from h5py._hl.files import make_fcpl, make_fid

    def make_fapl(*args, **kwargs):
        raise TypeError("make_fapl() got an unexpected keyword argument 'locking'")

    return make_fid, make_fapl, make_fcpl


def _make_fid_called_otherwise():
    from h5py._hl.files import make_fapl, make_fcpl

    def make_fid(name, mode, userblock_size):  # one that the five-argument call would fail
        raise AssertionError("called with a signature it does not have")

    return make_fid, make_fapl, make_fcpl


@pytest.mark.parametrize("private", [_missing, _fapl_without_locking, _make_fid_called_otherwise],
                         ids=["missing", "fapl-changed", "make_fid-changed"])
def test_without_h5pys_private_helpers_files_are_written_and_scanned_the_same(mixed_study, monkeypatch, tmp_path,
                                                                            private):
    """storage opens files through three private helpers of h5py 3 (property lists made once); an h5py
    without them, or whose helpers take other arguments, must fall back to the public
    ``h5py.File(..., locking=False)``, not break status or the workers' writes."""
    s, ids, df = mixed_study
    before, bad_before = scan_results(s, summary=True)
    assert isinstance(storage._FAST, tuple)  # this h5py's helpers are the ones storage uses
    monkeypatch.setattr(storage, "_h5py_private", private)
    monkeypatch.setattr(storage, "_FAST", None)  # decided again at the next open
    opened = []
    real_file = h5py.File
    monkeypatch.setattr(h5py, "File", lambda *a, **k: opened.append(k) or real_file(*a, **k))
    for summary in (True, False):
        after, bad = scan_results(s, summary=summary)
        assert not bad and not bad_before and norm(after) == norm(before)
    tf = TaskFile(tmp_path / "fallback.h5")
    tf.begin_run("r0", "{}", {"host": "n0", "job_id": "1_0", "requeues": 0})
    for r in rows(3):
        tf.append("r0", r)
    tf.set_status("r0", "finished", finished=1.0, wall_time=2.0)
    (entry,) = storage.scan_file(tmp_path / "fallback.h5", summary=True)
    assert entry["status"] == "finished" and entry["n_evals"] == 3
    with open_h5(tmp_path / "fallback.h5") as f:
        assert list(f["runs"]["r0"]["evals"]["epoch"]) == [0, 1, 2]
    assert {"locking": False} in opened  # the public call, still without HDF5's file locks
    assert storage._FAST is False  # decided once: the fallback does not retry the helpers at each open
    with pytest.raises(FileNotFoundError):  # the open's own errors still reach the caller
        storage.scan_file(tmp_path / "no-such-file.h5")
