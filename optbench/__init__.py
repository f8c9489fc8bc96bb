"""optbench: optimizer benchmarks at the scale of the published studies, on Slurm clusters.

Importing the package imports no torch: planning, status and reports run on login nodes.
"""
__version__ = "0.1.0"
