"""The CLI end to end on the local executor, and bad input: one line, non-zero exit, nothing written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_STUDY

OPTBENCH = [sys.executable, "-m", "optbench"]


def run(*args, cwd=None, env=None):
    return subprocess.run(OPTBENCH + [str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=600)


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


BAD_STUDIES = {
    "malformed_toml": ('name = "x"\nproblems = [', "malformed TOML"),
    "unknown_optimizer": (TINY_STUDY.replace('"sgd", "adam"', '"sgd", "adamm"'), "unknown optimizer 'adamm'"),
    "unknown_problem": (TINY_STUDY.replace('problems = ["quadratic_deep"]', 'problems = ["quadratc"]'),
                        "unknown problem 'quadratc'"),
    "unknown_schedule": (TINY_STUDY.replace('schedules = ["none"]', 'schedules = ["cosin"]'), "unknown schedule"),
    "unknown_top_key": ('budgets = 3\n' + TINY_STUDY, "budgets: unknown key"),
    "wrong_type": (TINY_STUDY.replace("num_epochs = 2", 'num_epochs = "2"'), "expected int"),
    "empty_grid": (TINY_STUDY.replace('"sgd", "adam"', ""), "optimizers: must not be empty"),
    "zero_budget": (TINY_STUDY.replace("small = 2", "small = 0"), "must be a positive integer"),
    "negative_epochs": (TINY_STUDY.replace("num_epochs = 2", "num_epochs = -1"), "must be a positive integer"),
    "duplicated_optimizer": (TINY_STUDY.replace('"sgd", "adam"', '"sgd", "sgd"'), "duplicated entry 'sgd'"),
    "not_nested_budgets": (TINY_STUDY.replace("small = 2 }", "small = 2, large = 1 }"), "budgets must grow"),
    "duplicated_seed": (TINY_STUDY.replace("seeds = [42]", "seeds = [42, 42]"), "duplicated seed"),
    "unknown_problem_arg": (TINY_STUDY.replace("dim = 10", "dimm = 10"), "dimm: unknown key"),
    "missing_name": (TINY_STUDY.replace('name = "tiny"', ""), "name: missing"),
    "bad_search": (TINY_STUDY.replace("[tuning]", '[tuning]\nsearch = "grid"'), "unknown search 'grid'"),
}


def _plan(tmp_path, text=TINY_STUDY, name="s"):
    study = tmp_path / f"{name}.toml"
    study.write_text(text)
    assert run("plan", study, "-o", tmp_path / name).returncode == 0
    return tmp_path / name


def _edited_plan(tmp_path):
    import h5py

    s = _plan(tmp_path)
    with h5py.File(s / "plan.h5", "a") as f:
        f["num_epochs"][0] = 99
    return ("status", s)


def _other_study_dir(tmp_path):
    s = _plan(tmp_path)
    other = tmp_path / "other.toml"
    other.write_text(TINY_STUDY.replace('name = "tiny"', 'name = "other"'))
    return ("plan", other, "-o", s)


def _profile(tmp_path, text):
    s = _plan(tmp_path)
    p = tmp_path / "profile.toml"
    p.write_text(text)
    return ("submit", s, "--profile", p)


def _missing_data(tmp_path):
    text = TINY_STUDY.replace('problems = ["quadratic_deep"]', 'problems = ["fmnist_2c2d"]').replace(
        "[problem_settings.quadratic_deep]\nnum_epochs = 2\nbatch_size = 16\ndim = 10\ntrain_size = 64",
        f"[problem_settings.fmnist_2c2d]\nnum_epochs = 1\ndata_dir = \"{tmp_path / 'no-data'}\"")
    return ("submit", _plan(tmp_path, text))


#: every bad input: (id, build(tmp_path) -> CLI args, expected text of the one-line error)
BAD_INPUTS = [(f"study-{k}", (lambda tmp_path, text=v[0]: ("plan", _write(tmp_path, text), "-o", tmp_path / "out")),
               v[1]) for k, v in sorted(BAD_STUDIES.items())] + [
    ("study-file-missing", lambda t: ("plan", t / "missing.toml", "-o", t / "out"), "study file not found"),
    ("study-file-missing-and-no-output", lambda t: ("plan", t / "missing.toml"), "study file not found"),
    ("study-bad-and-no-output", lambda t: ("plan", _write(t, TINY_STUDY.replace('"adam"', '"adamx"'))),
     "adamx"),
    ("plan-without-output", lambda t: ("plan", _write(t, TINY_STUDY)), "-o/--output DIR is required"),
    ("study-bad-space", lambda t: ("plan", _write(t, TINY_STUDY + '[tuning.space.sgd]\nlr = ["log", 0, 1]\n'),
                                   "-o", t / "out"), "log ranges need low > 0"),
    ("study-bad-schedule-arg", lambda t: ("plan", _write(t, TINY_STUDY + "[schedule_settings.none]\nx = 1\n"),
                                          "-o", t / "out"), "schedule_settings.none.x: unknown key"),
    ("study-dir-of-another-study", _other_study_dir, "holds the plan of study 'tiny'"),
    ("submit-missing-dir", lambda t: ("submit", t / "nope"), "no such study directory"),
    ("status-missing-dir", lambda t: ("status", t / "nope"), "no such study directory"),
    ("report-missing-dir", lambda t: ("report", t / "nope"), "no such study directory"),
    ("status-not-a-study", lambda t: ("status", t), "not a study directory"),
    ("plan-edited-by-hand", _edited_plan, "edited by hand"),
    ("report-before-results", lambda t: ("report", _plan(t)), "no results yet"),
    ("profile-missing", lambda t: ("submit", _plan(t), "--profile", t / "missing.toml"), "profile not found"),
    ("profile-malformed", lambda t: _profile(t, "executor = "), "cannot read profile"),
    ("profile-unknown-key", lambda t: _profile(t, 'executor = "slurm"\ngpus = 1\n'), "unknown key 'gpus'"),
    ("profile-bad-executor", lambda t: _profile(t, 'executor = "pbs"\n'), "executor must be 'local' or 'slurm'"),
    ("profile-zero-runs-per-task", lambda t: _profile(t, "runs_per_task = 0\n"), "must be >= 1"),
    ("data-directory-missing", _missing_data, "data directory"),
    ("resubmit-of-a-slurm-study-without-profile", lambda t: _submitted_to_slurm(t, "gone.toml"),
     "its last submission went to Slurm with profile 'gpu-cluster'"),
    ("resubmit-of-an-old-slurm-study-without-profile", lambda t: _submitted_to_slurm(t, None), "pass --profile FILE"),
]


def _submitted_to_slurm(tmp_path, profile_file):
    """A study whose last submission (its ledger entry, as dispatch writes it) went to Slurm with a
    profile file that is gone (or, before profile files were recorded, none), then ``optbench submit``
    with neither --profile nor --executor: it must not fall back to training every run here."""
    from optbench import dispatch

    s = _plan(tmp_path)
    entry = {"stamp": "20261207T000000-abcdef", "executor": "slurm", "profile": "gpu-cluster",
             "created": 0.0, "sbatch_calls": 1, "tasks": []}
    if profile_file:
        entry["profile_path"] = str(tmp_path / profile_file)
    dispatch.write_ledger(s, entry)
    return ("submit", s)


def _write(tmp_path, text):
    p = tmp_path / "study.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("build,expected", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_one_line_error_nothing_written(build, expected, tmp_path):
    """Each bad input: a one-line error naming what and where, non-zero exit, no traceback, nothing written."""
    args = build(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    r = run(*args)
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("optbench: error: "), r.stderr
    assert "Traceback" not in r.stderr and expected in lines[0], lines[0]
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, set(after) ^ set(before)
    assert not (tmp_path / "out").exists()


def test_there_are_at_least_twenty_bad_inputs():
    assert len(BAD_INPUTS) >= 20


def test_local_end_to_end_plan_submit_status_report(tiny_study, tmp_path):
    s = tmp_path / "study"
    r = run("plan", tiny_study, "-o", s)
    assert r.returncode == 0, r.stderr
    assert "8 runs" in r.stdout and "by optimizer: sgd 4, adam 4" in r.stdout
    r = run("submit", s, "--executor", "local")
    assert r.returncode == 0, r.stderr + r.stdout
    # two waves: tuning and one-shot first, then the re-runs once their budget's best is known
    assert r.stdout.count("submitted") >= 2 and "nothing to submit (8 done)" in r.stdout, r.stdout
    r2 = run("submit", s, "--executor", "local")
    assert r2.returncode == 0 and "nothing to submit" in r2.stdout and "submitting" not in r2.stdout
    assert "last submission" not in r2.stdout  # an executor was given
    r = run("status", s)
    assert r.returncode == 0 and "8 runs, 8 done" in r.stdout, r.stdout
    r = run("report", s)
    assert r.returncode == 0, r.stderr
    report = s / "report" / "report.html"
    assert report.exists() and "data:image/png;base64" in report.read_text()
    assert (s / "report" / "tables" / "rankings.csv").exists()
    # re-runs were resolved to the best tuning trial of their budget
    import json

    res = json.loads((s / "resolved.json").read_text())
    assert len(res) == 2 and all(v["hparams"]["lr"] > 0 for v in res.values())


def test_plan_status_report_work_without_torch(tiny_study, tmp_path):
    """Login nodes have no torch: plan, status and report must not import it."""
    code = f"""
