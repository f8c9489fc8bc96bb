"""The short chaos run (slurm/chaos.py) against the real local cluster: faults at random, nothing lost."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slurm


def test_short_chaos_run_loses_nothing(slurm_cluster, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "slurm" / "chaos.py"), "--minutes", "1.5", "--seed", "1",
                        "--dir", str(tmp_path / "chaos")], capture_output=True, text=True, timeout=1500)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    table = dict(re.findall(r"^\s+(\w+)\s+(\d+)$", r.stdout, flags=re.M))
    assert int(table["runs_planned"]) == int(table["runs_finished"]) > 0
    for key in ("runs_not_finished_exactly_once", "evaluation_rows_lost", "evaluation_rows_duplicated",
                "retrained_from_scratch_despite_checkpoint"):
        assert table[key] == "0", (key, r.stdout)
    faults = sum(int(table[k]) for k in ("requeue", "usr2", "preempt", "kill9", "scancel", "double_submit", "truncate"))
    assert faults >= 5, r.stdout
    # a truncated result file was moved aside (never deleted) and its runs recovered or re-trained
    assert int(table["truncate"]) >= 1 and int(table["result_files_quarantined"]) >= int(table["truncate"]), r.stdout
