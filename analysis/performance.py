"""Final performance, best settings per budget, and rankings (Crowded Valley's protocol).

Choices (documented with reasons in docs/analysis.md, configurable by argument):

- the metric of a problem is its test accuracy where the problem reports one, else its test loss;
  ``score`` columns are on a "higher is better" scale (accuracy, or −loss);
- a run's final performance is its last evaluation (``rule="last"``, the default, as in the
  published study) or the evaluation with the best validation metric (``rule="best"``);
- diverged runs (status ``diverged``, or a NaN/inf loss) score worst by default
  (``diverged="worst"``: −inf, so they are never chosen and rank last); ``"exclude"`` drops them,
  ``"keep"`` scores them like any run at their chosen evaluation. Failed and still-running runs
  are left out (their curves are not final);
- the best setting of a budget is the tuning trial with the best validation score among the
  budget's trials (ties: the earlier trial, as ``optbench.resolve`` does); its performance is the
  mean over that trial's run and the re-runs of the same setting (other seeds);
- settings are chosen per (problem, optimizer, schedule, batch size, budget);
- ranks: 1 + the number of optimizers *clearly* better, where clearly means the intervals
  mean ± seed std do not overlap, so optimizers that seeds cannot tell apart share a rank.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from analysis.table import DONE, Results

#: a tuning pool: the trials of one optimizer on one problem, schedule and batch size
POOL = ["problem", "optimizer", "schedule", "batch_size"]
#: one best setting per group
GROUP = POOL + ["budget"]
#: rankings compare optimizers within these
RANK_BY = ("problem", "schedule", "batch_size", "budget")
RULES = ("last", "best")
DIVERGED = ("worst", "exclude", "keep")


def _results(data) -> Results:
    return data if isinstance(data, Results) else Results.from_frame(data)


def problem_metrics(data) -> dict[str, str]:
    """The metric each problem declares in optbench's registry (a language model that also records
    next-token accuracy is judged by its loss); for a problem the registry does not know (imported
    or synthetic results): 'accuracy' where it reports one, else 'loss'."""
    from optbench import problems  # the torch-free registry

    res = _results(data)
    out = {}
    for p, has in res.problem_has_accuracy().items():
        spec = problems.PROBLEMS.get(str(p))
        out[p] = spec.metric if spec is not None and (spec.metric == "loss" or has) else ("accuracy" if has else "loss")
    return out


def final_performance(data, rule: str = "last", select_split: str = "valid", diverged: str = "worst",
                      metric: str | Mapping[str, str] | None = None, include_unfinished: bool = False) -> pd.DataFrame:
    """One row per run: record columns, ``hp_*``, ``metric``, ``epoch``/``step`` of the evaluation
    taken, ``valid_value``/``test_value`` (metric units), ``score_valid``/``score_test`` (higher is
    better; −inf for a diverged run under ``diverged="worst"``) and ``diverged``.

    ``data``: a :class:`~analysis.table.Results`, a long table or a wide (curves) table.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}")
    if diverged not in DIVERGED:
        raise ValueError(f"diverged must be one of {DIVERGED}")
    res = _results(data)
    runs = res.runs
    if res.n_runs == 0:
        return pd.DataFrame(columns=list(GROUP) + ["run_id", "metric", "score_valid", "score_test", "test_value"])
    metrics = problem_metrics(res)
    if isinstance(metric, str):
        metrics = {p: metric for p in metrics}
    elif metric:
        metrics.update(metric)
    run_metric = runs["problem"].astype(str).map(metrics).to_numpy()
    is_acc = run_metric == "accuracy"
    sign = np.where(is_acc, 1.0, -1.0)
    ri = res.run_index
    row_acc = is_acc[ri]
    valid = sign[ri] * np.where(row_acc, res.field(f"{select_split}_accuracy"), res.field(f"{select_split}_loss"))
    test = np.where(row_acc, res.field("test_accuracy"), res.field("test_loss"))
    counts, starts = res.counts, res.starts
    has = counts > 0
    idx = np.zeros(res.n_runs, dtype=np.int64)
    if rule == "last":
        idx[has] = (starts + counts - 1)[has]
    else:
        key = np.where(np.isfinite(valid), valid, -np.inf)
        order = np.lexsort((-key, ri))  # by run, best validation first, earliest epoch among ties
        idx[has] = order[starts[has]]
    status = runs["status"].astype(str).to_numpy()
    is_div = (status == "diverged") | res.diverged_runs()

    def take(a: np.ndarray, fill: float | int = np.nan) -> np.ndarray:
        """Per run: ``a`` at the evaluation taken (``fill`` for a run without evaluations)."""
        out = np.full(res.n_runs, fill, dtype=np.int64 if isinstance(fill, int) else float)
        out[has] = a[idx[has]]
        return out

    valid_value = sign * take(valid)
    test_value = take(test)
    score_valid = np.where(np.isfinite(take(valid)), take(valid), -np.inf)
    score_test = np.where(np.isfinite(test_value), sign * test_value, -np.inf)
    if diverged == "worst":
        score_valid = np.where(is_div, -np.inf, score_valid)
        score_test = np.where(is_div, -np.inf, score_test)
        test_value = np.where(is_div, np.nan, test_value)
    out = runs.drop(columns=[c for c in ("file", "host", "attempts", "requeues", "wall_time") if c in runs]).copy()
    out["metric"] = pd.Categorical(run_metric)
    for c in ("epoch", "step"):
        a = np.asarray(res.field(c))
        a = np.where(np.isfinite(a), a, -1).astype(np.int64) if a.dtype.kind == "f" else a.astype(np.int64)
        out[c] = take(a, -1)
    out["valid_value"] = valid_value
    out["test_value"] = test_value
    out["score_valid"] = score_valid
    out["score_test"] = score_test
    out["diverged"] = is_div
    keep = has.copy()
    if not include_unfinished:
        keep &= np.isin(status, DONE)
    if diverged == "exclude":
        keep &= ~is_div
    return out[keep].reset_index(drop=True)


