"""The planner: run counts, stable content-hash ids, the plan file and its public API."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from optbench import planner
from optbench.errors import PlanError
from optbench.record import RunRecord, derive_seed
from optbench.study import load_study, parse_study
from tests.conftest import ROOT

REQUIRED = ["run_id", "problem", "optimizer", "schedule", "budget", "trial", "seed", "batch_size", "num_epochs"]


def test_crowded_valley_plans_53760_runs():
    study = load_study(ROOT / "jobs" / "crowded_valley.toml")
    df = planner.records_to_frame(planner.expand(study))
    assert len(df) == 8 * 15 * 4 * 112 == 53_760
    per_triple = df.groupby(["problem", "optimizer", "schedule"]).size()
    assert (per_triple == 112).all()
    t = df[(df.problem == "fmnist_2c2d") & (df.optimizer == "adam") & (df.schedule == "cosine")]
    assert (t.kind == "oneshot").sum() == 10 and sorted(t[t.kind == "oneshot"].seed) == list(range(42, 52))
    assert (t.kind == "tuning").sum() == 75 and set(t[t.kind == "tuning"].seed) == {42}
    assert (t.kind == "rerun").sum() == 27
    # nested prefixes: a trial carries the smallest budget that holds it
    tune = t[t.kind == "tuning"].set_index("trial")["budget"]
    assert set(tune[tune.index < 25]) == {"small"} and set(tune[(tune.index >= 25) & (tune.index < 50)]) == {"medium"}
    assert df["run_id"].is_unique


def test_ids_are_content_hashes_and_stable(tiny_study, tmp_path):
    study = load_study(tiny_study)
    a = planner.write_plan(study, tmp_path / "a", progress=lambda m: None)
    b = planner.write_plan(study, tmp_path / "b", progress=lambda m: None)
    assert list(a.run_id) == list(b.run_id)
    r = planner.record_from_row(a.iloc[0].to_dict())
    # changing any field of the record changes the id
    import dataclasses

    for field, value in [("seed", 7), ("num_epochs", 3), ("problem", "digits_mlp"), ("schedule", "cosine")]:
        assert dataclasses.replace(r, **{field: value}).run_id != r.run_id
    assert r.with_hparams({"lr": 0.5}).run_id != r.run_id


def test_rerun_identity_ignores_hparams():
    r = RunRecord("s", "p", "adam", "none", "small", "rerun", -1, 43, 32, 2)
    assert r.with_hparams({"lr": 0.1}).run_id == r.run_id
    assert not r.resolved and r.with_hparams({"lr": 0.1}).resolved


def test_derive_seed_streams_independent():
    assert derive_seed(42, "init") != derive_seed(42, "data/0") != derive_seed(43, "init")
    assert derive_seed(42, "init") == derive_seed(42, "init")


def test_load_plan_columns_and_deferred(tiny_study, tmp_path):
    planner.write_plan(load_study(tiny_study), tmp_path / "s", progress=lambda m: None)
    df = planner.load_plan(tmp_path / "s")
    for col in REQUIRED + ["hp_lr"]:
        assert col in df.columns
    # 2 optimizers x (1 oneshot + 2 tuning + 1 rerun)
    assert len(df) == 8
    reruns = df[df.kind == "rerun"]
    assert len(reruns) == 2 and reruns["hp_lr"].isna().all() and not reruns["resolved"].any()
    assert df[df.kind != "rerun"]["hp_lr"].notna().all()
    # tuning draws share lr across optimizers (common random numbers)
    tune = df[df.kind == "tuning"].sort_values(["trial", "optimizer"])
    lr = tune.pivot(index="trial", columns="optimizer", values="hp_lr")
    np.testing.assert_array_equal(lr["adam"], lr["sgd"])


def test_plan_edited_by_hand_is_detected(tiny_study, tmp_path):
    planner.write_plan(load_study(tiny_study), tmp_path / "s", progress=lambda m: None)
    with h5py.File(tmp_path / "s" / "plan.h5", "a") as f:
        f["seed"][0] = 999
    with pytest.raises(PlanError, match="edited by hand"):
        planner.load_plan(tmp_path / "s")


def test_replanning_another_study_into_a_directory_is_refused(tiny_study, tmp_path, write_study):
    planner.write_plan(load_study(tiny_study), tmp_path / "s", progress=lambda m: None)
    other = write_study(tiny_study.read_text().replace('name = "tiny"', 'name = "other"'), "other.toml")
    with pytest.raises(PlanError, match="holds the plan of study 'tiny'"):
        planner.write_plan(load_study(other), tmp_path / "s", progress=lambda m: None)


def test_study_keeps_source_copy(tiny_study, tmp_path):
    planner.write_plan(load_study(tiny_study), tmp_path / "s", progress=lambda m: None)
    assert (tmp_path / "s" / "study.toml").read_text() == tiny_study.read_text()
    with h5py.File(tmp_path / "s" / "plan.h5") as f:
        assert json.loads(f.attrs["budgets"]) == [["small", 2]]


def test_batch_size_sweep_fixed_hparams_and_schedule_args(write_study):
    study = load_study(write_study("""
