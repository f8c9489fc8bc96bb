"""The Adam–SGD gap across batch sizes and the crossover batch size (spec §3).

- :func:`gap_vs_batch_size`: Δ(B) = metric(best-tuned Adam) − metric(best-tuned SGD) at each batch
  size, with a bootstrap interval over seeds (each side resampled independently).
- :func:`scaling_points`: steps to a target, per seed, of each family's best setting at each B.
- :func:`fit_scaling`: the McCandlish et al. (2018) model S(B) = S_min (1 + N/B), fitted through
  its linear form S·B = E_min + S_min·B (least squares of S·B on B, S the mean over seeds).
- :func:`crossover`: B* = (E_Adam,min − E_SGD,min) / (S_SGD,min − S_Adam,min), where both differences
  are positive (otherwise the two curves S(B) do not cross at a positive B and B* does not exist),
  with a bootstrap interval over seeds and the share of resamples in which it exists.
- :func:`describe`: sentences that state only what these numbers support.

"Adam" and "SGD" are optimizer families (:data:`ADAM_FAMILY`, :data:`SGD_FAMILY`): at each batch
size the member whose best setting has the best validation score represents its family.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

ADAM_FAMILY = ("adam", "choi_adam")
SGD_FAMILY = ("momentum", "choi_momentum", "sgd", "choi_sgd", "nag", "choi_nesterov")
BY = ("problem", "schedule")


def _family_best(g: pd.DataFrame, family: Sequence[str]) -> pd.Series | None:
    m = g[g["optimizer"].astype(str).isin(family)]
    if m.empty:
        return None
    return m.sort_values(["select_score", "score"], ascending=False, kind="stable").iloc[0]


def default_budget(best: pd.DataFrame) -> str:
    """The largest tuned budget present (most trials), else "oneshot"."""
    tuned = best[best["budget"].astype(str) != "oneshot"]
    if tuned.empty or "budget_trials" not in tuned:
        return "oneshot" if tuned.empty else str(tuned["budget"].iloc[-1])
    return str(tuned.groupby("budget", observed=True)["budget_trials"].max().idxmax())


def _boot_means(x: np.ndarray, n_boot: int, rng) -> np.ndarray:
    return x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)


def gap_vs_batch_size(best: pd.DataFrame, adam: Sequence[str] = ADAM_FAMILY, sgd: Sequence[str] = SGD_FAMILY,
                      budget: str | None = None, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per (problem, schedule, batch_size): the two families' best settings and ``gap`` = Adam's mean
    test metric − SGD's (metric units; for a loss, negative means Adam is better), ``advantage``
    (the same on the higher-is-better scale), ``lo``/``hi`` (bootstrap interval of the gap over
    seeds; NaN with fewer than two seeds on a side) and ``significant`` (interval excludes 0)."""
    budget = budget or default_budget(best)
    rng = np.random.default_rng(seed)
    b = best[best["budget"].astype(str) == budget]
    rows = []
    for key, g in b.groupby(list(BY) + ["batch_size"], observed=True, sort=True):
        a, s = _family_best(g, adam), _family_best(g, sgd)
        if a is None or s is None:
            continue
        sign = 1.0 if a["metric"] == "accuracy" else -1.0
        sa, ss = np.asarray(a["seed_scores"], float), np.asarray(s["seed_scores"], float)
        row = {**dict(zip(list(BY) + ["batch_size"], key)), "budget": budget, "metric": a["metric"],
               "adam": a["optimizer"], "sgd": s["optimizer"], "adam_mean": a["mean"], "sgd_mean": s["mean"],
               "n_seeds_adam": len(sa), "n_seeds_sgd": len(ss)}
        if np.all(np.isfinite(sa)) and np.all(np.isfinite(ss)):
            adv = float(sa.mean() - ss.mean())
            if len(sa) > 1 and len(ss) > 1:
                d = _boot_means(sa, n_boot, rng) - _boot_means(ss, n_boot, rng)
                lo, hi = np.percentile(d, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
            else:
                lo = hi = np.nan
            glo, ghi = sorted((sign * lo, sign * hi))
            row.update(gap=sign * adv, advantage=adv, lo=glo, hi=ghi,
                       significant=bool(np.isfinite(lo) and (lo > 0 or hi < 0)))
        else:
            row.update(gap=np.nan, advantage=np.nan, lo=np.nan, hi=np.nan, significant=False)
        rows.append(row)
    return pd.DataFrame(rows)


def scaling_points(best: pd.DataFrame, stt: pd.DataFrame, adam: Sequence[str] = ADAM_FAMILY,
                   sgd: Sequence[str] = SGD_FAMILY, budget: str | None = None) -> pd.DataFrame:
    """Per (problem, schedule, family, batch_size, seed): steps to target (``time``; NaN if not
    reached) of the runs of the family's best setting at that batch size. ``stt``: the output of
    :func:`analysis.choi.steps_to_target`."""
    budget = budget or default_budget(best)
    t = stt.set_index(stt["run_id"].astype(str))
    b = best[best["budget"].astype(str) == budget]
    rows = []
    for key, g in b.groupby(list(BY) + ["batch_size"], observed=True, sort=True):
        for fam, members in (("adam", adam), ("sgd", sgd)):
            r = _family_best(g, members)
            if r is None:
                continue
            for rid in r["run_ids"]:
                if rid in t.index:
                    rows.append({**dict(zip(list(BY) + ["batch_size"], key)), "family": fam,
                                 "optimizer": r["optimizer"], "run_id": rid, "seed": int(t.loc[rid, "seed"]),
                                 "time": float(t.loc[rid, "time"])})
    return pd.DataFrame(rows)


def _fit(B: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of y = S·B on B, vectorised over the leading axis of S: (E_min, S_min)."""
    y = S * B
    xm = B.mean()
    ym = y.mean(axis=-1, keepdims=True)
    slope = ((B - xm) * (y - ym)).sum(axis=-1) / ((B - xm) ** 2).sum()
    return (ym[..., 0] - slope * xm), slope


def fit_scaling(points: pd.DataFrame) -> dict:
    """E_min, S_min and N = E_min/S_min from (batch_size, time) points (time averaged over seeds per B;
    a batch size where some seed never reached the target is left out). Needs two batch sizes."""
    m = points.groupby("batch_size")["time"].agg(lambda v: v.mean() if np.all(np.isfinite(v)) else np.nan)
    m = m[np.isfinite(m)]
    if len(m) < 2:
        return {"E_min": np.nan, "S_min": np.nan, "N": np.nan, "n_batch_sizes": len(m)}
    E, S = _fit(m.index.to_numpy(float), m.to_numpy(float)[None, :])
    return {"E_min": float(E[0]), "S_min": float(S[0]), "N": float(E[0] / S[0]) if S[0] else np.nan,
            "n_batch_sizes": len(m)}


def crossover_batch_size(E_adam, S_adam, E_sgd, S_sgd):
    """B* = (E_Adam − E_SGD)/(S_SGD − S_Adam) where both differences are positive, else NaN (arrays or scalars)."""
    num = np.asarray(E_adam, float) - np.asarray(E_sgd, float)
    den = np.asarray(S_sgd, float) - np.asarray(S_adam, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((num > 0) & (den > 0), num / den, np.nan)


def _boot_fit(pts: pd.DataFrame, n_boot: int, rng) -> tuple[np.ndarray, np.ndarray]:
    Bs = np.sort(pts["batch_size"].unique()).astype(float)
    S = np.empty((n_boot, len(Bs)))
    for j, b in enumerate(Bs):
        x = pts.loc[pts["batch_size"] == b, "time"].to_numpy(float)
        S[:, j] = _boot_means(np.where(np.isfinite(x), x, np.inf), n_boot, rng)
    ok = np.all(np.isfinite(S), axis=1)
    E, Sm = _fit(Bs, np.where(ok[:, None], S, 0.0))
    return np.where(ok, E, np.nan), np.where(ok, Sm, np.nan)


def crossover(points: pd.DataFrame, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per (problem, schedule): the S(B) fit of each family and B*, with bootstrap intervals over seeds.

    Columns: ``E_adam``, ``S_adam``, ``N_adam``, ``E_sgd``, ``S_sgd``, ``N_sgd`` (point fits),
    ``B_star`` (NaN if it does not exist), ``lo``/``hi`` (percentile interval over the resamples in
    which it exists), ``p_exists``, ``B_min``/``B_max`` (the measured range), ``n_seeds`` (fewest per point).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in points.groupby(list(BY), observed=True, sort=True):
        fa, fs = g[g["family"] == "adam"], g[g["family"] == "sgd"]
        if fa["batch_size"].nunique() < 2 or fs["batch_size"].nunique() < 2:
            continue
        a, s = fit_scaling(fa), fit_scaling(fs)
        b_star = float(crossover_batch_size(a["E_min"], a["S_min"], s["E_min"], s["S_min"]))
        Ea, Sa = _boot_fit(fa, n_boot, rng)
        Es, Ss = _boot_fit(fs, n_boot, rng)
        bs = crossover_batch_size(Ea, Sa, Es, Ss)
        f = bs[np.isfinite(bs)]
        lo, hi = (np.percentile(f, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]) if len(f) else (np.nan, np.nan))
        rows.append({**dict(zip(BY, key)), "E_adam": a["E_min"], "S_adam": a["S_min"], "N_adam": a["N"],
                     "E_sgd": s["E_min"], "S_sgd": s["S_min"], "N_sgd": s["N"], "B_star": b_star,
                     "lo": float(lo), "hi": float(hi), "p_exists": len(f) / n_boot,
                     "B_min": float(g["batch_size"].min()), "B_max": float(g["batch_size"].max()),
                     "n_seeds": int(g.groupby(["family", "batch_size"]).size().min())})
    return pd.DataFrame(rows)


def scaling_targets(best: pd.DataFrame, perf: pd.DataFrame, adam: Sequence[str] = ADAM_FAMILY,
                    sgd: Sequence[str] = SGD_FAMILY, budget: str | None = None) -> dict[str, float]:
    """A target per problem that every seed of every family's best setting reaches by its last
    evaluation: the weakest final validation value among those runs."""
    budget = budget or default_budget(best)
    v = perf.set_index(perf["run_id"].astype(str))
    b = best[best["budget"].astype(str) == budget]
    out: dict[str, float] = {}
    for prob, g in b.groupby("problem", observed=True):
        vals, metric = [], None
        for _, gb in g.groupby(["schedule", "batch_size"], observed=True):
            for fam in (adam, sgd):
                r = _family_best(gb, fam)
                if r is not None:
                    metric = r["metric"]
                    vals += [float(v.loc[rid, "valid_value"]) for rid in r["run_ids"] if rid in v.index]
        vals = [x for x in vals if np.isfinite(x)]
        if vals:
            out[str(prob)] = min(vals) if metric == "accuracy" else max(vals)
    return out


def applicable(best: pd.DataFrame, adam: Iterable[str] = ADAM_FAMILY, sgd: Iterable[str] = SGD_FAMILY) -> bool:
    """Several batch sizes on some problem, and both families present."""
    if best.empty:
        return False
    opts = set(best["optimizer"].astype(str))
    multi = best.groupby("problem", observed=True)["batch_size"].nunique().max() > 1
    return bool(multi and opts & set(adam) and opts & set(sgd))


def describe(gap: pd.DataFrame, cross: pd.DataFrame, ci: float = 0.95) -> list[str]:
    """Plain sentences, each backed by the numbers (interval levels as computed)."""
    lines = []
    pct = f"{100 * ci:.0f}%"
    for key, g in gap.groupby(list(BY), observed=True, sort=True):
        prob, sched = key
        parts = []
        for _, r in g.iterrows():
            if not np.isfinite(r["gap"]):
                parts.append(f"B={int(r['batch_size'])}: a best setting diverged, no gap")
                continue
            ci_txt = (f" [{r['lo']:+.4g}, {r['hi']:+.4g}]" if np.isfinite(r["lo"]) else " (one seed: no interval)")
            who = ("Adam better" if r["advantage"] > 0 else "SGD better") if r["significant"] else "not distinguishable from 0"
            parts.append(f"B={int(r['batch_size'])}: {r['gap']:+.4g}{ci_txt}, {who}")
        lines.append(f"{prob} ({sched}): Adam − SGD test {g['metric'].iloc[0]} gap, {pct} interval over seeds — " + "; ".join(parts) + ".")
    for _, r in cross.iterrows():
        head = f"{r['problem']} ({r['schedule']}): "
        fits = (f"S·B fit: Adam E_min={r['E_adam']:.4g}, S_min={r['S_adam']:.4g}; "
                f"SGD E_min={r['E_sgd']:.4g}, S_min={r['S_sgd']:.4g}. ")
        if np.isfinite(r["B_star"]):
            where = ("within" if r["B_min"] <= r["B_star"] <= r["B_max"] else "outside (extrapolated from)")
            ci_txt = (f"{pct} interval [{r['lo']:.4g}, {r['hi']:.4g}]" if np.isfinite(r["lo"]) else "no interval")
            lines.append(head + fits + f"Crossover batch size B* = {r['B_star']:.4g}, {ci_txt}, {where} the measured "
                         f"range {r['B_min']:.0f}–{r['B_max']:.0f}; it exists in {100 * r['p_exists']:.0f}% of resamples.")
        else:
            lines.append(head + fits + "No crossover: B* needs E_Adam,min > E_SGD,min and S_SGD,min > S_Adam,min, "
                         f"which the fit does not give (it exists in {100 * r['p_exists']:.0f}% of resamples).")
    return lines