def infer_budgets(perf: pd.DataFrame) -> dict[str, int]:
    """Budget name → number of trials, from the largest trial index tagged with each budget, smallest first."""
    t = perf[perf["kind"] == "tuning"]
    if t.empty:
        return {}
    ends = t.groupby("budget", observed=True)["trial"].max().sort_values(kind="stable")
    return {str(b): int(k) + 1 for b, k in ends.items()}


def budget_order(perf: pd.DataFrame) -> list[str]:
    """"oneshot" first, then the tuned budgets by size."""
    names = list(infer_budgets(perf))
    return (["oneshot"] if (perf["budget"] == "oneshot").any() else []) + names


def best_settings(perf: pd.DataFrame, budgets: Mapping[str, int] | None = None, pools: str = "auto") -> pd.DataFrame:
    """Per (problem, optimizer, schedule, batch_size, budget): the chosen setting and its performance over seeds.

    ``budgets`` maps budget name → number of trials; when not given, inferred per pool from its
    tuning runs' budget tags (``complete`` then compares with the largest such count in the study).
    ``pools``: "nested" (budget b = the first n_b trials of one pool, optbench's plans),
    "separate" (budget b = the trials tagged b, the released DeepOBS tree) or "auto".
    Columns: the group, ``trial`` (−1 for one-shot), ``hparams``, ``metric``, ``n_seeds``,
    ``n_diverged``, ``mean``/``std`` (test metric over seeds, finite ones), ``score``/``score_std``
    (higher is better; −inf when a seed diverged under the "worst" rule), ``run_ids`` and
    ``seed_scores`` (per seed, for bootstraps), ``select_score`` (the validation score the choice was
    made on; for one-shot the mean over seeds), ``budget_trials`` (trials the choice was made
    from; 0 for one-shot), ``complete`` (all n_b trials present), ``n_other_reruns`` (re-runs of the
    budget whose setting differs from the chosen one: left out).
    """
    given = budgets is not None
    sizes = dict(budgets) if given else infer_budgets(perf)
    if perf.empty:
        return pd.DataFrame()
    # plain numpy columns: a pandas filter per pool and budget costs more than the statistics
    kind = perf["kind"].astype(str).to_numpy()
    budget = perf["budget"].astype(str).to_numpy()
    trial = perf["trial"].to_numpy(dtype=np.int64)
    sv = perf["score_valid"].to_numpy(dtype=float)
    st = perf["score_test"].to_numpy(dtype=float)
    tv = perf["test_value"].to_numpy(dtype=float)
    hp = perf["hparams"].astype(str).to_numpy()
    rid = perf["run_id"].astype(str).to_numpy()
    metric = perf["metric"].astype(str).to_numpy()
    out = []
    for key, idx in sorted(perf.groupby(POOL, observed=True, sort=True).indices.items()):
        idx = np.asarray(idx)
        k = kind[idx]
        one = idx[k == "oneshot"]
        if len(one):
            row = _summary(key, "oneshot", one, -1, hp[one[0]], st, tv, rid, metric)
            row["select_score"] = float(sv[one].mean()) if np.all(np.isfinite(sv[one])) else -np.inf
            row["budget_trials"] = 0
            row["complete"] = True
            out.append(row)
        tun = idx[k == "tuning"]
        if not len(tun):
            continue
        first = tun[trial[tun] == 0]
        separate = pools == "separate" or (pools == "auto" and len(set(budget[first])) > 1)
        reruns = idx[k == "rerun"]
        if given:
            pool_sizes = sizes
        else:  # budget sizes from this pool's own tags (studies may differ between problems)
            pool_sizes = {}
            for b, t in zip(budget[tun], trial[tun]):
                pool_sizes[b] = max(pool_sizes.get(b, 0), int(t) + 1)
        prev = 0
        for b, n in sorted(pool_sizes.items(), key=lambda kv: kv[1]):
            if separate:
                cand = tun[budget[tun] == b]
            else:  # budget b: the first n_b trials, reported once some trial beyond the smaller budgets exists
                cand = tun[trial[tun] < n] if (trial[tun] >= prev).any() else tun[:0]
                prev = n
            if not len(cand):
                continue
            best = cand[np.lexsort((trial[cand], -np.where(np.isnan(sv[cand]), -np.inf, sv[cand])))[0]]
            mine = reruns[budget[reruns] == b]
            same = mine[hp[mine] == hp[best]]
            seeds = np.concatenate([[best], same])
            row = _summary(key, b, seeds, int(trial[best]), hp[best], st, tv, rid, metric)
            row["n_other_reruns"] = len(mine) - len(same)
            row["select_score"] = float(sv[best])
            row["budget_trials"] = len(cand)
            row["complete"] = len(cand) >= sizes.get(b, n)
            out.append(row)
    df = pd.DataFrame(out)
    if "n_other_reruns" in df:
        df["n_other_reruns"] = df["n_other_reruns"].fillna(0).astype(int)
    return df


