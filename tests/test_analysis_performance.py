"""Final performance, best settings, rankings and the Fig. 2/3 statistics on data with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from analysis import load_study
from analysis.improvement import improvement, improvement_quantiles, relative_improvement
from analysis.performance import aggregate_ranks, best_settings, final_performance, infer_budgets, rank
from analysis.synthetic import Run, eval_rows, make_record, simple_run, write_results


def _load(tmp_path, runs):
    write_results(tmp_path / "s", runs, runs_per_file=4)
    return load_study(tmp_path / "s")


def _acc_run(valid, test, status="finished", **rec):
    valid, test = np.asarray(valid, float), np.asarray(test, float)
    rows = eval_rows(len(valid), valid_accuracy=valid, test_accuracy=test, train_accuracy=valid,
                     valid_loss=1 - valid, test_loss=1 - test, train_loss=1 - valid)
    return Run(make_record(num_epochs=len(valid) - 1, problem="fmnist_2c2d", **rec), rows, status=status)


def test_final_performance_rules_and_metric(tmp_path):
    peak = _acc_run([0.1, 0.5, 0.9, 0.7], [0.1, 0.4, 0.8, 0.6], optimizer="a")
    tie = _acc_run([0.1, 0.9, 0.9], [0.1, 0.7, 0.75], optimizer="b")
    loss_rows = eval_rows(3, valid_loss=[3.0, 1.0, 2.0], test_loss=[3.5, 1.5, 2.5], train_loss=[3.0, 1.0, 2.0])
    loss = Run(make_record(num_epochs=2, problem="quadratic_deep", optimizer="c"), loss_rows)
    res = _load(tmp_path, [peak, tie, loss])
    last = final_performance(res, rule="last").set_index("optimizer")
    best = final_performance(res, rule="best").set_index("optimizer")
    assert (last.loc["a", "epoch"], last.loc["a", "score_valid"], last.loc["a", "test_value"]) == (3, 0.7, 0.6)
    assert (best.loc["a", "epoch"], best.loc["a", "score_valid"], best.loc["a", "test_value"]) == (2, 0.9, 0.8)
    assert best.loc["b", "epoch"] == 1 and best.loc["b", "test_value"] == 0.7  # ties: the earliest epoch
    # loss problem: lower is better, scores are −loss
    assert last.loc["c", "metric"] == "loss" and last.loc["c", "score_test"] == -2.5 and last.loc["c", "test_value"] == 2.5
    assert best.loc["c", "epoch"] == 1 and best.loc["c", "score_test"] == -1.5
    assert last.loc["a", "metric"] == "accuracy"
    # metric override: rank the accuracy problem on loss
    forced = final_performance(res, metric={"fmnist_2c2d": "loss"}).set_index("optimizer")
    assert forced.loc["a", "metric"] == "loss" and forced.loc["a", "test_value"] == pytest.approx(0.4)
    # the long and wide tables give the same answer as Results
    long = res.long()
    np.testing.assert_array_equal(final_performance(long).sort_values("run_id")["score_test"],
                                  final_performance(res).sort_values("run_id")["score_test"])


def test_diverged_and_unfinished_runs(tmp_path):
    ok = _acc_run([0.1, 0.6, 0.8], [0.1, 0.6, 0.8], optimizer="ok")
    rows = eval_rows(3, valid_accuracy=[0.1, 0.7, 0.1], test_accuracy=[0.1, 0.7, 0.1], valid_loss=[2.0, 0.5, np.nan],
                     test_loss=[2.0, 0.5, np.nan], train_loss=[2.0, 0.5, np.nan])
    div = Run(make_record(num_epochs=2, problem="fmnist_2c2d", optimizer="div"), rows, status="diverged")
    run_ = _acc_run([0.1, 0.9], [0.1, 0.9], status="running", optimizer="running")
    fail = _acc_run([0.1, 0.9], [0.1, 0.9], status="failed", optimizer="failed")
    res = _load(tmp_path, [ok, div, run_, fail])
    worst = final_performance(res).set_index("optimizer")
    assert set(worst.index) == {"ok", "div"}  # failed / running curves are not final
    assert worst.loc["div", "score_test"] == -np.inf and np.isnan(worst.loc["div", "test_value"]) and worst.loc["div", "diverged"]
    assert set(final_performance(res, diverged="exclude")["optimizer"]) == {"ok"}
    keep = final_performance(res, diverged="keep", rule="best").set_index("optimizer")
    assert keep.loc["div", "score_test"] == 0.7 and keep.loc["div", "diverged"]
    assert len(final_performance(res, include_unfinished=True)) == 4
    with pytest.raises(ValueError):
        final_performance(res, rule="median")


def _pool(opt, valids, budgets, batch_size=128, schedule="none", rerun=None, problem="fmnist_2c2d"):
    """Tuning trials with final validation = test = valids[k]; ``rerun``: {budget: (trial, [test values])}."""
    runs = []
    for k, v in enumerate(valids):
        runs.append(simple_run(v, optimizer=opt, kind="tuning", trial=k, budget=budgets[k], batch_size=batch_size,
                               schedule=schedule, hparams={"lr": 0.1 * (k + 1)}, problem=problem))
    for budget, (k, tests) in (rerun or {}).items():
        for i, t in enumerate(tests):
            runs.append(simple_run(valids[k], t, optimizer=opt, kind="rerun", budget=budget, seed=43 + i,
                                   batch_size=batch_size, schedule=schedule, hparams={"lr": 0.1 * (k + 1)}, problem=problem))
    return runs


def test_best_settings_nested_budgets_and_reruns(tmp_path):
    valids = [0.5, 0.7, 0.6, 0.65, 0.9, 0.8]
    budgets = ["small"] * 3 + ["large"] * 3
    # small's re-runs are of its best trial (1); large's re-runs were resolved to trial 3 (another rule)
    runs = _pool("sgd", valids, budgets, rerun={"small": (1, [0.72, 0.74]), "large": (3, [0.6, 0.6])})
    runs += [simple_run(0.4 + s / 100, optimizer="sgd", seed=42 + s, hparams={"lr": 0.01}) for s in range(3)]
    # a second batch size is its own pool; a tie on validation goes to the earlier trial
    runs += _pool("sgd", [0.8, 0.8, 0.1], ["small"] * 3, batch_size=512)
    perf = final_performance(_load(tmp_path, runs))
    assert infer_budgets(perf) == {"small": 3, "large": 6}
    best = best_settings(perf).set_index(["batch_size", "budget"])
    s = best.loc[(128, "small")]
    assert s["trial"] == 1 and s["n_seeds"] == 3 and s["hparams"] == "lr=0.2"
    assert s["mean"] == pytest.approx(0.72) and s["std"] == pytest.approx(0.02) and s["budget_trials"] == 3
    lg = best.loc[(128, "large")]
    assert lg["trial"] == 4 and lg["n_seeds"] == 1 and lg["n_other_reruns"] == 2 and lg["mean"] == pytest.approx(0.9)
    one = best.loc[(128, "oneshot")]
    assert one["trial"] == -1 and one["n_seeds"] == 3 and one["mean"] == pytest.approx(0.41) and one["std"] == pytest.approx(0.01)
    assert best.loc[(512, "small"), "trial"] == 0
    assert (512, "large") not in best.index  # no large-budget trials at that batch size
    assert len(best.loc[128]) == 3


def test_best_settings_separate_pools(tmp_path):
    """Imported results: each budget has its own pool starting at trial 0."""
    runs = _pool("adam", [0.6, 0.7], ["small", "small"]) + \
        [simple_run(v, optimizer="adam", kind="tuning", trial=k, budget="large", hparams={"lr": 1.0 + k})
         for k, v in enumerate([0.65, 0.95, 0.5])]
    best = best_settings(final_performance(_load(tmp_path, runs))).set_index("budget")
    assert best.loc["small", "trial"] == 1 and best.loc["small", "mean"] == pytest.approx(0.7)
    assert best.loc["large", "trial"] == 1 and best.loc["large", "hparams"] == "lr=2.0"
    nested = best_settings(final_performance(_load(tmp_path / "n", runs)), pools="nested").set_index("budget")
    assert nested.loc["small", "mean"] == pytest.approx(0.95)  # pooled as prefixes: a different (wrong) answer


def _seeds(opt, tests, problem="fmnist_2c2d", status="finished"):
    return [simple_run(t, optimizer=opt, seed=42 + i, problem=problem, hparams={"lr": 0.01},
                       status=status if i == 0 else "finished") for i, t in enumerate(tests)]


def test_rank_ties_decided_by_seed_spread(tmp_path):
    runs = (_seeds("A", [0.89, 0.90, 0.91]) + _seeds("B", [0.885, 0.895, 0.905]) + _seeds("C", [0.79, 0.80, 0.81])
            + _seeds("D", [0.95, 0.95, 0.95], status="diverged")
            # second problem: C is best, A and B clearly apart (tiny spread)
            + _seeds("A", [0.5, 0.5001, 0.5002], "p2") + _seeds("B", [0.6, 0.6001, 0.6002], "p2")
            + _seeds("C", [0.7, 0.7001, 0.7002], "p2"))
    best = best_settings(final_performance(_load(tmp_path, runs)))
    assert best.set_index(["problem", "optimizer"]).loc[("fmnist_2c2d", "D"), "score"] == -np.inf
    r = rank(best).set_index(["problem", "optimizer"])["rank"]
    # A and B overlap within one seed std: a tie at 1; C is beaten by both; the diverged D is last
    assert (r["fmnist_2c2d", "A"], r["fmnist_2c2d", "B"], r["fmnist_2c2d", "C"], r["fmnist_2c2d", "D"]) == (1, 1, 3, 4)
    assert (r["p2", "C"], r["p2", "B"], r["p2", "A"]) == (1, 2, 3)
    agg = aggregate_ranks(rank(best)).set_index("optimizer")
    assert agg.loc["A", "mean_rank"] == 2.0 and agg.loc["B", "mean_rank"] == 1.5 and agg.loc["C", "mean_rank"] == 2.0
    assert agg.loc["D", "count"] == 1 and list(agg.index)[0] == "B"


def test_improvement_fig2_and_fig3_known(tmp_path):
    runs = []
    # accuracy problem: one-shot 0.80, small 0.85, large 0.90 (constant schedule); cosine one-shot 0.82, large 0.88
    for sched, one, small, large in (("none", 0.80, 0.85, 0.90), ("cosine", 0.82, 0.84, 0.88)):
        runs += [simple_run(one, optimizer="adam", schedule=sched, seed=s, hparams={"lr": 0.001}) for s in (42, 43)]
        runs += _pool("adam", [small, large], ["small", "large"], schedule=sched)
    # loss problem: one-shot 2.0, small 1.5, large 1.0
    runs += [simple_run(2.0, metric="loss", problem="quadratic_deep", optimizer="adam", hparams={"lr": 0.001})]
    runs += [simple_run(v, metric="loss", problem="quadratic_deep", optimizer="adam", kind="tuning", trial=k,
                        budget=b, hparams={"lr": 0.1 * (k + 1)}) for k, (v, b) in enumerate([(1.5, "small"), (1.0, "large")])]
    best = best_settings(final_performance(_load(tmp_path, runs)))
    imp = improvement(best).set_index(["problem", "schedule", "budget"])["improvement"]
    assert imp["fmnist_2c2d", "none", "small"] == pytest.approx(0.05)
    assert imp["fmnist_2c2d", "none", "large"] == pytest.approx(0.10)
    assert imp["fmnist_2c2d", "cosine", "large"] == pytest.approx(0.06)
    assert imp["quadratic_deep", "none", "small"] == pytest.approx(0.5)  # loss removed
    rel2 = improvement(best, normalise="relative").set_index(["problem", "schedule", "budget"])["improvement"]
    assert rel2["fmnist_2c2d", "none", "large"] == pytest.approx(0.10 / 0.80)
    assert rel2["quadratic_deep", "none", "large"] == pytest.approx(1.0 / 2.0)
    rel = relative_improvement(best).set_index(["problem", "schedule", "budget"])["improvement"]
    # Fig. 3: everything against the constant-schedule one-shot default (0.80 / loss 2.0)
    assert rel["fmnist_2c2d", "none", "oneshot"] == 0.0
    assert rel["fmnist_2c2d", "cosine", "oneshot"] == pytest.approx(0.02 / 0.80)
    assert rel["fmnist_2c2d", "cosine", "large"] == pytest.approx(0.08 / 0.80)
    assert rel["quadratic_deep", "none", "small"] == pytest.approx(0.25)
    q = improvement_quantiles(relative_improvement(best)).set_index(["schedule", "budget"])
    vals = [0.10 / 0.80, 0.5]  # the two problems' large-budget improvements (constant schedule)
    assert q.loc[("none", "large"), "median"] == pytest.approx(np.median(vals))
    assert q.loc[("none", "large"), "q25"] == pytest.approx(np.percentile(vals, 25))
    assert q.loc[("none", "large"), "q75"] == pytest.approx(np.percentile(vals, 75)) and q.loc[("none", "large"), "n"] == 2


def test_improvement_with_diverged_side_is_nan(tmp_path):
    runs = [simple_run(0.8, optimizer="sgd", hparams={"lr": 0.01})]
    runs += [simple_run(0.9, optimizer="sgd", kind="tuning", trial=0, budget="small", hparams={"lr": 5.0}, status="diverged")]
    best = best_settings(final_performance(_load(tmp_path, runs)))
    imp = improvement(best)
    assert len(imp) == 1 and np.isnan(imp["improvement"].iloc[0])
    q = improvement_quantiles(relative_improvement(best)).set_index("budget")
    assert q.loc["small", "n_diverged"] == 1 and q.loc["small", "n"] == 0


def test_hand_made_long_table():
    """A table built by hand (plain strings, no train series, no steps) is analysed as well: missing
    series are not divergence, a NaN inside a measured series is."""
    import pandas as pd

    rows = [("a", e, s, v) for e, (s, v) in enumerate([("valid", 1.0), ("valid", 0.5)])]
    rows += [("a", e, "test", v) for e, v in enumerate([1.1, 0.6])]
    rows += [("b", e, "valid", v) for e, v in enumerate([1.0, float("nan")])] + [("b", e, "test", 1.0) for e in range(2)]
    df = pd.DataFrame(rows, columns=["run_id", "epoch", "split", "value"]).assign(metric="loss", problem="p", optimizer="o")
    perf = final_performance(df).set_index("run_id")
    assert not perf.loc["a", "diverged"] and perf.loc["a", "test_value"] == pytest.approx(0.6) and perf.loc["a", "step"] == -1
    assert perf.loc["b", "diverged"] and perf.loc["b", "score_test"] == -np.inf
