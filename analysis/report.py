"""The study report: one self-contained HTML page, PNG figures and CSV tables.

``write_report(study_dir)`` writes ``<study>/report/report.html`` (figures embedded as data URIs,
so the page can be copied anywhere), ``report/figures/*.png`` and ``report/tables/*.csv``.
"""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis.load import load_curves
from analysis.performance import aggregate_ranks, best_settings, final_performance, rank


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_final_performance(best: pd.DataFrame, problem: str):
    """Fig. 4 style: final test performance per optimizer, one marker per (budget, schedule),
    untuned Adam as the reference line."""
    plt = _plt()
    g = best[best["problem"] == problem]
    opts = sorted(g["optimizer"].unique())
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(opts) + 2), 3.6))
    combos = sorted({(b, s) for b, s in zip(g["budget"], g["schedule"])})
    for ci, (b, s) in enumerate(combos):
        sub = g[(g["budget"] == b) & (g["schedule"] == s)].set_index("optimizer")
        xs = [i + (ci - (len(combos) - 1) / 2) * 0.6 / max(1, len(combos)) for i, o in enumerate(opts) if o in sub.index]
        ys = [sub.loc[o, "mean"] for o in opts if o in sub.index]
        es = [sub.loc[o, "std"] for o in opts if o in sub.index]
        ax.errorbar(xs, ys, yerr=es, fmt="o", ms=4, capsize=2, label=f"{b} / {s}")
    ref = g[(g["optimizer"] == "adam") & (g["budget"] == "oneshot")]
    if len(ref):
        ax.axhline(ref["mean"].mean(), color="k", ls="--", lw=1, label="Adam, one-shot")
    ax.set_xticks(range(len(opts)), opts, rotation=30, ha="right")
    metric = g["metric"].iloc[0]
    ax.set_ylabel(f"test {metric}")
    ax.set_title(problem)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def fig_curves(curves: pd.DataFrame, best: pd.DataFrame, perf: pd.DataFrame, problem: str, budget: str):
    """Test-metric curves of each optimizer's chosen setting (seed of the tuning trial)."""
    plt = _plt()
    g = best[(best["problem"] == problem) & (best["budget"] == budget)]
    metric = g["metric"].iloc[0] if len(g) else "loss"
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for _, row in g.iterrows():
        sel = perf[(perf["problem"] == problem) & (perf["optimizer"] == row["optimizer"])
                   & (perf["schedule"] == row["schedule"])]
        sel = sel[(sel["kind"] == "tuning") & (sel["trial"] == row["trial"])] if budget != "oneshot" else \
            sel[sel["kind"] == "oneshot"].head(1)
        if sel.empty:
            continue
        c = curves[curves["run_id"] == sel["run_id"].iloc[0]].sort_values("epoch")
        ax.plot(c["epoch"], c[f"test_{metric}"], label=f"{row['optimizer']} / {row['schedule']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{problem}: best setting of budget '{budget}'")
    if metric == "loss":
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _png(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def summary_text(ranked: pd.DataFrame, agg: pd.DataFrame) -> list[str]:
    lines = []
    for prob, g in ranked.groupby("problem", observed=True):
        top = g[g["budget"] == g["budget"].iloc[0]]
        for budget, gb in g.groupby("budget", observed=True):
            winners = gb[gb["rank"] == 1]
            names = ", ".join(sorted({f"{o} ({s})" for o, s in zip(winners["optimizer"], winners["schedule"])}))
            lines.append(f"{prob}, budget {budget}: best {names}")
        del top
    if len(agg):
        lines.append("Overall mean rank: " + ", ".join(f"{o} {r:.2f}" for o, r in zip(agg["optimizer"], agg["mean_rank"])))
    return lines


def write_report(study_dir: str | Path, rule: str = "last", progress: Callable[[str], None] = print) -> Path:
    study_dir = Path(study_dir)
    out = study_dir / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    progress("reading results …")
    curves = load_curves(study_dir)
    bad = curves.attrs.get("unreadable", [])
    if curves.empty:
        raise RuntimeError(f"{study_dir}: no results yet (run `optbench submit` first)")
    progress(f"  {curves['run_id'].nunique()} runs, {len(curves)} evaluations")
    perf = final_performance(curves, rule=rule)
    best = best_settings(perf)
    ranked = rank(best)
    agg = aggregate_ranks(ranked)
    perf.to_csv(out / "tables" / "final_performance.csv", index=False)
    ranked.to_csv(out / "tables" / "rankings.csv", index=False)
    agg.to_csv(out / "tables" / "aggregate_ranks.csv", index=False)
    progress("drawing figures …")
    sections = []
    for prob in sorted(best["problem"].unique()):
        g = ranked[ranked["problem"] == prob]
        table = g[["schedule", "budget", "optimizer", "rank", "mean", "std", "n_seeds", "n_diverged", "trial"]]
        imgs = [_png(fig_final_performance(best, prob), out / "figures" / f"{prob}_final.png")]
        budgets = [b for b in g["budget"].unique() if b != "oneshot"] or ["oneshot"]
        imgs.append(_png(fig_curves(curves, best, perf, prob, budgets[-1]), out / "figures" / f"{prob}_curves.png"))
        sections.append(f"<h2>{html.escape(prob)}</h2>"
                        + "".join(f'<img alt="{html.escape(prob)} figure" src="data:image/png;base64,{b}">' for b in imgs)
                        + table.to_html(index=False, float_format=lambda x: f"{x:.4g}", classes="ranking"))
    text = summary_text(ranked, agg)
    (out / "summary.txt").write_text("\n".join(text) + "\n")
    warn = ("<p class=warn>Unreadable result files skipped: " + ", ".join(html.escape(p) for p, _ in bad) + "</p>"
            if bad else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>optbench report: {html.escape(study_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}} table{{border-collapse:collapse;font-size:13px;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 6px}} img{{max-width:49%;margin:2px}} .warn{{color:#a00}}</style></head><body>
<h1>optbench report: {html.escape(study_dir.name)}</h1>
<p>Generated {time.strftime('%Y-%m-%d %H:%M')} from {curves['run_id'].nunique()} runs. Final performance: {rule} evaluation;
best setting chosen on validation; rank 1 = not clearly beaten (means ± seed std overlap count as ties).</p>
{warn}<h2>Summary</h2><ul>{''.join(f'<li>{html.escape(t)}</li>' for t in text)}</ul>
<h2>Mean rank per optimizer</h2>{agg.to_html(index=False, float_format=lambda x: f"{x:.3g}")}
{''.join(sections)}</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
