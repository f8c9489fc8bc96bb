"""Final performance, best settings per budget, and rankings (Crowded Valley's protocol).

Choices (documented in docs/analysis.md, configurable by argument):
- the metric of a problem is test accuracy where the problem has one, else test loss;
- a run's final performance is its last evaluation (``rule="last"``) or the evaluation with the
  best validation metric (``rule="best"``);
- the best setting of a budget is the tuning trial among its first n trials with the best
  validation score; its performance is the mean over that trial's seed and the re-run seeds;
- diverged runs score worst (−inf on the "higher is better" scale), never silently padded.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

GROUP = ["problem", "optimizer", "schedule", "budget"]


def problem_metrics(curves: pd.DataFrame) -> dict[str, str]:
    """'accuracy' where a problem reports one, else 'loss'."""
    out = {}
    for prob, g in curves.groupby("problem", observed=True):
        out[prob] = "accuracy" if g["test_accuracy"].notna().any() else "loss"
    return out


def final_performance(curves: pd.DataFrame, rule: str = "last", select_split: str = "valid") -> pd.DataFrame:
    """One row per run: record columns, ``metric``, ``score_valid`` and ``score_test`` (higher is better),
    and ``test_value`` in the metric's own units."""
    if rule not in ("last", "best"):
        raise ValueError("rule must be 'last' or 'best'")
    metrics = problem_metrics(curves)
    rows = []
    for rid, g in curves.groupby("run_id", observed=True, sort=False):
        g = g.sort_values("epoch")
        prob = g["problem"].iloc[0]
        m = metrics[prob]
        sign = 1.0 if m == "accuracy" else -1.0
        valid = sign * g[f"{select_split}_{m}"].to_numpy()
        test = g[f"test_{m}"].to_numpy()
        diverged = (g["status"].iloc[0] == "diverged") or not np.all(np.isfinite(g["test_loss"].to_numpy()))
        if rule == "last":
            i = len(g) - 1
        else:
            finite = np.where(np.isfinite(valid), valid, -np.inf)
            i = int(np.argmax(finite))
        score_valid = -np.inf if diverged else float(valid[i])
        score_test = -np.inf if diverged else float(sign * test[i])
        rec = g.iloc[0]
        row = {c: rec[c] for c in ("run_id", "problem", "optimizer", "schedule", "budget", "kind", "trial",
                                   "seed", "status") if c in g}
        row.update(metric=m, score_valid=score_valid, score_test=score_test,
                   test_value=np.nan if diverged else float(test[i]), epoch=int(g["epoch"].iloc[i]))
        rows.append(row)
    return pd.DataFrame(rows)


def best_settings(perf: pd.DataFrame, budgets: dict[str, int] | None = None) -> pd.DataFrame:
    """Per (problem, optimizer, schedule, budget): the chosen trial and its performance over seeds.

    ``budgets`` maps budget name → number of trials (nested prefixes); inferred from the tuning
    runs' budget tags when not given.
    """
    if budgets is None:
        budgets = infer_budgets(perf)
    out = []
    for (prob, opt, sched), g in perf.groupby(["problem", "optimizer", "schedule"], observed=True):
        one = g[g["kind"] == "oneshot"]
        if len(one):
            out.append(_summary(prob, opt, sched, "oneshot", one, trial=-1))
        tuning = g[g["kind"] == "tuning"]
        for budget, n in budgets.items():
            trials = tuning[tuning["trial"] < n]
            if trials.empty:
                continue
            best = trials.sort_values(["score_valid", "trial"], ascending=[False, True]).iloc[0]
            seeds = pd.concat([trials[trials["run_id"] == best["run_id"]],
                               g[(g["kind"] == "rerun") & (g["budget"] == budget)]])
            out.append(_summary(prob, opt, sched, budget, seeds, trial=int(best["trial"])))
    return pd.DataFrame(out)


def _summary(prob, opt, sched, budget, runs: pd.DataFrame, trial: int) -> dict:
    s = runs["score_test"].to_numpy(dtype=float)
    v = runs["test_value"].to_numpy(dtype=float)
    finite = np.isfinite(s)
    return {"problem": prob, "optimizer": opt, "schedule": sched, "budget": budget, "trial": trial,
            "metric": runs["metric"].iloc[0], "n_seeds": len(runs), "n_diverged": int((~finite).sum()),
            "mean": float(np.nanmean(v)) if finite.any() else np.nan,
            "std": float(np.nanstd(v, ddof=1)) if finite.sum() > 1 else 0.0,
            "score": float(np.mean(s)) if finite.all() else -np.inf,
            "score_std": float(np.std(s[finite], ddof=1)) if finite.sum() > 1 else 0.0}


def infer_budgets(perf: pd.DataFrame) -> dict[str, int]:
    """Budget name → trial count, from the largest trial index tagged with each budget."""
    t = perf[perf["kind"] == "tuning"]
    if t.empty:
        return {}
    ends = t.groupby("budget", observed=True)["trial"].max().sort_values()
    return {str(b): int(k) + 1 for b, k in ends.items()}


def rank(best: pd.DataFrame, by: tuple[str, ...] = ("problem", "schedule", "budget")) -> pd.DataFrame:
    """Rank optimizers within each group by mean score; ties when the means lie within each other's
    seed spread (an optimizer is not ranked above one it cannot be told apart from).

    Rank = 1 + number of optimizers that are *clearly* better: mean_j − std_j > mean_i + std_i.
    """
    out = []
    for _, g in best.groupby(list(by), observed=True):
        m = g["score"].to_numpy(dtype=float)
        s = g["score_std"].to_numpy(dtype=float)
        lo, hi = m - s, m + s
        ranks = [1 + int(np.sum(lo > hi[i])) for i in range(len(g))]
        gg = g.copy()
        gg["rank"] = ranks
        out.append(gg.sort_values(["rank", "score"], ascending=[True, False]))
    return pd.concat(out, ignore_index=True) if out else best.assign(rank=[])


def aggregate_ranks(ranked: pd.DataFrame) -> pd.DataFrame:
    """Mean rank per optimizer across problems, schedules and budgets."""
    return (ranked.groupby("optimizer", observed=True)["rank"].agg(["mean", "median", "count"])
            .sort_values("mean").reset_index().rename(columns={"mean": "mean_rank", "median": "median_rank"}))
