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


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_bad_study_one_line_error_nothing_written(case, write_study, tmp_path):
    text, expected = BAD_STUDIES[case]
    study = write_study(text)
    out = tmp_path / "out"
    r = run("plan", study, "-o", out)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and expected in lines[0] and str(study) in lines[0], lines[0]
    assert not out.exists()


def test_bad_cli_inputs(tmp_path, tiny_study):
    cases = [
        (("plan", tmp_path / "missing.toml", "-o", tmp_path / "o"), "study file not found"),
        (("submit", tmp_path / "nope"), "no such study directory"),
        (("status", tmp_path / "nope"), "no such study directory"),
        (("report", tmp_path / "nope"), "no such study directory"),
        (("status", tmp_path), "not a study directory"),
    ]
    for args, expected in cases:
        before = tree(tmp_path)
        r = run(*args)
        assert r.returncode != 0 and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and expected in r.stderr, (args, r.stderr)
        assert tree(tmp_path) == before
    assert run("plan", tiny_study, "-o", tmp_path / "s").returncode == 0
    before = tree(tmp_path)
    r = run("submit", tmp_path / "s", "--profile", tmp_path / "missing-profile.toml")
    assert r.returncode != 0 and "profile not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert tree(tmp_path) == before


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
