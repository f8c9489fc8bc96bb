"""GPU numerics (optbench.numerics): the profile keys `precision` and `cudnn_benchmark`, from the
profile file through dispatch to the worker's torch settings and the run's recorded attributes.

The settings are CUDA/cuDNN ones; PyTorch's CPU build accepts and reports them, so the whole path is
checked here. Whether they change a GPU's arithmetic is PyTorch's business; that they are set is ours.
"""
from __future__ import annotations

import h5py
import pytest
import torch

from optbench import dispatch, numerics, planner
from optbench.profiles import ProfileError, load_profile
from optbench.study import load_study


@pytest.fixture
def restore_numerics():
    """The settings are process-wide: put PyTorch's own values back for the tests that follow."""
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
              torch.backends.cudnn.rnn.fp32_precision, torch.backends.cudnn.benchmark)
    yield
    (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
     torch.backends.cudnn.rnn.fp32_precision, torch.backends.cudnn.benchmark) = before


def test_configure_sets_matmul_convolution_and_rnn_alike(restore_numerics):
    # PyTorch's default mixes them: TF32 allowed in cuDNN convolutions and RNNs, not in matmuls
    assert numerics.configure("tf32", True) == {"precision": "tf32", "cudnn_benchmark": True}
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
            torch.backends.cudnn.rnn.fp32_precision, torch.backends.cudnn.benchmark) == ("tf32", "tf32", "tf32", True)
    numerics.configure("fp32")
    assert numerics.current() == {"matmul": "ieee", "conv": "ieee", "rnn": "ieee", "cudnn_benchmark": False}
    with pytest.raises(ValueError, match="precision"):
        numerics.configure("bf16")


def test_profile_keys_are_validated_and_reach_the_task_options(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('executor = "slurm"\nprecision = "tf32"\n[problems.digits_mlp]\nprecision = "fp32"\n'
                 'cudnn_benchmark = true\n')
    prof = load_profile(p)
    assert (prof.defaults.precision, prof.defaults.cudnn_benchmark) == ("tf32", False)
    res = prof.resources("digits_mlp")
    assert (res.precision, res.cudnn_benchmark) == ("fp32", True)
    opts = dispatch.task_options(prof, res, 4)
    assert opts["precision"] == "fp32" and opts["cudnn_benchmark"] is True
    assert load_profile(None).defaults.precision == "fp32"
    for bad, key in (('precision = "fp16"', "precision"), ('precision = 32', "precision"),
                     ("cudnn_benchmark = 1", "cudnn_benchmark")):
        p.write_text(bad + "\n")
        with pytest.raises(ProfileError, match=key):
            load_profile(p)


def test_worker_trains_with_the_profiles_numerics_and_records_them(tiny_study, tmp_path, monkeypatch,
                                                                  restore_numerics):
    from optbench import trainer
    from optbench.worker import ChunkRunner

    seen = []
    real = trainer.train_run

    def spy(*a, **kw):
        seen.append(numerics.current())  # what is in force while the run trains
        return real(*a, **kw)

    monkeypatch.setattr(trainer, "train_run", spy)
    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    rids = list(df[df.kind != "rerun"].run_id)[:2]
    ChunkRunner()(str(study_dir), "task-t", rids[:1], {"threads": 1, "device": "cpu", "precision": "tf32",
                                                       "cudnn_benchmark": True})
    ChunkRunner()(str(study_dir), "task-f", rids[1:], {"threads": 1, "device": "cpu"})  # the defaults
    assert seen == [{"matmul": "tf32", "conv": "tf32", "rnn": "tf32", "cudnn_benchmark": True},
                    {"matmul": "ieee", "conv": "ieee", "rnn": "ieee", "cudnn_benchmark": False}]
    for task, rid, want in (("task-t", rids[0], ("tf32", True)), ("task-f", rids[1], ("fp32", False))):
        with h5py.File(study_dir / "results" / f"{task}.h5") as f:
            a = f["runs"][rid].attrs
            assert (str(a["precision"]), bool(a["cudnn_benchmark"])) == want
