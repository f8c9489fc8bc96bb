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
- :func:`gap_trend` / :func:`describe_trend`: per problem and schedule, whether the gap grows,
  shrinks or reverses as B grows (the change of Adam's advantage between the smallest and the
  largest batch size, with a bootstrap interval over the seeds of all four best settings).
- :func:`factor_pairs` / :func:`factor_effects` / :func:`describe_factors`: problems of the study
  that differ in exactly one registry argument (a factor), and how the gap differs between the two
  settings at each common batch size (difference of gaps, bootstrap interval).
- :func:`step_gap` / :func:`predicted_step_ratio` / :func:`describe_step_gap`: the measured relative
  gap in steps to target, S_SGD/S_Adam per batch size, and the one the S(B) fits predict.

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


def _family_pairs(best: pd.DataFrame, adam: Sequence[str], sgd: Sequence[str], budget: str):
    """(problem, schedule, batch_size), Adam's best row, SGD's best row — where both families have one."""
    b = best[best["budget"].astype(str) == budget]
    for key, g in b.groupby(list(BY) + ["batch_size"], observed=True, sort=True):
        a, s = _family_best(g, adam), _family_best(g, sgd)
        if a is not None and s is not None:
            yield key, a, s


def gap_vs_batch_size(best: pd.DataFrame, adam: Sequence[str] = ADAM_FAMILY, sgd: Sequence[str] = SGD_FAMILY,
                      budget: str | None = None, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per (problem, schedule, batch_size): the two families' best settings and ``gap`` = Adam's mean
    test metric − SGD's (metric units; for a loss, negative means Adam is better), ``advantage``
    (the same on the higher-is-better scale), ``lo``/``hi`` (bootstrap interval of the gap over
    seeds; NaN with fewer than two seeds on a side) and ``significant`` (interval excludes 0)."""
    budget = budget or default_budget(best)
    rng = np.random.default_rng(seed)
    rows = []
    for key, a, s in _family_pairs(best, adam, sgd, budget):
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


# ----------------------------------------------------------------------------- trends and factors
def _seed_table(best: pd.DataFrame, adam: Sequence[str], sgd: Sequence[str], budget: str | None) -> pd.DataFrame:
    """Per (problem, schedule, batch_size): the metric and the per-seed test scores (higher is
    better) of each family's best setting — the data :func:`gap_vs_batch_size` resamples."""
    rows = []
    for key, a, s in _family_pairs(best, adam, sgd, budget or default_budget(best)):
        rows.append({**dict(zip(list(BY) + ["batch_size"], key)), "metric": str(a["metric"]),
                     "adam_scores": np.asarray(a["seed_scores"], float), "sgd_scores": np.asarray(s["seed_scores"], float)})
    return pd.DataFrame(rows, columns=list(BY) + ["batch_size", "metric", "adam_scores", "sgd_scores"])


def _usable(sa: np.ndarray, ss: np.ndarray) -> bool:
    """An advantage with a bootstrap interval: at least two seeds on each side, none diverged."""
    return len(sa) > 1 and len(ss) > 1 and bool(np.all(np.isfinite(sa)) and np.all(np.isfinite(ss)))


def _boot_adv(sa: np.ndarray, ss: np.ndarray, n_boot: int, rng) -> np.ndarray:
    """Bootstrap draws of Adam's advantage mean(sa) − mean(ss), each side's seeds resampled independently."""
    return _boot_means(sa, n_boot, rng) - _boot_means(ss, n_boot, rng)


def _interval(draws: np.ndarray, ci: float) -> tuple[float, float]:
    lo, hi = np.percentile(draws, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
    return float(lo), float(hi)


def gap_trend(best: pd.DataFrame, adam: Sequence[str] = ADAM_FAMILY, sgd: Sequence[str] = SGD_FAMILY,
              budget: str | None = None, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per (problem, schedule): does the gap grow, shrink or reverse as the batch size grows?

    Everything is on the higher-is-better scale of ``advantage`` (Adam's mean test score − SGD's;
    for a loss, SGD's loss − Adam's). ``adam_better_at``/``sgd_better_at``: the batch sizes at which
    :func:`gap_vs_batch_size` (same ``n_boot``, ``ci``, ``seed``) finds that family significantly
    better. ``B_small``/``B_large``: the smallest and largest batch size with two or more seeds on
    both sides and no diverged seed; ``adv_small``/``adv_large`` the advantage there; ``change`` =
    adv_large − adv_small with ``change_lo``/``change_hi``, a percentile bootstrap interval that
    resamples the seeds of all four best settings independently. ``verdict``:

    - ``reverses``: Adam significantly better at some B and SGD significantly better at another;
    - otherwise the ``leader`` is the family significantly better at some B (if any), and
      ``grows``/``shrinks`` say that the leader's advantage is significantly larger/smaller at
      ``B_large`` than at ``B_small`` (the change interval excludes 0);
    - ``shifts``: no family is significantly better at any single B, but the change is significant;
    - ``no significant change``; ``not enough data`` (fewer than two usable batch sizes).
    """
    gap = gap_vs_batch_size(best, adam, sgd, budget, n_boot=n_boot, ci=ci, seed=seed)
    tab = _seed_table(best, adam, sgd, budget)
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in tab.groupby(list(BY), observed=True, sort=True):
        g = g.sort_values("batch_size")
        gg = gap[(gap["problem"] == key[0]) & (gap["schedule"] == key[1])] if len(gap) else gap
        sig = gg[gg["significant"].astype(bool)] if len(gg) else gg
        a_at = tuple(int(b) for b in sig.loc[sig["advantage"] > 0, "batch_size"]) if len(sig) else ()
        s_at = tuple(int(b) for b in sig.loc[sig["advantage"] < 0, "batch_size"]) if len(sig) else ()
        leader = None if (a_at and s_at) else ("adam" if a_at else ("sgd" if s_at else None))
        row = {**dict(zip(BY, key)), "metric": g["metric"].iloc[0], "B_small": np.nan, "B_large": np.nan,
               "adv_small": np.nan, "adv_large": np.nan, "change": np.nan, "change_lo": np.nan, "change_hi": np.nan,
               "change_significant": False, "leader": leader, "adam_better_at": a_at, "sgd_better_at": s_at}
        ok = [r for _, r in g.iterrows() if _usable(r["adam_scores"], r["sgd_scores"])]
        if len(ok) >= 2:
            lo_r, hi_r = ok[0], ok[-1]
            d_small = _boot_adv(lo_r["adam_scores"], lo_r["sgd_scores"], n_boot, rng)
            d_large = _boot_adv(hi_r["adam_scores"], hi_r["sgd_scores"], n_boot, rng)
            a_s = float(lo_r["adam_scores"].mean() - lo_r["sgd_scores"].mean())
            a_l = float(hi_r["adam_scores"].mean() - hi_r["sgd_scores"].mean())
            c_lo, c_hi = _interval(d_large - d_small, ci)
            row.update(B_small=float(lo_r["batch_size"]), B_large=float(hi_r["batch_size"]), adv_small=a_s,
                       adv_large=a_l, change=a_l - a_s, change_lo=c_lo, change_hi=c_hi,
                       change_significant=bool(c_lo > 0 or c_hi < 0))
        if a_at and s_at:
            verdict = "reverses"
        elif len(ok) < 2:
            verdict = "not enough data"
        elif not row["change_significant"]:
            verdict = "no significant change"
        elif leader is None:
            verdict = "shifts"
        else:
            o = 1.0 if leader == "adam" else -1.0
            verdict = "grows" if o * row["change"] > 0 else "shrinks"
        row["verdict"] = verdict
        rows.append(row)
    return pd.DataFrame(rows)


def _bs(bs: Iterable) -> str:
    return ", ".join(str(int(b)) for b in bs)


def describe_trend(trend: pd.DataFrame, ci: float = 0.95) -> list[str]:
    """One sentence per (problem, schedule) from :func:`gap_trend`, claiming no more than its intervals."""
    pct = f"{100 * ci:.0f}%"
    lines = []
    for _, r in trend.iterrows():
        head = f"{r['problem']} ({r['schedule']}): "
        m = f"test {r['metric']}"
        a_at, s_at = tuple(r["adam_better_at"]), tuple(r["sgd_better_at"])
        span = (f"between B={r['B_small']:.0f} and B={r['B_large']:.0f}" if np.isfinite(r["B_small"]) else "")
        v = r["verdict"]
        if v == "reverses":
            order = ("SGD wins at the smaller, Adam at the larger batch sizes" if max(s_at) < min(a_at) else
                     "Adam wins at the smaller, SGD at the larger batch sizes" if max(a_at) < min(s_at) else
                     "the sign changes more than once")
            lines.append(head + f"the gap reverses as B grows — Adam significantly better ({m}, {pct} interval) at "
                         f"B={_bs(a_at)}, SGD at B={_bs(s_at)}: {order}.")
        elif v in ("grows", "shrinks"):
            o, name = (1.0, "Adam") if r["leader"] == "adam" else (-1.0, "SGD")
            lo, hi = sorted((o * r["change_lo"], o * r["change_hi"]))
            where = _bs(a_at if o > 0 else s_at)
            lines.append(head + f"the gap {v} with batch size — {name}'s advantage in {m} is {o * r['adv_small']:+.3g} at "
                         f"B={r['B_small']:.0f} and {o * r['adv_large']:+.3g} at B={r['B_large']:.0f}, a change of "
                         f"{o * r['change']:+.3g}, {pct} interval [{lo:+.3g}, {hi:+.3g}] ({name} significantly better "
                         f"at B={where}).")
        elif v == "shifts":
            toward = "Adam" if r["change"] > 0 else "SGD"
            lines.append(head + f"neither family is significantly better at any single B, but "
                         f"{_advantage_name(str(r['metric']))} moves toward {toward} {span}: change {r['change']:+.3g}, {pct} interval "
                         f"[{r['change_lo']:+.3g}, {r['change_hi']:+.3g}].")
        elif v == "no significant change":
            who = (f"Adam is significantly better at B={_bs(a_at)}" if a_at else
                   f"SGD is significantly better at B={_bs(s_at)}" if s_at else "no family is significantly better at any B")
            lines.append(head + f"no significant change of the gap {span} ({who}): {_advantage_name(str(r['metric']))} "
                         f"changes by {r['change']:+.3g}, {pct} interval [{r['change_lo']:+.3g}, {r['change_hi']:+.3g}] "
                         "contains 0, so no trend is claimed.")
        else:
            lines.append(head + "fewer than two batch sizes with two or more seeds per family: no trend is claimed.")
    return lines


def factor_pairs(names: Iterable[str], args: dict | None = None) -> pd.DataFrame:
    """Pairs of problems whose arguments differ in exactly one key (the factor), present in both.

    Arguments come from ``args`` (name → mapping) where given, else from the problem registry
    (``optbench.problems.get(name).args``; torch-free); names found in neither are skipped. The
    ``base`` of a pair is the problem in more pairs (the centre of a one-factor-at-a-time design),
    ties broken by name. Columns: ``factor``, ``base``, ``other``, ``base_value``, ``other_value``.
    """
    cols = ["factor", "base", "other", "base_value", "other_value"]
    found: dict[str, dict] = {}
    for n in sorted({str(x) for x in names}):
        if args is not None and n in args:
            found[n] = dict(args[n])
            continue
        try:
            from optbench import problems as registry

            found[n] = dict(registry.get(n).args)
        except Exception:  # not installed, or not a registered problem: no factor to name
            continue
    missing = object()
    pairs = []
    ks = sorted(found)
    for i, p in enumerate(ks):
        for q in ks[i + 1:]:
            a, b = found[p], found[q]
            diff = [k for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]
            if len(diff) == 1 and diff[0] in a and diff[0] in b:
                pairs.append((diff[0], p, q))
    degree: dict[str, int] = {}
    for _, p, q in pairs:
        degree[p] = degree.get(p, 0) + 1
        degree[q] = degree.get(q, 0) + 1
    rows = []
    for k, p, q in pairs:
        base, other = (p, q) if (-degree[p], p) <= (-degree[q], q) else (q, p)
        rows.append({"factor": k, "base": base, "other": other, "base_value": found[base][k],
                     "other_value": found[other][k]})
    return pd.DataFrame(rows, columns=cols)


def factor_effects(best: pd.DataFrame, adam: Sequence[str] = ADAM_FAMILY, sgd: Sequence[str] = SGD_FAMILY,
                   budget: str | None = None, n_boot: int = 2000, ci: float = 0.95, seed: int = 0,
                   args: dict | None = None) -> pd.DataFrame:
    """Per factor pair (:func:`factor_pairs` of the study's problems), schedule and common batch size:
    ``diff`` = Adam's advantage with the other setting − with the base setting (higher-is-better
    scale: positive means the other setting moves the gap toward Adam), ``lo``/``hi`` a percentile
    bootstrap interval resampling the seeds of all four best settings independently (NaN without
    two finite seeds on every side), ``significant`` when it excludes 0."""
    cols = ["factor", "base", "other", "base_value", "other_value", "schedule", "batch_size", "metric",
            "adv_base", "adv_other", "diff", "lo", "hi", "significant"]
    tab = _seed_table(best, adam, sgd, budget)
    if tab.empty:
        return pd.DataFrame(columns=cols)
    pairs = factor_pairs(tab["problem"].astype(str).unique(), args)
    rng = np.random.default_rng(seed)
    idx = {(str(r["problem"]), str(r["schedule"]), int(r["batch_size"])): r for _, r in tab.iterrows()}
    rows = []
    for _, p in pairs.iterrows():
        common = sorted({k[1:] for k in idx if k[0] == p["base"]} & {k[1:] for k in idx if k[0] == p["other"]})
        for sched, B in common:
            rb, ro = idx[(p["base"], sched, B)], idx[(p["other"], sched, B)]
            if rb["metric"] != ro["metric"]:
                continue
            row = {**p.to_dict(), "schedule": sched, "batch_size": B, "metric": rb["metric"],
                   "adv_base": np.nan, "adv_other": np.nan, "diff": np.nan, "lo": np.nan, "hi": np.nan, "significant": False}
            finite = all(np.all(np.isfinite(r[c])) for r in (rb, ro) for c in ("adam_scores", "sgd_scores"))
            if finite:
                ab = float(rb["adam_scores"].mean() - rb["sgd_scores"].mean())
                ao = float(ro["adam_scores"].mean() - ro["sgd_scores"].mean())
                row.update(adv_base=ab, adv_other=ao, diff=ao - ab)
                if _usable(rb["adam_scores"], rb["sgd_scores"]) and _usable(ro["adam_scores"], ro["sgd_scores"]):
                    d = (_boot_adv(ro["adam_scores"], ro["sgd_scores"], n_boot, rng)
                         - _boot_adv(rb["adam_scores"], rb["sgd_scores"], n_boot, rng))
                    lo, hi = _interval(d, ci)
                    row.update(lo=lo, hi=hi, significant=bool(lo > 0 or hi < 0))
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _advantage_name(metric: str) -> str:
    """How the advantage scale reads for a metric: Adam − SGD for accuracy, SGD − Adam for a loss."""
    return f"Adam's advantage in test {metric} ({'SGD − Adam' if metric == 'loss' else 'Adam − SGD'})"


def describe_factors(effects: pd.DataFrame, ci: float = 0.95) -> list[str]:
    """One sentence per factor pair and schedule from :func:`factor_effects`."""
    pct = f"{100 * ci:.0f}%"
    lines = []
    if effects.empty:
        return lines
    for key, g in effects.groupby(["factor", "base", "other", "schedule"], sort=True):
        fac, base, other, sched = key
        g = g.sort_values("batch_size")
        bv, ov = g["base_value"].iloc[0], g["other_value"].iloc[0]
        head = (f"Factor {fac} ({sched}): with {fac}={ov} ({other}) instead of {fac}={bv} ({base}), "
                f"{_advantage_name(str(g['metric'].iloc[0]))} ")
        f = g[np.isfinite(g["diff"].to_numpy(float))]
        if f.empty:
            lines.append(head + "cannot be compared (a best setting diverged at every common B).")
            continue
        up, down = f[f["diff"] > 0], f[f["diff"] < 0]
        sig_up, sig_down = up[up["significant"]], down[down["significant"]]
        per_b = "; ".join(f"B={int(r['batch_size'])}: {r['diff']:+.3g}"
                          + (f" [{r['lo']:+.3g}, {r['hi']:+.3g}]" if np.isfinite(r["lo"]) else " (no interval)")
                          for _, r in f.iterrows())
        if not np.isfinite(f["lo"].to_numpy(float)).any():
            lines.append(head + f"cannot be tested: one seed on a side at every B (difference, no interval — {per_b}).")
            continue
        if sig_up.empty and sig_down.empty:
            lines.append(head + f"differs significantly at no batch size ({pct} intervals of the difference — {per_b}).")
            continue
        if len(down) == len(f) or len(up) == len(f):
            toward, sig = ("SGD", sig_down) if len(down) == len(f) else ("Adam", sig_up)
            what = f"moves toward {toward} at every B, significantly at B={_bs(sig['batch_size'])}"
        else:
            what = "; ".join(s for s in (
                f"moves significantly toward Adam at B={_bs(sig_up['batch_size'])}" if len(sig_up) else "",
                f"moves significantly toward SGD at B={_bs(sig_down['batch_size'])}" if len(sig_down) else "") if s)
            what += ", with no significant difference elsewhere" if len(sig_up) + len(sig_down) < len(f) else ""
        lines.append(head + f"{what} ({pct} intervals of the difference — {per_b}).")
    return lines


def predicted_step_ratio(E_adam, S_adam, E_sgd, S_sgd, B):
    """The S(B) model's relative gap in steps, S_SGD(B)/S_Adam(B) with S_X(B) = S_X,min + E_X,min/B
    (> 1: Adam needs fewer steps; = 1 at B*). NaN where a predicted S is not positive."""
    B = np.asarray(B, float)
    s_sgd = np.asarray(S_sgd, float) + np.asarray(E_sgd, float) / B
    s_adam = np.asarray(S_adam, float) + np.asarray(E_adam, float) / B
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((s_sgd > 0) & (s_adam > 0), s_sgd / s_adam, np.nan)


def step_gap(points: pd.DataFrame, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per (problem, schedule, batch_size): the measured relative gap in steps to target, ``ratio`` =
    mean S_SGD / mean S_Adam over seeds (as the fits use means), with ``lo``/``hi`` a percentile
    bootstrap interval (each family's seeds resampled independently; NaN with one seed on a side).
    A batch size where some seed never reached the target is left out, as in :func:`fit_scaling`."""
    cols = list(BY) + ["batch_size", "S_adam", "S_sgd", "ratio", "lo", "hi", "n_seeds_adam", "n_seeds_sgd"]
    rng = np.random.default_rng(seed)
    rows = []
    if points.empty:
        return pd.DataFrame(columns=cols)
    for key, g in points.groupby(list(BY) + ["batch_size"], observed=True, sort=True):
        ta = g.loc[g["family"] == "adam", "time"].to_numpy(float)
        ts = g.loc[g["family"] == "sgd", "time"].to_numpy(float)
        if not len(ta) or not len(ts) or not (np.all(np.isfinite(ta)) and np.all(np.isfinite(ts))):
            continue
        lo = hi = np.nan
        if len(ta) > 1 and len(ts) > 1:
            lo, hi = _interval(_boot_means(ts, n_boot, rng) / _boot_means(ta, n_boot, rng), ci)
        rows.append({**dict(zip(list(BY) + ["batch_size"], key)), "S_adam": float(ta.mean()), "S_sgd": float(ts.mean()),
                     "ratio": float(ts.mean() / ta.mean()), "lo": lo, "hi": hi,
                     "n_seeds_adam": len(ta), "n_seeds_sgd": len(ts)})
    return pd.DataFrame(rows, columns=cols)


def describe_step_gap(steps: pd.DataFrame, cross: pd.DataFrame, ci: float = 0.95) -> list[str]:
    """Per (problem, schedule) with a fit: the model's S_SGD/S_Adam at the measured batch sizes and
    at how many of them it lies inside the measured ratio's bootstrap interval."""
    pct = f"{100 * ci:.0f}%"
    lines = []
    for _, c in cross.iterrows():
        m = steps[(steps["problem"] == c["problem"]) & (steps["schedule"] == c["schedule"])].sort_values("batch_size")
        if m.empty or not np.all(np.isfinite([c["E_adam"], c["S_adam"], c["E_sgd"], c["S_sgd"]])):
            continue
        pred = predicted_step_ratio(c["E_adam"], c["S_adam"], c["E_sgd"], c["S_sgd"], m["batch_size"].to_numpy(float))
        has = np.isfinite(m["lo"].to_numpy(float))
        inside = has & (m["lo"].to_numpy(float) <= pred) & (pred <= m["hi"].to_numpy(float))
        pairs = "; ".join(f"B={int(b)}: {p:.3g} vs {r:.3g}" for b, p, r in zip(m["batch_size"], pred, m["ratio"]))
        fit_txt = (f"the model is inside the measured ratio's {pct} interval at {int(inside.sum())} of {int(has.sum())} "
                   "batch sizes with an interval" if has.any() else "no measured intervals (one seed on a side)")
        lines.append(f"{c['problem']} ({c['schedule']}): relative gap in steps to target S_SGD/S_Adam (> 1: Adam needs "
                     f"fewer steps), S(B) model vs measured — {pairs}; {fit_txt}.")
    return lines
