"""Importing the published Crowded Valley JSON tree (written here by hand in that format)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import analysis
from analysis.deepobs import OPTIMIZER_FOLDERS, export_deepobs, read_deepobs
from analysis.performance import best_settings, final_performance, rank
from analysis.synthetic import simple_run, write_results
from analysis.table import combine


def _write(root: Path, budget: str, schedule: str, problem: str, folder: str, setting: str, seed: int, date: str,
           doc: dict | str) -> Path:
    d = root / budget / schedule / problem / folder / setting
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"random_seed__{seed}__{date}.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=4))
    return p


def _doc(problem, opt_name, hp, seed, losses, accs=None, num_epochs=None, sched=None, batch_size=128):
    n = len(losses)
    doc = {"testproblem": problem, "batch_size": batch_size, "num_epochs": n - 1 if num_epochs is None else num_epochs,
           "random_seed": seed, "l2_reg": None, "optimizer_name": opt_name, "optimizer_hyperparams": hp,
           "training_params": sched or {"lr_sched_epochs": [], "lr_sched_factors": []},
           "train_losses": [x * 0.9 for x in losses], "valid_losses": list(losses), "test_losses": [x * 1.1 for x in losses],
           "minibatch_train_losses": [x for x in losses for _ in range(2)]}
    if accs is not None:
        doc.update(train_accuracies=list(accs), valid_accuracies=list(accs), test_accuracies=[a - 0.01 for a in accs])
    return doc


ADAM = {"learning_rate": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-08, "use_locking": False}
ADAM_DIR = "num_epochs__2__batch_size__128__beta1__9.e-01__beta2__9.99e-01__epsilon__1.e-08__learning_rate__1.e-03__use_locking__False"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "Crowded-Valley---Results" / "results_main"
    # one-shot Adam on an accuracy problem, two seeds
    for seed in (42, 43):
        _write(root, "oneshot", "none", "fmnist_2c2d", "AdamOptimizer", ADAM_DIR, seed, "2019-12-02-20-57-42",
               _doc("fmnist_2c2d", "AdamOptimizer", ADAM, seed, [2.3, 1.0, 0.5], [0.1, 0.6, 0.80 + (seed - 42) / 100]))
    # small budget SGD: setting B's seed-42 file is older, so it is trial 0; B re-run with seed 43
    for name, lr, date, final in (("A", 0.1, "2020-01-02-00-00-00", 0.70), ("B", 0.5, "2020-01-01-00-00-00", 0.85)):
        setting = f"num_epochs__2__batch_size__128__learning_rate__{lr:.10e}"
        _write(root, "small_budget", "none", "fmnist_2c2d", "GradientDescentOptimizer", setting, 42, date,
               _doc("fmnist_2c2d", "GradientDescentOptimizer", {"learning_rate": lr}, 42, [2.3, 1.2, 0.6], [0.1, 0.5, final]))
    _write(root, "small_budget", "none", "fmnist_2c2d", "GradientDescentOptimizer",
           f"num_epochs__2__batch_size__128__learning_rate__{0.5:.10e}", 43, "2020-02-01-00-00-00",
           _doc("fmnist_2c2d", "GradientDescentOptimizer", {"learning_rate": 0.5}, 43, [2.3, 1.2, 0.6], [0.1, 0.5, 0.87]))
    # medium budget SGD: its own pool, starting again at trial 0 (as in the released tree)
    for i, (lr, final) in enumerate(((0.5, 0.85), (0.3, 0.90))):
        _write(root, "medium_budget", "none", "fmnist_2c2d", "GradientDescentOptimizer",
               f"num_epochs__2__batch_size__128__learning_rate__{lr:.10e}", 42, f"2020-03-0{i + 1}-00-00-00",
               _doc("fmnist_2c2d", "GradientDescentOptimizer", {"learning_rate": lr}, 42, [2.3, 1.2, 0.6], [0.1, 0.5, final]))
    # RMSProp on a loss-only problem with an lr schedule: decay → rho, centered dropped
    rms = {"learning_rate": 0.01, "decay": 0.9, "epsilon": 1e-10, "momentum": 0.0, "centered": False, "use_locking": False}
    _write(root, "small_budget", "cosine", "quadratic_deep", "RMSPropOptimizer", "num_epochs__2__rms", 42,
           "2020-01-01-00-00-00", _doc("quadratic_deep", "RMSPropOptimizer", rms, 42, [300.0, 200.0, 100.0],
                                       sched={"lr_sched_epochs": [1, 2], "lr_sched_factors": [0.5, 0.25]}))
    # NAG (TF's MomentumOptimizer with use_nesterov, told apart by its folder): one diverged, one cut short
    nag = {"learning_rate": 1.0, "momentum": 0.99, "use_nesterov": True, "use_locking": False}
    _write(root, "small_budget", "cosine", "quadratic_deep", "NAGOptimizer", "num_epochs__2__nag1", 42,
           "2020-01-01-00-00-00", _doc("quadratic_deep", "MomentumOptimizer", nag, 42, [300.0, float("nan"), float("nan")]))
    _write(root, "small_budget", "cosine", "quadratic_deep", "NAGOptimizer", "num_epochs__2__nag2", 42,
           "2020-01-02-00-00-00", _doc("quadratic_deep", "MomentumOptimizer", nag, 42, [300.0, 250.0], num_epochs=2))
    # an unreadable file
    _write(root, "small_budget", "cosine", "quadratic_deep", "NAGOptimizer", "num_epochs__2__nag3", 42,
           "2020-01-03-00-00-00", '{"testproblem": "quadratic_deep", "train_losses": [1.0,')
    return root.parent


def test_mapping_covers_the_fifteen_optimizers():
    from optbench.optimizer_specs import CROWDED_VALLEY

    assert set(CROWDED_VALLEY) <= set(OPTIMIZER_FOLDERS.values())
    # folder names as found in the released tree
    for folder, ours in (("AdamOptimizer", "adam"), ("MomentumOptimizer", "momentum"), ("NAGOptimizer", "nag"),
                         ("GradientDescentOptimizer", "sgd"), ("AMSGrad", "amsgrad"),
                         ("LookaheadOptimizerMBGDMomentum", "lookahead_momentum")):
        assert OPTIMIZER_FOLDERS[folder] == ours


def test_import_deepobs_long_table(tree, capsys):
    long = analysis.import_deepobs(tree)  # the repository root: results_main is found below it
    assert set(long.columns) >= {"run_id", "problem", "optimizer", "schedule", "budget", "kind", "trial", "seed",
                                 "batch_size", "hparams", "epoch", "step", "split", "metric", "value"}
    assert set(long["optimizer"]) == {"adam", "sgd", "rmsprop", "nag"}
    assert set(long["budget"]) == {"oneshot", "small", "medium"}
    assert "nag3" in capsys.readouterr().err and any("nag3" in p for p, _ in long.attrs["unreadable"])
    res = read_deepobs(tree, warn=False)
    runs = res.runs.set_index(res.runs["optimizer"].astype(str) + "/" + res.runs["budget"].astype(str) + "/"
                              + res.runs["seed"].astype(str) + "/" + res.runs["hparams"].astype(str))
    assert runs.loc["sgd/small/42/lr=0.5", "kind"] == "tuning" and runs.loc["sgd/small/42/lr=0.5", "trial"] == 0
    assert runs.loc["sgd/small/42/lr=0.1", "trial"] == 1
    assert runs.loc["sgd/small/43/lr=0.5", "kind"] == "rerun"
    assert runs.loc["sgd/medium/42/lr=0.5", "trial"] == 0 and runs.loc["sgd/medium/42/lr=0.3", "trial"] == 1
    assert set(runs.loc[runs["optimizer"] == "adam", "kind"]) == {"oneshot"}
    rms = runs[runs["optimizer"] == "rmsprop"].iloc[0]
    assert rms["hp_rho"] == 0.9 and rms["hp_lr"] == 0.01 and rms["hp_eps"] == 1e-10 and "hp_centered" not in runs
    nag = runs[runs["optimizer"] == "nag"].sort_values("trial")
    assert list(nag["status"]) == ["diverged", "diverged"]  # NaN loss; stopped before num_epochs
    # values, schedule and accuracy presence
    adam43 = long[(long["optimizer"] == "adam") & (long["seed"] == 43) & (long["split"] == "test") & (long["metric"] == "accuracy")]
    np.testing.assert_allclose(adam43.sort_values("epoch")["value"], [0.09, 0.59, 0.80])
    assert set(long.loc[long["problem"] == "quadratic_deep", "metric"]) == {"loss"}
    assert (long["step"] == -1).all()
    i = int(np.flatnonzero(res.runs["optimizer"].astype(str) == "rmsprop")[0])
    lo = int(res.starts[i])
    np.testing.assert_allclose(res.evals["lr"][lo:lo + 3], [0.01, 0.005, 0.0025])


def test_rank_a_new_optimizer_against_published_runs(tree, tmp_path):
    """The use case: my optimizer's one-shot runs, ranked against the imported ones, no re-runs."""
    pub = analysis.import_deepobs(tree)
    mine = tmp_path / "mine"
    write_results(mine, [simple_run(0.84 + s / 1000, optimizer="mynew", problem="fmnist_2c2d", seed=42 + s, num_epochs=2,
                                    hparams={"lr": 0.01}) for s in range(2)])
    both = combine(pub, analysis.load_results(mine))
    best = best_settings(final_performance(both))
    # separate pools per budget were recognised: medium chose its own trial 1 (lr 0.3, 0.90 valid)
    sgd = best[(best["optimizer"] == "sgd")].set_index("budget")
    assert sgd.loc["small", "hparams"] == "lr=0.5" and sgd.loc["small", "n_seeds"] == 2
    assert sgd.loc["medium", "hparams"] == "lr=0.3" and sgd.loc["medium", "mean"] == pytest.approx(0.89)
    one = rank(best[(best["problem"] == "fmnist_2c2d") & (best["budget"] == "oneshot")]).set_index("optimizer")
    # mynew 0.8405 ± 0.0007 vs Adam's one-shot 0.795 ± 0.007: clearly better
    assert one.loc["mynew", "rank"] == 1 and one.loc["adam", "rank"] == 2


