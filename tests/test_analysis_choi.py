"""Choi et al. statistics on data with known answers: tuning curves, steps to target, inclusions, profiles."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import load_study
from analysis.choi import (best_time_to_target, expected_best_of_k, inclusion_check, performance_profile,
                           profile_scores, steps_to_target, tuning_curve)
from analysis.performance import final_performance
from analysis.synthetic import Run, eval_rows, make_record, simple_run, step_run, write_results


def _load(tmp_path, runs):
    write_results(tmp_path / "s", runs)
    return load_study(tmp_path / "s")


def test_expected_best_of_k_by_hand():
    valid, test = np.array([0.1, 0.3, 0.2]), np.array([1.0, 3.0, 2.0])
    assert expected_best_of_k(valid, test, 1) == (pytest.approx(2.0), 0.0)
    # P(best is the j-th of 3) = (j/3)^2 − ((j−1)/3)^2 = 1/9, 3/9, 5/9
    assert expected_best_of_k(valid, test, 2)[0] == pytest.approx((1 + 2 * 3 + 3 * 5) / 9)
    # equal validation scores: the earlier trial counts as the better one
    assert expected_best_of_k(np.array([0.5, 0.5]), np.array([1.0, 2.0]), 2)[0] == pytest.approx(0.75 * 1 + 0.25 * 2)
    # an infeasible trial: never chosen while a feasible one is drawn
    v, t = np.array([-np.inf, 0.5, 0.7]), np.array([-np.inf, 1.0, 2.0])
    e1, p1 = expected_best_of_k(v, t, 1)
    assert (e1, p1) == (pytest.approx(1.5), pytest.approx(1 / 3))
    e2, p2 = expected_best_of_k(v, t, 2)
    assert e2 == pytest.approx((3 / 9 * 1 + 5 / 9 * 2) / (8 / 9)) and p2 == pytest.approx(1 / 9)


def test_tuning_curve_bootstrap_matches_exact(tmp_path):
    valids = [0.60, 0.70, 0.65, 0.90, 0.80]
    tests = [0.58, 0.71, 0.66, 0.85, 0.82]
    runs = [simple_run(v, t, optimizer="adam", kind="tuning", trial=k, budget="large", hparams={"lr": k + 1.0})
            for k, (v, t) in enumerate(zip(valids, tests))]
    # a loss problem: best of k must fall with k
    runs += [simple_run(v, metric="loss", optimizer="sgd", kind="tuning", trial=k, budget="large", hparams={"lr": k + 1.0})
             for k, v in enumerate([3.0, 1.0, 2.0, 0.5])]
    perf = final_performance(_load(tmp_path, runs))
    tc = tuning_curve(perf, n_boot=6000, seed=1).set_index(["optimizer", "k"])
    for k in range(1, 6):
        exact, _ = expected_best_of_k(np.array(valids), np.array(tests), k)
        assert tc.loc[("adam", k), "expected"] == pytest.approx(exact)
        assert tc.loc[("adam", k), "mean"] == pytest.approx(exact, abs=0.004)
        assert tc.loc[("adam", k), "lo"] <= tc.loc[("adam", k), "mean"] <= tc.loc[("adam", k), "hi"]
    assert tc.loc[("adam", 1), "expected"] == pytest.approx(np.mean(tests))
    loss = tc.loc["sgd"]
    assert loss["metric"].iloc[0] == "loss" and list(loss["expected"]) == sorted(loss["expected"], reverse=True)
    assert loss.loc[1, "expected"] == pytest.approx(np.mean([3.0, 1.0, 2.0, 0.5]))
    # without replacement the full budget always finds the best-validated trial (0.90 → test 0.85)
    wr = tuning_curve(perf, replace=False, n_boot=500).set_index(["optimizer", "k"])
    assert wr.loc[("adam", 5), "mean"] == pytest.approx(0.85) and wr.loc[("adam", 5), "lo"] == wr.loc[("adam", 5), "hi"]
    assert wr.loc[("adam", 1), "mean"] == pytest.approx(np.mean(tests), abs=0.01)


def test_tuning_curve_counts_infeasible_samples(tmp_path):
    runs = [simple_run(0.9, optimizer="sgd", kind="tuning", trial=0, budget="small", hparams={"lr": 9.0}, status="diverged"),
            simple_run(0.6, optimizer="sgd", kind="tuning", trial=1, budget="small", hparams={"lr": 0.1})]
    tc = tuning_curve(final_performance(_load(tmp_path, runs)), n_boot=8000, seed=0).set_index("k")
    assert tc.loc[1, "p_infeasible"] == pytest.approx(0.5, abs=0.02) and tc.loc[1, "mean"] == pytest.approx(0.6)
    assert tc.loc[2, "p_infeasible"] == pytest.approx(0.25, abs=0.02) and tc.loc[2, "expected"] == pytest.approx(0.6)


def test_steps_to_target_first_crossing(tmp_path):
    a = step_run(350, 0.9, optimizer="a", kind="tuning", trial=0, budget="small", hparams={"lr": 1.0}, last_step=1000)
    b = step_run(700, 0.9, optimizer="a", kind="tuning", trial=1, budget="small", hparams={"lr": 2.0}, last_step=1000)
    never = step_run(200, 0.7, optimizer="a", kind="tuning", trial=2, budget="small", hparams={"lr": 3.0})
    div = step_run(100, 0.95, optimizer="a", kind="tuning", trial=3, budget="small", hparams={"lr": 4.0}, status="diverged")
    loss_rows = eval_rows(4, step=[0, 100, 200, 300], valid_loss=[3.0, 2.0, 1.0, 0.5], test_loss=[3.0, 2.0, 1.0, 0.5],
                          train_loss=[3.0, 2.0, 1.0, 0.5])
    loss = Run(make_record(problem="quadratic_deep", optimizer="q", num_epochs=3), loss_rows)
    res = _load(tmp_path, [a, b, never, div, loss])
    stt = steps_to_target(res, {"fmnist_2c2d": 0.8, "quadratic_deep": 1.0}).set_index(["optimizer", "trial"])
    assert stt.loc[("a", 0), "time"] == 350 and stt.loc[("a", 1), "time"] == 700
    assert not stt.loc[("a", 2), "reached"] and np.isnan(stt.loc[("a", 2), "time"])
    assert not stt.loc[("a", 3), "reached"] and stt.loc[("a", 3), "diverged"]  # diverged: infeasible
    assert stt.loc[("q", -1), "time"] == 200  # a loss: first value ≤ target
    by_epoch = steps_to_target(res, {"fmnist_2c2d": 0.8, "quadratic_deep": 1.0}, time="epoch").set_index(["optimizer", "trial"])
    assert by_epoch.loc[("q", -1), "time"] == 2
    feas = steps_to_target(res, 0.8, diverged_feasible=True).set_index(["optimizer", "trial"])
    assert feas.loc[("a", 3), "time"] == 100
    best = best_time_to_target(steps_to_target(res, {"fmnist_2c2d": 0.8, "quadratic_deep": 1.0}),
                               by=["optimizer"]).set_index("optimizer")
    assert best.loc["a", "time"] == 350 and best.loc["a", "trial"] == 0
    assert (best.loc["a", "n_trials"], best.loc["a", "n_reached"], best.loc["a", "n_diverged"]) == (4, 2, 1)


def _best_row(opt, scores, problem="p"):
    s = np.asarray(scores, float)
    f = s[np.isfinite(s)]
    return {"problem": problem, "schedule": "none", "batch_size": 128, "budget": "large", "optimizer": opt,
            "mean": f.mean() if len(f) else np.nan, "seed_scores": tuple(s)}


def test_inclusion_check_flags_only_beyond_noise():
    best = pd.DataFrame([
        _best_row("choi_sgd", [0.90, 0.91, 0.89]),
        _best_row("choi_momentum", [0.80, 0.81, 0.79]),  # includes SGD yet 0.10 worse: flag
        _best_row("choi_adam", [0.798, 0.808, 0.788]),  # 0.002 below momentum, seeds spread 0.01: noise
        _best_row("choi_nesterov", [0.95, 0.96, 0.94]),  # above SGD: consistent
        _best_row("choi_nadam", [-np.inf, 0.97, 0.96]),  # diverged where Nesterov did not: flag
        _best_row("choi_sgd", [0.9], "q"), _best_row("choi_momentum", [0.5], "q"),  # one seed: noise unknown
    ])
    inc = inclusion_check(best, n_boot=4000, seed=0).set_index(["problem", "included", "general"])
    row = inc.loc[("p", "choi_sgd", "choi_momentum")]
    assert row["flag"] and row["diff"] == pytest.approx(-0.10) and row["hi"] < 0
    assert row["verdict"] == "general below included beyond noise"
    row = inc.loc[("p", "choi_momentum", "choi_adam")]
    assert not row["flag"] and row["lo"] < 0 < row["hi"] and row["verdict"] == "general below included within noise"
    assert inc.loc[("p", "choi_sgd", "choi_nesterov"), "verdict"] == "consistent"
    assert inc.loc[("p", "choi_nesterov", "choi_nadam"), "flag"]
    q = inc.loc[("q", "choi_sgd", "choi_momentum")]
    assert not q["flag"] and "noise unknown" in q["verdict"]
    assert ("p", "choi_momentum", "choi_rmsprop") not in inc.index  # absent optimizers are skipped


def test_performance_profile_and_scores_known():
    costs = pd.DataFrame([("p1", "A", 100), ("p2", "A", 200), ("p1", "B", 200), ("p2", "B", 100),
                          ("p1", "C", 100), ("p2", "C", np.inf), ("p3", "A", np.inf), ("p3", "B", np.nan),
                          ("p3", "C", np.inf)], columns=["problem", "optimizer", "time"])
    prof = performance_profile(costs, taus=[1.0, 1.5, 2.0, 4.0])
    assert list(prof.loc["A"]) == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert list(prof.loc["C"]) == pytest.approx([1 / 3] * 4)
    sc = profile_scores(costs, tau_max=4.0)
    # A: ratios 1, 2, ∞ → (1 + 2/3 + 0)/3; C: 1, ∞, ∞ → 1/3
    assert sc["A"] == pytest.approx((1 + 2 / 3) / 3) and sc["B"] == pytest.approx(sc["A"]) and sc["C"] == pytest.approx(1 / 3)
    # the exact score is the normalised area under the profile
    fine = performance_profile(costs, taus=np.linspace(1, 4, 30001))
    area = np.trapezoid(fine.to_numpy(), x=np.asarray(fine.columns, float), axis=1) / 3.0
    np.testing.assert_allclose(area, sc.reindex(fine.index).to_numpy(), atol=1e-3)
