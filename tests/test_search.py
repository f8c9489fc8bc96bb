"""Samplers (common random numbers, nested budgets, Halton), transforms and decoupled coordinates."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import qmc

from optbench import optimizer_specs
from optbench.search import (DECOUPLED_LR, DIMENSIONS, Dist, decoupled_from_lr, lr_from_decoupled,
                             resolve_decoupled, sample_trials, unit_samples)

METHODS = ("random", "halton")


# ------------------------------------------------------------------ common random numbers, budgets

@pytest.mark.parametrize("method", METHODS)
def test_shared_hyperparameters_draw_the_same_values_across_optimizers(method):
    spaces = {n: optimizer_specs.get(n).space for n in ("sgd", "momentum", "adam", "adabound", "lookahead_momentum")}
    trials = {n: sample_trials(s, 75, method, sampler_seed=3) for n, s in spaces.items()}
    for k in range(75):
        lrs = {n: trials[n][k]["lr"] for n in spaces}
        assert len(set(lrs.values())) == 1, (k, lrs)
        assert trials["momentum"][k]["momentum"] == trials["lookahead_momentum"][k]["momentum"]
        assert trials["adam"][k]["beta1"] == trials["adabound"][k]["beta1"]
    # …and the values do vary over trials
    assert len({t["lr"] for t in trials["sgd"]}) == 75


@pytest.mark.parametrize("method", METHODS)
def test_same_unit_coordinate_whatever_the_distribution(method):
    """A study that overrides a range still uses the same u per trial (so trials stay paired)."""
    a = sample_trials({"lr": Dist("log", 1e-4, 1.0)}, 20, method, 0)
    b = sample_trials({"lr": Dist("log", 1e-3, 10.0)}, 20, method, 0)
    for ta, tb in zip(a, b):
        assert tb["lr"] == pytest.approx(ta["lr"] * 10)


@pytest.mark.parametrize("method", METHODS)
def test_budgets_are_nested_prefixes(method):
    space = optimizer_specs.get("lookahead_radam").space
    short, medium, long = (sample_trials(space, n, method, sampler_seed=7) for n in (25, 50, 75))
    assert long[:25] == short and long[:50] == medium


@pytest.mark.parametrize("method", METHODS)
def test_sampler_seed_determines_the_draws(method):
    space = optimizer_specs.get("adam").space
    assert sample_trials(space, 30, method, 5) == sample_trials(space, 30, method, 5)
    assert sample_trials(space, 30, method, 5) != sample_trials(space, 30, method, 6)


def test_unknown_method_and_dimension():
    with pytest.raises(ValueError, match="search method"):
        unit_samples("sobol", ["lr"], 4, 0)
    with pytest.raises(ValueError, match="Halton dimension"):
        unit_samples("halton", ["not_a_hyperparameter"], 4, 0)
    every = sorted({h for s in optimizer_specs.OPTIMIZERS.values() for h in s.space})
    assert set(every) <= set(DIMENSIONS)
    assert set(DECOUPLED_LR) <= set(DIMENSIONS)


# ------------------------------------------------------------------ Halton

def test_halton_points_lie_in_the_unit_cube_and_are_distinct():
    u = unit_samples("halton", list(DIMENSIONS), 128, 0)
    pts = np.column_stack([u[n] for n in DIMENSIONS])
    assert np.all((pts >= 0) & (pts < 1))
    assert len(np.unique(pts[:, 0])) == 128


@pytest.mark.parametrize("names", [["lr", "momentum"], ["lr", "beta1", "beta2"], ["final_lr", "gamma", "alpha", "k"]])
def test_halton_has_lower_discrepancy_than_random(names):
    def discrepancy(method, seed):
        u = unit_samples(method, names, 64, seed)
        return qmc.discrepancy(np.column_stack([u[m] for m in names]))

    halton = [discrepancy("halton", s) for s in range(5)]
    random = [discrepancy("random", s) for s in range(5)]
    assert max(halton) < min(random)
    assert np.mean(halton) < 0.5 * np.mean(random)


# ------------------------------------------------------------------ transforms

def test_log_transform():
    d = Dist("log", 1e-4, 1.0)
    assert d.transform(0.0) == pytest.approx(1e-4)
    assert d.transform(0.5) == pytest.approx(1e-2)
    assert d.transform(0.75) == pytest.approx(1e-1)
    x = d.transform(np.random.default_rng(0).random(20000))
    assert np.all((x >= 1e-4) & (x <= 1.0))
    # log-uniform: each decade holds a quarter of the mass
    counts = np.histogram(np.log10(x), bins=[-4, -3, -2, -1, 0])[0] / len(x)
    np.testing.assert_allclose(counts, 0.25, atol=0.02)


def test_revlog_transform():
    d = Dist("revlog", 1e-4, 1.0)
    assert d.transform(0.0) == pytest.approx(1 - 1e-4)
    assert d.transform(0.5) == pytest.approx(0.99)
    assert d.transform(0.75) == pytest.approx(0.9)
    assert d.transform(1.0) == pytest.approx(0.0, abs=1e-12)
    x = d.transform(np.random.default_rng(1).random(20000))
    counts = np.histogram(np.log10(1 - x), bins=[-4, -3, -2, -1, 0])[0] / len(x)
    np.testing.assert_allclose(counts, 0.25, atol=0.02)


def test_uniform_transform():
    d = Dist("uniform", 0.8, 1.0)
    assert d.transform(0.0) == 0.8 and d.transform(0.5) == pytest.approx(0.9)


def test_int_transform_gives_equal_mass_to_each_integer():
    d = Dist("int", 5, 19)
    assert d.transform(0.0) == 5 and d.transform(0.999999) == 19 and d.transform(1.0) == 19
    u = (np.arange(15000) + 0.5) / 15000
    values, counts = np.unique(d.transform(u), return_counts=True)
    assert list(values) == list(range(5, 20))
    assert np.all(counts == 1000)
    assert Dist("int", 3, 3).transform(0.7) == 3


def test_bad_distributions():
    with pytest.raises(ValueError):
        Dist("beta", 0, 1)
    with pytest.raises(ValueError):
        Dist("log", 0.0, 1.0)
    with pytest.raises(ValueError):
        Dist("uniform", 1.0, 1.0)


def test_sampled_values_respect_their_distributions():
    space = optimizer_specs.get("lookahead_momentum").space
    for t in sample_trials(space, 200, "random", 0):
        assert 1e-4 <= t["lr"] <= 1.0 and 0.0 <= t["momentum"] <= 1 - 1e-4
        assert 1e-4 <= t["alpha"] <= 1.0 and t["k"] == int(t["k"]) and 5 <= t["k"] <= 19


# ------------------------------------------------------------------ decoupled coordinates (spec §2)

def test_decoupled_coordinates_convert_to_lr():
    assert lr_from_decoupled("lr_over_eps", 0.002, 10.0) == pytest.approx(0.02)  # Adam/NAdam: α = (α/ε)·ε
    assert lr_from_decoupled("lr_over_sqrt_eps", 0.002, 100.0) == pytest.approx(0.02)  # RMSProp: η = (η/√ε)·√ε
    for c in DECOUPLED_LR:
        for lr, eps in ((1e-3, 1e-8), (0.3, 1e3)):
            assert lr_from_decoupled(c, decoupled_from_lr(c, lr, eps), eps) == pytest.approx(lr, rel=1e-12)
    assert decoupled_from_lr("lr_over_sqrt_eps", 0.01, 1e-6) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        lr_from_decoupled("lr_over_eps_squared", 1.0, 1.0)


def test_resolve_decoupled_settings():
    assert resolve_decoupled({"eps": 4.0, "lr_over_sqrt_eps": 0.5, "rho": 0.9}) == {"eps": 4.0, "lr": 1.0, "rho": 0.9}
    assert resolve_decoupled({"lr_over_eps": 0.5}, eps_default=1e-8) == {"lr": pytest.approx(5e-9)}
    assert resolve_decoupled({"lr": 0.1}) == {"lr": 0.1}
    with pytest.raises(ValueError):
        resolve_decoupled({"lr": 0.1, "lr_over_eps": 0.5, "eps": 1.0})
    with pytest.raises(ValueError):
        resolve_decoupled({"lr_over_eps": 0.5})


def test_a_decoupled_search_space_samples_lr_through_the_spec():
    space = {"eps": Dist("log", 1e-3, 1e3), "lr_over_eps": Dist("log", 1e-4, 1e-1),
             "beta1": Dist("revlog", 1e-3, 1.0)}
    spec = optimizer_specs.OptimizerSpec("decoupled_adam", "Adam (decoupled)",
                                         dict(optimizer_specs.get("choi_adam").defaults), space)
    for tuned in sample_trials(space, 40, "halton", 0):
        setting = spec.setting(tuned)
        assert "lr_over_eps" not in setting
        assert setting["lr"] == pytest.approx(tuned["lr_over_eps"] * tuned["eps"])
        assert setting["lr"] / setting["eps"] == pytest.approx(tuned["lr_over_eps"])
        assert math.isfinite(setting["lr"])


def test_register_checks_decoupled_spaces():
    base = dict(optimizer_specs.get("choi_adam").defaults)
    with pytest.raises(ValueError, match="decoupled"):
        optimizer_specs.register(optimizer_specs.OptimizerSpec(
            "bad_decoupled", "x", base, {"lr": Dist("log", 1e-4, 1), "lr_over_eps": Dist("log", 1e-4, 1)}))
    with pytest.raises(ValueError, match="decoupled"):
        optimizer_specs.register(optimizer_specs.OptimizerSpec(
            "bad_decoupled", "x", {"lr": 0.1}, {"lr_over_eps": Dist("log", 1e-4, 1)}))
    assert "bad_decoupled" not in optimizer_specs.OPTIMIZERS
