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


# ----------------------------------------------------------------------------- trend, factors, model gap
def _best_frame(per_b, metric="accuracy", problem="synthetic_lm", schedule="none"):
    """A ``best_settings`` frame by hand: per_b = {B: (adam test values per seed, momentum test values per seed)}."""
    sign = 1.0 if metric == "accuracy" else -1.0
    rows = []
    for B, sides in per_b.items():
        for opt, vals in zip(("adam", "momentum"), sides):
            v = np.asarray(vals, float)
            rows.append({"problem": problem, "schedule": schedule, "batch_size": B, "budget": "large", "budget_trials": 5,
                         "optimizer": opt, "metric": metric, "mean": v.mean(), "select_score": sign * v.mean(),
                         "score": sign * v.mean(), "seed_scores": tuple(sign * v)})
    return pd.DataFrame(rows)


def test_trend_grows(tmp_path):
    # Adam better at every B, by 0.01 at B=16 and 0.06 at B=1024 (seeds ± 0.004)
    finals = {"momentum": {b: 0.90 for b in BS}, "adam": {16: 0.91, 64: 0.92, 256: 0.94, 1024: 0.96}}
    _, _, best = _sweep(tmp_path, finals=finals)
    tr = cx.gap_trend(best, n_boot=2000).iloc[0]
    assert tr["verdict"] == "grows" and tr["leader"] == "adam"
    assert (tr["B_small"], tr["B_large"]) == (16, 1024) and tr["change"] == pytest.approx(0.05)
    assert 0 < tr["change_lo"] <= 0.05 <= tr["change_hi"] and tr["adam_better_at"] == tuple(BS) and tr["sgd_better_at"] == ()
    text = cx.describe_trend(cx.gap_trend(best, n_boot=2000))[0]
    assert "the gap grows with batch size" in text and "Adam's advantage in test accuracy is +0.01 at B=16 and +0.06 at B=1024" in text
    # the same with SGD ahead: its advantage grows from 0.01 to 0.05
    spread = np.array([-0.004, 0.0, 0.004])
    sgd_ahead = _best_frame({16: (0.89 + spread, 0.90 + spread), 64: (0.88 + spread, 0.90 + spread),
                             1024: (0.85 + spread, 0.90 + spread)})
    tr = cx.gap_trend(sgd_ahead, n_boot=2000).iloc[0]
    assert tr["verdict"] == "grows" and tr["leader"] == "sgd" and tr["change"] == pytest.approx(-0.04)
    assert "SGD's advantage in test accuracy is +0.01 at B=16 and +0.05 at B=1024, a change of +0.04" \
        in cx.describe_trend(cx.gap_trend(sgd_ahead))[0]


def test_trend_shrinks_on_a_loss():
    # lower is better: Adam's loss 0.10 below SGD's at B=16, 0.02 below at B=1024 → Adam's advantage shrinks
    # (the loss gap Adam − SGD goes −0.10 → −0.02, i.e. up: reading it without the sign would say "grows")
    spread = np.array([-0.004, 0.0, 0.004])
    best = _best_frame({16: (1.90 + spread, 2.00 + spread), 64: (1.95 + spread, 2.00 + spread),
                        256: (1.98 + spread, 2.00 + spread)}, metric="loss")
    tr = cx.gap_trend(best, n_boot=2000).iloc[0]
    assert tr["verdict"] == "shrinks" and tr["leader"] == "adam" and tr["change"] == pytest.approx(-0.08)
    assert tr["change_hi"] < 0 and tr["adam_better_at"] == (16, 64, 256)
    assert "the gap shrinks with batch size — Adam's advantage in test loss is +0.1 at B=16 and +0.02 at B=256" \
        in cx.describe_trend(cx.gap_trend(best))[0]


def test_trend_reverses(tmp_path):
    _, _, best = _sweep(tmp_path)  # FINALS: SGD better by 0.02 at B=16, Adam by 0.02 and 0.04 at B=256, 1024
    tr = cx.gap_trend(best, n_boot=2000).iloc[0]
    assert tr["verdict"] == "reverses" and tr["leader"] is None
    assert tr["sgd_better_at"] == (16,) and tr["adam_better_at"] == (256, 1024)
    text = cx.describe_trend(cx.gap_trend(best, n_boot=2000))[0]
    assert "the gap reverses as B grows" in text and "SGD wins at the smaller, Adam at the larger batch sizes" in text


