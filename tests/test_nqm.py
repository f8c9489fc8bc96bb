"""The noisy quadratic model (optbench/nqm.py, docs/crossover.md): the exact second-moment recursion
against Monte-Carlo simulation and plain iteration, S(B) in the McCandlish regime, the critical
batch sizes, and the crossover batch size B* from the curves and from the linear fit."""
from __future__ import annotations

import numpy as np
import pytest

from optbench import nqm, schedules
from optbench.nqm import ADAM_LIKE, NQM, SGD_MOMENTUM, Optimizer

OCTAVES = 2.0 ** np.arange(0, 15)  # 1 … 16384


# --- the exact recursion ---------------------------------------------------------------------

def test_plain_sgd_is_the_spec_recursion():
    model, B, lr = NQM(dim=50), 8.0, 0.7
    h = model.h
    s = np.full(50, model.x0_sq)
    expected = [0.5 * np.sum(h * s)]
    for _ in range(40):
        s = (1 - lr * h) ** 2 * s + lr ** 2 * h / B  # spec §3: sᵢ ← (1 − αhᵢ)² sᵢ + α² hᵢ/B
        expected.append(0.5 * np.sum(h * s))
    got = nqm.expected_loss_curve(model, Optimizer("sgd"), B, lr, 40)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("opt, noise, schedule", [
    (Optimizer("heavy_ball", momentum=0.9, precond_power=0.0), "gaussian", None),
    (Optimizer("adam_like", momentum=0.9, precond_power=0.5), "rademacher", "warmup_cosine"),
    (Optimizer("precond_sgd", momentum=0.0, precond_power=1.0), "gaussian", None),
])
def test_exact_curve_matches_monte_carlo(opt, noise, schedule):
    model, B, lr, steps = NQM(dim=6, noise_power=0.5), 2.0, 0.15, 80
    factor = None
    if schedule:
        factor = schedules.step_factor_fn(schedule, 1, steps, {"warmup_fraction": 0.1})
    exact = nqm.expected_loss_curve(model, opt, B, lr, steps, lr_factor=factor)
    mean, se = nqm.monte_carlo_loss_curve(model, opt, B, lr, steps, n_samples=40_000, seed=1, noise=noise,
                                          lr_factor=factor)
    assert exact[0] == pytest.approx(model.initial_loss)
    z = np.abs(mean - exact)[1:] / se[1:]
    assert z.max() < 4.5, (z.max(), int(z.argmax()))
    # and the curve really moves: it falls well below the start
    assert exact[-1] < 0.7 * exact[0]


def test_steady_state_and_stability():
    model, B = NQM(dim=30), 4.0
    sgd = Optimizer("sgd")
    lr = 0.5
    h, c = model.h, model.c
    a = lr * h ** 0
    closed = 0.5 * np.sum(h * a * c / (B * h * (2 - a * h)))  # X* = a c / (B h (2 − a h))
    assert nqm.steady_state_loss(model, sgd, B, lr) == pytest.approx(closed, rel=1e-10)
    long = nqm.expected_loss_curve(model, SGD_MOMENTUM, B, 0.05, 20_000)[-1]
    assert long == pytest.approx(nqm.steady_state_loss(model, SGD_MOMENTUM, B, 0.05), rel=1e-6)
    # stability: 0 < a h < 2(1 + β) for all coordinates, h₁ = 1 the largest
    assert nqm.stable(model, SGD_MOMENTUM, 3.79) and not nqm.stable(model, SGD_MOMENTUM, 3.81)
    assert np.isinf(nqm.steady_state_loss(model, SGD_MOMENTUM, B, 3.81))
    assert np.isinf(nqm.steps_to_target(SGD_MOMENTUM, B, 3.81, 0.1, model))


@pytest.mark.parametrize("opt, B, lr", [(SGD_MOMENTUM, 4.0, 0.02), (ADAM_LIKE, 64.0, 0.3), (SGD_MOMENTUM, 1e4, 3.0),
                                        (Optimizer("sgd"), 16.0, 1.0)])
def test_steps_to_target_agrees_with_plain_iteration(opt, B, lr):
    """Both rules against the curve iterated step by step: "first" is the first step at or below the
    target, "settled" the step after the last one above it (the momentum case at B = 10⁴, lr = 3
    oscillates: its expected loss dips below the target and comes back above it)."""
    model = NQM(dim=200)
    target = 0.3 * model.initial_loss
    curve = nqm.expected_loss_curve(model, opt, B, lr, 3000)
    first = int(np.argmax(curve <= target))
    assert curve[first] <= target < curve[first - 1]
    settled = int(np.flatnonzero(curve > target).max()) + 1
    assert settled < 3000 - 200 and np.all(curve[settled:] <= target)
    got_first = nqm.steps_to_target(opt, B, lr, target, model, rule="first")
    assert first - 1 <= got_first <= first
    got = nqm.steps_to_target(opt, B, lr, target, model)
    assert settled - 1 <= got <= settled
    # vectorised over learning rates, with the unreachable ones inf
    many = nqm.steps_to_target(opt, B, np.array([lr, 1e-9, 100.0]), target, model, max_steps=1e5)
    assert many[0] == got and np.isinf(many[1:]).all()


