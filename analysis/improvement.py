"""What tuning buys: the statistics behind Crowded Valley's Fig. 2 and Fig. 3.

- :func:`improvement` (Fig. 2): per problem, optimizer, schedule and tuned budget, the improvement
  of the best tuned setting over the same optimizer's one-shot default (same schedule).
- :func:`relative_improvement` (Fig. 3): per problem, optimizer, schedule and budget (one-shot
  included), the improvement over one reference — the optimizer's one-shot default with the
  constant schedule — and :func:`improvement_quantiles`: its median and quartiles across
  optimizers and problems.

Improvements are on the "higher is better" scale (accuracy gained, or loss removed).
``normalise="absolute"`` gives them in the metric's units; ``"relative"`` divides by the
reference's magnitude, |reference value|, so that problems with different metrics and scales can
share one axis (docs/analysis.md). A setting that diverged (score −inf) on either side gives NaN,
counted in ``n_diverged`` of the summaries, never a number.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.performance import POOL

NORMALISE = ("absolute", "relative")


def _delta(score: np.ndarray, ref_score: np.ndarray, ref_value: np.ndarray, normalise: str) -> np.ndarray:
    if normalise not in NORMALISE:
        raise ValueError(f"normalise must be one of {NORMALISE}")
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(np.isfinite(score) & np.isfinite(ref_score), score - ref_score, np.nan)
        if normalise == "relative":
            d = d / np.abs(ref_value)
    return d


def improvement(best: pd.DataFrame, normalise: str = "absolute") -> pd.DataFrame:
    """Tuned (each budget) minus the same optimizer's one-shot default, per (problem, optimizer,
    schedule, batch_size, budget). Columns: the group, ``metric``, ``oneshot`` and ``tuned`` (mean
    test metric), ``improvement``."""
    one = best[best["budget"] == "oneshot"][POOL + ["score", "mean"]].rename(
        columns={"score": "ref_score", "mean": "oneshot"})
    tuned = best[best["budget"] != "oneshot"]
    m = tuned.merge(one, on=POOL, how="inner")
    m["improvement"] = _delta(m["score"].to_numpy(float), m["ref_score"].to_numpy(float),
                              m["oneshot"].to_numpy(float), normalise)
    m = m.rename(columns={"mean": "tuned"})
    extra = ["budget_trials"] if "budget_trials" in m else []
    return m[POOL + ["budget"] + extra + ["metric", "oneshot", "tuned", "improvement"]].reset_index(drop=True)


def relative_improvement(best: pd.DataFrame, reference_schedule: str = "none", normalise: str = "relative") -> pd.DataFrame:
    """Every (schedule, budget) of every optimizer against its one-shot default with
    ``reference_schedule`` (if a pool lacks it, the pool's own schedule's one-shot)."""
    one = best[best["budget"] == "oneshot"]
    key = [c for c in POOL if c != "schedule"]
    ref = one[one["schedule"] == reference_schedule][key + ["score", "mean"]].rename(
        columns={"score": "ref_score", "mean": "ref_value"})
    m = best.merge(ref, on=key, how="left")
    own = one[POOL + ["score", "mean"]].rename(columns={"score": "own_score", "mean": "own_value"})
    m = m.merge(own, on=POOL, how="left")
    missing = m["ref_score"].isna() & m["ref_value"].isna()
    m.loc[missing, "ref_score"] = m.loc[missing, "own_score"]
    m.loc[missing, "ref_value"] = m.loc[missing, "own_value"]
    m["improvement"] = _delta(m["score"].to_numpy(float), m["ref_score"].to_numpy(float),
                              m["ref_value"].to_numpy(float), normalise)
    extra = ["budget_trials"] if "budget_trials" in m else []
    return m[POOL + ["budget"] + extra + ["metric", "mean", "ref_value", "improvement"]].reset_index(drop=True)


def improvement_quantiles(rel: pd.DataFrame, by: tuple[str, ...] = ("schedule", "budget")) -> pd.DataFrame:
    """Median and quartiles of ``improvement`` across optimizers and problems, per ``by``."""
    rows = []
    for key, g in rel.groupby(list(by), observed=True, sort=False):
        v = g["improvement"].to_numpy(float)
        f = v[np.isfinite(v)]
        q = np.percentile(f, [25, 50, 75]) if len(f) else [np.nan] * 3
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     "q25": q[0], "median": q[1], "q75": q[2], "n": len(f), "n_diverged": int(len(v) - len(f))})
    return pd.DataFrame(rows)