import sys
sys.modules['torch'] = None  # any `import torch` now raises ImportError
from optbench.cli import main
import analysis
assert main(['plan', {str(tiny_study)!r}, '-o', {str(tmp_path / 's')!r}]) == 0
assert main(['status', {str(tmp_path / 's')!r}]) == 0
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_resubmit_without_profile_continues_with_the_last_submissions_profile(tiny_study, tmp_path):
    """`optbench submit DIR` with neither --profile nor --executor uses the profile file the study's
    last submission used (its ledger records it), not the built-in local default."""
    import json

    s = tmp_path / "study"
    assert run("plan", tiny_study, "-o", s).returncode == 0
    prof = tmp_path / "mine.toml"
    prof.write_text('name = "mine"\nexecutor = "local"\nruns_per_task = 3\n')
    r = run("submit", s, "--profile", prof, "--dry-run")
    assert r.returncode == 0 and "last submission" not in r.stdout, r.stderr
    assert not (s / "submissions").exists()  # a dry run records nothing
    r = run("submit", s, "--profile", prof)
    assert r.returncode == 0, r.stderr + r.stdout
    entries = [json.loads(p.read_text()) for p in sorted((s / "submissions").glob("*.json"))]
    assert entries and {e["profile_path"] for e in entries} == {str(prof.resolve())}
    assert {len(t["run_ids"]) for e in entries for t in e["tasks"]} <= {1, 2, 3}  # the profile's chunking
    r = run("submit", s, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"using the profile of the study's last submission: {prof.resolve()}" in r.stdout, r.stdout
    r = run("status", s)
    assert r.returncode == 0 and f"to local, profile mine ({prof.resolve()})" in r.stdout, r.stdout
    # a damaged newest record is passed over (with a warning), not taken for "no submission yet"
    (s / "submissions" / "zzzz-damaged.json").write_text('{"stamp": ')
    r = run("submit", s, "--dry-run")
    assert r.returncode == 0 and "using the profile of the study's last submission" in r.stdout, r.stdout
    assert "unreadable submission record" in r.stderr and "zzzz-damaged.json" in r.stderr, r.stderr
    prof.unlink()  # a local study whose profile file is gone: the built-in local default, no error
    r = run("submit", s, "--dry-run")
    assert r.returncode == 0 and "last submission" not in r.stdout, r.stderr + r.stdout
