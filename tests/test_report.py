"""The HTML report: files, sections, figures, the CLI summary, and a look at it in headless Chromium."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from analysis.report import Options, write_report
from analysis.synthetic import crossover_runs, simple_run, write_results

APT_LINE = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _study_runs():
    rng = np.random.default_rng(0)
    runs = []
    for prob, metric, sign in (("fmnist_2c2d", "accuracy", 1.0), ("quadratic_deep", "loss", -1.0)):
        for sched in ("none", "cosine"):
            for opt, base in (("sgd", 0.80), ("momentum", 0.84), ("adam", 0.86)):
                level = base if metric == "accuracy" else 2.0 - base
                for k in range(4):
                    runs.append(simple_run(level + sign * 0.01 * k, metric=metric, problem=prob, optimizer=opt, schedule=sched,
                                           kind="tuning", trial=k, budget="small" if k < 2 else "large",
                                           hparams={"lr": 10.0 ** -k}))
                for s in (42, 43, 44):
                    runs.append(simple_run(level - sign * 0.05 + 0.002 * rng.standard_normal(), metric=metric, problem=prob,
                                           optimizer=opt, schedule=sched, seed=s, hparams={"lr": 0.01}))
                for budget, k in (("small", 1), ("large", 3)):
                    for s in (43, 44):
                        runs.append(simple_run(level + sign * 0.01 * k + 0.002 * rng.standard_normal(), metric=metric,
                                               problem=prob, optimizer=opt, schedule=sched, kind="rerun", budget=budget,
                                               seed=s, hparams={"lr": 10.0 ** -k}))
    runs.append(simple_run(0.99, optimizer="adam", problem="fmnist_2c2d", kind="tuning", trial=4, budget="large",
                           hparams={"lr": 3.0}, status="diverged"))
    runs += crossover_runs({"momentum": (1000.0, 128.0), "adam": (250.0, 1024.0)},
                           {"momentum": {16: .90, 64: .90, 256: .88, 1024: .85}, "adam": {16: .88, 64: .90, 256: .90, 1024: .89}},
                           [16, 64, 256, 1024], seed_factors=(0.96, 1.0, 1.04))
    return runs


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    write_results(d, _study_runs(), runs_per_file=20)
    (d / "results" / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n-truncated")
    path = write_report(d, progress=lambda s: None, options=Options(n_boot=300))
    return d, path


def test_report_files_sections_and_tables(report):
    d, path = report
    assert path == d / "report" / "report.html"
    page = path.read_text()
    for heading in ("Summary", "Mean rank per optimizer", "What tuning buys", "fmnist_2c2d (test accuracy)",
                    "quadratic_deep (test loss)", "Choi et al. statistics", "Adam vs. SGD across batch sizes"):
        assert heading in page, heading
    assert "Unreadable result files skipped" in page and "broken.h5" in page
    tables = {p.name for p in (d / "report" / "tables").glob("*.csv")}
    assert {"final_performance.csv", "best_settings.csv", "rankings.csv", "aggregate_ranks.csv", "improvement.csv",
            "relative_improvement.csv", "improvement_quantiles.csv", "tuning_curves.csv", "inclusion.csv",
            "steps_to_target.csv", "performance_profile.csv", "profile_scores.csv", "crossover_gap.csv",
            "crossover_fit.csv", "crossover_trend.csv", "crossover_step_gap.csv"} <= tables
    summary = (d / "report" / "summary.txt").read_text()
    assert "fmnist_2c2d, budget large: best adam (cosine), adam (none)" in summary
    assert "Overall mean rank: adam" in summary
    assert "Crossover batch size B* = 170.7" in summary  # (256,000 − 128,000)/(1000 − 250)
    # SGD significantly better at B=16, Adam at B=256 and 1024 (the finals above), and the model's step ratio
    assert "synthetic_lm (none): the gap reverses as B grows" in summary
    assert "S(B) model vs measured — B=16: 0.554 vs 0.554" in summary
    assert "1 diverged" in page


def test_report_figures_are_embedded_and_written(report):
    d, path = report
    page = path.read_text()
    pngs = sorted((d / "report" / "figures").glob("*.png"))
    names = {p.name for p in pngs}
    assert {"fig2_improvement.png", "fig3_relative_improvement.png", "fmnist_2c2d_final.png", "fmnist_2c2d_curves.png",
            "fmnist_2c2d_tuning_curves.png", "performance_profile.png", "crossover_gap.png",
            "crossover_synthetic_lm_none.png", "crossover_gap_model_synthetic_lm_none.png"} <= names
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000, p
    uris = re.findall(r"<img alt=\"[^\"]*\"(?: class=\"wide\")? src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"", page)
    assert len(uris) == len(pngs)


def test_cli_report_prints_summary(tmp_path, capsys):
    from optbench.cli import main

    d = tmp_path / "study"
    write_results(d, [simple_run(0.5 + s / 100, optimizer=o, seed=42 + s) for o in ("sgd", "adam") for s in range(2)])
    (d / "plan.h5").write_bytes(b"")  # `optbench report` only checks that the study was planned
    assert main(["report", str(d)]) == 0
    out = capsys.readouterr().out
    assert "report written:" in out and "fmnist_2c2d, budget oneshot: best" in out and "Overall mean rank:" in out
    assert (d / "report" / "report.html").exists()


def test_report_minimal_study_and_empty_study(tmp_path):
    d = tmp_path / "one"
    write_results(d, [simple_run(0.5 + s / 100, optimizer="sgd", seed=s) for s in range(2)])
    page = write_report(d, progress=lambda s: None).read_text()
    assert "fmnist_2c2d" in page and "What tuning buys" in page and "Adam vs. SGD" not in page
    (tmp_path / "empty" / "results").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="no results yet"):
        write_report(tmp_path / "empty", progress=lambda s: None)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _install_chromium() -> str:
    """Try the CI's apt line when allowed to (root, apt-get present); return why it failed."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    try:
        r = subprocess.run(["bash", "-c", APT_LINE], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return "" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["apt-get failed"])[-1]


def test_report_screenshot_in_headless_chromium(report, tmp_path):
    """Open the page as a person would: it renders, and the screenshot is a real, non-blank image."""
    exe = _chromium()
    if exe is None:
        why = _install_chromium()
        exe = _chromium()
        if exe is None:
            pytest.skip(f"chromium is not installed and could not be installed ({why}); CI installs it with: {APT_LINE}")
    _, path = report
    shot = tmp_path / "report.png"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,2000", path.resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] == 2000 and img.shape[1] == 1200
    rgb = img[..., :3]
    assert rgb.std() > 0.05  # not blank
    dark = (rgb.mean(axis=2) < 0.3).mean()  # text and axes
    colour = (rgb.max(axis=2) - rgb.min(axis=2) > 0.3).mean()  # plotted lines, heat map
    assert dark > 0.002 and colour > 0.002, (dark, colour)