def test_trend_noise_only_claims_nothing():
    # seeds spread ± 0.02 around means whose Adam − SGD difference wobbles by < 0.01: the point estimates move
    # (−0.011 from the smallest to the largest B) but no interval excludes 0
    spread = np.array([-0.02, 0.0, 0.02])
    diffs = {16: 0.005, 64: -0.004, 256: 0.003, 1024: -0.006}
    best = _best_frame({b: (0.9 + d + spread, 0.9 + spread[::-1]) for b, d in diffs.items()})
    tr = cx.gap_trend(best, n_boot=2000).iloc[0]
    assert tr["change"] == pytest.approx(-0.011) and tr["change_lo"] < 0 < tr["change_hi"]
    assert tr["verdict"] == "no significant change" and tr["leader"] is None
    assert tr["adam_better_at"] == () and tr["sgd_better_at"] == ()
    text = cx.describe_trend(cx.gap_trend(best))[0]
    assert "no trend is claimed" in text and not any(w in text for w in ("grows", "shrinks", "reverses", "moves toward"))
    # a significant but constant gap: the leader is named, still no trend
    small = np.array([-0.002, 0.0, 0.002])
    const = cx.gap_trend(_best_frame({b: (0.93 + small, 0.90 + small) for b in BS}), n_boot=2000).iloc[0]
    assert const["verdict"] == "no significant change" and const["leader"] == "adam" and const["adam_better_at"] == tuple(BS)
    # neither end significant on its own, but the change between them is: "shifts", said as such
    w = np.array([-0.01, -0.005, 0.0, 0.005, 0.01])
    sh = _best_frame({16: (0.8925 + w, 0.9 + w), 1024: (0.9075 + w, 0.9 + w)})
    tr = cx.gap_trend(sh, n_boot=4000).iloc[0]
    assert tr["verdict"] == "shifts" and tr["leader"] is None and tr["change_lo"] > 0
    assert "neither family is significantly better at any single B, but Adam's advantage in test accuracy (Adam − SGD) moves toward Adam" in cx.describe_trend(pd.DataFrame([tr]))[0]
    # one seed per side: no interval, no claim
    one = cx.gap_trend(_best_frame({16: ([0.9], [0.8]), 1024: ([0.95], [0.7])})).iloc[0]
    assert one["verdict"] == "not enough data" and "no trend is claimed" in cx.describe_trend(pd.DataFrame([one]))[0]


SMALL = ["tokens_tf_zipf_softmax_gelu", "tokens_tf_uniform_softmax_gelu", "tokens_tf_zipf_none_gelu",
         "tokens_tf_zipf_softmax_relu", "digits_mlp_balanced", "digits_mlp_heavy_tailed"]  # jobs/crossover_small.toml


def test_factor_pairs_from_the_registry():
    one = cx.factor_pairs(["tokens_tf_zipf_softmax_gelu", "tokens_tf_zipf_none_gelu"])
    assert len(one) == 1 and one.iloc[0]["factor"] == "attention"
    assert {one.iloc[0]["base_value"], one.iloc[0]["other_value"]} == {"softmax", "none"}
    # two arguments differ (distribution and attention), or the names are not registered: no pair
    assert cx.factor_pairs(["tokens_tf_zipf_softmax_gelu", "tokens_tf_uniform_none_gelu"]).empty
    assert cx.factor_pairs(["synthetic_lm", "tokens_tf_zipf_none_gelu"]).empty
    # the small study: one factor at a time around the Zipf/softmax/GeLU transformer, plus the classifiers
    got = {(r["factor"], r["base"], r["other"], r["base_value"], r["other_value"]) for _, r in cx.factor_pairs(SMALL).iterrows()}
    assert got == {("distribution", "tokens_tf_zipf_softmax_gelu", "tokens_tf_uniform_softmax_gelu", "zipf", "uniform"),
                   ("attention", "tokens_tf_zipf_softmax_gelu", "tokens_tf_zipf_none_gelu", "softmax", "none"),
                   ("activation", "tokens_tf_zipf_softmax_gelu", "tokens_tf_zipf_softmax_relu", "gelu", "relu"),
                   ("classes", "digits_mlp_balanced", "digits_mlp_heavy_tailed", "balanced", "heavy_tailed")}


