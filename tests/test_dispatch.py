"""Chunking, array splitting and executor parameters (no cluster needed)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from optbench import dispatch
from optbench.profiles import load_profile
from tests.conftest import ROOT


def todo(counts: dict[str, int]) -> pd.DataFrame:
    rows = [{"run_id": f"{p}-{i}", "problem": p} for p, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n,per_task,max_array", [(300, 5, 50), (53_760, 10, 1001), (7, 3, 2), (1, 10, 1001)])
def test_arrays_never_exceed_max_array_size_and_match_prediction(n, per_task, max_array, tmp_path):
    p = tmp_path / "p.toml"
    p.write_text(f'executor = "slurm"\nruns_per_task = {per_task}\n')
    prof = load_profile(p)
    arrays = dispatch.build_arrays(todo({"a": n}), prof, max_array)
    assert all(len(a.chunks) <= max_array for a in arrays)
    assert len(arrays) == dispatch.predict_arrays({"a": n}, prof, max_array) == math.ceil(math.ceil(n / per_task) / max_array)
    ids = [r for a in arrays for c in a.chunks for r in c]
    assert sorted(ids) == sorted(todo({"a": n})["run_id"])  # every run exactly once
    assert all(len(c) <= per_task for a in arrays for c in a.chunks)


def test_per_problem_resources_make_separate_arrays():
    prof = load_profile(ROOT / "slurm" / "profiles" / "gpu-cluster.toml")
    arrays = dispatch.build_arrays(todo({"quadratic_deep": 450, "cifar100_allcnnc": 5}), prof, 1001)
    by_problem = {a.problem: a for a in arrays}
    assert by_problem["quadratic_deep"].resources.gpus_per_node == 0
    assert [len(c) for c in by_problem["quadratic_deep"].chunks] == [200, 200, 50]
    assert by_problem["cifar100_allcnnc"].resources.gpus_per_node == 1
    assert [len(c) for c in by_problem["cifar100_allcnnc"].chunks] == [2, 2, 1]


def test_slurm_executor_gets_profile_parameters(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    # submitit refuses to build a Slurm executor where `srun` is not installed; the parameters
    # checked here need no cluster (make test-unit runs on machines without Slurm)
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    prof = load_profile(ROOT / "slurm" / "profiles" / "gpu-cluster.toml")
    ex = dispatch.make_executor(prof, prof.resources("svhn_wrn164"), tmp_path / "%j", "optbench-x")
    # submitit gives up on a job after max_num_timeout time limits: ours is high on purpose, a long
    # run that keeps making progress must never be dropped after 3 rounds
    assert ex.max_num_timeout == 10_000
    p = ex.parameters
    assert p["time"] == 720 and p["gpus_per_node"] == 1 and p["cpus_per_task"] == 8 and p["partition"] == "gpu"
    assert p["signal_delay_s"] == 120 and p["array_parallelism"] == 64 and p["mem"] == "32768M"


def test_local_executor_one_task_per_core(tmp_path):
    prof = load_profile(None, "local")
    arrays = dispatch.build_arrays(todo({"a": 10, "b": 3}), prof, 10**9)
    assert len(arrays) == 1 and 1 <= len(arrays[0].chunks) <= 13
    assert sorted(r for c in arrays[0].chunks for r in c) == sorted(todo({"a": 10, "b": 3})["run_id"])
