"""Shared fixtures. Slurm tests need the real cluster from slurm/test.sh; in CI they must run."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def slurm_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "UP" in out


@pytest.fixture(scope="session")
def slurm_cluster():
    """The running local cluster; a hard failure (not a skip) when the test command promised one."""
    if not slurm_up():
        if os.environ.get("OPTBENCH_TEST_SLURM") or os.environ.get("CI"):
            pytest.fail("the local Slurm cluster is not up (slurm/test.sh brings it up)")
        pytest.skip("no Slurm cluster (run `make test` to bring one up)")
    return True


@pytest.fixture
def write_study(tmp_path):
    """Write a study TOML into tmp_path and return its path."""

    def write(text: str, name: str = "study.toml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


TINY_STUDY = """
name = "tiny"
problems = ["quadratic_deep"]
optimizers = ["sgd", "adam"]
schedules = ["none"]
[problem_settings.quadratic_deep]
num_epochs = 2
batch_size = 16
dim = 10
train_size = 64
[oneshot]
seeds = [42]
[tuning]
budgets = { small = 2 }
rerun_seeds = [43]
"""


@pytest.fixture
def tiny_study(write_study):
    return write_study(TINY_STUDY)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The training tests are tiny: one thread is faster than two fighting other processes for 2 cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def direct_quadratic_mean(theta, hessian, x) -> float:
    """P1's loss ½(θ−x_i)ᵀQ(θ−x_i) averaged over the examples one by one, in float64 numpy (no moments):
    the independent formula the closed-form evaluation is checked against."""
    import numpy as np

    th, q, xs = theta.detach().double().numpy(), hessian.double().numpy(), x.double().numpy()
    return float(np.mean([0.5 * (th - xi) @ q @ (th - xi) for xi in xs]))
