"""The cost model: sizes as the problem builders make them, device profiles, `optbench plan --estimate`."""
from __future__ import annotations

import json

import pytest

from optbench import estimate, planner, problems
from optbench.cli import main
from optbench.errors import OptbenchError
from optbench.study import load_study
from tests.conftest import ROOT


def built_sizes(name: str, args: dict) -> estimate.Sizes:
    task = problems.build(name, {**problems.get(name).args, **args}, seed=0)
    return estimate.Sizes(task.n_train, sum(int(task.splits[k][0].shape[0]) for k in ("train_eval", "valid", "test")))


@pytest.mark.parametrize("name,args", [
    ("quadratic_deep", {}),
    ("quadratic_deep", {"train_size": 300}),
    ("digits_mlp", {}),
    ("uniform_tokens_lm", {"n_train_tokens": 20_000, "n_eval_tokens": 3_001}),
    ("shakespeare_char_rnn", {"num_chars": 30_001, "seq_len": 37}),
    ("tokens_tf_zipf_none_relu", {"n_train_tokens": 9_000, "n_eval_tokens": 2_001, "seq_len": 16}),
])
def test_sizes_of_offline_problems_match_their_builders(name, args):
    assert estimate.problem_sizes(name, args) == built_sizes(name, args)


@pytest.mark.parametrize("name", ["digits_mlp_balanced", "digits_mlp_heavy_tailed"])
def test_sizes_of_class_imbalanced_problems_are_close(name):
    """The class counts need the data, so the size model approximates them: an upper bound (the mean
    class count for the smallest one) within 10 %."""
    got, built = estimate.problem_sizes(name), built_sizes(name, {})
    assert built.n_train <= got.n_train <= 1.1 * built.n_train
    assert built.eval_examples <= got.eval_examples <= 1.3 * built.eval_examples  # small valid/test splits: 30 %


@pytest.mark.parametrize("name,dataset,n_train,n_test,args", [
    ("fmnist_2c2d", "fmnist", 300, 50, {"n_valid": 40, "train_eval_size": 100}),
    ("cifar10_3c3d", "cifar10", 250, 30, {"n_valid": 20, "train_eval_size": 500, "max_train": 200}),
    ("svhn_wrn164", "svhn", 260, 40, {"n_valid": 30, "train_eval_size": 60, "train_images": 200}),
    ("tolstoi_char_rnn", "tolstoi", 9_000, 2_000, {"n_valid": 1_001, "train_eval_size": 777}),
])
def test_sizes_of_dataset_problems_match_their_builders_on_fake_data(tmp_path, name, dataset, n_train, n_test, args):
    from optbench.problems import fake_data
    from optbench.problems.datasets import clear_cache

    clear_cache()
    fake_data.write_fake(dataset, tmp_path, n_train=n_train, n_test=n_test)
    args = {**args, "data_dir": str(tmp_path)}
    if dataset == "tolstoi":  # write_tolstoi puts ceil(0.8 n) characters in train.npy
        import numpy as np

        sizes = {"train": len(np.load(tmp_path / "tolstoi" / "train.npy")), "test": len(np.load(tmp_path / "tolstoi" / "test.npy"))}
    else:
        sizes = {"train": n_train, "test": n_test}
    assert estimate.problem_sizes(name, args, {dataset: sizes}) == built_sizes(name, args)
    clear_cache()


def test_published_sizes_give_the_deepobs_steps_per_epoch():
    # CIFAR-10: 40,000 training images / 128 = 312 steps; SVHN: 64,000 - 26,032 = 37,968 / 128 = 296;
    # MNIST VAE: 50,000 / 64 = 781; All-CNN-C: 40,000 / 256 = 156; Tolstoi: 1,959,710 chars -> 39,194 windows / 50 = 783
    expect = {"cifar10_3c3d": 312, "svhn_wrn164": 296, "mnist_vae": 781, "cifar100_allcnnc": 156,
              "tolstoi_char_rnn": 783, "quadratic_deep": 7, "fmnist_2c2d": 390}
    for name, spe in expect.items():
        assert estimate.problem_sizes(name).n_train // problems.get(name).batch_size == spe, name


def device_file(tmp_path, speeds, **top):
    return estimate.write_device(tmp_path / "dev.toml", {"name": "dev", "measured": True, **top}, speeds)


def test_estimate_is_runs_times_steps_over_speed(tmp_path):
    study = load_study(ROOT / "jobs" / "crowded_valley.toml")
    df = planner.records_to_frame(planner.expand(study))
    speeds = {p: {"batch_size": problems.get(p).batch_size, "steps_per_s": 10.0, "eval_examples_per_s": 1e4}
              for p in study.problems}
    dev = estimate.load_device(device_file(tmp_path, speeds, runs_in_parallel=2, parallel_speedup=1.6))
    est = estimate.estimate(df, dev)
    row = est.set_index("problem").loc["cifar10_3c3d"]
    per_run_s = 100 * 312 / 10.0 + 101 * (10_000 + 10_000 + 10_000) / 1e4
    assert row["runs"] == 6720 and row["steps_per_run"] == 100 * 312
    assert row["device_hours"] == pytest.approx(6720 * per_run_s / 3600 / 1.6)
    text = estimate.format_estimate(est, dev, "crowded_valley")
    assert "cifar10_3c3d" in text and "total" in text and "53,760" in text


