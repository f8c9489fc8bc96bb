"""Gap vs. batch size, the S(B) fit and the crossover batch size B*, on sweeps built from the model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import load_study
from analysis import crossover as cx
from analysis.choi import steps_to_target
from analysis.performance import best_settings, final_performance
from analysis.synthetic import crossover_runs, write_results

BS = [16, 64, 256, 1024]
# SGD with momentum: S_min 1000, N 128 → E_min 128,000; Adam: S_min 250, N 1024 → E_min 256,000
MODELS = {"momentum": (1000.0, 128.0), "adam": (250.0, 1024.0)}
B_STAR = (256_000 - 128_000) / (1000 - 250)  # 170.67: SGD needs fewer steps below it, Adam above
FINALS = {"momentum": {16: 0.90, 64: 0.90, 256: 0.88, 1024: 0.85}, "adam": {16: 0.88, 64: 0.90, 256: 0.90, 1024: 0.89}}


def _sweep(tmp_path, models=MODELS, finals=FINALS, **kw):
    write_results(tmp_path / "s", crossover_runs(models, finals, BS, seed_factors=(0.96, 1.0, 1.04), **kw))
    res = load_study(tmp_path / "s")
    perf = final_performance(res)
    return res, perf, best_settings(perf)


def test_fit_and_formula_exact_on_model_points():
    pts = pd.DataFrame([{"batch_size": b, "time": s * (1 + n / b)} for b in BS for s, n in [MODELS["adam"]]])
    f = cx.fit_scaling(pts)
    assert f["S_min"] == pytest.approx(250) and f["E_min"] == pytest.approx(256_000) and f["N"] == pytest.approx(1024)
    assert cx.crossover_batch_size(256_000, 250, 128_000, 1000) == pytest.approx(B_STAR)
    # both differences must be positive
    assert np.isnan(cx.crossover_batch_size(100_000, 250, 128_000, 1000))  # E_Adam < E_SGD
    assert np.isnan(cx.crossover_batch_size(256_000, 1200, 128_000, 1000))  # S_SGD < S_Adam
    assert cx.fit_scaling(pts[pts["batch_size"] == 16])["n_batch_sizes"] == 1  # one batch size: no fit


def test_gap_vs_batch_size_known(tmp_path):
    _, _, best = _sweep(tmp_path)
    assert cx.applicable(best)
    gap = cx.gap_vs_batch_size(best, n_boot=3000).set_index("batch_size")
    expected = {b: FINALS["adam"][b] - FINALS["momentum"][b] for b in BS}
    for b in BS:
        assert gap.loc[b, "gap"] == pytest.approx(expected[b])
        assert gap.loc[b, "lo"] <= gap.loc[b, "gap"] <= gap.loc[b, "hi"]
        # each side's seeds are final ± 0.004: the interval is no wider than ±0.008
        assert gap.loc[b, "hi"] - gap.loc[b, "gap"] <= 0.008 + 1e-9
    assert (gap.loc[16, "significant"], gap.loc[64, "significant"], gap.loc[1024, "significant"]) == (True, False, True)
    assert gap.loc[16, "advantage"] < 0 < gap.loc[1024, "advantage"]
    assert set(gap["adam"]) == {"adam"} and set(gap["sgd"]) == {"momentum"} and (gap["n_seeds_adam"] == 3).all()


def test_crossover_from_curves(tmp_path):
    res, perf, best = _sweep(tmp_path)
    targets = cx.scaling_targets(best, perf)
    assert targets == {"synthetic_lm": pytest.approx(0.85)}  # the weakest best setting's final validation
    pts = cx.scaling_points(best, steps_to_target(res, targets))
    means = pts.groupby(["family", "batch_size"])["time"].mean()
    for fam, opt in (("adam", "adam"), ("sgd", "momentum")):
        s, n = MODELS[opt]
        for b in BS:
            assert means[fam, b] == pytest.approx(s * (1 + n / b))
    cr = cx.crossover(pts, n_boot=2000).iloc[0]
    assert cr["S_adam"] == pytest.approx(250) and cr["E_adam"] == pytest.approx(256_000)
    assert cr["S_sgd"] == pytest.approx(1000) and cr["N_sgd"] == pytest.approx(128)
    assert cr["B_star"] == pytest.approx(B_STAR)
    assert cr["lo"] < B_STAR < cr["hi"] and cr["p_exists"] == 1.0 and cr["n_seeds"] == 3
    text = " ".join(cx.describe(cx.gap_vs_batch_size(best), cx.crossover(pts)))
    assert "B* = 170.7" in text and "within the measured range 16–1024" in text and "SGD better" in text


def test_no_crossover_is_stated(tmp_path):
    # Adam needs fewer steps at every batch size (smaller S_min and E_min): no crossing
    res, perf, best = _sweep(tmp_path, models={"momentum": (1000.0, 128.0), "adam": (250.0, 64.0)})
    pts = cx.scaling_points(best, steps_to_target(res, cx.scaling_targets(best, perf)))
    cr = cx.crossover(pts, n_boot=500)
    assert np.isnan(cr["B_star"].iloc[0]) and cr["p_exists"].iloc[0] == 0.0
    assert "No crossover" in cx.describe(cx.gap_vs_batch_size(best), cr)[-1]


def test_single_seed_and_single_batch_size(tmp_path):
    _, _, best = _sweep(tmp_path, seed_offsets=(0.0,))
    gap = cx.gap_vs_batch_size(best)
    assert gap["lo"].isna().all() and not gap["significant"].any()
    assert "one seed" in cx.describe(gap, pd.DataFrame(columns=["problem"]))[0]
    one_b = best[best["batch_size"] == 64]
    assert not cx.applicable(one_b) and not cx.applicable(best[best["optimizer"] == "adam"])
