"""optbench's analysis package: results → tables, figures and a report.

Runs on a cluster login node: numpy, pandas, scipy, h5py and matplotlib only — never torch.
"""
from analysis.load import load_curves, load_results, load_runs

__all__ = ["load_results", "load_curves", "load_runs"]