def test_template_without_numbers_is_refused(tmp_path):
    p = tmp_path / "gpu.toml"
    p.write_text('name = "gpu"\nmeasured = false\n[problems.quadratic_deep]\n# steps_per_s = ?\n')
    dev = estimate.load_device(p)
    df = planner.records_to_frame(planner.expand(load_study(ROOT / "jobs" / "quickstart.toml")))
    with pytest.raises(OptbenchError, match="template"):
        estimate.estimate(df, dev)


def test_repository_device_profiles_load():
    for p in sorted((ROOT / "slurm" / "devices").glob("*.toml")):
        estimate.load_device(p)


def test_cli_plan_estimate(tmp_path, capsys):
    speeds = {p: {"batch_size": problems.get(p).batch_size, "steps_per_s": 100.0, "eval_examples_per_s": 1e5}
              for p in ("quadratic_deep", "digits_mlp", "mnist1d_mlp", "shakespeare_char_rnn")}
    dev = device_file(tmp_path, speeds)
    assert main(["plan", str(ROOT / "jobs" / "quickstart.toml"), "--estimate", "--device", str(dev)]) == 0
    out = capsys.readouterr().out
    assert "device-hours" in out and "quadratic_deep" in out
    assert json.loads(json.dumps(out))  # printable


def test_fitted_step_time_setup_and_task_start_enter_the_estimate(tmp_path):
    """Batch sizes other than the measured one use the fitted line, not constant examples/s; every run
    pays its set-up and every array task its start-up. Expected values computed by hand here."""
    import pandas as pd

    speeds = {"digits_mlp": {"batch_size": 64, "steps_per_s": 2000.0, "eval_examples_per_s": 1e6, "setup_s": 0.02,
                             "step_s_fixed": 3e-4, "step_s_per_example": 1e-6}}
    dev = estimate.load_device(device_file(tmp_path, speeds, task_start_s=1.5, parallel_speedup=1.25))
    plan = pd.DataFrame({"problem": ["digits_mlp"] * 5, "batch_size": [8, 8, 8, 64, 64], "num_epochs": [3] * 5,
                         "problem_args": ["{}"] * 5})
    est = estimate.estimate(plan, dev, runs_per_task=2).set_index("problem").loc["digits_mlp"]
    n_train = 1797 - 2 * round(0.15 * 1797)  # 1257 training digits
    run_s = {b: 0.02 + 3 * (n_train // b) * (3e-4 + 1e-6 * b) + 4 * 1797 / 1e6 for b in (8, 64)}
    tasks = 3  # ceil(5 / 2)
    assert est["tasks"] == tasks and est["runs"] == 5
    assert est["device_hours"] == pytest.approx((3 * run_s[8] + 2 * run_s[64] + tasks * 1.5) / 3600 / 1.25)
    # without the fit: constant examples per second from the measured batch size (8 examples = 1/8 step)
    del speeds["digits_mlp"]["step_s_fixed"], speeds["digits_mlp"]["step_s_per_example"]
    dev = estimate.load_device(device_file(tmp_path, speeds))
    est = estimate.estimate(plan, dev, runs_per_task=10).set_index("problem").loc["digits_mlp"]
    run_s = {b: 0.02 + 3 * (n_train // b) * (b / 64) / 2000.0 + 4 * 1797 / 1e6 for b in (8, 64)}
    assert est["device_hours"] == pytest.approx((3 * run_s[8] + 2 * run_s[64]) / 3600)
    assert "optimistic for smaller batches" in estimate.format_estimate(estimate.estimate(plan, dev), dev)


@pytest.mark.parametrize("bad", [{"step_s_fixed": 1e-3}, {"step_s_fixed": -1e-3, "step_s_per_example": 1e-6},
                                 {"setup_s": -1.0}, {"step_s_fixed": 0.0, "step_s_per_example": 0.0}])
def test_device_profile_step_fit_is_validated(tmp_path, bad):
    speeds = {"digits_mlp": {"batch_size": 64, "steps_per_s": 2000.0, "eval_examples_per_s": 1e6, **bad}}
    with pytest.raises(OptbenchError, match="digits_mlp"):
        estimate.load_device(device_file(tmp_path, speeds))


def test_step_time_fit():
    from optbench.bench import fit_step_time

    f = fit_step_time([8, 64, 256], [2e-4 + 3e-6 * b for b in (8, 64, 256)])
    assert f.fixed == pytest.approx(2e-4) and f.per_example == pytest.approx(3e-6)
    f = fit_step_time([10, 20], [0.5e-3, 1.5e-3])  # the line would cross zero below B = 5: proportional instead
    assert f.fixed == 0 and f.per_example == pytest.approx((10 * 0.5e-3 + 20 * 1.5e-3) / (10**2 + 20**2))
    f = fit_step_time([10, 20], [2e-3, 1e-3])  # slower at the smaller batch (noise): constant
    assert f.per_example == 0 and f.fixed == pytest.approx(1.5e-3)
    with pytest.raises(ValueError):
        fit_step_time([8, 8], [1e-3, 2e-3])
