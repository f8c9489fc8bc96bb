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