def test_export_import_round_trip(tmp_path):
    runs = [simple_run(0.8 + k / 100, optimizer="adam", kind="tuning", budget="small", trial=k, hparams={"lr": 10.0 ** -k},
                       problem="fmnist_2c2d", num_epochs=3) for k in range(3)]
    runs += [simple_run(0.5, metric="loss", optimizer="nag", seed=s, problem="quadratic_deep", hparams={"lr": 0.01, "momentum": 0.99},
                        num_epochs=2) for s in (42, 43)]
    d = tmp_path / "study"
    write_results(d, runs)
    res = analysis.load_study(d)
    assert export_deepobs(res, tmp_path / "tree", indent=4) == 5
    assert (tmp_path / "tree" / "small_budget" / "none" / "fmnist_2c2d" / "AdamOptimizer").is_dir()
    back = read_deepobs(tmp_path / "tree", study="synthetic")
    key = ["optimizer", "kind", "trial", "seed", "hparams", "budget"]
    a = res.long().drop(columns=["run_id", "step"]).sort_values(key + ["split", "metric", "epoch"]).reset_index(drop=True)
    b = back.long().drop(columns=["run_id", "step"]).sort_values(key + ["split", "metric", "epoch"]).reset_index(drop=True)
    for c in key + ["split", "metric", "epoch"]:
        assert list(a[c].astype(str)) == list(b[c].astype(str)), c
    np.testing.assert_allclose(a["value"], b["value"])
