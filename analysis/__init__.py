"""optbench's analysis package: results → tables, figures and a report.

Runs on a cluster login node: numpy, pandas, scipy, h5py and matplotlib only — never torch.

Public API::

    analysis.load_results(study_dir)       # long table: record columns, epoch, step, split, metric, value
    analysis.load_runs(study_dir)          # one row per run (hp_<name> columns, status, final metrics)
    analysis.load_curves(study_dir)        # one row per evaluation, one column per split × metric
    analysis.load_study(study_dir)         # all of it, as analysis.table.Results
    analysis.import_deepobs(results_root)  # the published Crowded Valley JSON tree, same long table
    analysis.combine(table, table, ...)    # concatenate tables keeping categoricals

Statistics: :mod:`analysis.performance` (final performance, best settings, ranks),
:mod:`analysis.improvement` (Fig. 2/3), :mod:`analysis.choi` (tuning curves, steps to target,
inclusion check, performance profiles), :mod:`analysis.crossover` (gap vs. batch size, S(B), B*);
figures in :mod:`analysis.figures`; the HTML report in :mod:`analysis.report`.
"""
from analysis.deepobs import import_deepobs, read_deepobs
from analysis.load import load_curves, load_results, load_runs, load_study
from analysis.performance import aggregate_ranks, best_settings, final_performance, rank
from analysis.table import Results, combine

__all__ = ["load_results", "load_curves", "load_runs", "load_study", "import_deepobs", "read_deepobs", "combine",
           "Results", "final_performance", "best_settings", "rank", "aggregate_ranks"]