def test_oscillating_case_really_oscillates():
    """The case above that separates the two rules: without it, "settled" could silently equal "first"."""
    model = NQM(dim=200)
    target = 0.3 * model.initial_loss
    curve = nqm.expected_loss_curve(model, SGD_MOMENTUM, 1e4, 3.0, 100)
    first = int(np.argmax(curve <= target))
    assert np.any(curve[first:] > target)
    assert nqm.steps_to_target(SGD_MOMENTUM, 1e4, 3.0, target, model) > \
        nqm.steps_to_target(SGD_MOMENTUM, 1e4, 3.0, target, model, rule="first") + 1


# --- S(B), critical batch sizes, crossover ----------------------------------------------------

PLAIN_SGD, PRECOND_SGD = Optimizer("sgd"), Optimizer("precond_sgd", precond_power=0.5)


@pytest.fixture(scope="module")
def spec_curves():
    """The spec's model (noise ∝ curvature), d = 300, target 20 % of the initial loss, B = 1 … 4^8:
    without momentum (Zhang et al.'s SGD vs. preconditioned SGD) and with the study's β = 0.9."""
    model = NQM(dim=300)
    target = 0.2 * model.initial_loss
    return nqm.scaling_curves(4.0 ** np.arange(0, 9), target, model,
                              optimizers=(PLAIN_SGD, PRECOND_SGD, SGD_MOMENTUM, ADAM_LIKE))


@pytest.fixture(scope="module")
def crossover_case():
    model = nqm.CROSSOVER_MODEL
    target = nqm.CROSSOVER_TARGET_FRACTION * model.initial_loss
    b_star = nqm.crossover_exact(target, model, batch_sizes=2.0 ** np.arange(8, 17, 2), rtol=2e-3)
    center = int(np.round(np.log2(b_star)))
    Bs = 2.0 ** np.arange(center - 4, center + 5)
    return {"model": model, "target": target, "b_star": b_star, "B": Bs,
            "curves": nqm.scaling_curves(Bs, target, model)}


@pytest.mark.parametrize("sgd, pre", [("sgd", "precond_sgd"), ("momentum", "adam")])
def test_spec_model_has_no_crossover(spec_curves, sgd, pre):
    """With noise ∝ curvature the preconditioned optimizer needs fewer steps at every batch size,
    with or without momentum: SGD is never the faster one, so there is no crossover."""
    B, s_sgd, s_pre = spec_curves[sgd]["batch_size"], spec_curves[sgd]["steps"], spec_curves[pre]["steps"]
    assert np.all(s_pre < s_sgd)
    assert np.isnan(nqm.crossover_from_curves(B, s_sgd, s_pre))
    # near-perfect scaling at small batch sizes: S·B (examples) at B = 4 within 15 % of B = 1
    e = spec_curves[sgd]["examples"]
    assert e[1] == pytest.approx(e[0], rel=0.15)


def test_spec_model_preconditioning_has_the_larger_critical_batch_size(spec_curves):
    """Zhang et al.'s comparison (no momentum): preconditioning's advantage grows with B and its
    critical batch size N = E_min/S_min is larger."""
    B, s_sgd, s_pre = spec_curves["sgd"]["batch_size"], spec_curves["sgd"]["steps"], spec_curves["precond_sgd"]["steps"]
    assert (s_sgd / s_pre)[-1] > 2 * (s_sgd / s_pre)[0]
    for weights in ("none", "relative"):
        n_sgd = nqm.critical_batch_size(*nqm.fit_scaling(B, s_sgd, weights))
        n_pre = nqm.critical_batch_size(*nqm.fit_scaling(B, s_pre, weights))
        assert n_pre > 1.5 * n_sgd > 0


def test_s_times_b_is_linear_in_b_around_the_critical_batch_sizes(crossover_case):
    """The McCandlish form S·B = E_min + S_min·B holds within 15 % over B*/16 … 16·B* (9 octaves; the
    form is an approximation: heavy-ball momentum bends S(B) by ≈ 10 % at the ends of the range)."""
    B = crossover_case["B"]
    for name in ("momentum", "adam"):
        y = crossover_case["curves"][name]["examples"]
        E, S = nqm.fit_scaling(B, crossover_case["curves"][name]["steps"], "relative")
        assert E > 0 and S > 0
        rel = (E + S * B) / y - 1
        assert np.abs(rel).max() < 0.15, (name, rel)
        r2 = 1 - np.sum((y - E - S * B) ** 2) / np.sum((y - y.mean()) ** 2)
        assert r2 > 0.99


def test_preconditioned_optimizer_has_the_larger_critical_batch_size(crossover_case):
    B, c = crossover_case["B"], crossover_case["curves"]
    for weights in ("none", "relative"):
        n_sgd = nqm.critical_batch_size(*nqm.fit_scaling(B, c["momentum"]["steps"], weights))
        n_adam = nqm.critical_batch_size(*nqm.fit_scaling(B, c["adam"]["steps"], weights))
        assert n_adam > 1.3 * n_sgd > 0