name = "sweep"
problems = ["digits_mlp"]
optimizers = ["momentum", "adam"]
schedules = ["warmup_cosine"]
[problem_settings.digits_mlp]
batch_sizes = [16, 64, 256]
num_epochs = 2
[schedule_settings.warmup_cosine]
warmup_fraction = 0.1
[tuning]
budgets = { all = 4 }
rerun_seeds = [1, 2]
[tuning.fixed.adam]
beta1 = 0.95
beta2 = 0.95
[tuning.fixed.momentum]
momentum = 0.95
"""))
    assert study.name == "sweep"  # a [schedule_settings.*] table once overwrote the study's name
    df = planner.records_to_frame(planner.expand(study))
    assert len(df) == 3 * 2 * (4 + 2)
    assert set(df.study) == {"sweep"}
    assert sorted(df.batch_size.unique()) == [16, 64, 256]
    adam = df[(df.optimizer == "adam") & (df.kind == "tuning")]
    assert (adam.hp_beta1 == 0.95).all() and (adam.hp_beta2 == 0.95).all()
    assert adam.hp_lr.nunique() == 4  # only lr is tuned, the same 4 draws for every batch size
    assert set(adam.groupby("batch_size").hp_lr.apply(lambda s: tuple(sorted(s)))) .__len__() == 1
    assert (df[df.optimizer == "momentum"].hp_momentum.dropna() == 0.95).all()
    assert set(df.schedule_args) == {'{"warmup_fraction": 0.1}'}


def test_data_location_is_not_identity():
    r = RunRecord("s", "fmnist_2c2d", "adam", "none", "oneshot", "oneshot", -1, 42, 128, 100,
                  problem_args=(("data_dir", "/a"),))
    import dataclasses

    assert dataclasses.replace(r, problem_args=(("data_dir", "/b"),)).run_id == r.run_id
    assert dataclasses.replace(r, problem_args=(("n_train", 5),)).run_id != r.run_id


def test_crowded_valley_plan_round_trips_through_the_plan_file(tmp_path):
    """Integer defaults (Lookahead's k = 5) must hash the same after the plan file stores them as floats;
    otherwise every status/submit of the study fails with "edited by hand"."""
    study = load_study(ROOT / "jobs" / "crowded_valley.toml")
    planner.write_plan(study, tmp_path / "cv", progress=lambda m: None)
    df = planner.load_plan(tmp_path / "cv")  # verifies every run id
    assert len(df) == 53_760 and df[df.optimizer == "lookahead_momentum"]["hp_k"].dropna().eq(5.0).any()


# ------------------------------------------------------------------ Choi et al. 2019

def test_choi2019_study_tunes_everything_with_halton_and_linear_decay():
    """jobs/choi2019.toml: six optimizers, every hyperparameter tuned (ε, the decay's T and α included),
    Adam/NAdam in (ε, α/ε) and RMSProp in (ε, η/√ε), Halton search with common random numbers."""
    from optbench import search

    study = load_study(ROOT / "jobs" / "choi2019.toml")
    assert study.search == "halton" and study.schedules == ("linear_decay",)
    assert set(study.optimizers) == {"choi_sgd", "choi_momentum", "choi_nesterov", "choi_rmsprop", "choi_adam",
                                     "choi_nadam"}
    assert study.selection_split == "valid" and study.oneshot_seeds == ()
    assert set(study.space("choi_adam")) == {"lr_over_eps", "eps", "beta1", "beta2", "decay_steps_factor",
                                             "end_factor"}
    assert set(study.space("choi_rmsprop")) == {"lr_over_sqrt_eps", "eps", "rho", "momentum",
                                                "decay_steps_factor", "end_factor"}
    assert set(study.space("choi_momentum")) == {"lr", "momentum", "decay_steps_factor", "end_factor"}
    df = planner.records_to_frame(planner.expand(study))
    assert len(df) == 7 * 6 * (100 + 2 * 4) and df["run_id"].is_unique
    tune = df[df.kind == "tuning"]
    adam = tune[(tune.optimizer == "choi_adam") & (tune.problem == "digits_mlp")].sort_values("trial")
    # the run's lr is the decoupled coordinate times ε: recover the coordinate and check its range
    ratio = adam.hp_lr / adam.hp_eps
    assert ratio.min() >= 1e-2 * (1 - 1e-9) and ratio.max() <= 1e4 * (1 + 1e-9) and ratio.nunique() == 100
    rms = tune[(tune.optimizer == "choi_rmsprop") & (tune.problem == "digits_mlp")]
    r = rms.hp_lr / np.sqrt(rms.hp_eps)
    assert r.min() >= 1e-2 * (1 - 1e-9) and r.max() <= 1e3 * (1 + 1e-9)
    # decay hyperparameters in their ranges, and common random numbers: trial k draws the same T for every optimizer
    assert tune.hp_decay_steps_factor.between(0.5, 1.0).all() and tune.hp_end_factor.between(1e-3, 0.1).all()
    by_opt = tune[tune.problem == "digits_mlp"].pivot(index="trial", columns="optimizer", values="hp_decay_steps_factor")
    assert (by_opt.nunique(axis=1) == 1).all()
    # and the Halton sample is the documented one (scrambled, shifted), not a plain grid
    u = search.unit_samples("halton", list(search.DIMENSIONS), 100, study.sampler_seed)["decay_steps_factor"]
    np.testing.assert_allclose(by_opt["choi_sgd"].to_numpy(), 0.5 + 0.5 * u)


def test_decay_hyperparameters_reach_the_schedule_not_the_optimizer():
    from optbench import schedules

    hp = {"lr": 0.1, "decay_steps_factor": 0.5, "end_factor": 0.01}
    f = schedules.step_factor_fn("linear_decay", 2, 50, hp)
    # η(t)/η₀ = 1 − (1 − α)·min(t, T)/T with T = 0.5 · 100 steps
    for t in (0, 10, 49, 50, 99):
        assert f(t) == pytest.approx(1 - (1 - 0.01) * min(t, 50) / 50)


@pytest.mark.parametrize("table, message", [
    ('[tuning.space.choi_adam]\nlr = ["log", 1e-4, 1]\nlr_over_eps = ["log", 1, 10]\n', "one learning-rate coordinate"),
    ('[tuning.space.choi_sgd]\nlr_over_eps = ["log", 1, 10]\n', "unknown key"),
    ('[tuning.space.choi_adam]\nlr_over_eps = ["log", 1, 10]\n[tuning.fixed.choi_adam]\nlr = 0.1\n', "determined by"),
    ('[tuning.space.choi_adam]\nwarmup_fraction = ["uniform", 0, 0.2]\n', "unknown key"),
])
def test_bad_decoupled_or_schedule_tuning_is_refused(table, message):
    from optbench.errors import StudyError

    text = ('name = "c"\nproblems = ["digits_mlp"]\noptimizers = ["choi_adam", "choi_sgd"]\nschedules = ["linear_decay"]\n'
            "[tuning]\nbudgets = { all = 2 }\n" + table)
    import tomllib
    with pytest.raises(StudyError, match=message):
        parse_study(tomllib.loads(text), "c.toml")
