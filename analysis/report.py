"""The study report: one self-contained HTML page, PNG figures, CSV tables and a text summary.

``write_report(study_dir)`` writes ``<study>/report/report.html`` (figures embedded as data URIs,
so the page can be copied anywhere), ``report/figures/*.png``, ``report/tables/*.csv`` and
``report/summary.txt`` (the rankings in a few lines; ``optbench report`` prints it).

Sections: summary and mean ranks; what tuning buys (Crowded Valley Fig. 2 and Fig. 3); per problem
the final performance of every optimizer (Fig. 4), learning curves, tuning curves and the ranking;
Choi et al.'s statistics (performance profiles on steps to a target, the inclusion check); and,
when the study has several batch sizes and both Adam- and SGD-like optimizers, the crossover
analysis (gap vs. batch size and its trend, factor comparisons, S(B) fits, B*, the model's step gap
vs. the measured one). A section without the data it needs is left out.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis import choi, crossover, figures
from analysis.improvement import improvement, improvement_quantiles, relative_improvement
from analysis.load import LONG_FIELDS, load_study
from analysis.performance import (POOL, aggregate_ranks, best_settings, budget_order, final_performance,
                                  infer_budgets, rank)
from analysis.table import Results


@dataclasses.dataclass
class Options:
    """The report's configurable choices (docs/analysis.md explains each default)."""
    rule: str = "last"  # final performance: "last" evaluation or "best" validation evaluation
    diverged: str = "worst"  # diverged runs: "worst" (−inf), "exclude", "keep"
    fig2_normalise: str = "absolute"  # Fig. 2 improvement in metric units, or "relative"
    fig3_normalise: str = "relative"  # Fig. 3: relative to |reference|, or "absolute"
    reference_schedule: str = "none"  # Fig. 3 reference: one-shot default with this schedule
    n_boot: int = 500  # bootstrap resamples (tuning curves, inclusion check, crossover)
    ci: float = 0.95  # interval level
    seed: int = 0  # bootstrap random seed (reports are reproducible)
    target_quantile: float = 0.5  # steps-to-target target: this quantile of the optimizers' best final validation
    tau_max: float = 4.0  # performance profile range (AlgoPerf)


def analyse(res: Results, opts: Options | None = None) -> dict[str, pd.DataFrame]:
    """Every table of the report, computed from loaded results."""
    o = opts or Options()
    t: dict[str, pd.DataFrame] = {}
    perf = final_performance(res, rule=o.rule, diverged=o.diverged)
    t["final_performance"] = perf
    best = best_settings(perf)
    t["best_settings"] = best
    ranked = rank(best)
    t["rankings"] = ranked
    t["aggregate_ranks"] = aggregate_ranks(ranked)
    if best.empty:
        return t
    has_one = (best["budget"] == "oneshot").any()
    if has_one and (best["budget"] != "oneshot").any():
        t["improvement"] = improvement(best, normalise=o.fig2_normalise)
    if has_one:
        rel = relative_improvement(best, reference_schedule=o.reference_schedule, normalise=o.fig3_normalise)
        t["relative_improvement"] = rel
        t["improvement_quantiles"] = improvement_quantiles(rel)
    if (perf["kind"] == "tuning").any():
        K = int(perf.loc[perf["kind"] == "tuning"].groupby(POOL, observed=True).size().max())
        ks = sorted({int(round(k)) for k in np.geomspace(1, K, num=min(K, 12))} | {K})
        t["tuning_curves"] = choi.tuning_curve(perf, k_values=ks, n_boot=o.n_boot, ci=o.ci, seed=o.seed)
    inc = choi.inclusion_check(best, n_boot=o.n_boot, ci=o.ci, seed=o.seed)
    if len(inc):
        t["inclusion"] = inc
    targets = profile_targets(best, perf, o.target_quantile)
    if targets:
        stt = choi.steps_to_target(res, targets, split="valid")
        t["steps_to_target"] = stt
        fastest = choi.best_time_to_target(stt, by=["problem", "optimizer"], kinds=())
        t["time_to_target"] = fastest
        if fastest["optimizer"].nunique() > 1:
            t["performance_profile"] = choi.performance_profile(fastest, tau_max=o.tau_max)
            t["profile_scores"] = choi.profile_scores(fastest, tau_max=o.tau_max).reset_index()
    if crossover.applicable(best):
        multi = best.groupby("problem", observed=True)["batch_size"].transform("nunique") > 1
        sweep = best[multi]  # only problems run at several batch sizes
        gap = crossover.gap_vs_batch_size(sweep, n_boot=o.n_boot, ci=o.ci, seed=o.seed)
        t["crossover_gap"] = gap
        t["crossover_trend"] = crossover.gap_trend(sweep, n_boot=o.n_boot, ci=o.ci, seed=o.seed)
        factors = crossover.factor_effects(sweep, n_boot=o.n_boot, ci=o.ci, seed=o.seed)
        if len(factors):
            t["crossover_factors"] = factors
        ctargets = crossover.scaling_targets(sweep, perf)
        if ctargets:
            stt_c = choi.steps_to_target(res, ctargets, split="valid")
            pts = crossover.scaling_points(sweep, stt_c)
            t["crossover_points"] = pts
            t["crossover_fit"] = crossover.crossover(pts, n_boot=o.n_boot, ci=o.ci, seed=o.seed) if len(pts) else pd.DataFrame()
            if len(pts):
                t["crossover_step_gap"] = crossover.step_gap(pts, n_boot=o.n_boot, ci=o.ci, seed=o.seed)
    return t