def test_factor_effects_per_batch_size(tmp_path):
    # the same sweep for two attention settings; with attention=none Adam ends 0.03 lower at B=16 and 64 only
    base, other = "tokens_tf_zipf_softmax_gelu", "tokens_tf_zipf_none_gelu"
    worse = {"momentum": FINALS["momentum"], "adam": {b: v - (0.03 if b <= 64 else 0.0) for b, v in FINALS["adam"].items()}}
    runs = (crossover_runs(MODELS, FINALS, BS, seed_factors=(0.96, 1.0, 1.04), problem=base)
            + crossover_runs(MODELS, worse, BS, seed_factors=(0.96, 1.0, 1.04), problem=other))
    # ... plus a problem differing in two arguments from both (no pair) and one not in the registry
    runs += crossover_runs(MODELS, FINALS, BS, seed_factors=(0.96, 1.0, 1.04), problem="tokens_tf_uniform_softmax_relu")
    runs += crossover_runs(MODELS, FINALS, BS, seed_factors=(0.96, 1.0, 1.04))
    write_results(tmp_path / "s", runs)
    best = best_settings(final_performance(load_study(tmp_path / "s")))
    eff = cx.factor_effects(best, n_boot=2000)
    assert set(eff["factor"]) == {"attention"} and len(eff) == len(BS)
    e = eff.set_index("batch_size")
    for b in BS:
        assert e.loc[b, "diff"] == pytest.approx(e.loc[b, "adv_other"] - e.loc[b, "adv_base"])
        assert e.loc[b, "lo"] <= e.loc[b, "diff"] <= e.loc[b, "hi"]
    # which of the two is the base is a tie broken by name: orient the expectation accordingly
    sign = 1.0 if e["other"].iloc[0] == other else -1.0
    assert [e.loc[b, "diff"] for b in BS] == pytest.approx([-0.03 * sign, -0.03 * sign, 0.0, 0.0], abs=1e-12)
    assert list(e["significant"]) == [True, True, False, False]
    text = cx.describe_factors(eff)[0]
    toward = "SGD" if sign > 0 else "Adam"
    assert text.startswith("Factor attention (none): with attention=")
    assert f"moves significantly toward {toward} at B=16, 64, with no significant difference elsewhere" in text


def test_factor_effects_noise_claims_nothing():
    spread = np.array([-0.02, 0.0, 0.02])
    best = pd.concat([_best_frame({b: (0.9 + spread, 0.9 + spread[::-1]) for b in BS}, problem="tokens_tf_zipf_softmax_gelu"),
                      _best_frame({b: (0.905 + spread, 0.9 + spread) for b in BS}, problem="tokens_tf_zipf_softmax_relu")])
    eff = cx.factor_effects(best, n_boot=2000)
    assert set(eff["factor"]) == {"activation"} and not eff["significant"].any()
    assert eff["diff"].to_numpy() == pytest.approx([0.005] * len(BS))
    assert "differs significantly at no batch size" in cx.describe_factors(eff)[0]
    one = pd.concat([_best_frame({b: ([0.9], [0.8]) for b in BS}, problem="tokens_tf_zipf_softmax_gelu"),
                     _best_frame({b: ([0.9], [0.7]) for b in BS}, problem="tokens_tf_zipf_softmax_relu")])
    eff1 = cx.factor_effects(one)
    assert eff1["diff"].abs().to_numpy() == pytest.approx([0.1] * len(BS)) and not eff1["significant"].any()
    assert "cannot be tested: one seed on a side" in cx.describe_factors(eff1)[0]


def _model_ratio(B):
    """Independent of the fit: S_SGD/S_Adam from the models the sweep was built from."""
    (s_sgd, n_sgd), (s_adam, n_adam) = MODELS["momentum"], MODELS["adam"]
    return s_sgd * (1 + n_sgd / np.asarray(B, float)) / (s_adam * (1 + n_adam / np.asarray(B, float)))