def _summary(key, budget, seeds: np.ndarray, trial: int, hparams: str, st, tv, rid, metric) -> dict:
    s = st[seeds]
    v = tv[seeds]
    finite = np.isfinite(s)
    fv = v[np.isfinite(v)]
    return {**dict(zip(POOL, key)), "budget": budget, "trial": trial, "hparams": str(hparams),
            "metric": str(metric[seeds[0]]), "n_seeds": len(seeds), "n_diverged": int((~finite).sum()),
            "mean": float(np.mean(fv)) if len(fv) else np.nan,
            "std": float(np.std(fv, ddof=1)) if len(fv) > 1 else 0.0,
            "score": float(np.mean(s)) if finite.all() else -np.inf,
            "score_std": float(np.std(s[finite], ddof=1)) if finite.sum() > 1 else 0.0,
            "run_ids": tuple(rid[seeds]), "seed_scores": tuple(float(x) for x in s)}


def rank(best: pd.DataFrame, by: tuple[str, ...] = RANK_BY) -> pd.DataFrame:
    """Rank optimizers within each group by mean score; optimizers the seeds cannot tell apart tie.

    Rank = 1 + number of optimizers *clearly* better: mean_j − std_j > mean_i + std_i
    (seed standard deviations; a diverged setting, score −inf, ranks below every finite one).
    """
    by = [c for c in by if c in best.columns]
    out = []
    for _, g in best.groupby(by, observed=True, sort=True):
        m = g["score"].to_numpy(dtype=float)
        s = np.nan_to_num(g["score_std"].to_numpy(dtype=float))
        with np.errstate(invalid="ignore"):
            lo, hi = m - s, m + s
            ranks = [1 + int(np.sum(lo > hi[i])) for i in range(len(g))]
        gg = g.copy()
        gg["rank"] = ranks
        out.append(gg.sort_values(["rank", "score"], ascending=[True, False], kind="stable"))
    if not out:
        return best.assign(rank=pd.Series(dtype=int))
    df = pd.concat(out, ignore_index=True)
    order = [c for c in ("problem", "schedule", "batch_size", "budget_trials") if c in df] + ["rank"]
    df["_neg"] = -df["score"]
    return df.sort_values(order + ["_neg"], kind="stable").drop(columns="_neg").reset_index(drop=True)


def aggregate_ranks(ranked: pd.DataFrame) -> pd.DataFrame:
    """Mean and median rank per optimizer across every ranked group (problem, schedule, batch size, budget)."""
    if ranked.empty:
        return pd.DataFrame(columns=["optimizer", "mean_rank", "median_rank", "count"])
    return (ranked.groupby("optimizer", observed=True)["rank"].agg(["mean", "median", "count"])
            .sort_values(["mean", "median"], kind="stable").reset_index()
            .rename(columns={"mean": "mean_rank", "median": "median_rank"}))