def test_crossover_exists_and_is_where_the_curves_cross(crossover_case):
    B, c, b_star = crossover_case["B"], crossover_case["curves"], crossover_case["b_star"]
    s_sgd, s_adam = c["momentum"]["steps"], c["adam"]["steps"]
    assert np.all((s_sgd < s_adam)[B < b_star]) and np.all((s_sgd > s_adam)[B > b_star])
    assert s_adam[0] > 1.1 * s_sgd[0] and s_sgd[-1] > 1.3 * s_adam[-1]  # a real reversal, both ways
    # interpolating the octave grid gives nearly the exact crossing
    assert nqm.crossover_from_curves(B, s_sgd, s_adam) == pytest.approx(b_star, rel=0.10)
    # at B*, the two optimizers need the same number of steps
    model, target = crossover_case["model"], crossover_case["target"]
    at = [nqm.optimal_steps_to_target(o, b_star, target, model)[0] for o in (SGD_MOMENTUM, ADAM_LIKE)]
    assert at[0] == pytest.approx(at[1], rel=0.01)


@pytest.mark.parametrize("half_width", [2, 3])
@pytest.mark.parametrize("weights", ["none", "relative"])
def test_linear_fit_recovers_the_crossover_within_10_percent(crossover_case, half_width, weights):
    """Issue requirement: on the NQM, B* = (E_Adam,min − E_SGD,min)/(S_SGD,min − S_Adam,min) from the
    S·B fits over powers of two B*/2^k … 2^k·B* recovers the known (exact) B* within 10 %."""
    B, c, b_star = crossover_case["B"], crossover_case["curves"], crossover_case["b_star"]
    center = int(np.round(np.log2(b_star)))
    sel = np.abs(np.log2(B) - center) <= half_width
    E_a, S_a = nqm.fit_scaling(B[sel], c["adam"]["steps"][sel], weights)
    E_s, S_s = nqm.fit_scaling(B[sel], c["momentum"]["steps"][sel], weights)
    fitted = nqm.crossover_from_fit(E_a, S_a, E_s, S_s)
    assert fitted == pytest.approx(b_star, rel=0.10)


def test_fit_and_formula_on_exact_mccandlish_curves():
    B = 2.0 ** np.arange(3, 12)
    S_adam = 40 * (1 + 2000 / B)  # S_min 40, E_min 80,000
    S_sgd = 100 * (1 + 400 / B)  # S_min 100, E_min 40,000
    for w in ("none", "relative"):
        assert nqm.fit_scaling(B, S_adam, w) == pytest.approx((80_000, 40))
    expected = (80_000 - 40_000) / (100 - 40)
    assert nqm.crossover_from_fit(80_000, 40, 40_000, 100) == pytest.approx(expected)
    assert nqm.crossover_from_curves(2.0 ** np.arange(0, 20), 100 * (1 + 400 / 2.0 ** np.arange(0, 20)),
                                     40 * (1 + 2000 / 2.0 ** np.arange(0, 20))) == pytest.approx(expected, rel=0.02)
    assert np.isnan(nqm.crossover_from_fit(40_000, 40, 80_000, 100))  # Adam needs fewer examples: no B*
    assert np.isnan(nqm.crossover_from_fit(80_000, 100, 40_000, 40))  # and SGD fewer steps: none either
    assert nqm.critical_batch_size(80_000, 40) == 2000
    assert np.isnan(nqm.fit_scaling([16.0], [3.0])[0])


def test_analysis_package_recovers_the_nqm_crossover(crossover_case):
    """The fit users get (analysis.crossover, the report's B*) on the NQM's exact S(B) over B*/8 … 8·B*:
    within 10 % of the exact crossing, and equal to nqm.fit_scaling's plain fit."""
    import pandas as pd

    from analysis import crossover as ac
    B, c, b_star = crossover_case["B"], crossover_case["curves"], crossover_case["b_star"]
    center = int(np.round(np.log2(b_star)))
    sel = np.abs(np.log2(B) - center) <= 3
    rows = [{"problem": "nqm", "schedule": "none", "family": fam, "batch_size": b, "seed": seed, "time": s}
            for fam, name in (("adam", "adam"), ("sgd", "momentum"))
            for b, s in zip(B[sel], c[name]["steps"][sel]) for seed in (0, 1)]
    out = ac.crossover(pd.DataFrame(rows), n_boot=200)
    assert len(out) == 1
    got = out["B_star"].iloc[0]
    assert got == pytest.approx(b_star, rel=0.10)
    E_a, S_a = nqm.fit_scaling(B[sel], c["adam"]["steps"][sel])
    E_s, S_s = nqm.fit_scaling(B[sel], c["momentum"]["steps"][sel])
    assert got == pytest.approx(nqm.crossover_from_fit(E_a, S_a, E_s, S_s), rel=1e-9)
    assert out["p_exists"].iloc[0] == 1.0  # identical seeds: every resample has the crossing