def profile_targets(best: pd.DataFrame, perf: pd.DataFrame, q: float) -> dict[str, float]:
    """Per problem: the ``q``-quantile, over optimizers, of each optimizer's best final validation
    value (mean over the seeds of its best setting, best over schedules and batch sizes) in the
    largest budget; an optimizer below it may never reach it (cost ∞)."""
    v = perf.set_index(perf["run_id"].astype(str))["valid_value"]
    out = {}
    for prob, g in best.groupby("problem", observed=True):
        top = g[g["budget_trials"] == g["budget_trials"].max()] if "budget_trials" in g else g
        sign = 1.0 if str(top["metric"].iloc[0]) == "accuracy" else -1.0
        per_opt: dict[str, float] = {}
        for _, r in top.iterrows():
            vals = [v.get(rid, np.nan) for rid in r["run_ids"]]
            vals = [x for x in vals if np.isfinite(x)]
            if vals:
                o = str(r["optimizer"])
                per_opt[o] = max(per_opt.get(o, -np.inf), sign * float(np.mean(vals)))
        if per_opt:
            out[str(prob)] = sign * float(np.quantile(list(per_opt.values()), q))
    return out


# ----------------------------------------------------------------------------- output helpers
def _png(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    figures.plt().close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def _img(b64: str, alt: str, wide: bool = False) -> str:
    cls = ' class="wide"' if wide else ""
    return f'<img alt="{html.escape(alt)}"{cls} src="data:image/png;base64,{b64}">'


def _table(df: pd.DataFrame, cols: list[str] | None = None) -> str:
    d = df[[c for c in (cols or df.columns) if c in df.columns]]
    return d.to_html(index=False, float_format=lambda x: f"{x:.4g}", classes="t", border=0)


def _csv(df: pd.DataFrame, path: Path) -> None:
    d = df.drop(columns=[c for c in ("run_ids", "seed_scores") if c in df.columns])
    d.to_csv(path, index=isinstance(d.index, pd.Index) and not isinstance(d.index, pd.RangeIndex))


def summary_text(ranked: pd.DataFrame, agg: pd.DataFrame) -> list[str]:
    """One line per problem × budget (× batch size where several): the optimizers ranked first."""
    lines = []
    if ranked.empty:
        return ["No finished runs to rank."]
    n_b = ranked.groupby("problem", observed=True)["batch_size"].nunique()
    order = ranked.sort_values([c for c in ("problem", "budget_trials", "batch_size") if c in ranked], kind="stable")
    for key, g in order.groupby(["problem", "budget", "batch_size"], observed=True, sort=False):
        winners = g[g["rank"] == 1]
        names = ", ".join(sorted({f"{o} ({s})" for o, s in zip(winners["optimizer"], winners["schedule"])}))
        where = f"{key[0]}, budget {key[1]}" + (f", batch size {key[2]}" if n_b[key[0]] > 1 else "")
        lines.append(f"{where}: best {names}")
    if len(agg):
        lines.append("Overall mean rank: " + ", ".join(f"{o} {r:.2f}" for o, r in zip(agg["optimizer"], agg["mean_rank"])))
    return lines


# ----------------------------------------------------------------------------- the report
def write_report(study_dir: str | Path, rule: str = "last", progress: Callable[[str], None] = print,
                 options: Options | None = None) -> Path:
    study_dir = Path(study_dir)
    opts = options or Options(rule=rule)
    out = study_dir / "report"
    fig_dir, tab_dir = out / "figures", out / "tables"
    fig_dir.mkdir(parents=True, exist_ok=True)
    tab_dir.mkdir(parents=True, exist_ok=True)
    progress("reading results …")
    res = load_study(study_dir, fields=LONG_FIELDS, extras=False)
    bad = res.unreadable
    if res.n_runs == 0:
        raise RuntimeError(f"{study_dir}: no results yet (run `optbench submit` first)")
    status = res.runs["status"].astype(str).value_counts()
    progress(f"  {res.n_runs} runs, {len(res.run_index)} evaluations")
    progress("computing statistics …")
    t = analyse(res, opts)
    for name, df in t.items():
        if isinstance(df, pd.DataFrame) and len(df.columns):
            _csv(df, tab_dir / f"{name}.csv")
    perf, best, ranked, agg = t["final_performance"], t["best_settings"], t["rankings"], t["aggregate_ranks"]
    if best.empty:
        raise RuntimeError(f"{study_dir}: no finished runs yet ({', '.join(f'{n} {s}' for s, n in status.items())})")
    progress("drawing figures …")
    sections: list[str] = []

    # --- what tuning buys (Fig. 2, Fig. 3)
    parts = []
    if "improvement" in t and len(t["improvement"]):
        parts.append(_img(_png(figures.fig_improvement_matrix(t["improvement"], normalise=opts.fig2_normalise),
                               fig_dir / "fig2_improvement.png"), "Fig. 2 improvement matrix", wide=True))
    if "improvement_quantiles" in t and len(t["improvement_quantiles"]):
        parts.append(_img(_png(figures.fig_relative_improvement(t["improvement_quantiles"], budget_order(perf)),
                               fig_dir / "fig3_relative_improvement.png"), "Fig. 3 relative improvement"))
    if parts:
        sections.append("<h2>What tuning buys</h2><p>Fig. 2: best tuned setting minus the same optimizer's one-shot "
                        f"default ({opts.fig2_normalise}; positive = better). Fig. 3: improvement over the one-shot "
                        f"default with the '{html.escape(opts.reference_schedule)}' schedule ({opts.fig3_normalise}), "
                        "median and quartiles over optimizers and problems.</p>" + "".join(parts))

    # --- per problem
    largest = max(infer_budgets(perf).items(), key=lambda kv: kv[1])[0] if infer_budgets(perf) else "oneshot"
    run_pos = pd.Series(np.arange(res.n_runs), index=res.runs["run_id"].astype(str))
    starts, counts = res.starts, res.counts
    for prob in sorted(best["problem"].astype(str).unique()):
        g = ranked[ranked["problem"].astype(str) == prob]
        metric = str(g["metric"].iloc[0])
        imgs = [_img(_png(figures.fig_final_performance(best, prob), fig_dir / f"{prob}_final.png"), f"{prob} final performance")]
        chosen = best[(best["problem"].astype(str) == prob) & (best["budget"].astype(str) == largest)]
        if chosen.empty:
            chosen = best[best["problem"].astype(str) == prob]
        sched = figures.preferred_schedule(chosen["schedule"], opts.reference_schedule)
        chosen = chosen[chosen["schedule"].astype(str) == sched]
        curves = {}
        for _, r in chosen.iterrows():
            i = run_pos.get(r["run_ids"][0]) if len(r["run_ids"]) else None
            if i is None:
                continue
            lo, hi = int(starts[i]), int(starts[i] + counts[i])
            curves[f"{r['optimizer']}" + (f" B={r['batch_size']}" if chosen["batch_size"].nunique() > 1 else "")] = \
                pd.DataFrame({"epoch": res.field("epoch")[lo:hi], f"test_{metric}": res.field(f"test_{metric}")[lo:hi]})
        if curves:
            imgs.append(_img(_png(figures.fig_curves(curves, metric, f"{prob} ({sched}): best setting of budget "
                                                                      f"'{chosen['budget'].iloc[0]}', its first seed"),
                                  fig_dir / f"{prob}_curves.png"), f"{prob} learning curves"))
        tc = t.get("tuning_curves")
        if tc is not None and len(tc) and (tc["problem"].astype(str) == prob).any():
            imgs.append(_img(_png(figures.fig_tuning_curves(tc, prob, figures.preferred_schedule(tc["schedule"], opts.reference_schedule)),
                                  fig_dir / f"{prob}_tuning_curves.png"),
                             f"{prob} tuning curves"))
        table = _table(g, ["schedule", "batch_size", "budget", "optimizer", "rank", "mean", "std", "n_seeds",
                           "n_diverged", "trial", "hparams"])
        sections.append(f"<h2>{html.escape(prob)} (test {metric})</h2>" + "".join(imgs) + table)

    # --- Choi et al.
    parts = []
    if "performance_profile" in t:
        sc = t["profile_scores"].set_index("optimizer")["score"]
        parts.append(_img(_png(figures.fig_performance_profile(t["performance_profile"], sc),
                               fig_dir / "performance_profile.png"), "performance profiles"))
        tt = t["time_to_target"].merge(t["steps_to_target"].groupby("problem", observed=True)["target"].first().reset_index(),
                                       on="problem")
        parts.append("<p>Cost: fewest steps to the target validation metric over an optimizer's runs (∞ if never "
                     f"reached); target per problem: the {opts.target_quantile:.0%} quantile, over optimizers, of each "
                     "optimizer's best final validation value (largest budget). Score: area under the profile on [1, "
                     f"{opts.tau_max:g}] / {opts.tau_max - 1:g}.</p>" + _table(t["profile_scores"])
                     + _table(tt, ["problem", "optimizer", "target", "time", "n_trials", "n_reached", "n_diverged"]))
    if "inclusion" in t:
        inc = t["inclusion"]
        flagged = inc[inc["flag"]]
        verdicts = inc["verdict"].value_counts()
        parts.append("<p>Inclusion check (M ⊆ N: N can reproduce M, so N should not end below M; flagged when it "
                     f"does beyond seed noise, {opts.ci:.0%} bootstrap interval of N − M). Plain names: the relation "
                     "holds only if the hyperparameters that reduce N to M were tuned. "
                     f"<b>{len(flagged)} flagged</b> of {len(inc)} comparisons ("
                     + ", ".join(f"{n} {html.escape(str(v))}" for v, n in verdicts.items())
                     + "); the flagged ones below, all in <code>tables/inclusion.csv</code>.</p>"
                     + (_table(flagged, ["problem", "schedule", "batch_size", "budget", "included", "general", "diff",
                                         "lo", "hi", "verdict"]) if len(flagged) else ""))
    if parts:
        sections.append("<h2>Choi et al. statistics</h2>" + "".join(parts))

    # --- crossover
    cross_lines: list[str] = []
    if "crossover_gap" in t and len(t["crossover_gap"]):
        gap = t["crossover_gap"]
        fit = t.get("crossover_fit", pd.DataFrame())
        pts = t.get("crossover_points", pd.DataFrame())
        imgs = [_img(_png(figures.fig_gap(gap), fig_dir / "crossover_gap.png"), "gap vs batch size")]
        steps = t.get("crossover_step_gap", pd.DataFrame())
        if len(fit):
            for _, r in fit.iterrows():
                imgs.append(_img(_png(figures.fig_scaling(pts, fit, str(r["problem"]), str(r["schedule"])),
                                      fig_dir / f"crossover_{r['problem']}_{r['schedule']}.png"), "steps to target vs batch size"))
                if len(steps):
                    imgs.append(_img(_png(figures.fig_gap_model(steps, fit, str(r["problem"]), str(r["schedule"])),
                                          fig_dir / f"crossover_gap_model_{r['problem']}_{r['schedule']}.png"),
                                     "relative gap in steps: S(B) model vs measured"))
        cross_lines = crossover.describe(gap, fit if len(fit) else pd.DataFrame(columns=["problem"]), ci=opts.ci)
        if "crossover_trend" in t:
            cross_lines += crossover.describe_trend(t["crossover_trend"], ci=opts.ci)
        if "crossover_factors" in t:
            cross_lines += crossover.describe_factors(t["crossover_factors"], ci=opts.ci)
        if len(fit) and len(steps):
            cross_lines += crossover.describe_step_gap(steps, fit, ci=opts.ci)
        sections.append("<h2>Adam vs. SGD across batch sizes</h2>" + "".join(imgs)
                        + "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in cross_lines) + "</ul>"
                        + _table(gap, ["problem", "schedule", "batch_size", "adam", "sgd", "adam_mean", "sgd_mean", "gap",
                                       "lo", "hi", "significant", "n_seeds_adam", "n_seeds_sgd"])
                        + (_table(fit) if len(fit) else "")
                        + (_table(t["crossover_factors"]) if "crossover_factors" in t else ""))

    text = summary_text(ranked, agg)
    (out / "summary.txt").write_text("\n".join(text + cross_lines) + "\n")
    warn = ("<p class=warn>Unreadable result files skipped: " + ", ".join(html.escape(p) for p, _ in bad) + "</p>"
            if bad else "")
    counts_txt = ", ".join(f"{n} {html.escape(s)}" for s, n in status.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>optbench report: {html.escape(study_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em}} table{{border-collapse:collapse;font-size:12px;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 6px}} img{{max-width:49%;margin:2px;vertical-align:top}} img.wide{{max-width:100%}} .warn{{color:#a00}}</style></head><body>
<h1>optbench report: {html.escape(study_dir.name)}</h1>
<p>Generated {time.strftime('%Y-%m-%d %H:%M')} from {res.n_runs} runs ({counts_txt}). Final performance: {html.escape(opts.rule)}
evaluation; diverged runs: {html.escape(opts.diverged)}; best setting chosen on validation per problem, optimizer, schedule,
batch size and budget; rank 1 = not clearly beaten (means ± seed std overlapping count as ties). Tables: <code>report/tables/*.csv</code>.</p>
{warn}<h2>Summary</h2><ul>{''.join(f'<li>{html.escape(x)}</li>' for x in text)}</ul>
<h2>Mean rank per optimizer</h2>{_table(agg)}
{''.join(sections)}</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
