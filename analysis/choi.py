"""Choi et al. (2019) statistics: tuning-budget curves, steps to a target, the inclusion check, and
performance profiles across problems (as AlgoPerf scores submissions).

- :func:`tuning_curve`: the best-of-k trials performance for k = 1…K, by bootstrap resampling of
  a pool's trials (Choi et al., App. C: "simulating smaller budgets"), with a percentile confidence
  interval, next to its exact expectation (:func:`expected_best_of_k`, resampling with replacement).
  The best of a sample is the trial with the best *validation* score (ties: the earlier trial); the
  curve reports that trial's *test* metric. Infeasible (diverged) trials are never chosen while a
  feasible one is in the sample; an all-infeasible sample counts in ``p_infeasible``.
- :func:`steps_to_target`: per run, the first evaluation at which the metric reaches the target
  (no interpolation); diverged runs are infeasible (never reach it), as in Choi et al.
- :func:`inclusion_check`: for each inclusion M ⊆ N (N can reproduce M), flags groups where N's
  best setting ends below M's beyond seed noise (bootstrap over seeds).
- :func:`performance_profile` / :func:`profile_scores`: ρ_o(τ), the fraction of problems on which
  optimizer o's cost (e.g. steps to target) is within a factor τ of the best optimizer's; the score
  is the area under ρ on [1, τ_max] divided by τ_max − 1 (AlgoPerf: τ_max = 4).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from analysis.performance import POOL, RANK_BY, _results, problem_metrics
from analysis.table import DONE

#: inclusions M ⊆ N of Choi et al.: N reproduces M by fixing hyperparameters (exactly or in a limit)
CHOI_INCLUSIONS = (("choi_sgd", "choi_momentum"), ("choi_momentum", "choi_rmsprop"), ("choi_momentum", "choi_adam"),
                   ("choi_sgd", "choi_nesterov"), ("choi_nesterov", "choi_nadam"))
#: the same relations between the plain optimizers; they hold only when every hyperparameter that
#: makes N reduce to M is tuned (not so in Crowded Valley's search spaces, where ε stays fixed)
PLAIN_INCLUSIONS = (("sgd", "momentum"), ("momentum", "rmsprop"), ("momentum", "adam"), ("sgd", "nag"), ("nag", "nadam"))


# ----------------------------------------------------------------------------- tuning curves
def _order_positions(valid: np.ndarray, trial: np.ndarray) -> np.ndarray:
    """Trials sorted from worst to best validation score; among equal scores the earlier trial ranks higher."""
    key = np.where(np.isfinite(valid), valid, -np.inf)
    return np.lexsort((-trial, key))


def expected_best_of_k(valid: np.ndarray, test: np.ndarray, k: int, trial: np.ndarray | None = None) -> tuple[float, float]:
    """Exact expectation, over k trials drawn with replacement, of the test score of the sample's
    best-validated trial, conditional on at least one feasible trial; and P(all k infeasible).

    With trials sorted by validation score, the best of the sample is the j-th of K with
    probability (j/K)^k − ((j−1)/K)^k.
    """
    valid, test = np.asarray(valid, float), np.asarray(test, float)
    K = len(valid)
    trial = np.arange(K) if trial is None else np.asarray(trial)
    order = _order_positions(valid, trial)
    t = test[order]
    feasible = np.isfinite(valid[order]) & np.isfinite(t)
    j = np.arange(1, K + 1)
    p = (j / K) ** k - ((j - 1) / K) ** k
    p_inf = float(p[~feasible].sum())
    if p_inf >= 1.0:
        return np.nan, 1.0
    return float(np.sum(p[feasible] * t[feasible]) / (1.0 - p_inf)), p_inf


def _best_of_samples(valid, test, trial, k, n_boot, rng, replace) -> np.ndarray:
    K = len(valid)
    order = _order_positions(valid, trial)
    t = test[order]
    ok = np.isfinite(valid[order]) & np.isfinite(t)
    if replace:
        pos = rng.integers(0, K, size=(n_boot, k))
    else:
        pos = np.argsort(rng.random((n_boot, K)), axis=1)[:, :k]
    best = pos.max(axis=1)  # positions are ranks: the highest drawn is the best validated
    return np.where(ok[best], t[best], np.nan)


def tuning_pools(perf: pd.DataFrame, pools: str = "auto") -> Iterable[tuple[tuple, pd.DataFrame]]:
    """(pool key, tuning trials) per (problem, optimizer, schedule, batch_size); where each budget
    has its own pool (imported results) the largest budget's pool."""
    tuning = perf[perf["kind"] == "tuning"].reset_index(drop=True)
    budget = tuning["budget"].astype(str).to_numpy()
    trial = tuning["trial"].to_numpy()
    for key, idx in sorted(tuning.groupby(POOL, observed=True, sort=True).indices.items()):
        idx = np.asarray(idx)
        if pools == "separate" or (pools == "auto" and len(set(budget[idx[trial[idx] == 0]])) > 1):
            names, counts = np.unique(budget[idx], return_counts=True)
            idx = idx[budget[idx] == names[np.argmax(counts)]]
        yield key, tuning.iloc[idx[np.argsort(trial[idx], kind="stable")]]


