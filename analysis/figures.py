"""Figures (matplotlib, Agg backend): each function takes analysis tables and returns a Figure.

- :func:`fig_improvement_matrix` — Crowded Valley Fig. 2: per problem, tuned-over-one-shot
  improvement, optimizers × budgets;
- :func:`fig_relative_improvement` — Fig. 3: median and interquartile range over budgets, one line
  per schedule;
- :func:`fig_final_performance` — Fig. 4: per problem, every optimizer's final performance for each
  budget × schedule, untuned Adam as the reference line;
- :func:`fig_curves`, :func:`fig_tuning_curves`, :func:`fig_performance_profile`, :func:`fig_gap`,
  :func:`fig_scaling`, :func:`fig_gap_model` — learning curves, Choi et al.'s tuning curves,
  performance profiles, and the crossover study's gap, S(B) and predicted-vs-measured step-gap plots.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _colours(ax, n: int) -> None:
    """Distinct colours for up to 20 lines (the default cycle repeats after 10)."""
    if n > 10:
        ax.set_prop_cycle(color=plt().cm.tab20.colors)


def _label(metric: str, normalise: str | None = None) -> str:
    if normalise == "relative":
        return "relative improvement"
    return f"improvement in test {metric}" + (" (loss removed)" if metric == "loss" else "")


def fig_improvement_matrix(imp: pd.DataFrame, schedule: str | None = None, normalise: str = "absolute"):
    """Fig. 2: one panel per problem, rows optimizers, columns tuned budgets, colour = improvement."""
    p = plt()
    if schedule is None:
        scheds = list(imp["schedule"].astype(str).unique())
        schedule = "none" if "none" in scheds else (scheds[0] if scheds else "none")
    d = imp[imp["schedule"].astype(str) == schedule]
    probs = sorted(d["problem"].astype(str).unique())
    n_opt = max(3, d["optimizer"].nunique())
    ncols = max(1, min(4, len(probs)))
    nrows = max(1, -(-len(probs) // ncols))
    fig, axes = p.subplots(nrows, ncols, figsize=(3.6 * ncols + 0.6, (0.26 * n_opt + 1.3) * nrows + 0.5), squeeze=False)
    for ax in axes.flat[len(probs):]:
        ax.axis("off")
    small = n_opt > 6
    for ax, prob in zip(axes.flat, probs):
        g = d[d["problem"].astype(str) == prob]
        m = g.pivot_table(index="optimizer", columns="budget", values="improvement", aggfunc="mean", observed=True)
        cols = [c for c in g.sort_values("budget_trials" if "budget_trials" in g else "budget")["budget"].astype(str).unique()
                if c in m.columns]
        m = m[cols] if cols else m
        v = m.to_numpy(float)
        lim = np.nanmax(np.abs(v)) if np.isfinite(v).any() and np.nanmax(np.abs(v)) > 0 else 1.0
        im = ax.imshow(v, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(m.columns)), [str(c) for c in m.columns], fontsize=7)
        ax.set_yticks(range(len(m.index)), [str(i) for i in m.index], fontsize=7)
        for (i, j), x in np.ndenumerate(v):
            ax.text(j, i, "div." if not np.isfinite(x) else (f"{100 * x:+.0f}%" if normalise == "relative" else f"{x:+.2g}"),
                    ha="center", va="center", fontsize=5 if small else 7)
        ax.set_title(f"{prob} ({g['metric'].iloc[0]})", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle(f"Fig. 2 — tuned vs. own one-shot default ({schedule} schedule): {_label('metric', normalise)}", fontsize=9)
    fig.tight_layout()
    return fig


def fig_relative_improvement(quant: pd.DataFrame, budgets: list[str]):
    """Fig. 3: median (line) and interquartile range (band) of the relative improvement over the
    one-shot constant-schedule default, across optimizers and problems."""
    p = plt()
    fig, ax = p.subplots(figsize=(5.5, 3.6))
    x = {b: i for i, b in enumerate(budgets)}
    for sched, g in quant.groupby("schedule", observed=True, sort=True):
        g = g[g["budget"].astype(str).isin(x)].copy()
        g["x"] = g["budget"].astype(str).map(x)
        g = g.sort_values("x")
        ax.plot(g["x"], 100 * g["median"], marker="o", label=str(sched))
        ax.fill_between(g["x"], 100 * g["q25"], 100 * g["q75"], alpha=0.2)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(budgets)), budgets)
    ax.set_xlabel("tuning budget")
    ax.set_ylabel("relative improvement (%)")
    ax.set_title("Fig. 3 — improvement over one-shot (constant schedule):\nmedian and quartiles over optimizers × problems",
                 fontsize=9)
    ax.legend(fontsize=7, title="schedule", title_fontsize=7)
    fig.tight_layout()
    return fig


def fig_final_performance(best: pd.DataFrame, problem: str):
    """Fig. 4: final test performance per optimizer, one marker per (budget, schedule[, batch size]),
    mean ± seed std, untuned Adam (mean over its one-shot schedules) as the reference line."""
    p = plt()
    g = best[best["problem"].astype(str) == problem]
    opts = sorted(g["optimizer"].astype(str).unique())
    fig, ax = p.subplots(figsize=(max(5, 0.6 * len(opts) + 3.5), 3.8))
    multi_b = g["batch_size"].nunique() > 1 if "batch_size" in g else False
    keys = ["budget", "schedule"] + (["batch_size"] if multi_b else [])
    trials = g.groupby("budget", observed=True)["budget_trials"].max().to_dict() if "budget_trials" in g else {}
    combos = sorted({tuple(t) for t in g[keys].itertuples(index=False)},
                    key=lambda c: (trials.get(c[0], 0), str(c[0]), str(c[1])) + tuple(c[2:]))
    _colours(ax, len(combos))
    for ci, combo in enumerate(combos):
        mask = np.ones(len(g), bool)
        for k, v in zip(keys, combo):
            mask &= g[k].to_numpy() == v
        sub = g[mask].set_index(g[mask]["optimizer"].astype(str))
        present = [o for o in opts if o in sub.index]
        off = (ci - (len(combos) - 1) / 2) * 0.7 / max(1, len(combos))
        xs = [opts.index(o) + off for o in present]
        ys = [sub.loc[o, "mean"] for o in present]
        es = [sub.loc[o, "std"] for o in present]
        label = f"{combo[0]} / {combo[1]}" + (f" / B={combo[2]}" if multi_b else "")
        ax.errorbar(xs, ys, yerr=es, fmt="o", ms=3.5, capsize=2, label=label)
    ref = g[(g["optimizer"].astype(str) == "adam") & (g["budget"].astype(str) == "oneshot")]
    if len(ref) and np.isfinite(ref["mean"]).any():
        ax.axhline(np.nanmean(ref["mean"]), color="k", ls="--", lw=1, label="Adam, one-shot")
    ax.set_xticks(range(len(opts)), opts, rotation=30, ha="right")
    metric = str(g["metric"].iloc[0]) if len(g) else "metric"
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"Fig. 4 — {problem}: final performance (mean ± seed std)", fontsize=9)
    if len(combos) > 6:
        ax.legend(fontsize=6, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def fig_curves(curves_of: dict[str, pd.DataFrame], metric: str, title: str):
    """Test-metric curves, one line per label (``curves_of``: label → frame with epoch and test_<metric>)."""
    p = plt()
    fig, ax = p.subplots(figsize=(7.0 if len(curves_of) > 8 else 5.5, 3.6))
    _colours(ax, len(curves_of))
    for label, c in curves_of.items():
        ax.plot(c["epoch"], c[f"test_{metric}"], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title, fontsize=9)
    if metric == "loss":
        vals = np.concatenate([c[f"test_{metric}"].to_numpy(float) for c in curves_of.values()]) if curves_of else []
        if len(vals) and np.nanmin(vals) > 0:
            ax.set_yscale("log")
    _legend(ax, len(curves_of))
    fig.tight_layout()
    return fig


def preferred_schedule(schedules, reference: str = "none") -> str | None:
    names = sorted({str(x) for x in schedules})
    return reference if reference in names else (names[0] if names else None)


def _legend(ax, n: int) -> None:
    if n > 8:
        ax.legend(fontsize=6, ncol=1 if n <= 16 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)


def fig_tuning_curves(tc: pd.DataFrame, problem: str, schedule: str | None = None):
    """Choi et al.: best-of-k test performance vs. k, one schedule (default: the constant one) —
    bootstrap mean, interval band (when few lines), exact expectation dashed."""
    p = plt()
    g = tc[tc["problem"].astype(str) == problem]
    schedule = schedule or preferred_schedule(g["schedule"])
    g = g[g["schedule"].astype(str) == schedule]
    keys = list(g.groupby(["optimizer", "batch_size"], observed=True, sort=True).groups)
    fig, ax = p.subplots(figsize=(7.0 if len(keys) > 8 else 5.5, 3.6))
    _colours(ax, len(keys))
    for key, h in g.groupby(["optimizer", "batch_size"], observed=True, sort=True):
        label = str(key[0]) + (f" B={key[1]}" if g["batch_size"].nunique() > 1 else "")
        line, = ax.plot(h["k"], h["mean"], marker=".", label=label)
        if len(keys) <= 6:
            ax.fill_between(h["k"], h["lo"], h["hi"], color=line.get_color(), alpha=0.15)
        if h["expected"].notna().any():
            ax.plot(h["k"], h["expected"], ls="--", lw=0.8, color=line.get_color())
    ax.set_xlabel("tuning trials k")
    ax.set_ylabel(f"test {g['metric'].iloc[0] if len(g) else ''} of best of k")
    ax.set_title(f"{problem} ({schedule}): tuning curves (bootstrap over trials)", fontsize=9)
    _legend(ax, len(keys))
    fig.tight_layout()
    return fig


def fig_performance_profile(prof: pd.DataFrame, scores: pd.Series | None = None):
    """ρ_o(τ) for every optimizer (step function)."""
    p = plt()
    fig, ax = p.subplots(figsize=(7.0 if len(prof) > 8 else 5.5, 3.6))
    _colours(ax, len(prof))
    taus = np.asarray(prof.columns, float)
    for opt, row in prof.iterrows():
        lab = f"{opt}" + (f" ({scores[opt]:.2f})" if scores is not None and opt in scores else "")
        ax.step(taus, row.to_numpy(float), where="post", label=lab)
    ax.set_xlabel("τ (ratio to the fastest optimizer's steps to target)")
    ax.set_ylabel("fraction of problems")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Performance profiles (AlgoPerf-style score in brackets)", fontsize=9)
    _legend(ax, len(prof))
    fig.tight_layout()
    return fig


def fig_gap(gap: pd.DataFrame):
    """Adam − SGD gap vs. batch size with bootstrap intervals, one line per problem/schedule and one
    panel per metric (a loss gap and an accuracy gap have different units and opposite signs)."""
    p = plt()
    metrics = list(dict.fromkeys(gap["metric"].astype(str))) if len(gap) else ["metric"]
    fig, axes = p.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = gap[gap["metric"].astype(str) == metric] if len(gap) else gap
        for key, g in sub.groupby(["problem", "schedule"], observed=True, sort=True):
            g = g.sort_values("batch_size")
            lo = (g["gap"] - g["lo"]).clip(lower=0).fillna(0)
            hi = (g["hi"] - g["gap"]).clip(lower=0).fillna(0)
            ax.errorbar(g["batch_size"], g["gap"], yerr=[lo, hi], marker="o", capsize=3, label=f"{key[0]} / {key[1]}")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B")
        better = "lower" if metric == "loss" else "higher"
        ax.set_ylabel(f"test {metric}: Adam − SGD ({better} = Adam better)")
        ax.set_title(f"Gap vs. batch size, test {metric} (bootstrap interval over seeds)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig_scaling(points: pd.DataFrame, cross: pd.DataFrame, problem: str, schedule: str):
    """Steps to target vs. batch size per family (mean over seeds, seeds as dots) with the fitted
    S(B) = S_min + E_min/B and B* if it exists."""
    p = plt()
    fig, ax = p.subplots(figsize=(5.5, 3.6))
    pts = points[(points["problem"].astype(str) == problem) & (points["schedule"].astype(str) == schedule)]
    c = cross[(cross["problem"].astype(str) == problem) & (cross["schedule"].astype(str) == schedule)]
    Bs = np.geomspace(max(1.0, pts["batch_size"].min() / 2), pts["batch_size"].max() * 2, 100) if len(pts) else []
    for fam, g in pts.groupby("family", sort=True):
        m = g.groupby("batch_size")["time"].mean()
        line, = ax.plot(m.index, m.to_numpy(), "o", label=f"{fam} (mean over seeds)")
        ax.plot(g["batch_size"], g["time"], ".", color=line.get_color(), alpha=0.4)
        if len(c) and np.isfinite(c[f"S_{fam}"].iloc[0]):
            E, S = c[f"E_{fam}"].iloc[0], c[f"S_{fam}"].iloc[0]
            ax.plot(Bs, S + E / Bs, "-", color=line.get_color(), lw=1, label=f"{fam} fit S_min(1+N/B)")
    if len(c) and np.isfinite(c["B_star"].iloc[0]):
        ax.axvline(c["B_star"].iloc[0], color="k", ls="--", lw=1, label=f"B* = {c['B_star'].iloc[0]:.3g}")
        if np.isfinite(c["lo"].iloc[0]):
            ax.axvspan(c["lo"].iloc[0], c["hi"].iloc[0], color="k", alpha=0.08)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("steps to target S")
    ax.set_title(f"{problem} / {schedule}: steps to target and crossover", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def fig_gap_model(steps: pd.DataFrame, cross: pd.DataFrame, problem: str, schedule: str):
    """The relative gap in steps to target, S_SGD/S_Adam vs. batch size: measured (mean over seeds
    per B, bootstrap interval; ``steps`` from :func:`analysis.crossover.step_gap`) and the line the
    S(B) fits predict, (S_SGD,min + E_SGD,min/B)/(S_Adam,min + E_Adam,min/B), with B* (where the
    line crosses 1) and its interval where it exists."""
    from analysis.crossover import predicted_step_ratio

    p = plt()
    fig, ax = p.subplots(figsize=(5.5, 3.6))
    m = steps[(steps["problem"].astype(str) == problem) & (steps["schedule"].astype(str) == schedule)]
    m = m.sort_values("batch_size")
    c = cross[(cross["problem"].astype(str) == problem) & (cross["schedule"].astype(str) == schedule)] if len(cross) else cross
    if len(m):
        lo = (m["ratio"] - m["lo"]).clip(lower=0).fillna(0)
        hi = (m["hi"] - m["ratio"]).clip(lower=0).fillna(0)
        ax.errorbar(m["batch_size"], m["ratio"], yerr=[lo, hi], fmt="o", capsize=3, color="C0",
                    label="measured: mean S_SGD / mean S_Adam")
    b_star = float(c["B_star"].iloc[0]) if len(c) else np.nan
    fit = [float(c[k].iloc[0]) for k in ("E_adam", "S_adam", "E_sgd", "S_sgd")] if len(c) else []
    if fit and np.all(np.isfinite(fit)):
        ends = list(m["batch_size"].astype(float)) or [float(c["B_min"].iloc[0]), float(c["B_max"].iloc[0])]
        if np.isfinite(b_star):
            ends.append(b_star)
        Bs = np.geomspace(max(1.0, min(ends) / 2), max(ends) * 2, 200)
        ax.plot(Bs, predicted_step_ratio(*fit, Bs), "-", color="C1", lw=1.2,
                label="model: (S_SGD,min + E_SGD,min/B) / (S_Adam,min + E_Adam,min/B)")
    if np.isfinite(b_star):
        ax.axvline(b_star, color="k", ls="--", lw=1, label=f"B* = {b_star:.3g}")
        if np.isfinite(c["lo"].iloc[0]):
            ax.axvspan(c["lo"].iloc[0], c["hi"].iloc[0], color="k", alpha=0.08)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel("S_SGD / S_Adam  (> 1: Adam faster)")
    ax.set_title(f"{problem} / {schedule}:\nrelative gap in steps to target, S(B) model vs. measured", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