def test_predicted_and_measured_step_gap(tmp_path):
    res, perf, best = _sweep(tmp_path)
    pts = cx.scaling_points(best, steps_to_target(res, cx.scaling_targets(best, perf)))
    cr = cx.crossover(pts, n_boot=500)
    c = cr.iloc[0]
    Bs = np.geomspace(4, 4096, 37)
    pred = cx.predicted_step_ratio(c["E_adam"], c["S_adam"], c["E_sgd"], c["S_sgd"], Bs)
    assert pred == pytest.approx(_model_ratio(Bs), rel=1e-9)
    assert float(cx.predicted_step_ratio(c["E_adam"], c["S_adam"], c["E_sgd"], c["S_sgd"], B_STAR)) == pytest.approx(1.0)
    assert np.isnan(cx.predicted_step_ratio(-1000.0, 1.0, 1.0, 1.0, 10.0))  # a negative predicted S: no ratio
    sg = cx.step_gap(pts, n_boot=1000).set_index("batch_size")
    assert sg["ratio"].to_numpy() == pytest.approx(_model_ratio(BS))  # seeds at S·(0.96, 1, 1.04): exact means
    assert ((sg["lo"] < sg["ratio"]) & (sg["ratio"] < sg["hi"])).all() and (sg["n_seeds_adam"] == 3).all()
    text = cx.describe_step_gap(cx.step_gap(pts), cr)[0]
    assert "B=16: 0.554 vs 0.554" in text and "inside the measured ratio's 95% interval at 4 of 4 batch sizes with an interval" in text


def test_fig_gap_model(tmp_path):
    from analysis.figures import fig_gap_model, plt

    res, perf, best = _sweep(tmp_path)
    pts = cx.scaling_points(best, steps_to_target(res, cx.scaling_targets(best, perf)))
    cr, sg = cx.crossover(pts, n_boot=300), cx.step_gap(pts, n_boot=300)
    fig = fig_gap_model(sg, cr, "synthetic_lm", "none")
    ax = fig.axes[0]
    labelled = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert len(labelled) == 2  # the model line and B*
    model = [ln for ln in labelled if ln.get_label().startswith("model")]
    assert len(model) == 1
    x, y = model[0].get_xdata(), model[0].get_ydata()
    assert y == pytest.approx(_model_ratio(x), rel=1e-9) and x.min() < 16 and x.max() > 1024
    star = [ln for ln in labelled if ln.get_label().startswith("B*")]
    assert len(star) == 1 and star[0].get_xdata()[0] == pytest.approx(B_STAR)
    assert len(ax.containers) == 1  # the measured points with their intervals
    assert ax.containers[0].lines[0].get_ydata() == pytest.approx(_model_ratio(BS))
    plt().close(fig)
    # no crossover: the model line and the points, no B* line
    res, perf, best = _sweep(tmp_path / "no", models={"momentum": (1000.0, 128.0), "adam": (250.0, 64.0)})
    pts = cx.scaling_points(best, steps_to_target(res, cx.scaling_targets(best, perf)))
    fig = fig_gap_model(cx.step_gap(pts, n_boot=100), cx.crossover(pts, n_boot=100), "synthetic_lm", "none")
    labels = [ln.get_label() for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")]
    assert len(labels) == 1 and labels[0].startswith("model") and len(fig.axes[0].containers) == 1
    plt().close(fig)


def test_gap_figure_has_one_panel_per_metric():
    """A loss gap and an accuracy gap have different units and signs: never on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    from analysis import figures

    rows = [{"problem": p, "schedule": "none", "metric": m, "batch_size": b, "gap": g, "lo": g - 0.1, "hi": g + 0.1}
            for p, m, g in (("lm", "loss", -0.5), ("clf", "accuracy", 0.02), ("clf2", "accuracy", 0.01))
            for b in (8, 16, 32)]
    fig = figures.fig_gap(pd.DataFrame(rows))
    axes = fig.get_axes()
    assert len(axes) == 2
    labels = {ax.get_ylabel(): sorted(t.get_text() for t in ax.get_legend().get_texts()) for ax in axes}
    assert labels == {"test loss: Adam − SGD (lower = Adam better)": ["lm / none"],
                      "test accuracy: Adam − SGD (higher = Adam better)": ["clf / none", "clf2 / none"]}