def tuning_curve(perf: pd.DataFrame, k_values: Iterable[int] | None = None, n_boot: int = 1000, ci: float = 0.95,
                 seed: int = 0, replace: bool = True, pools: str = "auto") -> pd.DataFrame:
    """Best-of-k test performance per pool and k, in the metric's units.

    Columns: pool keys, ``k``, ``K`` (trials in the pool), ``mean``, ``median``, ``lo``, ``hi``
    (bootstrap percentile interval of level ``ci``), ``expected`` (exact, with replacement),
    ``p_infeasible`` (share of bootstrap samples without a feasible trial).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in tuning_pools(perf, pools):
        valid = g["score_valid"].to_numpy(float)
        test = g["score_test"].to_numpy(float)
        trial = g["trial"].to_numpy()
        K = len(g)
        sign = 1.0 if str(g["metric"].iloc[0]) == "accuracy" else -1.0
        ks = range(1, K + 1) if k_values is None else [k for k in k_values if 1 <= k <= K]
        for k in ks:
            s = _best_of_samples(valid, test, trial, k, n_boot, rng, replace)
            f = s[np.isfinite(s)]
            exp, p_inf = expected_best_of_k(valid, test, k, trial) if replace else (np.nan, np.nan)
            if len(f):
                lo, med, hi = np.percentile(f, [100 * (1 - ci) / 2, 50, 100 * (1 + ci) / 2])
                mean = f.mean()
            else:
                lo = med = hi = mean = np.nan
            lo_v, hi_v = sorted((sign * lo, sign * hi))
            rows.append({**dict(zip(POOL, key)), "metric": str(g["metric"].iloc[0]), "k": k, "K": K,
                         "mean": sign * mean, "median": sign * med, "lo": lo_v, "hi": hi_v,
                         "expected": sign * exp, "p_infeasible": 1.0 - len(f) / len(s)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- steps to target
def steps_to_target(data, target: float | Mapping[str, float], split: str = "valid", metric: str | None = None,
                    time: str = "step", diverged_feasible: bool = False) -> pd.DataFrame:
    """Per run: ``reached`` and ``time`` (the ``step`` or ``epoch`` of the first evaluation whose
    metric reaches ``target``: ≥ for accuracy, ≤ for loss; NaN if never). ``target``: one value or
    one per problem. Diverged runs never reach it unless ``diverged_feasible``."""
    res = _results(data)
    runs = res.runs
    metrics = problem_metrics(res)
    if metric:
        metrics = {p: metric for p in metrics}
    probs = runs["problem"].astype(str)
    run_metric = probs.map(metrics).to_numpy()
    tgt = probs.map(target).to_numpy(float) if isinstance(target, Mapping) else np.full(res.n_runs, float(target))
    is_acc = run_metric == "accuracy"
    sign = np.where(is_acc, 1.0, -1.0)
    ri = res.run_index
    vals = np.where(is_acc[ri], res.field(f"{split}_accuracy"), res.field(f"{split}_loss"))
    with np.errstate(invalid="ignore"):
        crossed = sign[ri] * vals >= sign[ri] * tgt[ri]
    rows = np.flatnonzero(crossed)
    first_run, first_at = np.unique(ri[rows], return_index=True)
    t = np.full(res.n_runs, np.nan)
    t[first_run] = res.field(time)[rows[first_at]]
    div = (runs["status"].astype(str).to_numpy() == "diverged") | res.diverged_runs()
    if not diverged_feasible:
        t[div] = np.nan
    out = runs[[c for c in runs.columns if c not in ("file", "host", "attempts", "requeues", "wall_time")]].copy()
    out["metric"] = run_metric
    out["target"] = tgt
    out["reached"] = np.isfinite(t)
    out["time"] = t
    out["diverged"] = div
    return out[np.isin(runs["status"].astype(str), DONE)].reset_index(drop=True)


def best_time_to_target(stt: pd.DataFrame, by: list[str] = POOL, kinds: tuple[str, ...] = ("tuning",)) -> pd.DataFrame:
    """Per group: the fewest steps (or epochs) to the target over its trials, the trial that got there,
    and how many trials were run / reached it (infeasible trials simply never do). ``kinds``: the run
    kinds counted (empty: all)."""
    rows = []
    sel = stt[stt["kind"].isin(kinds)] if kinds else stt
    for key, g in sel.groupby(by, observed=True, sort=True):
        r = g[g["reached"]]
        best = r.sort_values(["time", "trial"], kind="stable").iloc[0] if len(r) else None
        rows.append({**dict(zip(by, key)), "time": float(best["time"]) if best is not None else np.inf,
                     "trial": int(best["trial"]) if best is not None else -1,
                     "n_trials": len(g), "n_reached": len(r), "n_diverged": int(g["diverged"].sum())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- inclusion check
def _boot_diff(a: np.ndarray, b: np.ndarray, n_boot: int, rng) -> np.ndarray:
    ia = rng.integers(0, len(a), size=(n_boot, len(a)))
    ib = rng.integers(0, len(b), size=(n_boot, len(b)))
    return a[ia].mean(axis=1) - b[ib].mean(axis=1)


def inclusion_check(best: pd.DataFrame, pairs: Iterable[tuple[str, str]] | None = None, n_boot: int = 2000,
                    ci: float = 0.95, seed: int = 0, by: tuple[str, ...] = RANK_BY) -> pd.DataFrame:
    """For each M ⊆ N and group (problem, schedule, batch size, budget) holding both: ``diff`` =
    mean score of N − of M (higher is better, seeds of each best setting), its bootstrap interval
    over seeds, and ``flag``: N ends below M beyond noise (the whole interval below 0, or N's best
    setting diverged where M's did not). ``verdict`` says which case holds; fewer than two seeds on
    a side leave the noise unknown and nothing is flagged on a difference alone."""
    pairs = list(CHOI_INCLUSIONS + PLAIN_INCLUSIONS if pairs is None else pairs)
    rng = np.random.default_rng(seed)
    by = [c for c in by if c in best.columns]
    rows = []
    for key, g in best.groupby(by, observed=True, sort=True):
        per_opt = {str(o): r for o, r in zip(g["optimizer"], g.itertuples(index=False))}
        for m, n in pairs:
            if m not in per_opt or n not in per_opt:
                continue
            a = np.asarray(per_opt[n].seed_scores, float)
            b = np.asarray(per_opt[m].seed_scores, float)
            row = {**dict(zip(by, key)), "included": m, "general": n, "mean_included": per_opt[m].mean,
                   "mean_general": per_opt[n].mean, "n_seeds_included": len(b), "n_seeds_general": len(a)}
            if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
                a_ok, b_ok = np.all(np.isfinite(a)), np.all(np.isfinite(b))
                row.update(diff=np.nan, lo=np.nan, hi=np.nan, flag=bool(b_ok and not a_ok),
                           verdict="general diverged, included did not" if (b_ok and not a_ok)
                           else "included diverged" if a_ok else "both diverged")
            else:
                diff = float(a.mean() - b.mean())
                if len(a) > 1 and len(b) > 1:
                    d = _boot_diff(a, b, n_boot, rng)
                    lo, hi = np.percentile(d, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
                    flag = bool(hi < 0)
                    verdict = ("general below included beyond noise" if flag else
                               "general below included within noise" if diff < 0 else "consistent")
                else:
                    lo = hi = np.nan
                    flag = False
                    verdict = "consistent" if diff >= 0 else "general below included; noise unknown (one seed)"
                row.update(diff=diff, lo=float(lo), hi=float(hi), flag=flag, verdict=verdict)
            rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- performance profiles
def _ratios(costs: pd.DataFrame, value: str) -> pd.DataFrame:
    wide = costs.pivot_table(index="optimizer", columns="problem", values=value, aggfunc="min", observed=True)
    wide = wide.astype(float).where(wide > 0)  # NaN / inf / ≤0: never reached
    wide = wide.fillna(np.inf)
    best = wide.min(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = wide / best
    return r.where(np.isfinite(r), np.inf)


def performance_profile(costs: pd.DataFrame, taus: Iterable[float] | None = None, tau_max: float = 4.0,
                        value: str = "time") -> pd.DataFrame:
    """ρ_o(τ): rows optimizers, columns τ. ``costs``: columns problem, optimizer and ``value`` (lower is
    better; NaN/inf = the target was never reached). Problems where no optimizer reached the target
    count against everyone."""
    r = _ratios(costs, value)
    taus = np.linspace(1.0, tau_max, 61) if taus is None else np.asarray(list(taus), float)
    frac = (r.to_numpy()[:, :, None] <= taus[None, None, :]).mean(axis=1)
    prof = pd.DataFrame(frac, index=r.index, columns=pd.Index(taus))
    prof.columns.name = "tau"
    return prof


def profile_scores(costs: pd.DataFrame, tau_max: float = 4.0, value: str = "time") -> pd.Series:
    """Area under ρ_o on [1, τ_max] / (τ_max − 1), exactly: the mean over problems of
    clip((τ_max − r)/(τ_max − 1), 0, 1), r being the optimizer's ratio to the best."""
    r = _ratios(costs, value)
    with np.errstate(invalid="ignore"):
        per = np.clip((tau_max - r.to_numpy()) / (tau_max - 1.0), 0.0, 1.0)
    per = np.where(np.isfinite(r.to_numpy()), per, 0.0)
    return pd.Series(per.mean(axis=1), index=r.index, name="score").sort_values(ascending=False, kind="stable")
